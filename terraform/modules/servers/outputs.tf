output "api_url" {
  description = "Base URL of the API."
  value       = "${var.certificate_arn == null ? "http" : "https"}://${aws_lb.this.dns_name}"
}

output "security_group_id" {
  description = "Security group of the servers (allowed to reach Redis)."
  value       = aws_security_group.servers.id
}
