# The DCC scaler: the `dcc-scaler` Lambda (zip built from scaler-lambda/, see docs/scaling.md),
# run every minute by an EventBridge schedule, inside the VPC to reach Redis. Its role may only
# describe autoscaling groups and change the DCC worker groups it sizes. A pass takes at most 50 s
# (timeout) and the schedule fires every 60 s, so passes do not overlap in practice; to make that a
# guarantee set reserved_concurrent_executions = 1 (off by default: a new account's unreserved
# concurrency floor of 10 refuses any reservation). The Redis URL (with its auth token) is in the
# function's environment, encrypted with the customer key.

resource "aws_security_group" "scaler" {
  name        = "${var.name}-scaler"
  description = "DCC scaler Lambda: outbound to Redis and the AutoScaling API"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_security_group_rule" "egress" {
  #checkov:skip=CKV_AWS_382:The AutoScaling API endpoint has no fixed address; outbound HTTPS and Redis are needed.
  type              = "egress"
  description       = "Outbound (Redis, AutoScaling API)"
  security_group_id = aws_security_group.scaler.id
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = ["0.0.0.0/0"]
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "scaler" {
  name               = "${var.name}-scaler"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "scaler" {
  #checkov:skip=CKV_AWS_111:Only ENI management (VPC Lambda) and X-Ray writes are unscoped; AWS offers no resource-level permission for them.
  #checkov:skip=CKV_AWS_356:Same: Describe*, ENI and X-Ray actions take no resource ARNs; the group-changing actions are scoped to the DCC groups.
  statement {
    sid       = "Describe"
    actions   = ["autoscaling:DescribeAutoScalingGroups"]
    resources = ["*"] # Describe* does not support resource-level permissions.
  }
  statement {
    sid = "SizeDccGroups"
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:SetInstanceProtection",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = values(var.group_arns)
  }
  statement {
    sid       = "Kms"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.scaler.arn}:*"]
  }
  statement {
    sid = "VpcAccess"
    actions = [
      "ec2:CreateNetworkInterface",
      "ec2:DescribeNetworkInterfaces",
      "ec2:DescribeSubnets",
      "ec2:DeleteNetworkInterface",
      "ec2:AssignPrivateIpAddresses",
      "ec2:UnassignPrivateIpAddresses",
    ]
    resources = ["*"] # ENI management for VPC Lambdas is not resource-scoped.
  }
  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "scaler" {
  name   = "dcc-scaler"
  role   = aws_iam_role.scaler.id
  policy = data.aws_iam_policy_document.scaler.json
}

resource "aws_cloudwatch_log_group" "scaler" {
  name              = "/aws/lambda/${var.name}-scaler"
  retention_in_days = 365
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_lambda_function" "scaler" {
  #checkov:skip=CKV_AWS_116:A scheduled, idempotent pass: a failed one is simply the next minute's; a DLQ would only collect stale events.
  #checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile per account; the zip comes from this repository's build.
  #checkov:skip=CKV_AWS_115:Reserved concurrency is optional (var.reserved_concurrent_executions): new accounts cannot reserve any; one scheduled pass a minute with a 50 s timeout.
  function_name                  = "${var.name}-scaler"
  role                           = aws_iam_role.scaler.arn
  filename                       = var.zip_path
  source_code_hash               = filebase64sha256(var.zip_path)
  handler                        = "bootstrap"
  runtime                        = "provided.al2023"
  architectures                  = ["x86_64"]
  memory_size                    = 256
  timeout                        = 50
  reserved_concurrent_executions = var.reserved_concurrent_executions
  kms_key_arn                    = var.kms_key_arn
  tracing_config {
    mode = "Active"
  }
  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.scaler.id]
  }
  environment {
    variables = merge({
      DCC_REDIS_URL                = var.redis_url
      DCC_SCALER_CPU_ASG           = lookup(var.group_names, "cpu", "")
      DCC_SCALER_GPU_ASG           = lookup(var.group_names, "gpu", "")
      DCC_SCALER_CPU_SLOTS         = tostring(var.cpu_slots)
      DCC_SCALER_GPU_SLOTS         = tostring(var.gpu_slots)
      DCC_SCALER_CPU_MEMORY_MB     = var.cpu_memory_mb == null ? "" : tostring(var.cpu_memory_mb)
      DCC_SCALER_GPU_MEMORY_MB     = var.gpu_memory_mb == null ? "" : tostring(var.gpu_memory_mb)
      DCC_SCALER_MAX_STEP          = tostring(var.max_step)
      DCC_SCALER_IDLE_GRACE_SECS   = tostring(var.idle_grace_secs)
      DCC_SCALER_COOLDOWN_SECS     = tostring(var.cooldown_secs)
      DCC_SCALER_HEALTH_GRACE_SECS = tostring(var.health_grace_secs)
      DCC_LOG                      = "info"
    })
  }
  # The role's policy must exist before the function runs (VPC ENIs, logs, KMS).
  depends_on = [aws_cloudwatch_log_group.scaler, aws_iam_role_policy.scaler]
  tags       = var.tags
}

resource "aws_cloudwatch_event_rule" "every_minute" {
  name                = "${var.name}-scaler"
  description         = "Runs the DCC scaler"
  schedule_expression = "rate(1 minute)"
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "scaler" {
  rule = aws_cloudwatch_event_rule.every_minute.name
  arn  = aws_lambda_function.scaler.arn
}

# A failed pass is not retried by Lambda (the next scheduled one, a minute later, reads the state
# afresh; a retry could overlap it), and an event older than a pass is dropped.
resource "aws_lambda_function_event_invoke_config" "scaler" {
  function_name                = aws_lambda_function.scaler.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 60
}

resource "aws_lambda_permission" "events" {
  statement_id  = "AllowEventBridge"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.scaler.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.every_minute.arn
}
