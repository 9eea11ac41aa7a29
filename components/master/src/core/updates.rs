//! Status updates on their way from an agent to a framework: an agent's UPDATE is recorded
//! in the task's history and queued; the head of each task's queue is sent to the framework
//! (again on re-subscription, and every `status_update_retry_interval` until acknowledged);
//! a framework's ACKNOWLEDGE is passed on to the agent and releases the next update; a
//! terminal task whose updates are all acknowledged moves to the framework's completed
//! tasks.

use std::time::Instant;

use capstan_types::{AgentId, FrameworkId, TaskId, TaskState};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{Core, Framework, MAX_ACKED_KEPT, Pending, Task, TaskKey};
use crate::wire::downgrade_state;

impl Core {
    pub(super) fn send_update_to_framework(&mut self, fid: &FrameworkId, mut status: Value) {
        let Some(f) = self.frameworks.get_mut(fid) else {
            return;
        };
        let pa = f.partition_aware();
        // A name that is no task state (an agent's bug) is passed on as it is.
        if let Some(Ok(s)) = status
            .get("state")
            .and_then(Value::as_str)
            .map(TaskState::from_name)
        {
            status["state"] = json!(downgrade_state(s, pa).name());
        }
        f.send(&json!({"type": "UPDATE", "update": {"status": status}}));
    }

    pub(super) fn acknowledge(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        uuid: &str,
        now: Instant,
    ) {
        let key = (fid.clone(), tid.clone());
        let Some(t) = self.tasks.get_mut(&key) else {
            return;
        };
        if t.pending.front().is_none_or(|p| p.uuid != uuid) {
            return;
        }
        t.pending.pop_front();
        t.acked.push_back(uuid.to_string());
        if t.acked.len() > MAX_ACKED_KEPT {
            t.acked.pop_front();
        }
        let agent_id = t.agent_id.clone();
        let ack = json!({"type":"ACKNOWLEDGED","acknowledged":{
            "framework_id": fid.to_wire(), "task_id": tid.to_wire(), "uuid": uuid}});
        if let Some(a) = self.agents.get_mut(&agent_id) {
            a.send(&ack);
        }
        self.deliver_head(&key, now, true);
        self.maybe_complete(&key);
    }

    pub(super) fn deliver_head(&mut self, key: &TaskKey, now: Instant, force: bool) {
        let retry = self.cfg.status_update_retry_interval;
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        let connected = self
            .frameworks
            .get(&key.0)
            .is_some_and(Framework::connected);
        let Some(p) = t.pending.front_mut() else {
            return;
        };
        if !connected {
            return;
        }
        let due = force || p.sent_at.is_none_or(|s| now.duration_since(s) >= retry);
        if !due {
            return;
        }
        p.sent_at = Some(now);
        let status = p.status.clone();
        self.send_update_to_framework(&key.0, status);
    }

    pub(super) fn deliver_pending(&mut self, fid: &FrameworkId, now: Instant, force: bool) {
        let keys: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(k, t)| k.0 == *fid && !t.pending.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.deliver_head(&k, now, force);
        }
    }

    /// A terminal task whose updates are all acknowledged moves to completed_tasks.
    pub(super) fn maybe_complete(&mut self, key: &TaskKey) {
        let done = self
            .tasks
            .get(key)
            .is_some_and(|t| t.state.is_terminal() && t.pending.is_empty());
        if !done {
            return;
        }
        let t = self.tasks.remove(key).expect("exists");
        self.release(&t);
        let max = self.cfg.max_completed_tasks_per_framework;
        if let Some(f) = self.frameworks.get_mut(&key.0) {
            f.completed_tasks.push_back(t);
            while f.completed_tasks.len() > max {
                f.completed_tasks.pop_front();
            }
        }
    }

    pub(super) fn release(&mut self, t: &Task) {
        if !t.released {
            self.alloc
                .recover(&t.framework_id, &t.agent_id, &t.resources);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn agent_update(
        &mut self,
        aid: &AgentId,
        fid: &FrameworkId,
        tid: &TaskId,
        state: TaskState,
        uuid: &str,
        mut status: Value,
        now: Instant,
    ) {
        let key = (fid.clone(), tid.clone());
        let ack = json!({"type":"ACKNOWLEDGED","acknowledged":{
            "framework_id": fid.to_wire(), "task_id": tid.to_wire(), "uuid": uuid}});
        let Some(t) = self.tasks.get_mut(&key) else {
            // Completed and acknowledged before, or framework gone: acknowledge so the
            // agent stops retrying.
            let acked_before = self.frameworks.get(fid).is_some_and(|f| {
                f.completed_tasks
                    .iter()
                    .any(|t| t.acked.iter().any(|u| u == uuid))
            });
            let fw_known = self.frameworks.contains_key(fid);
            if acked_before || !fw_known {
                if let Some(a) = self.agents.get_mut(aid) {
                    a.send(&ack);
                }
            } else {
                warn!(framework_id = %fid, task_id = %tid, "Status update for an unknown task; forwarding");
                if let Some(a) = self.agents.get_mut(aid) {
                    a.send(&ack);
                }
                status["agent_id"] = aid.to_wire();
                if let Some(o) = status.as_object_mut() {
                    o.remove("uuid");
                }
                self.send_update_to_framework(fid, status);
            }
            return;
        };
        if t.acked.iter().any(|u| u == uuid) {
            if let Some(a) = self.agents.get_mut(aid) {
                a.send(&ack);
            }
            return;
        }
        if t.pending.iter().any(|p| p.uuid == uuid) {
            return; // duplicate of a queued update
        }
        status["agent_id"] = aid.to_wire();
        if status.get("timestamp").is_none() {
            status["timestamp"] = json!(self.clock.wall());
        }
        t.state = state;
        let mut hist = status.clone();
        if let Some(o) = hist.as_object_mut() {
            o.remove("uuid");
        }
        t.push_status(&hist);
        t.pending.push_back(Pending {
            status: status.clone(),
            uuid: uuid.to_string(),
            sent_at: None,
        });
        let first = t.pending.len() == 1;
        info!(framework_id = %fid, task_id = %tid, state = %state, "Status update");
        if state.is_terminal() && !t.released {
            t.released = true;
            let (agent, res) = (t.agent_id.clone(), t.resources.clone());
            self.alloc.recover(fid, &agent, &res);
        }
        self.operator_event(json!({"type":"TASK_UPDATED","task_updated":{
            "framework_id": fid.to_wire(), "status": status, "state": state.name()}}));
        if first {
            self.deliver_head(&key, now, true);
        }
        if !self.frameworks.contains_key(fid) {
            // No framework to acknowledge: acknowledge on its behalf.
            self.tasks.get_mut(&key).expect("exists").pending.clear();
            if let Some(a) = self.agents.get_mut(aid) {
                a.send(&ack);
            }
        }
    }
}
