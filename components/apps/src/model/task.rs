//! What apps remembers about each task it launched (stored, and the source of the v2 Task JSON).

use serde::{Deserialize, Serialize};

use super::path::PathId;
use super::time::Timestamp;
use crate::readiness::ReadinessResult;

/// One launched task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    pub id: String,
    pub app_id: PathId,
    pub agent_id: String,
    pub host: String,
    /// Mesos task state name (`TASK_STAGING`, `TASK_RUNNING`, ...).
    pub state: String,
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
        is_terminal_state(&self.state)
    }

    pub fn is_running(&self) -> bool {
        self.state == "TASK_RUNNING"
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

/// Whether the Mesos state named `state` is terminal (unknown names are not).
pub fn is_terminal_state(state: &str) -> bool {
    capstan_types::TaskState::is_terminal_name(state)
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
