# DCC workers: CPU and (optionally) GPU launch templates and autoscaling groups. Instances run
# `dcc worker` under systemd (templates/user-data.sh.tftpl), with an instance profile allowing only
# what a worker needs: its objects in the bucket, the Redis auth-token parameter, and the KMS key.
# New instances are protected from scale-in: only the scaler removes workers, and only idle ones.
#
# AMIs: by default the latest Amazon Linux 2023 (CPU) and the AWS Deep Learning Base OSS Nvidia
# Driver GPU AMI for Amazon Linux 2023 (GPU: NVIDIA driver, Docker and the NVIDIA container
# toolkit), both from AWS's public SSM parameters. The root device name is read from the AMI. The
# GPU user-data installs and registers the NVIDIA container runtime when it is missing and checks
# nvidia-smi before the worker starts.

locals {
  pool_settings = merge(
    { cpu = { instance_type = var.cpu_instance_type, ami = var.cpu_ami_id, ami_parameter = var.cpu_ami_ssm_parameter, min = var.cpu_min, max = var.cpu_max, gpu = false, env = { DCC_GPUS = "0" }, spot = var.cpu_spot } },
    var.gpu_enabled ? { gpu = { instance_type = var.gpu_instance_type, ami = var.gpu_ami_id, ami_parameter = var.gpu_ami_ssm_parameter, min = var.gpu_min, max = var.gpu_max, gpu = true, env = { DCC_GPU_MODE = "auto" }, spot = var.gpu_spot } } : {},
  )
  # A Spot pool's workers watch the instance metadata service for the interruption notice (hand
  # running jobs back without using an attempt, leave) and rebalance recommendations (stop claims).
  spot_env = { DCC_SPOT_IMDS = "http://169.254.169.254" }
  pools = { for k, p in local.pool_settings : k => merge(p, {
    ami = p.ami != null ? p.ami : data.aws_ssm_parameter.ami[k].insecure_value
  }) }
}

data "aws_ssm_parameter" "ami" {
  for_each = { for k, p in local.pool_settings : k => p.ami_parameter if p.ami == null }
  name     = each.value
}

data "aws_ami" "pool" {
  for_each = local.pool_settings
  filter {
    name   = "image-id"
    values = [local.pools[each.key].ami]
  }
}

resource "aws_security_group" "workers" {
  name        = "${var.name}-workers"
  description = "DCC workers: no inbound traffic; outbound to Redis, S3, registries"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_security_group_rule" "egress" {
  #checkov:skip=CKV_AWS_382:Workers pull job images from registries chosen by users, and reach S3/SSM endpoints; outbound cannot be narrowed to known addresses.
  type              = "egress"
  description       = "Outbound (Redis, S3, SSM, image registries)"
  security_group_id = aws_security_group.workers.id
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = ["0.0.0.0/0"]
}

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

locals {
  ecr_repository_arns = var.ecr_repository_arns != null ? var.ecr_repository_arns : [
    "arn:${data.aws_partition.current.partition}:ecr:${var.region}:${data.aws_caller_identity.current.account_id}:repository/*"
  ]
  ecr_pull_through_arns = var.dockerhub_cache_secret_arn == null ? [] : [
    "arn:${data.aws_partition.current.partition}:ecr:${var.region}:${data.aws_caller_identity.current.account_id}:repository/docker-hub/*"
  ]
  registry_auth_parameter_arns = var.registry_auth_parameter == null ? [] : [
    "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter/${trimprefix(var.registry_auth_parameter, "/")}"
  ]
}

module "role" {
  source                = "../instance-role"
  name                  = "${var.name}-workers"
  bucket_arn            = var.bucket_arn
  prefix                = var.prefix
  artifact_key          = var.artifact_key
  auth_parameter_arn    = var.auth_parameter_arn
  extra_parameter_arns  = local.registry_auth_parameter_arns
  ecr_repository_arns   = local.ecr_repository_arns
  ecr_pull_through_arns = local.ecr_pull_through_arns
  kms_key_arn           = var.kms_key_arn
  tags                  = var.tags
}

resource "aws_launch_template" "pool" {
  for_each      = local.pools
  name_prefix   = "${var.name}-${each.key}-"
  image_id      = each.value.ami
  instance_type = each.value.instance_type
  iam_instance_profile {
    arn = module.role.instance_profile_arn
  }
  vpc_security_group_ids = [aws_security_group.workers.id]
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_endpoint               = "enabled"
  }
  block_device_mappings {
    device_name = data.aws_ami.pool[each.key].root_device_name
    ebs {
      volume_size = var.disk_gb
      volume_type = "gp3"
      encrypted   = true
      kms_key_id  = var.kms_key_arn
    }
  }
  user_data = base64encode(templatefile("${path.module}/templates/user-data.sh.tftpl", {
    role                    = "worker"
    gpu                     = each.value.gpu
    bucket                  = var.bucket
    artifact_key            = var.artifact_key
    artifact_sha256         = var.artifact_sha256
    region                  = var.region
    auth_parameter          = var.auth_parameter
    api_keys_parameter      = ""
    notify_parameter        = ""
    registry_auth_parameter = var.registry_auth_parameter == null ? "" : var.registry_auth_parameter
    redis_host              = var.redis_host
    redis_scheme            = var.redis_scheme
    dcc_storage             = var.dcc_storage
    retention               = var.retention
    durability              = var.durability
    extra_env               = merge(each.value.env, each.value.spot.enabled ? local.spot_env : {})
    log_group               = module.role.log_group_name
  }))
  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-${each.key}-worker", "dcc:pool" = each.key })
  }
}

resource "aws_autoscaling_group" "pool" {
  for_each                  = local.pools
  name                      = "${var.name}-${each.key}-workers"
  min_size                  = each.value.min
  max_size                  = each.value.max
  vpc_zone_identifier       = var.subnet_ids
  protect_from_scale_in     = true
  health_check_type         = "EC2"
  health_check_grace_period = 300
  # On-demand pools: the launch template as it is.
  dynamic "launch_template" {
    for_each = each.value.spot.enabled ? [] : [1]
    content {
      id      = aws_launch_template.pool[each.key].id
      version = "$Latest"
    }
  }
  # Spot pools: several instance types (a shortage of one type is not a shortage of the pool),
  # price-capacity-optimized allocation, an optional on-demand base, and capacity rebalancing (a
  # replacement starts when EC2 recommends one, before the two-minute notice).
  capacity_rebalance = each.value.spot.enabled
  dynamic "mixed_instances_policy" {
    for_each = each.value.spot.enabled ? [each.value.spot] : []
    content {
      instances_distribution {
        on_demand_base_capacity                  = mixed_instances_policy.value.on_demand_base
        on_demand_percentage_above_base_capacity = mixed_instances_policy.value.on_demand_percent_above_base
        spot_allocation_strategy                 = "price-capacity-optimized"
      }
      launch_template {
        launch_template_specification {
          launch_template_id = aws_launch_template.pool[each.key].id
          version            = "$Latest"
        }
        dynamic "override" {
          for_each = length(mixed_instances_policy.value.instance_types) > 0 ? mixed_instances_policy.value.instance_types : [each.value.instance_type]
          content {
            instance_type = override.value
          }
        }
      }
    }
  }
  # The scaler owns desired capacity.
  lifecycle {
    ignore_changes = [desired_capacity]
  }
  tag {
    key                 = "Name"
    value               = "${var.name}-${each.key}-worker"
    propagate_at_launch = true
  }
  tag {
    key                 = "dcc:pool"
    value               = each.key
    propagate_at_launch = true
  }
}

# Docker Hub through an ECR pull-through cache: workers pull `<account>.dkr.ecr.<region>.amazonaws.com/docker-hub/<repository>:<tag>`
# with their instance role, ECR fetches each image from Hub once (with the Hub credentials in the
# given Secrets Manager secret, whose name must start with `ecr-pullthroughcache/`) and keeps it,
# so a scale-out never meets Hub's per-address pull limit.
resource "aws_ecr_pull_through_cache_rule" "dockerhub" {
  count                 = var.dockerhub_cache_secret_arn == null ? 0 : 1
  ecr_repository_prefix = "docker-hub"
  upstream_registry_url = "registry-1.docker.io"
  credential_arn        = var.dockerhub_cache_secret_arn
}
