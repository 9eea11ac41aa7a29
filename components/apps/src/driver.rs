//! The Mesos v1 HTTP scheduler client: SUBSCRIBE (RecordIO event stream, `Mesos-Stream-Id`,
//! 307 redirects to the leading master), calls on a second connection, heartbeat watchdog,
//! reconnect with backoff across the configured masters, and the framework id kept in the
//! state machine (persisted in the store) so a restarted apps re-registers as the same
//! framework and keeps its tasks.

use std::time::Duration;

use capstan_proto::recordio::RecordIoDecoder;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::http::CoreHandle;
pub use crate::mesos::OutCall;

/// Largest event apps accepts (an OFFERS event with many offers can be large).
const MAX_EVENT_BYTES: usize = 64 << 20;

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
}

/// The current subscription, for the call sender.
#[derive(Debug, Clone, PartialEq)]
struct Conn {
    base: String,
    stream_id: String,
    framework_id: String,
}

/// Why one subscription ended.
#[derive(Debug)]
enum Ended {
    Redirect(String),
    Closed { subscribed: bool },
    Failed { subscribed: bool, error: String },
    Cancelled,
}

/// `//host:port/path` or `http://host:port/path` → `http://host:port`.
pub fn redirect_base(location: &str) -> Option<String> {
    let rest = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("//"))?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("http://{host}"))
}

/// The SUBSCRIBE call apps sends.
pub fn subscribe_call(cfg: &DriverConfig, framework_id: Option<&str>) -> Value {
    let mut fi = json!({
        "user": cfg.user, "name": cfg.framework_name, "failover_timeout": cfg.failover_timeout_secs,
        "checkpoint": true, "role": cfg.role, "hostname": cfg.hostname, "webui_url": cfg.webui_url,
        "capabilities": [{"type": "PARTITION_AWARE"}, {"type": "TASK_KILLING_STATE"}],
    });
    let mut call = json!({"type": "SUBSCRIBE", "subscribe": {}});
    if let Some(id) = framework_id {
        fi["id"] = json!({ "value": id });
        call["framework_id"] = json!({ "value": id });
    }
    call["subscribe"]["framework_info"] = fi;
    call
}

/// Runs until `token` is cancelled.
pub(crate) async fn run(
    cfg: DriverConfig,
    core: CoreHandle,
    calls: mpsc::Receiver<OutCall>,
    token: CancellationToken,
) {
    let (conn_tx, conn_rx) = watch::channel(None::<Conn>);
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "Cannot build HTTP client; not connecting to Mesos");
            return;
        }
    };
    let sender = tokio::spawn(send_calls(client.clone(), calls, conn_rx, token.clone()));
    let mut backoff = Duration::from_millis(100);
    let mut index = 0usize;
    let mut redirected: Option<String> = None;
    let mut redirects = 0;
    loop {
        let base = redirected.take().unwrap_or_else(|| {
            cfg.masters[index % cfg.masters.len()]
                .trim_end_matches('/')
                .to_string()
        });
        let ended = subscribe_once(&client, &cfg, &base, &core, &conn_tx, &token).await;
        conn_tx.send_replace(None);
        let _ = core.call(|c, _| c.disconnected()).await;
        match ended {
            Ended::Cancelled => break,
            Ended::Redirect(to) if redirects < 5 => {
                debug!(from = %base, to = %to, "Following redirect to the leading master");
                redirects += 1;
                redirected = Some(to);
                continue;
            }
            Ended::Redirect(to) => warn!(to = %to, "Too many redirects between masters"),
            Ended::Closed { subscribed } => {
                warn!(master = %base, "Subscription to Mesos closed");
                if subscribed {
                    backoff = Duration::from_millis(100);
                }
            }
            Ended::Failed { subscribed, error } => {
                warn!(master = %base, error = %error, "Subscription to Mesos failed");
                if subscribed {
                    backoff = Duration::from_millis(100);
                }
            }
        }
        redirects = 0;
        index += 1;
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
    sender.abort();
}

async fn subscribe_once(
    client: &reqwest::Client,
    cfg: &DriverConfig,
    base: &str,
    core: &CoreHandle,
    conn_tx: &watch::Sender<Option<Conn>>,
    token: &CancellationToken,
) -> Ended {
    let failed = |subscribed, error: String| Ended::Failed { subscribed, error };
    let Ok(framework_id) = core.call(|c, _| c.framework_id().map(str::to_string)).await else {
        return Ended::Cancelled;
    };
    let body = subscribe_call(cfg, framework_id.as_deref()).to_string();
    let req = client
        .post(format!("{base}/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(body)
        .send();
    let resp = tokio::select! {
        _ = token.cancelled() => return Ended::Cancelled,
        r = tokio::time::timeout(Duration::from_secs(75), req) => match r {
            Err(_) => return failed(false, "SUBSCRIBE timed out".into()),
            Ok(Err(e)) => return failed(false, format!("SUBSCRIBE: {e}")),
            Ok(Ok(r)) => r,
        },
    };
    let status = resp.status().as_u16();
    if status == 307 {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(redirect_base);
        return match loc {
            Some(to) => Ended::Redirect(to),
            None => failed(false, "307 without a usable Location".into()),
        };
    }
    if status != 200 {
        let text = resp.text().await.unwrap_or_default();
        return failed(false, format!("SUBSCRIBE answered {status}: {text}"));
    }
    let stream_id = resp
        .headers()
        .get("mesos-stream-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut stream = resp.bytes_stream();
    let mut decoder = RecordIoDecoder::new(MAX_EVENT_BYTES);
    let mut heartbeat = Duration::from_secs(15);
    let mut subscribed = false;
    loop {
        let limit = heartbeat * cfg.heartbeat_failure_threshold.max(1);
        let chunk = tokio::select! {
            _ = token.cancelled() => return Ended::Cancelled,
            c = tokio::time::timeout(limit, stream.next()) => c,
        };
        let bytes = match chunk {
            Err(_) => return failed(subscribed, format!("no event for {limit:?}; reconnecting")),
            Ok(None) => return Ended::Closed { subscribed },
            Ok(Some(Err(e))) => return failed(subscribed, format!("event stream: {e}")),
            Ok(Some(Ok(b))) => b,
        };
        decoder.push(&bytes);
        let mut events: Vec<Value> = Vec::new();
        loop {
            match decoder.next_record() {
                Ok(Some(record)) => match serde_json::from_slice(&record) {
                    Ok(v) => events.push(v),
                    Err(e) => warn!(error = %e, "Ignoring undecodable event"),
                },
                Ok(None) => break,
                Err(e) => return failed(subscribed, format!("bad RecordIO: {e}")),
            }
        }
        // Consecutive status updates go to the core in one job (applied one by one there).
        let mut updates: Vec<Value> = Vec::new();
        for mut event in events {
            let kind = event["type"].as_str().unwrap_or_default().to_string();
            if kind == "UPDATE" {
                updates.push(event["update"]["status"].take());
                continue;
            }
            if !updates.is_empty() {
                let statuses = std::mem::take(&mut updates);
                if core
                    .call(move |c, now| c.updates(&statuses, now))
                    .await
                    .is_err()
                {
                    return Ended::Cancelled;
                }
            }
            let result = match kind.as_str() {
                "SUBSCRIBED" => {
                    let fw = event["subscribed"]["framework_id"]["value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if let Some(h) = event["subscribed"]["heartbeat_interval_seconds"].as_f64()
                        && h > 0.0
                    {
                        heartbeat = Duration::from_secs_f64(h);
                    }
                    subscribed = true;
                    info!(master = %base, framework_id = %fw, "Subscribed to Mesos");
                    conn_tx.send_replace(Some(Conn {
                        base: base.to_string(),
                        stream_id: stream_id.clone(),
                        framework_id: fw.clone(),
                    }));
                    core.call(move |c, now| c.subscribed(&fw, now)).await
                }
                "OFFERS" => {
                    let offers = match event["offers"]["offers"].take() {
                        Value::Array(offers) => offers,
                        _ => Vec::new(),
                    };
                    core.call(move |c, now| c.offers(&offers, now)).await
                }
                "ERROR" => {
                    let message = event["error"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    warn!(message = %message, "Mesos sent an error");
                    if message.contains("removed")
                        || message.contains("teardown")
                        || message.contains("not registered")
                    {
                        let _ = core.call(|c, _| c.framework_removed()).await;
                    }
                    return Ended::Closed { subscribed };
                }
                "FAILURE" => {
                    info!(agent = %event["failure"]["agent_id"]["value"], "Mesos reports an agent or executor failure");
                    Ok(())
                }
                other => {
                    debug!(event = other, "Mesos event");
                    Ok(())
                }
            };
            if result.is_err() {
                return Ended::Cancelled;
            }
        }
        if !updates.is_empty()
            && core
                .call(move |c, now| c.updates(&updates, now))
                .await
                .is_err()
        {
            return Ended::Cancelled;
        }
    }
}

/// Calls that may overtake one another: each names its own offer or status update.
fn reorderable(call: &OutCall) -> bool {
    matches!(call.kind.as_str(), "ACKNOWLEDGE" | "ACCEPT" | "DECLINE")
}

/// Most calls sent at once.
const CALLS_IN_FLIGHT: usize = 32;

/// Sends calls in order, except that a run of [`reorderable`] calls goes out concurrently
/// (acknowledgements of a burst of status updates need not wait for one another); any other
/// call (KILL, REVIVE, RECONCILE ...) waits until everything before it was answered.
async fn send_calls(
    client: reqwest::Client,
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
                send_call(&client, &conn, call).await;
                continue;
            }
            let mut run = vec![call];
            while let Some(next) = pending.next_if(reorderable) {
                run.push(next);
            }
            futures::stream::iter(run)
                .for_each_concurrent(CALLS_IN_FLIGHT, |call| send_call(&client, &conn, call))
                .await;
        }
    }
}

async fn send_call(client: &reqwest::Client, conn: &watch::Receiver<Option<Conn>>, call: OutCall) {
    let Some(conn) = conn.borrow().clone() else {
        debug!(call = %call.kind, "Not subscribed; dropping call");
        return;
    };
    let body = call.body(&conn.framework_id);
    let kind = call.kind;
    let sent = client
        .post(format!("{}/api/v1/scheduler", conn.base))
        .header("Content-Type", "application/json")
        .header("Mesos-Stream-Id", &conn.stream_id)
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    match sent {
        Ok(r) if r.status().as_u16() == 202 || r.status().as_u16() == 200 => {
            debug!(call = %kind, "Call accepted")
        }
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            warn!(call = %kind, status, body = %text, "Mesos rejected a call");
        }
        Err(e) => warn!(call = %kind, error = %e, "Cannot send call to Mesos"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_calls_get_the_framework_id_when_sent() {
        let call = OutCall::new(&json!({"type": "REVIVE", "revive": {}}));
        assert_eq!(call.kind, "REVIVE");
        let sent: Value = serde_json::from_str(&call.body("F-1")).unwrap();
        assert_eq!(
            sent,
            json!({"type": "REVIVE", "revive": {}, "framework_id": {"value": "F-1"}})
        );
        let empty: Value = serde_json::from_str(&OutCall::new(&json!({})).body("F")).unwrap();
        assert_eq!(empty, json!({"framework_id": {"value": "F"}}));
    }

    #[test]
    fn redirect_locations_become_base_urls() {
        assert_eq!(
            redirect_base("//m2:5050/api/v1/scheduler").as_deref(),
            Some("http://m2:5050")
        );
        assert_eq!(
            redirect_base("http://10.0.0.1:5050/api/v1/scheduler").as_deref(),
            Some("http://10.0.0.1:5050")
        );
        assert_eq!(redirect_base("/relative"), None);
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
        };
        let v = subscribe_call(&cfg, Some("F-0001"));
        let call: capstan_proto::mesos::v1::scheduler::Call = capstan_proto::from_json(&v).unwrap();
        let fi = call.subscribe.unwrap().framework_info;
        assert_eq!(fi.name, "marathon");
        assert_eq!(fi.failover_timeout, Some(604_800.0));
        assert_eq!(fi.id.unwrap().value, "F-0001");
        assert_eq!(fi.capabilities.len(), 2);
    }
}
