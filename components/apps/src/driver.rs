//! The Mesos v1 HTTP scheduler client, on `capstan-mesos-client`: SUBSCRIBE (RecordIO event
//! stream, `Mesos-Stream-Id`, 307 redirects to the leading master, heartbeat watchdog,
//! reconnect with the shared backoff across the configured masters), calls on a second
//! connection, and the framework id kept in the state machine (persisted in the store) so a
//! restarted apps re-registers as the same framework and keeps its tasks.

use std::time::Duration;

use capstan_mesos_client::{Calls, MasterClient, SessionEnd, StreamError, Subscription, reconnect};
use capstan_proto::mesos::v1 as pb;
use capstan_proto::mesos::v1::TaskStatus;
use capstan_proto::mesos::v1::scheduler::event::Type as EventType;
use capstan_proto::mesos::v1::scheduler::{Call, Event, call};
use capstan_types::FrameworkId;
use capstan_types::{Backoff, Chain, ClientCredential};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::http::CoreHandle;
pub use crate::mesos::OutCall;

/// Largest event apps accepts (an OFFERS event with many offers can be large).
const MAX_EVENT_BYTES: usize = 64 << 20;
/// Longest wait for the master to answer a SUBSCRIBE.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(75);
/// Longest wait for the master to answer a call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// First wait before resubscribing; doubles up to `backoff_max`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// How apps registers with Mesos.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub masters: Vec<String>,
    pub framework_name: String,
    pub user: String,
    pub role: String,
    pub hostname: String,
    pub webui_url: String,
    pub failover_timeout_secs: f64,
    pub backoff_max: Duration,
    pub heartbeat_failure_threshold: u32,
    /// Sent with every call to the master (strict mode); its principal goes into the
    /// framework info, as Mesos requires.
    pub credential: Option<(String, ClientCredential)>,
    /// The TLS spoken to the masters (strict mode: the node's certificate).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// The current subscription, for the call sender.
#[derive(Debug, Clone)]
struct Conn {
    calls: Calls,
    framework_id: capstan_types::FrameworkId,
}

/// Why one subscription ended.
#[derive(Debug)]
enum Ended {
    Closed,
    Failed(StreamError),
    Cancelled,
}

/// The SUBSCRIBE call apps sends.
pub fn subscribe_call(cfg: &DriverConfig, framework_id: Option<&str>) -> Call {
    use pb::framework_info::{Capability, capability};
    let id = framework_id.map(|id| pb::FrameworkId {
        value: id.to_string(),
    });
    #[allow(deprecated)] // Single-role framework: `role`, as Marathon registers.
    let framework_info = pb::FrameworkInfo {
        user: cfg.user.clone(),
        name: cfg.framework_name.clone(),
        id: id.clone(),
        failover_timeout: Some(cfg.failover_timeout_secs),
        checkpoint: Some(true),
        role: Some(cfg.role.clone()),
        hostname: Some(cfg.hostname.clone()),
        principal: cfg.credential.as_ref().map(|(p, _)| p.clone()),
        webui_url: Some(cfg.webui_url.clone()),
        capabilities: [
            capability::Type::PartitionAware,
            capability::Type::TaskKillingState,
        ]
        .into_iter()
        .map(|t| Capability {
            r#type: Some(t as i32),
        })
        .collect(),
        ..Default::default()
    };
    Call {
        framework_id: id,
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info,
            suppressed_roles: Vec::new(),
        }),
        ..Default::default()
    }
}

/// Runs until `token` is cancelled.
pub(crate) async fn run(
    cfg: DriverConfig,
    core: CoreHandle,
    calls: mpsc::Receiver<OutCall>,
    token: CancellationToken,
) {
    let client = MasterClient::for_masters(&cfg.masters, |c| {
        c.request_timeout = SUBSCRIBE_TIMEOUT;
        c.call_timeout = CALL_TIMEOUT;
        c.max_record_len = MAX_EVENT_BYTES;
        c.missed_heartbeats = cfg.heartbeat_failure_threshold;
        c.credential = cfg.credential.as_ref().map(|(_, c)| c.clone());
        c.tls = cfg.tls.clone();
    });
    let mut client = match client {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %Chain(&e), "Cannot build the master client; not connecting to Mesos");
            return;
        }
    };
    let (conn_tx, conn_rx) = watch::channel(None::<Conn>);
    let sender = tokio::spawn(send_calls(calls, conn_rx, token.clone()));
    let backoff = Backoff::new(MIN_BACKOFF, cfg.backoff_max);
    reconnect(backoff, &token, async move || {
        let end = session(&mut client, &cfg, &core, &conn_tx).await;
        conn_tx.send_replace(None);
        let _ = core.submit(|c, _| c.disconnected()).await;
        end
    })
    .await;
    sender.abort();
}

/// One subscription: SUBSCRIBE on the leading master, then its events until the stream ends.
async fn session(
    client: &mut MasterClient,
    cfg: &DriverConfig,
    core: &CoreHandle,
    conn_tx: &watch::Sender<Option<Conn>>,
) -> SessionEnd {
    let Ok(framework_id) = core
        .submit(|c, _| c.framework_id().map(|f| f.as_str().to_string()))
        .await
    else {
        return SessionEnd::Stop;
    };
    let body = capstan_proto::to_json_string(&subscribe_call(cfg, framework_id.as_deref()));
    let mut sub = match client.subscribe_scheduler(body).await {
        Ok(sub) => sub,
        Err(e) => {
            warn!(error = %Chain(&e), "Subscription to Mesos failed");
            return SessionEnd::after(0);
        }
    };
    let master = sub.leader().clone();
    match consume(&mut sub, client, core, conn_tx).await {
        Ended::Cancelled => return SessionEnd::Stop,
        Ended::Closed => warn!(master = %master, "Subscription to Mesos closed"),
        Ended::Failed(e) => {
            warn!(master = %master, error = %Chain(&e), "Subscription to Mesos failed")
        }
    }
    SessionEnd::after(sub.records())
}

/// Hands the events of an open subscription to the core.
async fn consume(
    sub: &mut Subscription,
    client: &MasterClient,
    core: &CoreHandle,
    conn_tx: &watch::Sender<Option<Conn>>,
) -> Ended {
    loop {
        let first = match sub.next().await {
            Ok(Some(record)) => record,
            Ok(None) => return Ended::Closed,
            Err(e) => return Ended::Failed(e),
        };
        // Whatever else already arrived is handled with it.
        let mut records = vec![first];
        loop {
            match sub.next_ready() {
                Ok(Some(record)) => records.push(record),
                Ok(None) => break,
                Err(e) => return Ended::Failed(e),
            }
        }
        let events: Vec<Event> = records.iter().filter_map(|r| decode_event(r)).collect();
        // Consecutive status updates go to the core in one job (applied one by one there).
        let mut updates: Vec<TaskStatus> = Vec::new();
        for event in events {
            let kind = event
                .r#type
                .and_then(|t| EventType::try_from(t).ok())
                .unwrap_or(EventType::Unknown);
            if kind == EventType::Update {
                if let Some(update) = event.update {
                    updates.push(update.status);
                }
                continue;
            }
            if !updates.is_empty() {
                let statuses = std::mem::take(&mut updates);
                if core
                    .submit(move |c, now| c.updates(&statuses, now))
                    .await
                    .is_err()
                {
                    return Ended::Cancelled;
                }
            }
            let result = match kind {
                EventType::Subscribed => {
                    let subscribed = event.subscribed.unwrap_or_default();
                    let fw = FrameworkId::from(subscribed.framework_id.value);
                    if let Some(h) = subscribed.heartbeat_interval_seconds {
                        sub.set_heartbeat_interval_secs(h);
                    }
                    info!(master = %sub.leader(), framework_id = %fw, "Subscribed to Mesos");
                    conn_tx.send_replace(Some(Conn {
                        calls: client.scheduler_calls(sub),
                        framework_id: fw.clone(),
                    }));
                    core.submit(move |c, now| c.subscribed(&fw, now)).await
                }
                EventType::Offers => {
                    let offers = event.offers.map(|o| o.offers).unwrap_or_default();
                    core.submit(move |c, now| c.offers(&offers, now)).await
                }
                EventType::Error => {
                    let message = event.error.map(|e| e.message).unwrap_or_default();
                    warn!(message = %message, "Mesos sent an error");
                    if message.contains("removed")
                        || message.contains("teardown")
                        || message.contains("not registered")
                    {
                        let _ = core.submit(|c, _| c.framework_removed()).await;
                    }
                    return Ended::Closed;
                }
                EventType::Failure => {
                    let agent = event
                        .failure
                        .and_then(|f| f.agent_id)
                        .map(|a| a.value)
                        .unwrap_or_default();
                    info!(agent = %agent, "Mesos reports an agent or executor failure");
                    Ok(())
                }
                other => {
                    debug!(event = other.as_str_name(), "Mesos event");
                    Ok(())
                }
            };
            if result.is_err() {
                return Ended::Cancelled;
            }
        }
        if !updates.is_empty()
            && core
                .submit(move |c, now| c.updates(&updates, now))
                .await
                .is_err()
        {
            return Ended::Cancelled;
        }
    }
}

/// One event record, decoded once into a typed `scheduler::Event`. A record that is not a
/// valid event is logged and skipped.
fn decode_event(record: &[u8]) -> Option<Event> {
    let raw: Value = match serde_json::from_slice(record) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %Chain(&e), "Ignoring undecodable event");
            return None;
        }
    };
    match capstan_proto::from_json::<Event>(&raw) {
        Ok(event) => Some(event),
        Err(e) => {
            let kind = raw["type"].as_str().unwrap_or_default();
            warn!(event = kind, error = %Chain(&e), "Ignoring invalid event");
            None
        }
    }
}

/// Calls that may overtake one another: each names its own offer or status update.
fn reorderable(call: &OutCall) -> bool {
    matches!(call.kind, "ACKNOWLEDGE" | "ACCEPT" | "DECLINE")
}

/// Most calls sent at once.
const CALLS_IN_FLIGHT: usize = 32;

/// Sends calls in order, except that a run of [`reorderable`] calls goes out concurrently
/// (acknowledgements of a burst of status updates need not wait for one another); any other
/// call (KILL, REVIVE, RECONCILE ...) waits until everything before it was answered.
async fn send_calls(
    mut calls: mpsc::Receiver<OutCall>,
    conn: watch::Receiver<Option<Conn>>,
    token: CancellationToken,
) {
    let mut batch: Vec<OutCall> = Vec::new();
    loop {
        let first = tokio::select! {
            _ = token.cancelled() => return,
            c = calls.recv() => match c { Some(c) => c, None => return },
        };
        batch.push(first);
        while batch.len() < 1024 {
            match calls.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut pending = batch.drain(..).peekable();
        while let Some(call) = pending.next() {
            if !reorderable(&call) {
                send_call(&conn, call).await;
                continue;
            }
            let mut run = vec![call];
            while let Some(next) = pending.next_if(reorderable) {
                run.push(next);
            }
            futures::stream::iter(run)
                .for_each_concurrent(CALLS_IN_FLIGHT, |call| send_call(&conn, call))
                .await;
        }
    }
}

async fn send_call(conn: &watch::Receiver<Option<Conn>>, call: OutCall) {
    let Some(conn) = conn.borrow().clone() else {
        debug!(call = %call.kind, "Not subscribed; dropping call");
        return;
    };
    let kind = call.kind;
    let body = call.into_body(conn.framework_id.as_str());
    match conn.calls.send_json(body).await {
        Ok(_) => debug!(call = %kind, "Call accepted"),
        Err(e) => match e.status() {
            Some(status) => {
                warn!(call = %kind, status = status.as_u16(), body = %e.body(), "Mesos rejected a call")
            }
            None => warn!(call = %kind, error = %Chain(&e), "Cannot send call to Mesos"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queued_calls_get_the_framework_id_when_sent() {
        let call = OutCall::new(Call {
            r#type: Some(call::Type::Revive as i32),
            revive: Some(call::Revive::default()),
            ..Call::default()
        });
        assert_eq!(call.kind, "REVIVE");
        let sent: Value = serde_json::from_str(&call.body("F-1")).unwrap();
        assert_eq!(
            sent,
            json!({"type": "REVIVE", "revive": {}, "framework_id": {"value": "F-1"}})
        );
        let empty: Value = serde_json::from_str(&OutCall::new(Call::default()).body("F")).unwrap();
        assert_eq!(empty, json!({"framework_id": {"value": "F"}}));
    }

    #[test]
    fn subscribe_call_is_a_valid_mesos_call_with_marathon_capabilities() {
        let cfg = DriverConfig {
            masters: vec![],
            framework_name: "marathon".into(),
            user: "root".into(),
            role: "*".into(),
            hostname: "h".into(),
            webui_url: "http://h:8080".into(),
            failover_timeout_secs: 604_800.0,
            backoff_max: Duration::from_secs(1),
            heartbeat_failure_threshold: 5,
            credential: None,
            tls: None,
        };
        let v = capstan_proto::to_json(&subscribe_call(&cfg, Some("F-0001")));
        let call: capstan_proto::mesos::v1::scheduler::Call = capstan_proto::from_json(&v).unwrap();
        let fi = call.subscribe.unwrap().framework_info;
        assert_eq!(fi.name, "marathon");
        assert_eq!(fi.failover_timeout, Some(604_800.0));
        assert_eq!(fi.id.unwrap().value, "F-0001");
        assert_eq!(fi.capabilities.len(), 2);
    }

    #[test]
    fn events_are_decoded_once_and_invalid_ones_skipped() {
        let update = json!({"type": "UPDATE", "update": {"status": {
            "task_id": {"value": "T"}, "state": "TASK_RUNNING", "uuid": "AQID"}}});
        let event = decode_event(update.to_string().as_bytes()).unwrap();
        let status = event.update.unwrap().status;
        assert_eq!(status.task_id.value, "T");
        assert_eq!(status.uuid, Some(vec![1, 2, 3]));
        // A status without its required task id, an unknown state, and no JSON at all.
        let no_task = json!({"type": "UPDATE", "update": {"status": {"state": "TASK_RUNNING"}}});
        assert!(decode_event(no_task.to_string().as_bytes()).is_none());
        let bad_state = json!({"type": "UPDATE", "update": {"status": {
            "task_id": {"value": "T"}, "state": "TASK_NAPPING"}}});
        assert!(decode_event(bad_state.to_string().as_bytes()).is_none());
        assert!(decode_event(b"{not json").is_none());
    }
}
