# The cluster's shape as data: one entry per node with its role, its fixed address (masters)
# and the first-boot contract /etc/capstan/bootstrap.env, rendered both as cloud-init
# user-data (AWS, NoCloud, the Capstan VM image) and as a plain startup script (clouds whose
# stock Debian images run no cloud-init, such as GCP). The same capstan-bootstrap script runs
# in both, and the VM image ships it too.

locals {
  creates_cluster = var.join_server == null
  master_addresses = [
    for i in range(var.masters) : cidrhost(var.subnet_cidr, var.master_address_offset + i)
  ]
  # With static_addresses, agents' host numbers follow the masters' (private, then public).
  agent_address = {
    for i in range(var.private_agents + var.public_agents) : i => (
      var.static_addresses ? cidrhost(var.subnet_cidr, var.master_address_offset + var.masters + i) : null
    )
  }
  prefix_length = split("/", var.subnet_cidr)[1]

  # Where joining nodes fetch install.sh and join: an existing cluster's master, or ours.
  join_server = local.creates_cluster ? local.master_addresses[0] : var.join_server

  masters = [
    for i in range(var.masters) : {
      name    = format("%s-master-%d", var.cluster_name, i + 1)
      role    = "master"
      kind    = "master"
      address = local.master_addresses[i]
      init    = local.creates_cluster && i == 0
      token   = local.creates_cluster && i == 0 ? "" : coalesce(var.master_join_token, "")
    }
  ]
  private_agents = [
    for i in range(var.private_agents) : {
      name    = format("%s-agent-%d", var.cluster_name, i + 1)
      role    = "agent"
      kind    = "private"
      address = local.agent_address[i]
      init    = false
      token   = coalesce(var.agent_join_token, var.master_join_token, "")
    }
  ]
  public_agents = [
    for i in range(var.public_agents) : {
      name    = format("%s-public-%d", var.cluster_name, i + 1)
      role    = "agent"
      kind    = "public"
      address = local.agent_address[var.private_agents + i]
      init    = false
      token   = coalesce(var.agent_join_token, var.master_join_token, "")
    }
  ]
  node_list = concat(local.masters, local.private_agents, local.public_agents)

  bootstrap_env = {
    for n in local.node_list : n.name => templatefile("${path.module}/templates/bootstrap.env.tftpl", {
      role = n.role
      init = n.init
      join = n.token
      # The node that creates the cluster adopts the tokens every other node was given.
      agent_token  = n.init && var.agent_join_token != null ? var.agent_join_token : ""
      master_token = n.init && var.master_join_token != null ? var.master_join_token : ""
      master       = local.join_server
      address      = var.static_addresses ? format("%s/%s", n.address, local.prefix_length) : ""
      advertise    = n.address == null ? "" : n.address
      name         = var.cluster_name
      hostname     = n.name
      public       = n.kind == "public"
      package_url  = var.package_url == null ? "" : var.package_url
      skip_doctor  = var.skip_doctor
    })
  }

  bootstrap_script = file("${path.module}/files/capstan-bootstrap.sh")

  user_data = {
    for name, env in local.bootstrap_env : name => templatefile("${path.module}/templates/cloud-config.yaml.tftpl", {
      hostname  = name
      env       = env
      bootstrap = local.bootstrap_script
    })
  }

  startup_script = {
    for name, env in local.bootstrap_env : name => templatefile("${path.module}/templates/startup.sh.tftpl", {
      env       = env
      bootstrap = local.bootstrap_script
    })
  }

  # The one line each joining node runs (what capstan-bootstrap runs for it), for operators
  # who provision by hand; the first master's line creates the cluster.
  install_commands = {
    for n in local.node_list : n.name => (
      n.init
      ? format("sudo sh /usr/share/capstan/install.sh --init --package capstan.deb --advertise %s --name %s%s%s",
        n.address, var.cluster_name,
        var.agent_join_token == null ? "" : " --agent-token ${var.agent_join_token}",
      var.master_join_token == null ? "" : " --master-token ${var.master_join_token}")
      : format("curl -fsSL http://%s/install.sh | sudo sh -s -- --role %s --join %s --server %s%s",
        local.join_server, n.role, n.token == "" ? "<token>" : n.token, local.join_server,
      n.address == null ? "" : " --advertise ${n.address}")
    )
  }
}
