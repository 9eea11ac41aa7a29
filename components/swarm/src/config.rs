//! `swarm:` section of the node config (snake_case, unknown keys rejected): where the Docker
//! API listens, the masters it schedules on, coord (container records, auth keys), the
//! framework's identity, default task sizes, whether a cluster token is required, the
//! leader lease and the security mode (`security`, `capstan_runtime::SecurityConfig`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use capstan_runtime::auth::SecurityMode;
use capstan_runtime::{ConfigProblem, SecurityConfig, Validate};
use serde::{Deserialize, Serialize};

/// Configuration of the swarm daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the Docker Engine API (Docker's plain-TCP port, 2375).
    pub listen: SocketAddr,
    /// The masters (`host:port`, `http://host:port` or `https://host:port`), tried in turn. In
    /// strict mode a bare `host:port` is spoken to over TLS with the node certificate.
    pub masters: Vec<String>,
    /// Coord endpoints; container records live there. Empty: in memory (tests only). In
    /// strict mode bare `host:port` endpoints are `https` with the node certificate.
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
    /// How the Docker API port is secured and what swarm's own clients present. In strict
    /// mode the port speaks TLS with the node certificate (the docker CLI's `--tlsverify
    /// --tlscacert ca.crt`; a client certificate is optional), every call but `/_ping`,
    /// `/version` and health needs an operator (a token, basic credentials, or a master's
    /// certificate), verified against the identity records in coord; and swarm speaks https
    /// with the node certificate to the masters, coord and the agents.
    pub security: SecurityConfig,
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
            security: SecurityConfig::default(),
        }
    }
}

impl Config {
    /// Whether the security section says strict.
    pub fn strict(&self) -> bool {
        self.security.mode == SecurityMode::Strict
    }

    /// The scheme of swarm's calls to the agents (whose addresses are bare `host:port`, as the
    /// masters report them): `https` in strict mode, where the agents speak TLS only.
    pub fn agent_scheme(&self) -> &'static str {
        if self.strict() { "https" } else { "http" }
    }

    /// `<scheme>://<agent><path>` for a call to the agent at `agent` (`host:port`).
    pub fn agent_url(&self, agent: &str, path: &str) -> String {
        format!("{}://{agent}{path}", self.agent_scheme())
    }
}

fn endpoint_ok(e: &str) -> bool {
    let hostport = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .unwrap_or(e)
        .trim_end_matches('/');
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
                        "must be host:port, http://host:port or https://host:port",
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
        out.extend(self.security.problems("security"));
        out.extend(self.security.listen_problems("listen", self.listen));
        if self.strict() && self.coord_endpoints.is_empty() {
            out.push(ConfigProblem::new(
                "security.mode",
                "strict mode needs coord_endpoints (the identity records that verify callers are in coord)",
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

    #[test]
    fn strict_mode_needs_tls_coord_and_a_cluster_address_and_speaks_https_to_agents() {
        let permissive = Config::default();
        assert_eq!(
            permissive.agent_url("10.0.0.7:5051", "/state"),
            "http://10.0.0.7:5051/state"
        );
        let strict = Config {
            listen: "0.0.0.0:2375".parse().unwrap(),
            security: SecurityConfig {
                mode: SecurityMode::Strict,
                ..SecurityConfig::default()
            },
            ..Config::default()
        };
        let all: Vec<String> = strict.validate().iter().map(|p| p.to_string()).collect();
        let all = all.join("\n");
        assert!(all.contains("security.tls"), "{all}");
        assert!(all.contains("listen"), "{all}");
        assert!(all.contains("security.mode"), "{all}");
        let strict = Config {
            listen: "10.0.0.5:2375".parse().unwrap(),
            masters: vec!["https://10.0.0.5:5050".into(), "10.0.0.6:5050".into()],
            coord_endpoints: vec!["10.0.0.5:2379".into()],
            security: SecurityConfig {
                mode: SecurityMode::Strict,
                tls: Some(capstan_runtime::TlsFiles {
                    cert_file: "/pki/node.crt".into(),
                    key_file: "/pki/node.key".into(),
                    ca_file: "/pki/ca.crt".into(),
                }),
                allow_plaintext: false,
            },
            ..Config::default()
        };
        assert!(strict.validate().is_empty(), "{:?}", strict.validate());
        assert_eq!(
            strict.agent_url("10.0.0.7:5051", "/files/read?path=x"),
            "https://10.0.0.7:5051/files/read?path=x"
        );
    }
}
