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
  description = "Security groups allowed to reach Redis (servers, workers, scaler)."
  type        = list(string)
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
