//! Health and readiness results. The core decides which app-run probes are due (HTTP,
//! HTTPS and TCP health checks of running tasks; readiness checks of running tasks of apps in
//! a deployment until they answer ready), marks them in flight, and records what the checker
//! reports: a health result can make a task unhealthy or, at `maxConsecutiveFailures`, kill
//! it; a readiness result can let a deployment step finish. Probing itself is
//! [`crate::health`]'s.

use std::collections::BTreeSet;

use serde_json::json;
use tracing::{debug, info, warn};

use super::{Core, instance_id};
use crate::health::{self, CheckJob, HealthOutcome};
use crate::model::time::secs_to_millis;
use crate::model::{HealthResult, NetMode, PathId, Timestamp};
use crate::readiness::{self, ProbeOutcome, ReadinessJob, ReadinessResult};

impl Core {
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
            let timeout = i64::try_from(j.timeout.as_millis()).unwrap_or(i64::MAX);
            let wait = secs_to_millis(interval.unwrap_or(60)).saturating_add(timeout);
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
            (t.id.clone(), index),
            now.plus_millis(secs_to_millis(check.interval_seconds)),
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
                self.events.publish("health_status_changed_event", json!({"appId": t.app_id, "taskId": t.id, "instanceId": instance_id(t.id.as_str()), "version": t.version, "alive": true}));
                self.events.publish("instance_health_changed_event", json!({"instanceId": instance_id(t.id.as_str()), "runSpecId": t.app_id, "runSpecVersion": t.version, "healthy": true}));
            }
            HealthOutcome::Failed | HealthOutcome::Kill => {
                self.events.publish("failed_health_check_event", json!({"appId": t.app_id, "taskId": t.id, "instanceId": instance_id(t.id.as_str()), "healthCheck": hc_json}));
                if t.health[index].consecutive_failures == 1 {
                    self.events.publish("health_status_changed_event", json!({"appId": t.app_id, "taskId": t.id, "instanceId": instance_id(t.id.as_str()), "version": t.version, "alive": false}));
                }
                if outcome == HealthOutcome::Kill {
                    warn!(task_id = %t.id, app = %t.app_id, "Killing unhealthy task");
                    self.events.publish("unhealthy_task_kill_event", json!({
                        "appId": t.app_id, "taskId": t.id, "instanceId": instance_id(t.id.as_str()), "version": t.version,
                        "reason": t.health[index].last_failure_cause, "host": t.host, "slaveId": t.agent_id,
                    }));
                    self.kill_task(t.id.as_str(), now);
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
            (t.id.clone(), index),
            now.plus_millis(secs_to_millis(check.interval_seconds)),
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
}
