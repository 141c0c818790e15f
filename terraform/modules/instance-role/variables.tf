variable "name" {
  description = "Name of the role and instance profile."
  type        = string
}

variable "bucket_arn" {
  description = "ARN of the job-files bucket."
  type        = string
}

variable "prefix" {
  description = "DCC's key prefix in the bucket."
  type        = string
}

variable "artifact_key" {
  description = "Key of the dcc binary in the bucket."
  type        = string
}

variable "auth_parameter_arn" {
  description = "ARN of the Redis auth-token parameter."
  type        = string
}

variable "extra_parameter_arns" {
  description = "ARNs of further SSM parameters the instances read at boot (the servers' API keys)."
  type        = list(string)
  default     = []
}

variable "ecr_repository_arns" {
  description = "Amazon ECR repositories the instances may pull from with their own role (workers: private images). Empty: no ECR access."
  type        = list(string)
  default     = []
}

variable "kms_key_arn" {
  description = "KMS key of the bucket and the parameter."
  type        = string
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

variable "ecr_pull_through_arns" {
  description = "Amazon ECR repositories (pull-through cache prefixes) the instances may create and import upstream images into on first pull."
  type        = list(string)
  default     = []
}
