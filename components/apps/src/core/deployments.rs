//! Deployments: how a change of apps becomes a [`Deployment`] (dependency order, service
//! ports, versions, the 409 of a locked app, cancel and rollback), and how every event moves
//! the running deployments on. [`Core::reevaluate`] is the convergence loop: it expunges
//! unreachable tasks past their strategy, kills orphans, advances deployment steps whose
//! actions are done, and drives each changed app towards its target — scaling it, freezing
//! it behind an earlier step, or replacing old tasks in a rolling restart that keeps
//! `minimumHealthCapacity` and `maximumOverCapacity`. Explicit groups (their dependencies)
//! live here too, as they only matter to deployment order.

use std::collections::{BTreeMap, BTreeSet};

use capstan_types::TaskId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use super::{ApiError, AppState, Core, DeploymentResult, keys, to_bytes};
use crate::mesos::calls;
use crate::model::time::secs_to_millis;
use crate::model::{AppDefinition, PathId, TaskRecord, Timestamp, UnreachableStrategy, Violation};
use crate::planner::{self, Action, AppSpec, KillCandidate, Rolling, Step};
use crate::readiness;
use crate::store::StoreOp;

use super::offers::LaunchStats;

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

/// How an app is driven right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Steady,
    Frozen,
    Restart,
}

impl Core {
    pub(super) fn add_deployment(&mut self, d: Deployment) {
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

    /// Apps a dependency path names: the app itself, or every app under a group.
    fn expand(dep: &PathId, apps: &BTreeMap<PathId, AppSpec>) -> Vec<PathId> {
        if apps.contains_key(dep) {
            return vec![dep.clone()];
        }
        apps.keys().filter(|a| a.is_under(dep)).cloned().collect()
    }

    fn specs(&self, defs: &BTreeMap<PathId, &AppDefinition>) -> BTreeMap<PathId, AppSpec> {
        Self::specs_with(defs, &self.groups)
    }

    /// The planner's view of `defs`, with the dependencies of `groups` expanded to apps.
    fn specs_with(
        defs: &BTreeMap<PathId, &AppDefinition>,
        groups: &BTreeMap<PathId, GroupMeta>,
    ) -> BTreeMap<PathId, AppSpec> {
        let mut specs: BTreeMap<PathId, AppSpec> = defs
            .iter()
            .map(|(id, d)| {
                (
                    id.clone(),
                    AppSpec {
                        instances: d.instance_count(),
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
                if let Some(meta) = groups.get(&g) {
                    raw.extend(meta.dependencies.iter().map(|s| PathId::parse(s)));
                }
            }
            for r in raw {
                if id.is_under(&r) {
                    continue;
                }
                for a in Self::expand(&r, &snapshot) {
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

    /// 422 if applying `changes` (and setting the dependencies of `groups`) would make apps
    /// depend on each other in a cycle. A cycle that is already there (stored before this
    /// check existed) does not block changes, so such apps can still be fixed or removed.
    pub fn check_dependency_cycles(
        &self,
        changes: &BTreeMap<PathId, Option<AppDefinition>>,
        groups: &[(PathId, Vec<String>)],
    ) -> Result<(), ApiError> {
        let any_dependencies = groups.iter().any(|(_, d)| !d.is_empty())
            || self.groups.values().any(|g| !g.dependencies.is_empty())
            || self.apps.values().any(|a| !a.def.dependencies.is_empty())
            || changes
                .values()
                .flatten()
                .any(|d| !d.dependencies.is_empty());
        if !any_dependencies {
            return Ok(());
        }
        let current: BTreeMap<PathId, &AppDefinition> =
            self.apps.iter().map(|(k, v)| (k.clone(), &v.def)).collect();
        let mut target = current.clone();
        for (id, change) in changes {
            match change {
                Some(def) => target.insert(id.clone(), def),
                None => target.remove(id),
            };
        }
        let mut target_groups = self.groups.clone();
        for (g, deps) in groups {
            target_groups
                .entry(g.clone())
                .or_insert_with(|| GroupMeta {
                    dependencies: Vec::new(),
                    version: Timestamp::default(),
                })
                .dependencies = deps.clone();
        }
        let Some(cycle) = planner::find_cycle(&Self::specs_with(&target, &target_groups)) else {
            return Ok(());
        };
        if planner::find_cycle(&self.specs(&current)).is_some() {
            return Ok(());
        }
        let path: Vec<String> = cycle.iter().map(ToString::to_string).collect();
        Err(ApiError::invalid(vec![Violation::new(
            "/dependencies",
            format!(
                "Dependency graph has cyclic dependencies: {}",
                path.join(" -> ")
            ),
        )]))
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
        self.check_dependency_cycles(&changes, &[])?;
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
                return now.millis() - since.millis() < secs_to_millis(inactive_after_seconds);
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

    pub(super) fn counted_of(&self, app: &PathId, now: Timestamp) -> Vec<&TaskRecord> {
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
    pub(super) fn reevaluate(&mut self, now: Timestamp) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in &self.unreachable {
            if let Some(t) = self.tasks.get(id) {
                dirty.insert(t.app_id.clone());
            }
        }
        // Unreachable tasks past expungeAfterSeconds are forgotten (and killed, in case).
        let expired: Vec<TaskId> = self
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
                    }) => now.millis() - since.millis() >= secs_to_millis(expunge_after_seconds),
                    _ => false,
                }
            })
            .map(|t| t.id.clone())
            .collect();
        for id in expired {
            if let Some(t) = self.remove_task(id.as_str()) {
                info!(task_id = %id, app = %t.app_id, "Expunging unreachable task");
                self.push_call(calls::kill(&id, Some(&t.agent_id)));
                self.store_ops
                    .push(StoreOp::Delete(keys::task(id.as_str())));
            }
        }
        // Orphans: tasks whose app is gone.
        let orphans: Vec<TaskId> = dirty
            .iter()
            .filter(|a| !self.apps.contains_key(*a))
            .flat_map(|a| self.tasks_of(a))
            .filter(|t| t.kill_requested.is_none() && !t.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        for id in orphans {
            self.kill_task(id.as_str(), now);
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
        let mut work: Vec<(PathId, u32, Vec<TaskId>)> = Vec::new();
        for id in &dirty {
            let Some(app) = self.apps.get(id) else {
                continue;
            };
            let mode = modes.get(id).copied().unwrap_or(Mode::Steady);
            let def = &app.def;
            let target = def.instance_count();
            let counted = self.counted_of(id, now);
            let mut queued = 0;
            let mut kills: Vec<TaskId> = Vec::new();
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
                self.kill_task(k.as_str(), now);
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
}

/// Every app a deployment names: affected ones and those of its actions.
pub(super) fn deployment_apps(d: &Deployment) -> impl Iterator<Item = &PathId> {
    d.affected.iter().chain(
        d.steps
            .iter()
            .flat_map(|s| s.actions.iter().map(Action::app)),
    )
}
