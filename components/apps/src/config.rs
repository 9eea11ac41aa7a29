//! `capstan apps` configuration.

use std::net::SocketAddr;
use std::time::Duration;

use capstan_runtime::{ConfigProblem, SecurityConfig, Validate, duration_secs};
use capstan_types::ContainerPolicy;
use serde::{Deserialize, Serialize};

/// Apps configuration (YAML section `apps`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the REST API.
    pub listen: SocketAddr,
    /// Host name this instance advertises in `/v2/leader` and `X-Marathon-Leader`; defaults
    /// to the listen address.
    pub hostname: Option<String>,
    /// The masters (`host:5050` or `http://host:5050`), tried in order; 307 redirects are
    /// followed.
    pub masters: Vec<String>,
    /// Framework name registered with Mesos (DNS names end in `.<name>.mesos`).
    pub framework_name: String,
    /// User tasks run as.
    pub mesos_user: String,
    /// Framework role.
    pub mesos_role: String,
    /// How long Mesos keeps our tasks when we are gone (Marathon: one week).
    #[serde(with = "duration_secs")]
    pub failover_timeout: Duration,
    /// Unused offers are declined for this long.
    #[serde(with = "duration_secs")]
    pub decline_offer_duration: Duration,
    /// Longest wait between reconnect attempts to the master.
    #[serde(with = "duration_secs")]
    pub reconnect_backoff_max: Duration,
    /// Reconnect when no event (heartbeats included) arrived for this many heartbeat intervals.
    pub heartbeat_failure_threshold: u32,
    /// How often the state machine re-evaluates deployments, kills and timers.
    #[serde(with = "duration_secs")]
    pub tick_interval: Duration,
    /// How often all tasks are reconciled with the master.
    #[serde(with = "duration_secs")]
    pub reconciliation_interval: Duration,
    /// Service ports are allocated from this range.
    pub local_port_min: u32,
    pub local_port_max: u32,
    /// Where state is kept; no endpoints = in memory (lost on restart).
    pub store: StoreConfig,
    /// A task still staging after this long is killed and replaced (Marathon's
    /// `task_launch_timeout`).
    #[serde(with = "duration_secs")]
    pub task_launch_timeout: Duration,
    /// With coord: the leader's lease; a leader that cannot renew it for this long is replaced.
    /// 2 s, as the master's: coord itself fails over in well under a second and resets leases
    /// when it does, and the lease is renewed every third of it.
    #[serde(with = "duration_secs")]
    pub leader_lease_ttl: Duration,
    /// What app containers may ask of the agents' hosts (the cluster's `containers`
    /// section; the agents enforce the same policy on every task). A definition that asks
    /// for more is refused with a 422 naming the field.
    pub container_policy: ContainerPolicy,
    /// Who may call the API, and TLS (see `capstan_runtime::security`).
    pub security: SecurityConfig,
    /// How apps authenticates to a master in strict mode (Marathon's
    /// `--mesos_authentication_principal` and `--mesos_authentication_secret_file`).
    pub mesos_authentication: Option<MesosAuthentication>,
}

/// A framework's principal and the file holding its secret (not readable by others).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MesosAuthentication {
    pub principal: String,
    pub secret_file: std::path::PathBuf,
}

/// The secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Permissions(#[from] capstan_runtime::PermissionError),
    #[error("cannot read {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MesosAuthentication {
    /// The basic credential, the secret read from its file (trailing newline dropped).
    pub fn credential(&self) -> Result<capstan_types::ClientCredential, SecretError> {
        capstan_runtime::check_secret_file(&self.secret_file)?;
        let secret =
            std::fs::read_to_string(&self.secret_file).map_err(|source| SecretError::Read {
                path: self.secret_file.clone(),
                source,
            })?;
        Ok(capstan_types::ClientCredential::basic(
            &self.principal,
            secret.trim_end_matches(['\n', '\r']),
        ))
    }
}

/// Where apps keeps its state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// coord endpoints (`host:port` or `http://host:port`); empty = in-memory store.
    pub coord_endpoints: Vec<String>,
    /// Key prefix in coord (default `/capstan/apps`).
    pub prefix: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            hostname: None,
            masters: vec!["http://127.0.0.1:5050".into()],
            framework_name: "marathon".into(),
            mesos_user: "root".into(),
            mesos_role: "*".into(),
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            decline_offer_duration: Duration::from_secs(5),
            reconnect_backoff_max: Duration::from_secs(15),
            heartbeat_failure_threshold: 5,
            tick_interval: Duration::from_secs(1),
            reconciliation_interval: Duration::from_secs(600),
            local_port_min: 10000,
            local_port_max: 20000,
            store: StoreConfig::default(),
            leader_lease_ttl: Duration::from_secs(2),
            task_launch_timeout: Duration::from_secs(300),
            container_policy: ContainerPolicy::default(),
            security: SecurityConfig::default(),
            mesos_authentication: None,
        }
    }
}

impl Config {
    /// A config for tests: loopback port 0, fast timers, the given master.
    pub fn for_tests(master: &str) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            masters: vec![master.to_string()],
            decline_offer_duration: Duration::from_millis(200),
            reconnect_backoff_max: Duration::from_millis(500),
            tick_interval: Duration::from_millis(50),
            ..Config::default()
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p: Vec<ConfigProblem> = self
            .container_policy
            .problems()
            .into_iter()
            .map(|(field, why)| ConfigProblem::new(format!("container_policy.{field}"), why))
            .collect();
        p.extend(self.security.problems("security"));
        p.extend(self.security.listen_problems("listen", self.listen));
        if self.masters.is_empty() {
            p.push(ConfigProblem::new(
                "masters",
                "must name at least one master",
            ));
        }
        for (i, m) in self.masters.iter().enumerate() {
            if let Err(e) = capstan_mesos_client::Endpoint::parse(m) {
                p.push(ConfigProblem::new(
                    format!("masters[{i}]"),
                    format!("must be host:port or http://host:port: {e}"),
                ));
            }
        }
        if self.framework_name.is_empty() {
            p.push(ConfigProblem::new("framework_name", "must not be empty"));
        }
        if self.mesos_user.is_empty() {
            p.push(ConfigProblem::new("mesos_user", "must not be empty"));
        }
        if self.mesos_role.is_empty() {
            p.push(ConfigProblem::new("mesos_role", "must not be empty"));
        }
        for (name, d) in [
            ("tick_interval", self.tick_interval),
            ("reconnect_backoff_max", self.reconnect_backoff_max),
            ("reconciliation_interval", self.reconciliation_interval),
            ("leader_lease_ttl", self.leader_lease_ttl),
            ("task_launch_timeout", self.task_launch_timeout),
        ] {
            if d.is_zero() {
                p.push(ConfigProblem::new(name, "must be greater than 0"));
            }
        }
        if self.heartbeat_failure_threshold == 0 {
            p.push(ConfigProblem::new(
                "heartbeat_failure_threshold",
                "must be at least 1",
            ));
        }
        if self.local_port_min == 0
            || self.local_port_min > self.local_port_max
            || self.local_port_max > 65535
        {
            p.push(ConfigProblem::new(
                "local_port_min",
                "local_port_min..local_port_max must be a non-empty range within 1..65535",
            ));
        }
        if let Some(h) = &self.hostname
            && (h.is_empty() || h.contains(['/', ' ']))
        {
            p.push(ConfigProblem::new("hostname", "must be a plain host name"));
        }
        for (i, e) in self.store.coord_endpoints.iter().enumerate() {
            if e.strip_prefix("http://").unwrap_or(e).is_empty() || e.contains(' ') {
                p.push(ConfigProblem::new(
                    format!("store.coord_endpoints[{i}]"),
                    "must be host:port (or http://host:port)",
                ));
            }
        }
        if let Some(prefix) = &self.store.prefix
            && (!prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//"))
        {
            p.push(ConfigProblem::new(
                "store.prefix",
                "must look like /capstan/apps",
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_marathon() {
        let c = Config::default();
        assert!(c.validate().is_empty());
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.framework_name, "marathon");
        assert_eq!(c.failover_timeout, Duration::from_secs(604_800));
        assert_eq!((c.local_port_min, c.local_port_max), (10000, 20000));
        assert!(
            Config::for_tests("http://127.0.0.1:5050")
                .validate()
                .is_empty()
        );
    }

    #[test]
    fn unknown_keys_are_rejected_and_every_bad_value_reported() {
        assert!(serde_yaml_ng::from_str::<Config>("listen: 0.0.0.0:8080\nbogus: 1\n").is_err());
        let c: Config = serde_yaml_ng::from_str(
            "masters: []\ntick_interval: 0\nlocal_port_min: 30000\nlocal_port_max: 20000\n",
        )
        .unwrap();
        let fields: Vec<String> = c.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["masters", "tick_interval", "local_port_min"]);
    }
}
