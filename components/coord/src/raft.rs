//! openraft type configuration and the member-to-member network: raft RPCs are JSON POSTs to
//! `/raft/{append,vote,snapshot}` on the peer's client port (8181 by default).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::io::Cursor;

use openraft::BasicNode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sm::{Command, CommandResult};

pub type NodeId = u64;

// Body limits of the `/raft/*` endpoints. They were one 512 MiB limit, which let any client
// of the port make a member buffer half a gigabyte per request (reliability probe F10). Each
// RPC now gets what members really send, with room to spare:
// - a snapshot travels in chunks of `SNAPSHOT_CHUNK_BYTES` (openraft's default 3 MiB, set
//   explicitly in `server.rs`); as JSON a byte is at most 4 characters (`255,`), so a chunk
//   is at most 12 MiB plus its metadata;
// - AppendEntries carries at most `max_payload_entries` entries, and one entry is one write
//   (its request body is at most 8 MiB, the client limit) or a group-commit batch (that
//   write plus at most about 1 MiB of others, see `batch.rs`). Several large entries could
//   still add up to more than the limit, so the sender measures the request and, when it
//   is too big, answers openraft `PayloadTooLarge`, which resends fewer entries;
// - a forwarded write (`/raft/write`) is one client write re-encoded: twice the client body
//   limit;
// - votes are a few hundred bytes.
// The append and snapshot limit is coord's `max_raft_body_bytes` (32 MiB by default, at least
// `config::MIN_RAFT_BODY_BYTES`). Every request carries the cluster's peer token
// (`PEER_TOKEN_HEADER`, set on the member's HTTP client in `server.rs`); members refuse
// requests without it before reading their bodies (`http.rs`).

/// Bytes of snapshot data per `/raft/snapshot` request.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 3 << 20;
/// Default largest `/raft/snapshot` body accepted.
pub const RAFT_SNAPSHOT_BODY_LIMIT: usize = 32 << 20;
/// Default largest `/raft/append` body accepted (and sent: larger requests are split).
pub const RAFT_APPEND_BODY_LIMIT: usize = 32 << 20;
/// Largest `/raft/vote` body accepted.
pub const RAFT_VOTE_BODY_LIMIT: usize = 64 << 10;

// A chunk encoded as JSON, plus 1 MiB for its metadata, fits the snapshot limit.
const _: () = assert!((SNAPSHOT_CHUNK_BYTES as usize) * 4 + (1 << 20) <= RAFT_SNAPSHOT_BODY_LIMIT);
const _: () =
    assert!((SNAPSHOT_CHUNK_BYTES as usize) * 4 + (1 << 20) <= crate::config::MIN_RAFT_BODY_BYTES);

openraft::declare_raft_types!(
    /// Raft types of the coord cluster.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// Rewrites peer addresses before dialing (NAT, or fault-injection proxies in tests), and
/// says whether members speak https (strict mode: the member's HTTP client presents its
/// node certificate).
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    overrides: Arc<BTreeMap<String, String>>,
    https: bool,
}

impl Dialer {
    pub fn new(overrides: BTreeMap<String, String>) -> Dialer {
        Dialer {
            overrides: Arc::new(overrides),
            https: false,
        }
    }

    /// This dialer, reaching members over https.
    pub fn with_https(self, https: bool) -> Dialer {
        Dialer { https, ..self }
    }

    /// `http://host:port` (or `https://`) to reach the member advertised as `addr`.
    pub fn base_url(&self, addr: &str) -> String {
        let addr = self.overrides.get(addr).map_or(addr, String::as_str);
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }
}

/// Creates one [`PeerClient`] per target; shares the HTTP connection pool.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    dialer: Dialer,
    /// Largest append sent in one request (the peers' `max_raft_body_bytes`).
    max_append_bytes: usize,
    /// Last time an unreachable peer was logged, to log once in a while only.
    last_logged: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl Network {
    pub fn new(http: reqwest::Client, dialer: Dialer, max_append_bytes: usize) -> Network {
        Network {
            http,
            dialer,
            max_append_bytes,
            last_logged: Arc::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            base: self.dialer.base_url(&node.addr),
            net: self.clone(),
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    base: String,
    net: Network,
}

impl PeerClient {
    /// Posts an encoded request to the peer.
    async fn rpc<Resp, E>(
        &self,
        path: &str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("{}{path}", self.base);
        let resp = self
            .net
            .http
            .post(&url)
            .timeout(option.hard_ttl().max(Duration::from_millis(50)))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                // Unreachable (not Network) so that openraft backs off instead of retrying
                // in a tight loop while a peer is down or cut off.
                self.log_unreachable(&e);
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = resp
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if let Ok(mut m) = self.net.last_logged.lock()
            && m.remove(&self.target).is_some()
        {
            tracing::info!(peer = self.target, "Coord peer reachable again");
        }
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn log_unreachable(&self, e: &reqwest::Error) {
        let Ok(mut m) = self.net.last_logged.lock() else {
            return;
        };
        let now = Instant::now();
        let due = m
            .get(&self.target)
            .is_none_or(|t| now.duration_since(*t) > Duration::from_secs(30));
        if due {
            m.insert(self.target, now);
            tracing::warn!(peer = self.target, addr = %self.base, error = %capstan_runtime::Chain(&e), "Coord peer unreachable; retrying");
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let body = encode(&rpc).map_err(|e| encode_error(&e))?;
        let limit = self.net.max_append_bytes;
        if body.len() > limit {
            return Err(too_large_append(rpc.entries.len(), body.len(), limit));
        }
        self.rpc("/raft/append", body, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let body = encode(&rpc).map_err(|e| encode_error(&e))?;
        self.rpc("/raft/snapshot", body, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let body = encode(&rpc).map_err(|e| encode_error(&e))?;
        self.rpc("/raft/vote", body, &option).await
    }
}

/// A raft request as JSON.
fn encode<Req: Serialize>(req: &Req) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(req)
}

/// An encoding failure (impossible for our types) as a network error.
fn encode_error<E: std::error::Error>(
    e: &serde_json::Error,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(e))
}

/// The answer to an AppendEntries request of `entries` entries whose body (`bytes`) is over
/// `limit`: openraft resends fewer. One entry alone cannot be that big
/// (see the limits above); if it were, it could never be sent, which is logged.
fn too_large_append(
    entries: usize,
    bytes: usize,
    limit: usize,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId>> {
    if entries <= 1 {
        tracing::error!(
            bytes,
            limit,
            "A raft log entry is larger than the append limit and cannot be replicated"
        );
        let e = std::io::Error::other(format!(
            "one log entry of {bytes} bytes is over the append limit of {limit}"
        ));
        return RPCError::Network(NetworkError::new(&e));
    }
    // Entries that fit, assuming they are of similar size; at least one, at most half.
    let fit = (entries as u128 * limit as u128 / bytes as u128) as u64;
    let hint = fit.clamp(1, (entries / 2) as u64);
    tracing::debug!(
        entries,
        bytes,
        hint,
        "AppendEntries too large; sending fewer entries"
    );
    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_over_the_limit_asks_openraft_for_fewer_entries() {
        let hint = |entries, bytes| match too_large_append(entries, bytes, RAFT_APPEND_BODY_LIMIT) {
            RPCError::PayloadTooLarge(p) => Some(p.entries_hint()),
            _ => None,
        };
        assert_eq!(hint(64, RAFT_APPEND_BODY_LIMIT * 2), Some(32));
        assert_eq!(hint(64, RAFT_APPEND_BODY_LIMIT * 64), Some(1));
        assert_eq!(
            hint(64, RAFT_APPEND_BODY_LIMIT + 1),
            Some(32),
            "never more than half"
        );
        assert_eq!(hint(2, usize::MAX), Some(1));
        assert_eq!(
            hint(1, RAFT_APPEND_BODY_LIMIT + 1),
            None,
            "one entry cannot be split"
        );
    }

    fn entries(n: u64, value_bytes: usize) -> AppendEntriesRequest<TypeConfig> {
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
        let entries = (1..=n)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Normal(Command::Put(capstan_coord_client::PutRequest {
                    key: format!("/k/{i}"),
                    value: vec![7; value_bytes],
                    ..Default::default()
                })),
            })
            .collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries,
        }
    }

    #[tokio::test]
    async fn appends_of_more_than_the_limit_are_split_before_anything_is_sent() {
        // Nothing listens on the discard port: a request actually sent is `Unreachable`.
        let net = Network::new(
            capstan_http_client::client(),
            Dialer::default(),
            RAFT_APPEND_BODY_LIMIT,
        );
        let mut peer = PeerClient {
            target: 2,
            base: "http://127.0.0.1:9".into(),
            net,
        };
        let option = RPCOption::new(Duration::from_secs(1));
        // 30 values of 1 MiB: about 42 MiB of JSON.
        match peer
            .append_entries(entries(30, 1 << 20), option.clone())
            .await
        {
            Err(RPCError::PayloadTooLarge(p)) => {
                assert!((1..=15).contains(&p.entries_hint()), "{}", p.entries_hint());
            }
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        match peer.append_entries(entries(10, 1 << 20), option).await {
            Err(RPCError::Unreachable(_)) => {}
            other => panic!("a 14 MiB append is sent, got {other:?}"),
        }
    }
}
