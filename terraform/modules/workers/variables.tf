variable "name" {
  description = "Name prefix of every resource."
  type        = string
}

variable "region" {
  description = "AWS region."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the workers."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the workers."
  type        = list(string)
}

variable "cpu_instance_type" {
  description = "Instance type of CPU workers."
  type        = string
  default     = "c7i.large"
}

variable "cpu_ami_id" {
  description = "AMI of CPU workers (Amazon Linux 2023 or Debian/Ubuntu with the AWS CLI)."
  type        = string
}

variable "cpu_min" {
  description = "Min size of the CPU group."
  type        = number
  default     = 0
}

variable "cpu_max" {
  description = "Max size of the CPU group."
  type        = number
  default     = 20
}

variable "gpu_enabled" {
  description = "Create the GPU group."
  type        = bool
  default     = false
}

variable "gpu_instance_type" {
  description = "Instance type of GPU workers."
  type        = string
  default     = "g5.xlarge"
}

variable "gpu_ami_id" {
  description = "AMI of GPU workers: an AWS Deep Learning / GPU AMI with the NVIDIA driver and container toolkit."
  type        = string
  default     = null
}

variable "gpu_min" {
  description = "Min size of the GPU group."
  type        = number
  default     = 0
}

variable "gpu_max" {
  description = "Max size of the GPU group."
  type        = number
  default     = 4
}

variable "disk_gb" {
  description = "Root volume size (images, inputs, outputs)."
  type        = number
  default     = 100
}

variable "bucket" {
  description = "Bucket holding job files and the dcc binary."
  type        = string
}

variable "bucket_arn" {
  description = "ARN of that bucket."
  type        = string
}

variable "prefix" {
  description = "DCC's key prefix in the bucket."
  type        = string
}

variable "artifact_key" {
  description = "Key of the dcc binary in the bucket (uploaded by the operator)."
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

variable "kms_key_arn" {
  description = "KMS key of the bucket, the parameter and the volumes."
  type        = string
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
