//! The master link: speaks `capstan.agent.v1` (see `components/proto/proto/capstan/agent/v1`).
//!
//! One SUBSCRIBE stream per session (`POST /api/capstan/agent/v1`, RecordIO of `Event`s),
//! other calls as separate POSTs. Status updates are sent head-of-queue per task: only a
//! task's oldest unacknowledged update is in flight, resent with the same uuid until the
//! master's ACKNOWLEDGED, then the next one goes. Discovery (masters in turn, a `307` followed
//! to the leader), RecordIO framing, the heartbeat watchdog (PINGs) and the reconnect loop are
//! `capstan-mesos-client`'s, shared with every other client of the masters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_mesos_client::{
    Calls, MasterClient, RequestError, SessionEnd, StreamError, SubscribeError, reconnect,
};
use capstan_proto::capstan::agent::v1::{Call, Event, RunningTask, call, event};
use capstan_proto::mesos::v1::{
    AgentId, AgentInfo, Attribute, DomainInfo, ExecutorId, FrameworkId, Resource, TaskState,
    TaskStatus,
};
use capstan_types::{Backoff, Chain};
use reqwest::StatusCode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::manager::executor::ExecutorMessage;
use crate::manager::{StatusUpdate, TaskManagerHandle, is_terminal};

const PATH: &str = "/api/capstan/agent/v1";
const MAX_RECORD: usize = 64 * 1024 * 1024;
/// First and longest pause between attempts: short, so agents are back soon after a master
/// failover.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The link is dead after this many ping intervals without a record from the master.
const MISSED_PINGS: u32 = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the link needs to describe the agent.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `host:port` of each master.
    pub masters: Vec<String>,
    pub hostname: String,
    pub ip: String,
    pub port: u16,
    pub resources: Vec<Resource>,
    pub attributes: Vec<Attribute>,
    pub domain: Option<DomainInfo>,
    pub update_retry: Duration,
    /// Speak TLS to the masters with this (the node's certificate, in strict mode).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot subscribe")]
    Subscribe(#[source] SubscribeError),
    #[error("a call to the master failed")]
    Call(#[source] RequestError),
    #[error("the event stream failed")]
    Stream(#[source] StreamError),
    #[error("the event stream ended")]
    StreamEnded,
    #[error("bad event: {0}")]
    Protocol(String),
    #[error("shutting down")]
    Shutdown,
}

/// Runs until `shutdown`; `connected` says whether a subscription is open.
pub async fn run(
    cfg: LinkConfig,
    tasks: TaskManagerHandle,
    connected: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let client = MasterClient::for_masters(&cfg.masters, |c| {
        c.connect_timeout = CONNECT_TIMEOUT;
        c.max_record_len = MAX_RECORD;
        c.missed_heartbeats = MISSED_PINGS;
        c.tls = cfg.tls.clone();
    });
    let mut client = match client {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %Chain(&e), "Cannot build the client for the master link");
            return;
        }
    };
    let backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
    let stop = shutdown.clone();
    reconnect(backoff, &stop, async move || {
        let mut records = 0;
        let result = session(
            &cfg,
            &mut client,
            &tasks,
            &connected,
            &shutdown,
            &mut records,
        )
        .await;
        // A session that was up makes the next attempt (a new leader) prompt.
        connected.send_replace(false);
        match result {
            Err(SessionError::Shutdown) => SessionEnd::Stop,
            Err(e) => {
                warn!(error = %Chain(&e), "Master session ended");
                SessionEnd::after(records)
            }
            Ok(()) => SessionEnd::after(records),
        }
    })
    .await;
}

fn subscribe_call(cfg: &LinkConfig, tasks: &TaskManagerHandle) -> Call {
    let snap = tasks.snapshot();
    let id = snap.registered.then(|| AgentId {
        value: snap.agent_id.clone(),
    });
    let running = snap
        .tasks
        .values()
        .filter(|t| !is_terminal(t.state) || t.unacknowledged > 0)
        .map(|t| {
            let mut status = t.statuses.last().cloned().unwrap_or_else(|| TaskStatus {
                task_id: t.info.task_id.clone(),
                state: TaskState::TaskStaging as i32,
                ..Default::default()
            });
            status.uuid = None;
            status.agent_id = id.clone();
            let mut task = t.info.clone();
            if let Some(id) = &id {
                task.agent_id = id.clone();
            }
            RunningTask {
                framework_id: FrameworkId {
                    value: t.framework_id.clone(),
                },
                task,
                status,
                executor: None,
            }
        })
        .collect();
    Call {
        agent_id: id.clone(),
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            agent_info: AgentInfo {
                hostname: cfg.hostname.clone(),
                port: Some(i32::from(cfg.port)),
                resources: cfg.resources.clone(),
                attributes: cfg.attributes.clone(),
                id,
                domain: cfg.domain.clone(),
            },
            tasks: running,
            ip: Some(cfg.ip.clone()),
            version: Some(capstan_types::MESOS_VERSION.to_owned()),
        }),
        update: None,
        message: None,
    }
}

async fn session(
    cfg: &LinkConfig,
    client: &mut MasterClient,
    tasks: &TaskManagerHandle,
    connected: &watch::Sender<bool>,
    shutdown: &CancellationToken,
    records: &mut u64,
) -> Result<(), SessionError> {
    let call = subscribe_call(cfg, tasks);
    let subscribed = tokio::select! {
        _ = shutdown.cancelled() => return Err(SessionError::Shutdown),
        r = client.subscribe(PATH, capstan_proto::to_json_vec(&call)) => r,
    };
    let mut sub = match subscribed {
        Ok(sub) => sub,
        Err(e) => {
            if let Some((StatusCode::FORBIDDEN, body)) = e.refusal()
                && body.contains("gone")
            {
                // The protocol: wipe the state and subscribe again without an id.
                let _ = tasks.wipe().await;
            }
            return Err(SessionError::Subscribe(e));
        }
    };
    let calls = client.calls(sub.leader(), PATH, None);
    let master = sub.leader().to_string();
    let mut updates = tasks.subscribe();
    let mut messages = tasks.subscribe_executor_messages();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut agent_id: Option<String> = None;
    // uuid of the update in flight per task, and when it was sent.
    let mut in_flight: HashMap<String, (Vec<u8>, Instant)> = HashMap::new();
    loop {
        let mut flush = false;
        tokio::select! {
            _ = shutdown.cancelled() => return Err(SessionError::Shutdown),
            record = sub.next() => {
                let Some(record) = record.map_err(SessionError::Stream)? else {
                    return Err(SessionError::StreamEnded);
                };
                *records = sub.records();
                let ev: Event = capstan_proto::from_json_slice(&record)
                    .map_err(|e| SessionError::Protocol(e.to_string()))?;
                if let Some(s) = &ev.subscribed
                    && let Some(ping) = s.ping_interval_seconds
                {
                    sub.set_heartbeat_interval_secs(ping);
                }
                if handle_event(ev, &calls, &master, tasks, &mut agent_id, connected).await? {
                    in_flight.clear();
                }
                flush = true;
            }
            m = messages.recv() => {
                if let (Ok(m), Some(id)) = (m, agent_id.as_deref()) {
                    let call = Call {
                        agent_id: Some(AgentId { value: id.to_owned() }),
                        r#type: Some(call::Type::Message as i32),
                        message: Some(call::Message {
                            framework_id: FrameworkId { value: m.framework_id },
                            executor_id: ExecutorId { value: m.executor_id },
                            data: m.data,
                        }),
                        ..Default::default()
                    };
                    if let Err(e) = calls.send(&call).await {
                        warn!(error = %Chain(&e), "Cannot forward an executor message");
                    }
                }
            }
            u = updates.recv() => {
                flush = u.is_ok() || matches!(u, Err(tokio::sync::broadcast::error::RecvError::Lagged(_)));
            }
            _ = tick.tick() => flush = true,
        }
        if let (true, Some(id)) = (flush, agent_id.as_deref()) {
            send_heads(&calls, tasks, id, &mut in_flight, cfg.update_retry).await?;
        }
    }
}

/// Returns true when the event (re)started the session (SUBSCRIBED).
async fn handle_event(
    ev: Event,
    calls: &Calls,
    master: &str,
    tasks: &TaskManagerHandle,
    agent_id: &mut Option<String>,
    connected: &watch::Sender<bool>,
) -> Result<bool, SessionError> {
    match ev.r#type() {
        event::Type::Subscribed => {
            let Some(sub) = ev.subscribed else {
                return Err(SessionError::Protocol("SUBSCRIBED without payload".into()));
            };
            let _ = tasks.registered(&sub.agent_id.value).await;
            // The manager adopts the id only when it has no tasks; use what it settled on.
            let mut settled = tasks.snapshot().agent_id.clone();
            for _ in 0..50 {
                if tasks.snapshot().registered {
                    settled = tasks.snapshot().agent_id.clone();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            info!(agent_id = %settled, %master, "Registered with master");
            *agent_id = Some(sub.agent_id.value);
            connected.send_replace(true);
            return Ok(true);
        }
        event::Type::Ping => {
            let id = agent_id.clone().map(|value| AgentId { value });
            let pong = Call {
                agent_id: id,
                r#type: Some(call::Type::Pong as i32),
                ..Default::default()
            };
            calls.send(&pong).await.map_err(SessionError::Call)?;
        }
        event::Type::Launch => {
            if let Some(l) = ev.launch
                && let Err(e) = tasks.launch_with_framework(l.framework_info, l.task).await
            {
                warn!(error = %capstan_runtime::Chain(&e), "Cannot launch task");
            }
        }
        event::Type::LaunchGroup => {
            if let Some(g) = ev.launch_group {
                // Each task of the group runs as its own command/container task.
                for t in g.task_group.tasks {
                    if let Err(e) = tasks
                        .launch_with_framework(g.framework_info.clone(), t)
                        .await
                    {
                        warn!(error = %capstan_runtime::Chain(&e), "Cannot launch task of a group");
                    }
                }
            }
        }
        event::Type::Kill => {
            if let Some(k) = ev.kill {
                let grace = k
                    .kill_policy
                    .and_then(|p| p.grace_period)
                    .map(|d| Duration::from_nanos(u64::try_from(d.nanoseconds).unwrap_or(0)));
                if tasks.kill(&k.task_id.value, grace).await.is_err() {
                    let _ = tasks
                        .report_unknown(&k.framework_id.value, &k.task_id.value)
                        .await;
                }
            }
        }
        event::Type::Acknowledged => {
            if let Some(a) = ev.acknowledged {
                let _ = tasks.acknowledge(&a.task_id.value, &a.uuid).await;
            }
        }
        event::Type::ShutdownFramework => {
            if let Some(s) = ev.shutdown_framework {
                let snap = tasks.snapshot();
                for t in snap
                    .tasks
                    .values()
                    .filter(|t| t.framework_id == s.framework_id.value)
                {
                    let _ = tasks.kill(&t.info.task_id.value, None).await;
                }
            }
        }
        event::Type::Error => {
            let msg = ev.error.map(|e| e.message).unwrap_or_default();
            warn!(%msg, "Master sent ERROR");
        }
        event::Type::Message => {
            if let Some(m) = ev.message {
                let _ = tasks
                    .framework_message(ExecutorMessage {
                        framework_id: m.framework_id.value,
                        executor_id: m.executor_id.value,
                        data: m.data,
                    })
                    .await;
            }
        }
        event::Type::Unknown => debug!("Ignoring an unknown event"),
    }
    Ok(false)
}

/// Sends each task's oldest unacknowledged update unless it is in flight and not yet due.
async fn send_heads(
    calls: &Calls,
    tasks: &TaskManagerHandle,
    agent_id: &str,
    in_flight: &mut HashMap<String, (Vec<u8>, Instant)>,
    retry: Duration,
) -> Result<(), SessionError> {
    // Only what is checkpointed: an update whose write failed is held back.
    let Ok(pending) = tasks.deliverable().await else {
        return Err(SessionError::Shutdown);
    };
    let mut heads: Vec<StatusUpdate> = Vec::new();
    for u in pending {
        if !heads.iter().any(|h| h.status.task_id == u.status.task_id) {
            heads.push(u);
        }
    }
    in_flight.retain(|task, _| heads.iter().any(|h| &h.status.task_id.value == task));
    let now = Instant::now();
    for h in heads {
        let uuid = h.status.uuid.clone().unwrap_or_default();
        let task = h.status.task_id.value.clone();
        let due = match in_flight.get(&task) {
            Some((u, at)) if *u == uuid => now.duration_since(*at) >= retry,
            _ => true,
        };
        if !due {
            continue;
        }
        let mut status = h.status;
        status.agent_id = Some(AgentId {
            value: agent_id.to_owned(),
        });
        let update = Call {
            agent_id: Some(AgentId {
                value: agent_id.to_owned(),
            }),
            r#type: Some(call::Type::Update as i32),
            subscribe: None,
            update: Some(call::Update {
                framework_id: FrameworkId {
                    value: h.framework_id,
                },
                status,
            }),
            message: None,
        };
        match calls.send(&update).await {
            Ok(_) => {
                in_flight.insert(task, (uuid, now));
            }
            Err(e) if e.status() == Some(StatusCode::FORBIDDEN) => {
                return Err(SessionError::Call(e));
            }
            Err(e) => {
                warn!(task_id = %task, error = %Chain(&e), "Cannot send status update; will retry")
            }
        }
    }
    Ok(())
}
