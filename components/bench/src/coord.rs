//! Coordination service: durable writes of a 3-member `capstan coord` cluster (each member
//! a child process) against a 3-member etcd (Debian `etcd-server`) in the same run, both on
//! loopback over their HTTP/JSON APIs (`POST /v1/kv/put`, etcd's gateway `POST /v3/kv/put`),
//! 8-byte keys and 256-byte values, at 1 and 100 concurrent clients, sent to the leader;
//! then leader failover: kill the leader and time until a write succeeds again. Also this
//! disk's fdatasync time, the floor under every durable write.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::child::{ServeChild, ensure_program, spawn_self};
use crate::report::{Row, Section};
use crate::stats::{ms, percentile};

/// Times `n` fdatasyncs of a 4 KiB write in a temp file under `dir`.
pub fn fdatasync_samples(dir: &Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut f = std::fs::File::create(dir.join("sync-probe"))?;
    let block = [0x5au8; 4096];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        f.write_all(&block)?;
        f.sync_data().context("fdatasync")?;
        out.push(t0.elapsed());
    }
    Ok(out)
}

/// Child side: member `id` of a 3-member cluster. `arg` is `<id>:<port1>,<port2>,<port3>:<dir>`.
pub async fn serve(arg: &str, token: CancellationToken) -> anyhow::Result<String> {
    let mut parts = arg.splitn(3, ':');
    let id: u64 = parts.next().context("id")?.parse()?;
    let ports: Vec<u16> = parts
        .next()
        .context("ports")?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let dir = Path::new(parts.next().context("dir")?);
    let port = *ports.get(id as usize - 1).context("port of id")?;
    let cfg = capstan_coord::Config {
        id,
        listen: ([127, 0, 0, 1], port).into(),
        data_dir: dir.join(format!("capstan-{id}")),
        members: ports
            .iter()
            .enumerate()
            .map(|(i, p)| capstan_coord::MemberConfig {
                id: i as u64 + 1,
                addr: format!("127.0.0.1:{p}"),
            })
            .collect(),
        ..capstan_coord::Config::default()
    };
    let handle = capstan_coord::Server::start(cfg, token)
        .await
        .context("starting the coord member")?;
    let addr = handle.local_addr().to_string();
    std::mem::forget(handle);
    Ok(addr)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Capstan,
    Etcd,
}

async fn put(
    client: &reqwest::Client,
    kind: Kind,
    base: &str,
    key: &str,
    value: &[u8],
) -> anyhow::Result<()> {
    let (url, body) = match kind {
        Kind::Capstan => (
            format!("{base}/v1/kv/put"),
            json!({"key": key, "value": B64.encode(value)}),
        ),
        Kind::Etcd => (
            format!("{base}/v3/kv/put"),
            json!({"key": B64.encode(key), "value": B64.encode(value)}),
        ),
    };
    let r = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("put answered {}", r.status());
    }
    let _ = r.bytes().await?;
    Ok(())
}

#[derive(Debug, Clone)]
struct Load {
    writes_per_s: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// `clients` concurrent writers, each sequential, for `dur` (and at most 100,000 writes each).
async fn load(kind: Kind, base: &str, clients: usize, dur: Duration) -> anyhow::Result<Load> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients * 2)
        .timeout(Duration::from_secs(10))
        .build()?;
    let value = Arc::new(vec![b'v'; 256]);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, base, value) = (client.clone(), base.to_owned(), value.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            for i in 0..100_000usize {
                if start.elapsed() >= dur {
                    break;
                }
                let key = format!("/k{:06}", (c * 7919 + i) % 1_000_000);
                let t0 = Instant::now();
                match put(&client, kind, &base, &key, &value).await {
                    Ok(()) => lat.push(t0.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        let (lat, e) = r?;
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(!all.is_empty(), "no write succeeded ({errors} failed)");
    Ok(Load {
        writes_per_s: all.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 50.0).unwrap_or_default(),
        p99: percentile(&all, 99.0).unwrap_or_default(),
        errors,
    })
}

/// A 3-member cluster under test: member bases, the leader's index, and a way to kill it.
struct Cluster {
    kind: Kind,
    bases: Vec<String>,
    leader: usize,
    capstan: Vec<ServeChild>,
    etcd: Vec<tokio::process::Child>,
}

impl Cluster {
    fn kill(&mut self, i: usize) {
        match self.kind {
            Kind::Capstan => {
                let _ = self.capstan[i].child.start_kill();
            }
            Kind::Etcd => {
                let _ = self.etcd[i].start_kill();
            }
        }
    }
}

async fn get_json(client: &reqwest::Client, req: reqwest::RequestBuilder) -> Option<Value> {
    let _ = client;
    let r = req.timeout(Duration::from_secs(2)).send().await.ok()?;
    r.json().await.ok()
}

/// Index of the member that is leader, if one is known and answering.
async fn find_leader(kind: Kind, bases: &[String]) -> Option<usize> {
    let client = reqwest::Client::new();
    match kind {
        Kind::Capstan => {
            for base in bases {
                let st = get_json(&client, client.get(format!("{base}/v1/status"))).await?;
                let leader = st["leader_addr"].as_str()?;
                if let Some(i) = bases.iter().position(|b| b.ends_with(leader)) {
                    return Some(i);
                }
            }
            None
        }
        Kind::Etcd => {
            for (i, base) in bases.iter().enumerate() {
                let Some(st) = get_json(
                    &client,
                    client
                        .post(format!("{base}/v3/maintenance/status"))
                        .body("{}"),
                )
                .await
                else {
                    continue;
                };
                let me = st["header"]["member_id"].as_str();
                if me.is_some() && me == st["leader"].as_str() {
                    return Some(i);
                }
            }
            None
        }
    }
}

async fn wait_leader(kind: Kind, bases: &[String]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(i) = find_leader(kind, bases).await {
            return Ok(i);
        }
        if Instant::now() > deadline {
            bail!("no {kind:?} leader in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_capstan(dir: &Path) -> anyhow::Result<Cluster> {
    let ports = capstan_testkit::free_ports(3)?;
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for id in 1..=3 {
        children.push(spawn_self(&format!("coord:{id}:{list}:{}", dir.display()), None).await?);
    }
    let bases: Vec<String> = children
        .iter()
        .map(|c| format!("http://{}", c.addr))
        .collect();
    let leader = wait_leader(Kind::Capstan, &bases).await?;
    Ok(Cluster {
        kind: Kind::Capstan,
        bases,
        leader,
        capstan: children,
        etcd: Vec::new(),
    })
}

async fn start_etcd(dir: &Path) -> anyhow::Result<Cluster> {
    let ports = capstan_testkit::free_ports(6)?;
    let peer = |i: usize| format!("http://127.0.0.1:{}", ports[3 + i]);
    let client = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
    let initial = (0..3)
        .map(|i| format!("m{i}={}", peer(i)))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for i in 0..3 {
        let log = std::fs::File::create(dir.join(format!("etcd-{i}.log")))?;
        let child = tokio::process::Command::new("etcd")
            .arg("--name")
            .arg(format!("m{i}"))
            .arg("--data-dir")
            .arg(dir.join(format!("etcd-{i}")))
            .args(["--listen-client-urls", &client(i)])
            .args(["--advertise-client-urls", &client(i)])
            .args(["--listen-peer-urls", &peer(i)])
            .args(["--initial-advertise-peer-urls", &peer(i)])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "capstan-bench"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting etcd")?;
        children.push(child);
    }
    let bases: Vec<String> = (0..3).map(client).collect();
    let leader = wait_leader(Kind::Etcd, &bases).await?;
    Ok(Cluster {
        kind: Kind::Etcd,
        bases,
        leader,
        capstan: Vec::new(),
        etcd: children,
    })
}

struct Results {
    one: Load,
    hundred: Load,
    failover: Option<Duration>,
}

async fn bench_cluster(mut c: Cluster, dur: Duration) -> anyhow::Result<Results> {
    let base = c.bases[c.leader].clone();
    // Warm up connections and the log.
    let _ = load(c.kind, &base, 4, Duration::from_millis(300)).await;
    let one = load(c.kind, &base, 1, dur).await?;
    let hundred = load(c.kind, &base, 100, dur).await?;
    // Failover: kill the leader, then write to the others until one write succeeds.
    let old = c.leader;
    c.kill(old);
    let t0 = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let mut failover = None;
    'outer: while t0.elapsed() < Duration::from_secs(30) {
        for (i, b) in c.bases.iter().enumerate() {
            if i != old && put(&client, c.kind, b, "/failover", b"x").await.is_ok() {
                failover = Some(t0.elapsed());
                break 'outer;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Results {
        one,
        hundred,
        failover,
    })
}

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    let dur = Duration::from_secs(if quick { 2 } else { 10 });
    // Data lives on the working directory's file system, like the fdatasync probe.
    let dir = tempfile::Builder::new()
        .prefix("capstan-bench-coord-")
        .tempdir_in(std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir()))?;
    let n_sync = if quick { 100 } else { 1_000 };
    let sync_dir = dir.path().to_path_buf();
    let samples =
        tokio::task::spawn_blocking(move || fdatasync_samples(&sync_dir, n_sync)).await??;
    let sync_total: Duration = samples.iter().sum();

    let ours = match start_capstan(dir.path()).await {
        Ok(c) => bench_cluster(c, dur).await,
        Err(e) => Err(e),
    };
    let peer = match ensure_program("etcd", &["etcd-server"]).await {
        Ok(()) => match start_etcd(dir.path()).await {
            Ok(c) => bench_cluster(c, dur).await.map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("{e:#}")),
        },
        Err(why) => Err(why),
    };

    let mut section = Section {
        title: "coord: durable writes and failover".into(),
        ..Default::default()
    };
    let ours = match ours {
        Ok(r) => r,
        Err(e) => {
            section
                .notes
                .push(format!("`capstan coord` not measured: {e:#}"));
            return Ok(section);
        }
    };
    let p = peer.as_ref().ok();
    let secs = dur.as_secs();
    for (clients, l, pl) in [
        (1, &ours.one, p.map(|p| &p.one)),
        (100, &ours.hundred, p.map(|p| &p.hundred)),
    ] {
        let mut r = Row::new(format!("writes/s, {clients} client(s), {secs} s"));
        r.capstan = format!("{:.0}/s", l.writes_per_s);
        let mut lat = Row::new(format!("write latency p50 / p99, {clients} client(s)"));
        lat.capstan = format!("{} / {}", ms(l.p50), ms(l.p99));
        if let Some(pl) = pl {
            r.peer = format!("{:.0}/s", pl.writes_per_s);
            r.ratio = Some(l.writes_per_s / pl.writes_per_s.max(1e-9));
            lat.peer = format!("{} / {}", ms(pl.p50), ms(pl.p99));
            lat.ratio = Some(l.p99.as_secs_f64() / pl.p99.as_secs_f64().max(1e-9));
        }
        if l.errors > 0 || pl.is_some_and(|p| p.errors > 0) {
            section.notes.push(format!(
                "{clients} client(s): {} failed writes for Capstan, {} for etcd.",
                l.errors,
                pl.map_or(0, |p| p.errors)
            ));
        }
        section.rows.push(r);
        section.rows.push(lat);
    }
    let mut f = Row::new("leader failover (kill -9 leader → next write succeeds)");
    f.capstan = ours.failover.map_or("no write within 30 s".into(), ms);
    if let Some(pf) = p.and_then(|p| p.failover) {
        f.peer = ms(pf);
        f.ratio = ours
            .failover
            .map(|o| o.as_secs_f64() / pf.as_secs_f64().max(1e-9));
    }
    section.rows.push(f);
    let mut s = Row::new(format!(
        "fdatasync of a 4 KiB append ({n_sync} in a row), p50 / p99"
    ));
    s.capstan = format!(
        "{} / {}",
        ms(percentile(&samples, 50.0).context("samples")?),
        ms(percentile(&samples, 99.0).context("samples")?)
    );
    s.peer = "(machine property)".into();
    section.rows.push(s);
    section.notes.insert(
        0,
        format!(
            "Setup: 3 `capstan coord` members (child processes, default timers: election \
             150–300 ms, heartbeat 50 ms) and 3 etcd {} members (`etcd-server` package, \
             default flags), unpinned on 2 cores, data on the same file system; clients write \
             8-byte keys and 256-byte values over HTTP/1.1 JSON to the leader \
             (`/v1/kv/put` vs etcd's gateway `/v3/kv/put`). Ratios: writes/s Capstan / etcd \
             (higher is better); latency and failover use p99 / time, Capstan / etcd \
             (lower is better). No goal is set for coord yet. Failover depends mostly on the \
             election timeout, which differs: Capstan 150–300 ms, etcd's default 1,000 ms.",
            etcd_version()
        ),
    );
    section.notes.push(format!(
        "fdatasync: {n_sync} took {:.2} s ({:.0} syncs/s): the ceiling of sequential durable \
         writes on this disk.",
        sync_total.as_secs_f64(),
        n_sync as f64 / sync_total.as_secs_f64().max(1e-9)
    ));
    section.notes.push(
        "These rows are bound by the shared virtual disk, whose sync latency varies between \
         runs (we have seen etcd's 100-client rate move 2x from one run to the next); compare \
         the ratios of one run, not absolute numbers across runs."
            .into(),
    );
    if let Err(why) = &peer {
        section.notes.push(format!("etcd not measured: {why}"));
    }
    Ok(section)
}

fn etcd_version() -> String {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("etcd Version: "))
                .map(str::to_owned)
        })
        .unwrap_or_default()
}
