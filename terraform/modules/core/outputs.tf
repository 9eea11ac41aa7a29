output "cluster_name" {
  description = "The cluster's name."
  value       = var.cluster_name
}

output "creates_cluster" {
  description = "True when the first master creates a new cluster (no join_server given)."
  value       = local.creates_cluster
}

output "master_addresses" {
  description = "The masters' fixed addresses in subnet_cidr, first master first."
  value       = local.master_addresses
}

output "join_server" {
  description = "The master every joining node fetches install.sh from and joins."
  value       = local.join_server
}

output "nodes" {
  description = "Every node by name: role (master|agent), kind (master|private|public), fixed address (masters; agents with static_addresses, else null) and whether it creates the cluster."
  value = {
    for n in local.node_list : n.name => {
      role    = n.role
      kind    = n.kind
      address = n.address
      init    = n.init
    }
  }
}

output "master_names" {
  description = "Names of the master nodes, in order."
  value       = [for n in local.masters : n.name]
}

output "private_agent_names" {
  description = "Names of the private agent nodes, in order."
  value       = [for n in local.private_agents : n.name]
}

output "public_agent_names" {
  description = "Names of the public agent nodes, in order."
  value       = [for n in local.public_agents : n.name]
}

output "bootstrap_env" {
  description = "Each node's /etc/capstan/bootstrap.env (ROLE, INIT, JOIN, MASTER, ...), by node name. Sensitive: it holds the join token. Pass it to a VM as the fw_cfg entry opt/capstan/bootstrap.env."
  value       = local.bootstrap_env
  sensitive   = true
}

output "user_data" {
  description = "Each node's cloud-init user-data (#cloud-config writing bootstrap.env and running capstan-bootstrap), by node name. Sensitive: it holds the join token."
  value       = local.user_data
  sensitive   = true
}

output "startup_script" {
  description = "Each node's start-up shell script doing what user_data does, for images without cloud-init (GCP's stock Debian), by node name. Sensitive: it holds the join token."
  value       = local.startup_script
  sensitive   = true
}

output "install_commands" {
  description = "The one-line installer command of each node, by node name, for provisioning by hand. Sensitive: it holds the join token."
  value       = local.install_commands
  sensitive   = true
}
