# Plans of the whole stack with a mocked AWS provider (no network, no credentials): each run must
# plan (no "Invalid for_each argument", every reference resolves) and hold the assertions below.
# Run: terraform -chdir=terraform/examples/basic test (after init, see scripts/check-terraform.sh).

mock_provider "aws" {
  source = "../../tests/mocks"
}

variables {
  bucket_name   = "test-dcc-jobs"
  allowed_cidrs = ["10.0.0.0/8"]
  scaler_zip    = "../../tests/fixtures/scaler.zip"
}

run "defaults" {
  command = plan

  # The default CPU type holds as many default-sized jobs (2 GiB) as the scaler plans per
  # instance (cpu_slots, 2): m7i.large has 8 GiB; c7i.large's 4 GiB held one.
  assert {
    condition     = var.cpu_instance_type == "m7i.large" && var.cpu_slots == 2
    error_message = "Default CPU type and slots must agree with the default job memory."
  }

  # The Auto Scaling service-linked role may use the key (volumes of instances it launches).
  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.kms.statement :
      contains(flatten([for p in s.principals : p.identifiers]), "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling")
      && length(setsubtract(["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"], s.actions)) == 0
    ])
    error_message = "The KMS key policy must let AWSServiceRoleForAutoScaling use the key."
  }
  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.kms.statement :
      contains(s.actions, "kms:CreateGrant")
      && contains(flatten([for p in s.principals : p.identifiers]), local.autoscaling_role_arn)
      && anytrue([for c in s.condition : c.variable == "kms:GrantIsForAWSResource" && contains(c.values, "true")])
    ])
    error_message = "The KMS key policy must let the Auto Scaling role create grants for AWS resources."
  }
  # API keys on by default: generated into SSM, with the command to read them.
  assert {
    condition     = output.api_keys_parameter == "/dcc/dcc/api-keys"
    error_message = "Without api_keys_parameter a key parameter must be generated."
  }
  assert {
    condition     = strcontains(output.api_key_command, "aws ssm get-parameter") && strcontains(output.api_key_command, "--with-decryption") && strcontains(output.api_key_command, "/dcc/dcc/api-keys")
    error_message = "api_key_command must print how to read the generated key."
  }
  assert {
    condition     = keys(output.worker_groups) == ["cpu"]
    error_message = "GPU workers are off by default."
  }
  assert {
    condition     = length(aws_s3_object.dcc) == 0 && length(aws_iam_service_linked_role.autoscaling) == 0
    error_message = "No binary upload and no service-linked role unless asked."
  }
}

run "gpu_workers" {
  command = plan
  variables {
    gpu_enabled = true
    gpu_max     = 2
  }
  assert {
    condition     = toset(keys(output.worker_groups)) == toset(["cpu", "gpu"])
    error_message = "gpu_enabled must add the gpu group."
  }
}

run "tls_existing_vpc_api_keys" {
  command = plan
  variables {
    certificate_arn    = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
    allowed_cidrs      = ["0.0.0.0/0", "::/0"]
    vpc_id             = "vpc-0123456789abcdef0"
    public_subnet_ids  = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
    private_subnet_ids = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
    api_keys_parameter = "/team/dcc-api-keys"
  }
  assert {
    condition     = output.api_keys_parameter == "/team/dcc-api-keys" && strcontains(output.api_key_command, "/team/dcc-api-keys")
    error_message = "A given API-keys parameter is used as is."
  }
}

run "cpu_only_minimum_sizes" {
  command = plan
  variables {
    server_min = 1
    server_max = 1
    cpu_min    = 0
    cpu_max    = 1
    disk_gb    = 30
    dcc_binary = "../../tests/fixtures/dcc"
  }
  assert {
    condition     = keys(output.worker_groups) == ["cpu"]
    error_message = "Only the CPU group."
  }
  assert {
    condition     = aws_s3_object.dcc[0].key == "artifacts/dcc" && aws_s3_object.dcc[0].source_hash == filesha256("../../tests/fixtures/dcc")
    error_message = "dcc_binary is uploaded to artifacts/dcc with its hash."
  }
}

# The listener refuses plain HTTP from the whole internet ...
run "refuses_public_plaintext" {
  command = plan
  variables {
    allowed_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.allowed_cidrs]
}

run "refuses_public_plaintext_ipv6" {
  command = plan
  variables {
    allowed_cidrs = ["10.0.0.0/8", "::/0"]
  }
  expect_failures = [var.allowed_cidrs]
}

# ... unless the operator says so explicitly.
run "public_plaintext_explicit_opt_in" {
  command = plan
  variables {
    allowed_cidrs          = ["0.0.0.0/0"]
    allow_public_plaintext = true
  }
  assert {
    condition     = output.api_keys_parameter == "/dcc/dcc/api-keys"
    error_message = "Keys stay on with a public plain-HTTP listener."
  }
}

run "refuses_empty_allowed_cidrs" {
  command = plan
  variables {
    allowed_cidrs = []
  }
  expect_failures = [var.allowed_cidrs]
}

# An account without the Auto Scaling service-linked role: the plan says what to do ...
run "missing_autoscaling_role_is_reported" {
  command = plan
  override_data {
    target = data.aws_iam_roles.autoscaling
    values = { names = [], arns = [] }
  }
  expect_failures = [aws_kms_key.dcc]
}

# ... and with the flag the stack creates the role before the key.
run "creates_autoscaling_role_when_asked" {
  command = plan
  override_data {
    target = data.aws_iam_roles.autoscaling
    values = { names = [], arns = [] }
  }
  variables {
    create_autoscaling_service_linked_role = true
  }
  assert {
    condition     = aws_iam_service_linked_role.autoscaling[0].aws_service_name == "autoscaling.amazonaws.com"
    error_message = "The service-linked role is created when asked."
  }
}

# Last (it leaves mocked state behind): apply the TLS stack with the mocked provider, so values
# known only after apply (the load balancer's DNS name) are checked too.
run "apply_tls_with_mocks" {
  command = apply
  variables {
    certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
    allowed_cidrs   = ["0.0.0.0/0"]
  }
  assert {
    condition     = startswith(output.api_url, "https://")
    error_message = "With a certificate the API URL is https."
  }
}
