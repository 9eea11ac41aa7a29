//! The harness: an in-process coord, fake upstreams (small axum servers on 127.0.0.1:0 playing
//! master, agent, apps, a task and dns, plus a raw WebSocket echo), a cluster CA, and the real
//! router started on a thread of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use capstan_coord_client::{Client, Election, keyspace};
use capstan_router::config::{Config, Limits, TlsFiles};
use capstan_runtime::{Exit, Lifecycle};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(20);
pub const CLUSTER_ID: &str = "0f0e0d0c-0b0a-4999-8888-777766665555";
pub const ADMIN: &str = "admin";
pub const PASSWORD: &str = "correct horse battery staple";

/// A one-member coord in `dir`; returns it and its `host:port`.
pub async fn start_coord(dir: &Path) -> (capstan_coord::ServerHandle, String) {
    let coord = capstan_coord::Server::start_single(dir.join("coord"), CancellationToken::new())
        .await
        .expect("coord starts");
    let addr = coord.local_addr().to_string();
    (coord, addr)
}

/// A port nobody listens on right now (for the router's listeners, which bind by address).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Serves `app` on 127.0.0.1:0.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// What an echo upstream saw: its name, the method, path and query, the headers, the body size.
async fn echo(State(name): State<Arc<String>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            let all: Vec<&str> = parts
                .headers
                .get_all(k)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let _ = v;
            (k.as_str().to_owned(), Value::from(all.join(", ")))
        })
        .collect();
    axum::Json(json!({
        "server": *name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": headers,
        "body_bytes": body.len(),
    }))
    .into_response()
}

/// An upstream that echoes every request, named `name`, with `extra` routes first.
pub async fn echo_server(name: &str, extra: axum::Router<Arc<String>>) -> SocketAddr {
    let app = extra.fallback(echo).with_state(Arc::new(name.to_owned()));
    serve(app).await
}

/// A fake master whose state summary lists `agent` as `agent-1`, a framework `fwui` with a
/// web UI at `webui`, and a framework `srvfw` whose UI is found through DNS (`webui_url: ""`).
pub async fn fake_master(name: &str, agent: SocketAddr, webui: SocketAddr) -> SocketAddr {
    let summary = json!({
        "hostname": "127.0.0.1",
        "cluster": "test",
        "slaves": [{"id": "agent-1", "pid": format!("slave(1)@{agent}"), "hostname": "127.0.0.1"}],
        "frameworks": [
            {"id": "fw-1", "name": "fwui", "webui_url": format!("http://{webui}"), "active": true},
            {"id": "fw-2", "name": "srvfw", "webui_url": "", "active": true},
        ],
    });
    let extra = axum::Router::new().route(
        "/master/state-summary",
        get(move || async move { axum::Json(summary) }),
    );
    echo_server(name, extra).await
}

/// A fake master of an older kind: no state summary (404), only `/master/state`, which lists
/// `agent` as `agent-2`.
pub async fn fake_master_without_summary(name: &str, agent: SocketAddr) -> SocketAddr {
    let state = json!({
        "hostname": "127.0.0.1",
        "slaves": [{"id": "agent-2", "pid": format!("slave(1)@{agent}"), "hostname": "127.0.0.1"}],
        "frameworks": [],
    });
    let extra = axum::Router::new()
        .route(
            "/master/state-summary",
            get(|| async { axum::http::StatusCode::NOT_FOUND }),
        )
        .route(
            "/master/state",
            get(move || async move { axum::Json(state) }),
        );
    echo_server(name, extra).await
}

/// A fake apps daemon: `/v2/apps` lists one app per `(service name, task address)`, labelled
/// with that service name and one running task; `/v2/events` sends one SSE event at once and
/// another each time `next` is notified.
pub async fn fake_apps(
    name: &str,
    services: &[(&str, SocketAddr)],
    next: Arc<Notify>,
) -> SocketAddr {
    let list: Vec<Value> = services
        .iter()
        .map(|(service, task)| {
            json!({
                "id": format!("/{service}"),
                "labels": {
                    "DCOS_SERVICE_NAME": service,
                    "DCOS_SERVICE_PORT_INDEX": "0",
                    "DCOS_SERVICE_SCHEME": "http",
                },
                "tasks": [{
                    "id": format!("{service}.1"),
                    "host": "127.0.0.1",
                    "ports": [task.port()],
                    "ipAddresses": [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
                    "state": "TASK_RUNNING",
                }],
            })
        })
        .collect();
    let apps = json!({ "apps": list });
    let extra = axum::Router::new()
        .route("/v2/apps", get(move || async move { axum::Json(apps) }))
        .route(
            "/v2/events",
            get(move || {
                let next = next.clone();
                async move { sse(next) }
            }),
        );
    echo_server(name, extra).await
}

fn sse(next: Arc<Notify>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut n = 1;
        loop {
            let event = format!("event: tick\ndata: {{\"n\":{n}}}\n\n");
            if tx.send(Ok(Bytes::from(event))).await.is_err() {
                return;
            }
            next.notified().await;
            n += 1;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A fake dns HTTP API: `_srvfw._tcp.marathon.mesos` points at `target`; everything else is
/// echoed.
pub async fn fake_dns(target: SocketAddr) -> SocketAddr {
    let extra = axum::Router::new().route(
        "/v1/services/_srvfw._tcp.marathon.mesos",
        get(move || async move {
            axum::Json(json!([{
                "service": "_srvfw._tcp.marathon.mesos",
                "host": "srvfw.marathon.mesos.",
                "ip": target.ip().to_string(),
                "port": target.port().to_string(),
            }]))
        }),
    );
    echo_server("dns", extra).await
}

/// A task's web server: echoes, `/redirect` answers 302 to `/next`, `/absolute` 302 to its
/// own absolute URL.
pub async fn fake_task(name: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let extra = axum::Router::new()
        .route(
            "/redirect",
            get(|| async { (axum::http::StatusCode::FOUND, [("location", "/next")]) }),
        )
        .route(
            "/absolute",
            get(move || async move {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", format!("http://{addr}/abs?x=1"))],
                )
            }),
        );
    let app = extra.fallback(echo).with_state(Arc::new(name.to_owned()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A raw WebSocket server: completes the upgrade handshake, then echoes every byte.
pub async fn websocket_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut conn).await;
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                let accept = websocket_accept(&key);
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                if conn.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

pub fn websocket_accept(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Reads up to the end of an HTTP head (`\r\n\r\n`).
pub async fn read_head(conn: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        match conn.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends `request` as is on a new connection to `addr` and returns the status code and the
/// whole answer (for targets an HTTP client would normalise).
pub async fn raw(addr: SocketAddr, request: &str) -> anyhow::Result<(u16, String)> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    Ok((code, text))
}

/// The cluster CA and certificates it signs.
pub struct Ca {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test cluster CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let cert_pem = cert.pem();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&cert_pem, key).unwrap();
        Ca { cert_pem, issuer }
    }

    /// A server certificate for `localhost` and 127.0.0.1, named `cn`: (cert PEM, key PEM).
    pub fn issue(&self, cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `path` atomically (temp file, rename).
/// Writes `path` by renaming a new file over it, 0600 (the router refuses a TLS key others can
/// read; certificates do not mind).
pub fn write_atomic(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What a router test runs against.
pub struct Cluster {
    _dir: tempfile::TempDir,
    _coord: capstan_coord::ServerHandle,
    pub coord_addr: String,
    pub client: Client,
    pub master: SocketAddr,
    pub agent: SocketAddr,
    pub apps: SocketAddr,
    pub dns: SocketAddr,
    pub sse_next: Arc<Notify>,
    pub ca: Ca,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Cluster {
    /// coord with the cluster's identity and first administrator, and every fake upstream.
    pub async fn start() -> Cluster {
        let dir = capstan_testkit::temp_dir().unwrap();
        let (coord, coord_addr) = start_coord(dir.path()).await;
        let client = Client::new([coord_addr.as_str()]).unwrap();
        let ca = Ca::new();
        let info = capstan_types::cluster::ClusterInfo {
            cluster_id: CLUSTER_ID.into(),
            name: "test".into(),
            ca_pem: ca.cert_pem.clone(),
            ca_fingerprint: String::new(),
            created_ms: 0,
        };
        client
            .put(
                &keyspace::under(keyspace::CLUSTER, "info"),
                serde_json::to_vec(&info).unwrap(),
            )
            .await
            .unwrap();
        let admin = capstan_types::cluster::AdminRecord {
            uid: ADMIN.into(),
            password_hash: capstan_iam::password::hash(PASSWORD).unwrap(),
        };
        client
            .put(
                &keyspace::under(keyspace::CLUSTER, "admin"),
                serde_json::to_vec(&admin).unwrap(),
            )
            .await
            .unwrap();
        let agent = echo_server("agent-1", axum::Router::new()).await;
        let webui = echo_server("fwui", axum::Router::new()).await;
        let master = fake_master("master-a", agent, webui).await;
        let task = fake_task("web-task").await;
        let sse_next = Arc::new(Notify::new());
        let ws = websocket_echo().await;
        let apps = fake_apps("apps-a", &[("web", task), ("ws", ws)], sse_next.clone()).await;
        let dns = fake_dns(task).await;
        let (cert, key) = ca.issue("router-1");
        let cert_path = dir.path().join("router.pem");
        let key_path = dir.path().join("router.key");
        write_atomic(&cert_path, &cert);
        write_atomic(&key_path, &key);
        Cluster {
            _dir: dir,
            _coord: coord,
            coord_addr,
            client,
            master,
            agent,
            apps,
            dns,
            sse_next,
            ca,
            cert_path,
            key_path,
        }
    }

    /// A router config for this cluster, both listeners on free loopback ports.
    pub fn config(&self) -> Config {
        Config {
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], free_port()))),
            https_listen: Some(SocketAddr::from(([127, 0, 0, 1], free_port()))),
            public_ip: "127.0.0.1".parse().unwrap(),
            coord_endpoints: vec![self.coord_addr.clone()],
            masters: vec![self.master.to_string()],
            apps: vec![self.apps.to_string()],
            dns_http: self.dns.to_string(),
            tls: Some(TlsFiles {
                cert: self.cert_path.clone(),
                key: self.key_path.clone(),
                ca: None,
            }),
            limits: Limits {
                max_body_bytes: 64 * 1024,
                ..Limits::default()
            },
            ..Config::default()
        }
    }

    /// Campaigns for `election` (a keyspace prefix) with `value` under a new lease; returns
    /// the lease (revoke it to end the leadership).
    pub async fn lead(&self, prefix: &str, value: &str) -> u64 {
        let lease = self
            .client
            .lease_grant(Duration::from_secs(30))
            .await
            .unwrap()
            .id;
        Election::new(self.client.clone(), keyspace::election(prefix))
            .campaign(lease, value)
            .await
            .unwrap();
        lease
    }
}

struct Ready(Arc<AtomicBool>);

impl Lifecycle for Ready {
    fn ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn stopping(&self) {}
}

/// A router running on its own thread.
pub struct RouterHandle {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<Exit>>,
}

impl RouterHandle {
    pub async fn start(config: Config) -> anyhow::Result<RouterHandle> {
        let http = config.http_listen.context("no http listener")?;
        let https = config.https_listen;
        let ready = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let (r, s) = (ready.clone(), shutdown.clone());
        let thread = std::thread::spawn(move || capstan_router::run(config, &Ready(r), s));
        capstan_testkit::wait_until("router ready", WAIT, async || {
            ready.load(Ordering::SeqCst) || thread.is_finished()
        })
        .await?;
        if thread.is_finished() {
            let exit = thread
                .join()
                .map_err(|_| anyhow::anyhow!("router panicked"))?;
            anyhow::bail!("router stopped at start: {:?}", exit.into_result().err());
        }
        Ok(RouterHandle {
            http,
            https,
            shutdown,
            thread: Some(thread),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Stops the router and returns how it ended.
    pub async fn stop(mut self) -> Exit {
        self.shutdown.cancel();
        let thread = self.thread.take().expect("running");
        tokio::task::spawn_blocking(move || thread.join().expect("router thread"))
            .await
            .unwrap()
    }
}

impl Drop for RouterHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An HTTP client that does not follow redirects.
pub fn http() -> reqwest::Client {
    capstan_http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in as the first administrator through the router; returns the token.
pub async fn login(router: &RouterHandle) -> anyhow::Result<String> {
    let resp = http()
        .post(router.url("/acs/api/v1/auth/login"))
        .json(&json!({"uid": ADMIN, "password": PASSWORD}))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    anyhow::ensure!(status == 200, "login answered {status}: {body}");
    body["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the login answer")
}

/// GET `path` with `Authorization: token=<token>`; returns status and JSON body.
pub async fn get_json(
    router: &RouterHandle,
    path: &str,
    token: &str,
) -> anyhow::Result<(u16, Value)> {
    let resp = http()
        .get(router.url(path))
        .header("authorization", format!("token={token}"))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}
