//! The Mesos framework: SUBSCRIBE through the shared client (leader discovery, heartbeat
//! watchdog, reconnect with the shared backoff), the framework id kept in coord so a
//! restarted swarm re-registers as the same framework and keeps its tasks, explicit
//! reconciliation of the tasks it knows, offers held while a start needs them (declined
//! after a few seconds otherwise, and revived when a start comes), launches with the Docker
//! containerizer, and status updates applied to the container records and acknowledged once
//! the record is stored.

use std::sync::Arc;
use std::time::Duration;

use capstan_mesos_client::{MasterClient, SessionEnd, Subscription, reconnect};
use capstan_types::{Backoff, Chain};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::Event;
use crate::model::{Container, Status, StatusUpdate, TaskRef};
use crate::state::{Conn, HeldOffer, Swarm};
use crate::translate::{fit, take, task_id, task_info};

const MAX_EVENT_BYTES: usize = 64 << 20;
/// Offers no start needs are declined after this long.
const HOLD_OFFERS: Duration = Duration::from_secs(5);
/// How long a declined agent is not offered again (a start revives sooner).
const REFUSE_SECS: f64 = 10.0;

/// The SUBSCRIBE call.
pub fn subscribe_call(swarm: &Swarm, framework_id: Option<&str>) -> Value {
    let cfg = &swarm.cfg;
    let mut fi = json!({
        "user": cfg.user, "name": cfg.framework_name, "failover_timeout": 7.0 * 86400.0,
        "checkpoint": true, "role": cfg.role, "hostname": cfg.hostname,
        "capabilities": [{"type": "TASK_KILLING_STATE"}],
    });
    let mut call = json!({"type": "SUBSCRIBE", "subscribe": {}});
    if let Some(id) = framework_id {
        fi["id"] = json!({ "value": id });
        call["framework_id"] = json!({ "value": id });
    }
    call["subscribe"]["framework_info"] = fi;
    call
}

/// Runs the framework until `token` is cancelled.
pub async fn run(swarm: Arc<Swarm>, token: CancellationToken) {
    let client = MasterClient::for_masters(&swarm.cfg.masters, |c| {
        c.request_timeout = Duration::from_secs(60);
        c.max_record_len = MAX_EVENT_BYTES;
        // Strict mode: mutual TLS with the node certificate (bare host:port masters are https).
        c.tls = swarm.client_tls.clone();
    });
    let mut client = match client {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %Chain(&e), "Cannot build the master client; not scheduling");
            return;
        }
    };
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    reconnect(backoff, &token, async move || {
        let end = session(&mut client, &swarm).await;
        swarm.conn.send_replace(None);
        // Offers die with the subscription.
        swarm.with(|s| s.offers.clear());
        end
    })
    .await;
}

async fn session(client: &mut MasterClient, swarm: &Arc<Swarm>) -> SessionEnd {
    let framework_id = match swarm.store.framework_id().await {
        Ok(id) => id,
        Err(e) => {
            warn!(error = %Chain(&e), "Cannot read the framework id from coord");
            return SessionEnd::after(0);
        }
    };
    let body = subscribe_call(swarm, framework_id.as_deref()).to_string();
    let mut sub = match client.subscribe_scheduler(body).await {
        Ok(sub) => sub,
        Err(e) => {
            warn!(error = %Chain(&e), "Subscription to Mesos failed");
            return SessionEnd::after(0);
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let record = tokio::select! {
            r = sub.next() => r,
            _ = tick.tick() => { housekeeping(swarm).await; continue; }
            _ = swarm.kick.notified() => { launch_pending(swarm).await; revive_if_needed(swarm).await; continue; }
        };
        let record = match record {
            Ok(Some(r)) => r,
            Ok(None) => {
                warn!(master = %sub.leader(), "Subscription to Mesos closed");
                break;
            }
            Err(e) => {
                warn!(master = %sub.leader(), error = %Chain(&e), "Subscription to Mesos failed");
                break;
            }
        };
        let Ok(event) = serde_json::from_slice::<Value>(&record) else {
            warn!("Ignoring an undecodable event");
            continue;
        };
        if !handle(swarm, client, &mut sub, event).await {
            break;
        }
    }
    SessionEnd::after(sub.records())
}

/// Handles one event; false ends the session.
async fn handle(
    swarm: &Arc<Swarm>,
    client: &MasterClient,
    sub: &mut Subscription,
    mut event: Value,
) -> bool {
    match event["type"].as_str().unwrap_or_default() {
        "SUBSCRIBED" => {
            let fw = event["subscribed"]["framework_id"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(h) = event["subscribed"]["heartbeat_interval_seconds"].as_f64() {
                sub.set_heartbeat_interval_secs(h);
            }
            if let Err(e) = swarm.store.set_framework_id(&fw).await {
                warn!(error = %Chain(&e), "Cannot store the framework id; resubscribing");
                return false;
            }
            info!(master = %sub.leader(), framework_id = %fw, "Subscribed to Mesos");
            swarm.conn.send_replace(Some(Conn {
                calls: client.scheduler_calls(sub),
                framework_id: fw,
            }));
            reconcile(swarm).await;
            launch_pending(swarm).await;
            revive_if_needed(swarm).await;
        }
        "OFFERS" => {
            let offers = match event["offers"]["offers"].take() {
                Value::Array(o) => o,
                _ => Vec::new(),
            };
            let now = tokio::time::Instant::now();
            swarm.with(|s| {
                s.offers.extend(
                    offers
                        .into_iter()
                        .map(|offer| HeldOffer { offer, since: now }),
                )
            });
            launch_pending(swarm).await;
        }
        "RESCIND" => {
            let id = event["rescind"]["offer_id"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            swarm.with(|s| s.offers.retain(|o| o.id() != id));
        }
        "UPDATE" => update(swarm, &event["update"]["status"]).await,
        "ERROR" => {
            warn!(message = %event["error"]["message"], "Mesos sent an error");
            return false;
        }
        other => debug!(event = other, "Mesos event"),
    }
    true
}

/// Asks for the state of every task swarm believes active.
async fn reconcile(swarm: &Swarm) {
    let tasks: Vec<Value> = swarm.read(|s| {
        s.containers
            .values()
            .filter_map(|c| c.task.as_ref())
            .filter(|t| !capstan_types::TaskState::is_terminal_name(&t.state))
            .map(|t| json!({"task_id": {"value": t.task_id}, "agent_id": {"value": t.agent_id}}))
            .collect()
    });
    if tasks.is_empty() {
        return;
    }
    if let Err(e) = swarm
        .call(json!({"type": "RECONCILE", "reconcile": {"tasks": tasks}}))
        .await
    {
        warn!(error = %e, "Reconciliation failed");
    }
}

async fn revive_if_needed(swarm: &Swarm) {
    let waiting = swarm.read(|s| s.containers.values().any(|c| c.pending_start));
    if waiting && let Err(e) = swarm.call(json!({"type": "REVIVE"})).await {
        debug!(error = %e, "REVIVE failed");
    }
}

/// Declines offers held too long when no start needs them; revives while starts wait.
async fn housekeeping(swarm: &Swarm) {
    let waiting = swarm.read(|s| s.containers.values().any(|c| c.pending_start));
    if waiting {
        launch_pending(swarm).await;
        return;
    }
    let stale: Vec<String> = swarm.with(|s| {
        let (old, keep): (Vec<HeldOffer>, Vec<HeldOffer>) = s
            .offers
            .drain(..)
            .partition(|o| o.since.elapsed() >= HOLD_OFFERS);
        s.offers = keep;
        old.iter().map(|o| o.id().to_owned()).collect()
    });
    if stale.is_empty() {
        return;
    }
    let ids: Vec<Value> = stale.iter().map(|i| json!({"value": i})).collect();
    if let Err(e) = swarm
        .call(json!({"type": "DECLINE", "decline": {"offer_ids": ids, "filters": {"refuse_seconds": REFUSE_SECS}}}))
        .await
    {
        debug!(error = %e, "DECLINE failed");
    }
}

/// Launches every start waiting for an offer that some held offer fits.
async fn launch_pending(swarm: &Swarm) {
    let mut placed: Vec<crate::volumes::VolumeRecord> = Vec::new();
    // Per offer used: its id and the (container, task info) launches it carries.
    let launches: Vec<(String, Vec<(String, Value)>)> = swarm.with(|s| {
        let mut out: Vec<(String, Vec<(String, Value)>)> = Vec::new();
        let waiting: Vec<String> = s
            .containers
            .values()
            .filter(|c| c.pending_start)
            .map(|c| c.id.clone())
            .collect();
        // Spread, as classic Swarm's default strategy did: the agent running the fewest of
        // swarm's containers (counting this pass's starts) is tried first.
        let mut load: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for t in s.containers.values().filter_map(|c| c.task.as_ref()) {
            if !capstan_types::TaskState::is_terminal_name(&t.state) {
                *load.entry(t.agent_id.clone()).or_default() += 1;
            }
        }
        for id in waiting {
            let Some(c) = s.containers.get(&id) else {
                continue;
            };
            let mut chosen = None;
            let mut why = None;
            // Offers that meet the soft constraints first, then the least loaded agent's.
            let mut order: Vec<usize> = (0..s.offers.len()).collect();
            order.sort_by_key(|i| {
                let offer = &s.offers[*i].offer;
                let agent = offer["agent_id"]["value"].as_str().unwrap_or_default();
                (
                    !crate::constraints::soft_hold(&c.spec.constraints, offer),
                    load.get(agent).copied().unwrap_or(0),
                )
            });
            for i in order {
                let held = &s.offers[i];
                let agent = held.offer["agent_id"]["value"].as_str().unwrap_or_default();
                if let Err(e) = crate::volumes::placement_fits(c, &s.volumes, agent) {
                    why = Some(e);
                    continue;
                }
                match fit(&c.spec, &held.offer) {
                    Ok(m) => {
                        chosen = Some((i, m));
                        break;
                    }
                    Err(e) => why = Some(e.to_string()),
                }
            }
            let Some((i, m)) = chosen else {
                if let (Some(why), Some(c)) = (why, s.containers.get_mut(&id)) {
                    c.error = format!("no agent fits the container yet: {why}");
                }
                continue;
            };
            // The offer stays held for the next start until this pass ends; what this
            // start takes is gone from it.
            let held = &mut s.offers[i];
            let offer_id = held.id().to_owned();
            let agent_id = held.offer["agent_id"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let agent_host = held.offer["hostname"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let Some(c) = s.containers.get_mut(&id) else {
                continue;
            };
            c.runs += 1;
            let tid = task_id(&c.id, c.runs);
            let info = task_info(&c.id, &c.name, &c.spec, &tid, &held.offer, &m);
            take(&mut held.offer, &m);
            *load.entry(agent_id.clone()).or_default() += 1;
            c.pending_start = false;
            c.task = Some(TaskRef {
                task_id: tid.clone(),
                agent_id: agent_id.clone(),
                agent_host: agent_host.clone(),
                ports: m.ports,
                state: "TASK_STAGING".into(),
                sandbox: None,
                agent_http: None,
                ip_address: None,
            });
            // Its unplaced named volumes live on this agent from now on.
            let names: Vec<String> = crate::volumes::mounted(c)
                .into_iter()
                .map(str::to_owned)
                .collect();
            for name in names {
                let r = s
                    .volumes
                    .entry(name.clone())
                    .or_insert_with(|| crate::volumes::implicit(&name, crate::time::now_rfc3339()));
                if r.placement.is_none() {
                    r.placement = Some(crate::volumes::Placement {
                        agent_id: agent_id.clone(),
                        agent_host: agent_host.clone(),
                    });
                    placed.push(r.clone());
                }
            }
            match out.iter_mut().find(|(o, _)| *o == offer_id) {
                Some((_, on_offer)) => on_offer.push((id, info)),
                None => out.push((offer_id, vec![(id, info)])),
            }
        }
        // An accepted offer is spent: the master offers what it did not use again.
        s.offers.retain(|o| !out.iter().any(|(id, _)| id == o.id()));
        out
    });
    for r in placed {
        info!(volume = %r.name, agent = ?r.placement, "Volume placed");
        if let Err(e) = swarm.store.put_volume(&r).await {
            warn!(volume = %r.name, error = %capstan_types::Chain(&e), "Cannot store the volume's placement");
        }
    }
    let accepted = !launches.is_empty();
    for (offer_id, on_offer) in launches {
        // Each record names its task before the task exists: a crash in between reconciles
        // it. The records are written together; a start whose write failed waits again.
        let stored =
            futures::future::join_all(on_offer.iter().map(|(id, _)| swarm.persist(id))).await;
        let mut infos = Vec::new();
        let mut launched = Vec::new();
        for ((id, info), result) in on_offer.into_iter().zip(stored) {
            if let Err(e) = result {
                warn!(container = %id, error = %e, "Not launching: the record was not stored");
                swarm.modify(&id, |c| {
                    c.pending_start = true;
                    c.task = None;
                });
                continue;
            }
            let task = info["task_id"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            info!(container = %id, task = %task, offer = %offer_id, "Launching");
            infos.push(info);
            launched.push((id, task));
        }
        // Nothing to launch still spends the offer: ACCEPT with no operations declines it.
        let call = json!({"type": "ACCEPT", "accept": {
            "offer_ids": [{"value": offer_id}],
            "operations": if infos.is_empty() { json!([]) } else {
                json!([{"type": "LAUNCH", "launch": {"task_infos": infos}}])
            },
            "filters": {"refuse_seconds": 1.0},
        }});
        if let Err(e) = swarm.call(call).await {
            for (id, task) in &launched {
                warn!(container = %id, error = %e, "ACCEPT failed");
                fail_launch(
                    swarm,
                    id,
                    task,
                    &format!("the master refused the launch: {e}"),
                )
                .await;
            }
        }
    }
    // Starts left waiting need what the accepts did not use: have it offered again now
    // rather than after the accepts' refusal filter.
    if accepted {
        revive_if_needed(swarm).await;
    }
}

async fn fail_launch(swarm: &Swarm, id: &str, task: &str, message: &str) {
    let u = StatusUpdate {
        task_id: task.to_owned(),
        state: "TASK_ERROR".into(),
        reason: "REASON_TASK_INVALID".into(),
        message: message.to_owned(),
        ip_address: None,
    };
    let now = crate::time::now_rfc3339();
    swarm.modify(id, |c| c.apply(&u, &now));
    let _ = swarm.persist(id).await;
}

/// The events a status update means: `start` when a run began, `die` when it ended.
fn container_events(swarm: &Swarm, before: &Container, after: &Container) {
    if after.running_run != before.running_run {
        swarm.emit(Event::container(after, "start", &[]));
    }
    if after.exits > before.exits {
        swarm.emit(Event::container(
            after,
            "die",
            &[("exitCode", after.exit_code.to_string())],
        ));
    }
}

/// Whether container `id` just exited and its restart policy starts it again; then it is
/// marked restarting (its restart counted) and the delay before the new run is returned:
/// Docker's backoff, 100 ms doubling per restart up to 10 s.
fn restart_due(swarm: &Swarm, id: &str, before: Option<&Container>) -> Option<Duration> {
    let before = before?;
    swarm
        .modify(id, |c| {
            let exited = c.exits > before.exits && !c.running() && !c.pending_start;
            if !exited || c.stop_requested || !c.spec.restart.restarts(c.exit_code, c.restart_count)
            {
                return None;
            }
            c.status = Status::Restarting;
            c.restart_count += 1;
            let n = c.restart_count.min(8) as u32;
            Some(Duration::from_millis(100u64 << (n - 1)).min(Duration::from_secs(10)))
        })
        .flatten()
}

/// After `delay`, queues the restarting container's next run (unless it was stopped or
/// removed meanwhile).
fn schedule_restart(swarm: Arc<Swarm>, id: String, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let go = swarm
            .modify(&id, |c| {
                let go = c.status == Status::Restarting && !c.stop_requested && !c.pending_start;
                if go {
                    c.pending_start = true;
                }
                go
            })
            .unwrap_or(false);
        if go && swarm.persist(&id).await.is_ok() {
            info!(container = %id, "Restarting by its restart policy");
            swarm.kick.notify_one();
        }
    });
}

/// Applies a status update, stores it, then acknowledges it.
async fn update(swarm: &Arc<Swarm>, status: &Value) {
    let task = status["task_id"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ip = status["container_status"]["network_infos"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["ip_addresses"].as_array().cloned().unwrap_or_default())
        .find_map(|a| a["ip_address"].as_str().map(str::to_owned));
    let u = StatusUpdate {
        task_id: task.clone(),
        state: status["state"].as_str().unwrap_or_default().to_owned(),
        reason: status["reason"].as_str().unwrap_or_default().to_owned(),
        message: status["message"].as_str().unwrap_or_default().to_owned(),
        ip_address: ip,
    };
    let owner = crate::translate::short_id_of_task(&task).and_then(|short| {
        swarm.read(|s| {
            s.containers
                .values()
                .find(|c| {
                    c.id.starts_with(short) && c.task.as_ref().is_some_and(|t| t.task_id == task)
                })
                .map(|c| c.id.clone())
        })
    });
    let now = crate::time::now_rfc3339();
    if let Some(id) = &owner {
        let before = swarm.get(id);
        let changed = swarm.modify(id, |c| c.apply(&u, &now)).unwrap_or(false);
        if let (Some(b), Some(a)) = (&before, swarm.get(id)) {
            container_events(swarm, b, &a);
        }
        let remove = swarm
            .get(id)
            .is_some_and(|c| c.spec.auto_remove && !c.running() && c.exits > 0);
        if remove {
            swarm.with(|s| s.containers.remove(id));
            if let Some(b) = &before {
                swarm.emit(Event::container(b, "destroy", &[]));
            }
        }
        let restart = if remove {
            None
        } else {
            restart_due(swarm, id, before.as_ref())
        };
        if (changed || remove || restart.is_some()) && swarm.persist(id).await.is_err() {
            // Not acknowledged: the master resends it.
            return;
        }
        if let Some(delay) = restart {
            schedule_restart(swarm.clone(), id.clone(), delay);
        }
        debug!(container = %id, task = %task, state = %u.state, "Task status");
    } else if !capstan_types::TaskState::is_terminal_name(&u.state) && !task.is_empty() {
        // A task of no container (removed meanwhile): it must not keep running.
        let agent = status["agent_id"]["value"].as_str().unwrap_or_default();
        let _ = swarm
            .call(json!({"type": "KILL", "kill": {"task_id": {"value": task}, "agent_id": {"value": agent}}}))
            .await;
    }
    if let (Some(uuid), Some(agent)) = (
        status["uuid"].as_str(),
        status["agent_id"]["value"].as_str(),
    ) {
        let ack = json!({"type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": {"value": agent}, "task_id": {"value": task}, "uuid": uuid,
        }});
        if let Err(e) = swarm.call(ack).await {
            debug!(error = %e, "ACKNOWLEDGE failed");
        }
    }
}
