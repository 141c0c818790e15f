variable "name" {
  description = "Name prefix of every resource."
  type        = string
}

variable "zip_path" {
  description = "Path of the Lambda zip (cargo lambda build --release -p dcc-scaler-lambda --bin dcc-scaler --output-format zip)."
  type        = string
}

variable "vpc_id" {
  description = "VPC (to reach Redis)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the Lambda."
  type        = list(string)
}

variable "group_names" {
  description = "Worker autoscaling groups by pool (cpu, gpu)."
  type        = map(string)
}

variable "group_arns" {
  description = "Their ARNs (the only groups the scaler may change)."
  type        = map(string)
}

variable "redis_url" {
  description = "rediss:// URL of Redis, with its auth token."
  type        = string
  sensitive   = true
}

variable "kms_key_arn" {
  description = "KMS key (parameter, environment, logs)."
  type        = string
}

variable "reserved_concurrent_executions" {
  description = "Reserved concurrency of the Lambda (1 guarantees one pass at a time); null reserves none (new accounts cannot reserve any)."
  type        = number
  default     = null
}

variable "cpu_slots" {
  description = "Job slots per CPU instance (its vCPUs)."
  type        = number
  default     = 2
}

variable "gpu_slots" {
  description = "Job slots per GPU instance (its GPUs)."
  type        = number
  default     = 1
}

variable "max_step" {
  description = "Most instances added per pass (100: a burst is served in one pass)."
  type        = number
  default     = 100
}

variable "idle_grace_secs" {
  description = "Idle time before a worker is drained."
  type        = number
  default     = 120
}

variable "cooldown_secs" {
  description = "Least time between capacity changes downwards."
  type        = number
  default     = 120
}

variable "health_grace_secs" {
  description = "Time a new instance has to report a healthy worker."
  type        = number
  default     = 900
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

variable "cpu_memory_mb" {
  description = "Memory (MiB) jobs may reserve on one CPU instance (what its worker reports as memoryMb): the scaler then plans instances by the jobs' memory as well as by their count, and never promises a larger job to the group. Null: by count only."
  type        = number
  default     = null
}

variable "gpu_memory_mb" {
  description = "As cpu_memory_mb, for GPU instances."
  type        = number
  default     = null
}
