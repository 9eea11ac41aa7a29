//! The router on a dev cluster, driven by its reference client: the real DC/OS CLI
//! (`dcoscli` 0.6.1 from PyPI, unmodified) over http and https, plus what the CLI does not
//! exercise — the unauthenticated set, server-sent events and a WebSocket through the router,
//! a master failover while a client streams, and certificate rotation.
//!
//! Every test but the failover one shares one cluster (1 master, 1 agent; see
//! `DevCluster::shared`): starting a cluster is the slow part, and none of these tests breaks
//! it. Apps are host-command tasks (`cmd` without a container) running the host's python3,
//! so nothing needs an image.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use capstan_testkit::python::{ClusterTls, DcosCli};
use capstan_testkit::wait_until;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{DevCluster, ONE_AT_A_TIME, text};

/// The host's python3 (host-command tasks run it; the agent passes its own PATH on).
const PYTHON: &str = "/usr/bin/python3";

/// The shared cluster and what `capstan dev status --json` says about its router.
struct Shared {
    cluster: DevCluster,
    ip: String,
    http: String,
    https: String,
    ca: PathBuf,
    password: String,
    cluster_id: String,
}

static SHARED: tokio::sync::OnceCell<Shared> = tokio::sync::OnceCell::const_new();

async fn shared() -> anyhow::Result<&'static Shared> {
    SHARED
        .get_or_try_init(|| async {
            let cluster = tokio::task::spawn_blocking(|| DevCluster::shared(1, 1, 2)).await??;
            let status = cluster.status()?;
            let field = |k: &str| -> anyhow::Result<String> {
                status[k]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("status has no {k}: {status:#}"))
            };
            let ip = cluster.master_ip(1);
            ensure!(field("router")? == format!("http://{ip}"), "{status:#}");
            ensure!(
                field("router_https")? == format!("https://{ip}"),
                "{status:#}"
            );
            ensure!(status["admin"]["uid"] == "admin", "{status:#}");
            let password = status["admin"]["password"]
                .as_str()
                .context("admin password")?
                .to_owned();
            // `up` printed the same: the URLs, the CA and the credentials.
            let up = &cluster.up_stdout;
            for want in [
                format!("Router  http://{ip}  https://{ip}"),
                format!("Admin   uid admin  password {password}"),
                field("ca")?,
            ] {
                ensure!(up.contains(&want), "`dev up` did not print {want:?}:\n{up}");
            }
            Ok(Shared {
                http: field("router")?,
                https: field("router_https")?,
                ca: PathBuf::from(field("ca")?),
                cluster_id: field("cluster_id")?,
                password,
                ip,
                cluster,
            })
        })
        .await
}

fn http() -> reqwest::Client {
    capstan_http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a plain client builds")
}

/// A token for `admin` from the router at `base` (`http://ip`).
async fn login(base: &str, password: &str) -> anyhow::Result<String> {
    let resp = http()
        .post(format!("{base}/acs/api/v1/auth/login"))
        .json(&json!({"uid": "admin", "password": password}))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    ensure!(status == 200, "login answered {status}: {body}");
    Ok(body["token"]
        .as_str()
        .context("login: no token")?
        .to_owned())
}

fn auth(token: &str) -> String {
    format!("token={token}")
}

/// Writes a Marathon app definition for the CLI to read.
fn app_file(dir: &Path, app: &Value) -> anyhow::Result<PathBuf> {
    let id = app["id"]
        .as_str()
        .context("app id")?
        .trim_start_matches('/');
    let path = dir.join(format!("{id}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(app)?)?;
    Ok(path)
}

/// A host-command app that prints `marker` to stdout and then serves HTTP on its port.
fn web_app(id: &str, marker: &str) -> Value {
    json!({
        "id": id, "instances": 1, "cpus": 0.1, "mem": 32,
        "portDefinitions": [{"port": 0}],
        "cmd": format!("echo {marker}; exec {PYTHON} -m http.server $PORT0"),
    })
}

/// `dcos` with stdout parsed as JSON.
async fn dcos_json(cli: &DcosCli, args: &[&str]) -> anyhow::Result<Value> {
    let out = cli.run(args).await?.ok()?;
    serde_json::from_str(&out.stdout).with_context(|| format!("dcos {args:?}: {}", out.stdout))
}

/// Every CLI command of the issue's compatibility list, against the cluster `cli` is set
/// up for: nodes, an app's whole life through `dcos marathon`, its task through `dcos task`,
/// and the frameworks through `dcos service`.
async fn cli_walkthrough(
    cli: &DcosCli,
    s: &Shared,
    app_id: &str,
    work: &Path,
) -> anyhow::Result<()> {
    let out = cli
        .run(&[
            "auth",
            "login",
            "--username",
            "admin",
            "--password",
            &s.password,
        ])
        .await?
        .ok()?;
    ensure!(out.stdout.contains("Login successful"), "{out:?}");

    // dcos node: the agent, from /mesos/master/state-summary and /mesos_dns/.
    let agent_ip = format!("127.{}.2.1", s.cluster.net);
    let nodes = dcos_json(cli, &["node", "--json"]).await?;
    ensure!(
        nodes
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["hostname"] == agent_ip.as_str())),
        "dcos node lacks the agent {agent_ip}: {nodes:#}"
    );
    let table = cli.run(&["node"]).await?.ok()?;
    ensure!(table.stdout.contains(&agent_ip), "{table:?}");

    // dcos marathon app add / list / show.
    let marker = format!("hello-from-{}", app_id.trim_start_matches('/'));
    let file = app_file(work, &web_app(app_id, &marker))?;
    let out = cli
        .run(&["marathon", "app", "add", &file.display().to_string()])
        .await?
        .ok()?;
    ensure!(out.stdout.contains("Created deployment"), "{out:?}");
    let apps = dcos_json(cli, &["marathon", "app", "list", "--json"]).await?;
    ensure!(
        apps.as_array()
            .is_some_and(|a| a.iter().any(|a| a["id"] == app_id)),
        "{apps:#}"
    );
    let table = cli.run(&["marathon", "app", "list"]).await?.ok()?;
    ensure!(table.stdout.contains(app_id), "{table:?}");
    let shown = dcos_json(cli, &["marathon", "app", "show", app_id]).await?;
    ensure!(shown["id"] == app_id, "{shown:#}");
    // The deployment may be over already: then the CLI says so and exits 1, as with DC/OS.
    let out = cli.run(&["marathon", "deployment", "list"]).await?;
    ensure!(
        out.status.success() || out.stderr.contains("There are no deployments"),
        "{out:?}"
    );
    let out = cli
        .run(&["marathon", "deployment", "list", "--json"])
        .await?
        .ok()?;
    ensure!(out.stdout.trim_start().starts_with('['), "{out:?}");

    // dcos task: the app's task running, its sandbox listed, its stdout read.
    let name = app_id.trim_start_matches('/');
    let task_id = wait_until(
        "the app's task running",
        Duration::from_secs(90),
        async || {
            let tasks = dcos_json(cli, &["task", "--json"]).await.ok()?;
            tasks.as_array()?.iter().find_map(|t| {
                (t["name"] == name && t["state"] == "TASK_RUNNING")
                    .then(|| t["id"].as_str().map(str::to_owned))
                    .flatten()
            })
        },
    )
    .await
    .with_context(|| s.cluster.logs())?;
    let table = cli.run(&["task"]).await?.ok()?;
    ensure!(table.stdout.contains(name), "{table:?}");
    let ls = cli.run(&["task", "ls", &task_id]).await?.ok()?;
    ensure!(ls.stdout.contains("stdout"), "dcos task ls: {ls:?}");
    let log = wait_until("the task's stdout", Duration::from_secs(30), async || {
        let out = cli.run(&["task", "log", &task_id]).await.ok()?;
        out.stdout.contains(&marker).then_some(out)
    })
    .await?;
    ensure!(log.status.success(), "{log:?}");

    // dcos service: the apps framework (named marathon), with its task.
    let services = dcos_json(cli, &["service", "--json"]).await?;
    ensure!(
        services
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["name"] == "marathon")),
        "{services:#}"
    );
    let table = cli.run(&["service"]).await?.ok()?;
    ensure!(table.stdout.contains("marathon"), "{table:?}");

    // restart: a new task replaces the old one; remove: the app is gone.
    let out = cli
        .run(&["marathon", "app", "restart", app_id])
        .await?
        .ok()?;
    ensure!(out.stdout.contains("Created deployment"), "{out:?}");
    wait_until("a restarted task", Duration::from_secs(90), async || {
        let tasks = dcos_json(cli, &["task", "--json"]).await.ok()?;
        tasks.as_array()?.iter().find_map(|t| {
            (t["name"] == name && t["state"] == "TASK_RUNNING" && t["id"] != task_id.as_str())
                .then_some(())
        })
    })
    .await
    .with_context(|| s.cluster.logs())?;
    cli.run(&["marathon", "app", "remove", app_id])
        .await?
        .ok()?;
    wait_until("the app removed", Duration::from_secs(60), async || {
        let apps = dcos_json(cli, &["marathon", "app", "list", "--json"])
            .await
            .ok()?;
        apps.as_array()?
            .iter()
            .all(|a| a["id"] != app_id)
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dcos_cli_over_http() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = shared().await?;
    let cli = DcosCli::new().await?;
    let out = cli
        .cluster_setup(&s.http, "admin", &s.password, &ClusterTls::Default)
        .await?
        .ok()?;
    // The CLI keeps the cluster under its id, which it accepts only as a lowercase UUIDv4.
    let dir = cli.dcos_dir().join("clusters").join(&s.cluster_id);
    ensure!(dir.join("dcos.toml").is_file(), "{out:?}");
    let list = dcos_json(&cli, &["cluster", "list", "--json"]).await?;
    ensure!(list[0]["cluster_id"] == s.cluster_id.as_str(), "{list:#}");
    let work = capstan_testkit::temp_dir()?;
    cli_walkthrough(&cli, s, "/cli-http", work.path()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn dcos_cli_over_https_with_the_cluster_ca() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = shared().await?;
    // The CA from `capstan dev status`, given on the command line.
    let cli = DcosCli::new().await?;
    cli.cluster_setup(
        &s.https,
        "admin",
        &s.password,
        &ClusterTls::CaCerts(s.ca.clone()),
    )
    .await?
    .ok()?;
    let work = capstan_testkit::temp_dir()?;
    cli_walkthrough(&cli, s, "/cli-https", work.path()).await?;

    // No CA given: the CLI downloads /ca/dcos-ca.crt, shows its fingerprint, we answer yes,
    // and it verifies every later request against it.
    let cli = DcosCli::new().await?;
    let out = cli
        .cluster_setup(&s.https, "admin", &s.password, &ClusterTls::Default)
        .await?
        .ok()?;
    let dir = cli.dcos_dir().join("clusters").join(&s.cluster_id);
    let stored = std::fs::read_to_string(dir.join("dcos_ca.crt"))
        .with_context(|| format!("no downloaded CA: {out:?}"))?;
    ensure!(stored.trim() == std::fs::read_to_string(&s.ca)?.trim());
    let toml = std::fs::read_to_string(dir.join("dcos.toml"))?;
    ensure!(
        toml.contains("dcos_ca.crt") && toml.contains("https://"),
        "{toml}"
    );
    cli.run(&["marathon", "app", "list"]).await?.ok()?;
    cli.run(&["node"]).await?.ok()?;
    Ok(())
}

/// What an open route may answer: anything but the auth challenge.
const OPEN: [(&str, &str); 5] = [
    ("GET", "/dcos-metadata/dcos-version.json"),
    ("GET", "/dcos-metadata/ui-config.json"),
    ("GET", "/login"),
    ("GET", "/exhibitor/exhibitor/v1/cluster/status"),
    ("GET", "/acs/api/v1/auth/providers"),
];

/// Routes of §7 outside §6.1's unauthenticated set.
const PROTECTED: [(&str, &str); 21] = [
    ("GET", "/metadata"),
    ("GET", "/pkgpanda/active.buildinfo.full.json"),
    ("HEAD", "/pkgpanda/active.buildinfo.full.json"),
    ("GET", "/capabilities"),
    ("GET", "/mesos/master/state.json"),
    ("GET", "/mesos/master/state-summary"),
    ("POST", "/mesos/api/v1"),
    ("GET", "/mesos_dns/v1/hosts/master.mesos"),
    ("GET", "/marathon/v2/apps"),
    ("GET", "/service/marathon/v2/apps"),
    ("GET", "/service/marathon/v2/events"),
    ("POST", "/service/marathon/v2/apps"),
    ("GET", "/service/metronome/v1/jobs"),
    ("GET", "/service/no-such-service/"),
    ("POST", "/package/search"),
    ("GET", "/cosmos/service/describe"),
    ("GET", "/system/health/v1"),
    ("GET", "/system/v1/logs/v2/component"),
    ("GET", "/system/v1/metrics/v0/node"),
    ("GET", "/acs/api/v1/users"),
    ("GET", "/exhibitor/exhibitor/v1/cluster/list"),
];

#[tokio::test(flavor = "multi_thread")]
async fn no_route_outside_the_open_set_answers_without_a_token() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = shared().await?;
    let client = http();
    let summary: Value = client
        .get(format!("http://{}:5050/master/state-summary", s.ip))
        .send()
        .await?
        .json()
        .await?;
    let agent = summary["slaves"][0]["id"].as_str().context("an agent id")?;
    let agent_paths = [
        format!("/agent/{agent}/state.json"),
        format!("/slave/{agent}/state.json"),
    ];
    let mut protected: Vec<(&str, String)> = PROTECTED
        .iter()
        .map(|(m, p)| (*m, (*p).to_owned()))
        .collect();
    protected.extend(agent_paths.iter().map(|p| ("GET", p.clone())));
    let forged = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ1aWQiOiJhZG1pbiJ9.";
    let mut wrong = Vec::new();
    for (method, path) in &protected {
        for token in [None, Some("garbage"), Some(forged)] {
            let mut req = client.request(method.parse()?, format!("{}{path}", s.http));
            if let Some(t) = token {
                req = req.header("Authorization", auth(t));
            }
            let resp = req.send().await?;
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if resp.status() != 401 || !challenge.starts_with("acsjwt") {
                wrong.push(format!(
                    "http {method} {path} (token {token:?}): {} {challenge:?}",
                    resp.status()
                ));
            }
        }
        // The https listener answers the same, over TLS verified with the cluster CA.
        let r = https_request(s, method, path, None).await?;
        if r.status != 401 || !r.www_authenticate.starts_with("acsjwt") {
            wrong.push(format!(
                "https {method} {path}: {} {:?}",
                r.status, r.www_authenticate
            ));
        }
    }
    for (method, path) in OPEN {
        let resp = client
            .request(method.parse()?, format!("{}{path}", s.http))
            .send()
            .await?;
        if resp.status() == 401 {
            wrong.push(format!("open {method} {path} asked for a token"));
        }
    }
    ensure!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));

    // The CA is served in the open, byte for byte the cluster's.
    let ca = client
        .get(format!("{}/ca/dcos-ca.crt", s.http))
        .send()
        .await?;
    ensure!(ca.status() == 200);
    ensure!(ca.text().await?.trim() == std::fs::read_to_string(&s.ca)?.trim());

    // With a token, the same routes answer; /metadata carries the cluster id.
    let token = login(&s.http, &s.password).await?;
    let meta: Value = client
        .get(format!("{}/metadata", s.http))
        .header("Authorization", auth(&token))
        .send()
        .await?
        .json()
        .await?;
    ensure!(meta["CLUSTER_ID"] == s.cluster_id.as_str(), "{meta}");
    ensure!(meta["PUBLIC_IPV4"] == s.ip.as_str(), "{meta}");
    for path in ["/mesos/master/state.json", "/service/marathon/v2/apps"] {
        let resp = client
            .get(format!("{}{path}", s.http))
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .await?;
        ensure!(resp.status() == 200, "{path}: {}", resp.status());
    }
    let resp = client
        .get(format!("{}/mesos/master/state.json", s.http))
        .header("Cookie", format!("dcos-acs-auth-cookie={token}"))
        .send()
        .await?;
    ensure!(resp.status() == 200, "cookie: {}", resp.status());
    let bad = client
        .post(format!("{}/acs/api/v1/auth/login", s.http))
        .json(&json!({"uid": "admin", "password": "not-the-password"}))
        .send()
        .await?;
    ensure!(bad.status() == 401, "a wrong password: {}", bad.status());
    Ok(())
}

/// Reads server-sent events from `resp` until one whose text contains `want`.
async fn next_event_with(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
    want: &str,
) -> anyhow::Result<String> {
    loop {
        while let Some(end) = buf.find("\n\n").or_else(|| buf.find("\r\n\r\n")) {
            let event: String = buf.drain(..end + 2).collect();
            if event.contains(want) {
                return Ok(event);
            }
        }
        match stream.next().await {
            Some(chunk) => buf.push_str(&String::from_utf8_lossy(&chunk?)),
            None => bail!("the event stream ended before an event with {want:?}"),
        }
    }
}

async fn open_events(base: &str, token: &str) -> anyhow::Result<reqwest::Response> {
    let resp = capstan_http_client::client()
        .get(format!("{base}/service/marathon/v2/events"))
        .header("Authorization", auth(token))
        .header("Accept", "text/event-stream")
        .send()
        .await?;
    ensure!(resp.status() == 200, "events: {}", resp.status());
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ensure!(
        ct.starts_with("text/event-stream"),
        "events content type {ct:?}"
    );
    Ok(resp)
}

#[tokio::test(flavor = "multi_thread")]
async fn server_sent_events_stream_through_the_router() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = shared().await?;
    let token = login(&s.http, &s.password).await?;
    let resp = open_events(&s.http, &token).await?;
    let mut stream = Box::pin(resp.bytes_stream());
    let mut buf = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        next_event_with(&mut stream, &mut buf, "event_stream_attached"),
    )
    .await
    .context("no event_stream_attached")??;
    // An event caused after the stream opened arrives unbuffered, while the stream stays open.
    let app =
        json!({"id": "/sse-probe", "instances": 0, "cpus": 0.1, "mem": 16, "cmd": "sleep 1000"});
    let resp = http()
        .post(format!("{}/service/marathon/v2/apps", s.http))
        .header("Authorization", auth(&token))
        .json(&app)
        .send()
        .await?;
    ensure!(resp.status() == 201, "{}", resp.text().await?);
    let event = tokio::time::timeout(
        Duration::from_secs(30),
        next_event_with(&mut stream, &mut buf, "/sse-probe"),
    )
    .await
    .context("no event for the new app")??;
    ensure!(
        event.contains("event:") || event.contains("data:"),
        "{event}"
    );
    let resp = http()
        .delete(format!("{}/service/marathon/v2/apps/sse-probe", s.http))
        .header("Authorization", auth(&token))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "{}", resp.status());
    Ok(())
}

/// A WebSocket echo server on the standard library only: answers plain GETs with
/// `wsecho`, upgrades requests that ask, and echoes every text or binary frame.
const WS_ECHO: &str = r#"
import base64, hashlib, socketserver, struct, sys
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        lines = []
        while True:
            line = self.rfile.readline()
            if not line or line in (b"\r\n", b"\n"):
                break
            lines.append(line.decode("latin-1").strip())
        headers = {}
        for l in lines[1:]:
            if ":" in l:
                k, v = l.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            body = b"wsecho\n"
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            return
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
        self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            op, n, masked = head[0] & 0x0F, head[1] & 0x7F, head[1] & 0x80
            if n == 126:
                n = struct.unpack(">H", self.rfile.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if masked else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if op == 8:
                self.wfile.write(b"\x88\x00")
                return
            if op == 9:
                op = 10
            size = bytes([n]) if n < 126 else b"\x7e" + struct.pack(">H", n)
            self.wfile.write(bytes([0x80 | op]) + size + data)
            self.wfile.flush()
class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True
Server(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"#;

/// The RFC 6455 example key and the accept value it must produce.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Opens a WebSocket at `path` through the router's plain listener; returns the stream
/// after the 101 and the response head.
async fn ws_connect(
    ip: &str,
    path: &str,
    token: &str,
) -> anyhow::Result<(tokio::net::TcpStream, String)> {
    let mut tcp = tokio::net::TcpStream::connect((ip, 80)).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\nAuthorization: token={token}\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(
            tcp.read(&mut byte).await? == 1,
            "closed during the handshake: {}",
            text(&head)
        );
        head.push(byte[0]);
        ensure!(head.len() < 16 * 1024, "handshake too long");
    }
    Ok((tcp, text(&head)))
}

/// Sends one masked text frame and reads the echoed frame.
async fn ws_echo(tcp: &mut tokio::net::TcpStream, message: &str) -> anyhow::Result<String> {
    let payload = message.as_bytes();
    ensure!(payload.len() < 126);
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await?;
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await?;
    ensure!(head[0] == 0x81, "not a final text frame: {head:?}");
    ensure!(head[1] & 0x80 == 0, "a server frame must not be masked");
    let mut data = vec![0u8; usize::from(head[1] & 0x7F)];
    tcp.read_exact(&mut data).await?;
    Ok(String::from_utf8(data)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_echoes_through_the_service_route() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = shared().await?;
    let token = login(&s.http, &s.password).await?;
    let script = s.cluster.state_dir.join("wsecho.py");
    std::fs::write(&script, WS_ECHO)?;
    let app = json!({
        "id": "/wsecho", "instances": 1, "cpus": 0.1, "mem": 32,
        "portDefinitions": [{"port": 0}],
        "cmd": format!("exec {PYTHON} {} $PORT0", script.display()),
        "labels": {"DCOS_SERVICE_NAME": "wsecho", "DCOS_SERVICE_PORT_INDEX": "0",
                   "DCOS_SERVICE_SCHEME": "http"},
    });
    let client = http();
    let resp = client
        .post(format!("{}/service/marathon/v2/apps", s.http))
        .header("Authorization", auth(&token))
        .json(&app)
        .send()
        .await?;
    ensure!(resp.status() == 201, "{}", resp.text().await?);
    // The router learns the app's task; a plain request reaches it under /service/wsecho/.
    wait_until(
        "/service/wsecho/ answering",
        Duration::from_secs(90),
        async || {
            let resp = client
                .get(format!("{}/service/wsecho/", s.http))
                .header("Authorization", auth(&token))
                .send()
                .await
                .ok()?;
            let ok = resp.status() == 200;
            let body = resp.text().await.ok()?;
            (ok && body.contains("wsecho")).then_some(())
        },
    )
    .await
    .with_context(|| s.cluster.logs())?;

    let (mut ws, head) = ws_connect(&s.ip, "/service/wsecho/", &token).await?;
    ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
    ensure!(
        head.to_ascii_lowercase().contains(&format!(
            "sec-websocket-accept: {}",
            WS_ACCEPT.to_ascii_lowercase()
        )),
        "{head}"
    );
    for msg in ["hello", "through the router", "third"] {
        ensure!(ws_echo(&mut ws, msg).await? == msg);
    }
    // Without a token the upgrade is refused like any other request.
    let (_, head) = ws_connect(&s.ip, "/service/wsecho/", "garbage").await?;
    ensure!(head.starts_with("HTTP/1.1 401"), "{head}");

    let resp = client
        .delete(format!("{}/service/marathon/v2/apps/wsecho", s.http))
        .header("Authorization", auth(&token))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "{}", resp.status());
    Ok(())
}

/// One HTTPS response as the tests need it.
struct HttpsAnswer {
    status: u16,
    www_authenticate: String,
    peer_cert: Vec<u8>,
}

fn tls_connector(ca_pem: &str) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let config = capstan_install::pki::client_config(ca_pem)?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A TLS connection to the router's https listener at `ip`, verified against the CA for the
/// name `ip`.
async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    ip: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect((ip, 443)).await?;
    let name = rustls::pki_types::ServerName::try_from(ip.to_owned())?;
    Ok(connector.connect(name, tcp).await?)
}

fn peer_cert(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default()
}

/// A raw HTTP/1.1 request over a fresh TLS connection (`Connection: close`).
async fn https_request(
    s: &Shared,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<HttpsAnswer> {
    let connector = tls_connector(&std::fs::read_to_string(&s.ca)?)?;
    let mut tls = tls_connect(&connector, &s.ip).await?;
    let cert = peer_cert(&tls);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n",
        s.ip
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: token={t}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = text(&head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line: {head:?}"))?;
    let www_authenticate = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("www-authenticate")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok(HttpsAnswer {
        status,
        www_authenticate,
        peer_cert: cert,
    })
}

/// One keep-alive HTTPS connection driven by hyper.
async fn keep_alive_connection(
    connector: &tokio_rustls::TlsConnector,
    ip: &str,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>> {
    let tls = tls_connect(connector, ip).await?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn version_over(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    ip: &str,
) -> anyhow::Result<u16> {
    sender.ready().await?;
    let req = http::Request::get("/dcos-metadata/dcos-version.json")
        .header("host", ip)
        .body(http_body_util::Empty::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    use http_body_util::BodyExt as _;
    resp.into_body().collect().await?;
    Ok(status)
}

fn router_pid(status: &Value) -> Option<u64> {
    status["nodes"][0]["daemons"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == "router")?["pid"]
        .as_u64()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificates_are_served_without_dropping_the_listener() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = shared().await?;
    let ca_pem = std::fs::read_to_string(&s.ca)?;
    let connector = tls_connector(&ca_pem)?;
    let pid_before = router_pid(&s.cluster.status()?).context("router pid")?;
    let before = https_request(s, "GET", "/dcos-metadata/dcos-version.json", None).await?;
    ensure!(before.status == 200);
    let mut kept = keep_alive_connection(&connector, &s.ip).await?;
    ensure!(version_over(&mut kept, &s.ip).await? == 200);

    // Handshakes and requests in a loop while the files change: none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let prober = {
        let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
        let (connector, ip) = (connector.clone(), s.ip.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let ok = match keep_alive_connection(&connector, &ip).await {
                    Ok(mut c) => matches!(version_over(&mut c, &ip).await, Ok(200)),
                    Err(e) => {
                        errors.push(format!("{e:#}"));
                        false
                    }
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            errors
        })
    };

    // Rotate: a new key and certificate from the cluster CA, written over the old files.
    let key_pem = std::fs::read_to_string(s.cluster.state_dir.join("tls/ca.key"))?;
    let ca = capstan_install::pki::Ca(capstan_install::pki::CertifiedKey {
        cert_pem: ca_pem.clone(),
        key_pem,
    });
    let nodes = capstan_dev::layout::layout(1, 1, s.cluster.net)?;
    let paths = capstan_dev::paths::ClusterPaths::new(&s.cluster.state_dir);
    capstan_dev::identity::write_router_cert(&ca, &nodes[0], &paths)?;
    let new_pem = std::fs::read_to_string(paths.node_cert("master-1"))?;
    use rustls::pki_types::pem::PemObject as _;
    let new_der = rustls::pki_types::CertificateDer::from_pem_slice(new_pem.as_bytes())?
        .as_ref()
        .to_vec();
    ensure!(
        new_der != before.peer_cert,
        "the new certificate is the old one"
    );
    let started = Instant::now();
    wait_until(
        "new handshakes see the new certificate",
        Duration::from_secs(60),
        async || {
            let r = https_request(s, "GET", "/dcos-metadata/dcos-version.json", None)
                .await
                .ok()?;
            (r.peer_cert == new_der && r.status == 200).then_some(())
        },
    )
    .await?;
    tracing::info!("rotation seen after {:?}", started.elapsed());
    // A few more rounds of the prober on the new certificate, then stop it.
    let seen = done.load(Ordering::Relaxed);
    wait_until("the prober going on", Duration::from_secs(30), async || {
        (done.load(Ordering::Relaxed) >= seen + 3).then_some(())
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    let errors = prober.await?;
    ensure!(
        failures.load(Ordering::Relaxed) == 0,
        "{} of {} probes failed during the rotation: {errors:?}",
        failures.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed) + done.load(Ordering::Relaxed)
    );
    // The connection made before the rotation still works, and the router never restarted.
    ensure!(version_over(&mut kept, &s.ip).await? == 200);
    ensure!(
        router_pid(&s.cluster.status()?) == Some(pid_before),
        "the router restarted"
    );
    Ok(())
}

/// Waits until `stream` ends (the upstream it came from is gone).
async fn stream_ends(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await
    .context("the event stream from the killed leader never ended")
}

/// Polls until a fresh event stream through the router at `base` attaches and carries the
/// event of an app written after it opened: the route reaches a live apps leader.
async fn events_flow(base: &str, token: &str, app_id: &str) -> anyhow::Result<()> {
    let app = json!({"id": app_id, "instances": 0, "cpus": 0.1, "mem": 16, "cmd": "sleep 1000"});
    let client = http();
    wait_until(
        "events from a live apps leader through the router",
        Duration::from_secs(60),
        async || {
            let resp = open_events(base, token).await.ok()?;
            let mut stream = Box::pin(resp.bytes_stream());
            let mut buf = String::new();
            tokio::time::timeout(
                Duration::from_secs(5),
                next_event_with(&mut stream, &mut buf, "event_stream_attached"),
            )
            .await
            .ok()?
            .ok()?;
            // PUT creates or updates: a retry after a half-done attempt is harmless.
            let put = client
                .put(format!("{base}/service/marathon/v2/apps{app_id}"))
                .header("Authorization", auth(token))
                .json(&app)
                .send()
                .await
                .ok()?;
            if !put.status().is_success() {
                return None;
            }
            tokio::time::timeout(
                Duration::from_secs(10),
                next_event_with(&mut stream, &mut buf, app_id),
            )
            .await
            .ok()?
            .ok()
        },
    )
    .await?;
    Ok(())
}

/// Polls until `/mesos/master/state.json` through the router comes from a leading master
/// that is not on `killed_ip`.
async fn mesos_follows(base: &str, token: &str, killed_ip: &str) -> anyhow::Result<()> {
    let client = http();
    wait_until(
        "a live leading master through the router",
        Duration::from_secs(60),
        async || {
            let v: Value = client
                .get(format!("{base}/mesos/master/state.json"))
                .header("Authorization", auth(token))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let leading = v["leader"].as_str()?;
            (!leading.contains(&format!("@{killed_ip}:"))).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leading_master_the_event_stream_follows_the_new_leader() -> anyhow::Result<()>
{
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = tokio::task::spawn_blocking(|| DevCluster::up(3, 1, 3)).await??;
    let status = cluster.status()?;
    let password = status["admin"]["password"]
        .as_str()
        .context("admin password")?
        .to_owned();
    let leader_of = |status: &Value, what: &str| -> anyhow::Result<String> {
        Ok(status["leaders"][what]
            .as_str()
            .with_context(|| format!("no {what} leader: {status:#}"))?
            .to_owned())
    };
    let index =
        |node: &str| -> anyhow::Result<u8> { Ok(node.trim_start_matches("master-").parse()?) };
    let master = leader_of(&status, "master")?;
    let apps = leader_of(&status, "apps")?;
    // Stream through the router of a master that leads nothing, so it survives both kills.
    let survivor = (1..=3u8)
        .find(|i| ![&master, &apps].contains(&&format!("master-{i}")))
        .context("a master leading nothing")?;
    let base = format!("http://{}", cluster.master_ip(survivor));
    let token = login(&base, &password).await?;
    let resp = open_events(&base, &token).await?;
    let mut stream = Box::pin(resp.bytes_stream());
    let mut buf = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        next_event_with(&mut stream, &mut buf, "event_stream_attached"),
    )
    .await
    .context("no event_stream_attached")??;

    // 1. The leading master's node goes down (with it, apps' leader, if it is there too).
    let out = cluster.capstan(&["kill", &master])?;
    ensure!(out.status.success(), "kill failed: {}", text(&out.stderr));
    let killed = Instant::now();
    mesos_follows(&base, &token, &cluster.master_ip(index(&master)?))
        .await
        .with_context(|| cluster.logs())?;
    tracing::info!(
        "the mesos route follows {:?} after killing {master}",
        killed.elapsed()
    );
    if apps == master {
        stream_ends(&mut stream).await?;
        events_flow(&base, &token, "/after-master-failover")
            .await
            .with_context(|| cluster.logs())?;
        tracing::info!(
            "events flow again {:?} after killing {master}",
            killed.elapsed()
        );
        return Ok(());
    }
    // apps leads elsewhere: its stream is untouched by the master failover...
    let still = tokio::time::timeout(Duration::from_secs(30), async {
        events_flow(&base, &token, "/during-master-failover").await
    })
    .await;
    ensure!(matches!(still, Ok(Ok(()))), "events stopped: {still:?}");

    // 2. ...so bring that node back and take the apps leader's node down.
    let out = cluster.capstan(&["restart", &master])?;
    ensure!(
        out.status.success(),
        "restart failed: {}",
        text(&out.stderr)
    );
    wait_until(
        "every daemon healthy again",
        Duration::from_secs(60),
        async || {
            let s = cluster.status().ok()?;
            s["nodes"]
                .as_array()?
                .iter()
                .flat_map(|n| n["daemons"].as_array().cloned().unwrap_or_default())
                .all(|d| d["health"] == "healthy")
                .then_some(())
        },
    )
    .await
    .with_context(|| cluster.logs())?;
    let out = cluster.capstan(&["kill", &apps])?;
    ensure!(out.status.success(), "kill failed: {}", text(&out.stderr));
    let killed = Instant::now();
    stream_ends(&mut stream).await?;
    events_flow(&base, &token, "/after-apps-failover")
        .await
        .with_context(|| cluster.logs())?;
    tracing::info!(
        "events flow again {:?} after killing {apps}",
        killed.elapsed()
    );
    mesos_follows(&base, &token, &cluster.master_ip(index(&apps)?))
        .await
        .with_context(|| cluster.logs())?;
    Ok(())
}
