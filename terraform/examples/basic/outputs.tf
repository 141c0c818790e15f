output "api_url" {
  description = "Base URL of the DCC API."
  value       = module.servers.api_url
}

output "api_keys_parameter" {
  description = "SSM SecureString parameter with the API keys (comma-separated)."
  value       = module.servers.api_keys_parameter
}

output "api_key_command" {
  description = "The command printing the API key: export DCC_API_KEY=$(terraform output -raw api_key_command | sh)."
  value       = module.servers.api_key_command
}

output "bucket" {
  description = "Job-files bucket (the dcc binary is at artifacts/dcc)."
  value       = module.storage.bucket
}

output "worker_groups" {
  description = "Worker autoscaling groups."
  value       = module.workers.group_names
}

output "redis_auth_token_parameter" {
  description = "SSM SecureString parameter with the Redis auth token."
  value       = module.redis.auth_token_parameter
}

output "notify_secret_command" {
  description = "The command printing the completion-webhook signing secret receivers verify X-DCC-Signature with (docs/webhooks.md)."
  value       = module.servers.notify_secret_command
}
