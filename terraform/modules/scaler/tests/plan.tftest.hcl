# modules/scaler planned with a mocked AWS provider (see scripts/check-terraform.sh).

mock_provider "aws" {
  source = "../../tests/mocks"
}

variables {
  name        = "t"
  zip_path    = "../../tests/fixtures/scaler.zip"
  vpc_id      = "vpc-0123456789abcdef0"
  subnet_ids  = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
  group_names = { cpu = "t-cpu-workers" }
  group_arns  = { cpu = "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:00000000-0000-0000-0000-000000000000:autoScalingGroupName/t-cpu-workers" }
  redis_url   = "rediss://:token@redis.example:6379"
  kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "defaults" {
  command = plan
  # No reservation by default (new accounts cannot reserve concurrency): unset (the provider's -1).
  assert {
    condition     = coalesce(aws_lambda_function.scaler.reserved_concurrent_executions, -1) == -1
    error_message = "Reserved concurrency must be off by default."
  }
  assert {
    condition     = aws_lambda_function.scaler.environment[0].variables["DCC_SCALER_GPU_ASG"] == ""
    error_message = "No GPU group without one."
  }
  assert {
    condition     = aws_lambda_function_event_invoke_config.scaler.maximum_retry_attempts == 0 && aws_lambda_function_event_invoke_config.scaler.maximum_event_age_in_seconds == 60
    error_message = "A failed pass is not retried (it could overlap the next scheduled one)."
  }
  assert {
    condition     = contains(flatten([for s in data.aws_iam_policy_document.scaler.statement : s.actions if s.sid == "VpcAccess"]), "ec2:DescribeSubnets")
    error_message = "A VPC Lambda needs ec2:DescribeSubnets."
  }
}

run "reserved_concurrency" {
  command = plan
  variables {
    reserved_concurrent_executions = 1
  }
  assert {
    condition     = aws_lambda_function.scaler.reserved_concurrent_executions == 1
    error_message = "Reserved concurrency when asked."
  }
}
