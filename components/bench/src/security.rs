//! The cost of strict mode (issue #19): the same daemons in permissive mode (plain HTTP, no
//! credential) and in strict mode (mutual TLS with node certificates from a test CA, every
//! user call carrying a token that the daemon verifies), measured in one run, strict against
//! permissive as the peer.
//!
//! Key decision: the daemons run in this process (started as libraries), both modes side by
//! side, and the load alternates between them (rounds in alternating order for coord writes,
//! request by request for the apps API) so that drift of the machine (other processes, the
//! disk) falls on both alike. The measured difference is then TLS (record encryption, the
//! handshake of each new connection) and the credential check, not the process layout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use capstan_iam::{Iam, Options};
use capstan_runtime::auth::{Role, SecurityMode};
use capstan_runtime::tls::NodeTls;
use capstan_runtime::{SecurityConfig, TlsFiles};
use capstan_testkit::pki::{NodeFiles, TestCa};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::report::{Row, Section};
use crate::stats::{ms, percentile};

/// Concurrent coord writers.
const WRITERS: usize = 32;
/// Apps created before the API is timed.
const APPS: usize = 10;
/// The goal: strict within 0.9× of permissive.
const GOAL: f64 = 0.9;
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

fn strict(node: &NodeFiles, ca_file: &std::path::Path) -> SecurityConfig {
    SecurityConfig {
        mode: SecurityMode::Strict,
        tls: Some(files(node, ca_file)),
        allow_plaintext: false,
    }
}

fn files(node: &NodeFiles, ca_file: &std::path::Path) -> TlsFiles {
    TlsFiles {
        cert_file: node.cert.clone(),
        key_file: node.key.clone(),
        ca_file: ca_file.to_owned(),
    }
}

/// One mode's daemons and the client that speaks to them as a real client would (one pool of
/// keep-alive connections).
struct Side {
    name: &'static str,
    coord: Option<capstan_coord::ServerHandle>,
    coord_base: String,
    apps: Option<capstan_apps::ServerHandle>,
    apps_base: String,
    /// To coord: the node certificate presented (strict).
    http: reqwest::Client,
    /// To apps: the cluster CA trusted, no certificate (a user's client; strict).
    user_http: reqwest::Client,
    /// `Authorization` of a viewer (strict) or nothing (permissive).
    viewer: Option<String>,
    operator: Option<String>,
    stop: CancellationToken,
}

impl Side {
    async fn shutdown(mut self) {
        if let Some(a) = self.apps.take() {
            let _ = a.shutdown().await;
        }
        self.stop.cancel();
        if let Some(c) = self.coord.take() {
            let _ = c.shutdown().await;
        }
    }
}

/// The test PKI: the CA file, the daemons' node certificate and the benchmark client's.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
    daemon: NodeFiles,
    client: NodeFiles,
}

fn pki() -> anyhow::Result<Pki> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let ca = TestCa::new("bench cluster CA")?;
    let ca_file = ca.write_cert(dir.path(), "ca.crt")?;
    let daemon = ca.write_node(dir.path(), "bench-master", "master")?;
    let client = ca.write_node(dir.path(), "bench-client", "master")?;
    Ok(Pki {
        _dir: dir,
        ca_file,
        daemon,
        client,
    })
}

/// A single-member coord under `data_dir` with `security`.
async fn start_coord(
    data_dir: std::path::PathBuf,
    security: SecurityConfig,
) -> anyhow::Result<capstan_coord::ServerHandle> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cfg = capstan_coord::Config {
        id: 1,
        listen: addr,
        data_dir,
        members: vec![capstan_coord::MemberConfig {
            id: 1,
            addr: addr.to_string(),
        }],
        security,
        ..capstan_coord::Config::default()
    };
    capstan_coord::Server::start_on(cfg, listener, CancellationToken::new())
        .await
        .context("starting coord")
}

/// Starts one mode's coord, the users (strict) and apps with its store in that coord.
async fn start_side(mode: SecurityMode, pki: &Pki, dir: &std::path::Path) -> anyhow::Result<Side> {
    let is_strict = mode == SecurityMode::Strict;
    let name = if is_strict { "strict" } else { "permissive" };
    let security = if is_strict {
        strict(&pki.daemon, &pki.ca_file)
    } else {
        SecurityConfig::default()
    };
    let scheme = if is_strict { "https" } else { "http" };
    let coord = start_coord(dir.join(format!("coord-{name}")), security.clone()).await?;
    let coord_addr = coord.local_addr().to_string();
    let client_tls = if is_strict {
        Some(NodeTls::load(&files(&pki.client, &pki.ca_file))?.client_config())
    } else {
        None
    };
    let http = {
        let b = capstan_http_client::builder()
            .pool_max_idle_per_host(WRITERS * 2)
            .timeout(PROBE_TIMEOUT);
        match &client_tls {
            Some(tls) => capstan_http_client::with_tls(b, tls),
            None => b,
        }
        .build()?
    };
    let user_http = {
        let b = capstan_http_client::builder().timeout(PROBE_TIMEOUT);
        if is_strict {
            let trust = capstan_http_client::trusting(&std::fs::read_to_string(&pki.ca_file)?)?;
            capstan_http_client::with_tls(b, &trust)
        } else {
            b
        }
        .build()?
    };
    let stop = CancellationToken::new();
    let (viewer, operator) = if is_strict {
        let coord_client = capstan_coord_client::Client::with_options(
            [coord_addr.clone()],
            capstan_coord_client::ClientOptions {
                tls: client_tls.clone(),
                ..capstan_coord_client::ClientOptions::default()
            },
        )?;
        let iam = Iam::start(coord_client, Options::default(), stop.clone()).await?;
        iam.create_user("bench-viewer", "bench-viewer-pw", "", Role::Viewer)
            .await?;
        iam.create_user("bench-operator", "bench-operator-pw", "", Role::Operator)
            .await?;
        let v = iam
            .login_password("bench-viewer", "bench-viewer-pw", "bench")
            .await?
            .token;
        let o = iam
            .login_password("bench-operator", "bench-operator-pw", "bench")
            .await?
            .token;
        (Some(format!("token={v}")), Some(format!("token={o}")))
    } else {
        (None, None)
    };
    // No master (its subscription retried with the default backoff): the apps are stored
    // with no instances; the API is what is timed. Default (production) timers.
    let mut apps_cfg = capstan_apps::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        masters: vec!["127.0.0.1:1".into()],
        ..capstan_apps::Config::default()
    };
    apps_cfg.store.coord_endpoints = vec![coord_addr.clone()];
    apps_cfg.security = security;
    let apps = capstan_apps::Server::start(apps_cfg, CancellationToken::new())
        .await
        .with_context(|| format!("starting {name} apps"))?;
    let apps_base = format!("{scheme}://127.0.0.1:{}", apps.local_addr().port());
    Ok(Side {
        name,
        coord: Some(coord),
        coord_base: format!("{scheme}://{coord_addr}"),
        apps: Some(apps),
        apps_base,
        http,
        user_http,
        viewer,
        operator,
        stop,
    })
}

/// One durable write of a small key.
async fn put(side: &Side, key: &str, value: &[u8]) -> anyhow::Result<()> {
    let r = side
        .http
        .post(format!("{}/v1/kv/put", side.coord_base))
        .header("Content-Type", "application/json")
        .body(json!({"key": key, "value": B64.encode(value)}).to_string())
        .send()
        .await?;
    let status = r.status();
    let body = r.bytes().await?;
    if !status.is_success() {
        bail!(
            "put answered {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        );
    }
    Ok(())
}

/// What a batch of writes took.
#[derive(Debug, Default, Clone)]
struct Writes {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    latency: Vec<Duration>,
}

impl Writes {
    fn per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, other: Writes) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
        self.latency.extend(other.latency);
    }
}

/// `n` writes of 8-byte keys (prefix `tag`) and 64-byte values by [`WRITERS`] concurrent
/// writers, bounded by `budget`.
async fn writes(side: &Arc<Side>, tag: &str, n: usize, budget: Duration) -> Writes {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (side, next, tag) = (side.clone(), next.clone(), tag.to_owned());
        set.spawn(async move {
            let value = [b'v'; 64];
            let mut out = Writes::default();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n || start.elapsed() > budget {
                    break;
                }
                let key = format!("/{tag}{:06}", i % 1_000_000);
                let t0 = Instant::now();
                match put(&side, &key, &value).await {
                    Ok(()) => {
                        out.ok += 1;
                        out.latency.push(t0.elapsed());
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            out
        });
    }
    let mut total = Writes::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(w) => total.add(w),
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("writer: {e}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// A `GET` of the apps API with the side's viewer credential; the time to the last body byte.
async fn get(side: &Side, path: &str) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut req = side.user_http.get(format!("{}{path}", side.apps_base));
    if let Some(v) = &side.viewer {
        req = req.header("Authorization", v);
    }
    let r = req.send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    let took = t0.elapsed();
    if !status.is_success() {
        bail!(
            "{} GET {path} answered {status}: {}",
            side.name,
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        );
    }
    Ok(took)
}

/// Waits until apps answers `GET /v2/apps` (its leadership in coord settled), then creates
/// [`APPS`] apps with the operator credential.
async fn seed_apps(side: &Side) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match get(side, "/v2/apps").await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{} apps never answered", side.name)));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    for i in 0..APPS {
        let body = json!({"id": format!("/bench/app-{i}"), "cmd": "sleep 1000",
            "cpus": 0.1, "mem": 32, "instances": 0});
        let mut req = side
            .user_http
            .post(format!("{}/v2/apps", side.apps_base))
            .json(&body);
        if let Some(o) = &side.operator {
            req = req.header("Authorization", o);
        }
        let r = req.send().await?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        ensure!(
            status.as_u16() == 201,
            "{} POST /v2/apps answered {status}: {text}",
            side.name
        );
    }
    let listed: Value = {
        let mut req = side.user_http.get(format!("{}/v2/apps", side.apps_base));
        if let Some(v) = &side.viewer {
            req = req.header("Authorization", v);
        }
        req.send().await?.json().await?
    };
    let n = listed["apps"].as_array().map_or(0, Vec::len);
    ensure!(n == APPS, "{} apps lists {n} apps, not {APPS}", side.name);
    if side.viewer.is_some() {
        // What is timed is guarded: the same call without the credential is refused.
        let bare = side
            .user_http
            .get(format!("{}/v2/apps", side.apps_base))
            .send()
            .await?
            .status();
        ensure!(
            bare.as_u16() == 401,
            "strict apps answered a call without a credential with {bare}"
        );
    }
    Ok(())
}

/// Strict coord answers the benchmark's client (its node certificate) and refuses one that
/// presents no certificate: the writes timed went through the mutual-TLS check.
async fn check_coord_guard(side: &Side) -> anyhow::Result<()> {
    let refused = side
        .user_http
        .post(format!("{}/v1/kv/put", side.coord_base))
        .header("Content-Type", "application/json")
        .body(json!({"key": "/guard", "value": B64.encode(b"x")}).to_string())
        .send()
        .await;
    match refused {
        Ok(r) if r.status().is_success() => {
            bail!("strict coord accepted a write from a client without a certificate")
        }
        _ => Ok(()),
    }
}

/// Sequential `GET path` on both sides, `n` each, alternating which side goes first.
async fn api_latency(
    sides: [&Side; 2],
    path: &str,
    n: usize,
    budget: Duration,
) -> anyhow::Result<[Vec<Duration>; 2]> {
    for side in sides {
        for _ in 0..20 {
            get(side, path).await?;
        }
    }
    let mut out = [Vec::with_capacity(n), Vec::with_capacity(n)];
    let start = Instant::now();
    for i in 0..n {
        if start.elapsed() > budget {
            break;
        }
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for s in order {
            out[s].push(get(sides[s], path).await?);
        }
    }
    Ok(out)
}

/// Sequential `GET path` on a fresh connection each time (the TLS handshake included).
async fn fresh_connection_latency(
    side: &Side,
    pki: &Pki,
    path: &str,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let tls = if side.viewer.is_some() {
        Some(capstan_http_client::trusting(&std::fs::read_to_string(
            &pki.ca_file,
        )?)?)
    } else {
        None
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let b = capstan_http_client::builder()
            .pool_max_idle_per_host(0)
            .timeout(PROBE_TIMEOUT);
        let http = match &tls {
            Some(t) => capstan_http_client::with_tls(b, t),
            None => b,
        }
        .build()?;
        let t0 = Instant::now();
        let mut req = http.get(format!("{}{path}", side.apps_base));
        if let Some(v) = &side.viewer {
            req = req.header("Authorization", v);
        }
        let r = req.send().await?;
        ensure!(r.status().is_success(), "{}: {}", side.name, r.status());
        let _ = r.bytes().await?;
        out.push(t0.elapsed());
    }
    Ok(out)
}

fn throughput_row(what: String, perm: &Writes, strict: &Writes) -> Row {
    let mut r = Row::new(what);
    let cell = |w: &Writes| {
        let mut s = format!("{:.0} writes/s", w.per_s());
        if w.errors > 0 {
            s.push_str(&format!(" ({} failed)", w.errors));
        }
        s
    };
    r.capstan = cell(strict);
    r.peer = cell(perm);
    r.goal = format!("≥ {GOAL:.1}× permissive");
    if perm.ok > 0 && strict.ok > 0 {
        let ratio = strict.per_s() / perm.per_s().max(1e-9);
        r.ratio = Some(ratio);
        r.met = Some(ratio >= GOAL && strict.errors == 0);
    }
    r
}

fn latency_rows(what: &str, perm: &[Duration], strict: &[Duration], judged: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for p in [50.0, 99.0] {
        let mut r = Row::new(format!("{what} p{p:.0}"));
        let (a, b) = (percentile(strict, p), percentile(perm, p));
        r.capstan = a.map_or_else(|| "—".into(), ms);
        r.peer = b.map_or_else(|| "—".into(), ms);
        if let (Some(a), Some(b)) = (a, b) {
            let ratio = a.as_secs_f64() / b.as_secs_f64().max(1e-9);
            r.ratio = Some(ratio);
            if judged && p == 99.0 {
                r.goal = format!("≤ {:.2}× permissive (1 / {GOAL:.1})", 1.0 / GOAL);
                r.met = Some(ratio <= 1.0 / GOAL);
            }
        }
        rows.push(r);
    }
    rows
}

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    capstan_http_client::install_provider();
    let n_writes = if quick { 2_000 } else { 20_000 };
    let rounds = if quick { 2 } else { 4 };
    let n_gets = if quick { 300 } else { 3_000 };
    let n_fresh = if quick { 30 } else { 200 };
    let write_budget = Duration::from_secs(if quick { 30 } else { 120 });
    let get_budget = Duration::from_secs(if quick { 30 } else { 120 });

    let pki = pki()?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let perm = Arc::new(start_side(SecurityMode::Permissive, &pki, dir.path()).await?);
    let strict = match start_side(SecurityMode::Strict, &pki, dir.path()).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            if let Ok(p) = Arc::try_unwrap(perm) {
                p.shutdown().await;
            }
            return Err(e);
        }
    };
    let result = measure(
        &perm,
        &strict,
        &pki,
        (n_writes, rounds, write_budget),
        (n_gets, n_fresh, get_budget),
    )
    .await;
    for side in [perm, strict] {
        if let Ok(s) = Arc::try_unwrap(side) {
            s.shutdown().await;
        }
    }
    let m = result?;

    let mut section = Section {
        title: "security: the cost of strict mode (TLS and authentication)".into(),
        ..Default::default()
    };
    section.rows.push(throughput_row(
        format!(
            "coord durable writes/s ({WRITERS} concurrent writers, {} writes, 8-byte keys, \
             64-byte values)",
            m.writes[0].ok + m.writes[0].errors
        ),
        &m.writes[0],
        &m.writes[1],
    ));
    section.rows.extend(latency_rows(
        "coord write latency",
        &m.writes[0].latency,
        &m.writes[1].latency,
        false,
    ));
    section.rows.extend(latency_rows(
        &format!("apps GET /v2/apps ({APPS} apps, keep-alive, sequential)"),
        &m.list[0],
        &m.list[1],
        true,
    ));
    section.rows.extend(latency_rows(
        "apps GET /v2/info (keep-alive, sequential)",
        &m.info[0],
        &m.info[1],
        true,
    ));
    section.rows.extend(latency_rows(
        "apps GET /v2/info on a new connection each (TCP + TLS handshake)",
        &m.fresh[0],
        &m.fresh[1],
        false,
    ));
    section.notes = vec![
        "Setup: in one process (the daemons started as libraries, not child processes), a \
         single-member `capstan coord` and a `capstan apps` storing in it (no master; the apps \
         have no instances), twice: permissive (plain HTTP, no credential; the peer column) \
         and strict (the column \"Capstan\": mutual TLS with node certificates from a test CA, \
         the client presenting its own node certificate to coord; every apps call comes from a \
         user's client (trusting the cluster CA, no certificate) with a viewer's token, \
         `Authorization: token=…`, which apps verifies against the identity records in \
         coord). Both modes run side by side and the load alternates between them."
            .into(),
        format!(
            "coord: {WRITERS} writers over one pool of keep-alive connections put {n_writes} \
             keys per mode in {rounds} rounds of alternating order; every write is durable \
             (fsync), so the disk bounds both modes alike. Strict / permissive per round: {}.",
            m.round_ratios
                .iter()
                .map(|r| format!("{r:.2}×"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "apps: {n_gets} sequential requests per endpoint and mode over keep-alive \
             connections (after 20 warm-up requests), alternating permissive and strict request \
             by request; the new-connection row ({n_fresh} requests) builds a client per \
             request, so the TLS handshake is in every strict sample (not judged: real \
             clients keep their connections)."
        ),
        "Ratios are strict / permissive: throughput ≥ 0.9× and p99 latency ≤ 1.11× (1 / 0.9) \
         meet the goal of issue #19. Placement throughput and DNS QPS (also in the issue) are \
         not measured here yet."
            .into(),
    ];
    Ok(section)
}

struct Measured {
    /// `[permissive, strict]` in every field.
    writes: [Writes; 2],
    /// Strict / permissive writes/s of each round.
    round_ratios: Vec<f64>,
    list: [Vec<Duration>; 2],
    info: [Vec<Duration>; 2],
    fresh: [Vec<Duration>; 2],
}

async fn measure(
    perm: &Arc<Side>,
    strict: &Arc<Side>,
    pki: &Pki,
    (n_writes, rounds, write_budget): (usize, usize, Duration),
    (n_gets, n_fresh, get_budget): (usize, usize, Duration),
) -> anyhow::Result<Measured> {
    let sides = [perm, strict];
    check_coord_guard(strict).await?;
    // Warm-up: connections, the log's first segment.
    for side in sides {
        let w = writes(side, "w", WRITERS * 4, write_budget).await;
        ensure!(
            w.ok > 0,
            "{} coord: no write succeeded: {}",
            side.name,
            w.first_error.unwrap_or_default()
        );
    }
    let mut totals = [Writes::default(), Writes::default()];
    let mut round_ratios = Vec::with_capacity(rounds);
    let per_round = n_writes.div_ceil(rounds);
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut rates = [0.0f64; 2];
        for s in order {
            let w = writes(
                sides[s],
                &format!("r{round}"),
                per_round,
                write_budget / rounds as u32,
            )
            .await;
            rates[s] = w.per_s();
            totals[s].add(w);
        }
        round_ratios.push(rates[1] / rates[0].max(1e-9));
    }

    for side in sides {
        seed_apps(side).await?;
    }
    let list = api_latency([perm, strict], "/v2/apps", n_gets, get_budget).await?;
    let info = api_latency([perm, strict], "/v2/info", n_gets, get_budget).await?;
    let fresh = [
        fresh_connection_latency(perm, pki, "/v2/info", n_fresh).await?,
        fresh_connection_latency(strict, pki, "/v2/info", n_fresh).await?,
    ];
    Ok(Measured {
        writes: totals,
        round_ratios,
        list,
        info,
        fresh,
    })
}
