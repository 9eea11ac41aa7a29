//! The agent's configuration: the `agent:` section of a node's config file.
//!
//! ```yaml
//! agent:
//!   listen: 0.0.0.0:5051
//!   advertise_ip: 10.0.0.2          # host ports are published on it
//!   hostname: a1
//!   work_dir: /var/lib/capstan/agent
//!   masters: [10.0.0.1:5050]        # empty: standalone; https://host:port, or host:port over TLS in strict mode
//!   public: false                   # true: resources carry the slave_public role
//!   attributes: ["rack:r1"]
//!   domain: {region: eu-west, zone: eu-west-1a}  # fault domain, for @region/@zone constraints
//!   resources: {cpus: 4, mem: 7000, disk: 10000, ports: "[31000-32000]"}  # unset: detected
//!   docker:
//!     host: unix:///var/run/docker.sock
//!     pull_timeout: 300             # seconds
//!     allow_privileged: false       # privileged containers and --cap-add
//!     allowed_host_paths: []        # host paths volumes and file:// fetches may name
//!     pids_limit: 4096              # processes per container
//!     cpu_quota: false              # also cap CPU with a CFS quota
//!     extra_labels: {}
//!     sandbox_mount: /mnt/mesos/sandbox
//!     kill_orphans: true
//!   default_kill_grace: 5           # seconds
//!   status_update_retry: 10         # seconds
//!   executor_reregistration_timeout: 20  # seconds a recovered executor has to SUBSCRIBE again
//!   coord_endpoints: []             # where the identity records are (accounts' credentials)
//!   security:
//!     mode: permissive              # strict: TLS, and every call proves who it is
//! ```
//!
//! In strict mode (`security`, see `capstan_runtime::security`) the API speaks TLS with the
//! node's certificate and is served behind the guard of [`crate::http::access`]; the link to
//! the masters speaks TLS too and presents that certificate. Accounts (administrators,
//! viewers) are verified against the identity records in coord when `coord_endpoints` names
//! it; without them only the cluster's node certificates are accepted.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use capstan_runtime::{ConfigProblem, SecurityConfig, Validate, duration_secs};
use serde::{Deserialize, Serialize};

use capstan_types::{ContainerPolicy, RangeSet};

use crate::resources::{parse_attribute, parse_port_ranges};

/// Configuration of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on (Mesos agents use port 5051).
    pub listen: SocketAddr,
    /// The IP other hosts reach this agent and its tasks on: host ports are published on it,
    /// HOST-network tasks report it, and custom executors reach the agent on it
    /// (`MESOS_AGENT_ENDPOINT`; executors in BRIDGE or USER network containers need the
    /// agent to listen on an address containers can reach). Default: the listen IP, or
    /// 127.0.0.1 when that is a wildcard.
    pub advertise_ip: Option<IpAddr>,
    /// Hostname reported to the master and given to tasks as `HOST`. Default: the system's.
    pub hostname: Option<String>,
    /// Where sandboxes and the checkpoint live.
    pub work_dir: PathBuf,
    /// Master addresses (`host:port`). Empty runs the agent standalone (local API only).
    pub masters: Vec<String>,
    /// A public agent: its resources carry the `slave_public` role.
    pub public: bool,
    /// Resources offered; anything unset is detected.
    pub resources: ResourcesConfig,
    /// Attributes as `name:value` (`rack:r1`, `zone:a`).
    pub attributes: Vec<String>,
    /// The agent's fault domain, sent with its offers (Marathon's `@region` and `@zone`
    /// constraint fields).
    pub domain: Option<DomainConfig>,
    /// Docker containerizer settings.
    pub docker: DockerConfig,
    /// Grace period between SIGTERM and SIGKILL when a task has no kill policy.
    #[serde(with = "duration_secs")]
    pub default_kill_grace: Duration,
    /// How often unacknowledged status updates are sent again.
    #[serde(with = "duration_secs")]
    pub status_update_retry: Duration,
    /// After an agent restart, how long a still-running custom executor has to SUBSCRIBE
    /// again before it is killed and its tasks fail (Mesos'
    /// `--executor_reregistration_timeout`, 2 s there; longer here because pymesos backs
    /// off up to 15 s between attempts).
    #[serde(with = "duration_secs")]
    pub executor_reregistration_timeout: Duration,
    /// coord endpoints (`host:port` or `http://host:port`) holding the identity records, for
    /// verifying accounts' tokens and basic credentials in strict mode. Empty: only the
    /// cluster's node certificates authenticate.
    pub coord_endpoints: Vec<String>,
    /// Who may call the API, and TLS (see `capstan_runtime::security`); strict mode also
    /// makes the master link speak TLS with the node certificate.
    pub security: SecurityConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5051),
            advertise_ip: None,
            hostname: None,
            work_dir: PathBuf::from("/var/lib/capstan/agent"),
            masters: Vec::new(),
            public: false,
            resources: ResourcesConfig::default(),
            attributes: Vec::new(),
            domain: None,
            docker: DockerConfig::default(),
            default_kill_grace: Duration::from_secs(5),
            status_update_retry: Duration::from_secs(10),
            executor_reregistration_timeout: Duration::from_secs(20),
            coord_endpoints: Vec::new(),
            security: SecurityConfig::default(),
        }
    }
}

/// A fault domain: both names are required, as in Mesos' `DomainInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    pub region: String,
    pub zone: String,
}

impl DomainConfig {
    /// The Mesos message agents put in their `AgentInfo`.
    pub fn to_proto(&self) -> capstan_proto::mesos::v1::DomainInfo {
        use capstan_proto::mesos::v1::domain_info::{FaultDomain, fault_domain};
        capstan_proto::mesos::v1::DomainInfo {
            fault_domain: Some(FaultDomain {
                region: fault_domain::RegionInfo {
                    name: self.region.clone(),
                },
                zone: fault_domain::ZoneInfo {
                    name: self.zone.clone(),
                },
            }),
        }
    }
}

/// Resource totals; `None` means "detect".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesConfig {
    pub cpus: Option<f64>,
    /// Memory in MB.
    pub mem: Option<f64>,
    /// Disk in MB (of the file system holding `work_dir`).
    pub disk: Option<f64>,
    /// Port ranges, Mesos style: `[31000-32000]` or `31000-31999,33000-33010`.
    pub ports: String,
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        ResourcesConfig {
            cpus: None,
            mem: None,
            disk: None,
            ports: "[31000-32000]".to_owned(),
        }
    }
}

/// Docker containerizer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Engine address (`unix:///var/run/docker.sock`); default `DOCKER_HOST` or the local socket.
    pub host: Option<String>,
    /// How long an image pull may take before the launch fails.
    #[serde(with = "duration_secs")]
    pub pull_timeout: Duration,
    /// Whether tasks may ask for privileged containers and added capabilities (the
    /// cluster's `containers.allow_privileged`).
    pub allow_privileged: bool,
    /// Absolute host paths (and what is under them) that volumes and `file://` fetches may
    /// name; the task's sandbox is always allowed (the cluster's
    /// `containers.allowed_host_paths`). See [`capstan_types::ContainerPolicy`].
    pub allowed_host_paths: Vec<String>,
    /// The most processes a container may run (Docker's `PidsLimit`): a fork bomb in one
    /// task does not take the node down.
    pub pids_limit: i64,
    /// Also set a CFS quota from `cpus` (hard cap), not only CPU shares.
    pub cpu_quota: bool,
    /// Labels put on every container this agent creates (tests use it for cleanup).
    pub extra_labels: BTreeMap<String, String>,
    /// Where the sandbox is mounted inside containers (`MESOS_SANDBOX`).
    pub sandbox_mount: String,
    /// Destroy containers named for this agent that no checkpointed task owns.
    pub kill_orphans: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            pull_timeout: Duration::from_secs(300),
            allow_privileged: false,
            allowed_host_paths: Vec::new(),
            pids_limit: 4096,
            cpu_quota: false,
            extra_labels: BTreeMap::new(),
            sandbox_mount: "/mnt/mesos/sandbox".to_owned(),
            kill_orphans: true,
        }
    }
}

impl DockerConfig {
    /// The container policy this agent enforces.
    pub fn policy(&self) -> ContainerPolicy {
        ContainerPolicy {
            allow_privileged: self.allow_privileged,
            allowed_host_paths: self.allowed_host_paths.clone(),
        }
    }
}

impl Config {
    /// The configured port ranges (valid after [`Validate::validate`] passed).
    pub fn port_ranges(&self) -> RangeSet {
        parse_port_ranges(&self.resources.ports).unwrap_or_default()
    }

    /// The IP tasks and published ports are reachable on.
    pub fn effective_advertise_ip(&self) -> IpAddr {
        match self.advertise_ip {
            Some(ip) => ip,
            None if self.listen.ip().is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            None => self.listen.ip(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems: Vec<ConfigProblem> = self
            .docker
            .policy()
            .problems()
            .into_iter()
            .map(|(field, why)| ConfigProblem::new(format!("docker.{field}"), why))
            .collect();
        if self.docker.pids_limit < 1 {
            problems.push(ConfigProblem::new(
                "docker.pids_limit",
                "must be at least 1",
            ));
        }
        if !self.work_dir.is_absolute() {
            problems.push(ConfigProblem::new("work_dir", "must be an absolute path"));
        }
        if let Some(h) = &self.hostname
            && h.trim().is_empty()
        {
            problems.push(ConfigProblem::new("hostname", "must not be empty"));
        }
        for (i, m) in self.masters.iter().enumerate() {
            if let Err(e) = capstan_mesos_client::Endpoint::parse(m) {
                problems.push(ConfigProblem::new(
                    format!("masters[{i}]"),
                    format!("`{m}` is not host:port: {e}"),
                ));
            }
        }
        for (i, e) in self.coord_endpoints.iter().enumerate() {
            if e.trim().is_empty() {
                problems.push(ConfigProblem::new(
                    format!("coord_endpoints[{i}]"),
                    "must not be empty",
                ));
            }
        }
        problems.extend(self.security.problems("security"));
        problems.extend(self.security.listen_problems("listen", self.listen));
        let scalars = [
            ("resources.cpus", self.resources.cpus),
            ("resources.mem", self.resources.mem),
            ("resources.disk", self.resources.disk),
        ];
        for (field, value) in scalars {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                problems.push(ConfigProblem::new(field, "must be a number >= 0"));
            }
        }
        if let Err(e) = parse_port_ranges(&self.resources.ports) {
            problems.push(ConfigProblem::new("resources.ports", e));
        }
        for (i, a) in self.attributes.iter().enumerate() {
            if let Err(e) = parse_attribute(a) {
                problems.push(ConfigProblem::new(format!("attributes[{i}]"), e));
            }
        }
        if let Some(d) = &self.domain {
            for (field, name) in [("domain.region", &d.region), ("domain.zone", &d.zone)] {
                if name.trim().is_empty() {
                    problems.push(ConfigProblem::new(field, "must not be empty"));
                }
            }
        }
        if self.docker.pull_timeout.is_zero() {
            problems.push(ConfigProblem::new("docker.pull_timeout", "must be above 0"));
        }
        if !self.docker.sandbox_mount.starts_with('/') {
            problems.push(ConfigProblem::new(
                "docker.sandbox_mount",
                "must be an absolute path",
            ));
        }
        if self.status_update_retry.is_zero() {
            problems.push(ConfigProblem::new("status_update_retry", "must be above 0"));
        }
        if self.executor_reregistration_timeout.is_zero() {
            problems.push(ConfigProblem::new(
                "executor_reregistration_timeout",
                "must be above 0",
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), vec![]);
    }

    #[test]
    fn every_problem_is_reported() {
        let cfg = Config {
            work_dir: PathBuf::from("relative"),
            masters: vec!["nohost".into()],
            attributes: vec!["noval".into()],
            domain: Some(DomainConfig {
                region: "eu".into(),
                zone: " ".into(),
            }),
            resources: ResourcesConfig {
                cpus: Some(-1.0),
                ports: "[32000-31000]".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let fields: Vec<String> = cfg.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "work_dir",
                "masters[0]",
                "resources.cpus",
                "resources.ports",
                "attributes[0]",
                "domain.zone"
            ]
        );
    }

    #[test]
    fn the_documented_example_parses_and_is_valid() {
        let doc = include_str!("config.rs");
        let yaml: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! agent:"))
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""))
            .map(|l| format!("{l}\n"))
            .collect();
        #[derive(Deserialize)]
        struct Node {
            agent: Config,
        }
        let node: Node = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(node.agent.validate(), vec![]);
        assert_eq!(node.agent.resources.cpus, Some(4.0));
        assert_eq!(node.agent.docker.pull_timeout, Duration::from_secs(300));
        let domain = node.agent.domain.expect("a fault domain").to_proto();
        let fd = domain.fault_domain.expect("a fault domain");
        assert_eq!(
            (&*fd.region.name, &*fd.zone.name),
            ("eu-west", "eu-west-1a")
        );
    }

    #[test]
    fn strict_mode_needs_tls_and_a_cluster_address() {
        let strict: Config = serde_yaml_ng::from_str(
            "security: {mode: strict}\nmasters: [\"https://m1:5050\", \"m2:5050\"]\n",
        )
        .unwrap();
        let fields: Vec<String> = strict.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["security.tls", "listen"]);
        let ok: Config = serde_yaml_ng::from_str(
            "listen: 10.0.0.2:5051\ncoord_endpoints: [10.0.0.1:2379]\nsecurity:\n  mode: strict\n  tls: {cert_file: /a, key_file: /b, ca_file: /c}\n",
        )
        .unwrap();
        assert_eq!(ok.validate(), vec![]);
        let bad = Config {
            masters: vec!["ftp://m:5050".into()],
            coord_endpoints: vec![" ".into()],
            ..Default::default()
        };
        let fields: Vec<String> = bad.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["masters[0]", "coord_endpoints[0]"]);
    }

    #[test]
    fn yaml_with_unknown_keys_is_rejected() {
        let err = serde_yaml_ng::from_str::<Config>("listen: 0.0.0.0:5051\nbogus: 1\n");
        assert!(err.is_err());
        let ok: Config = serde_yaml_ng::from_str(
            "public: true\nattributes: [\"rack:r1\"]\ndocker:\n  allow_privileged: true\n",
        )
        .unwrap();
        assert!(ok.public && ok.docker.allow_privileged);
    }
}
