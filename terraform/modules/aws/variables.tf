variable "cluster_name" {
  description = "The cluster's name (see the core module): prefixes every resource."
  type        = string
  default     = "capstan"
}

variable "masters" {
  description = "How many masters: 1, 3 or 5."
  type        = number
  default     = 1
}

variable "private_agents" {
  description = "How many private agents."
  type        = number
  default     = 0
}

variable "public_agents" {
  description = "How many public agents (in the public subnet, with public addresses)."
  type        = number
  default     = 0
}

variable "master_join_token" {
  description = "Master join token, for joining masters (see the core module)."
  type        = string
  default     = null
  sensitive   = true
}

variable "agent_join_token" {
  description = "Agent join token, for agents (see the core module)."
  type        = string
  default     = null
  sensitive   = true
}

variable "package_url" {
  description = "URL of the capstan .deb when the nodes boot stock Debian (image_id null). Null with a Capstan AMI."
  type        = string
  default     = null
}

variable "image_id" {
  description = "AMI to boot: a Capstan image built from images/vm, or null for the latest official Debian 12 AMI plus the installer."
  type        = string
  default     = null
}

variable "vpc_cidr" {
  description = "The VPC's address block."
  type        = string
  default     = "10.0.0.0/16"
}

variable "private_subnet_cidr" {
  description = "Subnet of the masters and private agents (no public addresses; egress through a NAT gateway). Masters get fixed addresses from host 10 on."
  type        = string
  default     = "10.0.1.0/24"
}

variable "public_subnet_cidr" {
  description = "Subnet of the public agents, the masters' load balancer and the NAT gateway."
  type        = string
  default     = "10.0.0.0/24"
}

variable "availability_zone" {
  description = "Availability zone of both subnets, e.g. eu-west-1a."
  type        = string
}

variable "master_instance_type" {
  description = "EC2 instance type of the masters."
  type        = string
  default     = "m6i.large"
}

variable "agent_instance_type" {
  description = "EC2 instance type of the private and public agents."
  type        = string
  default     = "m6i.xlarge"
}

variable "root_volume_gb" {
  description = "Root volume size of every node, in GiB."
  type        = number
  default     = 40

  validation {
    condition     = var.root_volume_gb >= 10
    error_message = "root_volume_gb must be at least 10."
  }
}

variable "key_name" {
  description = "EC2 key pair for ssh, or null for none."
  type        = string
  default     = null
}

variable "router_cidrs" {
  description = "Who may reach the router (ports 80 and 443 of the masters' load balancer)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "public_agent_ports" {
  description = "TCP ports the public agents expose to the internet."
  type        = list(number)
  default     = [80, 443]
}

variable "ssh_cidrs" {
  description = "Who may ssh to the nodes; empty (the default) opens no ssh port."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "ssh_cidrs must be CIDR blocks of the operators' networks, never 0.0.0.0/0 or ::/0."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
