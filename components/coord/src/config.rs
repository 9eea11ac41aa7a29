//! Configuration of `capstan coord`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use capstan_runtime::{ConfigProblem, SecurityConfig, Validate};
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
    /// The cluster's shared secret, as a file (0600; an installed master uses the cluster
    /// CA's key, `/var/lib/capstan/pki/ca.key`). Members send a token derived from it with
    /// every raft RPC and membership change and refuse requests without it
    /// (`capstan_coord_client::PeerToken`). Required when `members` names another member;
    /// without one a member refuses every raft RPC and membership change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_secret_file: Option<PathBuf>,
    /// The same secret inline (tests; a config file is usually world-readable, so prefer
    /// `peer_secret_file`). At most one of the two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_secret: Option<String>,
    /// Largest `/raft/append` and `/raft/snapshot` body accepted, and the most a member sends
    /// in one append (bigger ones are split). Every member should use the same value.
    pub max_raft_body_bytes: usize,
    /// Largest client request body (`/v1/...`); a forwarded write may be twice this.
    pub max_client_body_bytes: usize,
    /// Time a connection has to send a request's headers, counted from when the server
    /// starts waiting for them: so also how long an idle kept-alive connection stays open.
    pub header_read_timeout_ms: u64,
    /// Time a request has to send its whole body.
    pub body_read_timeout_ms: u64,
    /// Open connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Open connections served at once from one source address.
    pub max_connections_per_ip: usize,
    /// How the port is secured (`docs/SECURITY.md`). In `strict` mode the port speaks TLS
    /// with the node certificate and every request but `/health` and `/metrics` must present
    /// a node certificate of the cluster CA: raft RPCs, membership changes and snapshots a
    /// master's (and still the peer token), the client API any node's. Members then dial
    /// each other over https with their node certificate.
    pub security: SecurityConfig,
}

/// Smallest `max_raft_body_bytes`: a 3 MiB snapshot chunk is up to 13 MiB of JSON.
pub const MIN_RAFT_BODY_BYTES: usize = 16 << 20;
/// Smallest `max_client_body_bytes`: a 1 MiB value is about 1.4 MiB of base64.
pub const MIN_CLIENT_BODY_BYTES: usize = 2 << 20;

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
            peer_secret_file: None,
            peer_secret: None,
            max_raft_body_bytes: 32 << 20,
            max_client_body_bytes: 8 << 20,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 30_000,
            max_connections: 4096,
            max_connections_per_ip: 1024,
            security: SecurityConfig::default(),
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
        if self.peer_secret.is_some() && self.peer_secret_file.is_some() {
            p.push("peer_secret: set peer_secret or peer_secret_file, not both".to_string());
        }
        if let Some(secret) = &self.peer_secret
            && secret.trim().len() < capstan_coord_client::peer::MIN_PEER_SECRET_BYTES
        {
            p.push(format!(
                "peer_secret: must be at least {} bytes",
                capstan_coord_client::peer::MIN_PEER_SECRET_BYTES
            ));
        }
        if self.peer_secret.is_none()
            && self.peer_secret_file.is_none()
            && self.members.iter().any(|m| m.id != self.id)
        {
            p.push(
                "peer_secret_file: required for a cluster of more than one member (members \
                 authenticate raft RPCs with it)"
                    .to_string(),
            );
        }
        if self.max_raft_body_bytes < MIN_RAFT_BODY_BYTES
            || self.max_raft_body_bytes < 2 * self.max_client_body_bytes
        {
            p.push(format!(
                "max_raft_body_bytes: must be at least {MIN_RAFT_BODY_BYTES} and twice \
                 max_client_body_bytes"
            ));
        }
        if self.max_client_body_bytes < MIN_CLIENT_BODY_BYTES {
            p.push(format!(
                "max_client_body_bytes: must be at least {MIN_CLIENT_BODY_BYTES}"
            ));
        }
        if self.header_read_timeout_ms == 0 {
            p.push("header_read_timeout_ms: must be > 0".to_string());
        }
        if self.body_read_timeout_ms == 0 {
            p.push("body_read_timeout_ms: must be > 0".to_string());
        }
        if self.max_connections == 0 {
            p.push("max_connections: must be > 0".to_string());
        }
        if self.max_connections_per_ip == 0 || self.max_connections_per_ip > self.max_connections {
            p.push("max_connections_per_ip: must be > 0 and at most max_connections".to_string());
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
        let mut problems: Vec<ConfigProblem> = p
            .into_iter()
            .map(|s: String| match s.split_once(": ") {
                Some((field, msg)) => ConfigProblem::new(field, msg),
                None => ConfigProblem::new("", s),
            })
            .collect();
        problems.extend(self.security.problems("security"));
        problems.extend(self.security.listen_problems("listen", self.listen));
        problems
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
    fn a_cluster_of_several_members_needs_a_peer_secret_of_one_kind() {
        let members = |ids: &[u64]| {
            ids.iter()
                .map(|id| MemberConfig {
                    id: *id,
                    addr: format!("10.0.0.{id}:8181"),
                })
                .collect::<Vec<_>>()
        };
        let alone = Config {
            members: members(&[1]),
            ..Config::default()
        };
        alone.validate().unwrap();
        let three = Config {
            members: members(&[1, 2, 3]),
            ..Config::default()
        };
        assert!(three.validate().is_err());
        Config {
            peer_secret_file: Some("/var/lib/capstan/pki/ca.key".into()),
            ..three.clone()
        }
        .validate()
        .unwrap();
        let secret = "a secret of more than 16 bytes".to_string();
        Config {
            peer_secret: Some(secret.clone()),
            ..three.clone()
        }
        .validate()
        .unwrap();
        let both = Config {
            peer_secret: Some(secret),
            peer_secret_file: Some("/x".into()),
            ..three.clone()
        };
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let short = Config {
            peer_secret: Some("short".into()),
            ..three
        };
        assert!(
            short
                .validate()
                .unwrap_err()
                .to_string()
                .contains("16 bytes")
        );
    }

    #[test]
    fn limits_must_leave_room_for_what_members_send() {
        let c = Config {
            max_raft_body_bytes: 1 << 20,
            max_client_body_bytes: 1 << 10,
            header_read_timeout_ms: 0,
            max_connections: 10,
            max_connections_per_ip: 11,
            ..Config::default()
        };
        let text = c.validate().unwrap_err().to_string();
        for want in [
            "max_raft_body_bytes",
            "max_client_body_bytes",
            "header_read_timeout_ms",
            "max_connections_per_ip",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
    }

    #[test]
    fn strict_mode_needs_the_node_certificate_and_a_cluster_address() {
        let strict: SecurityConfig = serde_json::from_str(r#"{"mode": "strict"}"#).unwrap();
        let c = Config {
            listen: "0.0.0.0:8181".parse().unwrap(),
            security: strict,
            ..Config::default()
        };
        let text = c.validate().unwrap_err().to_string();
        assert!(text.contains("security.tls"), "{text}");
        assert!(text.contains("listen"), "{text}");
        let parsed: Config = serde_json::from_str(
            r#"{"security": {"mode": "strict", "tls": {"cert_file": "/n.crt", "key_file": "/n.key", "ca_file": "/ca.crt"}}}"#,
        )
        .unwrap();
        parsed.validate().unwrap();
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
            "peer_secret_file: required",
            "heartbeat_interval_ms",
            "members: start with 1, 3 or 5",
            "duplicate id",
            "not host:port",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
    }
}
