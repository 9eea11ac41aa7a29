# The cluster's shape and the rendered first-boot contract (plan only: the module has no
# resources, every output is known at plan time).

variables {
  # Short tokens: chosen before the cluster exists (capstan cluster token generate).
  master_token = "CSTN1::0123abcd.0123456789abcdef0123456789abcdef"
  agent_token  = "CSTN1::89abcdef.fedcba9876543210fedcba9876543210"
  # A full token of a cluster that exists already.
  pinned_token = "CSTN1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa::0123abcd.0123456789abcdef0123456789abcdef"
}

run "one_master_creates_the_cluster_by_default" {
  command = plan

  assert {
    condition     = length(output.nodes) == 1 && output.nodes["capstan-master-1"].init
    error_message = "the default shape is one master that creates the cluster"
  }
  assert {
    condition     = output.master_addresses == ["10.0.1.10"] && output.join_server == "10.0.1.10"
    error_message = "the first master sits at host 10 of the default subnet"
  }
  assert {
    condition     = startswith(output.bootstrap_env["capstan-master-1"], "# Capstan first-boot contract")
    error_message = "bootstrap.env starts with its comment line"
  }
  assert {
    condition = strcontains(output.bootstrap_env["capstan-master-1"],
    "ROLE=master\nINIT=1\nJOIN=\nMASTER=10.0.1.10\nADVERTISE=10.0.1.10\nNAME=capstan\nHOSTNAME=capstan-master-1\n")
    error_message = "the first master's contract: ROLE=master, INIT=1, no token, its own address"
  }
  assert {
    condition     = startswith(output.user_data["capstan-master-1"], "#cloud-config\n")
    error_message = "user-data is a cloud-config document"
  }
  assert {
    condition     = startswith(output.install_commands["capstan-master-1"], "sudo sh /usr/share/capstan/install.sh --init")
    error_message = "the first master's command is install.sh --init"
  }
}

run "three_masters_and_agents_join_the_first_master" {
  command = plan

  variables {
    cluster_name      = "prod-east"
    masters           = 3
    private_agents    = 2
    public_agents     = 1
    subnet_cidr       = "10.20.0.0/16"
    master_join_token = var.master_token
    agent_join_token  = var.agent_token
  }

  assert {
    condition     = length(output.nodes) == 6
    error_message = "3 masters + 2 private + 1 public agent"
  }
  assert {
    condition = endswith(output.bootstrap_env["prod-east-master-1"],
    "AGENT_TOKEN=${var.agent_token}\nMASTER_TOKEN=${var.master_token}\n")
    error_message = "the first master adopts the tokens the other nodes were given"
  }
  assert {
    condition     = !strcontains(output.bootstrap_env["prod-east-agent-1"], "AGENT_TOKEN=")
    error_message = "only the first master gets the tokens to adopt"
  }
  assert {
    condition     = strcontains(output.install_commands["prod-east-master-1"], "--init --package capstan.deb --advertise 10.20.0.10 --name prod-east --agent-token ${var.agent_token} --master-token ${var.master_token}")
    error_message = "the first master's command adopts both tokens"
  }
  assert {
    condition     = output.master_names == ["prod-east-master-1", "prod-east-master-2", "prod-east-master-3"]
    error_message = "masters are named <cluster>-master-<n>"
  }
  assert {
    condition     = output.private_agent_names == ["prod-east-agent-1", "prod-east-agent-2"] && output.public_agent_names == ["prod-east-public-1"]
    error_message = "agents are named <cluster>-agent-<n> and <cluster>-public-<n>"
  }
  assert {
    condition     = output.master_addresses == ["10.20.0.10", "10.20.0.11", "10.20.0.12"]
    error_message = "masters get consecutive fixed addresses"
  }
  assert {
    condition     = [for n, v in output.nodes : n if v.init] == ["prod-east-master-1"]
    error_message = "exactly the first master creates the cluster"
  }
  assert {
    condition = strcontains(output.bootstrap_env["prod-east-master-2"],
    "ROLE=master\nINIT=0\nJOIN=${var.master_token}\nMASTER=10.20.0.10\nADVERTISE=10.20.0.11\n")
    error_message = "a joining master carries the master token and joins the first master"
  }
  assert {
    condition = strcontains(output.bootstrap_env["prod-east-agent-2"],
    "ROLE=agent\nINIT=0\nJOIN=${var.agent_token}\nMASTER=10.20.0.10\nNAME=prod-east\n")
    error_message = "a private agent carries the agent token and no fixed address"
  }
  assert {
    condition     = strcontains(output.bootstrap_env["prod-east-public-1"], "\nPUBLIC=1\n") && !strcontains(output.bootstrap_env["prod-east-agent-1"], "PUBLIC")
    error_message = "only public agents are marked PUBLIC=1"
  }
  assert {
    condition     = output.nodes["prod-east-public-1"].kind == "public" && output.nodes["prod-east-agent-1"].kind == "private" && output.nodes["prod-east-agent-1"].address == null
    error_message = "node kinds and addresses"
  }
  assert {
    condition     = output.install_commands["prod-east-agent-1"] == "curl -fsSL http://10.20.0.10/install.sh | sudo sh -s -- --role agent --join ${var.agent_token} --server 10.20.0.10"
    error_message = "an agent's one line"
  }
}

run "user_data_carries_the_contract_and_the_bootstrap_script" {
  command = plan

  variables {
    masters           = 3
    private_agents    = 1
    master_join_token = var.master_token
    agent_join_token  = var.agent_token
    package_url       = "https://releases.example.invalid/capstan_0.1.0-1_amd64.deb"
  }

  assert {
    condition = alltrue([
      for name, ud in output.user_data :
      trimspace(yamldecode(ud).write_files[0].content) == trimspace(output.bootstrap_env[name])
    ])
    error_message = "every node's user-data writes exactly its bootstrap.env (valid YAML, indentation kept)"
  }
  assert {
    condition = alltrue([
      for name, ud in output.user_data :
      yamldecode(ud).write_files[0].path == "/etc/capstan/bootstrap.env" && yamldecode(ud).write_files[0].permissions == "0600"
    ])
    error_message = "bootstrap.env is written root-only"
  }
  assert {
    condition = alltrue([
      for name, ud in output.user_data :
      trimspace(yamldecode(ud).write_files[1].content) == trimspace(file("${path.module}/files/capstan-bootstrap.sh"))
      && yamldecode(ud).runcmd == [["/usr/local/sbin/capstan-bootstrap"]]
      && yamldecode(ud).hostname == name
    ])
    error_message = "user-data installs capstan-bootstrap unchanged and runs it"
  }
  assert {
    condition     = strcontains(output.bootstrap_env["capstan-master-1"], "\nPACKAGE_URL=https://releases.example.invalid/capstan_0.1.0-1_amd64.deb\n")
    error_message = "package_url reaches the contract"
  }
  assert {
    condition = alltrue([
      for name, s in output.startup_script :
      startswith(s, "#!/bin/sh\n") && strcontains(s, trimspace(output.bootstrap_env[name])) && endswith(trimspace(s), "exec /usr/local/sbin/capstan-bootstrap")
    ])
    error_message = "the start-up script writes the same contract and runs capstan-bootstrap"
  }
}

run "joining_an_existing_cluster_creates_none" {
  command = plan

  variables {
    join_server       = "10.9.9.9"
    master_join_token = var.pinned_token
    private_agents    = 2
  }

  assert {
    condition     = !output.creates_cluster && alltrue([for n, v in output.nodes : !v.init])
    error_message = "with join_server no node runs --init"
  }
  assert {
    condition     = strcontains(output.bootstrap_env["capstan-agent-1"], "JOIN=${var.pinned_token}\nMASTER=10.9.9.9\n")
    error_message = "agents fall back to the master token and join join_server"
  }
}

run "static_addresses_give_agents_fixed_addresses_after_the_masters" {
  command = plan

  variables {
    masters          = 1
    private_agents   = 1
    public_agents    = 1
    subnet_cidr      = "10.78.0.0/24"
    static_addresses = true
    agent_join_token = var.agent_token
  }

  assert {
    condition     = output.nodes["capstan-agent-1"].address == "10.78.0.11" && output.nodes["capstan-public-1"].address == "10.78.0.12"
    error_message = "agents follow the masters: private ones first, then public ones"
  }
  assert {
    condition     = strcontains(output.bootstrap_env["capstan-master-1"], "MASTER=10.78.0.10\nADDRESS=10.78.0.10/24\nADVERTISE=10.78.0.10\n")
    error_message = "the master's contract names its static address with the subnet's prefix"
  }
  assert {
    condition     = strcontains(output.bootstrap_env["capstan-agent-1"], "ADDRESS=10.78.0.11/24\nADVERTISE=10.78.0.11\n")
    error_message = "an agent's contract names its static address and advertises it"
  }
  assert {
    condition     = strcontains(output.install_commands["capstan-agent-1"], "--advertise 10.78.0.11")
    error_message = "an agent's install command advertises its static address"
  }
}

run "without_static_addresses_agents_have_none" {
  command = plan

  variables {
    private_agents   = 1
    agent_join_token = var.agent_token
  }

  assert {
    condition     = output.nodes["capstan-agent-1"].address == null && !strcontains(output.bootstrap_env["capstan-agent-1"], "ADDRESS=")
    error_message = "by default agents take their address from the network (DHCP)"
  }
}
