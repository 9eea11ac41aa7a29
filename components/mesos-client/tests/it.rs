//! The client against tiny axum masters on port 0: redirects, the stream id, the heartbeat
//! watchdog with reconnects, the record size limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use capstan_mesos_client::{
    BuildError, ClientConfig, Endpoint, EndpointError, MasterClient, OperatorEvents, SessionEnd,
    StreamError, SubscribeError, reconnect,
};
use capstan_types::Backoff;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const SUBSCRIBE: &str = r#"{"type":"SUBSCRIBE"}"#;

/// What a fake master answers a SUBSCRIBE with.
#[derive(Clone)]
enum Mode {
    /// The leader: `SUBSCRIBED` (with this heartbeat interval) then whatever is sent.
    Leader { heartbeat_secs: f64 },
    /// A standby: 307 with this `Location`.
    Redirect(String),
    /// A status and a body.
    Refuse(StatusCode, &'static str),
}

#[derive(Default)]
struct Shared {
    mode: Mutex<Option<Mode>>,
    subscriptions: AtomicUsize,
    streams: Mutex<Vec<mpsc::UnboundedSender<Bytes>>>,
    /// (`Mesos-Stream-Id` header, body) of every call that is not a SUBSCRIBE.
    calls: Mutex<Vec<(Option<String>, Value)>>,
}

struct FakeMaster {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl FakeMaster {
    async fn start(mode: Mode) -> anyhow::Result<FakeMaster> {
        let shared = Arc::new(Shared::default());
        *shared.mode.lock().unwrap() = Some(mode);
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(until.cancelled_owned())
                .await
        });
        Ok(FakeMaster { addr, shared, stop })
    }

    fn host_port(&self) -> String {
        self.addr.to_string()
    }

    fn subscriptions(&self) -> usize {
        self.shared.subscriptions.load(Ordering::SeqCst)
    }

    /// Sends raw bytes on every open stream.
    fn send_raw(&self, bytes: &[u8]) {
        for tx in self.shared.streams.lock().unwrap().iter() {
            let _ = tx.send(Bytes::copy_from_slice(bytes));
        }
    }

    fn calls(&self) -> Vec<(Option<String>, Value)> {
        self.shared.calls.lock().unwrap().clone()
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn frame(event: &Value) -> Vec<u8> {
    capstan_proto::recordio::encode_to_vec(&serde_json::to_vec(event).unwrap())
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if call["type"] != "SUBSCRIBE" {
        let id = headers
            .get("mesos-stream-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        shared.calls.lock().unwrap().push((id, call));
        return StatusCode::ACCEPTED.into_response();
    }
    let mode = shared.mode.lock().unwrap().clone();
    match mode {
        Some(Mode::Redirect(location)) => {
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
            r
        }
        Some(Mode::Refuse(status, body)) => (status, body).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leader").into_response(),
        Some(Mode::Leader { heartbeat_secs }) => {
            let n = shared.subscriptions.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = mpsc::unbounded_channel();
            let subscribed = json!({"type": "SUBSCRIBED", "subscribed": {
                "framework_id": {"value": "F-1"},
                "heartbeat_interval_seconds": heartbeat_secs}});
            tx.send(Bytes::from(frame(&subscribed))).unwrap();
            shared.streams.lock().unwrap().push(tx);
            let body = Body::from_stream(UnboundedReceiverStream::new(rx).map(Ok::<_, Infallible>));
            let id = format!("stream-{n}");
            let headers = [
                (header::CONTENT_TYPE.as_str(), "application/json"),
                ("mesos-stream-id", id.as_str()),
            ];
            (headers, body).into_response()
        }
    }
}

/// Polls `done` until it holds, or fails after [`WAIT`].
async fn wait_for(what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn client(masters: &[String]) -> MasterClient {
    MasterClient::for_masters(masters, |c| c.request_timeout = Duration::from_secs(5)).unwrap()
}

fn leader_mode() -> Mode {
    Mode::Leader {
        heartbeat_secs: 15.0,
    }
}

#[tokio::test]
async fn a_standby_redirect_in_every_location_form_leads_to_the_leader() -> anyhow::Result<()> {
    let leader = FakeMaster::start(leader_mode()).await?;
    let l = leader.addr;
    for location in [
        format!("//{l}/api/v1/scheduler"),
        format!("http://{l}/api/v1/scheduler"),
        format!("{l}"),
    ] {
        let standby = FakeMaster::start(Mode::Redirect(location.clone())).await?;
        // Endpoints in both forms.
        let mut c = client(&[format!("http://{}", standby.addr), leader.host_port()]);
        let mut sub = c.subscribe_scheduler(SUBSCRIBE).await?;
        assert_eq!(sub.leader().authority(), l.to_string(), "{location}");
        let first = sub.next().await?.context("SUBSCRIBED")?;
        let event: Value = serde_json::from_slice(&first)?;
        assert_eq!(event["type"], "SUBSCRIBED");
    }
    Ok(())
}

#[tokio::test]
async fn scheduler_calls_carry_the_stream_id_to_the_leader() -> anyhow::Result<()> {
    let leader = FakeMaster::start(leader_mode()).await?;
    let standby = FakeMaster::start(Mode::Redirect(format!(
        "//{}/api/v1/scheduler",
        leader.addr
    )))
    .await?;
    let mut c = client(&[standby.host_port()]);
    let sub = c.subscribe_scheduler(SUBSCRIBE).await?;
    assert_eq!(sub.stream_id(), Some("stream-0"));
    let calls = c.scheduler_calls(&sub);
    assert_eq!(calls.leader(), sub.leader());
    // A pre-serialised call and a typed one.
    calls
        .send_json(r#"{"type":"REVIVE","framework_id":{"value":"F-1"}}"#)
        .await?;
    let typed = capstan_proto::mesos::v1::scheduler::Call {
        r#type: Some(capstan_proto::mesos::v1::scheduler::call::Type::Suppress as i32),
        framework_id: Some(capstan_proto::mesos::v1::FrameworkId {
            value: "F-1".into(),
        }),
        ..Default::default()
    };
    calls.send(&typed).await?;
    let got = leader.calls();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(id, _)| id.as_deref() == Some("stream-0")));
    assert_eq!(got[0].1["type"], "REVIVE");
    assert_eq!(got[1].1["type"], "SUPPRESS");
    assert!(standby.calls().is_empty(), "calls go to the leader");
    Ok(())
}

#[tokio::test]
async fn a_stream_without_heartbeats_is_dropped_and_the_loop_subscribes_again() -> anyhow::Result<()>
{
    // The master announces 50 ms heartbeats and never sends one.
    let master = FakeMaster::start(Mode::Leader {
        heartbeat_secs: 0.05,
    })
    .await?;
    let mut cfg = ClientConfig::new(vec![Endpoint::parse(&master.host_port())?]);
    cfg.missed_heartbeats = 2;
    let mut c = MasterClient::new(cfg)?;
    let shutdown = CancellationToken::new();
    let ends = Arc::new(Mutex::new(Vec::new()));
    let seen = ends.clone();
    let stop = shutdown.clone();
    let run = tokio::spawn(async move {
        reconnect(
            Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
            &stop,
            async move || {
                let Ok(mut events) = OperatorEvents::subscribe(&mut c).await else {
                    return SessionEnd::after(0);
                };
                let end = loop {
                    match events.next().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => break "closed".to_owned(),
                        Err(e) => break e.to_string(),
                    }
                };
                seen.lock().unwrap().push(end);
                SessionEnd::after(events.subscription().records())
            },
        )
        .await
    });
    wait_for("three subscriptions", || master.subscriptions() >= 3).await?;
    shutdown.cancel();
    run.await?;
    let ends = ends.lock().unwrap().clone();
    assert!(!ends.is_empty());
    assert!(
        ends.iter()
            .all(|e| e.starts_with("no record from the master for 100ms")),
        "{ends:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_record_over_the_maximum_size_ends_the_stream_with_an_error() -> anyhow::Result<()> {
    let master = FakeMaster::start(leader_mode()).await?;
    let mut cfg = ClientConfig::new(vec![Endpoint::parse(&master.host_port())?]);
    cfg.max_record_len = 1024;
    let mut c = MasterClient::new(cfg)?;
    let mut sub = c.subscribe("/api/v1", SUBSCRIBE).await?;
    assert!(sub.next().await?.is_some(), "SUBSCRIBED fits");
    master.send_raw(&frame(&json!({"type": "HEARTBEAT"})));
    assert!(sub.next().await?.is_some(), "HEARTBEAT fits");
    let big = "x".repeat(2000);
    master.send_raw(&frame(&json!({"type": "UNKNOWN", "blob": big})));
    match sub.next().await {
        Err(StreamError::TooLarge { max: 1024, len }) => assert!(len > 2000),
        other => anyhow::bail!("expected TooLarge, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_master_without_leader_is_skipped_and_a_refusal_is_reported_with_its_body()
-> anyhow::Result<()> {
    let down =
        FakeMaster::start(Mode::Refuse(StatusCode::SERVICE_UNAVAILABLE, "no leader")).await?;
    let leader = FakeMaster::start(leader_mode()).await?;
    let mut c = client(&[down.host_port(), leader.host_port()]);
    let sub = c.subscribe("/api/v1", SUBSCRIBE).await?;
    assert_eq!(sub.leader().authority(), leader.host_port());

    let gone = FakeMaster::start(Mode::Refuse(StatusCode::FORBIDDEN, "agent marked gone")).await?;
    let mut c = client(&[gone.host_port(), leader.host_port()]);
    let err = c.subscribe("/api/v1", SUBSCRIBE).await.unwrap_err();
    assert_eq!(
        err.refusal(),
        Some((StatusCode::FORBIDDEN, "agent marked gone"))
    );
    assert_eq!(leader.subscriptions(), 1, "a refusal ends the round");

    let mut nobody = client(&[down.host_port()]);
    match nobody.subscribe("/api/v1", SUBSCRIBE).await {
        Err(SubscribeError::Unavailable { tried: 1, last }) => {
            assert_eq!(last.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        }
        other => anyhow::bail!("expected Unavailable, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_client_is_not_built_for_an_unusable_master_address() {
    let err = MasterClient::for_masters(&["m1:5050", "ftp://m2:5050"], |_| {}).unwrap_err();
    assert!(
        matches!(err, BuildError::Endpoint(EndpointError::Scheme(ref s)) if s == "ftp://m2:5050"),
        "{err:?}"
    );
}

#[test]
fn a_client_speaking_tls_makes_bare_masters_https() -> anyhow::Result<()> {
    let masters = ["m1:5050", "http://m2:5050", "https://m3:5050"];
    let plain = MasterClient::for_masters(&masters, |_| {})?;
    let urls = |c: &MasterClient| -> Vec<String> {
        c.config()
            .masters
            .iter()
            .map(|m| m.url("/api/v1"))
            .collect()
    };
    assert_eq!(
        urls(&plain),
        [
            "http://m1:5050/api/v1",
            "http://m2:5050/api/v1",
            "https://m3:5050/api/v1"
        ]
    );
    let tls = rustls::ClientConfig::builder_with_provider(capstan_http_client::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let secure = MasterClient::for_masters(&masters, |c| c.tls = Some(Arc::new(tls)))?;
    assert_eq!(
        urls(&secure),
        [
            "https://m1:5050/api/v1",
            "http://m2:5050/api/v1",
            "https://m3:5050/api/v1"
        ]
    );
    let calls = secure.calls(&Endpoint::parse("m4:5050")?, "/api/v1", None);
    assert_eq!(calls.leader().url("/x"), "https://m4:5050/x");
    Ok(())
}

#[tokio::test]
async fn a_redirect_loop_stops_after_the_redirect_limit() -> anyhow::Result<()> {
    let a = FakeMaster::start(Mode::Redirect(String::new())).await?;
    *a.shared.mode.lock().unwrap() = Some(Mode::Redirect(format!("//{}/api/v1", a.addr)));
    let mut c = client(&[a.host_port()]);
    match c.subscribe("/api/v1", SUBSCRIBE).await {
        Err(SubscribeError::Unavailable { last, .. }) => {
            assert!(last.to_string().contains("more than 4 redirects"), "{last}");
        }
        other => anyhow::bail!("expected Unavailable, got {other:?}"),
    }
    Ok(())
}
