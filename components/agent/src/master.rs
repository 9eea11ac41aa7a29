//! The master link: speaks `capstan.agent.v1` (see `components/proto/proto/capstan/agent/v1`).
//!
//! One SUBSCRIBE stream per session (`POST /api/capstan/agent/v1`, RecordIO of `Event`s),
//! other calls as separate POSTs. Status updates are sent head-of-queue per task: only a
//! task's oldest unacknowledged update is in flight, resent with the same uuid until the
//! master's ACKNOWLEDGED, then the next one goes. Masters are tried in turn; a `307` is
//! followed to the leader.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use capstan_proto::capstan::agent::v1::{Call, Event, RunningTask, call, event};
use capstan_proto::mesos::v1::{
    AgentId, AgentInfo, Attribute, ExecutorId, FrameworkId, Resource, TaskState, TaskStatus,
};
use capstan_proto::recordio::RecordIoDecoder;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::manager::executor::ExecutorMessage;
use crate::manager::{StatusUpdate, TaskManagerHandle, is_terminal};

const PATH: &str = "/api/capstan/agent/v1";
const MAX_RECORD: usize = 64 * 1024 * 1024;
/// Longest pause between attempts: short, so agents are back soon after a master failover.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

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
    pub update_retry: Duration,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot reach the master: {0}")]
    Http(#[from] reqwest::Error),
    #[error("master answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("redirected to {0}")]
    Redirect(String),
    #[error("the event stream ended")]
    StreamEnded,
    #[error("bad event stream: {0}")]
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
    let client = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "Cannot build the HTTP client for the master link");
            return;
        }
    };
    let mut next = 0usize;
    let mut target: Option<String> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let master = target
            .take()
            .unwrap_or_else(|| cfg.masters[next % cfg.masters.len()].clone());
        let result = session(&cfg, &client, &master, &tasks, &connected, &shutdown).await;
        if connected.send_replace(false) {
            // The session was up: the next master (a new leader) is tried promptly.
            backoff = Duration::from_millis(100);
        }
        match result {
            Err(SessionError::Shutdown) => return,
            Err(SessionError::Redirect(leader)) => {
                debug!(%master, %leader, "Following redirect to the leading master");
                target = Some(leader);
                continue;
            }
            Err(e) => {
                warn!(%master, error = %e, "Master session ended");
                next += 1;
            }
            Ok(()) => next += 1,
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
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
            },
            tasks: running,
            ip: Some(cfg.ip.clone()),
            version: Some("1.11.0".to_owned()),
        }),
        update: None,
        message: None,
    }
}

async fn post(client: &reqwest::Client, master: &str, call: &Call) -> Result<(), SessionError> {
    let r = client
        .post(format!("http://{master}{PATH}"))
        .header("Content-Type", "application/json")
        .body(capstan_proto::to_json_vec(call))
        .send()
        .await?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(SessionError::Refused {
            status: r.status().as_u16(),
            body: r.text().await.unwrap_or_default(),
        })
    }
}

/// `//host:port/path` or `http://host:port/path` → `host:port`.
pub fn redirect_target(location: &str) -> Option<String> {
    let rest = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("//"))?;
    let hostport = rest.split('/').next()?;
    (!hostport.is_empty()).then(|| hostport.to_owned())
}

async fn session(
    cfg: &LinkConfig,
    client: &reqwest::Client,
    master: &str,
    tasks: &TaskManagerHandle,
    connected: &watch::Sender<bool>,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let call = subscribe_call(cfg, tasks);
    let request = client
        .post(format!("http://{master}{PATH}"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(capstan_proto::to_json_vec(&call))
        .send();
    let resp = tokio::select! {
        _ = shutdown.cancelled() => return Err(SessionError::Shutdown),
        r = request => r?,
    };
    let status = resp.status().as_u16();
    if status == 307 {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(redirect_target)
            .ok_or_else(|| SessionError::Protocol("307 without a usable Location".into()))?;
        return Err(SessionError::Redirect(loc));
    }
    if status != 200 {
        let body = resp.text().await.unwrap_or_default();
        if status == 403 && body.contains("gone") {
            // The protocol: wipe the state and subscribe again without an id.
            let _ = tasks.wipe().await;
        }
        return Err(SessionError::Refused { status, body });
    }
    let mut body = resp.bytes_stream();
    let mut decoder = RecordIoDecoder::new(MAX_RECORD);
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
            chunk = body.next() => {
                let Some(chunk) = chunk else { return Err(SessionError::StreamEnded) };
                decoder.push(&chunk?);
                while let Some(record) = decoder.next_record().map_err(|e| SessionError::Protocol(e.to_string()))? {
                    let ev: Event = capstan_proto::from_json_slice(&record)
                        .map_err(|e| SessionError::Protocol(e.to_string()))?;
                    if handle_event(ev, client, master, tasks, &mut agent_id, connected).await? {
                        flush = true;
                        in_flight.clear();
                    } else {
                        flush = true;
                    }
                }
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
                    if let Err(e) = post(client, master, &call).await {
                        warn!(error = %e, "Cannot forward an executor message");
                    }
                }
            }
            u = updates.recv() => {
                flush = u.is_ok() || matches!(u, Err(tokio::sync::broadcast::error::RecvError::Lagged(_)));
            }
            _ = tick.tick() => flush = true,
        }
        if let (true, Some(id)) = (flush, agent_id.as_deref()) {
            send_heads(client, master, tasks, id, &mut in_flight, cfg.update_retry).await?;
        }
    }
}

/// Returns true when the event (re)started the session (SUBSCRIBED).
async fn handle_event(
    ev: Event,
    client: &reqwest::Client,
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
            post(client, master, &pong).await?;
        }
        event::Type::Launch => {
            if let Some(l) = ev.launch
                && let Err(e) = tasks.launch_with_framework(l.framework_info, l.task).await
            {
                warn!(error = %e, "Cannot launch task");
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
                        warn!(error = %e, "Cannot launch task of a group");
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
    client: &reqwest::Client,
    master: &str,
    tasks: &TaskManagerHandle,
    agent_id: &str,
    in_flight: &mut HashMap<String, (Vec<u8>, Instant)>,
    retry: Duration,
) -> Result<(), SessionError> {
    let Ok(pending) = tasks.unacknowledged().await else {
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
        match post(client, master, &update).await {
            Ok(()) => {
                in_flight.insert(task, (uuid, now));
            }
            Err(SessionError::Refused { status: 403, body }) => {
                return Err(SessionError::Refused { status: 403, body });
            }
            Err(e) => warn!(task_id = %task, error = %e, "Cannot send status update; will retry"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_name_the_leader() {
        assert_eq!(
            redirect_target("//10.0.0.1:5050/api/capstan/agent/v1").as_deref(),
            Some("10.0.0.1:5050")
        );
        assert_eq!(
            redirect_target("http://m2:5050/x").as_deref(),
            Some("m2:5050")
        );
        assert_eq!(redirect_target("/relative"), None);
    }
}
