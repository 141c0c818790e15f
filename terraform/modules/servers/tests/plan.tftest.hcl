# modules/servers planned with a mocked AWS provider (see scripts/check-terraform.sh).

mock_provider "aws" {
  source = "../../tests/mocks"
}

variables {
  name               = "t"
  region             = "us-east-1"
  vpc_id             = "vpc-0123456789abcdef0"
  public_subnet_ids  = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
  private_subnet_ids = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
  allowed_cidrs      = ["10.0.0.0/8"]
  bucket             = "b"
  bucket_arn         = "arn:aws:s3:::b"
  prefix             = "dcc/"
  dcc_storage        = "s3://b/dcc/"
  redis_host         = "redis.example"
  auth_parameter     = "/dcc/t/redis-auth-token"
  auth_parameter_arn = "arn:aws:ssm:us-east-1:123456789012:parameter/dcc/t/redis-auth-token"
  kms_key_arn        = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "defaults" {
  command = plan

  # Multi-AZ ElastiCache replicates asynchronously: by default a write is confirmed by the replica
  # before the client hears of it, so a failover loses no acknowledged job.
  assert {
    condition     = strcontains(base64decode(aws_launch_template.servers.user_data), "DCC_DURABILITY=replicas:1")
    error_message = "Servers must wait for the replica by default (DCC_DURABILITY=replicas:1)."
  }

  # The load balancer checks a route that needs no API key and does not depend on Redis.
  assert {
    condition     = aws_lb_target_group.api.health_check[0].path == "/healthz"
    error_message = "Target health must use /healthz (no API key, no Redis)."
  }
  assert {
    condition     = output.health_check_path == "/healthz"
    error_message = "health_check_path output."
  }
  # Replacement on liveness only (the target group's /healthz), never on readiness.
  assert {
    condition     = aws_autoscaling_group.servers.health_check_type == "ELB" && aws_lb_target_group.api.health_check[0].path != "/readyz"
    error_message = "The group must replace servers on liveness, not readiness."
  }
  # API keys are generated into SSM and the servers read them at boot.
  assert {
    condition     = aws_ssm_parameter.api_keys[0].name == "/dcc/t/api-keys" && aws_ssm_parameter.api_keys[0].type == "SecureString"
    error_message = "An API key parameter must be generated."
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.servers.user_data), "--name \"/dcc/t/api-keys\"") && strcontains(base64decode(aws_launch_template.servers.user_data), "DCC_API_KEYS=$${api_keys}")
    error_message = "Server user-data must read the API keys and pass DCC_API_KEYS."
  }
  assert {
    condition     = aws_ssm_parameter.notify_secret.name == "/dcc/t/notify-secret" && aws_ssm_parameter.notify_secret.type == "SecureString" && strcontains(base64decode(aws_launch_template.servers.user_data), "--name \"/dcc/t/notify-secret\"") && strcontains(base64decode(aws_launch_template.servers.user_data), "DCC_NOTIFY_SECRET=$${notify_secret}")
    error_message = "servers sign webhooks with a generated secret from SSM"
  }
  # API servers never touch Docker.
  assert {
    condition     = !strcontains(base64decode(aws_launch_template.servers.user_data), "install -y docker") && !strcontains(base64decode(aws_launch_template.servers.user_data), "docker.service")
    error_message = "API servers must not install or depend on Docker."
  }
  # AMI from the public Amazon Linux 2023 parameter, root device from the AMI.
  assert {
    condition     = data.aws_ssm_parameter.ami[0].name == "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64" && aws_launch_template.servers.image_id == "ami-0123456789abcdef0"
    error_message = "Default AMI from the AL2023 public parameter."
  }
  assert {
    condition     = aws_launch_template.servers.block_device_mappings[0].device_name == data.aws_ami.this.root_device_name
    error_message = "Root device name from the AMI."
  }
  assert {
    condition     = aws_lb.this.enable_deletion_protection == false
    error_message = "No deletion protection by default (terraform destroy tears down)."
  }
  assert {
    condition     = aws_lb_listener.http.default_action[0].type == "forward" && length(aws_lb_listener.https) == 0
    error_message = "Without a certificate, HTTP forwards (private CIDRs only)."
  }
}

run "queue_shards" {
  command = plan
  variables {
    queue_shards = 3
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.servers.user_data), "DCC_REDIS_SHARDS=3")
    error_message = "queue_shards must reach the servers as DCC_REDIS_SHARDS."
  }
}

run "one_shard_by_default" {
  command = plan
  assert {
    condition     = !strcontains(base64decode(aws_launch_template.servers.user_data), "DCC_REDIS_SHARDS")
    error_message = "By default the servers take the deployment's stored shard count (no DCC_REDIS_SHARDS)."
  }
}

run "queue_shards_bounded" {
  command = plan
  variables {
    queue_shards = 0
  }
  expect_failures = [var.queue_shards]
}

run "root_device_from_ami" {
  command = plan
  override_data {
    target = data.aws_ami.this
    values = { root_device_name = "/dev/sda1" }
  }
  variables {
    ami_id = "ami-0fedcba9876543210"
  }
  assert {
    condition     = aws_launch_template.servers.block_device_mappings[0].device_name == "/dev/sda1" && length(data.aws_ssm_parameter.ami) == 0
    error_message = "A given AMI's root device name is used."
  }
}

run "tls_and_given_keys" {
  command = plan
  variables {
    certificate_arn    = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
    allowed_cidrs      = ["0.0.0.0/0"]
    api_keys_parameter = "/team/keys"
  }
  assert {
    condition     = aws_lb_listener.http.default_action[0].type == "redirect" && length(aws_lb_listener.https) == 1
    error_message = "With a certificate, HTTP redirects to HTTPS."
  }
  assert {
    condition     = length(aws_ssm_parameter.api_keys) == 0 && output.api_keys_parameter == "/team/keys"
    error_message = "A given parameter is used, none generated."
  }
}

run "refuses_world_plaintext" {
  command = plan
  variables {
    allowed_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.allowed_cidrs]
}

run "internal_plaintext_is_allowed" {
  command = plan
  variables {
    allowed_cidrs = ["0.0.0.0/0"]
    internal      = true
  }
  assert {
    condition     = aws_lb.this.internal
    error_message = "An internal load balancer may serve plain HTTP to 0.0.0.0/0 (the VPC)."
  }
}

run "keys_cannot_be_turned_off" {
  command = plan
  variables {
    api_keys_parameter = ""
  }
  expect_failures = [var.api_keys_parameter]
}
