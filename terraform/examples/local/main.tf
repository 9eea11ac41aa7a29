# The cluster's shape and each node's first-boot files, with no cloud at all: for machines
# provisioned by other means (bare metal, libvirt, the Capstan VM image under QEMU). Needs no
# provider, so it runs anywhere:
#
#   terraform init && terraform apply
#   terraform output -json bootstrap_env | jq -r '."capstan-master-1"' > master.env
#   qemu-system-x86_64 ... -fw_cfg name=opt/capstan/bootstrap.env,file=master.env
#
# Every node gets a fixed address (ADDRESS= in bootstrap.env): a private bridge has no DHCP.
terraform {
  required_version = ">= 1.9.0"
}

variable "masters" {
  description = "How many masters: 1, 3 or 5."
  type        = number
  default     = 1
}

variable "private_agents" {
  description = "How many private agents (need agent_join_token)."
  type        = number
  default     = 0
}

variable "subnet_cidr" {
  description = "The nodes' subnet; masters get fixed addresses from host 10 on."
  type        = string
  default     = "10.78.0.0/24"
}

variable "master_join_token" {
  description = "Master join token for joining masters."
  type        = string
  default     = null
  sensitive   = true
}

variable "agent_join_token" {
  description = "Agent join token for agents."
  type        = string
  default     = null
  sensitive   = true
}

module "cluster" {
  source = "../../modules/core"

  cluster_name      = "local"
  masters           = var.masters
  private_agents    = var.private_agents
  subnet_cidr       = var.subnet_cidr
  static_addresses  = true
  master_join_token = var.master_join_token
  agent_join_token  = var.agent_join_token
}

output "nodes" {
  description = "Every node's role, kind and fixed address."
  value       = module.cluster.nodes
}

output "bootstrap_env" {
  description = "Each node's bootstrap.env, for the fw_cfg entry opt/capstan/bootstrap.env."
  value       = module.cluster.bootstrap_env
  sensitive   = true
}

output "user_data" {
  description = "Each node's cloud-init user-data, for a NoCloud seed."
  value       = module.cluster.user_data
  sensitive   = true
}
