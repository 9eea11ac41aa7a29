//! What a master must remember across leader changes: agents admitted, draining or marked
//! gone, and frameworks added or removed. The [`Registry`] trait hides where it lives: in memory for a
//! standalone master, in coord for HA (`crate::ha::CoordRegistry`).
//!
//! Writes are acknowledged only once durable, as Mesos' registrar does: every recorded op
//! gets the next sequence number, and whatever the master says after recording it (an HTTP
//! reply, an event on any stream) is held until the store has committed that number (see
//! [`Durability`]). A leader that crashes can therefore lose only changes it never
//! acknowledged to anyone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use capstan_types::{AgentId, FrameworkId};
use serde_json::Value;
use tokio::sync::watch;

/// How far the registry's writes are durable: `recorded` counts ops handed to the registry,
/// `committed` is the highest one the backing store has acknowledged.
#[derive(Clone, Debug)]
pub struct Durability {
    recorded: Arc<AtomicU64>,
    committed: watch::Receiver<u64>,
}

impl Durability {
    /// A registry whose writes are durable as soon as they are recorded (in memory).
    pub fn immediate() -> Self {
        let (_tx, committed) = watch::channel(u64::MAX);
        Durability {
            recorded: Arc::new(AtomicU64::new(0)),
            committed,
        }
    }

    /// A registry committed by a background writer, which publishes on the returned sender
    /// the sequence number of each op it has made durable.
    pub fn deferred() -> (Self, watch::Sender<u64>) {
        let (tx, committed) = watch::channel(0);
        (
            Durability {
                recorded: Arc::new(AtomicU64::new(0)),
                committed,
            },
            tx,
        )
    }

    /// Numbers a newly recorded op.
    pub fn next(&self) -> u64 {
        self.recorded.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The sequence number of the last op recorded so far.
    pub fn mark(&self) -> u64 {
        self.recorded.load(Ordering::SeqCst)
    }

    /// Waits until op `seq` is durable. False when it never will be (the writer stopped:
    /// the master is shutting down), in which case nothing depending on it may be said.
    pub async fn wait(&self, seq: u64) -> bool {
        if *self.committed.borrow() >= seq {
            return true;
        }
        let mut rx = self.committed.clone();
        rx.wait_for(|c| *c >= seq).await.is_ok()
    }
}

/// One change to the registry.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryOp {
    AgentAdmitted {
        id: AgentId,
        info: Value,
    },
    AgentGone {
        id: AgentId,
    },
    /// DRAIN_AGENT: the agent takes no new tasks (and is marked gone once drained, with
    /// `mark_gone`), also under the next leader.
    AgentDraining {
        id: AgentId,
        mark_gone: bool,
    },
    /// REACTIVATE_AGENT: the drain is undone.
    AgentReactivated {
        id: AgentId,
    },
    FrameworkAdded {
        id: FrameworkId,
        info: Value,
    },
    FrameworkRemoved {
        id: FrameworkId,
    },
}

/// The registry's content, loaded by a new leader.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegistrySnapshot {
    pub agents: BTreeMap<AgentId, Value>,
    pub gone_agents: BTreeSet<AgentId>,
    /// Draining agents, each with its drain's `mark_gone`.
    pub draining: BTreeMap<AgentId, bool>,
    pub frameworks: BTreeMap<FrameworkId, Value>,
    pub removed_frameworks: BTreeSet<FrameworkId>,
}

impl RegistrySnapshot {
    pub fn apply(&mut self, op: RegistryOp) {
        match op {
            RegistryOp::AgentAdmitted { id, info } => {
                self.agents.insert(id, info);
            }
            RegistryOp::AgentGone { id } => {
                self.agents.remove(&id);
                self.draining.remove(&id);
                self.gone_agents.insert(id);
            }
            RegistryOp::AgentDraining { id, mark_gone } => {
                self.draining.insert(id, mark_gone);
            }
            RegistryOp::AgentReactivated { id } => {
                self.draining.remove(&id);
            }
            RegistryOp::FrameworkAdded { id, info } => {
                self.frameworks.insert(id, info);
            }
            RegistryOp::FrameworkRemoved { id } => {
                self.frameworks.remove(&id);
                self.removed_frameworks.insert(id);
            }
        }
    }
}

/// Durable master state. `record` never blocks; the op is numbered by the registry's
/// [`Durability`], which callers use to hold back what depends on it.
pub trait Registry: Send + 'static {
    fn load(&self) -> RegistrySnapshot;
    fn record(&mut self, op: RegistryOp);
    fn durability(&self) -> Durability;
}

/// A registry that lives as long as the process (standalone master).
#[derive(Debug)]
pub struct InMemoryRegistry {
    snapshot: RegistrySnapshot,
    durability: Durability,
}

impl Default for InMemoryRegistry {
    fn default() -> Self {
        InMemoryRegistry {
            snapshot: RegistrySnapshot::default(),
            durability: Durability::immediate(),
        }
    }
}

impl Registry for InMemoryRegistry {
    fn load(&self) -> RegistrySnapshot {
        self.snapshot.clone()
    }

    fn durability(&self) -> Durability {
        self.durability.clone()
    }

    fn record(&mut self, op: RegistryOp) {
        self.durability.next();
        self.snapshot.apply(op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_agents_and_removed_frameworks_are_remembered() {
        let mut r = InMemoryRegistry::default();
        r.record(RegistryOp::AgentAdmitted {
            id: "a".into(),
            info: Value::Null,
        });
        r.record(RegistryOp::FrameworkAdded {
            id: "f".into(),
            info: Value::Null,
        });
        r.record(RegistryOp::AgentGone { id: "a".into() });
        r.record(RegistryOp::FrameworkRemoved { id: "f".into() });
        let s = r.load();
        assert!(s.agents.is_empty() && s.frameworks.is_empty());
        assert!(s.gone_agents.contains("a") && s.removed_frameworks.contains("f"));
    }

    #[tokio::test]
    async fn a_deferred_registry_holds_waiters_until_the_op_is_committed() {
        let (d, committed) = Durability::deferred();
        let first = d.next();
        let second = d.next();
        assert_eq!(d.mark(), second);
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait(second).await }
        });
        committed.send(first).unwrap();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "op 2 is not durable yet");
        committed.send(second).unwrap();
        assert!(waiter.await.unwrap());
        assert!(d.wait(first).await, "earlier ops are durable too");
        drop(committed);
        assert!(!d.wait(second + 1).await, "a stopped writer never commits");
    }

    #[tokio::test]
    async fn an_in_memory_registry_is_durable_at_once() {
        let mut r = InMemoryRegistry::default();
        r.record(RegistryOp::AgentGone { id: "a".into() });
        let d = r.durability();
        assert!(d.wait(d.mark()).await);
    }
}
