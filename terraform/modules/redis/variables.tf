variable "name" {
  description = "Name prefix of every resource."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (two AZs) for the nodes."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups allowed to reach Redis, by component, e.g. { servers = sg-…, workers = sg-…, scaler = sg-… }. The keys must be fixed names (they key the rules when planning); the ids may be known only after apply."
  type        = map(string)
}

variable "node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "kms_key_arn" {
  description = "KMS key for encryption at rest and the auth-token parameter."
  type        = string
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

variable "shards" {
  description = "Redis Cluster shards (ElastiCache cluster mode on, num_node_groups), or 0 for one primary with its replicas (cluster mode off: the default, and the simplest). With shards, DCC is given a rediss+cluster:// URL of the configuration endpoint. Every key of one deployment is in one hash slot today, so one shard carries the queue and the rest stand ready for when it is split (docs/scaling.md#redis-cluster)."
  type        = number
  default     = 0
  validation {
    condition     = var.shards >= 0 && var.shards <= 500 && floor(var.shards) == var.shards
    error_message = "shards is a whole number from 0 (cluster mode off) to 500."
  }
}

variable "replicas" {
  description = "Replicas of each primary (of each shard with cluster mode on): at least one, in another AZ, so a failover has somewhere to go."
  type        = number
  default     = 1
  validation {
    condition     = var.replicas >= 1 && var.replicas <= 5 && floor(var.replicas) == var.replicas
    error_message = "replicas is a whole number from 1 to 5 (a failover needs a replica)."
  }
}

variable "final_snapshot" {
  description = "Take a final snapshot of the queue when the replication group is destroyed (named <name>-redis-final)."
  type        = bool
  default     = true
}
