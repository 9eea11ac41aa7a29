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
  description = "How many public agents (with external addresses)."
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
  description = "URL of the capstan .deb when the nodes boot stock Debian. Null with a Capstan image."
  type        = string
  default     = null
}

variable "region" {
  description = "Region of the subnetwork, the NAT and the load balancer, e.g. europe-west1."
  type        = string
}

variable "zone" {
  description = "Zone of the instances, e.g. europe-west1-b."
  type        = string
}

variable "image" {
  description = "Boot image: a Capstan image built from images/vm, or the default stock Debian 12 plus the installer."
  type        = string
  default     = "debian-cloud/debian-12"
}

variable "use_cloud_init" {
  description = "True when the image runs cloud-init (the full Capstan image): the nodes then get the core module's user-data; otherwise (stock Debian, which has no cloud-init on GCP) its start-up script."
  type        = bool
  default     = false
}

variable "subnet_cidr" {
  description = "The nodes' subnetwork. Masters get fixed addresses from host 10 on."
  type        = string
  default     = "10.0.1.0/24"
}

variable "master_machine_type" {
  description = "Machine type of the masters."
  type        = string
  default     = "n2-standard-2"
}

variable "agent_machine_type" {
  description = "Machine type of the private and public agents."
  type        = string
  default     = "n2-standard-4"
}

variable "disk_gb" {
  description = "Boot disk size of every node, in GB."
  type        = number
  default     = 40

  validation {
    condition     = var.disk_gb >= 10
    error_message = "disk_gb must be at least 10."
  }
}

variable "router_source_ranges" {
  description = "Who may reach the router (ports 80 and 443 of the masters' load balancer)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "public_agent_ports" {
  description = "TCP ports the public agents expose to the internet."
  type        = list(number)
  default     = [80, 443]
}

variable "ssh_source_ranges" {
  description = "Who may ssh to the nodes, e.g. IAP's 35.235.240.0/20; empty (the default) opens no ssh port."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels added to every instance."
  type        = map(string)
  default     = {}
}
