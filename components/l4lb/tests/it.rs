//! Integration tests of `capstan l4lb` on loopback only: the userspace proxy against real TCP
//! backends (round robin, failover to the next backend, draining, fast refusal), and the whole
//! daemon fed by a fake master's operator stream, checked through `/v1/vips` and a connection
//! through the VIP. VIP addresses are random addresses in 127.0.0.0/8, local on every Linux.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use capstan_l4lb::proxy::Proxy;
use capstan_l4lb::{Config, DataPlane, Server};
use capstan_testkit::wait_until;
use capstan_types::vip::{Backend, Protocol};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The kernel data plane (nftables) in network namespaces of its own.
mod nft;

/// Strict mode: the daemon against a strict master, its API behind the guard.
mod strict;

const WAIT: Duration = Duration::from_secs(10);

/// A loopback address unlikely to be used by another test run: 127.<a>.<b>.<c>.
fn random_loopback(salt: u32) -> IpAddr {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let x = nanos ^ std::process::id().rotate_left(11) ^ salt.wrapping_mul(0x9e37_79b9);
    IpAddr::V4(Ipv4Addr::new(
        127,
        100 + (x >> 16) as u8 % 100,
        (x >> 8) as u8,
        (x as u8).max(2),
    ))
}

/// A backend that sends its id byte on accept, then echoes until EOF.
async fn backend(id: u8) -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if s.write_all(&[id]).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A loopback address nobody listens on.
async fn dead_backend() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?)
}

/// Connects through the VIP and reads the id of the backend that answered.
async fn who(vip: SocketAddr) -> Result<(u8, TcpStream)> {
    let mut s = TcpStream::connect(vip).await?;
    let mut id = [0u8; 1];
    let n = tokio::time::timeout(WAIT, s.read(&mut id)).await??;
    if n == 0 {
        bail!("closed without a backend");
    }
    Ok((id[0], s))
}

fn want(
    vip: SocketAddr,
    backends: &[SocketAddr],
) -> BTreeMap<(SocketAddr, Protocol), BTreeSet<Backend>> {
    let set = backends
        .iter()
        .map(|a| Backend {
            ip: a.ip(),
            port: a.port(),
        })
        .collect();
    BTreeMap::from([((vip, Protocol::Tcp), set)])
}

#[tokio::test]
async fn the_proxy_round_robins_fails_over_drains_and_refuses() -> Result<()> {
    let b: Vec<SocketAddr> = vec![backend(0).await?, backend(1).await?, backend(2).await?];
    let vip = SocketAddr::new(random_loopback(1), 5555);
    let shutdown = CancellationToken::new();
    let mut proxy = Proxy::new(Duration::from_secs(2), shutdown.clone());
    let errors = proxy.apply(&want(vip, &b)).await;
    assert!(errors.is_empty(), "{errors:?}");

    // Backends are ordered by address; round robin visits each in turn.
    let mut order = BTreeMap::new();
    for (i, a) in b.iter().enumerate() {
        order.insert(*a, i as u8);
    }
    let sorted: Vec<u8> = order.values().copied().collect();
    let mut seen = Vec::new();
    let mut kept = None;
    for _ in 0..6 {
        let (id, s) = who(vip).await?;
        seen.push(id);
        if id == 0 && kept.is_none() {
            kept = Some(s);
        }
    }
    let expect: Vec<u8> = sorted.iter().chain(sorted.iter()).copied().collect();
    assert_eq!(seen, expect);

    // Backend 0 leaves the set: no new connection goes to it, the open one drains.
    proxy.apply(&want(vip, &b[1..])).await;
    for _ in 0..4 {
        let (id, _) = who(vip).await?;
        assert_ne!(id, 0, "a removed backend got a new connection");
    }
    let mut open = kept.context("a connection to backend 0")?;
    open.write_all(b"still here").await?;
    let mut buf = [0u8; 10];
    open.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"still here", "the open connection keeps flowing");

    // A backend that refuses is skipped for the next one.
    let dead = dead_backend().await?;
    proxy.apply(&want(vip, &[dead, b[2]])).await;
    for _ in 0..4 {
        assert_eq!(who(vip).await?.0, 2);
    }

    // No backend: accepted and closed at once, not left hanging.
    proxy.apply(&want(vip, &[])).await;
    let mut s = TcpStream::connect(vip).await?;
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(WAIT, s.read(&mut byte))
        .await
        .context("closed promptly")?
        .unwrap_or(0);
    assert_eq!(n, 0);
    let stats = proxy.stats();
    assert!(stats.refused.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    // VIP gone: connections are refused.
    proxy.apply(&BTreeMap::new()).await;
    wait_until("the VIP listener is closed", WAIT, async || {
        TcpStream::connect(vip).await.is_err()
    })
    .await?;
    shutdown.cancel();
    Ok(())
}

// ---- the whole daemon against a fake master ----

#[derive(Default)]
struct Master {
    state: Mutex<Value>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Bytes>>>,
}

fn frame(event: &Value) -> Bytes {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let mut out = format!("{}\n", body.len()).into_bytes();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

async fn subscribe(State(m): State<Arc<Master>>) -> Response {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = m.state.lock().map(|s| s.clone()).unwrap_or(Value::Null);
    let _ = tx.send(frame(&json!({"type": "SUBSCRIBED", "subscribed": {
        "get_state": state, "heartbeat_interval_seconds": 15}})));
    if let Ok(mut subs) = m.subscribers.lock() {
        subs.push(tx);
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn fake_master(state: Value) -> Result<(SocketAddr, Arc<Master>)> {
    let m = Arc::new(Master {
        state: Mutex::new(state),
        ..Default::default()
    });
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let app = Router::new()
        .route("/api/v1", post(subscribe))
        .with_state(m.clone());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok((addr, m))
}

/// A running task of `marathon` on agent 127.0.0.1 with a named VIP on host port `port`.
fn vip_task(id: &str, port: u16, healthy: Option<bool>) -> Value {
    let mut status = json!({"task_id": {"value": id}, "state": "TASK_RUNNING", "timestamp": 1.0});
    let mut task = json!({"name": "web", "task_id": {"value": id},
        "framework_id": {"value": "F0"}, "agent_id": {"value": "S0"}, "state": "TASK_RUNNING",
        "resources": [{"name": "ports", "type": "RANGES",
            "ranges": {"range": [{"begin": port, "end": port}]}}],
        "discovery": {"visibility": "FRAMEWORK", "name": "web", "ports": {"ports": [
            {"number": port, "protocol": "tcp", "labels": {"labels": [
                {"key": "VIP_0", "value": "/web:15555"},
                {"key": "network-scope", "value": "host"}]}}]}}});
    if let Some(h) = healthy {
        status["healthy"] = json!(h);
        task["health_check"] = json!({"type": "COMMAND", "command": {"value": "true"}});
    }
    task["statuses"] = json!([status]);
    task
}

#[tokio::test]
async fn the_daemon_follows_the_master_and_serves_named_vips() -> Result<()> {
    let b1 = backend(1).await?;
    let b2 = backend(2).await?;
    let state = json!({
        "get_agents": {"agents": [{"agent_info": {"hostname": "127.0.0.1", "id": {"value": "S0"}},
            "active": true, "version": "1.11.0", "pid": "slave(1)@127.0.0.1:5051"}]},
        "get_frameworks": {"frameworks": [{"framework_info": {"user": "root", "name": "marathon",
            "id": {"value": "F0"}}, "active": true, "connected": true, "recovered": false}]},
        "get_tasks": {"tasks": [vip_task("web.1", b1.port(), None), vip_task("web.2", b2.port(), Some(false))]}
    });
    let (master, m) = fake_master(state).await?;
    // A one-address named range in 127.0.0.0/8: the VIP's address is known here.
    let vip_ip = random_loopback(2);
    let config = Config {
        masters: vec![master.to_string()],
        http_listen: "127.0.0.1:0".parse()?,
        data_plane: DataPlane::Userspace,
        named_ipv4: format!("{vip_ip}/32"),
        named_ipv6: String::new(),
        master_timeout: Duration::from_secs(2),
        reconnect_backoff_max: Duration::from_millis(200),
        ..Config::default()
    };
    let server = Server::start(config, CancellationToken::new()).await?;
    let url = format!("http://{}/v1/vips", server.http_addr());
    let http = capstan_http_client::builder().no_proxy().build()?;
    let name = "web.marathon.l4lb.thisdcos.directory:15555";
    let list: Value = wait_until("the VIP is listed", WAIT, async || -> Result<Value> {
        let v: Value = http.get(&url).send().await?.json().await?;
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            Ok(v)
        } else {
            bail!("empty: {v}")
        }
    })
    .await?;
    assert_eq!(
        list,
        json!([{"vip": name, "protocol": "tcp",
                "backend": [{"ip": "127.0.0.1", "port": b1.port()}]}]),
        "the unhealthy task is no backend"
    );
    let vip = SocketAddr::new(vip_ip, 15555);
    let (id, _) = wait_until("the VIP answers", WAIT, async || who(vip).await).await?;
    assert_eq!(id, 1);

    // The second task turns healthy: both are backends, within one event.
    let update = json!({"type": "TASK_UPDATED", "task_updated": {"framework_id": {"value": "F0"},
        "state": "TASK_RUNNING", "status": {"task_id": {"value": "web.2"}, "state": "TASK_RUNNING",
        "timestamp": 2.0, "healthy": true}}});
    if let Ok(subs) = m.subscribers.lock() {
        for s in subs.iter() {
            let _ = s.send(frame(&update));
        }
    }
    let mut table = server.table();
    wait_until("both backends are in the table", WAIT, async || {
        let t = table.borrow_and_update().clone();
        t.vips
            .values()
            .next()
            .is_some_and(|v| v.backends.len() == 2)
    })
    .await?;
    let r = http
        .get(format!("http://{}/nope", server.http_addr()))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    server.shutdown().await;
    Ok(())
}
