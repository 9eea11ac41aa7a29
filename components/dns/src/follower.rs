//! Follows the leading master through the operator API `SUBSCRIBE` stream and republishes the
//! records after every batch of events, so a task is resolvable the moment the master reports
//! it `TASK_RUNNING`.
//!
//! This task owns the [`ClusterState`]. It tries the configured masters in turn, follows a
//! `307` to the leader, and treats a stream without a byte for `missed_heartbeats` heartbeat
//! intervals as dead. While no master answers, the last published records stay in service;
//! the next `SUBSCRIBED` snapshot replaces the model wholesale (a resync).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_proto::mesos::v1::master::Event;
use capstan_proto::mesos::v1::master::event::Type as EventType;
use capstan_proto::recordio::RecordIoDecoder;
use futures::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::model::ClusterState;
use crate::records::{SynthConfig, synthesize_shared};
use crate::server::Publisher;
use crate::snapshot::Producer;

/// What the follower is doing, for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterStatus {
    /// `host:port` of the master whose stream we read (or last read).
    pub leader: Option<String>,
    /// A stream is open right now.
    pub subscribed: bool,
    /// How many subscriptions succeeded (each one is a full resync).
    pub subscriptions: u64,
    /// Events applied since start.
    pub events: u64,
}

/// Settings of the stream follower.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// Master HTTP addresses (`host:port`).
    pub masters: Vec<String>,
    pub timeout: Duration,
    pub missed_heartbeats: u32,
    pub backoff_max: Duration,
    pub synth: SynthConfig,
}

/// Why a subscription ended or could not start (logged, then retried).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot reach master at {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("master at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("master at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("master at {url} redirected without a usable Location")]
    BadRedirect { url: String },
    #[error("too many redirects starting at {url}")]
    RedirectLoop { url: String },
    #[error("the event stream broke")]
    Body(#[source] reqwest::Error),
    #[error("no data from the master for {0:?}")]
    Idle(Duration),
    #[error("the master closed the event stream")]
    Closed,
    #[error("the event stream is not valid RecordIO")]
    Framing(#[source] capstan_proto::recordio::RecordIoError),
}

const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Most extra already-received chunks folded into one record update.
const MAX_BATCH_CHUNKS: usize = 256;

/// Runs until `shutdown` is cancelled.
pub async fn run(
    cfg: FollowerConfig,
    publisher: Publisher,
    status: watch::Sender<MasterStatus>,
    shutdown: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "Cannot build the HTTP client; not following any master");
            return;
        }
    };
    // Shared with the published records (for `/v1/enumerate`): changed copy-on-write, so
    // between bursts of events one copy of the cluster exists, not two.
    let mut state = Arc::new(ClusterState::default());
    let mut backoff = MIN_BACKOFF;
    let mut next = 0usize;
    let n = cfg.masters.len().max(1);
    while !shutdown.is_cancelled() {
        let mut subscribed = false;
        for i in 0..cfg.masters.len() {
            let idx = (next + i) % n;
            let master = &cfg.masters[idx];
            let attempt = tokio::select! {
                r = subscribe(&client, master, cfg.timeout) => r,
                _ = shutdown.cancelled() => return,
            };
            match attempt {
                Ok((resp, leader)) => {
                    subscribed = true;
                    next = idx;
                    let masters = resolve_all(&cfg.masters).await;
                    let leader_addr = resolve(&leader).await;
                    let st = Arc::make_mut(&mut state);
                    st.masters = masters;
                    st.leader = leader_addr;
                    info!(master = %leader, "Subscribed to the leading master's event stream");
                    status.send_modify(|s| {
                        s.leader = Some(leader.clone());
                        s.subscribed = true;
                        s.subscriptions += 1;
                    });
                    let end = consume(resp, &mut state, &cfg, &publisher, &status, &shutdown).await;
                    status.send_modify(|s| s.subscribed = false);
                    match end {
                        Ok(()) => return,
                        Err(e) => {
                            warn!(master = %leader, error = %e, "Lost the master's event stream; serving the last known records")
                        }
                    }
                    break;
                }
                Err(e) => debug!(master = %master, error = %e, "Master not usable"),
            }
        }
        if subscribed {
            backoff = MIN_BACKOFF;
            // Start with the next master: the one we had may be gone.
            next = (next + 1) % n;
        } else {
            warn!(masters = ?cfg.masters, retry_in = ?backoff, "No master answered; serving the last known records");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        if !subscribed {
            backoff = (backoff * 2).min(cfg.backoff_max.max(MIN_BACKOFF));
        }
    }
}

/// Posts `SUBSCRIBE`, following redirects to the leader. Returns the streaming response and
/// the `host:port` that accepted it.
async fn subscribe(
    client: &reqwest::Client,
    master: &str,
    timeout: Duration,
) -> Result<(reqwest::Response, String), StreamError> {
    let first = format!("http://{master}/api/v1");
    let mut url = first.clone();
    for _ in 0..4 {
        let send = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(r#"{"type":"SUBSCRIBE"}"#)
            .send();
        let resp = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| StreamError::Timeout {
                url: url.clone(),
                timeout,
            })?
            .map_err(|source| StreamError::Connect {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        if status.is_success() {
            let authority = resp
                .url()
                .host_str()
                .map(|h| {
                    format!(
                        "{}:{}",
                        h,
                        resp.url().port_or_known_default().unwrap_or(5050)
                    )
                })
                .unwrap_or_else(|| master.to_owned());
            return Ok((resp, authority));
        }
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| StreamError::BadRedirect { url: url.clone() })?;
            url = absolutize(loc, &url)
                .ok_or_else(|| StreamError::BadRedirect { url: url.clone() })?;
            debug!(to = %url, "Following the redirect to the leading master");
            continue;
        }
        let body = tokio::time::timeout(timeout, resp.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(StreamError::Status {
            url,
            status,
            body: body.chars().take(200).collect(),
        });
    }
    Err(StreamError::RedirectLoop { url: first })
}

/// Resolves a redirect target: protocol-relative (`//host:port/path`), absolute path, or URL.
pub fn absolutize(location: &str, base: &str) -> Option<String> {
    let base = reqwest::Url::parse(base).ok()?;
    let joined = base.join(location).ok()?;
    matches!(joined.scheme(), "http").then(|| joined.to_string())
}

async fn consume(
    mut resp: reqwest::Response,
    state: &mut Arc<ClusterState>,
    cfg: &FollowerConfig,
    publisher: &Publisher,
    status: &watch::Sender<MasterStatus>,
    shutdown: &CancellationToken,
) -> Result<(), StreamError> {
    let mut decoder = RecordIoDecoder::default();
    let mut heartbeat = DEFAULT_HEARTBEAT;
    let synth = Arc::new(cfg.synth.clone());
    // Changes not yet published, and when the next synthesis may run.
    let mut dirty = false;
    let mut not_before = Instant::now();
    loop {
        let idle = heartbeat * cfg.missed_heartbeats.max(1);
        let chunk = tokio::select! {
            c = tokio::time::timeout(idle, resp.chunk()) => Some(c),
            _ = tokio::time::sleep_until(not_before), if dirty => None,
            _ = shutdown.cancelled() => return Ok(()),
        };
        if let Some(chunk) = chunk {
            let end = match chunk {
                Err(_) => Some(StreamError::Idle(idle)),
                Ok(Err(e)) => Some(StreamError::Body(e)),
                Ok(Ok(None)) => Some(StreamError::Closed),
                Ok(Ok(Some(bytes))) => {
                    decoder.push(&bytes);
                    None
                }
            };
            if let Some(end) = end {
                if dirty {
                    publish(state, &synth, publisher).await;
                }
                return Err(end);
            }
            // Take whatever else already arrived, so a burst of events costs one synthesis.
            for _ in 0..MAX_BATCH_CHUNKS {
                match resp.chunk().now_or_never() {
                    Some(Ok(Some(bytes))) => decoder.push(&bytes),
                    _ => break,
                }
            }
            while let Some(record) = decoder.next_record().map_err(StreamError::Framing)? {
                let event: Event = match capstan_proto::from_json_slice(&record) {
                    Ok(e) => e,
                    Err(e) => {
                        warn!(error = %e, "Skipping an operator event that does not decode");
                        continue;
                    }
                };
                if event.r#type == Some(EventType::Subscribed as i32) {
                    if let Some(secs) = event
                        .subscribed
                        .as_ref()
                        .and_then(|s| s.heartbeat_interval_seconds)
                        && let Ok(d) = Duration::try_from_secs_f64(secs)
                        && !d.is_zero()
                    {
                        heartbeat = d;
                    }
                    info!(tasks = ?event.subscribed.as_ref().and_then(|s| s.get_state.as_ref()).and_then(|s| s.get_tasks.as_ref()).map(|t| t.tasks.len()), "Received the cluster state");
                }
                if event.r#type != Some(EventType::Heartbeat as i32) {
                    dirty |= Arc::make_mut(state).apply_event(&event);
                }
                status.send_modify(|s| s.events += 1);
            }
        }
        if dirty && Instant::now() >= not_before {
            let started = Instant::now();
            publish(state, &synth, publisher).await;
            dirty = false;
            // Spend at most about half the time synthesising: on a big cluster a burst of
            // events is coalesced, on a small one every event is published at once.
            not_before = Instant::now() + started.elapsed();
        }
    }
}

/// Synthesises the records off the async threads and publishes them.
async fn publish(state: &Arc<ClusterState>, synth: &Arc<SynthConfig>, publisher: &Publisher) {
    let shared = state.clone();
    let tasks = shared.tasks.len();
    let synth = synth.clone();
    match tokio::task::spawn_blocking(move || synthesize_shared(shared, synth)).await {
        Ok(records) => {
            debug!(names = records.len(), tasks, "Records updated");
            publisher.publish(Producer::Mesos, records);
        }
        Err(e) => warn!(error = %e, "Record synthesis failed; keeping the previous records"),
    }
}

async fn resolve(hostport: &str) -> Option<SocketAddr> {
    if let Ok(a) = hostport.parse() {
        return Some(a);
    }
    let lookup = tokio::net::lookup_host(hostport.to_owned());
    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(mut addrs)) => addrs.next(),
        _ => None,
    }
}

async fn resolve_all(masters: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for m in masters {
        if let Some(a) = resolve(m).await {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_resolve_against_the_request() {
        let base = "http://10.0.0.1:5050/api/v1";
        assert_eq!(
            absolutize("//10.0.0.2:5050/api/v1", base).as_deref(),
            Some("http://10.0.0.2:5050/api/v1")
        );
        assert_eq!(
            absolutize("/api/v1", base).as_deref(),
            Some("http://10.0.0.1:5050/api/v1")
        );
        assert_eq!(
            absolutize("http://m2:5050/api/v1", base).as_deref(),
            Some("http://m2:5050/api/v1")
        );
        assert_eq!(absolutize("ftp://x/", base), None);
    }
}
