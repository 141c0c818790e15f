output "api_url" {
  description = "Base URL of the DCC API."
  value       = module.servers.api_url
}

output "bucket" {
  description = "Job-files bucket (upload the dcc binary to artifacts/dcc)."
  value       = module.storage.bucket
}

output "worker_groups" {
  description = "Worker autoscaling groups."
  value       = module.workers.group_names
}
