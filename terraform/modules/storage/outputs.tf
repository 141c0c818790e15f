output "bucket" {
  description = "Bucket name."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "Bucket ARN (for IAM policies)."
  value       = aws_s3_bucket.this.arn
}

output "dcc_storage" {
  description = "The DCC_STORAGE value for servers and workers."
  value       = "s3://${aws_s3_bucket.this.id}/${var.prefix}"
}
