# modules/redis planned with a mocked AWS provider (see scripts/check-terraform.sh).

mock_provider "aws" {
  source = "../../tests/mocks"
}

variables {
  name                      = "t"
  vpc_id                    = "vpc-0123456789abcdef0"
  subnet_ids                = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
  client_security_group_ids = { servers = "sg-0000000000000000a", workers = "sg-0000000000000000b", scaler = "sg-0000000000000000c" }
  kms_key_arn               = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "defaults" {
  command = plan
  # Rules keyed by component name: known when planning even when the ids are not.
  assert {
    condition     = toset(keys(aws_security_group_rule.from_clients)) == toset(["servers", "workers", "scaler"])
    error_message = "One ingress rule per component, keyed by its name."
  }
  assert {
    condition     = aws_security_group_rule.from_clients["workers"].source_security_group_id == "sg-0000000000000000b"
    error_message = "The workers' rule allows the workers' group."
  }
  # The token comes from the AWS provider (no `random`), stored in SSM, and is the cluster's.
  assert {
    condition     = aws_ssm_parameter.auth.type == "SecureString" && nonsensitive(aws_elasticache_replication_group.this.auth_token == aws_ssm_parameter.auth.value)
    error_message = "The auth token is generated into SSM and used by the cluster."
  }
  assert {
    condition     = aws_elasticache_replication_group.this.transit_encryption_enabled && aws_elasticache_replication_group.this.automatic_failover_enabled
    error_message = "TLS and failover on."
  }
  assert {
    condition     = aws_elasticache_replication_group.this.final_snapshot_identifier == "t-redis-final"
    error_message = "Destroying the stack keeps a final snapshot of the queue by default."
  }
  # The queue needs noeviction; job records fit the compact hash encoding (docs/scaling.md).
  assert {
    condition = {
      for p in aws_elasticache_parameter_group.this.parameter : p.name => p.value
    } == { "maxmemory-policy" = "noeviction", "hash-max-listpack-value" = "1024" }
    error_message = "The parameter group sets noeviction and hash-max-listpack-value 1024."
  }
}

# Cluster mode: shards behind the configuration endpoint, which DCC is given as a cluster URL.
run "cluster_mode" {
  command = plan
  variables {
    shards   = 3
    replicas = 2
  }
  assert {
    condition     = aws_elasticache_replication_group.this.cluster_mode == "enabled" && aws_elasticache_replication_group.this.num_node_groups == 3 && aws_elasticache_replication_group.this.replicas_per_node_group == 2
    error_message = "Three shards of a primary and two replicas each, cluster mode on."
  }
  assert {
    condition     = aws_elasticache_replication_group.this.automatic_failover_enabled && aws_elasticache_replication_group.this.multi_az_enabled
    error_message = "Failover (required by cluster mode) and Multi-AZ stay on."
  }
  assert {
    condition = {
      for p in aws_elasticache_parameter_group.this.parameter : p.name => p.value
    } == { "maxmemory-policy" = "noeviction", "hash-max-listpack-value" = "1024", "cluster-enabled" = "yes" }
    error_message = "The cluster's parameter group enables cluster mode and keeps noeviction and the listpack size."
  }
  assert {
    condition     = output.scheme == "rediss+cluster"
    error_message = "DCC reaches a cluster-mode group as a cluster, over TLS."
  }
}

run "one_primary_by_default" {
  command = plan
  assert {
    condition     = aws_elasticache_replication_group.this.cluster_mode == "disabled" && aws_elasticache_replication_group.this.num_cache_clusters == 2 && output.scheme == "rediss"
    error_message = "Cluster mode off: a primary and one replica, reached with rediss://."
  }
}

run "shards_and_replicas_are_checked" {
  command = plan
  variables {
    shards   = 2
    replicas = 0
  }
  expect_failures = [var.replicas]
}
