# Redis for DCC: an ElastiCache replication group (Redis 7, primary + replica with automatic
# failover), encrypted in transit (TLS) and at rest, with an auth token kept in SSM Parameter
# Store (never in user-data), reachable only from the security groups of DCC's servers, workers
# and scaler. maxmemory-policy is noeviction: with eviction, job records and leases could vanish.
#
# The token is generated with the AWS provider (Secrets Manager GetRandomPassword; the `random`
# provider is not needed). That data source answers a new value on every plan, so the parameter
# ignores later values and everything else reads the token back from the parameter: it is fixed
# at the first apply. Rotate it by tainting aws_ssm_parameter.auth (and applying immediately).

data "aws_secretsmanager_random_password" "auth" {
  password_length = 48
  # Only letters and digits: the token goes into a rediss:// URL, and ElastiCache refuses @ " /.
  exclude_punctuation = true
  include_space       = false
}

resource "aws_ssm_parameter" "auth" {
  name        = "/dcc/${var.name}/redis-auth-token"
  description = "DCC Redis auth token"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = data.aws_secretsmanager_random_password.auth.random_password
  tags        = var.tags
  lifecycle {
    ignore_changes = [value]
  }
}

locals {
  # The token as stored at the first apply (stable across plans, see above).
  auth_token = aws_ssm_parameter.auth.value
  # Cluster mode: shards behind a configuration endpoint, which DCC reaches as a cluster.
  cluster  = var.shards > 0
  endpoint = local.cluster ? aws_elasticache_replication_group.this.configuration_endpoint_address : aws_elasticache_replication_group.this.primary_endpoint_address
  scheme   = local.cluster ? "rediss+cluster" : "rediss"
}

resource "aws_elasticache_subnet_group" "this" {
  name       = "${var.name}-redis"
  subnet_ids = var.subnet_ids
}

resource "aws_elasticache_parameter_group" "this" {
  name   = local.cluster ? "${var.name}-redis7-cluster" : "${var.name}-redis7"
  family = "redis7"
  dynamic "parameter" {
    for_each = local.cluster ? ["yes"] : []
    content {
      name  = "cluster-enabled"
      value = parameter.value
    }
  }
  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }
  # Job records (definition included) fit Redis's compact hash encoding: about 0.9 KB per queued
  # job instead of 1.7 KB (docs/scaling.md; dcc_shared::queue::RECORD_LISTPACK_VALUE).
  parameter {
    name  = "hash-max-listpack-value"
    value = "1024"
  }
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "DCC Redis: reachable from DCC servers, workers and scaler only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

# Keyed by component (servers, workers, scaler): the keys are known when planning even though the
# security-group ids exist only after apply.
resource "aws_security_group_rule" "from_clients" {
  for_each                 = var.client_security_group_ids
  type                     = "ingress"
  description              = "Redis from a DCC component"
  security_group_id        = aws_security_group.redis.id
  source_security_group_id = each.value
  protocol                 = "tcp"
  from_port                = 6379
  to_port                  = 6379
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id       = "${var.name}-redis"
  description                = "DCC job queue"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.node_type
  cluster_mode               = local.cluster ? "enabled" : "disabled"
  num_cache_clusters         = local.cluster ? null : 1 + var.replicas
  num_node_groups            = local.cluster ? var.shards : null
  replicas_per_node_group    = local.cluster ? var.replicas : null
  automatic_failover_enabled = true
  multi_az_enabled           = true
  parameter_group_name       = aws_elasticache_parameter_group.this.name
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [aws_security_group.redis.id]
  port                       = 6379
  transit_encryption_enabled = true
  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  auth_token                 = local.auth_token
  snapshot_retention_limit   = 7
  # `terraform destroy` keeps the queue's last state as a snapshot unless asked not to.
  final_snapshot_identifier  = var.final_snapshot ? "${var.name}-redis-final" : null
  auto_minor_version_upgrade = true
  apply_immediately          = false
  tags                       = var.tags
}
