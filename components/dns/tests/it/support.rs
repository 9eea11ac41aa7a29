//! Test doubles: a fake Mesos master streaming operator events, a DNS client, fake upstreams.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use capstan_dns::{Config, Server, ServerHandle};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);

/// What a fake master does with `SUBSCRIBE`.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Streams `SUBSCRIBED` with this `get_state`, then whatever the test sends.
    Leader(Value),
    /// Answers 307 to this master.
    RedirectTo(SocketAddr),
    /// Answers 503 "No leader elected".
    NoLeader,
}

#[derive(Default)]
struct Shared {
    mode: Mutex<Option<Mode>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Bytes>>>,
    subscriptions: AtomicUsize,
}

/// A master serving only `POST /api/v1` `SUBSCRIBE`, as RecordIO JSON events.
pub struct FakeMaster {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl FakeMaster {
    pub async fn start(mode: Mode) -> Result<FakeMaster> {
        Self::start_on("127.0.0.1:0".parse()?, mode).await
    }

    pub async fn start_on(addr: SocketAddr, mode: Mode) -> Result<FakeMaster> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        *shared.mode.lock().unwrap() = Some(mode);
        let app = Router::new()
            .route("/api/v1", post(subscribe))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        Ok(FakeMaster { addr, shared, stop })
    }

    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// Sends one event to every open subscription.
    pub fn send(&self, event: Value) {
        let bytes = frame(&event);
        self.shared
            .subscribers
            .lock()
            .unwrap()
            .retain(|tx| tx.send(bytes.clone()).is_ok());
    }

    /// Changes what the next `SUBSCRIBE` gets (a standby elected, a leader stepping down).
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = Some(mode);
    }

    /// How many SUBSCRIBE calls were streamed so far.
    pub fn subscriptions(&self) -> usize {
        self.shared.subscriptions.load(Ordering::SeqCst)
    }

    /// Ends the streams and stops listening (a crashed master).
    pub fn kill(&self) {
        self.shared.subscribers.lock().unwrap().clear();
        self.stop.cancel();
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.kill();
    }
}

fn frame(event: &Value) -> Bytes {
    let body = serde_json::to_vec(event).unwrap();
    let mut out = format!("{}\n", body.len()).into_bytes();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

async fn subscribe(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if call["type"] != "SUBSCRIBE" {
        return (StatusCode::BAD_REQUEST, "expected SUBSCRIBE").into_response();
    }
    let mode = shared.mode.lock().unwrap().clone();
    match mode {
        Some(Mode::RedirectTo(leader)) => {
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            r.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&format!("//{leader}/api/v1")).unwrap(),
            );
            r
        }
        Some(Mode::NoLeader) | None => {
            (StatusCode::SERVICE_UNAVAILABLE, "No leader elected").into_response()
        }
        Some(Mode::Leader(state)) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let subscribed = json!({"type": "SUBSCRIBED", "subscribed": {
                "get_state": state, "heartbeat_interval_seconds": 15}});
            tx.send(frame(&subscribed)).unwrap();
            shared.subscribers.lock().unwrap().push(tx);
            shared.subscriptions.fetch_add(1, Ordering::SeqCst);
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
    }
}

/// `get_state` with one agent (10.0.0.2) and the `marathon` framework, plus `tasks`.
pub fn cluster_state(tasks: Vec<Value>) -> Value {
    json!({
        "get_agents": {"agents": [{
            "agent_info": {"hostname": "a1", "port": 5051, "id": {"value": "M-S0"}},
            "active": true, "version": "1.11.0", "pid": "slave(1)@10.0.0.2:5051"}]},
        "get_frameworks": {"frameworks": [{
            "framework_info": {"user": "root", "name": "marathon", "id": {"value": "M-0000"}},
            "active": true, "connected": true, "recovered": false}]},
        "get_tasks": {"tasks": tasks}
    })
}

/// `get_state` of a newly elected master: agent `M-S0` is known only from the registry (it
/// has not re-registered, so none of its tasks are known yet), `marathon` was recovered.
pub fn recovering_cluster_state() -> Value {
    json!({
        "get_agents": {"agents": [], "recovered_agents": [
            {"hostname": "a1", "port": 5051, "id": {"value": "M-S0"}}]},
        "get_frameworks": {"frameworks": [{
            "framework_info": {"user": "root", "name": "marathon", "id": {"value": "M-0000"}},
            "active": false, "connected": false, "recovered": true}]},
        "get_tasks": {"tasks": []}
    })
}

/// `AGENT_ADDED` for agent `M-S0` (10.0.0.2), as when it (re-)registers.
pub fn agent_added() -> Value {
    json!({"type": "AGENT_ADDED", "agent_added": {"agent": {
        "agent_info": {"hostname": "a1", "port": 5051, "id": {"value": "M-S0"}},
        "active": true, "version": "1.11.0", "pid": "slave(1)@10.0.0.2:5051"}}})
}

/// A v1 Task in proto JSON with a container IP and host ports.
pub fn task(id: &str, name: &str, state: &str, ip: &str, ports: &[u64]) -> Value {
    let ranges: Vec<Value> = ports
        .iter()
        .map(|p| json!({"begin": p, "end": p}))
        .collect();
    json!({
        "name": name, "task_id": {"value": id}, "framework_id": {"value": "M-0000"},
        "agent_id": {"value": "M-S0"}, "state": state,
        "resources": [{"name": "ports", "type": "RANGES", "ranges": {"range": ranges}}],
        "statuses": [{"task_id": {"value": id}, "state": state, "timestamp": 1.0,
            "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip}]}]}}]
    })
}

pub fn task_added(task: Value) -> Value {
    json!({"type": "TASK_ADDED", "task_added": {"task": task}})
}

pub fn task_updated(id: &str, state: &str, ip: &str) -> Value {
    json!({"type": "TASK_UPDATED", "task_updated": {
        "framework_id": {"value": "M-0000"}, "state": state,
        "status": {"task_id": {"value": id}, "state": state, "timestamp": 2.0,
            "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip}]}]}}}})
}

/// A config serving on loopback port 0, following `masters`, forwarding to `resolvers`.
pub fn config(masters: Vec<String>, resolvers: Vec<String>) -> Config {
    Config {
        dns_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        masters,
        resolvers,
        forward_timeout: Duration::from_secs(2),
        master_timeout: Duration::from_secs(2),
        reconnect_backoff_max: Duration::from_millis(200),
        ..Config::default()
    }
}

pub async fn start(config: Config) -> Result<ServerHandle> {
    Ok(Server::start(config, CancellationToken::new()).await?)
}

pub fn dns(h: &ServerHandle) -> SocketAddr {
    h.dns_addr().expect("DNS is on")
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Result<(u16, Vec<u8>)> {
    let id: u16 = rand::random();
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    Ok((id, m.to_vec()?))
}

/// One question over UDP; returns the answer and its size on the wire.
pub async fn udp_query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> Result<(Message, usize)> {
    let (id, bytes) = query(name, qtype, edns)?;
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(server).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .context("no UDP answer within 5s")??;
    let m = Message::from_vec(&buf[..n])?;
    if m.metadata.id != id {
        bail!("answer id {} does not match query id {id}", m.metadata.id);
    }
    Ok((m, n))
}

pub async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Message> {
    Ok(udp_query(server, name, qtype, None).await?.0)
}

/// One question over TCP.
pub async fn tcp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Message> {
    let (id, bytes) = query(name, qtype, None)?;
    let mut s = TcpStream::connect(server).await?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).await?;
    let n = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await?;
    let m = Message::from_vec(&buf)?;
    if m.metadata.id != id {
        bail!("answer id mismatch");
    }
    Ok(m)
}

/// The A/AAAA addresses of an answer, sorted.
pub fn ips(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// A loopback UDP resolver answering every A question with `ip` (TTL 300), counting queries;
/// `silent` ones never answer.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
}

impl FakeUpstream {
    pub async fn start(ip: Option<&str>) -> Result<FakeUpstream> {
        Self::start_with(ip, false).await
    }

    /// An upstream answering SERVFAIL to everything.
    pub async fn servfail() -> Result<FakeUpstream> {
        Self::start_with(Some("0.0.0.0"), true).await
    }

    async fn start_with(ip: Option<&str>, servfail: bool) -> Result<FakeUpstream> {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = sock.local_addr()?;
        let queries = Arc::new(AtomicUsize::new(0));
        let count = queries.clone();
        let ip: Option<std::net::Ipv4Addr> = ip.map(|s| s.parse()).transpose()?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::SeqCst);
                let Some(ip) = ip else { continue };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut resp = Message::response(req.metadata.id, OpCode::Query);
                resp.metadata.recursion_available = true;
                resp.add_queries(req.queries.iter().cloned());
                if servfail {
                    resp.metadata.response_code = hickory_proto::op::ResponseCode::ServFail;
                } else if let Some(q) = req.queries.first() {
                    resp.add_answer(Record::from_rdata(q.name().clone(), 300, RData::A(A(ip))));
                }
                let _ = sock.send_to(&resp.to_vec().unwrap(), peer).await;
            }
        });
        Ok(FakeUpstream { addr, queries })
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// `Ok` once `name` resolves (over UDP) to exactly `want`; the error says what it got.
pub async fn resolves_to(server: SocketAddr, name: &str, want: &[&str]) -> Result<()> {
    let m = ask(server, name, RecordType::A).await?;
    let got = ips(&m);
    if got == want {
        Ok(())
    } else {
        bail!(
            "{name} is {got:?} ({}), want {want:?}",
            m.metadata.response_code
        )
    }
}

/// `Ok` once `name` is NXDOMAIN.
pub async fn is_nxdomain(server: SocketAddr, name: &str) -> Result<()> {
    let m = ask(server, name, RecordType::A).await?;
    if m.metadata.response_code == hickory_proto::op::ResponseCode::NXDomain {
        Ok(())
    } else {
        bail!("{name} is {:?} ({})", ips(&m), m.metadata.response_code)
    }
}
