output "api_url" {
  description = "Base URL of the API."
  value       = "${var.certificate_arn == null ? "http" : "https"}://${aws_lb.this.dns_name}"
}

output "security_group_id" {
  description = "Security group of the servers (allowed to reach Redis)."
  value       = aws_security_group.servers.id
}

output "api_keys_parameter" {
  description = "SSM SecureString parameter holding the API keys (comma-separated) the servers require."
  value       = local.api_keys_parameter
}

output "api_key_command" {
  description = "Prints the API key(s): send one as `Authorization: Bearer <key>`."
  value       = "aws ssm get-parameter --region ${var.region} --name ${local.api_keys_parameter} --with-decryption --query Parameter.Value --output text"
}

output "notify_secret_parameter" {
  description = "SSM SecureString parameter holding the completion-webhook signing secret (DCC_NOTIFY_SECRET)."
  value       = aws_ssm_parameter.notify_secret.name
}

output "notify_secret_command" {
  description = "Prints the webhook signing secret receivers verify X-DCC-Signature with."
  value       = "aws ssm get-parameter --region ${var.region} --name ${aws_ssm_parameter.notify_secret.name} --with-decryption --query Parameter.Value --output text"
}

output "health_check_path" {
  description = "Path the load balancer checks (liveness; needs no API key)."
  value       = aws_lb_target_group.api.health_check[0].path
}
