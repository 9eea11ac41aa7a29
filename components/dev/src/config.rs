//! The node config files of a dev cluster: one `config.yaml` per node with a section per
//! daemon, the same file format an installed node reads from `/etc/capstan/config.yaml`.
//! Building them is pure; writing them is the only I/O here.

use std::net::IpAddr;

use capstan_runtime::ClusterConfig;
use serde_json::{Value, json};

use crate::DevError;
use crate::layout::{Node, Role};
use crate::paths::{ClusterPaths, write_atomic};

/// The config of `node` in the cluster `nodes`: the `cluster:` section (masters, this
/// node's address) expanded by the same generator the installer uses
/// ([`ClusterConfig::node_config`]), plus what only a dev cluster needs — data under the
/// cluster's state directory, per-agent host-port slices, a label on every task container,
/// a short master lease, DC/OS's DNS address sources, and a loopback VIP range with the
/// userspace data plane for l4lb (see [`l4lb_section`]). `cluster_label` is the `key=value`
/// label every task container of this cluster carries, so `capstan dev down` finds them.
pub fn node_config(
    node: &Node,
    nodes: &[Node],
    paths: &ClusterPaths,
    cluster_label: (&str, &str),
) -> Value {
    let cluster = ClusterConfig {
        name: crate::identity::CLUSTER_NAME.to_owned(),
        masters: nodes
            .iter()
            .filter(|n| n.role == Role::Master)
            .map(|m| IpAddr::V4(m.address))
            .collect(),
        advertise: IpAddr::V4(node.address),
        hostname: None,
        // Least privilege, as an installed cluster: no privileged containers or host paths.
        containers: Default::default(),
        // Permissive, so the 2013 walkthrough's plain curl to port 8080 works on a laptop.
        security: Default::default(),
    };
    let data = paths.node_data(&node.name);
    let net = node.address.octets()[1];
    let overrides = match node.role {
        Role::Master => json!({
            // Members authenticate raft RPCs with a token derived from the dev CA's key (0600),
            // as an installed master's coord does from the cluster CA's.
            "coord": { "data_dir": data.join("coord"), "peer_secret_file": paths.ca_key() },
            // Leases a little longer than the defaults (2 s): one loaded machine runs it all.
            // `cluster`: the name Mesos's state carries (`dcos cluster setup` reads it).
            "master": { "coord": { "lease_ttl": 3 } },
            "apps": { "leader_lease_ttl": 3 },
            // As DC/OS configures Mesos-DNS: the agent's address first, so A records and
            // SRV ports agree for tasks on bridge networks (the port is a host port).
            // Named VIPs in the same loopback range every node's l4lb uses.
            "dns": {
                "ip_sources": ["host", "netinfo"],
                "l4lb_named_ipv4": l4lb_named_range(net),
                "l4lb_named_ipv6": "",
            },
            "l4lb": l4lb_section(net),
            "router": router_section(node, paths),
            // The image store of bundles imported with `capstan package import`.
            "catalog": { "images_dir": data.join("catalog-images") },
        }),
        Role::Agent => json!({
            "agent": {
                "work_dir": data.join("agent"),
                "resources": { "ports": agent_ports(node.address.octets()[1], node.index) },
                "docker": { "extra_labels": { cluster_label.0: cluster_label.1 } },
            },
            "l4lb": l4lb_section(net),
        }),
    };
    let overrides =
        serde_yaml_ng::to_value(overrides).expect("a JSON value always converts to YAML");
    let mut config = serde_json::to_value(cluster.node_config(overrides))
        .expect("a YAML value of strings and numbers converts to JSON");
    // Each node runs only its role's daemons: leave the other role's sections out.
    if let Some(doc) = config.as_object_mut() {
        let keep: &[&str] = match node.role {
            Role::Master if node.router => &[
                "cluster", "coord", "master", "apps", "dns", "l4lb", "catalog", "router",
            ],
            Role::Master => &["cluster", "coord", "master", "apps", "dns", "l4lb"],
            Role::Agent => &["cluster", "agent", "l4lb"],
        };
        doc.retain(|k, _| keep.contains(&k.as_str()));
        if node.daemons().contains(&crate::layout::Daemon::Swarm) {
            let policy = serde_json::to_value(&cluster.containers).unwrap_or_default();
            doc.insert("swarm".to_owned(), swarm_section(node, nodes, policy));
        }
    }
    config
}

/// The router's section on a master, over the cluster defaults (80 and 443 on the master's
/// address, every master's coord, master and apps, this master's dns): the certificate
/// [`crate::identity`] issued for it, this master's catalog, and no bootstrap. Port 80 serves the routes too, as open
/// DC/OS did.
fn router_section(node: &Node, paths: &ClusterPaths) -> Value {
    json!({
        // dev runs no bootstrap server (nodes join by being started, not installed).
        "bootstrap": null,
        "catalog": format!("{}:{}", node.address, crate::layout::CATALOG_PORT),
        "tls": {
            "cert": paths.node_cert(&node.name),
            "key": paths.node_key(&node.name),
            "ca": paths.ca_cert(),
        },
    })
}

/// The named-VIP range of the cluster whose addresses are `127.<net>.*`: `127.<net>.128.0/17`,
/// inside 127.0.0.0/8, so every VIP address is local by definition and a packet to one never
/// leaves the machine, and outside the nodes' own `127.<net>.1.*`/`127.<net>.2.*`. IP VIPs in
/// a dev cluster must be loopback addresses too (say `127.<net>.100.x`).
pub fn l4lb_named_range(net: u8) -> String {
    format!("127.{net}.128.0/17")
}

/// The l4lb section of every node: the userspace data plane (a dev cluster adds no
/// interfaces, routes or nftables rules to the host), its listeners bound with
/// `SO_REUSEPORT` because every node's l4lb shares the one network namespace and serves the
/// same VIPs, and the cluster's loopback VIP range (no IPv6 named VIPs: they would not be
/// local).
fn l4lb_section(net: u8) -> Value {
    json!({
        "data_plane": "userspace",
        "reuse_port": true,
        "named_ipv4": l4lb_named_range(net),
        "named_ipv6": "",
    })
}

/// The swarm section (the Docker API, on the first master): Docker's port on the master's
/// address, every master and coord member, the cluster token required on every request, and
/// the cluster's container policy (as the cluster defaults give every master).
fn swarm_section(node: &Node, nodes: &[Node], policy: Value) -> Value {
    use crate::layout::Daemon;
    let masters: Vec<&Node> = nodes.iter().filter(|n| n.role == Role::Master).collect();
    json!({
        "listen": node.http_addr(Daemon::Swarm).to_string(),
        "masters": masters.iter().map(|m| m.http_addr(Daemon::Master).to_string()).collect::<Vec<_>>(),
        "coord_endpoints": masters.iter().map(|m| m.http_addr(Daemon::Coord).to_string()).collect::<Vec<_>>(),
        "hostname": node.address.to_string(),
        "auth": { "required": true },
        "container_policy": policy,
    })
}

/// Agents share this machine's network namespace, so each gets its own slice of host ports:
/// a task on host networking can then bind its offered port without colliding with another
/// agent's. The standard cluster (`net` 0) slices the usual 31000-32000 range, 100 ports per
/// agent (continuing above 32000 for many agents); side-by-side clusters (tests, `--net N`)
/// get 40 ports per agent (5 agents) in a block of their own between 20000 and 31000 —
/// below the kernel's ephemeral range (32768–60999), where an outgoing connection could hold
/// the port a task is about to bind.
pub fn agent_ports(net: u8, index: u8) -> String {
    let index = u32::from(index) - 1;
    let (first, len) = match net {
        0 => (31000 + 100 * index, 100),
        n => (20000 + 200 * (u32::from(n) % 55) + 40 * index, 40),
    };
    format!("[{first}-{}]", first + len - 1)
}

/// Writes every node's `config.yaml` (and creates its data directory).
pub fn write_node_configs(
    nodes: &[Node],
    paths: &ClusterPaths,
    label_key: &str,
) -> Result<(), DevError> {
    let label_value = paths.control_name();
    for node in nodes {
        let dir = paths.node_dir(&node.name);
        std::fs::create_dir_all(paths.node_data(&node.name)).map_err(|source| DevError::Io {
            path: dir.clone(),
            source,
        })?;
        // coord and the agent create their state dirs 0700 and refuse wider ones: narrow any
        // that an older `capstan dev` left 0755.
        for state in ["coord", "agent"] {
            use std::os::unix::fs::PermissionsExt as _;
            let path = paths.node_data(&node.name).join(state);
            if path.is_dir() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                    .map_err(|source| DevError::Io { path, source })?;
            }
        }
        let config = node_config(node, nodes, paths, (label_key, &label_value));
        let yaml =
            serde_yaml_ng::to_string(&config).expect("a JSON value always serialises to YAML");
        let text = format!(
            "# Written by `capstan dev up` for {}; rewritten at every `up`.\n{yaml}",
            node.name
        );
        write_atomic(&paths.node_config(&node.name), text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::layout;

    #[test]
    fn masters_list_every_coord_member_and_agents_point_at_every_master() {
        let nodes = layout(3, 1, 0).unwrap();
        let paths = ClusterPaths::new("/tmp/x");
        let m2 = node_config(&nodes[1], &nodes, &paths, ("k", "v"));
        assert_eq!(m2["coord"]["id"], 2);
        // Only the first master runs swarm, for every master and with tokens required.
        assert!(m2.get("swarm").is_none());
        let m1 = node_config(&nodes[0], &nodes, &paths, ("k", "v"));
        assert_eq!(m1["swarm"]["listen"], "127.0.1.1:2375");
        assert_eq!(m1["swarm"]["masters"].as_array().unwrap().len(), 3);
        assert_eq!(m1["swarm"]["coord_endpoints"][2], "127.0.1.3:8181");
        assert_eq!(m1["swarm"]["auth"]["required"], true);
        assert_eq!(m2["coord"]["members"].as_array().unwrap().len(), 3);
        assert_eq!(m2["coord"]["peer_secret_file"], "/tmp/x/tls/ca.key");
        assert_eq!(m2["master"]["listen"], "127.0.1.2:5050");
        assert_eq!(m2["router"]["http_listen"], "127.0.1.2:80");
        assert_eq!(m2["router"]["https_listen"], "127.0.1.2:443");
        assert!(
            m2["router"]["bootstrap"].is_null(),
            "dev runs no bootstrap server"
        );
        assert_eq!(m2["router"]["coord_endpoints"][2], "127.0.1.3:8181");
        assert_eq!(m2["router"]["apps"][0], "127.0.1.1:8080");
        assert_eq!(m2["router"]["dns_http"], "127.0.1.2:8123");
        assert_eq!(m2["router"]["catalog"], "127.0.1.2:7070");
        assert_eq!(m2["catalog"]["listen"], "127.0.1.2:7070");
        assert_eq!(m2["catalog"]["apps"][0], "127.0.1.2:8080");
        assert_eq!(
            m2["router"]["tls"]["cert"],
            "/tmp/x/nodes/master-2/tls/cert.pem"
        );
        let bare = crate::layout::without_router(nodes.clone());
        assert!(
            node_config(&bare[1], &bare, &paths, ("k", "v"))
                .get("router")
                .is_none()
        );
        let a1 = node_config(&nodes[3], &nodes, &paths, ("k", "v"));
        assert_eq!(
            a1["agent"]["masters"],
            json!(["127.0.1.1:5050", "127.0.1.2:5050", "127.0.1.3:5050"])
        );
        assert_eq!(a1["agent"]["docker"]["extra_labels"]["k"], "v");
        assert!(a1.get("coord").is_none());
        assert!(a1.get("router").is_none());
        assert_eq!(a1["agent"]["resources"]["ports"], "[31000-31099]");
        // Every node runs l4lb on its own address, with the dns's loopback VIP range.
        assert_eq!(a1["l4lb"]["http_listen"], "127.0.2.1:62080");
        assert_eq!(a1["l4lb"]["named_ipv4"], "127.0.128.0/17");
        assert_eq!(a1["l4lb"]["data_plane"], "userspace");
        assert_eq!(m2["l4lb"]["masters"][0], "127.0.1.1:5050");
        assert_eq!(m2["dns"]["l4lb_named_ipv4"], m2["l4lb"]["named_ipv4"]);
        assert_eq!(agent_ports(0, 2), "[31100-31199]");
        assert_eq!(agent_ports(7, 2), "[21440-21479]");
        assert_eq!(agent_ports(54, 5), "[30960-30999]");
    }

    #[test]
    fn dev_configs_parse_as_node_configs_with_their_cluster_section() {
        let nodes = layout(3, 2, 0).unwrap();
        let paths = ClusterPaths::new("/tmp/x");
        for node in &nodes {
            let config = node_config(node, &nodes, &paths, ("k", "v"));
            let text = serde_yaml_ng::to_string(&config).unwrap();
            let mut reread: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
            capstan_runtime::cluster::apply_cluster_defaults(&mut reread).unwrap();
            let reread = serde_json::to_value(reread).unwrap();
            for section in config.as_object().unwrap().keys() {
                assert_eq!(reread[section], config[section], "{}: {section}", node.name);
            }
        }
    }
}
