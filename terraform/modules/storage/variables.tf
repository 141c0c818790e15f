variable "bucket_name" {
  description = "Bucket name (globally unique)."
  type        = string
}

variable "prefix" {
  description = "Key prefix DCC uses (DCC_STORAGE=s3://bucket/prefix), empty or ending in '/'."
  type        = string
  default     = "dcc/"
}

variable "retention_days" {
  description = "DCC_RETENTION in days; the lifecycle rule expires job files one day later."
  type        = number
  default     = 7
}

variable "versioning" {
  description = "Keep object versions."
  type        = bool
  default     = false
}

variable "force_destroy" {
  description = "Let terraform destroy delete a non-empty bucket (false keeps results safe on teardown)."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "KMS key for server-side encryption."
  type        = string
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
