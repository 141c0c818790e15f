output "instance_profile_arn" {
  description = "The instance profile for launch templates."
  value       = aws_iam_instance_profile.this.arn
}
