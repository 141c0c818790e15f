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

variable "final_snapshot" {
  description = "Take a final snapshot of the queue when the replication group is destroyed (named <name>-redis-final)."
  type        = bool
  default     = true
}
