# modules/network planned with a mocked AWS provider (see scripts/check-terraform.sh).

mock_provider "aws" {
  source = "../../tests/mocks"
}

variables {
  name        = "t"
  kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "new_vpc" {
  command = plan
  assert {
    condition     = length(aws_vpc.this) == 1 && length(aws_subnet.public) == 2 && length(aws_subnet.private) == 2
    error_message = "A new VPC with two public and two private subnets."
  }
  assert {
    condition     = aws_vpc_endpoint.s3[0].vpc_endpoint_type == "Gateway" && aws_vpc_endpoint.s3[0].service_name == "com.amazonaws.us-east-1.s3"
    error_message = "Job files reach S3 through the free gateway endpoint, not the NAT gateway."
  }
}

run "existing_vpc" {
  command = plan
  variables {
    vpc_id             = "vpc-0123456789abcdef0"
    public_subnet_ids  = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
    private_subnet_ids = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
  }
  assert {
    condition     = length(aws_vpc.this) == 0 && output.vpc_id == "vpc-0123456789abcdef0" && output.private_subnet_ids == tolist(["subnet-0000000000000000c", "subnet-0000000000000000d"])
    error_message = "An existing VPC is used as given."
  }
}

run "existing_vpc_needs_subnets" {
  command = plan
  variables {
    vpc_id = "vpc-0123456789abcdef0"
  }
  expect_failures = [var.private_subnet_ids]
}

run "nat_per_az" {
  command = plan
  variables {
    nat_per_az = true
  }
  assert {
    condition     = length(aws_nat_gateway.this) == 2 && length(aws_route_table.private) == 2
    error_message = "A NAT gateway and a private route table per zone."
  }
}

run "one_nat_by_default" {
  command = plan
  assert {
    condition     = length(aws_nat_gateway.this) == 1 && length(aws_route_table.private) == 1
    error_message = "One NAT gateway unless asked for one per zone."
  }
}
