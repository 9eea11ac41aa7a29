output "url" {
  description = "The cluster's way in: the router behind the masters' load balancer."
  value       = "https://${aws_lb.masters.dns_name}/"
}

output "load_balancer_dns_name" {
  description = "DNS name of the masters' network load balancer (ports 80 and 443)."
  value       = aws_lb.masters.dns_name
}

output "master_addresses" {
  description = "The masters' private addresses, first master first."
  value       = module.core.master_addresses
}

output "public_agent_addresses" {
  description = "The public agents' public addresses, by node name."
  value       = { for name, i in aws_instance.agent : name => i.public_ip if local.agents[name].kind == "public" }
}

output "instance_ids" {
  description = "Every node's EC2 instance id, by node name."
  value       = merge({ for name, i in aws_instance.master : name => i.id }, { for name, i in aws_instance.agent : name => i.id })
}

output "vpc_id" {
  description = "The cluster's VPC."
  value       = aws_vpc.this.id
}

output "nodes" {
  description = "Every node's role, kind and fixed address (from the core module)."
  value       = module.core.nodes
}
