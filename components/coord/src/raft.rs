//! openraft type configuration and the member-to-member network: raft RPCs are JSON POSTs to
//! `/raft/{append,vote,snapshot}` on the peer's client port (8181 by default).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
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

/// Rewrites peer addresses before dialing (NAT, or fault-injection proxies in tests).
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    overrides: Arc<BTreeMap<String, String>>,
}

impl Dialer {
    pub fn new(overrides: BTreeMap<String, String>) -> Dialer {
        Dialer {
            overrides: Arc::new(overrides),
        }
    }

    /// `http://host:port` to reach the member advertised as `addr`.
    pub fn base_url(&self, addr: &str) -> String {
        let addr = self.overrides.get(addr).map_or(addr, String::as_str);
        format!("http://{addr}")
    }
}

/// Creates one [`PeerClient`] per target; shares the HTTP connection pool.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    dialer: Dialer,
    /// Last time an unreachable peer was logged, to log once in a while only.
    last_logged: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl Network {
    pub fn new(http: reqwest::Client, dialer: Dialer) -> Network {
        Network {
            http,
            dialer,
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
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("{}{path}", self.base);
        let resp = self
            .net
            .http
            .post(&url)
            .timeout(option.hard_ttl().max(Duration::from_millis(50)))
            .json(req)
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
            tracing::warn!(peer = self.target, addr = %self.base, error = %e, "Coord peer unreachable; retrying");
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
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}
