//! `capstan master` configuration.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use capstan_runtime::{ConfigProblem, SecurityConfig, Validate, duration_secs};
use serde::{Deserialize, Serialize};

/// Master configuration (YAML section `master`). Every timeout is configurable so tests
/// can run the protocol fast.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API binds (scheduler, operator, agent protocol, state endpoints).
    pub listen: SocketAddr,
    /// Hostname advertised in MasterInfo and redirects; defaults to the advertised IP.
    pub hostname: Option<String>,
    /// Literal IP advertised in `pid`/`leader` (`master@IP:port`); defaults to the listen IP,
    /// or 127.0.0.1 when listening on a wildcard address.
    pub advertise_ip: Option<IpAddr>,
    /// Cluster name shown in `/master/state`.
    pub cluster: Option<String>,
    /// An agent silent this long is unreachable.
    #[serde(with = "duration_secs")]
    pub agent_timeout: Duration,
    /// How often the master pings agents.
    #[serde(with = "duration_secs")]
    pub agent_ping_interval: Duration,
    /// Scheduler and operator stream heartbeat interval.
    #[serde(with = "duration_secs")]
    pub heartbeat_interval: Duration,
    /// How often the allocator runs (also the granularity of all timers).
    #[serde(with = "duration_secs")]
    pub allocation_interval: Duration,
    /// Offers outstanding longer than this are rescinded; 0 = never.
    #[serde(with = "duration_secs")]
    pub offer_timeout: Duration,
    /// An unacknowledged status update is resent to its framework after this long.
    #[serde(with = "duration_secs")]
    pub status_update_retry_interval: Duration,
    /// Terminal tasks remembered per framework (`completed_tasks`).
    pub max_completed_tasks_per_framework: usize,
    /// Removed frameworks remembered (`completed_frameworks`).
    pub max_completed_frameworks: usize,
    /// Open HTTP connections at most. Every agent and framework holds two (its event stream
    /// and its calls), so this bounds the cluster's size: the default serves 8,000 agents.
    pub max_connections: usize,
    /// Open HTTP connections at most from one source address: one misbehaving host cannot
    /// take them all. Simulated agents sharing one address (a benchmark) need it raised.
    pub max_connections_per_ip: usize,
    /// High availability through coord; empty endpoints = standalone master.
    pub coord: CoordConfig,
    /// Who may call the APIs, and TLS (see `capstan_runtime::security`). Strict mode needs
    /// coord (the identity records are there).
    pub security: SecurityConfig,
}

/// Where coord runs. Empty `endpoints` means standalone (this master is always leader).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CoordConfig {
    /// coord members, `host:port` (or `http://host:port`).
    pub endpoints: Vec<String>,
    /// Key prefix of the election (`<prefix>/election`) and registry (`<prefix>/registry`).
    pub prefix: String,
    /// TTL of the leader's lease: a dead leader is replaced after about this long (its
    /// lease is kept alive every TTL/3). Mesos' ZooKeeper session timeout is 10 s; coord is
    /// local and fails over in well under a second (and grants every lease a full TTL when
    /// it does), so 2 s is safe and keeps a master failover within seconds.
    #[serde(with = "duration_secs")]
    pub lease_ttl: Duration,
}

impl Default for CoordConfig {
    fn default() -> Self {
        CoordConfig {
            endpoints: Vec::new(),
            prefix: capstan_coord_client::keyspace::MASTER.into(),
            lease_ttl: Duration::from_secs(2),
        }
    }
}

impl CoordConfig {
    /// Standalone master (no coord).
    pub fn is_standalone(&self) -> bool {
        self.endpoints.is_empty()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 5050)),
            hostname: None,
            advertise_ip: None,
            cluster: None,
            agent_timeout: Duration::from_secs(15),
            agent_ping_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(15),
            allocation_interval: Duration::from_secs(1),
            offer_timeout: Duration::ZERO,
            status_update_retry_interval: Duration::from_secs(10),
            max_completed_tasks_per_framework: 1000,
            max_completed_frameworks: 50,
            max_connections: 16_384,
            max_connections_per_ip: 1024,
            coord: CoordConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

impl Config {
    /// A config for tests: loopback port 0 and short timers.
    pub fn for_tests() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            agent_timeout: Duration::from_secs(3),
            agent_ping_interval: Duration::from_millis(300),
            heartbeat_interval: Duration::from_secs(1),
            allocation_interval: Duration::from_millis(50),
            status_update_retry_interval: Duration::from_millis(500),
            ..Config::default()
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let positive = [
            ("agent_timeout", self.agent_timeout),
            ("agent_ping_interval", self.agent_ping_interval),
            ("heartbeat_interval", self.heartbeat_interval),
            ("allocation_interval", self.allocation_interval),
            (
                "status_update_retry_interval",
                self.status_update_retry_interval,
            ),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                p.push(ConfigProblem::new(name, "must be greater than 0"));
            }
        }
        if self.agent_ping_interval >= self.agent_timeout && !self.agent_timeout.is_zero() {
            p.push(ConfigProblem::new(
                "agent_ping_interval",
                "must be shorter than agent_timeout",
            ));
        }
        if let Some(h) = &self.hostname
            && (h.is_empty() || h.contains(['/', ' ', '@']))
        {
            p.push(ConfigProblem::new("hostname", "must be a plain host name"));
        }
        if let Some(ip) = self.advertise_ip
            && ip.is_unspecified()
        {
            p.push(ConfigProblem::new(
                "advertise_ip",
                "must not be a wildcard address",
            ));
        }
        p.extend(self.security.problems("security"));
        p.extend(self.security.listen_problems("listen", self.listen));
        if self.security.mode == capstan_runtime::auth::SecurityMode::Strict
            && self.coord.is_standalone()
        {
            p.push(ConfigProblem::new(
                "security.mode",
                "strict mode needs coord (coord.endpoints), where the identity records are",
            ));
        }
        if self.max_completed_tasks_per_framework == 0 {
            p.push(ConfigProblem::new(
                "max_completed_tasks_per_framework",
                "must be at least 1",
            ));
        }
        if self.max_connections == 0 {
            p.push(ConfigProblem::new("max_connections", "must be at least 1"));
        }
        if self.max_connections_per_ip == 0 || self.max_connections_per_ip > self.max_connections {
            p.push(ConfigProblem::new(
                "max_connections_per_ip",
                "must be at least 1 and at most max_connections",
            ));
        }
        if !self.coord.is_standalone() {
            if self.coord.lease_ttl.is_zero() {
                p.push(ConfigProblem::new(
                    "coord.lease_ttl",
                    "must be greater than 0",
                ));
            }
            if !self.coord.prefix.starts_with('/') || self.coord.prefix.len() < 2 {
                p.push(ConfigProblem::new(
                    "coord.prefix",
                    "must be an absolute key path such as /capstan/master",
                ));
            }
            if self.coord.endpoints.iter().any(|e| e.trim().is_empty()) {
                p.push(ConfigProblem::new(
                    "coord.endpoints",
                    "must not contain empty entries",
                ));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_mesos() {
        let c = Config::default();
        assert!(c.validate().is_empty());
        assert_eq!(c.listen.port(), 5050);
        assert_eq!(c.agent_timeout, Duration::from_secs(15));
        assert!(Config::for_tests().validate().is_empty());
    }

    #[test]
    fn yaml_with_unknown_keys_is_rejected_and_bad_values_all_reported() {
        let err = serde_yaml_ng::from_str::<Config>("listen: 0.0.0.0:5050\nbogus: 1\n");
        assert!(err.is_err());
        let c: Config = serde_yaml_ng::from_str(
            "agent_timeout: 0\nallocation_interval: 0\ncoord: {endpoints: [\"a:1\"], lease_ttl: 0}\n",
        )
        .unwrap();
        let fields: Vec<String> = c.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["agent_timeout", "allocation_interval", "coord.lease_ttl"]
        );
    }
}
