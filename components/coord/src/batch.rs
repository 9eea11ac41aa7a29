//! Group commit on the leader: writes that arrive while earlier ones are being made durable
//! wait in a queue and are proposed together as one [`Command::Batch`] log entry, so a
//! hundred concurrent writers share one fsync and one replication round instead of queueing
//! for a hundred. A lone writer is proposed at once, unbatched, so latency at low load is
//! unchanged; the batch size grows only with the backlog.
//!
//! At most [`IN_FLIGHT`] proposals are outstanding at a time: that bound is what lets the
//! queue build up into batches while the log is busy.
//!
//! Linearizable reads are coalesced the same way ([`ReadCoalescer`]): one ReadIndex round
//! at a time, serving every read that arrived before it started.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::node::NodeError;
use crate::raft::Raft;
use crate::sm::{Command, Outcome};

/// Proposals outstanding at once.
const IN_FLIGHT: usize = 2;
/// Commands in one batch at most.
const MAX_BATCH: usize = 512;
/// Key and value bytes in one batch at most (a command alone may carry more: it is proposed
/// alone). Keys count too: a transaction of thousands of deletes carries no value but can be
/// megabytes, and the size of a log entry bounds an AppendEntries body (`raft.rs`).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// What became of a submitted command.
pub(crate) enum Proposed {
    /// Applied (or rejected by the state machine) with this result.
    Done(Result<Outcome, NodeError>),
    /// This member is not the leader (any more): propose it the ordinary way (forwarding).
    NotLeader,
}

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Proposed>,
}

/// Handle to the batching task.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Proposal>,
}

impl Batcher {
    /// Starts the task; it stops with `shutdown`.
    pub(crate) fn spawn(raft: Raft, timeout: Duration, shutdown: CancellationToken) -> Batcher {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(raft, rx, timeout, shutdown));
        Batcher { tx }
    }

    /// Proposes `cmd`, possibly batched with others.
    pub(crate) async fn propose(&self, cmd: Command) -> Proposed {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Proposal { cmd, reply }).await.is_err() {
            return Proposed::Done(Err(NodeError::Unavailable("coord is shutting down".into())));
        }
        rx.await.unwrap_or_else(|_| {
            Proposed::Done(Err(NodeError::Unavailable("coord is shutting down".into())))
        })
    }
}

/// Roughly the bytes `cmd` adds to a log entry: its keys and values (plus a little per key
/// for the JSON around them).
fn payload_bytes(cmd: &Command) -> usize {
    const PER_KEY: usize = 32;
    let key = |k: &String| k.len().saturating_add(PER_KEY);
    let op = |op: &capstan_coord_client::TxnOp| match op {
        capstan_coord_client::TxnOp::Put { key: k, value, .. } => {
            key(k).saturating_add(value.len())
        }
        capstan_coord_client::TxnOp::Delete { key: k }
        | capstan_coord_client::TxnOp::Get { key: k } => key(k),
    };
    match cmd {
        Command::Put(p) => key(&p.key).saturating_add(p.value.len()),
        Command::Delete(d) => key(&d.key),
        Command::Txn(t) => t
            .compares
            .iter()
            .map(|c| key(&c.key))
            .chain(t.success.iter().chain(t.failure.iter()).map(op))
            .fold(0, usize::saturating_add),
        Command::Batch(cmds) => cmds
            .iter()
            .map(payload_bytes)
            .fold(0, usize::saturating_add),
        Command::LeaseGrant { .. } | Command::LeaseRevoke { .. } => PER_KEY,
    }
}

async fn run(
    raft: Raft,
    mut rx: mpsc::Receiver<Proposal>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A proposal that did not fit the previous batch opens the next one.
    let mut carry: Option<Proposal> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            },
        };
        // While every slot is busy, later writes queue up behind `first`.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = payload_bytes(&first.cmd);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(p) = rx.try_recv() else { break };
            bytes = bytes.saturating_add(payload_bytes(&p.cmd));
            if bytes > MAX_BATCH_BYTES {
                carry = Some(p);
                break;
            }
            batch.push(p);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch, timeout).await;
            drop(slot);
        });
    }
}

/// Why a proposal produced no result from the state machine.
enum Failure {
    NotLeader,
    Error(NodeError),
}

async fn propose(raft: &Raft, batch: Vec<Proposal>, timeout: Duration) {
    let (cmds, replies): (Vec<Command>, Vec<oneshot::Sender<Proposed>>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = cmds.len();
    let cmd = if n == 1 {
        cmds.into_iter().next().expect("one command")
    } else {
        debug!(commands = n, "Proposing a batch");
        Command::Batch(cmds)
    };
    let answer = match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Err(_) => Err(Failure::Error(NodeError::OutcomeUnknown(
            "write not committed before the time limit".into(),
        ))),
        Ok(Ok(resp)) => Ok(resp.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            Err(Failure::NotLeader)
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
            Err(Failure::Error(NodeError::Internal(e.to_string())))
        }
        Ok(Err(RaftError::Fatal(e))) => {
            Err(Failure::Error(NodeError::OutcomeUnknown(e.to_string())))
        }
    };
    match answer {
        Ok(result) if n == 1 => {
            let reply = replies.into_iter().next().expect("one reply");
            let _ = reply.send(Proposed::Done(result.map_err(NodeError::Apply)));
        }
        Ok(Ok(Outcome::Batch(results))) if results.len() == n => {
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(Proposed::Done(r.map_err(NodeError::Apply)));
            }
        }
        Ok(other) => {
            // Cannot happen (a batch answers one result per command); never guess.
            let message = format!("unexpected answer to a batch of {n}: {other:?}");
            for reply in replies {
                let _ = reply.send(Proposed::Done(Err(NodeError::Internal(message.clone()))));
            }
        }
        Err(Failure::NotLeader) => {
            for reply in replies {
                let _ = reply.send(Proposed::NotLeader);
            }
        }
        Err(Failure::Error(e)) => {
            for reply in replies {
                let _ = reply.send(Proposed::Done(Err(e.clone())));
            }
        }
    }
}

/// The result of one linearizability check (openraft's ReadIndex round).
pub(crate) type ReadCheck = Result<
    Option<openraft::LogId<crate::raft::NodeId>>,
    RaftError<
        crate::raft::NodeId,
        openraft::error::CheckIsLeaderError<crate::raft::NodeId, openraft::BasicNode>,
    >,
>;

/// Linearizable reads share ReadIndex rounds: a read joins the next round to start (never
/// one already under way, which could have been answered before the read arrived), and one
/// round — one heartbeat to a quorum — serves every read waiting for it. At most one round
/// is in flight, so a hundred concurrent readers cost one round at a time, not a hundred.
pub(crate) struct ReadCoalescer {
    raft: Raft,
    state: std::sync::Mutex<ReadState>,
}

#[derive(Default)]
struct ReadState {
    round_running: bool,
    waiting: Vec<oneshot::Sender<ReadCheck>>,
}

impl ReadCoalescer {
    pub(crate) fn new(raft: Raft) -> Arc<ReadCoalescer> {
        Arc::new(ReadCoalescer {
            raft,
            state: std::sync::Mutex::new(ReadState::default()),
        })
    }

    /// Waits until this member has applied everything committed before the call (or says
    /// why it cannot), like `Raft::ensure_linearizable`.
    pub(crate) async fn ensure_linearizable(self: &Arc<Self>) -> ReadCheck {
        let (tx, rx) = oneshot::channel();
        let start_round = {
            let mut st = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.waiting.push(tx);
            !std::mem::replace(&mut st.round_running, true)
        };
        if start_round {
            tokio::spawn(self.clone().rounds());
        }
        match rx.await {
            Ok(r) => r,
            // The round task is gone (runtime shutting down): check alone.
            Err(_) => self.raft.ensure_linearizable().await,
        }
    }

    /// Runs rounds while readers wait.
    async fn rounds(self: Arc<Self>) {
        loop {
            let waiting = {
                let mut st = self
                    .state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if st.waiting.is_empty() {
                    st.round_running = false;
                    return;
                }
                std::mem::take(&mut st.waiting)
            };
            let result = self.raft.ensure_linearizable().await;
            for w in waiting {
                let _ = w.send(result.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use capstan_coord_client::{TxnOp, TxnRequest};

    use super::*;

    #[test]
    fn keys_count_toward_the_batch_size_not_only_values() {
        let deletes = Command::Txn(TxnRequest {
            compares: Vec::new(),
            success: (0..1100)
                .map(|i| TxnOp::Delete {
                    key: format!("/{i:04}/{}", "k".repeat(1000)),
                })
                .collect(),
            failure: Vec::new(),
        });
        assert!(
            payload_bytes(&deletes) > MAX_BATCH_BYTES,
            "a megabyte of keys"
        );
        let batch = Command::Batch(vec![deletes.clone(), deletes]);
        assert!(payload_bytes(&batch) > 2 * MAX_BATCH_BYTES);
    }
}
