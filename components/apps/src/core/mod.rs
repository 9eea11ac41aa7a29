//! The state machine that owns everything: apps and their versions, groups, deployments, task
//! records and the launch queue. It is synchronous and is driven by one task: API requests,
//! Mesos events and timer ticks are method calls with the current time; what it wants done
//! outside (scheduler calls, store writes) accumulates in outboxes the server drains, and
//! events go straight to the [`EventBus`].
//!
//! This module holds the [`Core`] type itself (its state, construction from a [`Snapshot`],
//! the per-app task index, the periodic [`Core::tick`]) and the store [`keys`]; the methods
//! are split by concern: [`deployments`] (planning and stepping deployments, rolling
//! restarts, scaling), [`offers`] (launch queue, offer matching, backoff), [`updates`]
//! (status updates, reconciliation, kills), [`checks`] (health and readiness results) and
//! [`views`] (the JSON of `/v2/apps`, `/v2/tasks`, `/v2/deployments`, `/v2/queue`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use capstan_types::{AgentId, FrameworkId, TaskId, TaskState};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::warn;

use crate::events::EventBus;
use crate::mesos::{OutCall, calls};
use crate::model::{AppDefinition, PathId, TaskRecord, Timestamp, Violation};
use crate::placement::Placed;
use crate::store::StoreOp;

mod checks;
mod deployments;
mod offers;
mod updates;
mod views;

#[cfg(test)]
mod tests;

pub use deployments::{Deployment, GroupMeta};
pub use offers::{LAST_UNUSED_OFFERS, LaunchStats, OfferRecord};
pub use updates::KillOutcome;
pub use views::{AppEmbed, instance_id};

use deployments::deployment_apps;

/// An API error: HTTP status and Marathon's JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "message": message.into() }),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }

    pub fn invalid(details: Vec<Violation>) -> ApiError {
        ApiError {
            status: 422,
            body: json!({"message": "Object is not valid", "details": details}),
        }
    }
}

/// `{deploymentId, version}` of a mutation (the wire type of `capstan-marathon`).
pub use capstan_marathon::DeploymentResult;

/// One app: current definition, all versions, launch state.
#[derive(Debug, Clone, PartialEq)]
pub struct AppState {
    pub def: AppDefinition,
    pub versions: BTreeMap<Timestamp, AppDefinition>,
    pub launch: LaunchStats,
}

/// How often tasks in an uncertain state (UNKNOWN, UNREACHABLE, LOST) are reconciled.
pub const UNCERTAIN_RECONCILE_MS: i64 = 5_000;

/// Settings the state machine needs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub role: String,
    pub refuse_seconds: f64,
    pub port_min: u32,
    pub port_max: u32,
    pub reconciliation_interval_ms: i64,
    pub kill_retry_ms: i64,
    pub task_launch_timeout_ms: i64,
    /// What app containers may ask of the hosts (checked on every definition change).
    pub container_policy: capstan_types::ContainerPolicy,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            role: "*".into(),
            refuse_seconds: 5.0,
            port_min: 10000,
            port_max: 20000,
            reconciliation_interval_ms: 600_000,
            kill_retry_ms: 10_000,
            task_launch_timeout_ms: 300_000,
            container_policy: Default::default(),
        }
    }
}

/// Everything loaded from the store at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub apps: Vec<AppDefinition>,
    pub versions: Vec<AppDefinition>,
    pub groups: Vec<(PathId, GroupMeta)>,
    pub tasks: Vec<TaskRecord>,
    pub deployments: Vec<Deployment>,
    pub framework_id: Option<FrameworkId>,
}

pub mod keys {
    use super::*;
    pub fn app(id: &PathId) -> String {
        format!("/apps{id}")
    }
    pub fn version(id: &PathId, v: Timestamp) -> String {
        format!("/versions{id}/{}", v.millis())
    }
    pub fn task(id: &str) -> String {
        format!("/tasks/{id}")
    }
    pub fn deployment(id: &str) -> String {
        format!("/deployments/{id}")
    }
    pub fn group(id: &PathId) -> String {
        format!("/groups{id}")
    }
    pub const FRAMEWORK_ID: &str = "/framework_id";
}

pub struct Core {
    cfg: CoreConfig,
    apps: BTreeMap<PathId, AppState>,
    groups: BTreeMap<PathId, GroupMeta>,
    tasks: BTreeMap<TaskId, TaskRecord>,
    /// Task ids by app: kept in sync with `tasks` by `insert_task` / `remove_task` only.
    by_app: BTreeMap<PathId, BTreeSet<TaskId>>,
    /// Tasks with `unreachable_since` set (their counting depends on the time).
    unreachable: BTreeSet<TaskId>,
    /// Apps whose tasks, definition or deployments changed since they were last evaluated.
    dirty: BTreeSet<PathId>,
    /// v2 Task JSON text by task id, dropped whenever the task changes (filled by lists).
    task_text: HashMap<TaskId, Box<str>>,
    /// App definition JSON text, dropped whenever the definition changes.
    def_text: HashMap<PathId, Box<str>>,
    deployments: Vec<Deployment>,
    /// Ids of the deployments naming each app (see `deployment_apps`).
    deploying: HashMap<PathId, BTreeSet<String>>,
    framework_id: Option<FrameworkId>,
    connected: bool,
    agents: BTreeMap<AgentId, Placed>,
    last_version: Timestamp,
    last_reconcile: Timestamp,
    /// When tasks whose state is uncertain were last reconciled explicitly.
    last_uncertain_reconcile: Timestamp,
    wanted_offers: bool,
    health_next: BTreeMap<(TaskId, usize), Timestamp>,
    readiness_next: BTreeMap<(TaskId, usize), Timestamp>,
    events: EventBus,
    /// Scheduler calls to send (without framework id), as compact text at once: an ACCEPT's
    /// task infos take several times their text size as values, and one offers batch can
    /// launch thousands of tasks.
    pub calls: Vec<OutCall>,
    /// Store writes, in order.
    pub store_ops: Vec<StoreOp>,
    /// Store writes handed to the writer so far (the number of the last one); the owner adds
    /// the drained `store_ops` here.
    pub ops_issued: u64,
}

fn to_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
impl Core {
    /// Queues a scheduler call.
    fn push_call(&mut self, call: capstan_proto::mesos::v1::scheduler::Call) {
        self.calls.push(OutCall::new(call));
    }

    /// The cluster's container policy.
    pub fn container_policy(&self) -> &capstan_types::ContainerPolicy {
        &self.cfg.container_policy
    }

    pub fn new(cfg: CoreConfig, events: EventBus, snapshot: Snapshot) -> Core {
        let mut apps: BTreeMap<PathId, AppState> = BTreeMap::new();
        for def in snapshot.apps {
            apps.insert(
                def.id.clone(),
                AppState {
                    def,
                    versions: BTreeMap::new(),
                    launch: LaunchStats::default(),
                },
            );
        }
        for v in snapshot.versions {
            if let (Some(app), Some(ver)) = (apps.get_mut(&v.id), v.version) {
                app.versions.insert(ver, v);
            }
        }
        for app in apps.values_mut() {
            if let Some(v) = app.def.version {
                app.versions.entry(v).or_insert_with(|| app.def.clone());
            }
        }
        let last_version = apps
            .values()
            .filter_map(|a| a.def.version)
            .max()
            .unwrap_or_default();
        let mut core = Core {
            cfg,
            apps,
            groups: snapshot.groups.into_iter().collect(),
            tasks: BTreeMap::new(),
            by_app: BTreeMap::new(),
            unreachable: BTreeSet::new(),
            dirty: BTreeSet::new(),
            task_text: HashMap::new(),
            def_text: HashMap::new(),
            deployments: Vec::new(),
            deploying: HashMap::new(),
            framework_id: snapshot.framework_id,
            connected: false,
            agents: BTreeMap::new(),
            last_version,
            last_reconcile: Timestamp(0),
            last_uncertain_reconcile: Timestamp(0),
            wanted_offers: false,
            health_next: BTreeMap::new(),
            readiness_next: BTreeMap::new(),
            events,
            calls: Vec::new(),
            store_ops: Vec::new(),
            ops_issued: 0,
        };
        for t in snapshot.tasks {
            core.insert_task(t);
        }
        for d in snapshot.deployments {
            core.add_deployment(d);
        }
        core
    }

    /// Adds (or replaces) a task record, keeping the per-app index in sync.
    fn insert_task(&mut self, t: TaskRecord) {
        self.task_text.remove(&t.id);
        let app = t.app_id.clone();
        self.dirty.insert(app.clone());
        if t.unreachable_since.is_some() {
            self.unreachable.insert(t.id.clone());
        } else {
            self.unreachable.remove(&t.id);
        }
        let id = t.id.clone();
        if let Some(old) = self.tasks.insert(id.clone(), t)
            && old.app_id != app
        {
            self.unindex(&old);
        }
        self.by_app.entry(app).or_default().insert(id);
    }

    /// Forgets a task record, keeping the per-app index in sync.
    fn remove_task(&mut self, id: &str) -> Option<TaskRecord> {
        let t = self.tasks.remove(id)?;
        self.task_text.remove(id);
        self.unindex(&t);
        self.unreachable.remove(id);
        Some(t)
    }

    fn unindex(&mut self, t: &TaskRecord) {
        self.dirty.insert(t.app_id.clone());
        if let Some(ids) = self.by_app.get_mut(&t.app_id) {
            ids.remove(&t.id);
            if ids.is_empty() {
                self.by_app.remove(&t.app_id);
            }
        }
    }

    /// Marks every app (and every app a task or deployment names) for the next evaluation.
    fn mark_all_dirty(&mut self) {
        self.dirty.extend(self.apps.keys().cloned());
        self.dirty.extend(self.by_app.keys().cloned());
        for d in &self.deployments {
            self.dirty.extend(deployment_apps(d).cloned());
        }
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    pub fn framework_id(&self) -> Option<&FrameworkId> {
        self.framework_id.as_ref()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn app(&self, id: &PathId) -> Option<&AppState> {
        self.apps.get(id)
    }

    pub fn apps(&self) -> impl Iterator<Item = &AppState> {
        self.apps.values()
    }

    pub fn tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.values()
    }

    pub fn task(&self, id: &str) -> Option<&TaskRecord> {
        self.tasks.get(id)
    }

    /// The tasks of one app, in task id order.
    pub fn tasks_of<'a>(&'a self, app: &PathId) -> impl Iterator<Item = &'a TaskRecord> + 'a {
        self.by_app
            .get(app)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    pub fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }

    pub fn groups(&self) -> &BTreeMap<PathId, GroupMeta> {
        &self.groups
    }

    fn put_app_store(&mut self, id: &PathId) {
        if let Some(a) = self.apps.get(id) {
            self.store_ops
                .push(StoreOp::Put(keys::app(id), to_bytes(&a.def)));
        }
    }

    fn put_task_store(&mut self, id: &str) {
        if let Some(t) = self.tasks.get(id) {
            self.store_ops
                .push(StoreOp::Put(keys::task(id), to_bytes(t)));
        }
    }

    fn next_version(&mut self, now: Timestamp) -> Timestamp {
        let v = if now > self.last_version {
            now
        } else {
            self.last_version.plus_millis(1)
        };
        self.last_version = v;
        v
    }

    /// Periodic work: re-evaluate, re-send kills, reconcile now and then.
    pub fn tick(&mut self, now: Timestamp) {
        let retry: Vec<(TaskId, AgentId)> = self
            .tasks
            .values()
            .filter(|t| {
                t.kill_requested
                    .is_some_and(|k| now.millis() - k.millis() >= self.cfg.kill_retry_ms)
            })
            .map(|t| (t.id.clone(), t.agent_id.clone()))
            .collect();
        for (id, agent) in retry {
            if let Some(t) = self.tasks.get_mut(&id) {
                t.kill_requested = Some(now);
            }
            self.push_call(calls::kill(&id, Some(&agent)));
        }
        let stuck: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| {
                matches!(t.state, TaskState::Staging | TaskState::Starting)
                    && t.kill_requested.is_none()
                    && now.millis() - t.staged_at.millis() >= self.cfg.task_launch_timeout_ms
            })
            .map(|t| t.id.clone())
            .collect();
        for id in stuck {
            warn!(task_id = %id, "Task did not start within the launch timeout; replacing it");
            self.kill_task(id.as_str(), now);
        }
        // A task the master could not vouch for (its agent had not re-registered yet, after a
        // master restart or a partition) is asked about again every few seconds, not only at
        // the next full reconciliation: once the agent is back the master answers RUNNING.
        if self.connected
            && now.millis() - self.last_uncertain_reconcile.millis() >= UNCERTAIN_RECONCILE_MS
        {
            let uncertain: Vec<(TaskId, AgentId)> = self
                .tasks
                .values()
                .filter(|t| {
                    matches!(
                        t.state,
                        TaskState::Unknown | TaskState::Unreachable | TaskState::Lost
                    ) && t.kill_requested.is_none()
                })
                .map(|t| (t.id.clone(), t.agent_id.clone()))
                .collect();
            if !uncertain.is_empty() {
                self.last_uncertain_reconcile = now;
                self.push_call(calls::reconcile(&uncertain));
            }
        }
        if self.connected
            && now.millis() - self.last_reconcile.millis() >= self.cfg.reconciliation_interval_ms
        {
            self.last_reconcile = now;
            self.push_call(calls::reconcile(&[]));
        }
        self.evaluate(now);
    }
}
