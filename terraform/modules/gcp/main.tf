# Capstan on GCP: a VPC network with one subnetwork (egress through Cloud NAT), firewall rules
# that let in only the cluster's own traffic, the router's 80/443 on the masters and the public
# agents' ports, and an external passthrough network load balancer (a target pool) in front of
# the masters. Each instance runs the core module's start-up script (stock Debian) or its
# cloud-init user-data (images with cloud-init). The caller configures the google provider.

module "core" {
  source = "../core"

  cluster_name      = var.cluster_name
  masters           = var.masters
  private_agents    = var.private_agents
  public_agents     = var.public_agents
  subnet_cidr       = var.subnet_cidr
  master_join_token = var.master_join_token
  agent_join_token  = var.agent_join_token
  package_url       = var.package_url
}

locals {
  labels = merge({ capstan-cluster = var.cluster_name }, var.labels)
  tag = {
    master  = "${var.cluster_name}-master"
    private = "${var.cluster_name}-agent"
    public  = "${var.cluster_name}-public"
  }
}

resource "google_compute_network" "this" {
  name                    = var.cluster_name
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "this" {
  name                     = var.cluster_name
  network                  = google_compute_network.this.id
  region                   = var.region
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
  }
}

resource "google_compute_router" "this" {
  name    = var.cluster_name
  network = google_compute_network.this.id
  region  = var.region
}

resource "google_compute_router_nat" "this" {
  name                               = var.cluster_name
  router                             = google_compute_router.this.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"
}

resource "google_compute_firewall" "internal" {
  name          = "${var.cluster_name}-internal"
  network       = google_compute_network.this.id
  description   = "Capstan nodes: all traffic between the cluster's nodes"
  source_ranges = [var.subnet_cidr]

  allow {
    protocol = "all"
  }
}

resource "google_compute_firewall" "router" {
  #checkov:skip=CKV_GCP_106:port 80 is the router's HTTP (apps and the install.sh joining nodes fetch, which they check against their token); router_source_ranges narrows who reaches it
  name          = "${var.cluster_name}-router"
  network       = google_compute_network.this.id
  description   = "Capstan masters: the router's HTTP and HTTPS ports"
  source_ranges = var.router_source_ranges
  target_tags   = [local.tag.master]

  allow {
    protocol = "tcp"
    ports    = ["80", "443"]
  }
}

resource "google_compute_firewall" "public_agents" {
  count         = length(var.public_agent_ports) > 0 ? 1 : 0
  name          = "${var.cluster_name}-public-agents"
  network       = google_compute_network.this.id
  description   = "Capstan public agents: the ports their public tasks serve"
  source_ranges = ["0.0.0.0/0"]
  target_tags   = [local.tag.public]

  allow {
    protocol = "tcp"
    ports    = [for p in var.public_agent_ports : tostring(p)]
  }
}

resource "google_compute_firewall" "ssh" {
  count         = length(var.ssh_source_ranges) > 0 ? 1 : 0
  name          = "${var.cluster_name}-ssh"
  network       = google_compute_network.this.id
  description   = "ssh from the operators' networks"
  source_ranges = var.ssh_source_ranges

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}

resource "google_compute_instance" "node" {
  #checkov:skip=CKV_GCP_40:public agents need external addresses; masters and private agents get none
  #checkov:skip=CKV_GCP_38:customer-supplied keys stay with the caller, who must then supply them at every start; the disks are encrypted with Google-managed keys
  #checkov:skip=CKV_GCP_30:the default service account with only the logging-write and monitoring-write scopes; the nodes call no other Google API
  for_each = module.core.nodes

  name         = each.key
  zone         = var.zone
  machine_type = each.value.kind == "master" ? var.master_machine_type : var.agent_machine_type
  tags         = [local.tag[each.value.kind]]
  labels       = merge(local.labels, { capstan-role = each.value.role, capstan-kind = each.value.kind })

  boot_disk {
    initialize_params {
      image = var.image
      size  = var.disk_gb
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.this.id
    network_ip = each.value.address

    dynamic "access_config" {
      for_each = each.value.kind == "public" ? [1] : []
      content {}
    }
  }

  metadata = merge(
    {
      block-project-ssh-keys = "true"
      serial-port-enable     = "false"
    },
    var.use_cloud_init
    ? { user-data = module.core.user_data[each.key] }
    : { startup-script = module.core.startup_script[each.key] },
  )

  shielded_instance_config {
    enable_secure_boot          = false # the Capstan image boots with extlinux (BIOS), unsigned
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  service_account {
    scopes = ["logging-write", "monitoring-write"]
  }
}

# External passthrough network load balancer on the router's ports.
resource "google_compute_address" "masters" {
  name   = "${var.cluster_name}-masters"
  region = var.region
}

resource "google_compute_target_pool" "masters" {
  name      = "${var.cluster_name}-masters"
  region    = var.region
  instances = [for name, n in module.core.nodes : google_compute_instance.node[name].self_link if n.kind == "master"]
}

resource "google_compute_forwarding_rule" "router" {
  for_each = toset(["80", "443"])

  name                  = "${var.cluster_name}-router-${each.key}"
  region                = var.region
  ip_address            = google_compute_address.masters.address
  ip_protocol           = "TCP"
  port_range            = each.key
  target                = google_compute_target_pool.masters.self_link
  load_balancing_scheme = "EXTERNAL"
}
