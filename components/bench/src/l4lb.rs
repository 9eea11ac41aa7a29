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
//!
//! The kernel plane's scale ([`kernel`]): 10,000 named VIPs x 10 backends programmed from
//! scratch into a network namespace of the bench's own (`capstan-bench-l4lb`, nothing but
//! `lo`, deleted afterwards), then 200 task changes (TASK_KILLED, then running again), each
//! timed from the task's new state to the kernel holding the new rules, in a child process
//! whose RSS is l4lb's state for that table.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use capstan_l4lb::proxy::Proxy;
use capstan_types::vip::{Backend, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use capstan_l4lb::netdev::{Namespace, VipDevice};
use capstan_l4lb::nft::{Guard, KernelPlane, NftPlane, Update};
use capstan_types::TaskState;
use capstan_types::vip::{AddrRange, DiscoveredPort, VipConfig, VipTable, VipTask};

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

/// Child side: `l4lb-backends` (three one-byte answerers), `l4lb-proxy:<b1>,<b2>,<b3>` or
/// `l4lb-kernel:<netns>:<vips>:<backends>:<changes>` (answers with its measurements as JSON).
pub async fn serve(kind: &str, arg: &str, token: CancellationToken) -> anyhow::Result<String> {
    if kind == "l4lb-kernel" {
        return serve_kernel(arg).await;
    }
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
         without a network namespace. The kernel plane's rows below are its scale and its \
         update latency, not its connection rate."
            .into(),
    );
    if let Some((mut child, _)) = peer {
        let _ = child.kill().await;
    }
    drop(proxy_child);
    drop(backends_child);
    kernel(&mut section, quick).await?;
    Ok(section)
}

/// Named VIPs of the scale run.
const SCALE_VIPS: usize = 10_000;
/// Backends per VIP.
const SCALE_BACKENDS: usize = 10;
/// Task changes timed after the full program.
const CHANGES: usize = 200;
/// The bench's own network namespace (only `lo`; deleted when the run ends).
const NETNS: &str = "capstan-bench-l4lb";

/// `vips` Marathon apps `/app-<i>` with the label `VIP_0=/app-<i>:80`, `backends` running
/// tasks each on host port 31000 of agent 10.<x>.<y>.<z> (host networking, no health check).
fn scale_tasks(vips: usize, backends: usize) -> Vec<VipTask> {
    let mut tasks = Vec::with_capacity(vips * backends);
    for app in 0..vips {
        for j in 0..backends {
            let n = u32::try_from(app * backends + j).unwrap_or(u32::MAX) + 1;
            let [_, b, c, d] = n.to_be_bytes();
            tasks.push(VipTask {
                framework: "marathon".into(),
                agent_ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, b, c, d))),
                ports: vec![31000],
                discovery_ports: vec![DiscoveredPort {
                    number: 31000,
                    protocol: "tcp".into(),
                    labels: vec![("VIP_0".into(), format!("/app-{app}:80"))],
                }],
                ..VipTask::default()
            });
        }
    }
    tasks
}

/// The child of the scale run: builds the table of [`scale_tasks`] as the follower does,
/// programs it into `netns` from scratch, then times `changes` single-task changes; keeps
/// everything alive (its RSS is measured) until the harness closes stdin.
async fn serve_kernel(arg: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = arg.split(':').collect();
    let [netns, vips, backends, changes] = parts[..] else {
        anyhow::bail!("l4lb-kernel:<netns>:<vips>:<backends>:<changes>, not {arg:?}");
    };
    let (vips, backends, changes): (usize, usize, usize) =
        (vips.parse()?, backends.parse()?, changes.parse()?);
    let cfg = VipConfig {
        ipv4: AddrRange::parse("11.0.0.0/8").context("range")?,
        ipv6: None,
    };
    let ns = Namespace::Named(netns.to_owned());
    let guard = Guard {
        ipv4: vec![cfg.ipv4],
        ipv6: vec![],
    };
    let mut plane = KernelPlane::new(
        NftPlane::new("capstan")?.in_namespace(ns.clone()),
        VipDevice::new("capstan-vip0")?.in_namespace(ns),
        guard,
    );
    plane.start().await?;
    let mut tasks = scale_tasks(vips, backends);
    let started = Instant::now();
    let table = VipTable::build(&tasks, &cfg);
    let listeners = table.listeners();
    let built = started.elapsed();
    let applied = plane.apply(&listeners).await?;
    let program = started.elapsed();
    anyhow::ensure!(
        applied.update == Update::Full && applied.listeners == vips,
        "first apply: {applied:?}"
    );
    let nft_peak_kib = children_max_rss_kib();
    let mut table = table;
    let mut took = Vec::with_capacity(changes);
    let mut nft_took = Vec::with_capacity(changes);
    for i in 0..changes {
        // Kill a task, then bring it back: every change is one backend of one VIP.
        let k = (i / 2 * 7919) % tasks.len();
        tasks[k].state = if i % 2 == 0 {
            TaskState::Killed
        } else {
            TaskState::Running
        };
        let t = Instant::now();
        table = VipTable::build(&tasks, &cfg);
        let applied = plane.apply(&table.listeners()).await?;
        took.push(t.elapsed());
        nft_took.push(applied.took);
        anyhow::ensure!(
            applied.update == Update::Incremental,
            "change {i}: {applied:?}"
        );
    }
    // Keep the state alive (the harness measures its RSS) until the token is cancelled.
    tokio::spawn(async move {
        let _state = (plane, table, tasks);
        std::future::pending::<()>().await;
    });
    let micros = |v: &[Duration]| v.iter().map(|d| d.as_micros() as u64).collect::<Vec<_>>();
    Ok(serde_json::json!({
        "build_us": built.as_micros() as u64,
        "program_us": program.as_micros() as u64,
        "nft_us": applied.took.as_micros() as u64,
        "script_bytes": applied.script_bytes,
        "nft_peak_kib": nft_peak_kib,
        "change_us": micros(&took),
        "change_nft_us": micros(&nft_took),
    })
    .to_string())
}

/// The largest peak RSS of this process's waited-for children (the `nft` runs), KiB.
fn children_max_rss_kib() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u64::try_from(u.max_rss()).unwrap_or(0))
        .unwrap_or(0)
}

/// `VmRSS` and `VmHWM` of process `pid`, KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The bench's network namespace; deleted (with the table and device in it) when dropped.
struct BenchNetns;

impl BenchNetns {
    fn create() -> anyhow::Result<BenchNetns> {
        // A leftover of a run that was killed.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", NETNS])
            .stderr(std::process::Stdio::null())
            .status();
        let out = std::process::Command::new("ip")
            .args(["netns", "add", NETNS])
            .output()
            .context("running ip")?;
        anyhow::ensure!(
            out.status.success(),
            "`ip netns add {NETNS}`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let netns = BenchNetns;
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", NETNS, "ip", "link", "set", "lo", "up"])
            .output()
            .context("running ip")?;
        anyhow::ensure!(out.status.success(), "lo up in {NETNS}");
        Ok(netns)
    }
}

impl Drop for BenchNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", NETNS])
            .status();
    }
}

/// The kernel plane at scale: rows for the program time, the RSS and the change latency.
pub async fn kernel(section: &mut Section, quick: bool) -> anyhow::Result<()> {
    let (vips, changes) = if quick {
        (1_000, 40)
    } else {
        (SCALE_VIPS, CHANGES)
    };
    let backends = SCALE_BACKENDS;
    if !crate::child::have("nft") {
        section
            .notes
            .push("Kernel plane not measured: no `nft` on this machine.".into());
        return Ok(());
    }
    let netns = match BenchNetns::create() {
        Ok(n) => n,
        Err(e) => {
            section
                .notes
                .push(format!("Kernel plane not measured: {e:#} (needs root)."));
            return Ok(());
        }
    };
    let child = spawn_self(
        &format!("l4lb-kernel:{NETNS}:{vips}:{backends}:{changes}"),
        None,
    )
    .await?;
    let rss = rss_kib(child.pid());
    let m: serde_json::Value = serde_json::from_str(&child.addr).context("child's results")?;
    drop(child);
    drop(netns);
    let us = |k: &str| Duration::from_micros(m[k].as_u64().unwrap_or(0));
    let list = |k: &str| -> Vec<Duration> {
        m[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64())
                    .map(Duration::from_micros)
                    .collect()
            })
            .unwrap_or_default()
    };

    let program = us("program_us");
    let mut r = Row::new(format!(
        "kernel plane: {vips} VIPs x {backends} backends programmed from scratch (table build + nft + VIP addresses)"
    ));
    r.capstan = format!(
        "{} (table {}, nft {}, {} KiB script)",
        ms(program),
        ms(us("build_us")),
        ms(us("nft_us")),
        m["script_bytes"].as_u64().unwrap_or(0) / 1024
    );
    r.peer = "21-31 s (the per-VIP chain ruleset, 2026-12-04)".into();
    r.ratio = Some(program.as_secs_f64() / 21.0);
    r.goal = "≤ 1 s".into();
    r.met = Some(program <= Duration::from_secs(1));
    section.rows.push(r);

    let mut r = Row::new(format!(
        "kernel plane: l4lb RSS holding {vips} VIPs x {backends} backends"
    ));
    if let Some((now, peak)) = rss {
        r.capstan = format!(
            "{:.1} MiB (peak {:.1} MiB; the `nft` run peaked at {:.0} MiB)",
            now as f64 / 1024.0,
            peak as f64 / 1024.0,
            m["nft_peak_kib"].as_u64().unwrap_or(0) as f64 / 1024.0
        );
        r.goal = "≤ 50 MiB".into();
        r.met = Some(now <= 50 * 1024);
    }
    section.rows.push(r);

    let took = list("change_us");
    let nft_took = list("change_nft_us");
    if let (Some(p50), Some(p99)) = (percentile(&took, 50.0), percentile(&took, 99.0)) {
        let mut r = Row::new(format!(
            "kernel plane: TASK_KILLED (or back to running) → new rules in the kernel, over {} changes on the {vips}-VIP table",
            took.len()
        ));
        r.capstan = format!(
            "p99 {} (p50 {}; nft alone p99 {})",
            ms(p99),
            ms(p50),
            percentile(&nft_took, 99.0).map(ms).unwrap_or_default()
        );
        r.peer = "≥ 2 s (DC/OS: 2 s agent poll + gossip)".into();
        r.ratio = Some(p99.as_secs_f64() / 2.0);
        r.goal = "p99 ≤ 100 ms".into();
        r.met = Some(p99 <= Duration::from_millis(100));
        section.rows.push(r);
    }
    section.notes.push(format!(
        "Kernel plane: a child process (this binary) in namespace `{NETNS}` (only `lo`, \
         deleted afterwards) builds the VIP table from {} tasks as the follower does \
         (`VipTable::build`, named VIPs `/app-<i>:80` in 11.0.0.0/8, backends 10.x.y.z:31000) \
         and applies it with `KernelPlane` (`nft -f -` in one transaction, then the VIP \
         addresses with `ip -batch`). Each change kills one task (or starts it again), \
         rebuilds the table and applies the difference; it is timed from the new task state \
         to `nft` returning (the kernel has committed the rules then; the master's event \
         stream and its parsing are not included). RSS is the child's after all changes; it \
         holds the tasks, the table and the plane's last applied listeners.",
        vips * backends
    ));
    Ok(())
}
