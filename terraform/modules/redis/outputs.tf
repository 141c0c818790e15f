output "endpoint" {
  description = "Primary endpoint host name (the configuration endpoint with cluster mode on)."
  value       = local.endpoint
}

output "scheme" {
  description = "URL scheme DCC reaches this Redis with: rediss, or rediss+cluster with cluster mode on."
  value       = local.scheme
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
  description = "rediss:// (or rediss+cluster://) URL with the auth token (for the scaler Lambda's encrypted environment)."
  value       = "${local.scheme}://:${local.auth_token}@${local.endpoint}:6379"
  sensitive   = true
}
