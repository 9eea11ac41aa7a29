//! What a master must remember across leader changes: agents admitted or marked gone and
//! frameworks added or removed. The [`Registry`] trait hides where it lives; today only the
//! in-memory one exists (a standalone master), a coord-backed one slots in for HA.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One change to the registry.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryOp {
    AgentAdmitted { id: String, info: Value },
    AgentGone { id: String },
    FrameworkAdded { id: String, info: Value },
    FrameworkRemoved { id: String },
}

/// The registry's content, loaded by a new leader.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegistrySnapshot {
    pub agents: BTreeMap<String, Value>,
    pub gone_agents: BTreeSet<String>,
    pub frameworks: BTreeMap<String, Value>,
    pub removed_frameworks: BTreeSet<String>,
}

impl RegistrySnapshot {
    pub fn apply(&mut self, op: RegistryOp) {
        match op {
            RegistryOp::AgentAdmitted { id, info } => {
                self.agents.insert(id, info);
            }
            RegistryOp::AgentGone { id } => {
                self.agents.remove(&id);
                self.gone_agents.insert(id);
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

/// Durable master state. Writes are synchronous from the master's point of view; a
/// replicated implementation must only return once the change is committed.
pub trait Registry: Send + 'static {
    fn load(&self) -> RegistrySnapshot;
    fn record(&mut self, op: RegistryOp);
}

/// A registry that lives as long as the process (standalone master).
#[derive(Debug, Default)]
pub struct InMemoryRegistry {
    snapshot: RegistrySnapshot,
}

impl Registry for InMemoryRegistry {
    fn load(&self) -> RegistrySnapshot {
        self.snapshot.clone()
    }

    fn record(&mut self, op: RegistryOp) {
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
}
