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
  description = "Clients allowed to reach the load balancer (IPv4 or IPv6 CIDRs); no default: say who may reach the API. A /0 (0.0.0.0/0, ::/0) on a public load balancer needs certificate_arn (HTTPS), or allow_public_plaintext = true."
  type        = list(string)
  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "allowed_cidrs must list at least one valid CIDR (e.g. your office's 203.0.113.0/24)."
  }
  validation {
    condition = (var.certificate_arn != null || var.allow_public_plaintext || var.internal ||
    !anytrue([for c in var.allowed_cidrs : endswith(c, "/0")]))
    error_message = "Refusing a public load balancer that serves plain HTTP to the whole internet (allowed_cidrs has a /0 and there is no certificate_arn): API keys would cross the internet in clear text. Give certificate_arn (an ACM certificate for HTTPS), narrow allowed_cidrs, or set allow_public_plaintext = true to accept the risk explicitly."
  }
}

variable "allow_public_plaintext" {
  description = "Explicitly accept a public plain-HTTP listener (allowed_cidrs with a /0 and no certificate_arn). Off: such a configuration is refused."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ACM certificate for HTTPS; null serves plain HTTP (then only to non-world allowed_cidrs, an internal load balancer, or with allow_public_plaintext)."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Protect the load balancer from deletion (off by default so terraform destroy tears the stack down; see docs/deploy.md)."
  type        = bool
  default     = false
}

variable "health_check_path" {
  description = "Target-group health check path: a liveness route that needs no API key and does not depend on Redis or S3 (/healthz). Do not use /readyz: a Redis failover would fail every server at once."
  type        = string
  default     = "/healthz"
}

variable "health_check_type" {
  description = "Autoscaling health check: ELB (the target group's liveness check; replaces dead or hung servers) or EC2 (instance status only)."
  type        = string
  default     = "ELB"
  validation {
    condition     = contains(["ELB", "EC2"], var.health_check_type)
    error_message = "health_check_type must be ELB or EC2."
  }
}

variable "instance_type" {
  description = "Instance type of API servers."
  type        = string
  default     = "c7i.large"
}

variable "ami_id" {
  description = "AMI of API servers (with the AWS CLI); null: the latest Amazon Linux 2023 from ami_ssm_parameter."
  type        = string
  default     = null
}

variable "ami_ssm_parameter" {
  description = "Public SSM parameter naming the default AMI (used when ami_id is null)."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
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

variable "artifact_sha256" {
  description = "SHA-256 (hex) of the dcc binary: the instances check the download against it, and a new value rolls the servers. Empty: not checked."
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

variable "api_keys_parameter" {
  description = "Name of an existing SSM SecureString parameter holding the API keys (comma-separated) the servers require as `Authorization: Bearer <key>`. null (the default): one key is generated into /dcc/<name>/api-keys. Keys cannot be turned off here."
  type        = string
  default     = null
  validation {
    condition     = var.api_keys_parameter == null || try(length(var.api_keys_parameter) > 0, false)
    error_message = "api_keys_parameter must name a parameter, or be null to have one generated; the API always requires keys."
  }
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

variable "durability" {
  description = "DCC_DURABILITY: what confirms a write before a client is told of it. `replicas:1` waits for the Multi-AZ replica (no acknowledged job is lost in a failover, about one cross-AZ round trip per write); `none` is faster and can lose the last acknowledged writes in a failover. See docs/reliability.md."
  type        = string
  default     = "replicas:1"
  validation {
    condition     = can(regex("^(none|replicas:([1-9]|1[0-6])|aof|aof:([0-9]|1[0-6]))$", var.durability))
    error_message = "durability must be none, replicas:N, aof or aof:N (N up to 16)."
  }
}

variable "queue_shards" {
  description = "DCC_REDIS_SHARDS for a new deployment: the queue split over this many hash tags, one per ElastiCache shard in cluster mode (docs/scaling.md#past-one-slot-the-queue-split-over-shards). 1 keeps one slot. A deployment keeps the count it started with: servers asking for another refuse to start."
  type        = number
  default     = 1
  validation {
    condition     = var.queue_shards >= 1 && var.queue_shards <= 64 && floor(var.queue_shards) == var.queue_shards
    error_message = "queue_shards must be a whole number from 1 to 64."
  }
}
