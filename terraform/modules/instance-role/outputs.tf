output "instance_profile_arn" {
  description = "The instance profile for launch templates."
  value       = aws_iam_instance_profile.this.arn
}

output "log_group_name" {
  description = "The CloudWatch Logs group the instances' dcc log is shipped to."
  value       = aws_cloudwatch_log_group.dcc.name
}
