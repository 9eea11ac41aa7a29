//! `swarm:` section of the node config (snake_case, unknown keys rejected): where the Docker
//! API listens, the masters it schedules on, coord (container records, auth keys), the
//! framework's identity, default task sizes, whether a cluster token is required and the
//! leader lease.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use capstan_runtime::{ConfigProblem, Validate};
use serde::{Deserialize, Serialize};

/// Configuration of the swarm daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the Docker Engine API (Docker's plain-TCP port, 2375).
    pub listen: SocketAddr,
    /// The masters (`host:port` or `http://host:port`), tried in turn.
    pub masters: Vec<String>,
    /// Coord endpoints; container records live there. Empty: in memory (tests only).
    pub coord_endpoints: Vec<String>,
    /// The swarm's prefix in coord (default `/capstan/swarm`).
    pub coord_prefix: String,
    /// The framework's name as the master shows it.
    pub framework_name: String,
    /// The framework's user (tasks run as this user unless the container says otherwise).
    pub user: String,
    /// The role the framework takes offers for.
    pub role: String,
    /// The hostname the framework reports.
    pub hostname: String,
    /// CPUs of a container that sets no `--cpus`.
    pub default_cpus: f64,
    /// Memory (MiB) of a container that sets no `-m`.
    pub default_mem_mib: f64,
    /// Longest wait of `start` for the task to run (an image pull included), seconds.
    pub start_timeout_secs: u64,
    /// Authentication of every request.
    pub auth: AuthConfig,
    /// What containers may ask of the hosts (host paths of `-v`), the cluster's
    /// `cluster.containers`: swarm refuses at create what the agents would refuse at launch.
    pub container_policy: capstan_types::ContainerPolicy,
    /// TTL of the leader lease in coord, seconds: with coord, the swarms of all masters
    /// campaign and only the leader runs the framework; a standby takes over at most this long
    /// after the leader's host vanished (at once when only its process died).
    pub leader_lease_ttl_secs: u64,
}

/// How requests are authenticated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require a cluster login token (`Authorization: token=<jwt>` or `Bearer <jwt>`), verified
    /// with the cluster's keys in coord (`capstan-iam`), on every request.
    pub required: bool,
    /// The identity service's prefix in coord (default `/capstan/router`).
    pub iam_prefix: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2375),
            masters: vec!["127.0.0.1:5050".into()],
            coord_endpoints: Vec::new(),
            coord_prefix: capstan_coord_client::keyspace::SWARM.to_owned(),
            framework_name: "swarm".into(),
            user: "root".into(),
            role: "*".into(),
            hostname: "localhost".into(),
            default_cpus: 0.1,
            default_mem_mib: 128.0,
            start_timeout_secs: 300,
            auth: AuthConfig::default(),
            container_policy: capstan_types::ContainerPolicy::default(),
            leader_lease_ttl_secs: 5,
        }
    }
}

/// `host:port` or `http://host:port` → `http://host:port`.
pub fn http_url(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.trim_end_matches('/').to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

fn endpoint_ok(e: &str) -> bool {
    let hostport = e.strip_prefix("http://").unwrap_or(e).trim_end_matches('/');
    hostport
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.masters.is_empty() {
            out.push(ConfigProblem::new(
                "masters",
                "must name at least one master",
            ));
        }
        for (field, list) in [
            ("masters", &self.masters),
            ("coord_endpoints", &self.coord_endpoints),
        ] {
            for (i, e) in list.iter().enumerate() {
                if !endpoint_ok(e) {
                    out.push(ConfigProblem::new(
                        format!("{field}[{i}]"),
                        "must be host:port or http://host:port",
                    ));
                }
            }
        }
        if self.default_cpus.is_nan() || self.default_cpus <= 0.0 {
            out.push(ConfigProblem::new("default_cpus", "must be above 0"));
        }
        if self.default_mem_mib.is_nan() || self.default_mem_mib < 4.0 {
            out.push(ConfigProblem::new("default_mem_mib", "must be at least 4"));
        }
        if self.leader_lease_ttl_secs == 0 {
            out.push(ConfigProblem::new(
                "leader_lease_ttl_secs",
                "must be above 0",
            ));
        }
        if self.start_timeout_secs == 0 {
            out.push(ConfigProblem::new("start_timeout_secs", "must be above 0"));
        }
        if self.auth.required && self.coord_endpoints.is_empty() {
            out.push(ConfigProblem::new(
                "auth.required",
                "needs coord_endpoints (the cluster's token keys are in coord)",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(Config::default().validate().is_empty());
        let bad = Config {
            masters: vec!["nope".into()],
            default_cpus: 0.0,
            auth: AuthConfig {
                required: true,
                iam_prefix: None,
            },
            ..Config::default()
        };
        let fields: Vec<String> = bad.validate().iter().map(|p| p.to_string()).collect();
        let all = fields.join("\n");
        assert!(all.contains("masters[0]"), "{all}");
        assert!(all.contains("default_cpus"), "{all}");
        assert!(all.contains("auth.required"), "{all}");
    }
}
