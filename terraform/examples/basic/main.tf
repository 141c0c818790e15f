# A complete DCC stack: network, Redis, bucket, API servers behind a load balancer, CPU (and
# optionally GPU) workers, and the scaler. See docs/deploy.md for the walk-through.
#
# Secure by default: API keys are always on (one is generated into SSM when api_keys_parameter is
# not given; `terraform output -raw api_key_command` prints how to read it), allowed_cidrs has no
# default, and a listener open to the world without TLS is refused unless allow_public_plaintext.

locals {
  tags = { "dcc:stack" = var.name }
  # The Auto Scaling service-linked role launches the instances, so it creates the grants for
  # their encrypted volumes; without it in the key policy every launch fails (Client.InternalError).
  autoscaling_role_arn = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
  artifact_key         = "artifacts/dcc"
  artifact_sha256      = var.dcc_binary == null ? "" : filesha256(var.dcc_binary)
}

resource "aws_kms_key" "dcc" {
  description             = "DCC ${var.name}: bucket, Redis, parameters, volumes, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = local.tags
  lifecycle {
    precondition {
      condition     = var.create_autoscaling_service_linked_role || length(data.aws_iam_roles.autoscaling.names) > 0
      error_message = "This account has no AWSServiceRoleForAutoScaling yet (it is created with the first Auto Scaling group), and the key policy must name it. Set create_autoscaling_service_linked_role = true, or run: aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com"
    }
  }
  # The key policy names the role: it must exist before the key.
  depends_on = [aws_iam_service_linked_role.autoscaling]
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_iam_roles" "autoscaling" {
  name_regex  = "^AWSServiceRoleForAutoScaling$"
  path_prefix = "/aws-service-role/autoscaling.amazonaws.com/"
}

resource "aws_iam_service_linked_role" "autoscaling" {
  count            = var.create_autoscaling_service_linked_role ? 1 : 0
  aws_service_name = "autoscaling.amazonaws.com"
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:A KMS key policy's "*" resource means this key only.
  #checkov:skip=CKV_AWS_356:A KMS key policy's "*" resource means this key only.
  #checkov:skip=CKV_AWS_109:The account root must administer the key, or it becomes unmanageable.
  statement {
    sid       = "AccountAdmin"
    actions   = ["kms:*"]
    resources = ["*"] # In a key policy, "*" is this key.
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "AutoScalingUseOfTheKey"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.autoscaling_role_arn]
    }
  }
  statement {
    sid       = "AutoScalingGrantsForVolumes"
    actions   = ["kms:CreateGrant"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.autoscaling_role_arn]
    }
    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }
}

# The dcc binary (scripts/release.sh → target/release-artifact/dcc), uploaded before any instance
# launches (the launch templates take its key from here); its SHA-256 is checked at boot, and a new
# binary rolls the servers.
resource "aws_s3_object" "dcc" {
  count       = var.dcc_binary == null ? 0 : 1
  bucket      = module.storage.bucket
  key         = local.artifact_key
  source      = var.dcc_binary
  source_hash = local.artifact_sha256
  tags        = local.tags
}

module "network" {
  source             = "../../modules/network"
  name               = var.name
  vpc_id             = var.vpc_id
  public_subnet_ids  = var.public_subnet_ids
  private_subnet_ids = var.private_subnet_ids
  nat_per_az         = var.nat_per_az
  kms_key_arn        = aws_kms_key.dcc.arn
  tags               = local.tags
}

module "storage" {
  source         = "../../modules/storage"
  bucket_name    = var.bucket_name
  retention_days = var.retention_days
  kms_key_arn    = aws_kms_key.dcc.arn
  tags           = local.tags
}

module "redis" {
  source                    = "../../modules/redis"
  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = { servers = module.servers.security_group_id, workers = module.workers.security_group_id, scaler = module.scaler.security_group_id }
  kms_key_arn               = aws_kms_key.dcc.arn
  final_snapshot            = var.redis_final_snapshot
  shards                    = var.redis_shards
  replicas                  = var.redis_replicas
  tags                      = local.tags
}

module "servers" {
  source                 = "../../modules/servers"
  name                   = var.name
  region                 = var.region
  vpc_id                 = module.network.vpc_id
  public_subnet_ids      = module.network.public_subnet_ids
  private_subnet_ids     = module.network.private_subnet_ids
  certificate_arn        = var.certificate_arn
  allowed_cidrs          = var.allowed_cidrs
  allow_public_plaintext = var.allow_public_plaintext
  internal               = var.internal
  deletion_protection    = var.deletion_protection
  api_keys_parameter     = var.api_keys_parameter
  ami_id                 = var.ami_id
  min_size               = var.server_min
  max_size               = var.server_max
  artifact_key           = var.dcc_binary == null ? local.artifact_key : aws_s3_object.dcc[0].key
  artifact_sha256        = local.artifact_sha256
  bucket                 = module.storage.bucket
  bucket_arn             = module.storage.bucket_arn
  prefix                 = "dcc/"
  dcc_storage            = module.storage.dcc_storage
  retention              = "${var.retention_days}d"
  durability             = var.redis_durability
  queue_shards           = var.queue_shards
  redis_host             = module.redis.endpoint
  redis_scheme           = module.redis.scheme
  auth_parameter         = module.redis.auth_token_parameter
  auth_parameter_arn     = module.redis.auth_token_parameter_arn
  kms_key_arn            = aws_kms_key.dcc.arn
  tags                   = local.tags
}

module "workers" {
  source             = "../../modules/workers"
  name               = var.name
  region             = var.region
  vpc_id             = module.network.vpc_id
  subnet_ids         = module.network.private_subnet_ids
  cpu_ami_id         = var.ami_id
  cpu_instance_type  = var.cpu_instance_type
  cpu_min            = var.cpu_min
  cpu_max            = var.cpu_max
  gpu_enabled        = var.gpu_enabled
  gpu_ami_id         = var.gpu_ami_id
  gpu_instance_type  = var.gpu_instance_type
  gpu_min            = var.gpu_min
  gpu_max            = var.gpu_max
  cpu_spot           = var.cpu_spot
  gpu_spot           = var.gpu_spot
  disk_gb            = var.disk_gb
  artifact_key       = var.dcc_binary == null ? local.artifact_key : aws_s3_object.dcc[0].key
  artifact_sha256    = local.artifact_sha256
  bucket             = module.storage.bucket
  bucket_arn         = module.storage.bucket_arn
  prefix             = "dcc/"
  dcc_storage        = module.storage.dcc_storage
  retention          = "${var.retention_days}d"
  durability         = var.redis_durability
  redis_host         = module.redis.endpoint
  redis_scheme       = module.redis.scheme
  auth_parameter     = module.redis.auth_token_parameter
  auth_parameter_arn = module.redis.auth_token_parameter_arn
  kms_key_arn        = aws_kms_key.dcc.arn
  tags               = local.tags

  registry_auth_parameter    = var.registry_auth_parameter
  dockerhub_cache_secret_arn = var.dockerhub_cache_secret_arn
}

module "scaler" {
  source      = "../../modules/scaler"
  name        = var.name
  zip_path    = var.scaler_zip
  vpc_id      = module.network.vpc_id
  subnet_ids  = module.network.private_subnet_ids
  group_names = module.workers.group_names
  group_arns  = module.workers.group_arns
  redis_url   = module.redis.url
  kms_key_arn = aws_kms_key.dcc.arn
  cpu_slots   = var.cpu_slots
  gpu_slots   = var.gpu_slots
  tags        = local.tags
  # Reserved concurrency stays off (null): new accounts cannot reserve any.
}
