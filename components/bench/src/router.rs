//! Router: `capstan daemon router` (pingora) against Debian's nginx configured as a plain
//! reverse proxy, in the same run, in front of the same backend. Both proxies forward
//! `/mesos_dns/<x>` to the backend as `/<x>` (the router's `dns_http` upstream; nginx a
//! `location /mesos_dns/` with a keep-alive upstream pool) and are pinned to core 0; the
//! backend ([`backend`], a minimal fixed-response HTTP/1.1 server in a child process) and the
//! load generator ([`load`], one thread on a single-threaded runtime) share core 1. Every
//! request carries the same `Authorization: token=<jwt>` header, a real token from the
//! router's login, so the router verifies it on every request as in production.
//!
//! Measured, alternating short rounds between the targets so background load on this shared
//! machine hits all alike: keep-alive requests/s at 32 connections (proxies and the backend
//! direct); latency at a fixed moderate rate, through each proxy minus direct; TLS handshakes/s
//! with a new connection and a full TLS 1.3 handshake per request; peak RSS during the
//! keep-alive load. Until the `capstan` binary next to this one has `daemon router`, the
//! router's cells say so and nginx is still measured.

mod backend;
pub(crate) mod daemon;
mod load;
mod nginx;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_util::sync::CancellationToken;

use crate::child::spawn_self;
use crate::report::{Row, Section};
use crate::stats::{cpu_time, cpu_time_tree, mib, ms, percentile, rss_tree_kib};
use load::{Counts, Target};

/// Core of the proxies under test.
const PROXY_CORE: usize = 0;
/// Core of the load generator, the backend and coord.
const LOAD_CORE: usize = 1;
/// Rounds per target per measurement.
const ROUNDS: usize = 3;
/// Keep-alive connections of the throughput run.
const CONNS: usize = 128;
/// Connections of the fixed-rate latency run.
const LAT_CONNS: usize = 8;
/// Concurrent handshake loops of the TLS run.
const TLS_CONNS: usize = 16;
/// The router's added p99 goal.
const ADDED_P99_GOAL: Duration = Duration::from_millis(1);

/// Child side: the backend.
pub async fn serve(token: CancellationToken) -> anyhow::Result<String> {
    backend::serve(token).await
}

/// Sizes of one run.
struct Plan {
    /// Keep-alive round length.
    tput: Duration,
    /// Fixed-rate round length and rate.
    lat: Duration,
    rate: f64,
    /// TLS round length.
    tls: Duration,
    warmup: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                tput: Duration::from_secs(1),
                lat: Duration::from_secs(1),
                rate: 2000.0,
                tls: Duration::from_secs(1),
                warmup: Duration::from_millis(300),
            }
        } else {
            Plan {
                tput: Duration::from_secs(5),
                lat: Duration::from_secs(5),
                rate: 2000.0,
                tls: Duration::from_secs(4),
                warmup: Duration::from_secs(1),
            }
        }
    }
}

/// One proxy under test.
struct Proxy {
    name: String,
    pid: u32,
    http: Target,
    https: Target,
}

/// What one target did over all rounds.
#[derive(Default)]
struct Series {
    rounds: Vec<Counts>,
    peak_rss_kib: u64,
    /// CPU the proxy used / wall time of the rounds (1.0 = one core busy).
    busy: Vec<f64>,
    /// The same for the load core: the client thread plus the backend.
    load_busy: Vec<f64>,
    /// CPU seconds the proxy used over all rounds.
    cpu_s: f64,
}

impl Series {
    fn median_rate(&self) -> Option<f64> {
        let mut r: Vec<f64> = self.rounds.iter().map(Counts::per_s).collect();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().filter(|x| *x > 0.0)
    }

    fn errors(&self) -> (u64, u64, Option<&str>) {
        let ok = self.rounds.iter().map(|c| c.ok).sum();
        let err = self.rounds.iter().map(|c| c.errors).sum();
        let first = self.rounds.iter().find_map(|c| c.first_error.as_deref());
        (ok, err, first)
    }

    fn samples(&self) -> Vec<Duration> {
        self.rounds
            .iter()
            .flat_map(|c| c.samples.iter().copied())
            .collect()
    }

    fn busy(&self) -> Option<f64> {
        median(&self.busy)
    }

    /// The proxy's CPU milliseconds per 1,000 good answers.
    fn cpu_ms_per_1k(&self) -> Option<f64> {
        let (ok, _, _) = self.errors();
        (ok > 0 && self.cpu_s > 0.0).then(|| self.cpu_s * 1e6 / ok as f64)
    }

    fn load_busy(&self) -> Option<f64> {
        median(&self.load_busy)
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut b = v.to_vec();
    b.sort_by(f64::total_cmp);
    b.get(b.len() / 2).copied()
}

/// The shape of one measurement.
#[derive(Clone)]
enum Shape {
    KeepAlive(Duration),
    FixedRate(f64, Duration),
    Tls(Arc<rustls::ClientConfig>, Duration),
}

/// Runs one round of `shape` against `target` on the load core, sampling the proxy `pid`'s RSS
/// (with its children) while it runs and its CPU time around it.
async fn round(
    target: &Target,
    shape: &Shape,
    pid: Option<u32>,
    backend_pid: u32,
    series: &mut Series,
) -> anyhow::Result<()> {
    let t = target.clone();
    let s = shape.clone();
    let cpu0 = pid.and_then(cpu_time_tree);
    let backend0 = cpu_time(backend_pid).unwrap_or_default();
    let started = std::time::Instant::now();
    let work = load::on_core(LOAD_CORE, move || async move {
        match s {
            Shape::KeepAlive(d) => load::keepalive(&t, CONNS, d).await,
            Shape::FixedRate(rate, d) => load::fixed_rate(&t, LAT_CONNS, rate, d).await,
            Shape::Tls(cfg, d) => {
                let name = ServerName::try_from("localhost").expect("a valid name");
                load::tls_handshakes(&t, cfg, name, TLS_CONNS, d).await
            }
        }
    });
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (counts, client_cpu) = loop {
        tokio::select! {
            r = &mut work => break r?,
            _ = tick.tick() => {
                if let Some(kib) = pid.and_then(rss_tree_kib) {
                    series.peak_rss_kib = series.peak_rss_kib.max(kib);
                }
            }
        }
    };
    let wall = started.elapsed().as_secs_f64();
    if let (Some(p), Some(c0)) = (pid, cpu0)
        && let Some(c1) = cpu_time_tree(p)
    {
        let used = c1.saturating_sub(c0).as_secs_f64();
        series.cpu_s += used;
        series.busy.push(used / wall);
    }
    let backend = cpu_time(backend_pid)
        .unwrap_or_default()
        .saturating_sub(backend0);
    series
        .load_busy
        .push((client_cpu + backend).as_secs_f64() / wall);
    series.rounds.push(counts);
    Ok(())
}

/// Alternates `ROUNDS` rounds of `shape` over `targets` (`(target, pid)`); one series each.
async fn alternate(
    targets: &[(Target, Option<u32>)],
    shape: &Shape,
    backend_pid: u32,
) -> anyhow::Result<Vec<Series>> {
    let mut out: Vec<Series> = targets.iter().map(|_| Series::default()).collect();
    for _ in 0..ROUNDS {
        for (i, (t, pid)) in targets.iter().enumerate() {
            round(t, shape, *pid, backend_pid, &mut out[i]).await?;
        }
    }
    Ok(out)
}

/// A certificate verifier that accepts anything: the handshake benchmark's client skips
/// certificate and signature checks so that the client core is not the bottleneck (each
/// server's chain is verified once, properly, before the run).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The one TLS suite both servers are held to: TLS 1.3, AES-128-GCM, X25519.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    p.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    Arc::new(p)
}

/// The handshake client: no resumption (every handshake full), no verification.
fn fast_client() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let p = provider();
    let mut c = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(p)))
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// One verified handshake and request against `target`: the server presents a chain to our
/// CA for `localhost` with the suite of [`provider`]. Says which suite and group it got.
async fn verify_once(target: &Target, ca_pem: &str) -> anyhow::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.context("CA PEM")?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(target.addr).await?;
    let name = ServerName::try_from("localhost")?;
    let mut s = connector
        .connect(name, tcp)
        .await
        .context("verified TLS handshake")?;
    let (_, conn) = s.get_ref();
    let suite = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_default();
    let group = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_default();
    use tokio::io::AsyncWriteExt as _;
    s.write_all(&target.request(true)).await?;
    let mut buf = Vec::new();
    let r = load::read_response(&mut s, &mut buf).await?;
    anyhow::ensure!(
        r.status == 200 && r.body_len == target.body_len,
        "answered {} with {} bytes",
        r.status,
        r.body_len
    );
    Ok(format!("{suite} {group}"))
}

/// `37%`, or `—`.
fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |x| format!("{:.0}%", x * 100.0))
}

/// Per proxy of `set` (indexed as `idx`, router then nginx): its core's and the load core's use.
fn busy_note(set: &[Series], idx: &[Option<usize>; 2]) -> String {
    let parts: Vec<String> = ["router", "nginx"]
        .iter()
        .enumerate()
        .filter_map(|(i, who)| {
            let s = set.get((idx[i])?)?;
            Some(format!(
                "{who} {} of core {PROXY_CORE}, client + backend {} of core {LOAD_CORE}",
                pct(s.busy()),
                pct(s.load_busy())
            ))
        })
        .collect();
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join("; ")
    }
}

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    let plan = Plan::new(quick);
    let mut section = Section {
        title: "router: requests/s, added latency, TLS handshakes/s and memory against nginx"
            .into(),
        ..Default::default()
    };
    let dir = tempfile::Builder::new()
        .prefix("capstan-bench-router-")
        .tempdir()?;
    let d = dir.path();

    // One CA and one ECDSA P-256 server certificate for both proxies.
    let ca = capstan_install::pki::Ca::generate("bench", "bench").context("making a CA")?;
    let leaf = ca
        .issue_server(
            "localhost",
            capstan_types::access::NodeRole::Master,
            &[],
            &[std::net::Ipv4Addr::LOCALHOST.into()],
        )
        .context("making the server certificate")?;
    let (cert, key, ca_path) = (d.join("cert.pem"), d.join("key.pem"), d.join("ca.pem"));
    std::fs::write(&cert, &leaf.cert_pem)?;
    std::fs::write(&key, &leaf.key_pem)?;
    std::fs::write(&ca_path, &ca.0.cert_pem)?;

    let backend = spawn_self("router-backend", Some(LOAD_CORE)).await?;
    let backend_addr: SocketAddr = backend.addr.parse().context("backend address")?;
    let ports = capstan_testkit::free_ports(4)?;

    // The router first: its login gives the token every target is sent.
    let bin = daemon::binary()?;
    let mut coord = None;
    let router = match daemon::unavailable(&bin) {
        Some(why) => Err(why),
        None => {
            let r = async {
                let c = daemon::start_coord(d, LOAD_CORE).await?;
                let coord_addr = c.addr.clone();
                coord = Some(c);
                daemon::seed(&coord_addr, &ca.0.cert_pem).await?;
                let setup = daemon::Setup {
                    dir: d,
                    http_port: ports[0],
                    https_port: ports[1],
                    coord: &coord_addr,
                    backend: &backend.addr,
                    cert: &cert,
                    key: &key,
                    ca: &ca_path,
                };
                let router = daemon::start(&bin, &setup, PROXY_CORE).await?;
                let token = daemon::login(ports[0]).await?;
                anyhow::Ok((router, token))
            }
            .await;
            r.map_err(|e| format!("{e:#}"))
        }
    };
    let authorization = match &router {
        Ok((_, token)) => format!("token={token}"),
        // The same size as a typical token, so nginx's numbers stay comparable.
        Err(_) => format!("token={}", "x".repeat(600)),
    };

    let nginx_child = if std::path::Path::new(nginx::NGINX).exists() {
        let setup = nginx::Setup {
            dir: d,
            http_port: ports[2],
            https_port: ports[3],
            backend: &backend.addr,
            cert: &cert,
            key: &key,
        };
        nginx::start(&setup, PROXY_CORE)
            .await
            .map_err(|e| format!("{e:#}"))
    } else {
        Err(format!(
            "{} is not installed (`apt-get install nginx`)",
            nginx::NGINX
        ))
    };

    let target = |port: u16, path: &str| Target {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        path: path.to_owned(),
        authorization: Some(authorization.clone()),
        body_len: backend::BODY_LEN,
    };
    let proxied = "/mesos_dns/bench/hosts";
    let direct = Target {
        addr: backend_addr,
        ..target(0, "/bench/hosts")
    };
    // Index 0 is the router, 1 nginx, everywhere below.
    let proxies: [Option<Proxy>; 2] = [
        router.as_ref().ok().map(|(r, _)| Proxy {
            name: "router".into(),
            pid: r.pid(),
            http: target(ports[0], proxied),
            https: target(ports[1], proxied),
        }),
        nginx_child.as_ref().ok().map(|c| Proxy {
            name: "nginx".into(),
            pid: c.pid(),
            http: target(ports[2], proxied),
            https: target(ports[3], proxied),
        }),
    ];

    // The plain-HTTP targets: direct first, then each proxy that runs.
    let mut plain: Vec<(Target, Option<u32>)> = vec![(direct.clone(), None)];
    let mut index = [None, None];
    for (i, p) in proxies.iter().enumerate() {
        if let Some(p) = p {
            index[i] = Some(plain.len());
            plain.push((p.http.clone(), Some(p.pid)));
        }
    }

    // Warm-up: connections, upstream pools, caches.
    let mut scratch = Series::default();
    for (t, pid) in &plain {
        round(
            t,
            &Shape::KeepAlive(plan.warmup),
            *pid,
            backend.pid(),
            &mut scratch,
        )
        .await?;
    }
    eprintln!("capstan-bench: router: keep-alive throughput");
    let tput = alternate(&plain, &Shape::KeepAlive(plan.tput), backend.pid()).await?;
    eprintln!("capstan-bench: router: fixed-rate latency");
    let lat = alternate(
        &plain,
        &Shape::FixedRate(plan.rate, plan.lat),
        backend.pid(),
    )
    .await?;

    // TLS: a verified handshake against each proxy first, then the measured rounds.
    let mut tls_targets = Vec::new();
    let mut tls_index = [None, None];
    let mut tls_notes = Vec::new();
    for (i, p) in proxies.iter().enumerate() {
        if let Some(p) = p {
            match verify_once(&p.https, &ca.0.cert_pem).await {
                Ok(what) => {
                    tls_notes.push(format!("{} negotiated {what}", p.name));
                    tls_index[i] = Some(tls_targets.len());
                    tls_targets.push((p.https.clone(), Some(p.pid)));
                }
                Err(e) => tls_notes.push(format!("{} TLS not measured: {e:#}", p.name)),
            }
        }
    }
    eprintln!("capstan-bench: router: TLS handshakes");
    let tls = alternate(
        &tls_targets,
        &Shape::Tls(fast_client()?, plan.tls),
        backend.pid(),
    )
    .await?;
    let rss_after: Vec<Option<u64>> = proxies
        .iter()
        .map(|p| p.as_ref().and_then(|p| rss_tree_kib(p.pid)))
        .collect();

    // Rows.
    fn pick(v: &[Series], i: Option<usize>) -> Option<&Series> {
        i.and_then(|i| v.get(i))
    }
    let router_why = router.as_ref().err().cloned();
    let nginx_why = nginx_child.as_ref().err().cloned();
    let missing = |who: usize| -> String {
        if who == 0 {
            "router not available".into()
        } else {
            "nginx not available".into()
        }
    };

    let mut r = Row::new(format!(
        "requests/s, {CONNS} keep-alive connections, GET /mesos_dns/… ({}-byte body)",
        backend::BODY_LEN
    ));
    r.goal = "≥ 1.0× nginx".into();
    let rates: Vec<Option<f64>> = (0..2)
        .map(|i| pick(&tput, index[i]).and_then(Series::median_rate))
        .collect();
    r.capstan = rates[0].map_or_else(|| missing(0), |x| format!("{x:.0} req/s"));
    r.peer = rates[1].map_or_else(|| missing(1), |x| format!("{x:.0} req/s"));
    if let (Some(a), Some(b)) = (rates[0], rates[1]) {
        r.ratio = Some(a / b);
        r.met = Some(a / b >= 1.0);
    }
    section.rows.push(r);

    let direct_lat = lat.first().map(Series::samples).unwrap_or_default();
    let (d50, d99) = (percentile(&direct_lat, 50.0), percentile(&direct_lat, 99.0));
    let added: Vec<Option<(f64, f64)>> = (0..2)
        .map(|i| {
            let s = pick(&lat, index[i])?.samples();
            let (p50, p99) = (percentile(&s, 50.0)?, percentile(&s, 99.0)?);
            Some((
                p50.as_secs_f64() - d50?.as_secs_f64(),
                p99.as_secs_f64() - d99?.as_secs_f64(),
            ))
        })
        .collect();
    let fmt_added = |a: Option<(f64, f64)>, who: usize| match a {
        Some((p50, p99)) => format!("+{:.3} ms p99 (+{:.3} ms p50)", p99 * 1e3, p50 * 1e3),
        None => missing(who),
    };
    let mut r = Row::new(format!(
        "latency added over a direct request at {:.0} req/s ({LAT_CONNS} connections), p99",
        plan.rate
    ));
    r.capstan = fmt_added(added[0], 0);
    r.peer = fmt_added(added[1], 1);
    r.goal = "p99 ≤ 1 ms".into();
    if let Some((_, p99)) = added[0] {
        r.met = Some(p99 <= ADDED_P99_GOAL.as_secs_f64());
        if let Some((_, n99)) = added[1]
            && n99 > 0.0
            && p99 > 0.0
        {
            r.ratio = Some(p99 / n99);
        }
    }
    section.rows.push(r);

    let mut r = Row::new(format!(
        "TLS handshakes/s, new connection + full TLS 1.3 handshake (ECDSA P-256, X25519) per request, {TLS_CONNS} concurrent"
    ));
    r.goal = "≥ 1.0× nginx".into();
    let hs: Vec<Option<f64>> = (0..2)
        .map(|i| pick(&tls, tls_index[i]).and_then(Series::median_rate))
        .collect();
    r.capstan = hs[0].map_or_else(|| missing(0), |x| format!("{x:.0} /s"));
    r.peer = hs[1].map_or_else(|| missing(1), |x| format!("{x:.0} /s"));
    if let (Some(a), Some(b)) = (hs[0], hs[1]) {
        r.ratio = Some(a / b);
        r.met = Some(a / b >= 1.0);
    }
    section.rows.push(r);

    let cpu: Vec<Option<f64>> = (0..2)
        .map(|i| pick(&tput, index[i]).and_then(Series::cpu_ms_per_1k))
        .collect();
    let mut r = Row::new("proxy CPU per 1,000 requests (keep-alive runs)");
    r.capstan = cpu[0].map_or_else(|| missing(0), |x| format!("{x:.0} ms"));
    r.peer = cpu[1].map_or_else(|| missing(1), |x| format!("{x:.0} ms"));
    r.goal = "— (reported)".into();
    if let (Some(a), Some(b)) = (cpu[0], cpu[1]) {
        r.ratio = Some(a / b);
    }
    section.rows.push(r);

    let peaks: Vec<Option<u64>> = (0..2)
        .map(|i| {
            pick(&tput, index[i])
                .map(|s| s.peak_rss_kib)
                .filter(|k| *k > 0)
        })
        .collect();
    let mut r = Row::new(format!(
        "RSS under load (peak during the {CONNS}-connection keep-alive runs)"
    ));
    r.capstan = peaks[0].map_or_else(|| missing(0), mib);
    r.peer = peaks[1].map_or_else(|| missing(1), |k| format!("{} (master + worker)", mib(k)));
    r.goal = "— (reported)".into();
    if let (Some(a), Some(b)) = (peaks[0], peaks[1]) {
        r.ratio = Some(a as f64 / b.max(1) as f64);
    }
    section.rows.push(r);

    // Notes: setup, then what each run saw.
    section.notes.push(format!(
        "Setup: the router (`capstan daemon router`, {}) and {} (`worker_processes 1`, \
         `keepalive 64` upstream pool, `proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, \
         the same `Host`/`X-Real-IP`/`X-Forwarded-*` headers the router sets, `Authorization` \
         cleared as the router clears it for `/mesos_dns/`) both pinned to core {PROXY_CORE}; \
         both forward `GET /mesos_dns/bench/hosts` to `/bench/hosts` on the same backend. The \
         backend is not the `capstan/http` container (a container per run is too heavy for the \
         bench) but this harness's own minimal HTTP/1.1 server in a child process \
         (`--serve router-backend`: a fixed {}-byte JSON body, 404 for paths the proxy failed \
         to strip), pinned to core {LOAD_CORE} with the load generator (a raw-socket HTTP/1.1 \
         client on one thread) and the router's single-member coord. Every request, direct \
         ones included, carries the same `Authorization: token=<jwt>` header; a response counts \
         only if it is a 200 with the backend's body. {ROUNDS} rounds per target alternating \
         between targets ({:.0} s keep-alive, {:.0} s fixed-rate, {:.0} s TLS); a rate is the \
         target's median round, latencies are pooled over the rounds.",
        bin.display(),
        nginx::version(),
        backend::BODY_LEN,
        plan.tput.as_secs_f64(),
        plan.lat.as_secs_f64(),
        plan.tls.as_secs_f64(),
    ));
    if let Some(rate) = tput.first().and_then(Series::median_rate) {
        section.notes.push(format!(
            "Keep-alive: the backend direct (same client, no proxy) answered {rate:.0} req/s \
             (core {LOAD_CORE} {}); CPU during the proxied runs: {}. A proxy near 100% of its \
             core while the load core has room is the bottleneck, as it should be. With 32 \
             connections neither proxy's core was busy on this 2-vCPU VM (cross-core wakeups \
             dominate), hence {CONNS}.",
            pct(tput.first().and_then(Series::load_busy)),
            busy_note(&tput, &index)
        ));
    }
    if let (Some(a), Some(b)) = (d50, d99) {
        let per: Vec<String> = (0..2)
            .filter_map(|i| {
                let s = pick(&lat, index[i])?.samples();
                Some(format!(
                    "{} p50 {} / p99 {}",
                    if i == 0 { "router" } else { "nginx" },
                    ms(percentile(&s, 50.0)?),
                    ms(percentile(&s, 99.0)?)
                ))
            })
            .collect();
        section.notes.push(format!(
            "Fixed rate: {LAT_CONNS} keep-alive connections each on its own schedule, {:.0} \
             req/s in all, latency from the write of the request to the end of the answer; \
             direct p50 {} / p99 {}; {}. Added latency is a proxy's percentile minus direct's \
             (a difference of percentiles, not per-request).",
            plan.rate,
            ms(a),
            ms(b),
            per.join("; ")
        ));
    }
    tls_notes.push(format!("CPU: {}", busy_note(&tls, &tls_index)));
    tls_notes.push(
        "the client resumes no session (every handshake full) and, after one verified \
         handshake per server, skips certificate and signature checks so that the client core \
         is not the bottleneck; both servers present the same certificate"
            .into(),
    );
    section
        .notes
        .push(format!("TLS: {}.", tls_notes.join("; ")));
    let after: Vec<String> = (0..2)
        .filter_map(|i| {
            Some(format!(
                "{} {}",
                if i == 0 { "router" } else { "nginx" },
                mib(rss_after[i]?)
            ))
        })
        .collect();
    if !after.is_empty() {
        section
            .notes
            .push(format!("RSS after all the runs: {}.", after.join(", ")));
    }
    let mut errs = Vec::new();
    for (label, set, idx) in [
        ("keep-alive", &tput, &index),
        ("fixed-rate", &lat, &index),
        ("TLS", &tls, &tls_index),
    ] {
        for (i, who) in ["router", "nginx"].iter().enumerate() {
            if let Some(s) = pick(set, idx[i]) {
                let (ok, err, first) = s.errors();
                if err > 0 {
                    errs.push(format!(
                        "{label} {who}: {err} failed of {} ({})",
                        ok + err,
                        first.unwrap_or("")
                    ));
                }
            }
        }
        if label != "TLS"
            && let Some(s) = set.first()
        {
            let (ok, err, first) = s.errors();
            if err > 0 {
                errs.push(format!(
                    "{label} direct: {err} failed of {} ({})",
                    ok + err,
                    first.unwrap_or("")
                ));
            }
        }
    }
    if !errs.is_empty() {
        section.notes.push(format!(
            "Failed requests (not counted): {}.",
            errs.join("; ")
        ));
    }
    if let Some(why) = router_why {
        section.notes.push(format!("Router not measured: {why}."));
    }
    if let Some(why) = nginx_why {
        section.notes.push(format!("nginx not measured: {why}."));
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        section.notes.push(format!(
            "Load average when the runs ended: {} (anything above the benchmark's own ~2 is \
             other work on this machine; it shares the cores with the pinned processes and \
             shows up mostly in the p99 latencies).",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    section.notes.push(
        "Anchors (not same-run): Cloudflare reports Pingora using ~70% less CPU and ~67% less \
         memory than its nginx-based service; nginx's own tests show 74,091 req/s (1 KB) and \
         34,344 new connections/s on one worker of a dual-socket Xeon."
            .into(),
    );

    if let Ok((mut r, _)) = router {
        let _ = r.child.kill().await;
    }
    if let Ok(c) = nginx_child {
        c.stop().await;
    }
    drop(coord);
    drop(backend);
    Ok(section)
}
