variable "name" {
  description = "Name prefix of every resource."
  type        = string
}

variable "vpc_id" {
  description = "An existing VPC to use; null creates a new one."
  type        = string
  default     = null
}

variable "public_subnet_ids" {
  description = "With vpc_id: subnets for the load balancer (two AZs)."
  type        = list(string)
  default     = []
}

variable "private_subnet_ids" {
  description = "With vpc_id: subnets for instances, Redis and the scaler (two AZs, outbound internet through NAT)."
  type        = list(string)
  default     = []
  validation {
    condition     = var.vpc_id == null || (length(var.private_subnet_ids) >= 2 && length(var.public_subnet_ids) >= 2)
    error_message = "With vpc_id, give public_subnet_ids and private_subnet_ids (two availability zones each)."
  }
}

variable "cidr" {
  description = "CIDR of a created VPC."
  type        = string
  default     = "10.42.0.0/16"
}

variable "kms_key_arn" {
  description = "KMS key encrypting the flow-log group."
  type        = string
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

variable "nat_per_az" {
  description = "One NAT gateway per availability zone (each zone's instances keep the internet when the other zone fails; two NAT gateways' hours) instead of one."
  type        = bool
  default     = false
}
