# A Capstan cluster on GCP from stock Debian 12 plus the installer. Credentials come from
# Application Default Credentials (gcloud auth application-default login); none belong here.
# One apply, as in examples/aws: short join tokens chosen now, adopted by the first master.
terraform {
  required_version = ">= 1.9.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.20, < 8.0"
    }
  }
}

variable "project" {
  description = "GCP project id."
  type        = string
}

variable "region" {
  description = "GCP region."
  type        = string
  default     = "europe-west1"
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

provider "google" {
  project = var.project
  region  = var.region
}

module "capstan" {
  source = "../../modules/gcp"

  cluster_name      = "capstan-demo"
  region            = var.region
  zone              = "${var.region}-b"
  masters           = var.masters
  private_agents    = var.private_agents
  public_agents     = var.public_agents
  master_join_token = var.master_join_token
  agent_join_token  = var.agent_join_token
  package_url       = var.package_url
}

output "url" {
  description = "The cluster's URL (the router behind the load balancer)."
  value       = module.capstan.url
}

output "public_agent_addresses" {
  description = "The public agents' addresses."
  value       = module.capstan.public_agent_addresses
}
