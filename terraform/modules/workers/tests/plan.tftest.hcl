# modules/workers planned with a mocked AWS provider (see scripts/check-terraform.sh).

mock_provider "aws" {
  source = "../../tests/mocks"
}

variables {
  name               = "t"
  region             = "us-east-1"
  vpc_id             = "vpc-0123456789abcdef0"
  subnet_ids         = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
  bucket             = "b"
  bucket_arn         = "arn:aws:s3:::b"
  prefix             = "dcc/"
  dcc_storage        = "s3://b/dcc/"
  redis_host         = "redis.example"
  auth_parameter     = "/dcc/t/redis-auth-token"
  auth_parameter_arn = "arn:aws:ssm:us-east-1:123456789012:parameter/dcc/t/redis-auth-token"
  kms_key_arn        = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "cpu_only" {
  command = plan
  assert {
    condition     = keys(aws_autoscaling_group.pool) == ["cpu"]
    error_message = "Only the CPU pool by default."
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "systemctl enable --now docker") && !strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "nvidia-ctk runtime configure")
    error_message = "CPU workers get Docker and no NVIDIA steps."
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "DCC_TMP_DIR=/var/lib/dcc/tmp") && strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "mkdir -p /var/lib/dcc/tmp")
    error_message = "Job scratch lands on the root volume, not on AL2023's RAM-backed /tmp."
  }
  assert {
    condition = alltrue([for s in ["retry aws s3 cp", "token=$(retry aws ssm get-parameter", "instance_id=$(retry imds instance-id)", "retry dnf install -y docker"] :
    strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), s)])
    error_message = "Boot steps that reach AWS or a mirror are retried with backoff."
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "\"log_group_name\": \"/dcc/t-workers\"") && strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "StandardOutput=append:/var/log/dcc.log")
    error_message = "The dcc log is shipped to CloudWatch Logs."
  }
  assert {
    condition     = aws_launch_template.pool["cpu"].block_device_mappings[0].device_name == data.aws_ami.pool["cpu"].root_device_name
    error_message = "Root device name from the AMI."
  }
  assert {
    condition     = length(local.ecr_repository_arns) == 1 && endswith(local.ecr_repository_arns[0], ":repository/*") && !strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "DCC_REGISTRY_AUTH_FILE")
    error_message = "Workers may pull from this account's ECR repositories; no registry file unless a parameter is given."
  }
}

run "registry_credentials_from_ssm" {
  command = plan
  variables {
    registry_auth_parameter = "/team/registry-auth"
    ecr_repository_arns     = []
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "--name \"/team/registry-auth\" --query Parameter.Value --output text > /etc/dcc/registry-auth.json") && strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "DCC_REGISTRY_AUTH_FILE=/etc/dcc/registry-auth.json")
    error_message = "The registry credentials are read from SSM into a root-only file."
  }
  assert {
    condition     = length(local.registry_auth_parameter_arns) == 1 && endswith(local.registry_auth_parameter_arns[0], ":parameter/team/registry-auth") && length(local.ecr_repository_arns) == 0
    error_message = "The role may read the registry parameter; ECR can be turned off."
  }
}

run "gpu_on" {
  command = plan
  variables {
    gpu_enabled = true
  }
  override_data {
    target = data.aws_ami.pool["gpu"]
    values = { root_device_name = "/dev/sda1" }
  }
  assert {
    condition     = data.aws_ssm_parameter.ami["gpu"].name == "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
    error_message = "The GPU AMI defaults to the Deep Learning Base OSS Nvidia Driver GPU AMI (AL2023) public parameter."
  }
  assert {
    condition     = aws_launch_template.pool["gpu"].block_device_mappings[0].device_name == "/dev/sda1" && aws_launch_template.pool["cpu"].block_device_mappings[0].device_name == "/dev/xvda"
    error_message = "Each pool's root device name comes from its AMI."
  }
  assert {
    condition = alltrue([for s in ["nvidia-ctk runtime configure --runtime=docker", "systemctl restart docker", "nvidia-container-toolkit", "nvidia-smi", "DCC_GPU_MODE=auto"] :
    strcontains(base64decode(aws_launch_template.pool["gpu"].user_data), s)])
    error_message = "GPU user-data must install/register the NVIDIA runtime and check nvidia-smi before dcc starts."
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.pool["gpu"].user_data), "nvidia-smi") && length(split("nvidia-smi", base64decode(aws_launch_template.pool["gpu"].user_data))[0]) < length(split("systemctl enable --now dcc", base64decode(aws_launch_template.pool["gpu"].user_data))[0])
    error_message = "nvidia-smi is checked before dcc starts."
  }
}

run "given_amis" {
  command = plan
  variables {
    gpu_enabled = true
    cpu_ami_id  = "ami-0aaaaaaaaaaaaaaaa"
    gpu_ami_id  = "ami-0bbbbbbbbbbbbbbbb"
  }
  assert {
    condition     = length(data.aws_ssm_parameter.ami) == 0 && aws_launch_template.pool["gpu"].image_id == "ami-0bbbbbbbbbbbbbbbb"
    error_message = "Given AMIs are used, no lookup."
  }
}

run "spot_cpu_pool" {
  command = plan
  variables {
    cpu_spot = { enabled = true, instance_types = ["c7i.xlarge", "c6i.xlarge", "m7i.xlarge"], on_demand_base = 1 }
  }
  assert {
    condition     = length(aws_autoscaling_group.pool["cpu"].mixed_instances_policy) == 1 && length(aws_autoscaling_group.pool["cpu"].launch_template) == 0 && aws_autoscaling_group.pool["cpu"].capacity_rebalance == true
    error_message = "A Spot pool uses a mixed instances policy with capacity rebalancing instead of the plain launch template."
  }
  assert {
    condition     = aws_autoscaling_group.pool["cpu"].mixed_instances_policy[0].instances_distribution[0].on_demand_base_capacity == 1 && aws_autoscaling_group.pool["cpu"].mixed_instances_policy[0].instances_distribution[0].on_demand_percentage_above_base_capacity == 0 && aws_autoscaling_group.pool["cpu"].mixed_instances_policy[0].instances_distribution[0].spot_allocation_strategy == "price-capacity-optimized"
    error_message = "On-demand base as given, Spot above it, price-capacity-optimized."
  }
  assert {
    condition     = [for o in aws_autoscaling_group.pool["cpu"].mixed_instances_policy[0].launch_template[0].override : o.instance_type] == ["c7i.xlarge", "c6i.xlarge", "m7i.xlarge"]
    error_message = "Every instance type given is an override."
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "DCC_SPOT_IMDS=http://169.254.169.254")
    error_message = "Spot workers watch the instance metadata service."
  }
}

run "on_demand_by_default" {
  command = plan
  assert {
    condition     = length(aws_autoscaling_group.pool["cpu"].mixed_instances_policy) == 0 && length(aws_autoscaling_group.pool["cpu"].launch_template) == 1 && aws_autoscaling_group.pool["cpu"].capacity_rebalance == false && !strcontains(base64decode(aws_launch_template.pool["cpu"].user_data), "DCC_SPOT_IMDS")
    error_message = "Pools are on-demand unless Spot is asked for."
  }
}

run "dockerhub_pull_through_cache" {
  command = plan
  variables {
    dockerhub_cache_secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/dockerhub-AbCdEf"
  }
  assert {
    condition     = aws_ecr_pull_through_cache_rule.dockerhub[0].ecr_repository_prefix == "docker-hub" && aws_ecr_pull_through_cache_rule.dockerhub[0].upstream_registry_url == "registry-1.docker.io"
    error_message = "A pull-through cache rule for Docker Hub under docker-hub/."
  }
  assert {
    condition     = length(local.ecr_pull_through_arns) == 1 && endswith(local.ecr_pull_through_arns[0], ":repository/docker-hub/*")
    error_message = "Workers may create and import the cached repositories."
  }
}

run "no_cache_by_default" {
  command = plan
  assert {
    condition     = length(aws_ecr_pull_through_cache_rule.dockerhub) == 0
    error_message = "No pull-through cache unless a Hub secret is given."
  }
}
