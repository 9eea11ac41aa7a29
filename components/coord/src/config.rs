//! Configuration of `capstan coord`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use capstan_runtime::{ConfigProblem, Validate};
use serde::{Deserialize, Serialize};

/// One initial member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u64,
    /// `host:port` where the member serves the API and raft (its port 8181).
    pub addr: String,
}

/// `capstan coord` configuration. Every field has a default; a 1-member cluster on
/// 127.0.0.1:8181 needs no configuration at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This member's raft id (> 0, unique in the cluster).
    pub id: u64,
    /// Address to bind for the client API and raft RPCs.
    pub listen: SocketAddr,
    /// Directory of the redb database (log, vote, snapshots).
    pub data_dir: PathBuf,
    /// Initial members (1, 3 or 5). Empty, or a list without this member's id: the member
    /// starts empty and waits to be added with `member add`.
    pub members: Vec<MemberConfig>,
    /// Raft election timeout range and heartbeat. A follower that heard from a leader waits
    /// the leader's lease (openraft: `election_timeout_max_ms`) plus a random timeout from
    /// the range before it campaigns, so failover takes max + [min, max] plus one round:
    /// 300–400 ms with the defaults (etcd's default election timeout alone is 1 s).
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Build a snapshot (and compact the log) every this many applied entries.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log after a snapshot (so slow followers avoid a full snapshot).
    pub log_entries_kept_after_snapshot: u64,
    /// Changes kept in memory for watches; older revisions answer `compacted`.
    pub watch_history: usize,
    /// How often the leader checks lease expiry.
    pub lease_check_interval_ms: u64,
    /// Time limit a member waits for a leader or a commit before answering `unavailable`.
    pub request_timeout_ms: u64,
    /// Address rewrites applied when dialing peers (`"advertised" = "dialed"`): NAT, or fault
    /// injection proxies in tests.
    pub dial_overrides: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            data_dir: PathBuf::from("/var/lib/capstan/coord"),
            members: Vec::new(),
            election_timeout_min_ms: 100,
            election_timeout_max_ms: 200,
            heartbeat_interval_ms: 40,
            snapshot_every_entries: 10_000,
            log_entries_kept_after_snapshot: 1_000,
            watch_history: 10_000,
            lease_check_interval_ms: 100,
            request_timeout_ms: 5_000,
            dial_overrides: BTreeMap::new(),
        }
    }
}

/// Every problem found in a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid coord configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p: Vec<String> = self.problems().iter().map(ToString::to_string).collect();
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }

    fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.id == 0 {
            p.push("id: must be > 0".to_string());
        }
        if self.data_dir.as_os_str().is_empty() {
            p.push("data_dir: must not be empty".to_string());
        }
        if self.election_timeout_min_ms == 0
            || self.election_timeout_min_ms >= self.election_timeout_max_ms
        {
            p.push(
                "election_timeout_min_ms: must be > 0 and < election_timeout_max_ms".to_string(),
            );
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms >= self.election_timeout_min_ms
        {
            p.push("heartbeat_interval_ms: must be > 0 and < election_timeout_min_ms".to_string());
        }
        if self.snapshot_every_entries == 0 {
            p.push("snapshot_every_entries: must be > 0".to_string());
        }
        if self.watch_history == 0 {
            p.push("watch_history: must be > 0".to_string());
        }
        if self.lease_check_interval_ms == 0 {
            p.push("lease_check_interval_ms: must be > 0".to_string());
        }
        if self.request_timeout_ms == 0 {
            p.push("request_timeout_ms: must be > 0".to_string());
        }
        if ![0, 1, 3, 5].contains(&self.members.len()) {
            p.push(format!(
                "members: start with 1, 3 or 5 members, not {}",
                self.members.len()
            ));
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.id == 0 {
                p.push(format!("members[{i}].id: must be > 0"));
            }
            if !ids.insert(m.id) {
                p.push(format!("members[{i}].id: duplicate id {}", m.id));
            }
            if !valid_host_port(&m.addr) {
                p.push(format!("members[{i}].addr: {:?} is not host:port", m.addr));
            }
            if !addrs.insert(m.addr.as_str()) {
                p.push(format!("members[{i}].addr: duplicate address {:?}", m.addr));
            }
        }
        p.into_iter()
            .map(|s: String| match s.split_once(": ") {
                Some((field, msg)) => ConfigProblem::new(field, msg),
                None => ConfigProblem::new("", s),
            })
            .collect()
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigProblem> {
        self.problems()
    }
}

pub(crate) fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<Config>(r#"{"id": 2, "bogus": 1}"#).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem() {
        let c = Config {
            id: 0,
            heartbeat_interval_ms: 500,
            members: vec![
                MemberConfig {
                    id: 1,
                    addr: "a:1".into(),
                },
                MemberConfig {
                    id: 1,
                    addr: "nope".into(),
                },
            ],
            ..Config::default()
        };
        let err = c.validate().unwrap_err();
        let text = err.to_string();
        for want in [
            "id: must be > 0",
            "heartbeat_interval_ms",
            "members: start with 1, 3 or 5",
            "duplicate id",
            "not host:port",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
    }
}
