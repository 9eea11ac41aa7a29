//! Creating and joining Capstan clusters.
//!
//! `capstan cluster init` makes a cluster on its first master: the cluster CA, the first
//! administrator and join tokens ([`init`]). Every master then runs the bootstrap server
//! ([`bootstrap`]): it serves `install.sh`, the CA certificate, the package and the join
//! endpoint that turns a token into a node certificate and a node config. `capstan cluster
//! join` ([`join`]) is the node side, which `install.sh` calls once the package is installed; it
//! pins the CA by the hash in the token ([`token`]) before it sends anything. `capstan doctor`
//! ([`doctor`]) runs the pre-flight checks.
//!
//! A node config written here holds only the `cluster:` section (and what a role needs on top
//! of it): every daemon section defaults from it when the config is loaded, through the one
//! generator in `capstan_runtime::cluster`, so an installed node and `capstan dev` cannot
//! drift apart.

pub mod activate;
pub mod bootstrap;
pub mod doctor;
pub mod https;
pub mod init;
pub mod join;
pub mod layout;
pub mod node;
pub mod pki;
pub mod rolling;
pub mod state;
pub mod status;
pub mod token;
pub mod upgrade;

use capstan_runtime::ClusterConfig;
use serde_yaml_ng::{Mapping, Value};

pub use layout::{Layout, Membership};
pub use token::{JoinToken, Role};

/// A node config (as the master rendered it for an agent) turned into a public agent's:
/// `agent.public: true`, every other key kept.
pub fn public_agent_config(config: &str) -> Result<String, String> {
    let mut doc: Value = serde_yaml_ng::from_str(config).map_err(|e| e.to_string())?;
    let Value::Mapping(root) = &mut doc else {
        return Err("not a mapping".to_owned());
    };
    let agent = root
        .entry(Value::from("agent"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let Value::Mapping(agent) = agent else {
        return Err("`agent` is not a mapping".to_owned());
    };
    agent.insert(Value::from("public"), Value::from(true));
    serde_yaml_ng::to_string(&doc).map_err(|e| e.to_string())
}

/// Which command writes a node config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// `cluster init`: the first master founds the cluster (coord member 1).
    Init,
    /// `cluster join`. A joining master is given its coord member id: ids are never reused,
    /// so after a replaced master it is not the master's position in `cluster.masters`.
    Join { coord_id: Option<u64> },
}

/// The node config text for a node of `role` in `cluster`. A master that joins a running
/// cluster starts its coord member with no initial members: it waits to be added to the
/// existing membership instead of founding a cluster of its own.
pub fn render_node_config(cluster: &ClusterConfig, role: Role, written: Written) -> String {
    let joining = matches!(written, Written::Join { .. });
    let mut doc = Mapping::new();
    doc.insert(
        "cluster".into(),
        serde_yaml_ng::to_value(cluster).unwrap_or(Value::Null),
    );
    let mut log = Mapping::new();
    log.insert("level".into(), "info".into());
    doc.insert("log".into(), Value::Mapping(log));
    if role == Role::Master {
        let mut coord = Mapping::new();
        // coord members authenticate each other with a token derived from the cluster CA's
        // key, which every master holds (0600).
        let ca_key = Layout::default().ca_key();
        coord.insert(
            "peer_secret_file".into(),
            ca_key.to_string_lossy().into_owned().into(),
        );
        if let Written::Join { coord_id } = written {
            coord.insert("members".into(), Value::Sequence(Vec::new()));
            if let Some(id) = coord_id {
                coord.insert("id".into(), id.into());
            }
        }
        doc.insert("coord".into(), Value::Mapping(coord));
    }
    let body = serde_yaml_ng::to_string(&Value::Mapping(doc)).unwrap_or_default();
    format!(
        "# /etc/capstan/config.yaml — written by `capstan cluster {}` for a {role} node.\n\
         # Every daemon section defaults from `cluster:`; a key set here wins.\n\
         # Check it with `capstan daemon <name> --check-config`.\n{body}",
        if matches!((role, joining), (Role::Master, false)) {
            "init"
        } else {
            "join"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_agent_keeps_its_config_and_gains_the_public_role() {
        let cluster = ClusterConfig {
            name: "prod".into(),
            masters: vec!["10.0.0.1".parse().unwrap()],
            advertise: "10.0.0.9".parse().unwrap(),
            hostname: None,
            containers: Default::default(),
            security: Default::default(),
        };
        let text = render_node_config(&cluster, Role::Agent, Written::Join { coord_id: None });
        let public = public_agent_config(&text).unwrap();
        let mut doc: Value = serde_yaml_ng::from_str(&public).unwrap();
        assert_eq!(doc["agent"]["public"], Value::from(true), "{public}");
        assert_eq!(doc["cluster"]["advertise"], Value::from("10.0.0.9"));
        capstan_runtime::cluster::apply_cluster_defaults(&mut doc).unwrap();
        assert_eq!(doc["agent"]["public"], Value::from(true));
        assert_eq!(doc["agent"]["masters"][0], Value::from("10.0.0.1:5050"));
        assert!(public_agent_config("- a list").is_err());
    }

    #[test]
    fn rendered_configs_parse_and_validate_for_every_role() {
        let cluster = |advertise: &str| ClusterConfig {
            name: "prod".into(),
            masters: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            advertise: advertise.parse().unwrap(),
            hostname: Some("n".into()),
            containers: Default::default(),
            security: Default::default(),
        };
        // A joining master keeps the id it is given (5: members 3 and 4 were replaced).
        for (written, id) in [
            (Written::Init, 2),
            (Written::Join { coord_id: None }, 2),
            (Written::Join { coord_id: Some(5) }, 5),
        ] {
            let joining = written != Written::Init;
            let text = render_node_config(&cluster("10.0.0.2"), Role::Master, written);
            let mut doc: Value = serde_yaml_ng::from_str(&text).unwrap();
            capstan_runtime::cluster::apply_cluster_defaults(&mut doc).unwrap();
            assert_eq!(doc["coord"]["id"], Value::from(id), "{text}");
            assert_eq!(
                doc["coord"]["peer_secret_file"],
                Value::from("/var/lib/capstan/pki/ca.key"),
                "{text}"
            );
            let members = doc["coord"]["members"].as_sequence().unwrap();
            assert_eq!(
                members.is_empty(),
                joining,
                "a joining master founds no cluster: {text}"
            );
            assert!(text.contains(if joining {
                "cluster join"
            } else {
                "cluster init"
            }));
        }
        let text = render_node_config(
            &cluster("10.0.0.9"),
            Role::Agent,
            Written::Join { coord_id: None },
        );
        let mut doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        capstan_runtime::cluster::apply_cluster_defaults(&mut doc).unwrap();
        assert!(doc.get("coord").is_none(), "an agent runs no coord: {text}");
        assert_eq!(doc["agent"]["hostname"], Value::from("n"));
        assert_eq!(doc["agent"]["masters"][1], Value::from("10.0.0.2:5050"));
    }
}
