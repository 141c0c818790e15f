# A complete DCC stack: network, Redis, bucket, API servers behind a load balancer, CPU (and
# optionally GPU) workers, and the scaler. See docs/deploy.md for the walk-through.

locals {
  tags = { "dcc:stack" = var.name }
}

resource "aws_kms_key" "dcc" {
  description             = "DCC ${var.name}: bucket, Redis, parameters, volumes, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = local.tags
}

data "aws_caller_identity" "current" {}

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
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
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
}

module "network" {
  source             = "../../modules/network"
  name               = var.name
  vpc_id             = var.vpc_id
  public_subnet_ids  = var.public_subnet_ids
  private_subnet_ids = var.private_subnet_ids
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
  client_security_group_ids = [module.servers.security_group_id, module.workers.security_group_id, module.scaler.security_group_id]
  kms_key_arn               = aws_kms_key.dcc.arn
  tags                      = local.tags
}

module "servers" {
  source             = "../../modules/servers"
  name               = var.name
  region             = var.region
  vpc_id             = module.network.vpc_id
  public_subnet_ids  = module.network.public_subnet_ids
  private_subnet_ids = module.network.private_subnet_ids
  certificate_arn    = var.certificate_arn
  allowed_cidrs      = var.allowed_cidrs
  api_keys_parameter = var.api_keys_parameter
  ami_id             = var.ami_id
  bucket             = module.storage.bucket
  bucket_arn         = module.storage.bucket_arn
  prefix             = "dcc/"
  dcc_storage        = module.storage.dcc_storage
  retention          = "${var.retention_days}d"
  redis_host         = module.redis.endpoint
  auth_parameter     = module.redis.auth_token_parameter
  auth_parameter_arn = module.redis.auth_token_parameter_arn
  kms_key_arn        = aws_kms_key.dcc.arn
  tags               = local.tags
}

module "workers" {
  source             = "../../modules/workers"
  name               = var.name
  region             = var.region
  vpc_id             = module.network.vpc_id
  subnet_ids         = module.network.private_subnet_ids
  cpu_ami_id         = var.ami_id
  cpu_instance_type  = var.cpu_instance_type
  cpu_max            = var.cpu_max
  gpu_enabled        = var.gpu_enabled
  gpu_ami_id         = var.gpu_ami_id
  gpu_instance_type  = var.gpu_instance_type
  bucket             = module.storage.bucket
  bucket_arn         = module.storage.bucket_arn
  prefix             = "dcc/"
  dcc_storage        = module.storage.dcc_storage
  retention          = "${var.retention_days}d"
  redis_host         = module.redis.endpoint
  auth_parameter     = module.redis.auth_token_parameter
  auth_parameter_arn = module.redis.auth_token_parameter_arn
  kms_key_arn        = aws_kms_key.dcc.arn
  tags               = local.tags
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
  tags        = local.tags
}
