//! The JSON views: v2 AppInfo (definition, task counts, deployments, embedded tasks, last
//! failure, readiness results), v2 Task, deployment plans and `/v2/queue`. The app list is
//! the largest answer apps gives, so it is written straight to text, and the text of each
//! definition and task is cached until it changes (the caches are dropped by the mutations
//! in the other modules).

use std::collections::BTreeMap;

use capstan_types::TaskState;
use serde::Serialize;
use serde_json::{Value, json};

use super::{AppState, Core, Deployment, OfferRecord};
use crate::model::{PathId, TaskRecord, Timestamp};
use crate::placement::Reason;
use crate::readiness;

impl Core {
    /// `readinessCheckResults` of an app's tasks launched with `since` or a later version.
    fn readiness_json(&self, app: &PathId, since: Timestamp) -> Vec<Value> {
        self.tasks_of(app)
            .filter(|t| t.version >= since)
            .flat_map(|t| {
                t.readiness
                    .iter()
                    .map(|r| readiness::result_json(t.id.as_str(), r))
            })
            .collect()
    }

    pub fn task_json(&self, t: &TaskRecord) -> Value {
        serde_json::to_value(TaskJson(t)).unwrap_or_default()
    }

    fn counts(&self, app: &AppState) -> (usize, usize, usize, usize) {
        let has_checks = !app.def.health_checks.is_empty();
        let (mut staged, mut running, mut healthy, mut unhealthy) = (0, 0, 0, 0);
        for t in self.tasks_of(&app.def.id).filter(|t| !t.is_terminal()) {
            if matches!(t.state, TaskState::Staging | TaskState::Starting) {
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

    pub(super) fn step_json(&self, d: &Deployment, i: usize) -> Value {
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
                let mut r = json!({"alive": h.alive, "consecutiveFailures": h.consecutive_failures, "instanceId": instance_id(t.id.as_str()), "taskId": t.id});
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
            health.push(json!({"alive": h, "consecutiveFailures": 0, "instanceId": instance_id(t.id.as_str()), "taskId": t.id}));
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

pub(super) fn ip_json(ips: &[String]) -> Value {
    json!(ips
        .iter()
        .map(|ip| json!({"ipAddress": ip, "protocol": if ip.contains(':') { "IPv6" } else { "IPv4" }}))
        .collect::<Vec<_>>())
}

/// `web.instance-<uuid>` for task `web.instance-<uuid>._app.1`.
pub fn instance_id(task_id: &str) -> String {
    task_id.split("._app").next().unwrap_or(task_id).to_string()
}
