//! What apps remembers about each task it launched (stored, and the source of the v2 Task JSON).

use capstan_types::{AgentId, TaskId, TaskState};
use serde::{Deserialize, Serialize};

use super::path::PathId;
use super::time::Timestamp;
use crate::readiness::ReadinessResult;

/// One launched task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    pub id: TaskId,
    pub app_id: PathId,
    pub agent_id: AgentId,
    pub host: String,
    /// Mesos task state (stored as its name, `TASK_STAGING`, `TASK_RUNNING`, ...).
    #[serde(deserialize_with = "state_or_unknown")]
    pub state: TaskState,
    pub staged_at: Timestamp,
    pub started_at: Option<Timestamp>,
    /// The app version the task was launched with.
    pub version: Timestamp,
    /// `lastConfigChangeAt` of that version: tasks with an older one are replaced by restarts.
    pub config_version: Timestamp,
    pub ports: Vec<u32>,
    pub service_ports: Vec<u32>,
    pub ip_addresses: Vec<String>,
    /// Health reported by Mesos (`TaskStatus.healthy`) for agent-run checks.
    pub mesos_healthy: Option<bool>,
    /// One entry per app-run health check (HTTP, HTTPS, TCP), same order as the app's checks.
    pub health: Vec<HealthResult>,
    /// One entry per readiness check once probed, same order as the app's checks.
    #[serde(default)]
    pub readiness: Vec<ReadinessResult>,
    /// When we asked Mesos to kill it (kills are re-sent until the task is terminal).
    pub kill_requested: Option<Timestamp>,
    /// Set while the task is TASK_UNREACHABLE.
    pub unreachable_since: Option<Timestamp>,
    pub role: String,
}

impl TaskRecord {
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    pub fn is_running(&self) -> bool {
        self.state == TaskState::Running
    }

    /// Alive and counted towards the app's instances (not terminal, not being killed).
    pub fn is_active(&self) -> bool {
        !self.is_terminal() && self.kill_requested.is_none()
    }

    /// `Some(true)` healthy, `Some(false)` unhealthy, `None` no checks / no result yet.
    pub fn healthy(&self, has_checks: bool) -> Option<bool> {
        if !has_checks {
            return None;
        }
        if let Some(h) = self.mesos_healthy {
            return Some(h);
        }
        if self.health.is_empty() {
            return None;
        }
        if self.health.iter().all(|h| h.alive) {
            Some(true)
        } else if self
            .health
            .iter()
            .any(|h| !h.alive && h.last_failure.is_some())
        {
            Some(false)
        } else {
            None
        }
    }
}

/// A stored state name; a name this build does not know (a newer master's) reads as
/// `TASK_UNKNOWN` rather than losing the record.
fn state_or_unknown<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TaskState, D::Error> {
    let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    Ok(TaskState::from_name_or_unknown(&name))
}

/// State of one app-run health check for one task (the v2 `healthCheckResults` entry).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct HealthResult {
    pub alive: bool,
    pub consecutive_failures: u32,
    pub first_success: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_failure: Option<Timestamp>,
    pub last_failure_cause: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the string-typed code wrote it: ids as strings, state as its name.
    const OLD_RECORD: &str = r#"{"id":"web.instance-1._app.1","app_id":"/web","agent_id":"S0",
        "host":"h0","state":"TASK_RUNNING","staged_at":"2024-01-02T03:04:05.000Z",
        "started_at":null,"version":"2024-01-02T03:04:05.000Z",
        "config_version":"2024-01-02T03:04:05.000Z","ports":[31000],"service_ports":[10000],
        "ip_addresses":["10.0.0.1"],"mesos_healthy":null,"health":[],"kill_requested":null,
        "unreachable_since":null,"role":"*"}"#;

    #[test]
    fn a_record_written_by_the_string_typed_code_still_decodes() {
        let t: TaskRecord = serde_json::from_str(OLD_RECORD).unwrap();
        assert_eq!(t.id, "web.instance-1._app.1");
        assert_eq!(t.agent_id, "S0");
        assert_eq!(t.state, TaskState::Running);
        assert!(t.is_running() && !t.is_terminal());
        // And it is written back in the same shape.
        let again: serde_json::Value = serde_json::to_value(&t).unwrap();
        assert_eq!(again["id"], "web.instance-1._app.1");
        assert_eq!(again["agent_id"], "S0");
        assert_eq!(again["state"], "TASK_RUNNING");
        let back: TaskRecord = serde_json::from_value(again).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn an_unknown_stored_state_reads_as_task_unknown() {
        let old = OLD_RECORD.replace("TASK_RUNNING", "TASK_FROM_THE_FUTURE");
        let t: TaskRecord = serde_json::from_str(&old).unwrap();
        assert_eq!(t.state, TaskState::Unknown);
    }
}
