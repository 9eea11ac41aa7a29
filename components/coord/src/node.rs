//! One member's request logic between the HTTP layer and raft: writes (proposed here or
//! forwarded to the leader), linearizable reads (ReadIndex, also from followers), lease
//! keep-alive and expiry (owned by the lease keeper task on the leader).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_coord_client::{ApiError, LeaseId};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batcher, Proposed, ReadCoalescer};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::raft::{Dialer, NodeId, Raft};
use crate::sm::{ApplyError, Command, CommandResult, Outcome};
use crate::store::Shared;

/// Header marking a request forwarded by another member (never forwarded again).
pub(crate) const FORWARDED: &str = "x-capstan-forwarded";

/// Why a request could not be served.
#[derive(Debug, Clone)]
pub(crate) enum NodeError {
    /// This member is not the leader (only for forwarded requests); safe to retry.
    NotLeader {
        leader: Option<String>,
    },
    /// No leader or no quorum before the time limit; a write was not applied.
    Unavailable(String),
    /// A write was proposed but its outcome is unknown.
    OutcomeUnknown(String),
    /// The state machine rejected the command.
    Apply(ApplyError),
    /// The request is wrong.
    BadRequest(String),
    /// The request is over a size limit.
    TooLarge(String),
    Internal(String),
}

impl NodeError {
    pub(crate) fn to_api(&self) -> (u16, ApiError) {
        match self {
            NodeError::NotLeader { leader } => {
                let mut e = ApiError::new("not_leader", "this member is not the leader");
                e.leader = leader.clone();
                (503, e)
            }
            NodeError::Unavailable(m) => (503, ApiError::new("unavailable", m.clone())),
            NodeError::OutcomeUnknown(m) => (504, ApiError::new("outcome_unknown", m.clone())),
            NodeError::Apply(ApplyError::Conflict { current_version }) => {
                let mut e = ApiError::new(
                    "conflict",
                    format!("version conflict: key is at version {current_version}"),
                );
                e.current_version = Some(*current_version);
                (409, e)
            }
            NodeError::Apply(ApplyError::LeaseNotFound(id)) => (
                404,
                ApiError::new("lease_not_found", format!("lease {id} not found")),
            ),
            NodeError::Apply(ApplyError::Invalid(m)) | NodeError::BadRequest(m) => {
                (400, ApiError::new("bad_request", m.clone()))
            }
            NodeError::TooLarge(m) => (413, ApiError::new("too_large", m.clone())),
            NodeError::Internal(m) => (500, ApiError::new("internal", m.clone())),
        }
    }

    fn from_api(status: u16, e: ApiError) -> NodeError {
        match e.code.as_str() {
            "not_leader" | "unavailable" => NodeError::Unavailable(e.message),
            "outcome_unknown" => NodeError::OutcomeUnknown(e.message),
            "conflict" => NodeError::Apply(ApplyError::Conflict {
                current_version: e.current_version.unwrap_or(0),
            }),
            "lease_not_found" => NodeError::Apply(ApplyError::LeaseNotFound(0)),
            "bad_request" => NodeError::BadRequest(e.message),
            "too_large" => NodeError::TooLarge(e.message),
            _ => NodeError::Internal(format!("{status}: {}", e.message)),
        }
    }
}

pub(crate) enum KeeperMsg {
    KeepAlive {
        id: LeaseId,
        reply: oneshot::Sender<KeepAliveReply>,
    },
}

pub(crate) enum KeepAliveReply {
    Ok(u64),
    NotLeader,
    /// The lease is not in this member's state (yet?).
    Unknown,
}

pub(crate) struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub shared: Arc<Shared>,
    pub http: reqwest::Client,
    pub dialer: Dialer,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub keeper: mpsc::Sender<KeeperMsg>,
    pub batcher: Batcher,
    pub reads: Arc<ReadCoalescer>,
    pub shutdown: CancellationToken,
    /// The token members-only requests must carry (and that `http` sends to peers).
    pub peer_token: capstan_coord_client::PeerToken,
}

impl Node {
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    pub(crate) fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Id and address of the leader as this member knows it.
    pub(crate) fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    async fn wait_for_leader(&self, deadline: Instant) -> Result<(), NodeError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(Duration::from_millis(10).min(remaining)).await;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await
            .map(|_| ())
            .map_err(|_| NodeError::Unavailable("no coord leader elected".into()))
    }

    /// Proposes `cmd` (forwarding it to the leader if needed) and returns its outcome.
    pub(crate) async fn write(&self, cmd: Command, forwarded: bool) -> Result<Outcome, NodeError> {
        if self.is_leader() {
            // Group commit with whatever else is being written right now.
            match self.batcher.propose(cmd.clone()).await {
                Proposed::Done(r) => return r,
                Proposed::NotLeader => {} // lost leadership meanwhile: forward below
            }
        }
        let deadline = Instant::now() + self.request_timeout();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let res =
                match tokio::time::timeout(remaining, self.raft.client_write(cmd.clone())).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(NodeError::OutcomeUnknown(
                            "write not committed before the time limit".into(),
                        ));
                    }
                };
            match res {
                Ok(resp) => return resp.data.map_err(NodeError::Apply),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    let leader = f.leader_node.as_ref().map(|n: &BasicNode| n.addr.clone());
                    if forwarded {
                        return Err(NodeError::NotLeader { leader });
                    }
                    match (f.leader_id, leader) {
                        (Some(id), Some(addr)) if id != self.id => {
                            return self.forward_write(&addr, &cmd).await;
                        }
                        _ => self.wait_for_leader(deadline).await?,
                    }
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    return Err(NodeError::Internal(e.to_string()));
                }
                Err(RaftError::Fatal(e)) => return Err(NodeError::OutcomeUnknown(e.to_string())),
            }
        }
    }

    async fn forward_write(&self, leader_addr: &str, cmd: &Command) -> Result<Outcome, NodeError> {
        let url = format!("{}/raft/write", self.dialer.base_url(leader_addr));
        let resp = self
            .http
            .post(&url)
            .timeout(self.request_timeout() + Duration::from_secs(1))
            .json(cmd)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(NodeError::Unavailable(format!("leader unreachable: {e}")));
            }
            Err(e) => {
                return Err(NodeError::OutcomeUnknown(format!(
                    "forwarding to the leader failed: {e}"
                )));
            }
        };
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            NodeError::OutcomeUnknown(format!("forwarding to the leader failed: {e}"))
        })?;
        if status.is_success() {
            let r: CommandResult = serde_json::from_slice(&bytes).map_err(|e| {
                NodeError::OutcomeUnknown(format!("bad answer from the leader: {e}"))
            })?;
            return r.map_err(NodeError::Apply);
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => Err(NodeError::from_api(status.as_u16(), e)),
            Err(_) => Err(NodeError::OutcomeUnknown(format!(
                "leader answered {status}"
            ))),
        }
    }

    /// Waits until this member's state reflects every write committed before the call
    /// (ReadIndex: asks the leader, possibly itself, for its commit index).
    pub(crate) async fn read_barrier(&self, forwarded: bool) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.request_timeout();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let res = match tokio::time::timeout(remaining, self.reads.ensure_linearizable()).await
            {
                Ok(r) => r,
                Err(_) => {
                    return Err(NodeError::Unavailable(
                        "no quorum confirmed the leader in time".into(),
                    ));
                }
            };
            match res {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    let leader = f.leader_node.as_ref().map(|n: &BasicNode| n.addr.clone());
                    if forwarded {
                        return Err(NodeError::NotLeader { leader });
                    }
                    match (f.leader_id, leader) {
                        (Some(id), Some(addr)) if id != self.id => {
                            let index = self.remote_read_index(&addr).await?;
                            let remaining = deadline.saturating_duration_since(Instant::now());
                            return self
                                .raft
                                .wait(Some(remaining))
                                .applied_index_at_least(Some(index), "read index")
                                .await
                                .map(|_| ())
                                .map_err(|_| {
                                    NodeError::Unavailable("member is behind the leader".into())
                                });
                        }
                        _ => self.wait_for_leader(deadline).await?,
                    }
                }
                // A quorum did not answer this round in time (a busy or partitioned cluster):
                // try another round while the deadline allows.
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                    if deadline.saturating_duration_since(Instant::now())
                        < Duration::from_millis(20)
                    {
                        return Err(NodeError::Unavailable(e.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(RaftError::Fatal(e)) => return Err(NodeError::Unavailable(e.to_string())),
            }
        }
    }

    /// On the leader: the index a reader must have applied to be linearizable.
    pub(crate) async fn local_read_index(&self) -> Result<u64, NodeError> {
        let res = tokio::time::timeout(self.request_timeout(), self.raft.get_read_log_id())
            .await
            .map_err(|_| NodeError::Unavailable("no quorum confirmed the leader in time".into()))?;
        match res {
            Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(NodeError::NotLeader {
                    leader: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => Err(NodeError::Unavailable(e.to_string())),
        }
    }

    async fn remote_read_index(&self, leader_addr: &str) -> Result<u64, NodeError> {
        let url = format!("{}/raft/read-index", self.dialer.base_url(leader_addr));
        let resp = self
            .http
            .post(&url)
            .timeout(self.request_timeout())
            .send()
            .await
            .map_err(|e| NodeError::Unavailable(format!("leader unreachable: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| NodeError::Unavailable(e.to_string()));
        }
        Err(NodeError::Unavailable(format!(
            "leader answered {status} to read-index"
        )))
    }

    /// Renews a lease on the leader (forwarding if needed); returns its TTL.
    pub(crate) async fn keep_alive(&self, id: LeaseId, forwarded: bool) -> Result<u64, NodeError> {
        let deadline = Instant::now() + self.request_timeout();
        let mut checked = false;
        loop {
            if self.is_leader() {
                let (tx, rx) = oneshot::channel();
                self.keeper
                    .send(KeeperMsg::KeepAlive { id, reply: tx })
                    .await
                    .map_err(|_| NodeError::Unavailable("shutting down".into()))?;
                match rx
                    .await
                    .map_err(|_| NodeError::Unavailable("shutting down".into()))?
                {
                    KeepAliveReply::Ok(ttl) => return Ok(ttl),
                    KeepAliveReply::Unknown if checked => {
                        return Err(NodeError::Apply(ApplyError::LeaseNotFound(id)));
                    }
                    KeepAliveReply::Unknown => {
                        // A new leader may not have applied the grant yet.
                        self.read_barrier(true).await?;
                        checked = true;
                        continue;
                    }
                    KeepAliveReply::NotLeader => {}
                }
            }
            let leader = self.leader();
            if forwarded {
                return Err(NodeError::NotLeader {
                    leader: leader.map(|l| l.1),
                });
            }
            match leader {
                Some((lid, addr)) if lid != self.id => {
                    return self.forward_keep_alive(&addr, id).await;
                }
                _ => self.wait_for_leader(deadline).await?,
            }
        }
    }

    async fn forward_keep_alive(&self, addr: &str, id: LeaseId) -> Result<u64, NodeError> {
        let url = format!("{}/v1/lease/keepalive", self.dialer.base_url(addr));
        let resp = self
            .http
            .post(&url)
            .header(FORWARDED, "1")
            .timeout(self.request_timeout())
            .json(&capstan_coord_client::LeaseIdRequest { id })
            .send()
            .await
            .map_err(|e| NodeError::Unavailable(format!("leader unreachable: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        if status.is_success() {
            let r: capstan_coord_client::LeaseKeepAliveResponse = serde_json::from_slice(&bytes)
                .map_err(|e| NodeError::Unavailable(e.to_string()))?;
            return Ok(r.ttl_ms);
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) if e.code == "lease_not_found" => {
                Err(NodeError::Apply(ApplyError::LeaseNotFound(id)))
            }
            Ok(e) => Err(NodeError::from_api(status.as_u16(), e)),
            Err(_) => Err(NodeError::Unavailable(format!("leader answered {status}"))),
        }
    }
}

/// When a lease of `ttl_ms` kept alive at `now` expires. The TTL is capped at the grant
/// limit, so a lease stored before there was one (up to `u64::MAX` ms) expires too.
fn lease_deadline(now: Instant, ttl_ms: u64) -> Instant {
    let ttl = Duration::from_millis(ttl_ms.min(crate::http::MAX_LEASE_TTL_MS));
    now.checked_add(ttl).unwrap_or(now)
}

/// The lease keeper: on the leader, tracks each lease's deadline in memory (a new leader
/// gives every lease a full TTL) and proposes `LeaseRevoke` when one passes. Time never
/// enters the replicated state.
pub(crate) async fn run_lease_keeper(node: Arc<Node>, mut rx: mpsc::Receiver<KeeperMsg>) {
    let mut deadlines: HashMap<LeaseId, Instant> = HashMap::new();
    let mut was_leader = false;
    let mut tick =
        tokio::time::interval(Duration::from_millis(node.config.lease_check_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            msg = rx.recv() => {
                let Some(KeeperMsg::KeepAlive { id, reply }) = msg else { return };
                if !node.is_leader() {
                    let _ = reply.send(KeepAliveReply::NotLeader);
                    continue;
                }
                match node.shared.read(|s| s.kv.lease(id).map(|l| l.ttl_ms)) {
                    Some(ttl) => {
                        deadlines.insert(id, lease_deadline(Instant::now(), ttl));
                        let _ = reply.send(KeepAliveReply::Ok(ttl));
                    }
                    None => { let _ = reply.send(KeepAliveReply::Unknown); }
                }
            }
            _ = tick.tick() => {
                if !node.is_leader() {
                    deadlines.clear();
                    was_leader = false;
                    continue;
                }
                if !was_leader {
                    deadlines.clear();
                    was_leader = true;
                }
                let leases: Vec<(LeaseId, u64)> = node.shared.read(|s| s.kv.leases().collect());
                let now = Instant::now();
                deadlines.retain(|id, _| leases.iter().any(|(l, _)| l == id));
                let mut expired = Vec::new();
                for (id, ttl) in leases {
                    let d = *deadlines.entry(id).or_insert_with(|| lease_deadline(now, ttl));
                    if now >= d {
                        expired.push(id);
                    }
                }
                for id in expired {
                    match node.write(Command::LeaseRevoke { id }, true).await {
                        Ok(_) => {
                            tracing::info!(lease = id, "Lease expired; its keys are deleted");
                            deadlines.remove(&id);
                        }
                        Err(NodeError::Apply(ApplyError::LeaseNotFound(_))) => { deadlines.remove(&id); }
                        Err(e) => tracing::debug!(lease = id, error = ?e, "Revoking expired lease failed; will retry"),
                    }
                }
            }
        }
    }
}
