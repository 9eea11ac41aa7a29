output "url" {
  description = "The cluster's way in: the router behind the masters' load balancer."
  value       = "https://${google_compute_address.masters.address}/"
}

output "load_balancer_address" {
  description = "External address of the masters' load balancer (ports 80 and 443)."
  value       = google_compute_address.masters.address
}

output "master_addresses" {
  description = "The masters' internal addresses, first master first."
  value       = module.core.master_addresses
}

output "public_agent_addresses" {
  description = "The public agents' external addresses, by node name."
  value = {
    for name, i in google_compute_instance.node : name => i.network_interface[0].access_config[0].nat_ip
    if module.core.nodes[name].kind == "public"
  }
}

output "network" {
  description = "The cluster's VPC network."
  value       = google_compute_network.this.id
}

output "nodes" {
  description = "Every node's role, kind and fixed address (from the core module)."
  value       = module.core.nodes
}
