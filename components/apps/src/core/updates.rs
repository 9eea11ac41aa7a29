//! What Mesos tells us about tasks and what we ask of it: SUBSCRIBED (reconcile every
//! known task), disconnection and framework removal, status UPDATEs (acknowledged; unknown
//! live tasks are killed; terminal ones are forgotten and an unrequested end counts as a
//! failure that delays the relaunch by the app's backoff; TASK_UNREACHABLE starts the
//! unreachable clock), and kills — single, re-sent by `tick` until terminal, and the API's
//! kill-and-scale / wipe.

use std::collections::{BTreeMap, BTreeSet};

use capstan_proto::mesos::v1::TaskStatus;
use capstan_types::{AgentId, FrameworkId, TaskId, TaskState};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::views::ip_json;
use super::{ApiError, Core, DeploymentResult, instance_id, keys};
use crate::mesos::{self, calls};
use crate::model::{PathId, TaskRecord, Timestamp};
use crate::planner;
use crate::store::StoreOp;

/// What a kill request returns.
#[derive(Debug, Clone, PartialEq)]
pub enum KillOutcome {
    Tasks(Vec<Value>),
    Deployment(DeploymentResult),
}

impl Core {
    /// SUBSCRIBED: remember the framework id and reconcile every known task.
    pub fn subscribed(&mut self, framework_id: &FrameworkId, now: Timestamp) {
        if self.framework_id.as_ref() != Some(framework_id) {
            info!(framework_id = %framework_id, "Registered with Mesos");
            self.framework_id = Some(framework_id.clone());
            self.store_ops.push(StoreOp::Put(
                keys::FRAMEWORK_ID.into(),
                framework_id.as_str().as_bytes().to_vec(),
            ));
        } else {
            info!(framework_id = %framework_id, "Re-registered with Mesos");
        }
        self.connected = true;
        let known: Vec<(TaskId, AgentId)> = self
            .tasks
            .values()
            .map(|t| (t.id.clone(), t.agent_id.clone()))
            .collect();
        if !known.is_empty() {
            self.push_call(calls::reconcile(&known));
        }
        self.push_call(calls::reconcile(&[]));
        self.last_reconcile = now;
        self.push_call(calls::revive());
        self.events.publish(
            "subscribe_event",
            json!({"clientIp": "", "callbackUrl": ""}),
        );
        self.evaluate(now);
    }

    pub fn disconnected(&mut self) {
        self.connected = false;
        self.wanted_offers = false;
    }

    /// The master removed us: forget the framework id so the next subscription registers anew.
    pub fn framework_removed(&mut self) {
        warn!("Framework removed by the master; registering a new one");
        self.framework_id = None;
        self.connected = false;
        self.store_ops
            .push(StoreOp::Delete(keys::FRAMEWORK_ID.into()));
    }

    /// Several UPDATEs in a row, each applied as [`Core::update`] would.
    pub fn updates(&mut self, statuses: &[TaskStatus], now: Timestamp) {
        for status in statuses {
            self.update(status, now);
        }
    }

    /// UPDATE: a task status. Acknowledged when it carries a uuid.
    pub fn update(&mut self, status: &TaskStatus, now: Timestamp) {
        let task_id = TaskId::from(status.task_id.value.as_str());
        // A state this build does not know (a newer master's) is TASK_UNKNOWN.
        let state = TaskState::from_number_or_unknown(status.state);
        let agent_id = status
            .agent_id
            .as_ref()
            .map(|a| AgentId::from(a.value.as_str()))
            .unwrap_or_default();
        if let Some(uuid) = &status.uuid
            && !agent_id.as_str().is_empty()
        {
            self.push_call(calls::acknowledge(&agent_id, &task_id, uuid.clone()));
        }
        self.task_text.remove(&task_id);
        let Some(t) = self.tasks.get_mut(&task_id) else {
            if !state.is_terminal() {
                warn!(task_id = %task_id, state = %state, "Killing unknown task");
                self.push_call(calls::kill(&task_id, Some(&agent_id)));
                self.events.publish(
                    "unknown_instance_terminated_event",
                    json!({"instanceId": task_id, "runSpecId": "", "condition": state}),
                );
            }
            return;
        };
        let prev = std::mem::replace(&mut t.state, state);
        if !agent_id.as_str().is_empty() {
            t.agent_id = agent_id.clone();
        }
        if state == TaskState::Running && t.started_at.is_none() {
            t.started_at = Some(mesos::status_time(status, now));
        }
        let ips = mesos::status_ips(status);
        if !ips.is_empty() {
            t.ip_addresses = ips;
        }
        let mut health_changed = None;
        if let Some(h) = status.healthy
            && t.mesos_healthy != Some(h)
        {
            t.mesos_healthy = Some(h);
            health_changed = Some(h);
        }
        if state == TaskState::Unreachable {
            t.unreachable_since.get_or_insert(now);
        } else {
            t.unreachable_since = None;
        }
        let t = t.clone();
        self.dirty.insert(t.app_id.clone());
        if t.unreachable_since.is_some() {
            self.unreachable.insert(task_id.clone());
        } else {
            self.unreachable.remove(&task_id);
        }
        if prev != state {
            info!(task_id = %task_id, app = %t.app_id, state = %state, "Task status");
        }
        let message = status.message.as_deref().unwrap_or_default();
        self.events.publish(
            "status_update_event",
            json!({
                "slaveId": t.agent_id, "taskId": t.id, "taskStatus": state, "message": message,
                "appId": t.app_id, "host": t.host, "ipAddresses": ip_json(&t.ip_addresses),
                "ports": t.ports, "version": t.version,
            }),
        );
        self.events.publish(
            "instance_changed_event",
            json!({
                "instanceId": instance_id(t.id.as_str()), "condition": condition(state), "runSpecId": t.app_id,
                "agentId": t.agent_id, "host": t.host, "runSpecVersion": t.version,
            }),
        );
        if let Some(h) = health_changed {
            self.events.publish("instance_health_changed_event", json!({"instanceId": instance_id(t.id.as_str()), "runSpecId": t.app_id, "runSpecVersion": t.version, "healthy": h}));
            self.events.publish("health_status_changed_event", json!({"appId": t.app_id, "taskId": t.id, "instanceId": instance_id(t.id.as_str()), "version": t.version, "alive": h}));
        }
        if state.is_terminal() {
            self.remove_task(task_id.as_str());
            self.store_ops
                .push(StoreOp::Delete(keys::task(task_id.as_str())));
            self.health_next.retain(|(id, _), _| id != &task_id);
            self.readiness_next.retain(|(id, _), _| id != &task_id);
            let failed = t.kill_requested.is_none() && state != TaskState::Killed;
            if let Some(app) = self.apps.get_mut(&t.app_id)
                && failed
            {
                app.launch.failures = app.launch.failures.saturating_add(1);
                let delay = planner::launch_delay_secs(
                    app.def.backoff_seconds as f64,
                    app.def.backoff_factor,
                    app.def.max_launch_delay_seconds as f64,
                    app.launch.failures,
                );
                app.launch.delay_until = Some(now.plus_millis((delay * 1000.0) as i64));
                app.launch.last_failure = Some(json!({
                    "appId": t.app_id, "host": t.host, "message": message, "state": state,
                    "taskId": t.id, "timestamp": now, "version": t.version, "slaveId": t.agent_id,
                }));
                warn!(task_id = %task_id, app = %t.app_id, state = %state, delay_secs = delay, "Task failed; relaunch delayed");
            }
            if !self.apps.contains_key(&t.app_id) && !self.by_app.contains_key(&t.app_id) {
                self.events
                    .publish("app_terminated_event", json!({"appId": t.app_id}));
            }
        } else {
            self.put_task_store(task_id.as_str());
        }
        self.reevaluate(now);
    }

    /// Asks Mesos to kill a task (idempotent; re-sent by `tick` until it is terminal).
    pub fn kill_task(&mut self, id: &str, now: Timestamp) {
        self.task_text.remove(id);
        if let Some(t) = self.tasks.get_mut(id) {
            if t.kill_requested.is_none() {
                info!(task_id = %id, app = %t.app_id, "Killing task");
                self.dirty.insert(t.app_id.clone());
            }
            t.kill_requested = Some(now);
            let call = calls::kill(&t.id, Some(&t.agent_id));
            self.push_call(call);
            self.put_task_store(id);
        }
    }

    /// Kills tasks by id. `scale` lowers the apps' instances by the number killed (a
    /// deployment); `wipe` forgets the records at once.
    pub fn kill_tasks(
        &mut self,
        ids: &[TaskId],
        scale: bool,
        wipe: bool,
        force: bool,
        now: Timestamp,
    ) -> Result<KillOutcome, ApiError> {
        let found: Vec<TaskRecord> = ids
            .iter()
            .filter_map(|id| self.tasks.get(id).cloned())
            .collect();
        let rendered: Vec<Value> = found.iter().map(|t| self.task_json(t)).collect();
        if scale {
            let mut per_app: BTreeMap<PathId, i64> = BTreeMap::new();
            for t in &found {
                if t.is_active() {
                    *per_app.entry(t.app_id.clone()).or_default() += 1;
                }
            }
            let mut changes = BTreeMap::new();
            for (app, n) in per_app {
                if let Some(a) = self.apps.get(&app) {
                    let mut def = a.def.clone();
                    def.instances = (def.instances - n).max(0);
                    def.version = None;
                    def.version_info = None;
                    changes.insert(app, Some(def));
                }
            }
            // Check for conflicts before killing anything.
            if !force
                && self
                    .deployments
                    .iter()
                    .any(|d| d.affected.iter().any(|a| changes.contains_key(a)))
            {
                return self
                    .deploy(changes, BTreeSet::new(), false, now)
                    .map(KillOutcome::Deployment);
            }
            for t in &found {
                self.kill_task(t.id.as_str(), now);
            }
            return self
                .deploy(changes, BTreeSet::new(), force, now)
                .map(KillOutcome::Deployment);
        }
        for t in &found {
            self.kill_task(t.id.as_str(), now);
            if wipe {
                self.remove_task(t.id.as_str());
                self.store_ops
                    .push(StoreOp::Delete(keys::task(t.id.as_str())));
            }
        }
        self.reevaluate(now);
        Ok(KillOutcome::Tasks(rendered))
    }
}

fn condition(state: TaskState) -> &'static str {
    match state {
        TaskState::Staging => "Staging",
        TaskState::Starting => "Starting",
        TaskState::Running => "Running",
        TaskState::Finished => "Finished",
        TaskState::Failed => "Failed",
        TaskState::Killing => "Killing",
        TaskState::Killed => "Killed",
        TaskState::Error => "Error",
        TaskState::Dropped => "Dropped",
        TaskState::Unreachable => "Unreachable",
        TaskState::Gone => "Gone",
        TaskState::GoneByOperator => "GoneByOperator",
        TaskState::Lost => "Lost",
        TaskState::Unknown => "Unknown",
    }
}
