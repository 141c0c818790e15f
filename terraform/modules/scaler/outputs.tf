output "function_name" {
  description = "The scaler Lambda."
  value       = aws_lambda_function.scaler.function_name
}

output "security_group_id" {
  description = "Security group of the Lambda (allowed to reach Redis)."
  value       = aws_security_group.scaler.id
}
