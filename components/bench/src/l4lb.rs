//! l4lb: the userspace data plane (`capstan_l4lb::proxy::Proxy`, in a child process pinned to
//! core 0) against Debian's HAProxy in TCP mode (one thread, pinned to core 0), in the same run,
//! in front of the same three backends (a child process pinned to core 1), on loopback only.
//!
//! Each connection carries one request: the client connects, sends one byte, reads the one-byte
//! answer and closes, so connections/s is the number that matters for a layer-4 balancer. The
//! load generator ([`conn_rate`], [`conn_latency`]) runs on a single-threaded runtime of its own.
//! Rounds alternate between the targets (direct to one backend, l4lb, HAProxy) so background
//! load on this shared machine hits all alike. The kernel (nftables) plane is not measured here:
//! it needs a network namespace of its own (see `components/l4lb/tests/nft`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use capstan_l4lb::proxy::Proxy;
use capstan_types::vip::{Backend, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::child::{ensure_program, pinned, spawn_self};
use crate::report::{Row, Section};
use crate::stats::{ms, percentile};

/// Core of the balancers under test.
const PROXY_CORE: usize = 0;
/// Core of the backends.
const BACKEND_CORE: usize = 1;
/// Concurrent connection loops of the rate run.
const CONNS: usize = 32;
/// Rounds per target per measurement.
const ROUNDS: usize = 3;

/// Child side: `l4lb-backends` (three one-byte answerers) or `l4lb-proxy:<b1>,<b2>,<b3>`.
pub async fn serve(kind: &str, arg: &str, token: CancellationToken) -> anyhow::Result<String> {
    if kind == "l4lb-backends" {
        let mut addrs = Vec::new();
        for _ in 0..3 {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(l.local_addr()?.to_string());
            tokio::spawn(answer(l));
        }
        return Ok(addrs.join(","));
    }
    let backends: BTreeSet<Backend> = arg
        .split(',')
        .map(|a| {
            let a: SocketAddr = a.parse().context("backend address")?;
            Ok(Backend {
                ip: a.ip(),
                port: a.port(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let vip = free_port().await?;
    let mut proxy = Proxy::new(Duration::from_secs(2), token);
    let errors = proxy
        .apply(&BTreeMap::from([((vip, Protocol::Tcp), backends)]))
        .await;
    anyhow::ensure!(
        errors.is_empty(),
        "the proxy did not bind {vip}: {errors:?}"
    );
    // Keep the proxy (and its listener) alive until the token is cancelled.
    tokio::spawn(async move {
        let _proxy = proxy;
        std::future::pending::<()>().await;
    });
    Ok(vip.to_string())
}

/// Answers every connection's first byte with one byte, then waits for the client to close.
async fn answer(l: TcpListener) {
    while let Ok((mut s, _)) = l.accept().await {
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).await.is_ok() && s.write_all(b"y").await.is_ok() {
                let _ = s.read(&mut b).await;
            }
        });
    }
}

async fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?)
}

/// One request on a new connection; the client closes first, with a reset (no TIME_WAIT left
/// on the client's ports).
async fn one(target: SocketAddr) -> std::io::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_zero_linger()?;
    let mut s: TcpStream = socket.connect(target).await?;
    s.set_nodelay(true)?;
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(())
}

/// Runs `f` on a thread of its own (the load generator builds its runtime there).
async fn on_load_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.context("load thread died")
}

/// Completed connections per second with `CONNS` concurrent loops for `d`; errors.
async fn conn_rate(target: SocketAddr, d: Duration) -> anyhow::Result<(f64, u64)> {
    on_load_thread(move || -> anyhow::Result<(f64, u64)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(async move {
            let started = Instant::now();
            let mut loops = tokio::task::JoinSet::new();
            for _ in 0..CONNS {
                loops.spawn(async move {
                    let (mut ok, mut err) = (0u64, 0u64);
                    while started.elapsed() < d {
                        match tokio::time::timeout(Duration::from_secs(2), one(target)).await {
                            Ok(Ok(())) => ok += 1,
                            _ => err += 1,
                        }
                    }
                    (ok, err)
                });
            }
            let (mut ok, mut err) = (0u64, 0u64);
            while let Some(r) = loops.join_next().await {
                if let Ok((o, e)) = r {
                    ok += o;
                    err += e;
                }
            }
            (ok as f64 / started.elapsed().as_secs_f64(), err)
        }))
    })
    .await?
}

/// `n` sequential new-connection requests: their durations.
async fn conn_latency(target: SocketAddr, n: usize) -> anyhow::Result<Vec<Duration>> {
    on_load_thread(move || -> anyhow::Result<Vec<Duration>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                tokio::time::timeout(Duration::from_secs(2), one(target))
                    .await
                    .context("request timed out")??;
                out.push(t.elapsed());
            }
            Ok(out)
        })
    })
    .await?
}

/// HAProxy in TCP mode, one thread, round robin over the backends.
async fn haproxy(
    backends: &[SocketAddr],
    dir: &std::path::Path,
) -> anyhow::Result<(tokio::process::Child, SocketAddr)> {
    let vip = free_port().await?;
    let mut cfg = format!(
        "global\n  nbthread 1\n  maxconn 4096\n\ndefaults\n  mode tcp\n  timeout connect 2s\n  \
         timeout client 30s\n  timeout server 30s\n\nfrontend vip\n  bind {vip}\n  \
         default_backend b\n\nbackend b\n  balance roundrobin\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!("  server s{i} {b}\n"));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let mut cmd = pinned(Some(PROXY_CORE), "haproxy");
    cmd.arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = cmd.spawn().context("starting haproxy")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while one(vip).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "haproxy did not answer on {vip}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((child, vip))
}

fn haproxy_version() -> String {
    std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    let mut section = Section {
        title: "l4lb: connections/s and added latency through a VIP against HAProxy".into(),
        ..Section::default()
    };
    let (round, samples) = if quick {
        (Duration::from_millis(500), 300)
    } else {
        (Duration::from_secs(3), 2000)
    };
    let backends_child = spawn_self("l4lb-backends", Some(BACKEND_CORE)).await?;
    let backends: Vec<SocketAddr> = backends_child
        .addr
        .split(',')
        .map(|a| a.parse().context("backend address"))
        .collect::<anyhow::Result<_>>()?;
    let proxy_child = spawn_self(
        &format!("l4lb-proxy:{}", backends_child.addr),
        Some(PROXY_CORE),
    )
    .await?;
    let l4lb_vip: SocketAddr = proxy_child.addr.parse().context("VIP address")?;
    let tmp = tempfile::tempdir()?;
    let peer = match ensure_program("haproxy", &["haproxy"]).await {
        Ok(()) => Some(haproxy(&backends, tmp.path()).await?),
        Err(why) => {
            section.notes.push(format!("HAProxy not measured: {why}."));
            None
        }
    };
    let mut targets = vec![("direct", backends[0]), ("l4lb", l4lb_vip)];
    if let Some((_, vip)) = &peer {
        targets.push(("haproxy", *vip));
    }
    // Warm-up: every path once, and the balancers' first connections.
    for (_, t) in &targets {
        conn_latency(*t, 50).await?;
    }
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    let mut lat: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for (name, t) in &targets {
            let (rate, err) = conn_rate(*t, round).await?;
            rates.entry(name).or_default().push(rate);
            *errors.entry(name).or_default() += err;
        }
        for (name, t) in &targets {
            lat.entry(name)
                .or_default()
                .extend(conn_latency(*t, samples).await?);
        }
    }
    let rate = |n: &str| rates.get(n).map(|v| median(v.clone()));
    let p = |n: &str, q: f64| lat.get(n).and_then(|v| percentile(v, q));

    let mut r = Row::new(format!(
        "new connections/s through a VIP to 3 backends (one 1-byte request each, {CONNS} concurrent)"
    ));
    if let Some(c) = rate("l4lb") {
        r.capstan = format!("{c:.0} conn/s (userspace plane)");
    }
    if let Some(h) = rate("haproxy") {
        r.peer = format!("{h:.0} conn/s (HAProxy, TCP mode, 1 thread)");
    }
    if let (Some(c), Some(h)) = (rate("l4lb"), rate("haproxy")) {
        r.ratio = Some(c / h);
        r.met = Some(c / h >= 2.0);
    }
    r.goal = "≥ 2× HAProxy".into();
    section.rows.push(r);

    let mut r = Row::new("the same, direct to one backend (no balancer)");
    if let Some(d) = rate("direct") {
        r.capstan = format!("{d:.0} conn/s");
    }
    section.rows.push(r);

    for (q, label) in [(50.0, "p50"), (99.0, "p99")] {
        let mut r = Row::new(format!(
            "new connection + 1 request, {label} ({} sequential samples per target)",
            samples * ROUNDS
        ));
        if let (Some(c), Some(d)) = (p("l4lb", q), p("direct", q)) {
            r.capstan = format!("{} (direct {}, +{})", ms(c), ms(d), ms(c.saturating_sub(d)));
            if q > 90.0 {
                let vs_direct = c.as_secs_f64() / d.as_secs_f64().max(1e-9);
                r.goal = format!("≤ 1.1× direct (now {vs_direct:.2}×)");
                r.met = Some(vs_direct <= 1.1);
            }
        }
        if let Some(h) = p("haproxy", q) {
            r.peer = ms(h);
            if let Some(c) = p("l4lb", q) {
                r.ratio = Some(c.as_secs_f64() / h.as_secs_f64().max(1e-9));
            }
        }
        section.rows.push(r);
    }

    section.notes.push(format!(
        "Setup: the l4lb userspace proxy (`capstan_l4lb::proxy::Proxy`, VIP 127.0.0.1:<port>, \
         round robin) in a child process and {} (`nbthread 1`, `mode tcp`, `balance roundrobin`) \
         both pinned to core {PROXY_CORE}; three backends in a child process pinned to core \
         {BACKEND_CORE}; the load generator (single-threaded runtime, unpinned) opens a new \
         connection per request and closes it with a reset. {ROUNDS} rounds of {:.1} s per \
         target, alternating; each rate is the target's median round. Errors (timeouts, \
         refusals): direct {}, l4lb {}, HAProxy {}.",
        haproxy_version(),
        round.as_secs_f64(),
        errors.get("direct").copied().unwrap_or(0),
        errors.get("l4lb").copied().unwrap_or(0),
        errors.get("haproxy").copied().unwrap_or(0),
    ));
    section.notes.push(
        "The ≥ 2× HAProxy goal is the issue's for the kernel data plane (nftables DNAT: no \
         second connection, no userspace copy); the userspace plane is the fallback for hosts \
         without nftables and is measured here because it is the one that runs on loopback \
         without a network namespace. The kernel plane is not benchmarked yet."
            .into(),
    );
    if let Some((mut child, _)) = peer {
        let _ = child.kill().await;
    }
    drop(proxy_child);
    drop(backends_child);
    Ok(section)
}
