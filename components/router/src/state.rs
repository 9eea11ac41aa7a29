//! What the router knows about the cluster, kept fresh by background tasks on the control
//! runtime: the leading master and the leading apps daemon (followed through coord's elections
//! `/capstan/master/election` and `/capstan/apps/election`, pushed by watches, never polled),
//! the cluster's identity (`/capstan/cluster/info`: id and CA), and the [`Snapshot`] that
//! `/service/` and `/agent/<id>/` resolve against (the leading master's state summary and the
//! apps leader's labelled apps: every 10 s, on a leader change, and on a cache miss at most
//! every 500 ms).
//!
//! Key decision: readers never wait on I/O for leaders — they read a `watch` value, so a
//! failover reaches the routes as fast as coord's watch delivers it. The request path runs on
//! pingora's runtimes; I/O it needs (SRV lookups, coord status) is spawned onto the control
//! runtime through [`State::io`], so connection pools stay on one runtime.

use std::sync::Arc;
use std::time::Duration;

use capstan_coord_client::{
    Client, ClientError, Election, EventKind, GetRequest, StatusResponse, WatchRequest, keyspace,
};
use capstan_types::{Backoff, Chain};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, authority};
use crate::service::Snapshot;

/// Periodic refresh of the snapshot.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// Least time between two refreshes (cache misses are throttled to this).
pub const MIN_REFRESH_GAP: Duration = Duration::from_millis(500);
/// How long a cache miss waits for the refresh it asked for.
const MISS_WAIT: Duration = Duration::from_secs(2);
/// Time limit of one upstream call made by the router itself.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster's identity as coord keeps it (`capstan_types::cluster::ClusterInfo`'s fields the
/// router reads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    pub cluster_id: Option<String>,
    pub ca_pem: Option<String>,
}

impl ClusterFacts {
    fn from_json(bytes: &[u8]) -> ClusterFacts {
        let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        ClusterFacts {
            cluster_id: text("cluster_id"),
            ca_pem: text("ca_pem"),
        }
    }
}

/// Cheap to clone; every clone sees the same values.
#[derive(Clone)]
pub struct State {
    inner: Arc<Inner>,
}

struct Inner {
    coord: Client,
    http: reqwest::Client,
    /// `http`, or `https` in a strict cluster.
    scheme: &'static str,
    runtime: tokio::runtime::Handle,
    master: watch::Sender<Option<String>>,
    apps: watch::Sender<Option<String>>,
    cluster: watch::Sender<ClusterFacts>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    generation: watch::Sender<u64>,
    wake: Notify,
}

/// The leader of an election, or the configured address when there is exactly one and coord
/// names none (a single-node cluster whose daemon does not campaign).
fn fallback(list: &[String]) -> Option<String> {
    match list {
        [one] => authority(one),
        _ => None,
    }
}

impl State {
    /// Starts following coord and refreshing the snapshot, on the current runtime, until
    /// `shutdown`.
    /// With `tls` (a strict cluster), the masters and apps are read over https with it.
    pub fn start(
        config: &Config,
        coord: Client,
        tls: Option<Arc<rustls::ClientConfig>>,
        shutdown: CancellationToken,
    ) -> State {
        let mut builder = capstan_http_client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT);
        if let Some(tls) = &tls {
            builder = capstan_http_client::with_tls(builder, tls);
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let http = builder.build().unwrap_or_default();
        let master_fallback = fallback(&config.masters);
        let apps_fallback = fallback(&config.apps);
        let inner = Arc::new(Inner {
            coord: coord.clone(),
            http,
            scheme,
            runtime: tokio::runtime::Handle::current(),
            master: watch::Sender::new(master_fallback.clone()),
            apps: watch::Sender::new(apps_fallback.clone()),
            cluster: watch::Sender::new(ClusterFacts::default()),
            snapshot: watch::Sender::new(Arc::new(Snapshot::default())),
            generation: watch::Sender::new(0),
            wake: Notify::new(),
        });
        let state = State { inner };
        let master = Election::new(coord.clone(), keyspace::election(keyspace::MASTER));
        tokio::spawn(follow(
            "master",
            master,
            master_fallback,
            state.inner.master.clone(),
            shutdown.clone(),
        ));
        let apps = Election::new(coord.clone(), keyspace::election(keyspace::APPS));
        tokio::spawn(follow(
            "apps",
            apps,
            apps_fallback,
            state.inner.apps.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(follow_cluster(
            coord,
            state.inner.cluster.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(refresh(state.clone(), shutdown));
        state
    }

    /// The leading master's `host:port`.
    pub fn master_leader(&self) -> Option<String> {
        self.inner.master.borrow().clone()
    }

    /// The leading apps daemon's `host:port`.
    pub fn apps_leader(&self) -> Option<String> {
        self.inner.apps.borrow().clone()
    }

    pub fn cluster(&self) -> ClusterFacts {
        self.inner.cluster.borrow().clone()
    }

    /// Resolves when the cluster's identity is known (or `wait` passed).
    pub async fn cluster_known(&self, wait: Duration) -> ClusterFacts {
        let mut rx = self.inner.cluster.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|c| c.cluster_id.is_some())).await;
        self.cluster()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.borrow().clone()
    }

    /// A snapshot taken after this call (a cache miss): asks for a refresh and waits for it,
    /// at most two seconds; the current one if it does not come.
    pub async fn refreshed(&self) -> Arc<Snapshot> {
        let mut generation = self.inner.generation.subscribe();
        let start = *generation.borrow_and_update();
        self.inner.wake.notify_one();
        let _ = tokio::time::timeout(MISS_WAIT, generation.wait_for(|g| *g > start)).await;
        self.snapshot()
    }

    pub fn coord(&self) -> &Client {
        &self.inner.coord
    }

    /// Runs `fut` on the control runtime and waits for it.
    pub async fn io<F, T>(&self, fut: F) -> Option<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.runtime.spawn(fut).await.ok()
    }

    /// coord's member status (for Exhibitor's cluster status).
    pub async fn coord_status(&self) -> Result<StatusResponse, String> {
        let coord = self.inner.coord.clone();
        match self.io(async move { coord.status().await }).await {
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => Err(Chain(&e).to_string()),
            None => Err("the control runtime is gone".into()),
        }
    }

    /// First address (`ip:port`) of the SRV record `_<name>._tcp.marathon.mesos`, from the dns
    /// daemon's HTTP API at `dns`.
    pub async fn srv(&self, dns: &str, name: &str) -> Result<Option<String>, String> {
        let url = format!("http://{dns}/v1/services/_{name}._tcp.marathon.mesos");
        let http = self.inner.http.clone();
        let answer = self
            .io(async move {
                let resp = http.get(url).send().await?.error_for_status()?;
                resp.json::<Value>().await
            })
            .await;
        let records = match answer {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(Chain(&e).to_string()),
            None => return Err("the control runtime is gone".into()),
        };
        Ok(first_srv(&records))
    }
}

/// The first record of a `/v1/services/...` answer with an address and a port.
pub fn first_srv(records: &Value) -> Option<String> {
    records.as_array()?.iter().find_map(|r| {
        let ip = r
            .get("ip")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())?;
        let port = r.get("port").and_then(|p| match p {
            Value::String(s) => s.parse::<u16>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            _ => None,
        })?;
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        Some(format!("{host}:{port}"))
    })
}

/// Publishes `election`'s leader into `tx` as coord reports changes.
async fn follow(
    what: &'static str,
    election: Election,
    fallback: Option<String>,
    tx: watch::Sender<Option<String>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let publish = |leader: Option<String>| {
        tx.send_if_modified(|current| {
            if *current == leader {
                return false;
            }
            info!(daemon = what, leader = ?leader, "Leader changed");
            *current = leader;
            true
        });
    };
    loop {
        let observed = tokio::select! {
            () = shutdown.cancelled() => return,
            o = election.observe() => o,
        };
        let mut observer = match observed {
            Ok(o) => {
                backoff.reset();
                o
            }
            Err(e) => {
                debug!(daemon = what, error = %Chain(&e), "Cannot observe the election; retrying");
                if tx.borrow().is_none() {
                    publish(fallback.clone());
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                n = observer.next() => n,
            };
            match next {
                Ok(Some(leader)) => {
                    let value = String::from_utf8_lossy(&leader.value).into_owned();
                    publish(authority(&value).or_else(|| fallback.clone()));
                }
                Ok(None) => publish(fallback.clone()),
                Err(e) => {
                    warn!(daemon = what, error = %Chain(&e), "Following the election failed; restarting");
                    break;
                }
            }
        }
    }
}

/// Publishes `/capstan/cluster/info` into `tx`, following its changes.
async fn follow_cluster(
    coord: Client,
    tx: watch::Sender<ClusterFacts>,
    shutdown: CancellationToken,
) {
    let key = keyspace::under(keyspace::CLUSTER, "info");
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let got = tokio::select! {
            () = shutdown.cancelled() => return,
            g = coord.get_with(GetRequest { key: key.clone(), serializable: false }) => g,
        };
        let revision = match got {
            Ok(resp) => {
                let facts = resp
                    .kv
                    .map(|kv| ClusterFacts::from_json(&kv.value))
                    .unwrap_or_default();
                tx.send_replace(facts);
                backoff.reset();
                resp.revision
            }
            Err(e) => {
                debug!(error = %Chain(&e), "Cannot read the cluster info; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        let mut watcher = coord.watch(WatchRequest {
            key: key.clone(),
            prefix: false,
            start_revision: Some(revision + 1),
        });
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                n = watcher.next() => n,
            };
            match next {
                Ok(batch) => {
                    if let Some(ev) = batch.events.last() {
                        let facts = match ev.kind {
                            EventKind::Delete => ClusterFacts::default(),
                            _ => ClusterFacts::from_json(&ev.kv.value),
                        };
                        tx.send_replace(facts);
                    }
                }
                Err(ClientError::Unavailable(_)) => continue,
                Err(e) => {
                    debug!(error = %Chain(&e), "Watching the cluster info failed; rereading");
                    break;
                }
            }
        }
    }
}

/// Keeps the snapshot fresh: every [`REFRESH_EVERY`], on a leader change and when a reader
/// asks, never twice within [`MIN_REFRESH_GAP`].
async fn refresh(state: State, shutdown: CancellationToken) {
    let inner = &state.inner;
    let mut master_rx = inner.master.subscribe();
    let mut apps_rx = inner.apps.subscribe();
    let mut last: Option<Instant> = None;
    let mut apps_json = Value::Null;
    let mut summary_json = Value::Null;
    loop {
        if let Some(at) = last {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(at + REFRESH_EVERY) => {}
                () = inner.wake.notified() => {}
                _ = master_rx.changed() => {}
                _ = apps_rx.changed() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(at + MIN_REFRESH_GAP) => {}
            }
        }
        last = Some(Instant::now());
        let master = master_rx.borrow_and_update().clone();
        let apps = apps_rx.borrow_and_update().clone();
        let (summary, labelled) = tokio::join!(
            fetch_summary(&inner.http, inner.scheme, master.as_deref()),
            fetch_apps(&inner.http, inner.scheme, apps.as_deref()),
        );
        if let Some(s) = summary {
            summary_json = s;
        }
        if let Some(a) = labelled {
            apps_json = a;
        }
        let snapshot = Snapshot::from_json(&apps_json, &summary_json);
        inner.snapshot.send_replace(Arc::new(snapshot));
        inner.generation.send_modify(|g| *g += 1);
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, (Option<u16>, String)> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| (None, Chain(&e).to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err((Some(status.as_u16()), format!("HTTP {status}")));
    }
    resp.json::<Value>()
        .await
        .map_err(|e| (None, Chain(&e).to_string()))
}

/// The master's state summary (`/master/state-summary`, else `/master/state`).
async fn fetch_summary(
    http: &reqwest::Client,
    scheme: &str,
    master: Option<&str>,
) -> Option<Value> {
    let master = master?;
    match get_json(http, &format!("{scheme}://{master}/master/state-summary")).await {
        Ok(v) => Some(v),
        Err((Some(404), _)) => {
            match get_json(http, &format!("{scheme}://{master}/master/state")).await {
                Ok(v) => Some(v),
                Err((_, e)) => {
                    debug!(%master, error = %e, "Cannot read the master's state");
                    None
                }
            }
        }
        Err((_, e)) => {
            debug!(%master, error = %e, "Cannot read the master's state summary");
            None
        }
    }
}

/// The apps labelled `DCOS_SERVICE_NAME`, with their tasks.
async fn fetch_apps(http: &reqwest::Client, scheme: &str, apps: Option<&str>) -> Option<Value> {
    let apps = apps?;
    let url = format!("{scheme}://{apps}/v2/apps?embed=apps.tasks&label=DCOS_SERVICE_NAME");
    match get_json(http, &url).await {
        Ok(v) => Some(v),
        Err((_, e)) => {
            debug!(%apps, error = %e, "Cannot read the labelled apps");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_usable_srv_record_wins() {
        let v = json!([
            {"service": "", "host": "", "ip": "", "port": ""},
            {"service": "_x._tcp.marathon.mesos", "host": "x.marathon.mesos", "ip": "10.0.0.1", "port": "31000"},
        ]);
        assert_eq!(first_srv(&v).as_deref(), Some("10.0.0.1:31000"));
        assert_eq!(
            first_srv(&json!([{"ip": "::1", "port": 80}])).as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(first_srv(&json!({})), None);
    }

    #[test]
    fn cluster_facts_are_read_tolerantly() {
        let f = ClusterFacts::from_json(br#"{"cluster_id":"abc","name":"n","ca_pem":""}"#);
        assert_eq!(f.cluster_id.as_deref(), Some("abc"));
        assert_eq!(f.ca_pem, None);
        assert_eq!(ClusterFacts::from_json(b"nope"), ClusterFacts::default());
    }

    #[test]
    fn only_a_single_configured_address_is_a_fallback() {
        assert_eq!(fallback(&["h:1".into()]).as_deref(), Some("h:1"));
        assert_eq!(fallback(&["h:1".into(), "h:2".into()]), None);
    }
}
