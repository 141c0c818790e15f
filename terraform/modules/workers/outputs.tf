output "security_group_id" {
  description = "Security group of the workers (allowed to reach Redis)."
  value       = aws_security_group.workers.id
}

output "group_names" {
  description = "Autoscaling group per pool (cpu, gpu)."
  value       = { for k, g in aws_autoscaling_group.pool : k => g.name }
}

output "group_arns" {
  description = "Autoscaling group ARNs per pool (for the scaler's IAM policy)."
  value       = { for k, g in aws_autoscaling_group.pool : k => g.arn }
}
