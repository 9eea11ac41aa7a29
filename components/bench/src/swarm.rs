//! Swarm (the Docker Engine API front end) launch latency: the machine's docker CLI running
//! `docker -H <swarm> run -d capstan/busybox sleep 3600` — create, then start, which answers
//! once the task is RUNNING on the agent — against `docker run -d` of the same image and
//! command on the agent's own engine, timed the same way, alternating one each after one
//! untimed warm-up each. Then a burst: N `docker -H <swarm> run -d` at once, spread over
//! the two agents, against N parallel `docker run -d` on the engine, as runs per second.
//!
//! The cluster runs in the harness process: one master, two agents (Docker containerizer,
//! registered with the master, on the machine's one engine) and swarm subscribed to the master (no coord, no auth). Every
//! container is labelled `capstan.bench=1` (the agent's through its extra labels) and
//! removed at the end, also on error.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use capstan_agent::config::DockerConfig;
use tokio_util::sync::CancellationToken;

use crate::agent::remove_bench_containers;
use crate::report::{Row, Section};
use crate::stats::{ms, percentile};

const LABEL: &str = "capstan.bench";
const IMAGE: &str = "capstan/busybox";

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    let n = if quick { 5 } else { 30 };
    let burst_n = if quick { 20 } else { 100 };
    let token = CancellationToken::new();
    let result = measure(n, burst_n, token.clone()).await;
    token.cancel();
    remove_bench_containers().await;
    let m = result?;
    let (ours, docker) = (m.ours, m.docker);
    let mut section = Section {
        title: "swarm: `docker run -d` through the Docker API front end".into(),
        ..Default::default()
    };
    for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
        let a = percentile(&ours, p).context("samples")?;
        let b = percentile(&docker, p).context("samples")?;
        let mut r = Row::new(format!(
            "`docker run -d` → RUNNING {label} ({n} runs of `{IMAGE} sleep 3600`)"
        ));
        r.capstan = format!("{} (`docker -H swarm`)", ms(a));
        r.peer = format!("{} (`docker run -d` on the engine)", ms(b));
        let ratio = a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        r.ratio = Some(ratio);
        r.goal = "≤ 1.3× docker".into();
        r.met = Some(ratio <= 1.3);
        section.rows.push(r);
    }
    let rate = |d: Duration| burst_n as f64 / d.as_secs_f64().max(1e-9);
    let (a, b) = (rate(m.burst_ours), rate(m.burst_docker));
    let mut r = Row::new(format!(
        "{burst_n} `docker run -d` at once, across 2 agents (until all are RUNNING)"
    ));
    r.capstan = format!("{a:.1} runs/s ({:.2} s)", m.burst_ours.as_secs_f64());
    r.peer = format!("{b:.1} runs/s ({:.2} s)", m.burst_docker.as_secs_f64());
    let ratio = a / b.max(1e-9);
    r.ratio = Some(ratio);
    r.goal = "≥ 0.9× docker".into();
    r.met = Some(ratio >= 0.9);
    section.rows.push(r);
    let spread: Vec<String> = m.spread.iter().map(usize::to_string).collect();
    section.notes.push(format!(
        "Burst: all {burst_n} CLIs are spawned at once and the time runs until the last one \
         returned (swarm's start returns once the task is RUNNING); the engine's burst runs \
         after swarm's containers were removed. Containers per agent after swarm's burst: {}.",
        spread.join(" / ")
    ));
    section.notes.push(format!(
        "Setup: one master, two agents (Docker containerizer) and swarm in the harness \
         process, on the same engine the peer uses; both sides are the docker CLI (bridge \
         network, 16 MiB and 10 CPU shares: `--cpus 0.01 -m 16m` through swarm, whose agent \
         sets shares, `--cpu-shares 10 -m 16m` on the engine), so each sample includes the CLI's own start-up. Runs \
         alternate one each, each waited for before the next, after one untimed warm-up each; \
         the containers stay running until the end, then all are removed. Docker {}.",
        docker_version().await
    ));
    Ok(section)
}

async fn docker_version() -> String {
    tokio::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn agent_config(work_dir: &std::path::Path, master: &str) -> capstan_agent::Config {
    capstan_agent::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        advertise_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        hostname: Some("capstan-bench".into()),
        work_dir: work_dir.to_path_buf(),
        masters: vec![master.to_owned()],
        docker: DockerConfig {
            extra_labels: BTreeMap::from([(LABEL.to_owned(), "1".to_owned())]),
            ..DockerConfig::default()
        },
        default_kill_grace: Duration::from_secs(1),
        ..capstan_agent::Config::default()
    }
}

struct Measured {
    ours: Vec<Duration>,
    docker: Vec<Duration>,
    burst_ours: Duration,
    burst_docker: Duration,
    /// Swarm's burst containers per agent.
    spread: Vec<usize>,
}

async fn measure(n: usize, burst_n: usize, token: CancellationToken) -> anyhow::Result<Measured> {
    let mcfg = capstan_master::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        allocation_interval: Duration::from_millis(50),
        ..capstan_master::Config::default()
    };
    let master = capstan_master::Server::start(mcfg, token.clone())
        .await
        .context("starting the master")?;
    let maddr = master.local_addr().to_string();
    let mut agents = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::Builder::new()
            .prefix("capstan-bench-swarm-")
            .tempdir()?;
        let agent = capstan_agent::Server::start(agent_config(dir.path(), &maddr), token.clone())
            .await
            .context("starting an agent")?;
        agents.push((agent, dir));
    }
    let scfg = capstan_swarm::Config {
        masters: vec![maddr.clone()],
        ..capstan_swarm::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let swarm = capstan_swarm::Server::start_on(scfg, listener, token.clone())
        .await
        .context("starting swarm")?;
    let host = format!("tcp://{}", swarm.local_addr());

    let deadline = Instant::now() + Duration::from_secs(60);
    while !agents.iter().all(|(a, _)| a.master_connected()) {
        if Instant::now() > deadline {
            bail!("the agents did not register with the master in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Warm-up: the first run through swarm also waits for swarm's subscription and the first
    // offers.
    loop {
        match run_d(Some(&host)).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context("no container ran through swarm within 60 s"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    run_d(None).await.context("warm-up docker run -d")?;

    let mut ours = Vec::with_capacity(n);
    let mut docker = Vec::with_capacity(n);
    for _ in 0..n {
        ours.push(run_d(Some(&host)).await?);
        docker.push(run_d(None).await?);
    }
    remove_swarm_containers(&host).await;
    remove_bench_containers().await;

    let t0 = Instant::now();
    futures::future::try_join_all((0..burst_n).map(|_| run_d(Some(&host)))).await?;
    let burst_ours = t0.elapsed();
    let mut spread = Vec::new();
    for (agent, _) in &agents {
        let prefix = format!("mesos-{}.", agent.agent_id());
        spread.push(count_named(&prefix).await);
    }
    remove_swarm_containers(&host).await;
    remove_bench_containers().await;
    let t0 = Instant::now();
    futures::future::try_join_all((0..burst_n).map(|_| run_d(None))).await?;
    let burst_docker = t0.elapsed();
    swarm.shutdown().await;
    Ok(Measured {
        ours,
        docker,
        burst_ours,
        burst_docker,
        spread,
    })
}

/// Running containers whose name starts with `prefix`.
async fn count_named(prefix: &str) -> usize {
    let Ok(out) = tokio::process::Command::new("docker")
        .args(["ps", "--format", "{{.Names}}"])
        .output()
        .await
    else {
        return 0;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// Removes every container swarm at `host` knows (their tasks are killed).
async fn remove_swarm_containers(host: &str) {
    if let Ok(out) = tokio::process::Command::new("docker")
        .args(["-H", host, "ps", "-aq"])
        .output()
        .await
    {
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let ids: Vec<&str> = listed.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = tokio::process::Command::new("docker")
                .args(["-H", host, "rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }
}

/// One `docker run -d`, through swarm at `host` or on the machine's engine, timed.
async fn run_d(host: Option<&str>) -> anyhow::Result<Duration> {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.env_remove("DOCKER_HOST").env_remove("DOCKER_CONTEXT");
    if let Some(h) = host {
        cmd.args(["-H", h]);
    }
    // The same container on both sides: swarm's `--cpus` becomes the task's cpus, which the
    // agent turns into CPU shares (no CFS quota by default), so the engine gets the shares.
    let cpu: [&str; 2] = if host.is_some() {
        ["--cpus", "0.01"]
    } else {
        ["--cpu-shares", "10"]
    };
    cmd.args(["run", "-d"])
        .args(cpu)
        .args(["-m", "16m"])
        .args(["--label", &format!("{LABEL}=1"), IMAGE])
        .args(["sleep", "3600"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let t0 = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .context("docker run -d took over 120 s")?
        .context("running docker")?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!(
            "docker run -d{} failed: {}",
            host.map(|h| format!(" -H {h}")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}
