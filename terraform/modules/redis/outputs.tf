output "endpoint" {
  description = "Primary endpoint host name."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "auth_token_parameter" {
  description = "SSM parameter (SecureString) holding the auth token."
  value       = aws_ssm_parameter.auth.name
}

output "auth_token_parameter_arn" {
  description = "ARN of the auth-token parameter (for IAM policies)."
  value       = aws_ssm_parameter.auth.arn
}

output "security_group_id" {
  description = "Security group of the cluster."
  value       = aws_security_group.redis.id
}

output "url" {
  description = "rediss:// URL with the auth token (for the scaler Lambda's encrypted environment)."
  value       = "rediss://:${local.auth_token}@${aws_elasticache_replication_group.this.primary_endpoint_address}:6379"
  sensitive   = true
}
