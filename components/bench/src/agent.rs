//! Agent launch latency and memory: `capstan-agent` (in process, standalone, Docker
//! containerizer) launching `capstan/busybox sleep 3600` through its local
//! `TaskManagerHandle::launch` until TASK_RUNNING, against `docker run -d` of the same image
//! and command timed the same way, alternating one each. Every container is labelled
//! `capstan.bench=1` and removed at the end, also on error. Idle memory is read from a
//! standalone agent in a child process.
//!
//! Two more measurements: burst throughput (one agent handed N tasks at once against N
//! parallel `docker run -d`), and recovery (a standalone agent in a child process with N
//! containers is killed with SIGKILL and restarted on the same work dir; timed until its
//! `/containers` shows every task reattached, counting the tasks it lost).

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

/// Child side: a standalone agent with its work dir in `dir` (the harness removes it). With
/// `launch=N,DIR` it first launches N `sleep 3600` containers and is ready once all run.
pub async fn serve(arg: &str, token: CancellationToken) -> anyhow::Result<String> {
    let (launch, dir) = parse_serve_arg(arg).context("expected DIR or launch=N,DIR")?;
    let handle = capstan_agent::Server::start(agent_config(Path::new(dir)), token)
        .await
        .context("starting the agent")?;
    let ids: Vec<String> = (0..launch).map(|i| format!("bench-restart-{i}")).collect();
    launch_all(handle.tasks(), &ids).await?;
    let addr = handle.local_addr().to_string();
    std::mem::forget(handle);
    Ok(addr)
}

/// `DIR` or `launch=N,DIR`: how many containers to launch, and the work dir.
fn parse_serve_arg(arg: &str) -> Option<(usize, &str)> {
    match arg.strip_prefix("launch=") {
        Some(rest) => {
            let (n, dir) = rest.split_once(',')?;
            Some((n.parse().ok()?, dir))
        }
        None => Some((0, arg)),
    }
}

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    let mut section = match latency(quick).await {
        Ok(s) => s,
        Err(e) => Section {
            notes: vec![format!("The launch latency benchmark failed: {e:#}")],
            ..Default::default()
        },
    };
    section.title = "agent: container launch latency, burst throughput, restart and memory".into();
    let burst_n = if quick { 20 } else { 100 };
    let result = burst(burst_n).await;
    remove_bench_containers().await;
    match result {
        Ok(b) => b.report(&mut section),
        Err(e) => section
            .notes
            .push(format!("The burst benchmark failed: {e:#}")),
    }
    let restart_n = if quick { 10 } else { 50 };
    let result = restart(restart_n).await;
    remove_bench_containers().await;
    match result {
        Ok(r) => r.report(&mut section),
        Err(e) => section
            .notes
            .push(format!("The restart benchmark failed: {e:#}")),
    }
    Ok(section)
}

async fn latency(quick: bool) -> anyhow::Result<Section> {
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

/// Launches every task in `ids` at once and waits until all run; the time that took.
async fn launch_all(
    tasks: &capstan_agent::TaskManagerHandle,
    ids: &[String],
) -> anyhow::Result<Duration> {
    let mut updates = tasks.subscribe();
    let infos = ids
        .iter()
        .map(|id| task(id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let t0 = Instant::now();
    futures::future::try_join_all(
        infos
            .into_iter()
            .map(|info| tasks.launch("capstan-bench", info)),
    )
    .await?;
    let mut waiting: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while !waiting.is_empty() {
        let u = tokio::time::timeout_at(deadline, updates.recv())
            .await
            .with_context(|| {
                format!(
                    "{} of {} tasks not running in 180 s",
                    waiting.len(),
                    ids.len()
                )
            })?;
        let u = match u {
            Ok(u) => u,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Missed updates: fall back to the snapshot.
                let snap = tasks.snapshot();
                waiting.retain(|id| {
                    snap.task(id)
                        .is_none_or(|t| t.state != TaskState::TaskRunning)
                });
                continue;
            }
            Err(e) => bail!("agent update stream: {e}"),
        };
        let id = u.status.task_id.value.as_str();
        let state = u.status.state();
        if state == TaskState::TaskRunning {
            waiting.remove(id);
        } else if waiting.contains(id) && capstan_agent::manager::is_terminal(state) {
            bail!("{id} ended {state:?}: {}", u.status.message());
        }
    }
    Ok(t0.elapsed())
}

/// `n` tasks given to one agent at once against `n` parallel `docker run -d`.
struct Burst {
    n: usize,
    ours: Duration,
    docker: Duration,
}

impl Burst {
    fn report(&self, section: &mut Section) {
        let n = self.n as f64;
        let ours = n / self.ours.as_secs_f64().max(1e-9);
        let docker = n / self.docker.as_secs_f64().max(1e-9);
        let mut r = Row::new(format!(
            "one agent launching {} tasks at once (`{IMAGE} sleep 3600`), until all TASK_RUNNING",
            self.n
        ));
        r.capstan = format!("{ours:.1} tasks/s ({:.2} s)", self.ours.as_secs_f64());
        r.peer = format!(
            "{docker:.1} containers/s ({:.2} s, {} parallel `docker run -d`)",
            self.docker.as_secs_f64(),
            self.n
        );
        let ratio = ours / docker.max(1e-9);
        r.ratio = Some(ratio);
        r.goal = "≥ 0.95× docker".into();
        r.met = Some(ratio >= 0.95);
        section.rows.push(r);
        section.notes.push(format!(
            "Burst setup: a fresh in-process agent (as above) is handed {0} tasks at once and \
             timed from the first launch until the last TASK_RUNNING; the peer is {0} `docker run \
             -d --network host {IMAGE} sleep 3600` processes started together, timed until the \
             last one exited. Each side's containers are removed before the other side runs.",
            self.n
        ));
    }
}

async fn burst(n: usize) -> anyhow::Result<Burst> {
    let dir = tempfile::Builder::new()
        .prefix("capstan-bench-agent-")
        .tempdir()?;
    let agent = capstan_agent::Server::start(agent_config(dir.path()), CancellationToken::new())
        .await
        .context("starting the agent")?;
    let ids: Vec<String> = (0..n).map(|i| format!("bench-burst-{i}")).collect();
    let ours = launch_all(agent.tasks(), &ids).await;
    agent.shutdown().await;
    remove_bench_containers().await;
    let ours = ours?;
    let t0 = Instant::now();
    futures::future::try_join_all((0..n).map(|_| docker_run())).await?;
    let docker = t0.elapsed();
    Ok(Burst { n, ours, docker })
}

/// An agent killed with SIGKILL and restarted on the same work dir with `n` containers.
struct Restart {
    n: usize,
    /// From the restart until the new agent served HTTP.
    ready: Duration,
    /// From the restart until every recovered task was reattached.
    reattached: Duration,
    recovered: usize,
    lost: usize,
    /// Containers still running after the kill, before the restart.
    survived: usize,
}

impl Restart {
    fn report(&self, section: &mut Section) {
        let mut r = Row::new(format!(
            "agent restart (SIGKILL) with {} running containers: until all reattached",
            self.n
        ));
        r.capstan = format!("{} ({} lost)", crate::stats::ms(self.reattached), self.lost);
        r.peer = "— (no Mesos agent to run)".into();
        r.goal = "≤ 2 s, zero lost".into();
        r.met = Some(self.reattached <= Duration::from_secs(2) && self.lost == 0);
        section.rows.push(r);
        section.notes.push(format!(
            "Restart setup: a standalone agent in a child process launches {n} `{IMAGE} sleep \
             3600` containers, is killed with SIGKILL ({survived} of {n} containers kept running), \
             and is started again on the same work dir. Timed from the restart (process spawn) \
             until its `/containers` lists every recovered task as reattached (the container \
             status carries its network info only once the supervisor reattached); the new \
             process served HTTP after {ready}. {recovered} of {n} tasks were recovered and \
             reattached, {lost} lost.",
            n = self.n,
            survived = self.survived,
            ready = crate::stats::ms(self.ready),
            recovered = self.recovered,
            lost = self.lost,
        ));
    }
}

async fn restart(n: usize) -> anyhow::Result<Restart> {
    let dir = tempfile::Builder::new()
        .prefix("capstan-bench-agent-")
        .tempdir()?;
    let mut first = spawn_self(&format!("agent:launch={n},{}", dir.path().display()), None).await?;
    first.child.kill().await.context("killing the agent")?;
    let survived = count_bench_containers().await?;
    let t0 = Instant::now();
    let second = spawn_self(&format!("agent:{}", dir.path().display()), None).await?;
    let ready = t0.elapsed();
    let client = capstan_http_client::client();
    let url = format!("http://{}/containers", second.addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list: serde_json::Value = client.get(&url).send().await?.json().await?;
        let list = list.as_array().cloned().unwrap_or_default();
        let reattached = list
            .iter()
            .filter(|c| c["status"].get("network_infos").is_some())
            .count();
        if reattached == list.len() || Instant::now() > deadline {
            let reattached_at = t0.elapsed();
            drop(second);
            return Ok(Restart {
                n,
                ready,
                reattached: reattached_at,
                recovered: reattached,
                lost: n.saturating_sub(reattached),
                survived,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How many containers labelled `capstan.bench=1` are running.
async fn count_bench_containers() -> anyhow::Result<usize> {
    let out = tokio::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label={LABEL}=1")])
        .output()
        .await
        .context("docker ps")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serve_argument_names_the_work_dir_and_optional_launches() {
        assert_eq!(parse_serve_arg("/tmp/a"), Some((0, "/tmp/a")));
        assert_eq!(
            parse_serve_arg("launch=50,/tmp/a,b"),
            Some((50, "/tmp/a,b"))
        );
        assert_eq!(parse_serve_arg("launch=x,/tmp/a"), None);
        assert_eq!(parse_serve_arg("launch=5"), None);
    }
}
