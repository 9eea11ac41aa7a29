variable "cluster_name" {
  description = "The cluster's name: lower-case letters, digits and dashes, 3 to 32 characters, starting with a letter. Node names and cloud resources derive from it."
  type        = string
  default     = "capstan"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-32 characters of a-z, 0-9 and '-', start with a letter and not end with '-'."
  }
}

variable "masters" {
  description = "How many masters: 1, 3 or 5 (an odd number keeps coord's quorum)."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 3, 5], var.masters)
    error_message = "masters must be 1, 3 or 5."
  }
}

variable "private_agents" {
  description = "How many private agents (run the cluster's tasks; not reachable from outside). Agents need agent_join_token, so a new cluster starts with 0 (docs/provisioning.md)."
  type        = number
  default     = 0

  validation {
    condition     = var.private_agents >= 0 && var.private_agents <= 200 && floor(var.private_agents) == var.private_agents
    error_message = "private_agents must be a whole number from 0 to 200."
  }
}

variable "public_agents" {
  description = "How many public agents (run public-facing tasks such as edge load balancers; reachable from outside)."
  type        = number
  default     = 0

  validation {
    condition     = var.public_agents >= 0 && var.public_agents <= 50 && floor(var.public_agents) == var.public_agents
    error_message = "public_agents must be a whole number from 0 to 50."
  }
}

variable "subnet_cidr" {
  description = "The IPv4 subnet the nodes live in. Masters get fixed addresses in it (see master_address_offset) so every node knows where to join before any machine exists."
  type        = string
  default     = "10.0.1.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", var.subnet_cidr))
    error_message = "subnet_cidr must be an IPv4 CIDR block such as 10.0.1.0/24."
  }
}

variable "master_address_offset" {
  description = "Host number of the first master in subnet_cidr; master i gets host number offset + i. Clouds reserve the first few addresses of a subnet, hence the default 10."
  type        = number
  default     = 10

  validation {
    condition     = var.master_address_offset >= 4 && floor(var.master_address_offset) == var.master_address_offset
    error_message = "master_address_offset must be a whole number of at least 4 (clouds reserve the first addresses of a subnet)."
  }
}

variable "static_addresses" {
  description = "Give every node, agents too, a fixed address in subnet_cidr and render it as ADDRESS=<ip>/<prefix> in bootstrap.env, for networks without DHCP (the Capstan VM image on a private bridge). Agents follow the masters: host numbers master_address_offset + masters, + 1, ... (private agents, then public ones). Off by default: clouds hand out the addresses."
  type        = bool
  default     = false
}

variable "join_server" {
  description = "Address of a master of an existing cluster to join. Null (the default) creates a new cluster: the first master runs `install.sh --init` and every other node joins it."
  type        = string
  default     = null

  validation {
    condition     = var.join_server == null || can(regex("^[A-Za-z0-9.:-]+$", var.join_server))
    error_message = "join_server must be a host name or IP address (optionally :port), with no scheme or path."
  }
}

variable "master_join_token" {
  description = "Master join token, needed when more than one master is provisioned. For a new cluster, a short token chosen now (`capstan cluster token generate`: CSTN1::<id>.<secret>) that the first master's `cluster init` adopts, so every node can be created in one apply; to join an existing cluster, a token from `capstan cluster token create --role master` on one of its masters."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.master_join_token == null || can(regex("^CSTN1([0-9a-f]{64})?::[0-9a-f]{8}\\.[0-9a-f]{32}$", var.master_join_token))
    error_message = "master_join_token must be a Capstan join token: CSTN1<64 hex>::<8 hex>.<32 hex>, or the short CSTN1::<8 hex>.<32 hex>."
  }

  validation {
    condition     = var.master_join_token != null || var.masters == 1 && var.join_server == null
    error_message = "Joining masters need master_join_token: for a new cluster make one with `capstan cluster token generate`; for an existing one, `capstan cluster token create --role master` on a master."
  }

  # A full token names an existing CA; a cluster this apply creates has none yet.
  validation {
    condition     = var.join_server != null || var.master_join_token == null || startswith(coalesce(var.master_join_token, "-"), "CSTN1::")
    error_message = "A new cluster's master_join_token must be a short token (capstan cluster token generate: CSTN1::<id>.<secret>): a full token carries the CA hash of a cluster that already exists."
  }
}

variable "agent_join_token" {
  description = "Agent join token, needed when any agent is provisioned (a master token works too). For a new cluster, a short token chosen now (`capstan cluster token generate`); to join an existing cluster, one from `capstan cluster token create --role agent` on one of its masters."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.agent_join_token == null || can(regex("^CSTN1([0-9a-f]{64})?::[0-9a-f]{8}\\.[0-9a-f]{32}$", var.agent_join_token))
    error_message = "agent_join_token must be a Capstan join token: CSTN1<64 hex>::<8 hex>.<32 hex>, or the short CSTN1::<8 hex>.<32 hex>."
  }

  validation {
    condition     = var.agent_join_token != null || var.master_join_token != null || var.private_agents + var.public_agents == 0
    error_message = "Agents need agent_join_token (or master_join_token): for a new cluster make one with `capstan cluster token generate`; for an existing one, `capstan cluster token create --role agent` on a master."
  }

  validation {
    condition     = var.join_server != null || var.agent_join_token == null || startswith(coalesce(var.agent_join_token, "-"), "CSTN1::")
    error_message = "A new cluster's agent_join_token must be a short token (capstan cluster token generate: CSTN1::<id>.<secret>): a full token carries the CA hash of a cluster that already exists."
  }

  # cluster init keeps each token under its id: the two must differ.
  validation {
    condition     = var.agent_join_token == null || var.master_join_token == null || split(".", coalesce(var.agent_join_token, "-"))[0] != split(".", coalesce(var.master_join_token, "-"))[0]
    error_message = "agent_join_token and master_join_token must be different tokens (their ids differ)."
  }
}

variable "package_url" {
  description = "URL of the capstan .deb for nodes that start from a stock Debian image. Null when the nodes boot the Capstan VM image, which carries the package."
  type        = string
  default     = null

  validation {
    condition     = var.package_url == null || can(regex("^https?://[^[:space:]'\"]+$", var.package_url))
    error_message = "package_url must be an http:// or https:// URL without spaces or quotes."
  }
}

variable "skip_doctor" {
  description = "Pass --skip-doctor to the installer: go on even if the pre-flight checks (capstan doctor) fail. Off by default."
  type        = bool
  default     = false
}
