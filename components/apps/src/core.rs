//! The state machine that owns everything: apps and their versions, groups, deployments, task
//! records and the launch queue. It is synchronous and is driven by one task: API requests,
//! Mesos events and timer ticks are method calls with the current time; what it wants done
//! outside (scheduler calls, store writes) accumulates in outboxes the server drains, and
//! events go straight to the [`EventBus`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::events::EventBus;
use crate::health::{self, CheckJob, HealthOutcome};
use crate::mesos::{self, OutCall, calls};
use crate::model::task::is_terminal_state;
use crate::model::{
    AppDefinition, HealthResult, NetMode, PathId, TaskRecord, Timestamp, UnreachableStrategy,
    Violation,
};
use crate::placement::{self, Constraint, Needs, Placed, Reason};
use crate::planner::{self, Action, AppSpec, KillCandidate, Rolling, Step};
use crate::readiness::{self, ProbeOutcome, ReadinessJob, ReadinessResult};
use crate::store::StoreOp;

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

/// `{deploymentId, version}` of a mutation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentResult {
    pub deployment_id: String,
    pub version: Timestamp,
}

/// A running deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub version: Timestamp,
    pub affected: Vec<PathId>,
    pub steps: Vec<Step>,
    /// Index of the step in progress.
    pub current_step: usize,
    /// Definitions of the affected apps before the deployment (absent = did not exist).
    pub original: BTreeMap<PathId, AppDefinition>,
}

/// An explicit group: its dependencies and version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMeta {
    pub dependencies: Vec<String>,
    pub version: Timestamp,
}

/// How many declined offers (the last one of each agent) an app keeps for `/v2/queue`.
pub const LAST_UNUSED_OFFERS: usize = 32;

/// The last offer an app saw from one agent and why it was not used. The offer is kept as
/// its compact JSON text, shared by every app that declined it.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferRecord {
    pub reasons: Vec<Reason>,
    pub at: Timestamp,
    pub offer: Arc<str>,
}

/// Launch bookkeeping of one app (backoff, offer statistics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchStats {
    pub failures: u32,
    pub delay_until: Option<Timestamp>,
    pub since: Option<Timestamp>,
    pub queued: u32,
    pub last_failure: Option<Value>,
    /// The last declined offer per agent, at most [`LAST_UNUSED_OFFERS`] agents.
    pub offers: BTreeMap<String, OfferRecord>,
    pub processed: u64,
    pub unused: u64,
    pub last_used_at: Option<Timestamp>,
    pub last_unused_at: Option<Timestamp>,
}

/// One app: current definition, all versions, launch state.
#[derive(Debug, Clone, PartialEq)]
pub struct AppState {
    pub def: AppDefinition,
    pub versions: BTreeMap<Timestamp, AppDefinition>,
    pub launch: LaunchStats,
}

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
        }
    }
}

/// How an app is driven right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Steady,
    Frozen,
    Restart,
}

/// What a kill request returns.
#[derive(Debug, Clone, PartialEq)]
pub enum KillOutcome {
    Tasks(Vec<Value>),
    Deployment(DeploymentResult),
}

/// Everything loaded from the store at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub apps: Vec<AppDefinition>,
    pub versions: Vec<AppDefinition>,
    pub groups: Vec<(PathId, GroupMeta)>,
    pub tasks: Vec<TaskRecord>,
    pub deployments: Vec<Deployment>,
    pub framework_id: Option<String>,
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
    tasks: BTreeMap<String, TaskRecord>,
    /// Task ids by app: kept in sync with `tasks` by `insert_task` / `remove_task` only.
    by_app: BTreeMap<PathId, BTreeSet<String>>,
    /// Tasks with `unreachable_since` set (their counting depends on the time).
    unreachable: BTreeSet<String>,
    /// Apps whose tasks, definition or deployments changed since they were last evaluated.
    dirty: BTreeSet<PathId>,
    /// v2 Task JSON text by task id, dropped whenever the task changes (filled by lists).
    task_text: HashMap<String, Box<str>>,
    /// App definition JSON text, dropped whenever the definition changes.
    def_text: HashMap<PathId, Box<str>>,
    deployments: Vec<Deployment>,
    /// Ids of the deployments naming each app (see `deployment_apps`).
    deploying: HashMap<PathId, BTreeSet<String>>,
    framework_id: Option<String>,
    connected: bool,
    agents: BTreeMap<String, Placed>,
    last_version: Timestamp,
    last_reconcile: Timestamp,
    wanted_offers: bool,
    health_next: BTreeMap<(String, usize), Timestamp>,
    readiness_next: BTreeMap<(String, usize), Timestamp>,
    events: EventBus,
    /// Scheduler calls to send (without framework id), as compact text at once: an ACCEPT's
    /// task infos take several times their text size as values, and one offers batch can
    /// launch thousands of tasks.
    pub calls: Vec<OutCall>,
    /// Store writes, in order.
    pub store_ops: Vec<StoreOp>,
}

fn to_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Core {
    /// Queues a scheduler call.
    fn push_call(&mut self, call: Value) {
        self.calls.push(OutCall::new(&call));
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
            wanted_offers: false,
            health_next: BTreeMap::new(),
            readiness_next: BTreeMap::new(),
            events,
            calls: Vec::new(),
            store_ops: Vec::new(),
        };
        for t in snapshot.tasks {
            core.insert_task(t);
        }
        for d in snapshot.deployments {
            core.add_deployment(d);
        }
        core
    }

    fn add_deployment(&mut self, d: Deployment) {
        for a in deployment_apps(&d) {
            self.dirty.insert(a.clone());
            self.deploying
                .entry(a.clone())
                .or_default()
                .insert(d.id.clone());
        }
        self.deployments.push(d);
    }

    fn remove_deployment_at(&mut self, i: usize) -> Deployment {
        let d = self.deployments.remove(i);
        for a in deployment_apps(&d) {
            self.dirty.insert(a.clone());
            if let Some(ids) = self.deploying.get_mut(a) {
                ids.remove(&d.id);
                if ids.is_empty() {
                    self.deploying.remove(a);
                }
            }
        }
        d
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

    pub fn framework_id(&self) -> Option<&str> {
        self.framework_id.as_deref()
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

    // ---------------------------------------------------------------- deployments

    /// Apps a dependency path names: the app itself, or every app under a group.
    fn expand(&self, dep: &PathId, apps: &BTreeMap<PathId, AppSpec>) -> Vec<PathId> {
        if apps.contains_key(dep) {
            return vec![dep.clone()];
        }
        apps.keys().filter(|a| a.is_under(dep)).cloned().collect()
    }

    fn specs(&self, defs: &BTreeMap<PathId, &AppDefinition>) -> BTreeMap<PathId, AppSpec> {
        let mut specs: BTreeMap<PathId, AppSpec> = defs
            .iter()
            .map(|(id, d)| {
                (
                    id.clone(),
                    AppSpec {
                        instances: d.instances.max(0) as u32,
                        config_version: d
                            .version_info
                            .as_ref()
                            .map(|v| v.last_config_change_at)
                            .unwrap_or_default(),
                        dependencies: Vec::new(),
                    },
                )
            })
            .collect();
        let snapshot = specs.clone();
        for (id, d) in defs {
            let mut deps: Vec<PathId> = Vec::new();
            let mut raw: Vec<PathId> = d.dependencies.iter().map(|s| PathId::parse(s)).collect();
            for g in id.ancestors() {
                if let Some(meta) = self.groups.get(&g) {
                    raw.extend(meta.dependencies.iter().map(|s| PathId::parse(s)));
                }
            }
            for r in raw {
                if id.is_under(&r) {
                    continue;
                }
                for a in self.expand(&r, &snapshot) {
                    if &a != id && !deps.contains(&a) {
                        deps.push(a);
                    }
                }
            }
            if let Some(s) = specs.get_mut(id) {
                s.dependencies = deps;
            }
        }
        specs
    }

    /// Allocates service ports left at 0, from the configured range, avoiding other apps'.
    fn allocate_service_ports(&self, def: &mut AppDefinition) -> Result<(), ApiError> {
        let mut used: BTreeSet<u32> = self
            .apps
            .values()
            .filter(|a| a.def.id != def.id)
            .flat_map(|a| a.def.port_specs().into_iter().map(|s| s.service_port))
            .collect();
        used.extend(
            def.port_specs()
                .iter()
                .map(|s| s.service_port)
                .filter(|p| *p != 0),
        );
        let (min, max) = (self.cfg.port_min, self.cfg.port_max);
        for slot in def.service_ports_mut() {
            if *slot == 0 {
                let p = (min..=max).find(|p| !used.contains(p)).ok_or_else(|| {
                    ApiError::new(422, format!("no free service port left in {min}-{max}"))
                })?;
                used.insert(p);
                *slot = p;
            }
        }
        Ok(())
    }

    /// Applies a change of apps as one deployment. `changes` maps app ids to their new
    /// definition (normalised and validated, without version) or `None` to remove them;
    /// `restart` apps get a new config version. 409 if an affected app is locked by another
    /// deployment, unless `force` (which cancels that deployment).
    pub fn deploy(
        &mut self,
        changes: BTreeMap<PathId, Option<AppDefinition>>,
        restart: BTreeSet<PathId>,
        force: bool,
        now: Timestamp,
    ) -> Result<DeploymentResult, ApiError> {
        let affected: BTreeSet<PathId> = changes.keys().chain(restart.iter()).cloned().collect();
        let conflicts: Vec<String> = self
            .deployments
            .iter()
            .filter(|d| d.affected.iter().any(|a| affected.contains(a)))
            .map(|d| d.id.clone())
            .collect();
        if !conflicts.is_empty() && !force {
            return Err(ApiError {
                status: 409,
                body: json!({
                    "message": format!("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{}'.", conflicts[0]),
                    "deployments": conflicts.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                }),
            });
        }
        let version = self.next_version(now);
        let mut prepared: BTreeMap<PathId, Option<AppDefinition>> = BTreeMap::new();
        for (id, change) in changes {
            match change {
                None => {
                    prepared.insert(id, None);
                }
                Some(mut def) => {
                    self.allocate_service_ports(&mut def)?;
                    if def.version.is_none() || def.version_info.is_none() {
                        let prev = self.apps.get(&id).map(|a| &a.def);
                        let same_config = prev.is_some_and(|p| p.config_key() == def.config_key());
                        let last_config = match prev.and_then(|p| p.version_info.as_ref()) {
                            Some(vi) if same_config => vi.last_config_change_at,
                            _ => version,
                        };
                        def.version = Some(version);
                        def.version_info = Some(crate::model::app::VersionInfo {
                            last_scaling_at: version,
                            last_config_change_at: last_config,
                        });
                    }
                    prepared.insert(id, Some(def));
                }
            }
        }
        for id in &restart {
            if prepared.contains_key(id) {
                if let Some(Some(def)) = prepared.get_mut(id)
                    && let Some(vi) = &mut def.version_info
                {
                    vi.last_config_change_at = version;
                }
                continue;
            }
            let Some(app) = self.apps.get(id) else {
                return Err(ApiError::not_found(format!("App '{id}' does not exist")));
            };
            let mut def = app.def.clone();
            def.version = Some(version);
            def.version_info = Some(crate::model::app::VersionInfo {
                last_scaling_at: version,
                last_config_change_at: version,
            });
            prepared.insert(id.clone(), Some(def));
        }
        // Cancel conflicting deployments (force).
        for cid in &conflicts {
            self.forget_deployment(cid);
            self.store_ops.push(StoreOp::Delete(keys::deployment(cid)));
            self.events.publish("deployment_failed", json!({"id": cid}));
        }
        // Without dependencies every app is on level 0 and unchanged apps get no action, so
        // planning over the affected apps alone gives the same steps as over all of them.
        let no_dependencies = self.groups.values().all(|g| g.dependencies.is_empty())
            && self.apps.values().all(|a| a.def.dependencies.is_empty())
            && prepared
                .values()
                .flatten()
                .all(|d| d.dependencies.is_empty());
        let current: BTreeMap<PathId, &AppDefinition> = if no_dependencies {
            affected
                .iter()
                .filter_map(|id| self.apps.get(id).map(|a| (id.clone(), &a.def)))
                .collect()
        } else {
            self.apps.iter().map(|(k, v)| (k.clone(), &v.def)).collect()
        };
        let mut target = current.clone();
        for (id, change) in &prepared {
            match change {
                Some(def) => {
                    target.insert(id.clone(), def);
                }
                None => {
                    target.remove(id);
                }
            }
        }
        let original_specs = self.specs(&current);
        let target_specs = self.specs(&target);
        let steps = planner::plan(&original_specs, &target_specs);
        let deployment = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            version,
            affected: affected.iter().cloned().collect(),
            steps,
            current_step: 0,
            original: affected
                .iter()
                .filter_map(|a| current.get(a).map(|d| (a.clone(), (*d).clone())))
                .collect(),
        };
        drop(current);
        // Apply the target.
        for (id, change) in prepared {
            self.dirty.insert(id.clone());
            self.def_text.remove(&id);
            match change {
                Some(def) => {
                    let v = def.version.unwrap_or(version);
                    let config_changed = self
                        .apps
                        .get(&id)
                        .is_none_or(|a| a.def.config_key() != def.config_key());
                    let state = self.apps.entry(id.clone()).or_insert_with(|| AppState {
                        def: def.clone(),
                        versions: BTreeMap::new(),
                        launch: LaunchStats::default(),
                    });
                    state.def = def.clone();
                    state.versions.insert(v, def.clone());
                    if config_changed {
                        state.launch.failures = 0;
                        state.launch.delay_until = None;
                    }
                    self.store_ops
                        .push(StoreOp::Put(keys::version(&id, v), to_bytes(&def)));
                    self.put_app_store(&id);
                }
                None => {
                    if let Some(state) = self.apps.remove(&id) {
                        for v in state.versions.keys() {
                            self.store_ops.push(StoreOp::Delete(keys::version(&id, *v)));
                        }
                    }
                    self.store_ops.push(StoreOp::Delete(keys::app(&id)));
                }
            }
        }
        self.store_ops.push(StoreOp::Put(
            keys::deployment(&deployment.id),
            to_bytes(&deployment),
        ));
        info!(deployment = %deployment.id, steps = deployment.steps.len(), apps = ?deployment.affected.iter().map(ToString::to_string).collect::<Vec<_>>(), "Deployment started");
        let result = DeploymentResult {
            deployment_id: deployment.id.clone(),
            version,
        };
        self.events.publish(
            "group_change_success",
            json!({"groupId": "/", "version": version}),
        );
        self.events.publish("deployment_info", json!({"plan": self.plan_json(&deployment), "currentStep": self.step_json(&deployment, 0)}));
        self.add_deployment(deployment);
        self.reevaluate(now);
        if self.queue_total() > 0 {
            self.push_call(calls::revive());
            self.wanted_offers = true;
        }
        Ok(result)
    }

    /// Rolls a deployment back (a new deployment to the original definitions), or with
    /// `force` just forgets it, leaving everything as it is.
    pub fn cancel_deployment(
        &mut self,
        id: &str,
        force: bool,
        now: Timestamp,
    ) -> Result<Option<DeploymentResult>, ApiError> {
        let Some(d) = self.deployments.iter().find(|d| d.id == id).cloned() else {
            return Err(ApiError::not_found(format!(
                "DeploymentPlan {id} does not exist"
            )));
        };
        if force {
            self.forget_deployment(id);
            self.store_ops.push(StoreOp::Delete(keys::deployment(id)));
            self.events.publish(
                "deployment_failed",
                json!({"id": id, "plan": self.plan_json(&d)}),
            );
            return Ok(None);
        }
        let changes: BTreeMap<PathId, Option<AppDefinition>> = d
            .affected
            .iter()
            .map(|a| (a.clone(), d.original.get(a).cloned()))
            .collect();
        self.deploy(changes, BTreeSet::new(), true, now).map(Some)
    }

    /// Drops a deployment without finishing it; its apps are re-evaluated (their mode changes).
    fn forget_deployment(&mut self, id: &str) {
        if let Some(i) = self.deployments.iter().position(|d| d.id == id) {
            self.remove_deployment_at(i);
        }
    }

    fn is_counted(&self, t: &TaskRecord, now: Timestamp) -> bool {
        if !t.is_active() {
            return false;
        }
        if let Some(since) = t.unreachable_since {
            let strategy = self.apps.get(&t.app_id).map(|a| a.def.unreachable_strategy);
            if let Some(UnreachableStrategy::Enabled {
                inactive_after_seconds,
                ..
            }) = strategy
            {
                return now.millis() - since.millis() < inactive_after_seconds as i64 * 1000;
            }
        }
        true
    }

    /// Running, healthy (if the app has health checks) and ready (if it has readiness
    /// checks): what a deployment step waits for.
    fn is_ready(&self, t: &TaskRecord) -> bool {
        let Some(app) = self.apps.get(&t.app_id) else {
            return false;
        };
        let has_checks = !app.def.health_checks.is_empty();
        t.is_running()
            && t.unreachable_since.is_none()
            && (!has_checks || t.healthy(true) == Some(true))
            && readiness::task_ready(&app.def.readiness_checks, &t.readiness)
    }

    fn counted_of(&self, app: &PathId, now: Timestamp) -> Vec<&TaskRecord> {
        self.tasks_of(app)
            .filter(|t| self.is_counted(t, now))
            .collect()
    }

    fn being_killed(&self, app: &PathId) -> bool {
        self.tasks_of(app)
            .any(|t| !t.is_terminal() && t.kill_requested.is_some())
    }

    fn action_done(&self, action: &Action, now: Timestamp) -> bool {
        match action {
            Action::StartApplication(_) => true,
            Action::StopApplication(id) => !self.by_app.contains_key(id),
            Action::ScaleApplication(id) => {
                let Some(app) = self.apps.get(id) else {
                    return true;
                };
                let counted = self.counted_of(id, now);
                counted.len() as i64 == app.def.instances
                    && counted.iter().all(|t| self.is_ready(t))
                    && !self.being_killed(id)
            }
            Action::RestartApplication(id) => {
                let Some(app) = self.apps.get(id) else {
                    return true;
                };
                let cfg = app
                    .def
                    .version_info
                    .as_ref()
                    .map(|v| v.last_config_change_at)
                    .unwrap_or_default();
                let counted = self.counted_of(id, now);
                counted.len() as i64 == app.def.instances
                    && counted
                        .iter()
                        .all(|t| t.config_version == cfg && self.is_ready(t))
                    && !self.being_killed(id)
            }
        }
    }

    /// Brings everything one step closer to the goal: advances deployments, computes launch
    /// queues, kills surplus, old, orphaned and expired tasks. Looks at every app.
    pub fn evaluate(&mut self, now: Timestamp) {
        self.mark_all_dirty();
        self.reevaluate(now);
    }

    /// [`Core::evaluate`] for the apps that changed since they were last evaluated (and
    /// those with unreachable tasks, whose state depends on the time): the rest would come
    /// out the same, so one event costs what its apps cost, not what all apps cost.
    fn reevaluate(&mut self, now: Timestamp) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in &self.unreachable {
            if let Some(t) = self.tasks.get(id) {
                dirty.insert(t.app_id.clone());
            }
        }
        // Unreachable tasks past expungeAfterSeconds are forgotten (and killed, in case).
        let expired: Vec<String> = self
            .unreachable
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .filter(|t| {
                let Some(since) = t.unreachable_since else {
                    return false;
                };
                match self.apps.get(&t.app_id).map(|a| a.def.unreachable_strategy) {
                    Some(UnreachableStrategy::Enabled {
                        expunge_after_seconds,
                        ..
                    }) => now.millis() - since.millis() >= expunge_after_seconds as i64 * 1000,
                    _ => false,
                }
            })
            .map(|t| t.id.clone())
            .collect();
        for id in expired {
            if let Some(t) = self.remove_task(&id) {
                info!(task_id = %id, app = %t.app_id, "Expunging unreachable task");
                self.push_call(calls::kill(&id, Some(&t.agent_id)));
                self.store_ops.push(StoreOp::Delete(keys::task(&id)));
            }
        }
        // Orphans: tasks whose app is gone.
        let orphans: Vec<String> = dirty
            .iter()
            .filter(|a| !self.apps.contains_key(*a))
            .flat_map(|a| self.tasks_of(a))
            .filter(|t| t.kill_requested.is_none() && !t.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        for id in orphans {
            self.kill_task(&id, now);
        }
        // Deployments advance step by step (only those whose current step names a changed
        // app can have advanced).
        let touched: BTreeSet<String> = dirty
            .iter()
            .filter_map(|a| self.deploying.get(a))
            .flatten()
            .cloned()
            .collect();
        let mut finished = Vec::new();
        for i in 0..self.deployments.len() {
            let d = &self.deployments[i];
            let touched = d
                .steps
                .get(d.current_step)
                .is_none_or(|s| s.actions.is_empty())
                || (!touched.is_empty()
                    && touched.contains(&d.id)
                    && d.steps[d.current_step]
                        .actions
                        .iter()
                        .any(|a| dirty.contains(a.app())));
            if !touched {
                continue;
            }
            let mut advanced = false;
            loop {
                let d = &self.deployments[i];
                if d.current_step >= d.steps.len() {
                    finished.push(i);
                    break;
                }
                let done = d.steps[d.current_step]
                    .actions
                    .iter()
                    .all(|a| self.action_done(a, now));
                if !done {
                    break;
                }
                advanced = true;
                let step = self.step_json(d, d.current_step);
                let plan = self.plan_json(d);
                self.events.publish(
                    "deployment_step_success",
                    json!({"plan": plan, "currentStep": step}),
                );
                self.deployments[i].current_step += 1;
                let d = &self.deployments[i];
                self.store_ops
                    .push(StoreOp::Put(keys::deployment(&d.id), to_bytes(d)));
                if d.current_step < d.steps.len() {
                    let step = self.step_json(d, d.current_step);
                    self.events.publish(
                        "deployment_info",
                        json!({"plan": self.plan_json(d), "currentStep": step}),
                    );
                }
            }
            if advanced || finished.last() == Some(&i) {
                dirty.extend(deployment_apps(&self.deployments[i]).cloned());
            }
        }
        for i in finished.into_iter().rev() {
            let d = self.remove_deployment_at(i);
            info!(deployment = %d.id, "Deployment finished");
            self.store_ops
                .push(StoreOp::Delete(keys::deployment(&d.id)));
            self.events.publish(
                "deployment_success",
                json!({"id": d.id, "plan": self.plan_json(&d)}),
            );
        }
        // Modes of the changed apps.
        let mut modes: BTreeMap<&PathId, Mode> = BTreeMap::new();
        let naming_dirty = dirty.iter().filter_map(|a| self.deploying.get(a)).fold(
            BTreeSet::new(),
            |mut ids, more| {
                ids.extend(more.iter().map(String::as_str));
                ids
            },
        );
        for d in self
            .deployments
            .iter()
            .filter(|d| !naming_dirty.is_empty() && naming_dirty.contains(d.id.as_str()))
        {
            for (si, step) in d.steps.iter().enumerate() {
                for a in &step.actions {
                    let Some(app) = dirty.get(a.app()) else {
                        continue;
                    };
                    let mode = match (si.cmp(&d.current_step), a) {
                        (std::cmp::Ordering::Less, _) => Mode::Steady,
                        (std::cmp::Ordering::Equal, Action::RestartApplication(_)) => Mode::Restart,
                        (std::cmp::Ordering::Equal, Action::ScaleApplication(_)) => Mode::Steady,
                        _ => Mode::Frozen,
                    };
                    let entry = modes.entry(app).or_insert(mode);
                    if mode == Mode::Frozen || (*entry == Mode::Steady && mode == Mode::Restart) {
                        *entry = mode;
                    }
                }
            }
        }
        let mut work: Vec<(PathId, u32, Vec<String>)> = Vec::new();
        for id in &dirty {
            let Some(app) = self.apps.get(id) else {
                continue;
            };
            let mode = modes.get(id).copied().unwrap_or(Mode::Steady);
            let def = &app.def;
            let target = def.instances.max(0) as u32;
            let counted = self.counted_of(id, now);
            let mut queued = 0;
            let mut kills: Vec<String> = Vec::new();
            match mode {
                Mode::Frozen => {}
                Mode::Steady => {
                    let n = counted.len() as u32;
                    if n < target {
                        queued = target - n;
                    } else if n > target {
                        kills = planner::select_kills(
                            &self.candidates(&counted),
                            (n - target) as usize,
                            def.kill_selection,
                        );
                    }
                }
                Mode::Restart => {
                    let cfg = def
                        .version_info
                        .as_ref()
                        .map(|v| v.last_config_change_at)
                        .unwrap_or_default();
                    let (new, old): (Vec<&TaskRecord>, Vec<&TaskRecord>) =
                        counted.into_iter().partition(|t| t.config_version == cfg);
                    let s = Rolling {
                        target,
                        old_alive: old.len() as u32,
                        new_launched: new.len() as u32,
                        new_ready: new.iter().filter(|t| self.is_ready(t)).count() as u32,
                    };
                    let d = planner::rolling_step(
                        s,
                        def.upgrade_strategy.minimum_health_capacity,
                        def.upgrade_strategy.maximum_over_capacity,
                    );
                    queued = d.launch;
                    kills = planner::select_kills(
                        &self.candidates(&old),
                        d.kill_old as usize,
                        def.kill_selection,
                    );
                    if new.len() as u32 > target {
                        kills.extend(planner::select_kills(
                            &self.candidates(&new),
                            new.len() - target as usize,
                            def.kill_selection,
                        ));
                    }
                }
            }
            work.push((id.clone(), queued, kills));
        }
        for (id, queued, kills) in work {
            for k in kills {
                self.kill_task(&k, now);
            }
            if let Some(app) = self.apps.get_mut(&id) {
                if queued > 0 && app.launch.since.is_none() {
                    app.launch.since = Some(now);
                }
                if queued == 0 {
                    app.launch.since = None;
                    app.launch.offers.clear();
                }
                app.launch.queued = queued;
            }
        }
        let want = self.queue_total() > 0;
        if want && !self.wanted_offers && self.connected {
            self.push_call(calls::revive());
        }
        self.wanted_offers = want;
    }

    fn candidates(&self, tasks: &[&TaskRecord]) -> Vec<KillCandidate> {
        let has_checks = |t: &TaskRecord| {
            self.apps
                .get(&t.app_id)
                .is_some_and(|a| !a.def.health_checks.is_empty())
        };
        tasks
            .iter()
            .map(|t| KillCandidate {
                id: t.id.clone(),
                staged_at: t.staged_at,
                running: t.is_running(),
                healthy: t.healthy(has_checks(t)),
            })
            .collect()
    }

    fn queue_total(&self) -> u32 {
        self.apps.values().map(|a| a.launch.queued).sum()
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
            let call = calls::kill(id, Some(&t.agent_id));
            self.push_call(call);
            self.put_task_store(id);
        }
    }

    /// Periodic work: re-evaluate, re-send kills, reconcile now and then.
    pub fn tick(&mut self, now: Timestamp) {
        let retry: Vec<(String, String)> = self
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
        let stuck: Vec<String> = self
            .tasks
            .values()
            .filter(|t| {
                matches!(t.state.as_str(), "TASK_STAGING" | "TASK_STARTING")
                    && t.kill_requested.is_none()
                    && now.millis() - t.staged_at.millis() >= self.cfg.task_launch_timeout_ms
            })
            .map(|t| t.id.clone())
            .collect();
        for id in stuck {
            warn!(task_id = %id, "Task did not start within the launch timeout; replacing it");
            self.kill_task(&id, now);
        }
        if self.connected
            && now.millis() - self.last_reconcile.millis() >= self.cfg.reconciliation_interval_ms
        {
            self.last_reconcile = now;
            self.push_call(calls::reconcile(&[]));
        }
        self.evaluate(now);
    }

    // ---------------------------------------------------------------- Mesos events

    /// SUBSCRIBED: remember the framework id and reconcile every known task.
    pub fn subscribed(&mut self, framework_id: &str, now: Timestamp) {
        if self.framework_id.as_deref() != Some(framework_id) {
            info!(framework_id, "Registered with Mesos");
            self.framework_id = Some(framework_id.to_string());
            self.store_ops.push(StoreOp::Put(
                keys::FRAMEWORK_ID.into(),
                framework_id.as_bytes().to_vec(),
            ));
        } else {
            info!(framework_id, "Re-registered with Mesos");
        }
        self.connected = true;
        let known: Vec<(String, String)> = self
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

    fn needs_of(&self, def: &AppDefinition) -> Needs {
        let roles = match &def.accepted_resource_roles {
            Some(r) => r.clone(),
            None => {
                let mut r = vec!["*".to_string()];
                if self.cfg.role != "*" {
                    r.push(self.cfg.role.clone());
                }
                if let Some(role) = &def.role
                    && !r.contains(role)
                {
                    r.push(role.clone());
                }
                r
            }
        };
        Needs {
            cpus: def.cpus,
            mem: def.mem,
            disk: def.disk,
            gpus: f64::from(def.gpus),
            host_ports: def.port_specs().iter().map(|s| s.host_port).collect(),
            roles,
            constraints: def
                .constraints
                .iter()
                .filter_map(|c| Constraint::parse(c))
                .collect(),
        }
    }

    fn placed_of(&self, app: &PathId, now: Timestamp) -> Vec<Placed> {
        self.counted_of(app, now)
            .into_iter()
            .map(|t| {
                self.agents
                    .get(&t.agent_id)
                    .cloned()
                    .unwrap_or_else(|| Placed {
                        hostname: t.host.clone(),
                        attributes: BTreeMap::new(),
                    })
            })
            .collect()
    }

    /// The task record of a task about to be launched.
    fn new_task(
        app_id: &PathId,
        def: &AppDefinition,
        task_id: String,
        view: &placement::OfferView,
        ports: Vec<u32>,
        now: Timestamp,
    ) -> TaskRecord {
        TaskRecord {
            id: task_id,
            app_id: app_id.clone(),
            agent_id: view.agent_id.clone(),
            host: view.hostname.clone(),
            state: "TASK_STAGING".into(),
            staged_at: now,
            started_at: None,
            version: def.version.unwrap_or_default(),
            config_version: def
                .version_info
                .as_ref()
                .map(|v| v.last_config_change_at)
                .unwrap_or_default(),
            ports,
            service_ports: def.port_specs().iter().map(|s| s.service_port).collect(),
            ip_addresses: Vec::new(),
            mesos_healthy: None,
            health: vec![
                HealthResult::default();
                def.health_checks
                    .iter()
                    .filter(|h| !h.runs_on_agent())
                    .count()
            ],
            readiness: Vec::new(),
            kill_requested: None,
            unreachable_since: None,
            role: def.role.clone().unwrap_or_else(|| "*".into()),
        }
    }

    /// OFFERS: launch queued tasks where they fit, decline the rest.
    pub fn offers(&mut self, offers: &[Value], now: Timestamp) {
        self.reevaluate(now);
        // What each app needs does not change while the offers are matched.
        let mut needs_of: BTreeMap<PathId, Needs> = BTreeMap::new();
        // Offers nothing fits are declined together, in one call.
        let mut declined: Vec<String> = Vec::new();
        for offer in offers {
            let view = mesos::offer_view(offer);
            self.agents.insert(view.agent_id.clone(), Placed::of(&view));
            let mut left = view.clone();
            let mut infos = Vec::new();
            // The offer as `/v2/queue` shows it, rendered once and shared by the apps that
            // decline it.
            let mut shown: Option<Arc<str>> = None;
            let ids: Vec<PathId> = self
                .apps
                .iter()
                .filter(|(_, a)| {
                    a.launch.queued > 0 && a.launch.delay_until.is_none_or(|d| d <= now)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for id in ids {
                let mut launched_tasks = Vec::new();
                let mut last_err = None;
                {
                    let app = &self.apps[&id];
                    let def = &app.def;
                    let needs = needs_of
                        .entry(id.clone())
                        .or_insert_with(|| self.needs_of(def));
                    // Where the app runs only matters to constraints.
                    let with_constraints = !needs.constraints.is_empty();
                    let mut placed = if with_constraints {
                        self.placed_of(&id, now)
                    } else {
                        Vec::new()
                    };
                    let mut queued = app.launch.queued;
                    while queued > 0 {
                        match placement::match_offer(&left, needs, &placed) {
                            Ok(consumed) => {
                                let task_id = mesos::new_task_id(&id);
                                let ports = mesos::task_ports(def, &consumed);
                                infos.push(mesos::task_info(
                                    def, &task_id, offer, &consumed, &ports,
                                ));
                                info!(task_id = %task_id, app = %id, agent = %view.hostname, "Launching task");
                                launched_tasks.push(Self::new_task(
                                    &id,
                                    def,
                                    task_id,
                                    &view,
                                    ports.host_ports,
                                    now,
                                ));
                                placement::subtract(&mut left, &consumed);
                                if with_constraints {
                                    placed.push(Placed::of(&left));
                                }
                                queued -= 1;
                            }
                            Err(reasons) => {
                                last_err = Some(reasons);
                                break;
                            }
                        }
                    }
                }
                let launched = launched_tasks.len() as u32;
                for record in launched_tasks {
                    let task_id = record.id.clone();
                    self.insert_task(record);
                    self.put_task_store(&task_id);
                }
                let app = self.apps.get_mut(&id).expect("app exists");
                app.launch.queued -= launched;
                app.launch.processed += 1;
                if launched > 0 {
                    app.launch.last_used_at = Some(now);
                    app.launch.offers.remove(&view.agent_id);
                } else if let Some(reasons) = last_err {
                    app.launch.unused += 1;
                    app.launch.last_unused_at = Some(now);
                    debug!(app = %id, agent = %view.hostname, reasons = ?reasons, "Offer does not fit");
                    let offer = shown
                        .get_or_insert_with(|| {
                            json!({
                                "id": view.id, "agentId": view.agent_id, "hostname": view.hostname,
                                "resources": offer["resources"], "attributes": offer["attributes"],
                            })
                            .to_string()
                            .into()
                        })
                        .clone();
                    let offers = &mut app.launch.offers;
                    offers.insert(
                        view.agent_id.clone(),
                        OfferRecord {
                            reasons,
                            at: now,
                            offer,
                        },
                    );
                    if offers.len() > LAST_UNUSED_OFFERS
                        && let Some(oldest) = offers
                            .iter()
                            .filter(|(agent, _)| **agent != view.agent_id)
                            .min_by_key(|(_, o)| o.at)
                            .map(|(agent, _)| agent.clone())
                    {
                        offers.remove(&oldest);
                    }
                }
            }
            if infos.is_empty() {
                declined.push(view.id.clone());
            } else {
                self.push_call(calls::accept(
                    std::slice::from_ref(&view.id),
                    infos,
                    self.cfg.refuse_seconds,
                ));
            }
        }
        if !declined.is_empty() {
            self.push_call(calls::decline(&declined, self.cfg.refuse_seconds));
        }
        self.reevaluate(now);
    }

    /// Several UPDATEs in a row, each applied as [`Core::update`] would.
    pub fn updates(&mut self, statuses: &[Value], now: Timestamp) {
        for status in statuses {
            self.update(status, now);
        }
    }

    /// UPDATE: a task status. Acknowledged when it carries a uuid.
    pub fn update(&mut self, status: &Value, now: Timestamp) {
        let task_id = status["task_id"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let state = status["state"]
            .as_str()
            .unwrap_or("TASK_UNKNOWN")
            .to_string();
        let agent_id = status["agent_id"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(uuid) = status["uuid"].as_str()
            && !agent_id.is_empty()
        {
            self.push_call(calls::acknowledge(&agent_id, &task_id, uuid));
        }
        self.task_text.remove(&task_id);
        let Some(t) = self.tasks.get_mut(&task_id) else {
            if !is_terminal_state(&state) {
                warn!(task_id = %task_id, state = %state, "Killing unknown task");
                self.push_call(calls::kill(&task_id, Some(&agent_id)));
                self.events.publish(
                    "unknown_instance_terminated_event",
                    json!({"instanceId": task_id, "runSpecId": "", "condition": state}),
                );
            }
            return;
        };
        let prev = std::mem::replace(&mut t.state, state.clone());
        if !agent_id.is_empty() {
            t.agent_id = agent_id.clone();
        }
        if state == "TASK_RUNNING" && t.started_at.is_none() {
            t.started_at = Some(mesos::status_time(status, now));
        }
        let ips = mesos::status_ips(status);
        if !ips.is_empty() {
            t.ip_addresses = ips;
        }
        let mut health_changed = None;
        if let Some(h) = status["healthy"].as_bool()
            && t.mesos_healthy != Some(h)
        {
            t.mesos_healthy = Some(h);
            health_changed = Some(h);
        }
        if state == "TASK_UNREACHABLE" {
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
        let message = status["message"].as_str().unwrap_or_default();
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
                "instanceId": instance_id(&t.id), "condition": condition(&state), "runSpecId": t.app_id,
                "agentId": t.agent_id, "host": t.host, "runSpecVersion": t.version,
            }),
        );
        if let Some(h) = health_changed {
            self.events.publish("instance_health_changed_event", json!({"instanceId": instance_id(&t.id), "runSpecId": t.app_id, "runSpecVersion": t.version, "healthy": h}));
            self.events.publish("health_status_changed_event", json!({"appId": t.app_id, "taskId": t.id, "instanceId": instance_id(&t.id), "version": t.version, "alive": h}));
        }
        if is_terminal_state(&state) {
            self.remove_task(&task_id);
            self.store_ops.push(StoreOp::Delete(keys::task(&task_id)));
            self.health_next.retain(|(id, _), _| id != &task_id);
            self.readiness_next.retain(|(id, _), _| id != &task_id);
            let failed = t.kill_requested.is_none() && state != "TASK_KILLED";
            if let Some(app) = self.apps.get_mut(&t.app_id)
                && failed
            {
                app.launch.failures += 1;
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
            self.put_task_store(&task_id);
        }
        self.reevaluate(now);
    }

    // ---------------------------------------------------------------- health

    /// App-run checks due now (the caller probes and reports through [`Core::health_result`]).
    pub fn due_health_checks(&mut self, now: Timestamp) -> Vec<CheckJob> {
        let mut jobs = Vec::new();
        for t in self.tasks.values() {
            if !t.is_running() || t.kill_requested.is_some() {
                continue;
            }
            let Some(app) = self.apps.get(&t.app_id) else {
                continue;
            };
            let specs = app.def.port_specs();
            let checks = app.def.health_checks.iter().filter(|h| !h.runs_on_agent());
            for (i, hc) in checks.enumerate() {
                let key = (t.id.clone(), i);
                if self.health_next.get(&key).is_some_and(|next| *next > now) {
                    continue;
                }
                let port = hc.port.or_else(|| {
                    let pi = hc.port_index? as usize;
                    let hi = specs
                        .get(pi)?
                        .host_port
                        .map(|_| specs[..pi].iter().filter(|s| s.host_port.is_some()).count())?;
                    t.ports.get(hi).copied()
                });
                let host = match (app.def.net_mode(), t.ip_addresses.first()) {
                    (NetMode::Container, Some(ip)) => ip.clone(),
                    _ => t.host.clone(),
                };
                let Some(port) = port else { continue };
                jobs.push(CheckJob {
                    task_id: t.id.clone(),
                    index: i,
                    protocol: hc.protocol.clone(),
                    host,
                    port,
                    path: hc.path.clone().unwrap_or_else(|| "/".into()),
                    timeout: std::time::Duration::from_secs(hc.timeout_seconds.max(1)),
                    ignore_http1xx: hc.ignore_http1xx,
                });
            }
        }
        for j in &jobs {
            let interval = self.apps.get(&self.tasks[&j.task_id].app_id).map(|a| {
                a.def
                    .health_checks
                    .iter()
                    .filter(|h| !h.runs_on_agent())
                    .nth(j.index)
                    .map(|h| h.interval_seconds)
                    .unwrap_or(60)
            });
            // In flight until the result arrives; the result schedules the next probe.
            let wait = interval.unwrap_or(60) as i64 * 1000 + j.timeout.as_millis() as i64;
            self.health_next
                .insert((j.task_id.clone(), j.index), now.plus_millis(wait));
        }
        jobs
    }

    /// The result of one probe.
    pub fn health_result(
        &mut self,
        task_id: &str,
        index: usize,
        result: Result<(), String>,
        now: Timestamp,
    ) {
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        let Some(app) = self.apps.get(&t.app_id) else {
            return;
        };
        let Some(check) = app
            .def
            .health_checks
            .iter()
            .filter(|h| !h.runs_on_agent())
            .nth(index)
            .cloned()
        else {
            return;
        };
        self.health_next.insert(
            (task_id.to_string(), index),
            now.plus_millis(check.interval_seconds as i64 * 1000),
        );
        self.task_text.remove(task_id);
        let t = self.tasks.get_mut(task_id).expect("checked above");
        if t.health.len() <= index {
            t.health.resize(index + 1, HealthResult::default());
        }
        let ok = result.is_ok();
        let outcome = health::record(
            &mut t.health[index],
            &check,
            ok,
            result.err(),
            now,
            t.started_at,
        );
        let t = t.clone();
        let hc_json = serde_json::to_value(&check).unwrap_or_default();
        match outcome {
            HealthOutcome::Unchanged => {}
            HealthOutcome::BecameHealthy => {
                self.events.publish("health_status_changed_event", json!({"appId": t.app_id, "taskId": t.id, "instanceId": instance_id(&t.id), "version": t.version, "alive": true}));
                self.events.publish("instance_health_changed_event", json!({"instanceId": instance_id(&t.id), "runSpecId": t.app_id, "runSpecVersion": t.version, "healthy": true}));
            }
            HealthOutcome::Failed | HealthOutcome::Kill => {
                self.events.publish("failed_health_check_event", json!({"appId": t.app_id, "taskId": t.id, "instanceId": instance_id(&t.id), "healthCheck": hc_json}));
                if t.health[index].consecutive_failures == 1 {
                    self.events.publish("health_status_changed_event", json!({"appId": t.app_id, "taskId": t.id, "instanceId": instance_id(&t.id), "version": t.version, "alive": false}));
                }
                if outcome == HealthOutcome::Kill {
                    warn!(task_id = %t.id, app = %t.app_id, "Killing unhealthy task");
                    self.events.publish("unhealthy_task_kill_event", json!({
                        "appId": t.app_id, "taskId": t.id, "instanceId": instance_id(&t.id), "version": t.version,
                        "reason": t.health[index].last_failure_cause, "host": t.host, "slaveId": t.agent_id,
                    }));
                    self.kill_task(&t.id, now);
                }
            }
        }
        self.dirty.insert(t.app_id.clone());
        self.put_task_store(task_id);
        self.reevaluate(now);
    }

    // ---------------------------------------------------------------- readiness

    /// Readiness probes due now: running tasks of apps in a deployment, for each check that
    /// has not answered ready yet (the caller probes and reports through
    /// [`Core::readiness_result`]).
    pub fn due_readiness_checks(&mut self, now: Timestamp) -> Vec<ReadinessJob> {
        let deploying: BTreeSet<&PathId> =
            self.deployments.iter().flat_map(|d| &d.affected).collect();
        let mut jobs = Vec::new();
        for t in self.tasks.values() {
            if !t.is_running() || t.kill_requested.is_some() || !deploying.contains(&t.app_id) {
                continue;
            }
            let Some(app) = self.apps.get(&t.app_id) else {
                continue;
            };
            let specs = app.def.port_specs();
            for (i, rc) in app.def.readiness_checks.iter().enumerate() {
                if !readiness::needs_probe(&t.readiness, i)
                    || self
                        .readiness_next
                        .get(&(t.id.clone(), i))
                        .is_some_and(|next| *next > now)
                {
                    continue;
                }
                let Some((host, port)) = readiness::target(
                    rc,
                    &specs,
                    app.def.net_mode(),
                    &t.host,
                    &t.ports,
                    &t.ip_addresses,
                ) else {
                    continue;
                };
                jobs.push(ReadinessJob::new(&t.id, i, rc, host, port));
            }
        }
        for j in &jobs {
            // In flight until the result arrives; the result schedules the next probe.
            let wait = 2 * j.timeout.as_millis() as i64 + 60_000;
            self.readiness_next
                .insert((j.task_id.clone(), j.index), now.plus_millis(wait));
        }
        jobs
    }

    /// The outcome of one readiness probe.
    pub fn readiness_result(
        &mut self,
        task_id: &str,
        index: usize,
        outcome: ProbeOutcome,
        now: Timestamp,
    ) {
        let Some(t) = self.tasks.get(task_id) else {
            return;
        };
        let Some(check) = self
            .apps
            .get(&t.app_id)
            .and_then(|a| a.def.readiness_checks.get(index))
            .cloned()
        else {
            return;
        };
        self.readiness_next.insert(
            (task_id.to_string(), index),
            now.plus_millis(check.interval_seconds as i64 * 1000),
        );
        let result = readiness::record(&check, &outcome);
        self.task_text.remove(task_id);
        let t = self.tasks.get_mut(task_id).expect("checked above");
        if t.readiness.len() <= index {
            t.readiness.resize(index + 1, ReadinessResult::default());
        }
        if t.readiness[index] == result {
            return;
        }
        if result.ready {
            info!(task_id = %task_id, check = %check.name, "Task ready");
        } else {
            debug!(task_id = %task_id, check = %check.name, outcome = ?outcome, "Task not ready yet");
        }
        t.readiness[index] = result;
        let app = t.app_id.clone();
        self.dirty.insert(app);
        self.put_task_store(task_id);
        self.reevaluate(now);
    }

    /// `readinessCheckResults` of an app's tasks launched with `since` or a later version.
    fn readiness_json(&self, app: &PathId, since: Timestamp) -> Vec<Value> {
        self.tasks_of(app)
            .filter(|t| t.version >= since)
            .flat_map(|t| t.readiness.iter().map(|r| readiness::result_json(&t.id, r)))
            .collect()
    }

    // ---------------------------------------------------------------- API helpers

    /// Kills tasks by id. `scale` lowers the apps' instances by the number killed (a
    /// deployment); `wipe` forgets the records at once.
    pub fn kill_tasks(
        &mut self,
        ids: &[String],
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
                self.kill_task(&t.id, now);
            }
            return self
                .deploy(changes, BTreeSet::new(), force, now)
                .map(KillOutcome::Deployment);
        }
        for t in &found {
            self.kill_task(&t.id, now);
            if wipe {
                self.remove_task(&t.id);
                self.store_ops.push(StoreOp::Delete(keys::task(&t.id)));
            }
        }
        self.reevaluate(now);
        Ok(KillOutcome::Tasks(rendered))
    }

    /// `DELETE /v2/queue/{id}/delay`.
    pub fn reset_delay(&mut self, id: &PathId) -> bool {
        match self.apps.get_mut(id) {
            Some(a) => {
                a.launch.delay_until = None;
                a.launch.failures = 0;
                true
            }
            None => false,
        }
    }

    /// Creates or replaces explicit group metadata.
    pub fn set_group(&mut self, id: &PathId, dependencies: Vec<String>, now: Timestamp) {
        let version = self.next_version(now);
        let meta = GroupMeta {
            dependencies,
            version,
        };
        self.store_ops
            .push(StoreOp::Put(keys::group(id), to_bytes(&meta)));
        self.groups.insert(id.clone(), meta);
    }

    pub fn remove_groups_under(&mut self, id: &PathId) {
        let gone: Vec<PathId> = self
            .groups
            .keys()
            .filter(|g| g.is_under(id))
            .cloned()
            .collect();
        for g in gone {
            self.groups.remove(&g);
            self.store_ops.push(StoreOp::Delete(keys::group(&g)));
        }
    }

    pub fn group_exists(&self, id: &PathId) -> bool {
        id.is_root()
            || self.groups.contains_key(id)
            || self.apps.keys().any(|a| a.is_under(id) && a != id)
    }

    // ---------------------------------------------------------------- JSON views

    pub fn task_json(&self, t: &TaskRecord) -> Value {
        serde_json::to_value(TaskJson(t)).unwrap_or_default()
    }

    fn counts(&self, app: &AppState) -> (usize, usize, usize, usize) {
        let has_checks = !app.def.health_checks.is_empty();
        let (mut staged, mut running, mut healthy, mut unhealthy) = (0, 0, 0, 0);
        for t in self.tasks_of(&app.def.id).filter(|t| !t.is_terminal()) {
            if matches!(t.state.as_str(), "TASK_STAGING" | "TASK_STARTING") {
                staged += 1;
            }
            if t.is_running() {
                running += 1;
            }
            match t.healthy(has_checks) {
                Some(true) => healthy += 1,
                Some(false) => unhealthy += 1,
                None => {}
            }
        }
        (staged, running, healthy, unhealthy)
    }

    /// AppInfo: the definition plus counts, deployments and (if asked) tasks.
    pub fn app_json(&self, app: &AppState, embed_tasks: bool) -> Value {
        let deployments: Vec<&str> = self
            .deployments
            .iter()
            .filter(|d| d.affected.contains(&app.def.id))
            .map(|d| d.id.as_str())
            .collect();
        let embed = AppEmbed {
            tasks: embed_tasks,
            last_task_failure: true,
            readiness: true,
        };
        let mut out = Vec::new();
        self.write_app_json(app, embed, &deployments, &mut out);
        serde_json::from_slice(&out).unwrap_or_default()
    }

    /// `{"apps": [...]}` of the apps `filter` keeps, written straight to JSON text (no
    /// intermediate values: the list with every task is the largest answer apps gives).
    pub fn apps_list_json(
        &mut self,
        filter: impl Fn(&AppState) -> bool,
        embed: AppEmbed,
    ) -> Vec<u8> {
        // Render what changed since the last list once; later lists copy the text.
        for app in self.apps.values().filter(|a| filter(a)) {
            if !self.def_text.contains_key(&app.def.id) {
                let text = serde_json::to_string(&app.def).unwrap_or_default();
                self.def_text.insert(app.def.id.clone(), text.into());
            }
            if embed.tasks {
                for id in self.by_app.get(&app.def.id).into_iter().flatten() {
                    if !self.task_text.contains_key(id)
                        && let Some(t) = self.tasks.get(id)
                    {
                        let text = serde_json::to_string(&TaskJson(t)).unwrap_or_default();
                        self.task_text.insert(id.clone(), text.into());
                    }
                }
            }
        }
        let mut by_app: BTreeMap<&PathId, Vec<&str>> = BTreeMap::new();
        for d in &self.deployments {
            for a in &d.affected {
                by_app.entry(a).or_default().push(&d.id);
            }
        }
        let mut out = Vec::with_capacity(64 * 1024);
        out.extend_from_slice(b"{\"apps\":[");
        let mut first = true;
        for app in self.apps.values().filter(|a| filter(a)) {
            if !first {
                out.push(b',');
            }
            first = false;
            let deployments = by_app.get(&app.def.id).map_or(&[][..], Vec::as_slice);
            self.write_app_json(app, embed, deployments, &mut out);
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// One AppInfo object: the definition's fields, then counts, deployments and what
    /// `embed` asks for.
    fn write_app_json(
        &self,
        app: &AppState,
        embed: AppEmbed,
        deployments: &[&str],
        out: &mut Vec<u8>,
    ) {
        let at = out.len();
        let written = match self.def_text.get(&app.def.id) {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                true
            }
            None => serde_json::to_writer(&mut *out, &app.def).is_ok(),
        };
        if !written || out.last() != Some(&b'}') {
            out.truncate(at);
            out.extend_from_slice(b"{}");
        }
        out.pop();
        if out.len() > at + 1 {
            out.push(b',');
        }
        let (staged, running, healthy, unhealthy) = self.counts(app);
        use erased::Json;
        fn field(out: &mut Vec<u8>, name: &str, value: &dyn erased::Json) {
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            value.write(out);
        }
        field(out, "tasksStaged", &staged);
        out.push(b',');
        field(out, "tasksRunning", &running);
        out.push(b',');
        field(out, "tasksHealthy", &healthy);
        out.push(b',');
        field(out, "tasksUnhealthy", &unhealthy);
        out.push(b',');
        let deployments: Vec<DeploymentRef> =
            deployments.iter().map(|id| DeploymentRef { id }).collect();
        field(out, "deployments", &deployments);
        if embed.tasks {
            out.extend_from_slice(b",\"tasks\":[");
            for (i, t) in self.tasks_of(&app.def.id).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match self.task_text.get(&t.id) {
                    Some(text) => out.extend_from_slice(text.as_bytes()),
                    None => TaskJson(t).write(out),
                }
            }
            out.push(b']');
        }
        if embed.last_task_failure
            && let Some(f) = &app.launch.last_failure
        {
            out.push(b',');
            field(out, "lastTaskFailure", f);
        }
        if embed.readiness && !app.def.readiness_checks.is_empty() {
            out.push(b',');
            field(
                out,
                "readinessCheckResults",
                &self.readiness_json(&app.def.id, Timestamp(0)),
            );
        }
        out.push(b'}');
    }

    pub fn plan_json(&self, d: &Deployment) -> Value {
        json!({
            "id": d.id, "version": d.version,
            "original": {"id": "/", "apps": d.original.values().collect::<Vec<_>>(), "groups": [], "dependencies": [], "version": d.version},
            "target": {"id": "/", "apps": d.affected.iter().filter_map(|a| self.apps.get(a).map(|s| &s.def)).collect::<Vec<_>>(), "groups": [], "dependencies": [], "version": d.version},
            "steps": d.steps,
        })
    }

    fn step_json(&self, d: &Deployment, i: usize) -> Value {
        json!({"actions": d.steps.get(i).map(|s| s.actions.clone()).unwrap_or_default()})
    }

    pub fn deployment_json(&self, d: &Deployment) -> Value {
        let current: Vec<Value> = d
            .steps
            .get(d.current_step)
            .map(|s| s.actions.iter().map(|a| json!({"action": a.name(), "app": a.app(), "readinessCheckResults": self.readiness_json(a.app(), d.version)})).collect())
            .unwrap_or_default();
        json!({
            "id": d.id, "version": d.version,
            "affectedApps": d.affected, "affectedPods": [],
            "steps": d.steps, "currentActions": current,
            "currentStep": (d.current_step + 1).min(d.steps.len().max(1)), "totalSteps": d.steps.len(),
        })
    }

    /// `/v2/queue` items: apps waiting for launches, their delay and why offers did not fit.
    pub fn queue_json(&self, embed_offers: bool, now: Timestamp) -> Value {
        let mut items = Vec::new();
        for app in self.apps.values() {
            let delayed = app.launch.delay_until.is_some_and(|d| d > now);
            if app.launch.queued == 0 && !delayed {
                continue;
            }
            let time_left = app
                .launch
                .delay_until
                .map(|d| now.secs_until(d).max(0.0))
                .unwrap_or(0.0);
            let last: Vec<&OfferRecord> = app.launch.offers.values().collect();
            let mut processed = last.len();
            let mut summary = Vec::new();
            for reason in Reason::ALL {
                let declined = last
                    .iter()
                    .filter(|o| o.reasons.first() == Some(&reason))
                    .count();
                summary.push(json!({"reason": reason.as_str(), "declined": declined, "processed": processed}));
                processed -= declined;
            }
            let mut by_reason = Vec::new();
            for reason in Reason::ALL {
                let agents = last.iter().filter(|o| o.reasons.contains(&reason)).count();
                if agents > 0 {
                    by_reason.push(json!({"reason": reason.as_str(), "declined": agents, "processed": last.len()}));
                }
            }
            let mut pos = json!({
                "processedOffersCount": app.launch.processed,
                "unusedOffersCount": app.launch.unused,
                "rejectSummaryLastOffers": summary,
                "rejectSummaryLaunchAttempt": by_reason,
            });
            if let Some(t) = app.launch.last_unused_at {
                pos["lastUnusedOfferAt"] = json!(t);
            }
            if let Some(t) = app.launch.last_used_at {
                pos["lastUsedOfferAt"] = json!(t);
            }
            let mut item = json!({
                "app": serde_json::to_value(&app.def).unwrap_or_default(),
                "count": app.launch.queued,
                "delay": {"timeLeftSeconds": time_left.ceil() as u64, "overdue": !delayed},
                "since": app.launch.since.unwrap_or(now),
                "processedOffersSummary": pos,
            });
            if embed_offers {
                item["lastUnusedOffers"] = json!(last
                    .iter()
                    .map(|o| json!({"offer": serde_json::from_str::<Value>(&o.offer).unwrap_or_default(), "timestamp": o.at, "reason": o.reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>()}))
                    .collect::<Vec<_>>());
            }
            items.push(item);
        }
        json!({ "queue": items })
    }
}

/// What an AppInfo embeds besides the definition, counts and deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppEmbed {
    pub tasks: bool,
    pub last_task_failure: bool,
    pub readiness: bool,
}

#[derive(Serialize)]
struct DeploymentRef<'a> {
    id: &'a str,
}

/// Serializing into a byte buffer through a trait object.
mod erased {
    pub trait Json {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize + ?Sized> Json for T {
        fn write(&self, out: &mut Vec<u8>) {
            if serde_json::to_writer(&mut *out, self).is_err() {
                out.extend_from_slice(b"null");
            }
        }
    }
}

/// The v2 Task JSON of a task record, serialized without building a value first.
struct TaskJson<'a>(&'a TaskRecord);

impl Serialize for TaskJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let t = self.0;
        let mut health: Vec<Value> = t
            .health
            .iter()
            .filter(|h| h.last_success.is_some() || h.last_failure.is_some())
            .map(|h| {
                let mut r = json!({"alive": h.alive, "consecutiveFailures": h.consecutive_failures, "instanceId": instance_id(&t.id), "taskId": t.id});
                for (k, v) in [("firstSuccess", h.first_success), ("lastSuccess", h.last_success), ("lastFailure", h.last_failure)] {
                    if let Some(v) = v {
                        r[k] = json!(v);
                    }
                }
                if let Some(c) = &h.last_failure_cause {
                    r["lastFailureCause"] = json!(c);
                }
                r
            })
            .collect();
        if let Some(h) = t.mesos_healthy
            && health.is_empty()
        {
            health.push(json!({"alive": h, "consecutiveFailures": 0, "instanceId": instance_id(&t.id), "taskId": t.id}));
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &t.id)?;
        m.serialize_entry("appId", &t.app_id)?;
        m.serialize_entry("host", &t.host)?;
        m.serialize_entry("slaveId", &t.agent_id)?;
        m.serialize_entry("state", &t.state)?;
        m.serialize_entry("stagedAt", &t.staged_at)?;
        if let Some(started) = t.started_at {
            m.serialize_entry("startedAt", &started)?;
        }
        m.serialize_entry("version", &t.version)?;
        m.serialize_entry("ports", &t.ports)?;
        m.serialize_entry("servicePorts", &t.service_ports)?;
        m.serialize_entry("ipAddresses", &ip_json(&t.ip_addresses))?;
        m.serialize_entry("localVolumes", &[] as &[Value])?;
        m.serialize_entry("role", &t.role)?;
        m.serialize_entry("healthCheckResults", &health)?;
        m.end()
    }
}

/// Every app a deployment names: affected ones and those of its actions.
fn deployment_apps(d: &Deployment) -> impl Iterator<Item = &PathId> {
    d.affected.iter().chain(
        d.steps
            .iter()
            .flat_map(|s| s.actions.iter().map(Action::app)),
    )
}

fn ip_json(ips: &[String]) -> Value {
    json!(ips
        .iter()
        .map(|ip| json!({"ipAddress": ip, "protocol": if ip.contains(':') { "IPv6" } else { "IPv4" }}))
        .collect::<Vec<_>>())
}

/// `web.instance-<uuid>` for task `web.instance-<uuid>._app.1`.
pub fn instance_id(task_id: &str) -> String {
    task_id.split("._app").next().unwrap_or(task_id).to_string()
}

fn condition(state: &str) -> &'static str {
    match state {
        "TASK_STAGING" => "Staging",
        "TASK_STARTING" => "Starting",
        "TASK_RUNNING" => "Running",
        "TASK_FINISHED" => "Finished",
        "TASK_FAILED" => "Failed",
        "TASK_KILLING" => "Killing",
        "TASK_KILLED" => "Killed",
        "TASK_ERROR" => "Error",
        "TASK_DROPPED" => "Dropped",
        "TASK_UNREACHABLE" => "Unreachable",
        "TASK_GONE" => "Gone",
        "TASK_GONE_BY_OPERATOR" => "GoneByOperator",
        "TASK_LOST" => "Lost",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(n: u32) -> Value {
        json!({
            "id": {"value": format!("O{n}")}, "framework_id": {"value": "F"}, "agent_id": {"value": format!("S{}", n % 2)},
            "hostname": format!("h{}", n % 2),
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 4096.0}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31100}]}}
            ]
        })
    }

    fn app(id: &str, instances: i64, extra: Value) -> AppDefinition {
        let mut v = json!({"id": id, "cmd": "run", "cpus": 0.1, "mem": 16, "instances": instances});
        for (k, x) in extra.as_object().cloned().unwrap_or_default() {
            v[k] = x;
        }
        let mut a: AppDefinition = serde_json::from_value(v).unwrap();
        a.normalize(&PathId::root());
        a
    }

    fn core() -> Core {
        let mut c = Core::new(
            CoreConfig::default(),
            EventBus::default(),
            Snapshot::default(),
        );
        c.subscribed("F", Timestamp(1_000));
        c.calls.clear();
        c
    }

    fn launched(c: &mut Core) -> Vec<String> {
        let ids = c
            .calls
            .iter()
            .map(OutCall::value)
            .filter(|x| x["type"] == "ACCEPT")
            .flat_map(|x| {
                x["accept"]["operations"][0]["launch"]["task_infos"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|t| t["task_id"]["value"].as_str().unwrap().to_string())
            .collect();
        c.calls.clear();
        ids
    }

    fn status(c: &mut Core, id: &str, state: &str, at: i64) {
        c.update(
            &json!({"task_id": {"value": id}, "state": state, "agent_id": {"value": "S0"}}),
            Timestamp(at),
        );
    }

    #[test]
    fn a_failed_task_is_relaunched_only_after_its_backoff_delay() {
        let mut c = core();
        c.deploy(
            BTreeMap::from([(
                PathId::parse("/a"),
                Some(app(
                    "/a",
                    1,
                    json!({"backoffSeconds": 2, "backoffFactor": 2}),
                )),
            )]),
            BTreeSet::new(),
            false,
            Timestamp(2_000),
        )
        .unwrap();
        c.offers(&[offer(1)], Timestamp(2_000));
        let first = launched(&mut c);
        assert_eq!(first.len(), 1);
        status(&mut c, &first[0], "TASK_FAILED", 3_000);
        c.offers(&[offer(2)], Timestamp(4_000));
        assert!(
            c.calls
                .iter()
                .map(OutCall::value)
                .any(|x| x["type"] == "DECLINE")
        );
        assert!(launched(&mut c).is_empty(), "still inside the 2 s delay");
        c.offers(&[offer(3)], Timestamp(5_001));
        let second = launched(&mut c);
        assert_eq!(second.len(), 1);
        status(&mut c, &second[0], "TASK_FAILED", 5_100);
        c.offers(&[offer(4)], Timestamp(8_000));
        assert!(
            launched(&mut c).is_empty(),
            "second failure doubles the delay to 4 s"
        );
        c.offers(&[offer(5)], Timestamp(9_200));
        assert_eq!(launched(&mut c).len(), 1);
    }

    #[test]
    fn scaling_down_kills_the_surplus_and_kills_are_not_counted_as_failures() {
        let mut c = core();
        let id = PathId::parse("/s");
        c.deploy(
            BTreeMap::from([(id.clone(), Some(app("/s", 3, json!({}))))]),
            BTreeSet::new(),
            false,
            Timestamp(2_000),
        )
        .unwrap();
        let mut ids = Vec::new();
        for (i, t) in [2_000, 3_000, 4_000].into_iter().enumerate() {
            c.offers(&[offer(i as u32)], Timestamp(t));
            let l = launched(&mut c);
            ids.extend(l.clone());
            if i == 0 {
                assert_eq!(l.len(), 3, "all three fit the first offer");
            } else {
                assert!(l.is_empty());
            }
        }
        for id in &ids {
            status(&mut c, id, "TASK_RUNNING", 5_000);
        }
        assert!(c.deployments().is_empty());
        let mut def = c.app(&id).unwrap().def.clone();
        def.instances = 1;
        def.version = None;
        def.version_info = None;
        c.calls.clear();
        c.deploy(
            BTreeMap::from([(id.clone(), Some(def))]),
            BTreeSet::new(),
            false,
            Timestamp(6_000),
        )
        .unwrap();
        let kills: Vec<String> = c
            .calls
            .iter()
            .map(OutCall::value)
            .filter(|x| x["type"] == "KILL")
            .map(|x| x["kill"]["task_id"]["value"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kills.len(), 2);
        for k in &kills {
            status(&mut c, k, "TASK_KILLED", 7_000);
        }
        assert!(c.deployments().is_empty(), "scale-down finished");
        assert_eq!(c.tasks().count(), 1);
        assert_eq!(
            c.app(&id).unwrap().launch.failures,
            0,
            "kills we asked for are not failures"
        );
    }

    #[test]
    fn a_restart_never_drops_below_minimum_health_capacity() {
        let mut c = core();
        let id = PathId::parse("/r");
        let strategy =
            json!({"upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}});
        c.deploy(
            BTreeMap::from([(id.clone(), Some(app("/r", 4, strategy)))]),
            BTreeSet::new(),
            false,
            Timestamp(2_000),
        )
        .unwrap();
        c.offers(&[offer(1)], Timestamp(2_000));
        for t in launched(&mut c) {
            status(&mut c, &t, "TASK_RUNNING", 2_100);
        }
        c.deploy(
            BTreeMap::new(),
            BTreeSet::from([id.clone()]),
            false,
            Timestamp(3_000),
        )
        .unwrap();
        let mut now = 3_000;
        for round in 0..20 {
            // Kills complete, offers arrive, new tasks start.
            let kills: Vec<String> = c
                .calls
                .iter()
                .map(OutCall::value)
                .filter(|x| x["type"] == "KILL")
                .map(|x| x["kill"]["task_id"]["value"].as_str().unwrap().to_string())
                .collect();
            c.calls.retain(|x| x.kind != "KILL");
            for k in kills {
                status(&mut c, &k, "TASK_KILLED", now);
            }
            let running = c
                .tasks()
                .filter(|t| t.is_running() && t.kill_requested.is_none())
                .count();
            assert!(
                running >= 2 || round == 0,
                "round {round}: only {running} running"
            );
            assert!(
                c.tasks().filter(|t| !t.is_terminal()).count() <= 4,
                "maximumOverCapacity 0"
            );
            now += 100;
            c.offers(&[offer(round + 10)], Timestamp(now));
            for t in launched(&mut c) {
                status(&mut c, &t, "TASK_RUNNING", now);
            }
            if c.deployments().is_empty() {
                break;
            }
        }
        assert!(c.deployments().is_empty(), "restart finished");
        let cfg = c
            .app(&id)
            .unwrap()
            .def
            .version_info
            .as_ref()
            .unwrap()
            .last_config_change_at;
        assert!(c.tasks().all(|t| t.config_version == cfg));
        assert_eq!(c.tasks().count(), 4);
    }

    #[test]
    fn a_restart_waits_for_the_new_tasks_readiness_before_killing_old_ones() {
        let mut c = core();
        let id = PathId::parse("/rd");
        let extra = json!({
            "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": [{"name": "warm", "path": "/ready", "portName": "http-api",
                "intervalSeconds": 5, "timeoutSeconds": 1, "httpStatusCodesForReady": [200, 204],
                "preserveLastResponse": true}],
        });
        c.deploy(
            BTreeMap::from([(id.clone(), Some(app("/rd", 1, extra)))]),
            BTreeSet::new(),
            false,
            Timestamp(2_000),
        )
        .unwrap();
        c.offers(&[offer(1)], Timestamp(2_000));
        let first = launched(&mut c).remove(0);
        assert!(
            c.due_readiness_checks(Timestamp(2_050)).is_empty(),
            "not running yet"
        );
        status(&mut c, &first, "TASK_RUNNING", 2_100);
        assert_eq!(c.deployments().len(), 1, "running is not ready");
        let jobs = c.due_readiness_checks(Timestamp(2_100));
        assert_eq!(jobs.len(), 1);
        let port = c.task(&first).unwrap().ports[0];
        assert_eq!(jobs[0].url(), format!("http://h1:{port}/ready"));
        assert!(
            c.due_readiness_checks(Timestamp(2_200)).is_empty(),
            "in flight"
        );
        let answer = |status: u16| {
            Ok(readiness::HttpResponse {
                status,
                content_type: "text/plain".into(),
                body: "warming".into(),
            })
        };
        c.readiness_result(&first, 0, answer(503), Timestamp(2_300));
        let d = c.deployment_json(&c.deployments()[0]);
        let results = &d["currentActions"][0]["readinessCheckResults"];
        assert_eq!(
            results,
            &json!([{"name": "warm", "taskId": first, "ready": false,
                "lastResponse": {"status": 503, "contentType": "text/plain", "body": "warming"}}])
        );
        assert!(c.due_readiness_checks(Timestamp(7_299)).is_empty());
        assert_eq!(c.due_readiness_checks(Timestamp(7_300)).len(), 1);
        c.readiness_result(&first, 0, answer(204), Timestamp(7_400));
        assert!(c.deployments().is_empty(), "ready: the start finished");
        // A restart keeps the old task until the new one is ready.
        c.deploy(
            BTreeMap::new(),
            BTreeSet::from([id.clone()]),
            false,
            Timestamp(8_000),
        )
        .unwrap();
        c.offers(&[offer(2)], Timestamp(8_000));
        let second = launched(&mut c).remove(0);
        status(&mut c, &second, "TASK_RUNNING", 8_100);
        assert!(
            !c.calls
                .iter()
                .map(OutCall::value)
                .any(|x| x["type"] == "KILL"),
            "old task kept"
        );
        let jobs = c.due_readiness_checks(Timestamp(8_100));
        assert_eq!(jobs.len(), 1, "only the new task is probed: {jobs:?}");
        assert_eq!(jobs[0].task_id, second);
        c.readiness_result(
            &second,
            0,
            Err("connection refused".into()),
            Timestamp(8_200),
        );
        assert!(
            !c.calls
                .iter()
                .map(OutCall::value)
                .any(|x| x["type"] == "KILL")
        );
        c.readiness_result(&second, 0, answer(200), Timestamp(13_200));
        assert!(
            c.calls
                .iter()
                .map(OutCall::value)
                .any(|x| x["type"] == "KILL" && x["kill"]["task_id"]["value"] == first.as_str()),
            "the old task goes once the new one is ready"
        );
        status(&mut c, &first, "TASK_KILLED", 13_300);
        assert!(c.deployments().is_empty());
        let app_json = c.app_json(c.app(&id).unwrap(), false);
        assert_eq!(app_json["readinessCheckResults"][0]["ready"], true);
    }

    #[test]
    fn a_task_stuck_in_staging_is_killed_and_replaced_after_the_launch_timeout() {
        let mut c = core();
        c.deploy(
            BTreeMap::from([(PathId::parse("/st"), Some(app("/st", 1, json!({}))))]),
            BTreeSet::new(),
            false,
            Timestamp(2_000),
        )
        .unwrap();
        c.offers(&[offer(1)], Timestamp(2_000));
        let first = launched(&mut c).remove(0);
        c.tick(Timestamp(2_000 + 299_000));
        assert!(
            !c.calls
                .iter()
                .map(OutCall::value)
                .any(|x| x["type"] == "KILL")
        );
        c.tick(Timestamp(2_000 + 300_000));
        assert!(
            c.calls
                .iter()
                .map(OutCall::value)
                .any(|x| x["type"] == "KILL" && x["kill"]["task_id"]["value"] == first.as_str())
        );
        c.offers(&[offer(2)], Timestamp(2_000 + 300_100));
        assert_eq!(
            launched(&mut c).len(),
            1,
            "replacement launched while the stuck task is killed"
        );
    }

    #[test]
    fn the_app_list_written_as_text_matches_the_app_json_of_each_app() {
        let mut c = core();
        for (id, n) in [("/x", 3), ("/y", 2)] {
            c.deploy(
                BTreeMap::from([(PathId::parse(id), Some(app(id, n, json!({}))))]),
                BTreeSet::new(),
                false,
                Timestamp(2_000),
            )
            .unwrap();
        }
        c.offers(&[offer(1)], Timestamp(2_100));
        let ids = launched(&mut c);
        assert_eq!(ids.len(), 5);
        status(&mut c, &ids[0], "TASK_RUNNING", 2_200);
        let embed = AppEmbed {
            tasks: true,
            last_task_failure: true,
            readiness: true,
        };
        // Twice: the first list renders the texts, the second copies them.
        for _ in 0..2 {
            let listed: Value = serde_json::from_slice(&c.apps_list_json(|_| true, embed)).unwrap();
            let expected: Vec<Value> = c.apps().map(|a| c.app_json(a, true)).collect();
            assert_eq!(listed, json!({ "apps": expected }));
        }
        status(&mut c, &ids[1], "TASK_RUNNING", 2_300);
        let listed: Value = serde_json::from_slice(&c.apps_list_json(|_| true, embed)).unwrap();
        assert_eq!(
            listed["apps"][0]["tasksRunning"], 2,
            "a changed task is rendered anew"
        );
        let running = listed["apps"][0]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .count();
        assert_eq!(running, 2);
    }

    #[test]
    fn declined_offers_are_kept_for_a_bounded_number_of_agents_per_app() {
        let mut c = core();
        c.deploy(
            BTreeMap::from([(
                PathId::parse("/huge"),
                Some(app("/huge", 1, json!({"cpus": 64}))),
            )]),
            BTreeSet::new(),
            false,
            Timestamp(2_000),
        )
        .unwrap();
        for n in 0..(LAST_UNUSED_OFFERS as i64 + 10) {
            let mut o = offer(0);
            o["id"] = json!({"value": format!("O{n}")});
            o["agent_id"] = json!({"value": format!("A{n}")});
            c.offers(&[o], Timestamp(3_000 + n));
        }
        let launch = &c.app(&PathId::parse("/huge")).unwrap().launch;
        assert_eq!(launch.offers.len(), LAST_UNUSED_OFFERS);
        assert_eq!(launch.processed, LAST_UNUSED_OFFERS as u64 + 10);
        assert!(
            launch
                .offers
                .contains_key(&format!("A{}", LAST_UNUSED_OFFERS + 9)),
            "the newest is kept"
        );
        assert!(!launch.offers.contains_key("A0"), "the oldest is gone");
        let q = c.queue_json(true, Timestamp(4_000));
        let last = &q["queue"][0]["lastUnusedOffers"];
        assert_eq!(last.as_array().unwrap().len(), LAST_UNUSED_OFFERS);
        assert_eq!(last[0]["reason"], json!(["InsufficientCpus"]));
        assert_eq!(last[0]["offer"]["resources"][0]["name"], "cpus");
    }

    #[test]
    fn tasks_are_indexed_by_app_through_launches_kills_and_terminal_updates() {
        let mut c = core();
        let a = PathId::parse("/ia");
        c.deploy(
            BTreeMap::from([(a.clone(), Some(app("/ia", 2, json!({}))))]),
            BTreeSet::new(),
            false,
            Timestamp(2_000),
        )
        .unwrap();
        c.offers(&[offer(1)], Timestamp(2_000));
        let ids = launched(&mut c);
        assert_eq!(c.tasks_of(&a).count(), 2);
        status(&mut c, &ids[0], "TASK_FAILED", 2_100);
        assert_eq!(c.tasks_of(&a).count(), 1);
        assert_eq!(
            c.app(&a).unwrap().launch.queued,
            1,
            "the failed task is queued again"
        );
        c.kill_tasks(&[ids[1].clone()], false, true, false, Timestamp(2_200))
            .unwrap();
        assert_eq!(c.tasks_of(&a).count(), 0);
        assert_eq!(c.app(&a).unwrap().launch.queued, 2);
        assert!(
            c.tasks()
                .all(|t| c.tasks_of(&t.app_id).any(|x| x.id == t.id))
        );
    }
}
