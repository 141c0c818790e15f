# The instance profile of DCC servers and workers: what `dcc` on an instance needs and nothing
# more — its objects under the bucket prefix, the dcc binary, the Redis auth-token parameter (and,
# for servers, the API-keys parameter), the KMS key that encrypts them, and for workers pulls
# from the Amazon ECR repositories given (the worker asks GetAuthorizationToken itself).

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = var.name
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "dcc" {
  statement {
    sid       = "JobFiles"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${var.bucket_arn}/${var.prefix}*"]
  }
  statement {
    sid       = "Binary"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arn}/${var.artifact_key}"]
  }
  # HeadBucket (the servers' /readyz storage check) needs s3:ListBucket on the bucket and carries
  # no s3:prefix, so an s3:prefix condition would answer it 403. The bucket is DCC's own (the
  # storage module creates it for DCC alone), so listing it is scoped to the bucket, not a prefix.
  statement {
    sid       = "ListBucket"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
  }
  statement {
    sid       = "BootSecrets"
    actions   = ["ssm:GetParameter"]
    resources = concat([var.auth_parameter_arn], var.extra_parameter_arns)
  }
  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []
    content {
      sid = "EcrToken"
      # GetAuthorizationToken has no resource-level permissions: "*" is the only resource.
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }
  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []
    content {
      sid       = "EcrPull"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = var.ecr_repository_arns
    }
  }
  dynamic "statement" {
    for_each = length(var.ecr_pull_through_arns) > 0 ? [1] : []
    content {
      # A pull through a cache rule creates the repository and imports the upstream image on
      # the first pull of it, as the puller.
      sid       = "EcrPullThrough"
      actions   = ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]
      resources = var.ecr_pull_through_arns
    }
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.dcc.arn}:*"]
  }
  statement {
    sid       = "Kms"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "dcc" {
  name   = "dcc"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.dcc.json
}

resource "aws_iam_instance_profile" "this" {
  name = var.name
  role = aws_iam_role.this.name
}

# Operators reach a failing instance with SSM Session Manager (no SSH, no open port, every
# session logged by SSM).
data "aws_partition" "current" {}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.this.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

# The `dcc` log of every instance with this role (one stream per instance id), shipped by the
# CloudWatch agent: operators read a failing instance's log without reaching it.
resource "aws_cloudwatch_log_group" "dcc" {
  name              = "/dcc/${var.name}"
  retention_in_days = 365
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}
