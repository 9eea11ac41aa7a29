# A Capstan cluster on AWS from stock Debian 12 plus the installer. Credentials come from the
# usual AWS environment (profile, SSO, instance role); none belong in this file.
#
# One apply, with short join tokens chosen now (the first master's `cluster init` adopts them):
#   terraform apply -var masters=3 -var private_agents=3 -var public_agents=1 \
#     -var master_join_token="$(capstan cluster token generate)" \
#     -var agent_join_token="$(capstan cluster token generate)" -var package_url=https://.../capstan_0.1.0-1_amd64.deb
terraform {
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
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
  description = "How many public agents."
  type        = number
  default     = 0
}

variable "master_join_token" {
  description = "Master join token: for a new cluster a short one (capstan cluster token generate)."
  type        = string
  default     = null
  sensitive   = true
}

variable "agent_join_token" {
  description = "Agent join token: for a new cluster a short one (capstan cluster token generate)."
  type        = string
  default     = null
  sensitive   = true
}

variable "package_url" {
  description = "URL of the capstan .deb."
  type        = string
}

variable "ssh_cidrs" {
  description = "Networks that may ssh to the nodes."
  type        = list(string)
  default     = []
}

variable "key_name" {
  description = "EC2 key pair for ssh."
  type        = string
  default     = null
}

provider "aws" {
  region = var.region
}

module "capstan" {
  source = "../../modules/aws"

  cluster_name      = "capstan-demo"
  availability_zone = "${var.region}a"
  masters           = var.masters
  private_agents    = var.private_agents
  public_agents     = var.public_agents
  master_join_token = var.master_join_token
  agent_join_token  = var.agent_join_token
  package_url       = var.package_url
  ssh_cidrs         = var.ssh_cidrs
  key_name          = var.key_name
}

output "url" {
  description = "The cluster's URL (the router behind the load balancer)."
  value       = module.capstan.url
}

output "public_agent_addresses" {
  description = "The public agents' addresses."
  value       = module.capstan.public_agent_addresses
}
