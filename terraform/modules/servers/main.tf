# DCC API servers: an autoscaling group of `dcc server` with DISABLE_WORKER=true (they never touch
# Docker) behind an application load balancer. Health checks use /readyz (Redis and storage
# reachable). The idle timeout is long so WebSockets and long-polls stay open. With a certificate,
# HTTPS serves the API and HTTP redirects to it.

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "DCC load balancer: HTTP(S) from the allowed clients"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_security_group_rule" "alb_in" {
  #checkov:skip=CKV_AWS_260:Port 80 only redirects to HTTPS when a certificate is given; clients are limited by var.allowed_cidrs.
  for_each          = toset(var.certificate_arn == null ? ["80"] : ["80", "443"])
  type              = "ingress"
  description       = "API clients"
  security_group_id = aws_security_group.alb.id
  protocol          = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_blocks       = var.allowed_cidrs
}

resource "aws_security_group_rule" "alb_out" {
  type                     = "egress"
  description              = "To the API servers"
  security_group_id        = aws_security_group.alb.id
  protocol                 = "tcp"
  from_port                = 8080
  to_port                  = 8080
  source_security_group_id = aws_security_group.servers.id
}

resource "aws_security_group" "servers" {
  name        = "${var.name}-servers"
  description = "DCC API servers: port 8080 from the load balancer only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_security_group_rule" "servers_in" {
  type                     = "ingress"
  description              = "API from the load balancer"
  security_group_id        = aws_security_group.servers.id
  protocol                 = "tcp"
  from_port                = 8080
  to_port                  = 8080
  source_security_group_id = aws_security_group.alb.id
}

resource "aws_security_group_rule" "servers_out" {
  #checkov:skip=CKV_AWS_382:Servers fetch user-given url inputs from the internet and reach S3/SSM endpoints.
  type              = "egress"
  description       = "Outbound (Redis, S3, SSM, url inputs)"
  security_group_id = aws_security_group.servers.id
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = ["0.0.0.0/0"]
}

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_28:A WAF is an account-level choice; attach one with aws_wafv2_web_acl_association if the API is public.
  #checkov:skip=CKV_AWS_91:Access logs need a log bucket per account; DCC logs every request itself (DCC_LOG_FORMAT=json).
  name                       = "${var.name}-api"
  load_balancer_type         = "application"
  internal                   = var.internal
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  idle_timeout               = 3600
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  tags                       = var.tags
}

resource "aws_lb_target_group" "api" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; load balancer to instance is private-subnet traffic inside the VPC.
  name     = "${var.name}-api"
  port     = 8080
  protocol = "HTTP"
  vpc_id   = var.vpc_id
  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
  # Long-polls and WebSockets end on their own; give draining servers time.
  deregistration_delay = 120
  tags                 = var.tags
}

resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:Plain HTTP is used only without a certificate (internal/test setups); with one it redirects to HTTPS.
  #checkov:skip=CKV_AWS_103:TLS policy applies to the HTTPS listener below.
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type             = var.certificate_arn == null ? "forward" : "redirect"
    target_group_arn = var.certificate_arn == null ? aws_lb_target_group.api.arn : null
    dynamic "redirect" {
      for_each = var.certificate_arn == null ? [] : [1]
      content {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }
}

resource "aws_lb_listener" "https" {
  count             = var.certificate_arn == null ? 0 : 1
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

module "role" {
  source             = "../instance-role"
  name               = "${var.name}-servers"
  bucket_arn         = var.bucket_arn
  prefix             = var.prefix
  artifact_key       = var.artifact_key
  auth_parameter_arn = var.auth_parameter_arn
  extra_parameter_arns = var.api_keys_parameter == "" ? [] : [
    "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter/${trimprefix(var.api_keys_parameter, "/")}"
  ]
  kms_key_arn = var.kms_key_arn
  tags        = var.tags
}

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

resource "aws_launch_template" "servers" {
  name_prefix   = "${var.name}-server-"
  image_id      = var.ami_id
  instance_type = var.instance_type
  iam_instance_profile {
    arn = module.role.instance_profile_arn
  }
  vpc_security_group_ids = [aws_security_group.servers.id]
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_endpoint               = "enabled"
  }
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = 30
      volume_type = "gp3"
      encrypted   = true
      kms_key_id  = var.kms_key_arn
    }
  }
  user_data = base64encode(templatefile("${path.module}/../workers/templates/user-data.sh.tftpl", {
    role               = "server"
    bucket             = var.bucket
    artifact_key       = var.artifact_key
    region             = var.region
    auth_parameter     = var.auth_parameter
    api_keys_parameter = var.api_keys_parameter
    redis_host         = var.redis_host
    dcc_storage        = var.dcc_storage
    retention          = var.retention
    extra_env          = { DISABLE_WORKER = "true" }
  }))
  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-server" })
  }
}

resource "aws_autoscaling_group" "servers" {
  name                      = "${var.name}-servers"
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.min_size
  vpc_zone_identifier       = var.private_subnet_ids
  target_group_arns         = [aws_lb_target_group.api.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 120
  launch_template {
    id      = aws_launch_template.servers.id
    version = "$Latest"
  }
  instance_refresh {
    strategy = "Rolling"
  }
  tag {
    key                 = "Name"
    value               = "${var.name}-server"
    propagate_at_launch = true
  }
}
