# Capstan on AWS: a VPC with a private subnet (masters, private agents; egress through NAT)
# and a public one (public agents, the NAT gateway and a network load balancer that passes the
# router's ports 80 and 443 through to the masters). Only the router and the public agents'
# ports are reachable from outside. Each instance boots with the user-data the core module
# renders, which runs the one-line installer. The caller configures the aws provider.

module "core" {
  source = "../core"

  cluster_name      = var.cluster_name
  masters           = var.masters
  private_agents    = var.private_agents
  public_agents     = var.public_agents
  subnet_cidr       = var.private_subnet_cidr
  master_join_token = var.master_join_token
  agent_join_token  = var.agent_join_token
  package_url       = var.package_url
}

locals {
  tags    = merge({ "capstan:cluster" = var.cluster_name }, var.tags)
  image   = var.image_id != null ? var.image_id : data.aws_ami.debian[0].id
  masters = { for name, n in module.core.nodes : name => n if n.kind == "master" }
  agents  = { for name, n in module.core.nodes : name => n if n.kind != "master" }
  router_ports = {
    http  = 80
    https = 443
  }
}

# The official Debian 12 AMIs (account 136693071363 is Debian's).
data "aws_ami" "debian" {
  count       = var.image_id == null ? 1 : 0
  most_recent = true
  owners      = ["136693071363"]

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11:flow logs need a log group or bucket, a role and a retention policy the caller owns; enable them on the VPC from outside
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = var.cluster_name })
}

# Nothing may use the VPC's default security group.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = local.tags
}

resource "aws_subnet" "private" {
  vpc_id            = aws_vpc.this.id
  cidr_block        = var.private_subnet_cidr
  availability_zone = var.availability_zone
  tags              = merge(local.tags, { Name = "${var.cluster_name}-private" })
}

resource "aws_subnet" "public" {
  vpc_id            = aws_vpc.this.id
  cidr_block        = var.public_subnet_cidr
  availability_zone = var.availability_zone
  tags              = merge(local.tags, { Name = "${var.cluster_name}-public" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = local.tags
}

resource "aws_eip" "nat" {
  domain = "vpc"
  tags   = local.tags
}

resource "aws_nat_gateway" "this" {
  allocation_id = aws_eip.nat.id
  subnet_id     = aws_subnet.public.id
  tags          = local.tags
  depends_on    = [aws_internet_gateway.this]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
  tags = merge(local.tags, { Name = "${var.cluster_name}-public" })
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.this.id
  }
  tags = merge(local.tags, { Name = "${var.cluster_name}-private" })
}

resource "aws_route_table_association" "public" {
  subnet_id      = aws_subnet.public.id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table_association" "private" {
  subnet_id      = aws_subnet.private.id
  route_table_id = aws_route_table.private.id
}

# Every node talks to every other node on any port; nothing else gets in by this group.
resource "aws_security_group" "cluster" {
  #checkov:skip=CKV_AWS_382:nodes reach the Debian mirror and the registries their tasks pull from through the NAT gateway, on ports that vary; ingress is what this group restricts
  name        = "${var.cluster_name}-cluster"
  description = "Capstan nodes: all traffic between the cluster's nodes"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags

  ingress {
    description = "from the cluster's own nodes"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    self        = true
  }
  egress {
    description = "packages, the NAT gateway and the other nodes"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# The router on the masters, behind the network load balancer (which keeps client addresses,
# so the rule names the clients).
resource "aws_security_group" "router" {
  name        = "${var.cluster_name}-router"
  description = "Capstan masters: the router's HTTP and HTTPS ports"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags

  dynamic "ingress" {
    for_each = local.router_ports
    content {
      description = "router ${ingress.key}"
      from_port   = ingress.value
      to_port     = ingress.value
      protocol    = "tcp"
      cidr_blocks = var.router_cidrs
    }
  }
}

resource "aws_security_group" "public_agents" {
  name        = "${var.cluster_name}-public-agents"
  description = "Capstan public agents: the ports their public tasks serve"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags

  dynamic "ingress" {
    for_each = toset(var.public_agent_ports)
    content {
      description = "public port ${ingress.value}"
      from_port   = ingress.value
      to_port     = ingress.value
      protocol    = "tcp"
      cidr_blocks = ["0.0.0.0/0"]
    }
  }
}

resource "aws_security_group" "ssh" {
  #checkov:skip=CKV_AWS_24:the group exists only when ssh_cidrs names networks, and the variable's validation refuses 0.0.0.0/0 (checkov reads neither)
  count       = length(var.ssh_cidrs) > 0 ? 1 : 0
  name        = "${var.cluster_name}-ssh"
  description = "ssh from the operators' networks"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags

  ingress {
    description = "ssh"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = var.ssh_cidrs
  }
}

resource "aws_instance" "master" {
  #checkov:skip=CKV2_AWS_41:the nodes call no AWS API; an instance profile would only grant rights they never use
  for_each = local.masters

  ami                         = local.image
  instance_type               = var.master_instance_type
  subnet_id                   = aws_subnet.private.id
  private_ip                  = each.value.address
  associate_public_ip_address = false
  key_name                    = var.key_name
  user_data                   = module.core.user_data[each.key]
  user_data_replace_on_change = false
  ebs_optimized               = true
  monitoring                  = true
  vpc_security_group_ids = concat(
    [aws_security_group.cluster.id, aws_security_group.router.id],
    aws_security_group.ssh[*].id,
  )

  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }
  root_block_device {
    volume_size = var.root_volume_gb
    volume_type = "gp3"
    encrypted   = true
  }
  tags = merge(local.tags, { Name = each.key, "capstan:role" = "master" })
}

resource "aws_instance" "agent" {
  #checkov:skip=CKV2_AWS_41:the nodes call no AWS API; an instance profile would only grant rights they never use
  for_each = local.agents

  ami                         = local.image
  instance_type               = var.agent_instance_type
  subnet_id                   = each.value.kind == "public" ? aws_subnet.public.id : aws_subnet.private.id
  associate_public_ip_address = each.value.kind == "public"
  key_name                    = var.key_name
  user_data                   = module.core.user_data[each.key]
  user_data_replace_on_change = false
  ebs_optimized               = true
  monitoring                  = true
  vpc_security_group_ids = concat(
    [aws_security_group.cluster.id],
    each.value.kind == "public" ? [aws_security_group.public_agents.id] : [],
    aws_security_group.ssh[*].id,
  )

  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }
  root_block_device {
    volume_size = var.root_volume_gb
    volume_type = "gp3"
    encrypted   = true
  }
  tags = merge(local.tags, { Name = each.key, "capstan:role" = "agent", "capstan:kind" = each.value.kind })

  # Agents join the first master, which must exist first.
  depends_on = [aws_instance.master]
}

# A network load balancer passing the router's ports straight through (TLS ends at the
# router, with the cluster CA's certificate).
resource "aws_lb" "masters" {
  #checkov:skip=CKV2_AWS_20:a network load balancer passing TCP through to the router, which serves HTTP on 80 itself (apps, and the install.sh joining nodes fetch)
  #checkov:skip=CKV_AWS_91:access logs need a bucket the caller owns; a passthrough NLB logs nothing useful without TLS
  #checkov:skip=CKV_AWS_150:deletion protection would make `terraform destroy` of a test cluster fail
  #checkov:skip=CKV2_AWS_28:a WAF cannot sit in front of a TCP passthrough load balancer
  #checkov:skip=CKV_AWS_131:drop_invalid_header_fields applies to application load balancers only
  name                             = "${var.cluster_name}-masters"
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = [aws_subnet.public.id]
  enable_cross_zone_load_balancing = true
  tags                             = local.tags
}

resource "aws_lb_target_group" "router" {
  for_each = local.router_ports

  name        = "${var.cluster_name}-${each.key}"
  port        = each.value
  protocol    = "TCP"
  vpc_id      = aws_vpc.this.id
  target_type = "instance"
  tags        = local.tags

  health_check {
    protocol = "TCP"
    port     = "traffic-port"
  }
}

resource "aws_lb_listener" "router" {
  #checkov:skip=CKV_AWS_2:TCP passthrough; the router terminates TLS on 443 and redirects on 80
  #checkov:skip=CKV_AWS_103:TCP passthrough; TLS is the router's
  for_each = local.router_ports

  load_balancer_arn = aws_lb.masters.arn
  port              = each.value
  protocol          = "TCP"
  tags              = local.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.router[each.key].arn
  }
}

resource "aws_lb_target_group_attachment" "router" {
  for_each = {
    for pair in setproduct(keys(local.router_ports), keys(local.masters)) : "${pair[0]}/${pair[1]}" => {
      port   = pair[0]
      master = pair[1]
    }
  }

  target_group_arn = aws_lb_target_group.router[each.value.port].arn
  target_id        = aws_instance.master[each.value.master].id
  port             = local.router_ports[each.value.port]
}
