output "vpc_id" {
  description = "The VPC."
  value       = var.vpc_id != null ? var.vpc_id : aws_vpc.this[0].id
}

output "public_subnet_ids" {
  description = "Subnets of the load balancer."
  value       = var.vpc_id != null ? var.public_subnet_ids : aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Subnets of instances, Redis and the scaler."
  value       = var.vpc_id != null ? var.private_subnet_ids : aws_subnet.private[*].id
}
