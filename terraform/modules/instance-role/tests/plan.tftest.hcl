# modules/instance-role planned with a mocked AWS provider (see scripts/check-terraform.sh).

mock_provider "aws" {
  source = "../../tests/mocks"
}

variables {
  name                 = "t-servers"
  bucket_arn           = "arn:aws:s3:::b"
  prefix               = "dcc/"
  artifact_key         = "artifacts/dcc"
  auth_parameter_arn   = "arn:aws:ssm:us-east-1:123456789012:parameter/dcc/t/redis-auth-token"
  extra_parameter_arns = ["arn:aws:ssm:us-east-1:123456789012:parameter/dcc/t/api-keys"]
  kms_key_arn          = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "defaults" {
  command = plan
  # HeadBucket (readiness) carries no s3:prefix: ListBucket on the bucket, with no prefix condition.
  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.dcc.statement :
    contains(s.actions, "s3:ListBucket") && contains(s.resources, "arn:aws:s3:::b") && length(s.condition) == 0])
    error_message = "s3:ListBucket must be allowed on the bucket without an s3:prefix condition."
  }
  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.dcc.statement :
    contains(s.actions, "ssm:GetParameter") && contains(s.resources, "arn:aws:ssm:us-east-1:123456789012:parameter/dcc/t/api-keys")])
    error_message = "The role may read the extra (API-keys) parameter."
  }
  assert {
    condition     = alltrue([for s in data.aws_iam_policy_document.dcc.statement : !anytrue([for a in s.actions : startswith(a, "ecr:")])])
    error_message = "No ECR access unless repositories are given."
  }
  assert {
    condition     = aws_iam_role_policy_attachment.ssm.policy_arn == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    error_message = "Operators reach instances with SSM Session Manager."
  }
}

run "ecr_pulls" {
  command = plan
  variables {
    ecr_repository_arns = ["arn:aws:ecr:us-east-1:123456789012:repository/*"]
  }
  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.dcc.statement :
    s.actions == toset(["ecr:GetAuthorizationToken"]) && s.resources == toset(["*"])])
    error_message = "Workers ask ECR for pull tokens themselves."
  }
  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.dcc.statement :
    contains(s.actions, "ecr:BatchGetImage") && contains(s.actions, "ecr:GetDownloadUrlForLayer") && s.resources == toset(["arn:aws:ecr:us-east-1:123456789012:repository/*"])])
    error_message = "Image reads only on the given repositories."
  }
}
