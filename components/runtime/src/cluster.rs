//! The node-level `cluster:` section and the one generator of node configs.
//!
//! A node's `config.yaml` may start with
//!
//! ```yaml
//! cluster:
//!   name: prod
//!   masters: [10.0.0.1, 10.0.0.2, 10.0.0.3]
//!   advertise: 10.0.0.7
//!   hostname: node-7
//!   containers:                  # the container policy apps and every agent enforce
//!     allow_privileged: false
//!     allowed_host_paths: [/srv/shared]
//!   security:                    # permissive (the default for now) or strict
//!     mode: strict
//!     pki_dir: /var/lib/capstan/pki   # ca.pem, node.pem, node.key (the installer's)
//! ```
//!
//! and every daemon section then defaults from it: coord's member id and members, each daemon's
//! listen address on the standard port, the masters and coord endpoints every client needs,
//! the hostname and advertised address. Keys a section sets win. The installer, the packaged
//! default and `capstan dev` all build node configs through [`ClusterConfig::node_config`], so
//! they cannot drift apart.
//!
//! Endpoints have one syntax everywhere a generated config names them: `host:port` (every
//! daemon also accepts `http://host:port`).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use crate::config::ConfigProblem;

/// Standard ports, as DC/OS used them (so existing tools find the daemons).
pub mod ports {
    pub const COORD: u16 = 8181;
    pub const MASTER: u16 = 5050;
    pub const AGENT: u16 = 5051;
    pub const APPS: u16 = 8080;
    pub const DNS: u16 = 53;
    pub const DNS_HTTP: u16 = 8123;
    /// The bootstrap server (install.sh, the CA, joins, the package): plain HTTP on loopback
    /// only ([`BOOTSTRAP_HOST`]), behind the router, which terminates TLS on 443.
    pub const BOOTSTRAP_HTTP: u16 = 8090;
    /// The router (Admin Router), on every master: the cluster's way in.
    pub const ROUTER_HTTP: u16 = 80;
    pub const ROUTER_HTTPS: u16 = 443;
    /// The catalog (Cosmos), on every master behind the router.
    pub const CATALOG: u16 = 7070;
    /// The Docker Engine API (swarm), on the masters: Docker's plain-TCP port.
    pub const SWARM: u16 = 2375;
    /// The layer-4 load balancer's API and metrics, on every node (dcos-net's port).
    pub const L4LB: u16 = 62080;
    /// Where the bootstrap server listens: only the router on the same master reaches it.
    pub const BOOTSTRAP_HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;
}

/// The `cluster:` section of a node config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name (shown by the APIs and the console).
    #[serde(default = "default_name")]
    pub name: String,
    /// The master nodes' addresses; the i-th (from 1) is coord member i.
    pub masters: Vec<IpAddr>,
    /// This node's address: its daemons bind it and advertise it to the others.
    pub advertise: IpAddr,
    /// This node's hostname as agents and tasks report it; default: the advertised address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// What containers may ask of the hosts (privileges, host paths): least privilege unless
    /// the operator widens it. Copied into `apps.container_policy` and each agent's `docker`
    /// section, so the API refuses what the agents would.
    #[serde(default, skip_serializing_if = "is_default_policy")]
    pub containers: capstan_types::ContainerPolicy,
    /// The cluster's security mode: strict fills every daemon's `security` section with the
    /// node's certificate (and the router's `cluster_tls`), so they speak mutual TLS and
    /// verify every call.
    #[serde(default, skip_serializing_if = "ClusterSecurity::is_default")]
    pub security: ClusterSecurity,
}

/// The `cluster.security` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSecurity {
    pub mode: crate::auth::SecurityMode,
    /// The node's PKI directory: `ca.pem`, `node.pem`, `node.key` (as the installer writes).
    pub pki_dir: std::path::PathBuf,
}

impl Default for ClusterSecurity {
    fn default() -> Self {
        ClusterSecurity {
            mode: crate::auth::SecurityMode::Permissive,
            pki_dir: std::path::PathBuf::from("/var/lib/capstan/pki"),
        }
    }
}

impl ClusterSecurity {
    fn is_default(&self) -> bool {
        *self == ClusterSecurity::default()
    }

    /// The node's certificate files.
    pub fn files(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            cert_file: self.pki_dir.join("node.pem"),
            key_file: self.pki_dir.join("node.key"),
            ca_file: self.pki_dir.join("ca.pem"),
        }
    }

    /// The TLS this node's own tools speak to the cluster's daemons (the installer's coord and
    /// master clients): the node's certificate presented, only the cluster CA trusted, in
    /// strict mode; `None` when permissive (plain HTTP).
    pub fn client_tls(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, crate::tls::TlsError> {
        crate::security::SecurityConfig {
            mode: self.mode,
            tls: Some(self.files()),
            allow_plaintext: false,
        }
        .client_tls()
    }

    /// A daemon's `security` section under this mode (`None` when permissive: the daemons'
    /// own default). `allow_plaintext` for the ports plain clients must still reach: the
    /// master (pymesos frameworks, with credentials) and the agent (custom executors).
    pub fn section(&self, allow_plaintext: bool) -> Option<serde_json::Value> {
        (self.mode == crate::auth::SecurityMode::Strict).then(|| {
            serde_json::json!({
                "mode": "strict",
                "tls": self.files(),
                "allow_plaintext": allow_plaintext,
            })
        })
    }
}

fn is_default_policy(p: &capstan_types::ContainerPolicy) -> bool {
    *p == capstan_types::ContainerPolicy::default()
}

fn default_name() -> String {
    "capstan".to_owned()
}

impl ClusterConfig {
    /// Problems with the section, field paths under `cluster`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.masters.is_empty() {
            out.push(ConfigProblem::new(
                "cluster.masters",
                "must name at least one master",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.masters {
            if !seen.insert(m) {
                out.push(ConfigProblem::new(
                    "cluster.masters",
                    format!("{m} is listed twice"),
                ));
            }
        }
        if self.advertise.is_unspecified() {
            out.push(ConfigProblem::new(
                "cluster.advertise",
                "must be this node's address, not 0.0.0.0",
            ));
        }
        if self.name.is_empty() {
            out.push(ConfigProblem::new("cluster.name", "must not be empty"));
        }
        if !self.security.pki_dir.is_absolute() {
            out.push(ConfigProblem::new(
                "cluster.security.pki_dir",
                "must be an absolute path",
            ));
        }
        for (field, why) in self.containers.problems() {
            out.push(ConfigProblem::new(
                format!("cluster.containers.{field}"),
                why,
            ));
        }
        out
    }

    /// This node's coord member id, if it is a master.
    pub fn member_id(&self) -> Option<u64> {
        self.masters
            .iter()
            .position(|m| *m == self.advertise)
            .map(|i| i as u64 + 1)
    }

    fn hostname(&self) -> String {
        self.hostname
            .clone()
            .unwrap_or_else(|| self.advertise.to_string())
    }

    fn endpoints(&self, port: u16) -> Vec<String> {
        self.masters
            .iter()
            .map(|m| SocketAddr::new(*m, port).to_string())
            .collect()
    }

    /// The bootstrap server's address on every master (loopback, behind the router).
    pub fn bootstrap_addr() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(ports::BOOTSTRAP_HOST), ports::BOOTSTRAP_HTTP)
    }

    fn at(&self, port: u16) -> String {
        SocketAddr::new(self.advertise, port).to_string()
    }

    /// Every daemon section's defaults for this node, as a config document (without `cluster:`).
    pub fn defaults(&self) -> Value {
        let mut doc = serde_json::json!({
            "master": {
                "listen": self.at(ports::MASTER),
                "hostname": self.hostname(),
                "cluster": self.name,
                "coord": { "endpoints": self.endpoints(ports::COORD) },
            },
            "apps": {
                "listen": self.at(ports::APPS),
                "hostname": self.hostname(),
                "masters": self.endpoints(ports::MASTER),
                "store": { "coord_endpoints": self.endpoints(ports::COORD) },
                "container_policy": self.containers,
            },
            "dns": {
                "dns_listen": self.at(ports::DNS),
                "http_listen": self.at(ports::DNS_HTTP),
                "masters": self.endpoints(ports::MASTER),
                "coord_endpoints": self.endpoints(ports::COORD),
            },
            "bootstrap": {
                "http_listen": Self::bootstrap_addr().to_string(),
                "coord_endpoints": self.endpoints(ports::COORD),
            },
            "l4lb": {
                "http_listen": self.at(ports::L4LB),
                "masters": self.endpoints(ports::MASTER),
                "coord_endpoints": self.endpoints(ports::COORD),
            },
            "agent": {
                "listen": self.at(ports::AGENT),
                "advertise_ip": self.advertise.to_string(),
                "hostname": self.hostname(),
                "masters": self.endpoints(ports::MASTER),
                // Where a strict agent verifies administrators' and viewers' credentials.
                "coord_endpoints": self.endpoints(ports::COORD),
                "docker": {
                    "allow_privileged": self.containers.allow_privileged,
                    "allowed_host_paths": self.containers.allowed_host_paths,
                },
            },
        });
        if let Some(id) = self.member_id() {
            let members: Vec<serde_json::Value> = self
                .masters
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    serde_json::json!({"id": i as u64 + 1, "addr": SocketAddr::new(*m, ports::COORD).to_string()})
                })
                .collect();
            doc["coord"] = serde_json::json!({
                "id": id,
                "listen": self.at(ports::COORD),
                "members": members,
            });
            doc["router"] = serde_json::json!({
                "http_listen": self.at(ports::ROUTER_HTTP),
                "https_listen": self.at(ports::ROUTER_HTTPS),
                "public_ip": self.advertise.to_string(),
                "coord_endpoints": self.endpoints(ports::COORD),
                "masters": self.endpoints(ports::MASTER),
                "apps": self.endpoints(ports::APPS),
                "dns_http": self.at(ports::DNS_HTTP),
                // This master's catalog (capstan-catalog.service), as dev runs it too.
                "catalog": self.at(ports::CATALOG),
                "bootstrap": Self::bootstrap_addr().to_string(),
            });
            doc["catalog"] = serde_json::json!({
                "listen": self.at(ports::CATALOG),
                "coord_endpoints": self.endpoints(ports::COORD),
                "apps": [self.at(ports::APPS)],
                "masters": self.endpoints(ports::MASTER),
            });
            // The Docker API (capstan-swarm.service): Docker's port, records in coord and the
            // cluster token on every request (an open Docker API is a root shell on agents).
            doc["swarm"] = serde_json::json!({
                "listen": self.at(ports::SWARM),
                "masters": self.endpoints(ports::MASTER),
                "coord_endpoints": self.endpoints(ports::COORD),
                "hostname": self.hostname(),
                "auth": { "required": true },
                "container_policy": self.containers,
            });
        }
        self.secure(&mut doc);
        serde_yaml_ng::to_value(doc).unwrap_or(Value::Null)
    }

    /// In strict mode, every daemon section present gets its `security` section (the router
    /// its `cluster_tls`).
    fn secure(&self, doc: &mut serde_json::Value) {
        let Some(map) = doc.as_object_mut() else {
            return;
        };
        for (daemon, section) in map.iter_mut() {
            let plain = matches!(daemon.as_str(), "master" | "agent");
            let secured = match daemon.as_str() {
                "router" => Some(("cluster_tls", serde_json::json!(self.security.files()))),
                "coord" | "master" | "apps" | "agent" | "catalog" | "swarm" | "dns" | "l4lb" => {
                    self.security.section(plain).map(|s| ("security", s))
                }
                _ => None,
            };
            if let (Some((key, value)), Some(section)) = (secured, section.as_object_mut())
                && self.security.mode == crate::auth::SecurityMode::Strict
            {
                section.insert(key.to_owned(), value);
            }
        }
    }

    /// The whole node config: the `cluster:` section, every section's defaults, and
    /// `overrides` (a document of the same shape) on top.
    pub fn node_config(&self, overrides: Value) -> Value {
        let mut doc = self.defaults();
        merge(&mut doc, overrides);
        if let (Value::Mapping(m), Ok(cluster)) = (&mut doc, serde_yaml_ng::to_value(self)) {
            m.insert(Value::from("cluster"), cluster);
        }
        doc
    }
}

/// Deep-merges `over` into `base`: mappings merge key by key, anything else in `over` wins.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, over) => *slot = over,
    }
}

/// Fills a parsed node config's daemon sections from its `cluster:` section, if it has one;
/// keys the file sets win. `Err` is the cluster section's problems.
pub fn apply_cluster_defaults(doc: &mut Value) -> Result<(), ClusterSectionError> {
    let Some(section) = doc.get("cluster").cloned() else {
        return Ok(());
    };
    let de = serde_path_to_error::deserialize::<_, ClusterConfig>(section);
    let cluster = de.map_err(|e| {
        let path = e.path().to_string();
        ClusterSectionError::Parse {
            field: if path == "." {
                "cluster".to_owned()
            } else {
                format!("cluster.{path}")
            },
            message: e.inner().to_string(),
        }
    })?;
    let problems = cluster.problems();
    if !problems.is_empty() {
        return Err(ClusterSectionError::Invalid(problems));
    }
    let mut filled = cluster.defaults();
    let file = std::mem::replace(doc, Value::Mapping(Mapping::new()));
    merge(&mut filled, file);
    *doc = filled;
    Ok(())
}

/// Why the `cluster:` section could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSectionError {
    Parse { field: String, message: String },
    Invalid(Vec<ConfigProblem>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(advertise: &str) -> ClusterConfig {
        ClusterConfig {
            name: "t".into(),
            masters: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            advertise: advertise.parse().unwrap(),
            hostname: None,
            containers: Default::default(),
            security: Default::default(),
        }
    }

    #[test]
    fn strict_mode_gives_every_daemon_the_node_certificate() {
        let mut c = cluster("10.0.0.1");
        assert!(c.defaults()["apps"].get("security").is_none());
        c.security.mode = crate::auth::SecurityMode::Strict;
        let d = c.defaults();
        for daemon in [
            "coord", "master", "apps", "agent", "catalog", "swarm", "dns", "l4lb",
        ] {
            assert_eq!(
                d[daemon]["security"]["mode"],
                Value::from("strict"),
                "{daemon}"
            );
            assert_eq!(
                d[daemon]["security"]["tls"]["key_file"],
                Value::from("/var/lib/capstan/pki/node.key"),
                "{daemon}"
            );
        }
        assert_eq!(
            d["master"]["security"]["allow_plaintext"],
            Value::from(true)
        );
        assert_eq!(d["apps"]["security"]["allow_plaintext"], Value::from(false));
        assert_eq!(
            d["router"]["cluster_tls"]["ca_file"],
            Value::from("/var/lib/capstan/pki/ca.pem")
        );
        // The section round-trips through a config file and is checked.
        let doc = c.node_config(Value::Mapping(Mapping::new()));
        assert_eq!(doc["cluster"]["security"]["mode"], Value::from("strict"));
        c.security.pki_dir = "pki".into();
        let fields: Vec<String> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["cluster.security.pki_dir"]);
    }

    #[test]
    fn the_container_policy_reaches_apps_and_every_agent() {
        let strict = cluster("10.0.0.7").defaults();
        assert_eq!(
            strict["agent"]["docker"]["allow_privileged"],
            Value::from(false)
        );
        assert_eq!(
            strict["apps"]["container_policy"]["allowed_host_paths"],
            Value::Sequence(Vec::new())
        );
        let mut c = cluster("10.0.0.1");
        c.containers.allowed_host_paths = vec!["/srv/shared".into()];
        let d = c.defaults();
        for section in [&d["agent"]["docker"], &d["apps"]["container_policy"]] {
            assert_eq!(section["allowed_host_paths"][0], Value::from("/srv/shared"));
        }
        c.containers.allowed_host_paths = vec!["relative".into()];
        let fields: Vec<String> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["cluster.containers.allowed_host_paths[0]"]);
    }

    #[test]
    fn a_master_gets_its_member_id_and_every_endpoint() {
        let d = cluster("10.0.0.2").defaults();
        assert_eq!(d["coord"]["id"], Value::from(2));
        assert_eq!(d["coord"]["listen"], Value::from("10.0.0.2:8181"));
        assert_eq!(
            d["coord"]["members"][0]["addr"],
            Value::from("10.0.0.1:8181")
        );
        assert_eq!(
            d["master"]["coord"]["endpoints"][1],
            Value::from("10.0.0.2:8181")
        );
        assert_eq!(d["apps"]["masters"][0], Value::from("10.0.0.1:5050"));
        assert_eq!(d["dns"]["masters"][1], Value::from("10.0.0.2:5050"));
    }

    #[test]
    fn a_master_runs_the_router_on_its_address() {
        let d = cluster("10.0.0.2").defaults();
        assert_eq!(d["router"]["http_listen"], Value::from("10.0.0.2:80"));
        assert_eq!(d["router"]["https_listen"], Value::from("10.0.0.2:443"));
        assert_eq!(d["router"]["public_ip"], Value::from("10.0.0.2"));
        assert_eq!(d["router"]["masters"][1], Value::from("10.0.0.2:5050"));
        assert_eq!(d["router"]["dns_http"], Value::from("10.0.0.2:8123"));
        // Every master runs its catalog (capstan-catalog.service); the router proxies to it.
        assert_eq!(d["router"]["catalog"], Value::from("10.0.0.2:7070"));
        assert_eq!(d["catalog"]["listen"], Value::from("10.0.0.2:7070"));
        assert_eq!(d["catalog"]["apps"][0], Value::from("10.0.0.2:8080"));
        // The Docker API (capstan-swarm.service), tokens required.
        assert_eq!(d["swarm"]["listen"], Value::from("10.0.0.2:2375"));
        assert_eq!(
            d["swarm"]["coord_endpoints"][0],
            Value::from("10.0.0.1:8181")
        );
        assert_eq!(d["swarm"]["auth"]["required"], Value::from(true));
        // The router proxies the bootstrap paths to the bootstrap server on loopback.
        assert_eq!(d["router"]["bootstrap"], Value::from("127.0.0.1:8090"));
        assert_eq!(d["bootstrap"]["http_listen"], Value::from("127.0.0.1:8090"));
        assert!(d["bootstrap"].get("https_listen").is_none());
    }

    #[test]
    fn an_agent_has_no_coord_section() {
        let d = cluster("10.0.0.9").defaults();
        assert!(d.get("coord").is_none());
        assert!(d.get("router").is_none());
        assert!(d.get("catalog").is_none());
        assert!(d.get("swarm").is_none());
        assert_eq!(d["agent"]["advertise_ip"], Value::from("10.0.0.9"));
        assert_eq!(d["agent"]["hostname"], Value::from("10.0.0.9"));
        // Every node runs its l4lb (dcos-net's port), following every master.
        assert_eq!(d["l4lb"]["http_listen"], Value::from("10.0.0.9:62080"));
        assert_eq!(d["l4lb"]["masters"][1], Value::from("10.0.0.2:5050"));
    }

    #[test]
    fn keys_the_file_sets_win() {
        let mut doc: Value = serde_yaml_ng::from_str(
            "cluster: {masters: [10.0.0.1], advertise: 10.0.0.1}\nmaster: {listen: '10.0.0.1:6000'}\n",
        )
        .unwrap();
        apply_cluster_defaults(&mut doc).unwrap();
        assert_eq!(doc["master"]["listen"], Value::from("10.0.0.1:6000"));
        assert_eq!(doc["master"]["hostname"], Value::from("10.0.0.1"));
        assert_eq!(doc["coord"]["id"], Value::from(1));
    }

    #[test]
    fn a_bad_cluster_section_names_the_field() {
        let mut doc: Value =
            serde_yaml_ng::from_str("cluster: {masters: [], advertise: 0.0.0.0}").unwrap();
        let Err(ClusterSectionError::Invalid(p)) = apply_cluster_defaults(&mut doc) else {
            panic!("accepted");
        };
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["cluster.masters", "cluster.advertise"]);
        let mut doc: Value = serde_yaml_ng::from_str("cluster: {mastrs: []}").unwrap();
        assert!(matches!(
            apply_cluster_defaults(&mut doc),
            Err(ClusterSectionError::Parse { .. })
        ));
    }

    #[test]
    fn node_config_round_trips_through_the_loader() {
        let c = cluster("10.0.0.1");
        let doc = c.node_config(serde_yaml_ng::from_str("apps: {hostname: a1}").unwrap());
        let text = serde_yaml_ng::to_string(&doc).unwrap();
        let mut reread: Value = serde_yaml_ng::from_str(&text).unwrap();
        apply_cluster_defaults(&mut reread).unwrap();
        assert_eq!(reread, doc);
        assert_eq!(doc["apps"]["hostname"], Value::from("a1"));
    }
}
