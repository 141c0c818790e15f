variable "name" {
  description = "Name prefix of every resource."
  type        = string
}

variable "region" {
  description = "AWS region."
  type        = string
}

variable "vpc_id" {
  description = "VPC."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the load balancer."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the servers."
  type        = list(string)
}

variable "internal" {
  description = "An internal load balancer (reachable from the VPC only)."
  type        = bool
  default     = false
}

variable "allowed_cidrs" {
  description = "Clients allowed to reach the load balancer."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "certificate_arn" {
  description = "ACM certificate for HTTPS; null serves plain HTTP (tests, internal use)."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Protect the load balancer from deletion."
  type        = bool
  default     = true
}

variable "instance_type" {
  description = "Instance type of API servers."
  type        = string
  default     = "c7i.large"
}

variable "ami_id" {
  description = "AMI of API servers (with the AWS CLI)."
  type        = string
}

variable "min_size" {
  description = "Fewest API servers."
  type        = number
  default     = 2
}

variable "max_size" {
  description = "Most API servers."
  type        = number
  default     = 4
}

variable "bucket" {
  description = "Bucket holding job files and the dcc binary."
  type        = string
}

variable "bucket_arn" {
  description = "Its ARN."
  type        = string
}

variable "prefix" {
  description = "DCC's key prefix in the bucket."
  type        = string
}

variable "artifact_key" {
  description = "Key of the dcc binary in the bucket."
  type        = string
  default     = "artifacts/dcc"
}

variable "dcc_storage" {
  description = "DCC_STORAGE value."
  type        = string
}

variable "retention" {
  description = "DCC_RETENTION value."
  type        = string
  default     = "7d"
}

variable "redis_host" {
  description = "Redis primary endpoint."
  type        = string
}

variable "auth_parameter" {
  description = "SSM parameter name of the Redis auth token."
  type        = string
}

variable "auth_parameter_arn" {
  description = "Its ARN."
  type        = string
}

variable "api_keys_parameter" {
  description = "Name of an SSM SecureString parameter holding the API keys (comma-separated) the servers require as `Authorization: Bearer <key>`; empty leaves the API open to `allowed_cidrs`."
  type        = string
  default     = ""
}

variable "kms_key_arn" {
  description = "KMS key of the bucket, the parameter and the volumes."
  type        = string
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
