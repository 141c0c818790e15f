variable "name" {
  description = "Stack name, prefix of every resource."
  type        = string
  default     = "dcc"
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "bucket_name" {
  description = "Name of the job-files bucket (globally unique)."
  type        = string
}

variable "ami_id" {
  description = "AMI of servers and CPU workers; null: the latest Amazon Linux 2023 (AWS's public SSM parameter)."
  type        = string
  default     = null
}

variable "dcc_binary" {
  description = "Path of the dcc release binary (scripts/release.sh → target/release-artifact/dcc), uploaded to the bucket's artifacts/dcc before instances launch. null: upload it yourself (see docs/deploy.md)."
  type        = string
  default     = null
}

variable "create_autoscaling_service_linked_role" {
  description = "Create the AWSServiceRoleForAutoScaling service-linked role (only in an account that never had an Auto Scaling group; the plan says when)."
  type        = bool
  default     = false
}

variable "scaler_zip" {
  description = "Path of the scaler Lambda zip."
  type        = string
  default     = "../../../target/lambda/dcc-scaler/bootstrap.zip"
}

variable "vpc_id" {
  description = "An existing VPC; null creates one."
  type        = string
  default     = null
}

variable "public_subnet_ids" {
  description = "With vpc_id: load-balancer subnets."
  type        = list(string)
  default     = []
}

variable "private_subnet_ids" {
  description = "With vpc_id: instance subnets."
  type        = list(string)
  default     = []
}

variable "certificate_arn" {
  description = "ACM certificate for HTTPS (null: plain HTTP, refused for a public load balancer open to the world unless allow_public_plaintext)."
  type        = string
  default     = null
}

variable "registry_auth_parameter" {
  description = "Name of an SSM SecureString parameter with pull credentials for private registries other than this account's ECR (JSON {\"<host>\": {\"username\": \"…\", \"password\": \"…\"}}); null: none. Workers pull from this account's ECR repositories with their instance role either way."
  type        = string
  default     = null
}

variable "api_keys_parameter" {
  description = "Name of an existing SSM SecureString parameter with the API keys (comma-separated). null (default): one key is generated into /dcc/<name>/api-keys (read it with the api_key_command output). Keys cannot be turned off."
  type        = string
  default     = null
}

variable "allowed_cidrs" {
  description = "Who may reach the API (CIDRs). No default: name your clients. A /0 needs certificate_arn, or allow_public_plaintext = true."
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
  description = "Explicitly accept plain HTTP from the whole internet (allowed_cidrs with a /0 and no certificate_arn)."
  type        = bool
  default     = false
}

variable "internal" {
  description = "An internal load balancer (reachable from the VPC and peered networks only)."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect the load balancer from deletion (terraform destroy then fails until it is turned off)."
  type        = bool
  default     = false
}

variable "server_min" {
  description = "Fewest API servers."
  type        = number
  default     = 2
}

variable "server_max" {
  description = "Most API servers."
  type        = number
  default     = 4
}

variable "redis_durability" {
  description = "DCC_DURABILITY of servers and workers: `replicas:1` (default) confirms each submit, result, cancel and delete on the Multi-AZ replica before answering; `none` is faster and can lose the last acknowledged writes in a failover."
  type        = string
  default     = "replicas:1"
}

variable "retention_days" {
  description = "How long finished jobs are kept."
  type        = number
  default     = 7
}

variable "cpu_instance_type" {
  description = "CPU worker instance type. The default, m7i.large (2 vCPU, 8 GiB), holds cpu_slots (2) jobs of the default 2 GiB at once; c7i.large (4 GiB, of which Docker sees less) held one while the scaler planned two."
  type        = string
  default     = "m7i.large"
}

variable "cpu_slots" {
  description = "vCPUs of the CPU worker instance type."
  type        = number
  default     = 2
}

variable "cpu_min" {
  description = "Fewest CPU workers (the scaler adds more when jobs queue)."
  type        = number
  default     = 0
}

variable "cpu_max" {
  description = "Most CPU workers."
  type        = number
  default     = 20
}

variable "disk_gb" {
  description = "Root volume of workers (GiB)."
  type        = number
  default     = 100
}

variable "gpu_enabled" {
  description = "Create the GPU worker group."
  type        = bool
  default     = false
}

variable "gpu_ami_id" {
  description = "GPU AMI (with the NVIDIA driver), when gpu_enabled; null: the latest AWS Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023)."
  type        = string
  default     = null
}

variable "gpu_min" {
  description = "Fewest GPU workers."
  type        = number
  default     = 0
}

variable "gpu_max" {
  description = "Most GPU workers."
  type        = number
  default     = 4
}

variable "gpu_slots" {
  description = "GPUs per GPU worker instance (g5.xlarge: 1)."
  type        = number
  default     = 1
}

variable "gpu_instance_type" {
  description = "GPU worker instance type."
  type        = string
  default     = "g5.xlarge"
}

variable "cpu_spot" {
  description = "Run the CPU workers on Spot: { enabled = true, instance_types = [several types of one size], on_demand_base = N }. Workers hand their running jobs back on the interruption notice (docs/deploy.md)."
  type = object({
    enabled                      = bool
    instance_types               = optional(list(string), [])
    on_demand_base               = optional(number, 0)
    on_demand_percent_above_base = optional(number, 0)
  })
  default = { enabled = false }
}

variable "gpu_spot" {
  description = "Run the GPU workers on Spot, as cpu_spot."
  type = object({
    enabled                      = bool
    instance_types               = optional(list(string), [])
    on_demand_base               = optional(number, 0)
    on_demand_percent_above_base = optional(number, 0)
  })
  default = { enabled = false }
}

variable "redis_shards" {
  description = "ElastiCache cluster mode: this many shards (0, the default: one primary and its replicas, cluster mode off). The queue uses them when queue_shards is set to the same number; see docs/scaling.md#redis-cluster."
  type        = number
  default     = 0
}

variable "queue_shards" {
  description = "A new deployment's queue split over this many hash tags (DCC_REDIS_SHARDS); with redis_shards = N, set N to put one on each shard's primary. 1 (the default) keeps one slot. A running deployment keeps the count it started with. See docs/scaling.md#past-one-slot-the-queue-split-over-shards."
  type        = number
  default     = 1
}

variable "redis_replicas" {
  description = "Replicas of each Redis primary (of each shard in cluster mode), each in another AZ."
  type        = number
  default     = 1
}

variable "redis_final_snapshot" {
  description = "Keep a final snapshot of the queue (<name>-redis-final) when the stack is destroyed."
  type        = bool
  default     = true
}

variable "dockerhub_cache_secret_arn" {
  description = "Docker Hub through an ECR pull-through cache: a Secrets Manager secret named ecr-pullthroughcache/… with Hub credentials. Jobs then name images <account>.dkr.ecr.<region>.amazonaws.com/docker-hub/<repository>:<tag> (docs/registries.md)."
  type        = string
  default     = null
}

variable "nat_per_az" {
  description = "A new VPC gets one NAT gateway per availability zone instead of one (survives a zone's loss; twice the NAT hours)."
  type        = bool
  default     = false
}
