//! Offers and the launch queue: what an app needs from an offer (resources, roles,
//! constraints against where its tasks already run), matching each offer against the apps
//! with queued launches whose backoff has passed, the ACCEPT with the task infos (each task
//! stored before its launch leaves) or one DECLINE for every offer nothing fit, and what
//! `/v2/queue` shows of declined offers: the last one per agent, with the reasons.

use std::collections::BTreeMap;
use std::sync::Arc;

use capstan_proto::mesos::v1 as pb;
use capstan_types::{AgentId, OfferId, TaskId, TaskState};
use serde_json::Value;
use tracing::{debug, info};

use super::Core;
use crate::mesos::{self, calls};
use crate::model::{AppDefinition, HealthResult, PathId, TaskRecord, Timestamp};
use crate::placement::{self, Constraint, Needs, Placed, Reason};

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
    pub offers: BTreeMap<AgentId, OfferRecord>,
    pub processed: u64,
    pub unused: u64,
    pub last_used_at: Option<Timestamp>,
    pub last_unused_at: Option<Timestamp>,
}

impl Core {
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
        task_id: TaskId,
        view: &placement::OfferView,
        ports: Vec<u32>,
        now: Timestamp,
    ) -> TaskRecord {
        TaskRecord {
            id: task_id,
            app_id: app_id.clone(),
            agent_id: view.agent_id.clone(),
            host: view.hostname.clone(),
            state: TaskState::Staging,
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
    pub fn offers(&mut self, offers: &[pb::Offer], now: Timestamp) {
        self.reevaluate(now);
        // What each app needs does not change while the offers are matched.
        let mut needs_of: BTreeMap<PathId, Needs> = BTreeMap::new();
        // Offers nothing fits are declined together, in one call.
        let mut declined: Vec<OfferId> = Vec::new();
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
                    self.put_task_store(task_id.as_str());
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
                        .get_or_insert_with(|| mesos::offer_json(offer).to_string().into())
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
}
