//! Agent launch latency and memory: `capstan-agent` (in process, standalone, Docker
//! containerizer) launching `capstan/busybox sleep 3600` through its local
//! `TaskManagerHandle::launch` until TASK_RUNNING, against `docker run -d` of the same image
//! and command timed the same way, alternating one each. Every container is labelled
//! `capstan.bench=1` and removed at the end, also on error. Idle memory is read from a
//! standalone agent in a child process.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use capstan_agent::config::DockerConfig;
use capstan_proto::mesos::v1::{TaskInfo, TaskState};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::child::spawn_self;
use crate::report::{Row, Section};
use crate::stats::{mib, ms, percentile, rss_kib};

const LABEL: &str = "capstan.bench";
const IMAGE: &str = "capstan/busybox";

fn agent_config(work_dir: &std::path::Path) -> capstan_agent::Config {
    capstan_agent::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        advertise_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        hostname: Some("capstan-bench".into()),
        work_dir: work_dir.to_path_buf(),
        docker: DockerConfig {
            extra_labels: BTreeMap::from([(LABEL.to_owned(), "1".to_owned())]),
            ..DockerConfig::default()
        },
        default_kill_grace: Duration::from_secs(1),
        ..capstan_agent::Config::default()
    }
}

/// Child side: an idle standalone agent with its work dir in `dir` (the harness removes it).
pub async fn serve(dir: &str, token: CancellationToken) -> anyhow::Result<String> {
    let handle = capstan_agent::Server::start(agent_config(Path::new(dir)), token)
        .await
        .context("starting the agent")?;
    let addr = handle.local_addr().to_string();
    std::mem::forget(handle);
    Ok(addr)
}

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    let n = if quick { 5 } else { 50 };
    let result = measure(n).await;
    remove_bench_containers().await;
    let (ours, docker) = result?;

    let idle = {
        let dir = tempfile::Builder::new()
            .prefix("capstan-bench-agent-")
            .tempdir()?;
        let child = spawn_self(&format!("agent:{}", dir.path().display()), None).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss_kib(child.pid()).unwrap_or(0)
    };

    let mut section = Section {
        title: "agent: container launch latency and memory".into(),
        ..Default::default()
    };
    for (label, p, goal) in [("p50", 50.0, 1.1), ("p99", 99.0, 1.25)] {
        let a = percentile(&ours, p).context("samples")?;
        let b = percentile(&docker, p).context("samples")?;
        let mut r = Row::new(format!(
            "launch → TASK_RUNNING {label} ({n} launches of `{IMAGE} sleep 3600`)"
        ));
        r.capstan = ms(a);
        r.peer = format!("{} (`docker run -d`)", ms(b));
        let ratio = a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        r.ratio = Some(ratio);
        r.goal = format!("≤ {goal}× docker");
        r.met = Some(ratio <= goal);
        section.rows.push(r);
    }
    let mut r = Row::new("idle agent RSS (standalone, no tasks)");
    r.capstan = mib(idle);
    r.goal = "≤ 20 MiB".into();
    r.met = Some(idle <= 20 * 1024);
    section.rows.push(r);
    section.notes.push(format!(
        "Setup: one agent in the harness process (standalone, Docker containerizer, host \
         network) and the docker CLI (`docker run -d --network host`), launches alternating \
         one each, each waited for before the next, after one untimed warm-up launch each; \
         the containers stay running until the \
         end, then all are removed. Docker {}. Idle RSS is a standalone agent in a child \
         process, read 2 s after it started.",
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

fn task(id: &str) -> anyhow::Result<TaskInfo> {
    let t = json!({
        "name": id, "task_id": {"value": id}, "agent_id": {"value": "bench"},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.01}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 16}}
        ],
        "command": {"value": "sleep 3600"},
        "container": {"type": "DOCKER", "docker": {"image": IMAGE}}
    });
    capstan_proto::from_json(&t).context("TaskInfo JSON")
}

async fn measure(n: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let dir = tempfile::Builder::new()
        .prefix("capstan-bench-agent-")
        .tempdir()?;
    let agent = capstan_agent::Server::start(agent_config(dir.path()), CancellationToken::new())
        .await
        .context("starting the agent")?;
    let tasks = agent.tasks().clone();
    let mut ours = Vec::with_capacity(n);
    let mut docker = Vec::with_capacity(n);
    // One untimed launch each first: connections, image lookups and caches warm up.
    let mut result = launch_one(&tasks, "bench-warmup")
        .await
        .and(docker_run().await)
        .map(|_| ());
    for i in 0..n {
        if result.is_err() {
            break;
        }
        let id = format!("bench-launch-{i}");
        match launch_one(&tasks, &id).await {
            Ok(d) => ours.push(d),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        match docker_run().await {
            Ok(d) => docker.push(d),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let ids = (0..n).map(|i| format!("bench-launch-{i}"));
    for id in ids.chain(["bench-warmup".to_owned()]) {
        let _ = tasks.kill(&id, Some(Duration::ZERO)).await;
    }
    // Let the kills reach Docker before the agent goes away; containers left are removed
    // by label afterwards.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && tasks
            .snapshot()
            .tasks
            .values()
            .any(|t| t.state == TaskState::TaskRunning || t.state == TaskState::TaskKilling)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.shutdown().await;
    result?;
    Ok((ours, docker))
}

async fn launch_one(
    tasks: &capstan_agent::TaskManagerHandle,
    id: &str,
) -> anyhow::Result<Duration> {
    let mut updates = tasks.subscribe();
    let info = task(id)?;
    let t0 = Instant::now();
    tasks.launch("capstan-bench", info).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let u = tokio::time::timeout_at(deadline, updates.recv())
            .await
            .with_context(|| format!("{id} not running in 60 s"))?;
        let u = match u {
            Ok(u) => u,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(e) => bail!("agent update stream: {e}"),
        };
        if u.status.task_id.value != id {
            continue;
        }
        let state = u.status.state();
        if state == TaskState::TaskRunning {
            return Ok(t0.elapsed());
        }
        if matches!(
            state,
            TaskState::TaskFailed
                | TaskState::TaskError
                | TaskState::TaskKilled
                | TaskState::TaskFinished
        ) {
            bail!("{id} ended {state:?}: {}", u.status.message());
        }
    }
}

async fn docker_run() -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = tokio::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--network",
            "host",
            "--label",
            &format!("{LABEL}=1"),
            IMAGE,
        ])
        .args(["sleep", "3600"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .context("docker run took over 60 s")??;
    let d = t0.elapsed();
    if !out.status.success() {
        bail!(
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(d)
}

/// Removes every container labelled `capstan.bench=1` (ours and the peer's).
pub async fn remove_bench_containers() {
    let Ok(out) = tokio::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={LABEL}=1")])
        .output()
        .await
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return;
    }
    let _ = tokio::process::Command::new("docker")
        .args(["rm", "-f"])
        .args(&ids)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}
