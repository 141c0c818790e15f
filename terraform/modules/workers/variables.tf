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
  default     = "m7i.large"
}

variable "cpu_ami_id" {
  description = "AMI of CPU workers (Amazon Linux 2023 or Debian/Ubuntu with the AWS CLI); null: the latest from cpu_ami_ssm_parameter."
  type        = string
  default     = null
}

variable "cpu_ami_ssm_parameter" {
  description = "Public SSM parameter naming the default CPU worker AMI (Amazon Linux 2023)."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
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
  description = "AMI of GPU workers, with the NVIDIA driver (the user-data adds the NVIDIA container toolkit if missing); null: the latest from gpu_ami_ssm_parameter."
  type        = string
  default     = null
}

variable "gpu_ami_ssm_parameter" {
  description = "Public SSM parameter naming the default GPU worker AMI: the AWS Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023, x86_64)."
  type        = string
  default     = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
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
  description = "Key of the dcc binary in the bucket."
  type        = string
  default     = "artifacts/dcc"
}

variable "artifact_sha256" {
  description = "SHA-256 (hex) of the dcc binary: the instances check the download against it. Empty: not checked."
  type        = string
  default     = ""
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
  description = "Redis primary endpoint (the configuration endpoint of a cluster)."
  type        = string
}

variable "redis_scheme" {
  description = "URL scheme of Redis: rediss, or rediss+cluster for ElastiCache cluster mode (the redis module's `scheme`)."
  type        = string
  default     = "rediss"
  validation {
    condition     = contains(["rediss", "rediss+cluster"], var.redis_scheme)
    error_message = "redis_scheme is rediss or rediss+cluster (DCC's Redis is always reached over TLS)."
  }
}

variable "auth_parameter" {
  description = "SSM parameter name of the Redis auth token."
  type        = string
}

variable "auth_parameter_arn" {
  description = "Its ARN."
  type        = string
}

variable "ecr_repository_arns" {
  description = "Amazon ECR repositories workers may pull private images from with their instance role. null: every repository of this account in this region; []: none."
  type        = list(string)
  default     = null
}

variable "registry_auth_parameter" {
  description = "Name of an SSM SecureString parameter holding pull credentials for other private registries, as JSON {\"<registry host>\": {\"username\": \"…\", \"password\": \"…\"}} (DCC_REGISTRY_AUTH). null: none."
  type        = string
  default     = null
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

variable "cpu_spot" {
  description = "Spot for the CPU pool: enabled, the instance types to mix (empty: cpu_instance_type only; give several of the same size), the on-demand base (instances) and the on-demand percentage above it. Workers of a Spot pool hand their jobs back on the interruption notice."
  type = object({
    enabled                      = bool
    instance_types               = optional(list(string), [])
    on_demand_base               = optional(number, 0)
    on_demand_percent_above_base = optional(number, 0)
  })
  default = { enabled = false }
}

variable "gpu_spot" {
  description = "Spot for the GPU pool, as cpu_spot."
  type = object({
    enabled                      = bool
    instance_types               = optional(list(string), [])
    on_demand_base               = optional(number, 0)
    on_demand_percent_above_base = optional(number, 0)
  })
  default = { enabled = false }
}

variable "dockerhub_cache_secret_arn" {
  description = "A Secrets Manager secret (name starting with ecr-pullthroughcache/) holding Docker Hub credentials ({\"username\": …, \"accessToken\": …}): creates an ECR pull-through cache rule for Docker Hub under the prefix docker-hub. Null: none."
  type        = string
  default     = null
}

variable "durability" {
  description = "DCC_DURABILITY: what confirms a write before a client is told of it. `replicas:1` waits for the Multi-AZ replica (no acknowledged job is lost in a failover, about one cross-AZ round trip per write); `none` is faster and can lose the last acknowledged writes in a failover. See docs/reliability.md."
  type        = string
  default     = "replicas:1"
  validation {
    condition     = can(regex("^(none|replicas:([1-9]|1[0-6])|aof|aof:([0-9]|1[0-6]))$", var.durability))
    error_message = "durability must be none, replicas:N, aof or aof:N (N up to 16)."
  }
}
