//! The node config files of a dev cluster: one `config.yaml` per node with a section per
//! daemon, the same file format an installed node reads from `/etc/capstan/config.yaml`.
//! Building them is pure; writing them is the only I/O here.

use serde_json::{Value, json};

use crate::DevError;
use crate::layout::{Daemon, Node, Role};
use crate::paths::{ClusterPaths, write_atomic};

/// The YAML config of `node` in the cluster `nodes`. `cluster_label` is a `key=value` label
/// every task container of this cluster carries, so `capstan dev down` finds them.
pub fn node_config(
    node: &Node,
    nodes: &[Node],
    paths: &ClusterPaths,
    cluster_label: (&str, &str),
) -> Value {
    let masters: Vec<&Node> = nodes.iter().filter(|n| n.role == Role::Master).collect();
    let coord_endpoints: Vec<String> = masters
        .iter()
        .map(|m| m.http_addr(Daemon::Coord).to_string())
        .collect();
    let master_endpoints: Vec<String> = masters
        .iter()
        .map(|m| m.http_addr(Daemon::Master).to_string())
        .collect();
    let data = paths.node_data(&node.name);
    let mut config = json!({});
    match node.role {
        Role::Master => {
            let members: Vec<Value> = masters
                .iter()
                .map(|m| json!({ "id": u64::from(m.index), "addr": m.http_addr(Daemon::Coord).to_string() }))
                .collect();
            config["coord"] = json!({
                "id": u64::from(node.index),
                "listen": node.http_addr(Daemon::Coord).to_string(),
                "data_dir": data.join("coord"),
                "members": members,
            });
            config["master"] = json!({
                "listen": node.http_addr(Daemon::Master).to_string(),
                "hostname": node.address.to_string(),
                // A short lease: a killed leading master is replaced within seconds.
                "coord": { "endpoints": coord_endpoints, "lease_ttl": 3 },
            });
            config["apps"] = json!({
                "listen": node.http_addr(Daemon::Apps).to_string(),
                "hostname": node.address.to_string(),
                "masters": master_endpoints.iter().map(|m| format!("http://{m}")).collect::<Vec<_>>(),
                "store": { "coord_endpoints": coord_endpoints.iter().map(|c| format!("http://{c}")).collect::<Vec<_>>() },
            });
            config["dns"] = json!({
                "dns_listen": format!("{}:{}", node.address, crate::layout::DNS_PORT),
                "http_listen": node.http_addr(Daemon::Dns).to_string(),
                "masters": master_endpoints,
                // As DC/OS configures Mesos-DNS: the agent's address first, so A records and
                // SRV ports agree for tasks on bridge networks (the port is a host port).
                "ip_sources": ["host", "netinfo"],
            });
        }
        Role::Agent => {
            config["agent"] = json!({
                "listen": node.http_addr(Daemon::Agent).to_string(),
                "advertise_ip": node.address.to_string(),
                "hostname": node.address.to_string(),
                "work_dir": data.join("agent"),
                "masters": master_endpoints,
                "resources": { "ports": agent_ports(node.address.octets()[1], node.index) },
                "docker": { "extra_labels": { cluster_label.0: cluster_label.1 } },
            });
        }
    }
    config
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
        assert_eq!(m2["coord"]["members"].as_array().unwrap().len(), 3);
        assert_eq!(m2["master"]["listen"], "127.0.1.2:5050");
        let a1 = node_config(&nodes[3], &nodes, &paths, ("k", "v"));
        assert_eq!(
            a1["agent"]["masters"],
            json!(["127.0.1.1:5050", "127.0.1.2:5050", "127.0.1.3:5050"])
        );
        assert_eq!(a1["agent"]["docker"]["extra_labels"]["k"], "v");
        assert!(a1.get("coord").is_none());
        assert_eq!(a1["agent"]["resources"]["ports"], "[31000-31099]");
        assert_eq!(agent_ports(0, 2), "[31100-31199]");
        assert_eq!(agent_ports(7, 2), "[21440-21479]");
        assert_eq!(agent_ports(54, 5), "[30960-30999]");
    }
}
