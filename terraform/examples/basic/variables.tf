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
  description = "AMI of servers and CPU workers (Amazon Linux 2023 recommended)."
  type        = string
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
  description = "ACM certificate for HTTPS (null: plain HTTP)."
  type        = string
  default     = null
}

variable "api_keys_parameter" {
  description = "Name of an SSM SecureString parameter with the API keys (comma-separated), created beforehand; empty: no keys."
  type        = string
  default     = ""
}

variable "allowed_cidrs" {
  description = "Who may reach the API."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "retention_days" {
  description = "How long finished jobs are kept."
  type        = number
  default     = 7
}

variable "cpu_instance_type" {
  description = "CPU worker instance type."
  type        = string
  default     = "c7i.large"
}

variable "cpu_slots" {
  description = "vCPUs of the CPU worker instance type."
  type        = number
  default     = 2
}

variable "cpu_max" {
  description = "Most CPU workers."
  type        = number
  default     = 20
}

variable "gpu_enabled" {
  description = "Create the GPU worker group."
  type        = bool
  default     = false
}

variable "gpu_ami_id" {
  description = "GPU AMI (NVIDIA driver + container toolkit), when gpu_enabled."
  type        = string
  default     = null
}

variable "gpu_instance_type" {
  description = "GPU worker instance type."
  type        = string
  default     = "g5.xlarge"
}
