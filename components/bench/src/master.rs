//! Master placement throughput and memory: simulated agents (`capstan-testkit`'s
//! [`SimAgent`], the real agent protocol) register with a master running in a child process
//! pinned to core 0; one v1 HTTP scheduler on core 1 accepts every offer with as many tiny
//! tasks as fit until it has launched its budget. Throughput is tasks per second from the
//! first ACCEPT to the last TASK_RUNNING acknowledged; memory is the master's RSS with every
//! agent registered and every task running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use capstan_master::wire::RecordIoDecoder;
use capstan_testkit::sim_agent::{SimAgent, SimAgentConfig};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::child::spawn_self;
use crate::report::{Row, Section};
use crate::stats::{cpu_time, mib, rss_kib};

const TASK_CPUS: f64 = 0.4;
const TASK_MEM: f64 = 400.0;

/// Child side: a standalone master on loopback with production-like timers.
pub async fn serve(token: CancellationToken) -> anyhow::Result<String> {
    let cfg = capstan_master::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        agent_timeout: Duration::from_secs(120),
        agent_ping_interval: Duration::from_secs(15),
        heartbeat_interval: Duration::from_secs(15),
        allocation_interval: Duration::from_millis(100),
        status_update_retry_interval: Duration::from_secs(30),
        ..capstan_master::Config::default()
    };
    let handle = capstan_master::Server::start(cfg, token)
        .await
        .context("starting the master")?;
    let addr = handle.local_addr().to_string();
    std::mem::forget(handle); // lives until the process exits
    Ok(addr)
}

/// Pins every thread of this process to `cpus` (a taskset list).
pub fn pin_self(cpus: &str) {
    let _ = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status();
}

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    let (n_agents, n_tasks) = if quick { (100, 1_000) } else { (1_000, 10_000) };
    let master = spawn_self("master", Some(0)).await?;
    pin_self("1");
    let result = measure(&master.addr, master.pid(), n_agents, n_tasks).await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    pin_self(&format!("0-{}", cores.saturating_sub(1)));
    drop(master);
    let m = result?;

    let mut section = Section {
        title: "master: placement throughput and memory".into(),
        ..Default::default()
    };
    let mut r = Row::new(format!(
        "tasks launched/s ({n_agents} agents, {n_tasks} tasks, until TASK_RUNNING acked)"
    ));
    r.capstan = format!("{:.0} tasks/s", m.throughput);
    r.peer = "— (no Mesos/Nomad/Kubernetes package to run; see anchors)".into();
    r.goal = "≥ 10,000 tasks/s".into();
    r.met = Some(m.throughput >= 10_000.0 && m.running == n_tasks);
    section.rows.push(r);
    let mut r = Row::new(format!("master RSS, {n_agents} agents registered"));
    r.capstan = mib(m.rss_agents_kib);
    section.rows.push(r);
    let mut r = Row::new(format!("master RSS, {n_agents} agents + {n_tasks} tasks"));
    r.capstan = mib(m.rss_tasks_kib);
    r.goal = "≤ 200 MiB".into();
    r.met = Some(m.rss_tasks_kib <= 200 * 1024);
    section.rows.push(r);
    section.notes = vec![
        format!(
            "Setup: `capstan-master` in a child process pinned to core 0; {n_agents} simulated \
             agents (4 cpus, 4096 MB each, real `capstan.agent.v1` protocol over HTTP) and one \
             v1 HTTP scheduler in the harness on core 1. Tasks are {TASK_CPUS} cpus / \
             {TASK_MEM} MB, so each agent fits 10; the scheduler accepts every offer with as \
             many as fit and acknowledges every update."
        ),
        format!(
            "{} of {n_tasks} tasks reached TASK_RUNNING (acknowledged) in {:.2} s from the \
             first ACCEPT; registering the agents took {:.2} s; the first offer came {:.2} s \
             after SUBSCRIBE.",
            m.running,
            m.elapsed.as_secs_f64(),
            m.register.as_secs_f64(),
            m.first_offer.as_secs_f64()
        ),
        format!(
            "CPU during the launch phase: the master used {:.2} s of CPU ({:.0}% of its core), \
             the harness (simulated agents + scheduler) {:.2} s ({:.0}% of its core), so the \
             number is bounded by {}.",
            m.master_cpu.as_secs_f64(),
            100.0 * m.master_cpu.as_secs_f64() / m.elapsed.as_secs_f64().max(1e-9),
            m.harness_cpu.as_secs_f64(),
            100.0 * m.harness_cpu.as_secs_f64() / m.elapsed.as_secs_f64().max(1e-9),
            if m.master_cpu >= m.harness_cpu {
                "the master"
            } else {
                "the load generator as much as the master"
            }
        ),
        "Peer: no placement peer runs in this run (Mesos, Nomad and Kubernetes are not Debian \
         packages here). Published anchors, not same-run numbers: Nomad's C1M challenge placed \
         ~3,750 containers/s; kube-scheduler schedules 100–600 pods/s."
            .into(),
    ];
    Ok(section)
}

struct Measured {
    throughput: f64,
    running: usize,
    elapsed: Duration,
    register: Duration,
    first_offer: Duration,
    rss_agents_kib: u64,
    rss_tasks_kib: u64,
    /// CPU time the master and the harness used between the first ACCEPT and the last ack.
    master_cpu: Duration,
    harness_cpu: Duration,
}

async fn measure(
    addr: &str,
    pid: u32,
    n_agents: usize,
    n_tasks: usize,
) -> anyhow::Result<Measured> {
    let base = format!("http://{addr}");
    let t0 = Instant::now();
    let mut agents = Vec::with_capacity(n_agents);
    for i in 0..n_agents {
        let mut cfg = SimAgentConfig::new(base.clone(), format!("sim-{i:04}"));
        cfg.update_retry = Duration::from_secs(30);
        agents.push(SimAgent::start_new(cfg));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let up = agents.iter().filter(|a| a.connected()).count();
        if up == n_agents {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {up} of {n_agents} simulated agents registered in 180 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let register = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_agents_kib = rss_kib(pid).context("master RSS")?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;
    let sub = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
        "user": "root", "name": "capstan-bench", "failover_timeout": 0.0}}});
    let t_sub = Instant::now();
    let resp = client
        .post(format!("{base}/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(sub.to_string())
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "SUBSCRIBE answered {}", resp.status());
    let stream_id = resp
        .headers()
        .get("Mesos-Stream-Id")
        .context("Mesos-Stream-Id")?
        .to_str()?
        .to_owned();
    let mut body = resp.bytes_stream();
    let mut dec = RecordIoDecoder::default();

    let calls = Arc::new(Semaphore::new(64));
    let running = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let last_running: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let done = Arc::new(tokio::sync::Notify::new());
    let mut framework_id = String::new();
    let mut launched = 0usize;
    let mut first_accept: Option<Instant> = None;
    let mut first_offer = Duration::ZERO;
    let mut cpu_start = (Duration::ZERO, Duration::ZERO);
    let mut seen: HashMap<String, ()> = HashMap::new();
    let end =
        tokio::time::Instant::now() + Duration::from_secs(if n_tasks > 1000 { 240 } else { 60 });

    let post = {
        let client = client.clone();
        let base = base.clone();
        let stream_id = stream_id.clone();
        move |call: Value| {
            let client = client.clone();
            let url = format!("{base}/api/v1/scheduler");
            let stream_id = stream_id.clone();
            async move {
                client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .header("Mesos-Stream-Id", stream_id)
                    .body(call.to_string())
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        }
    };

    'events: loop {
        if running.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) >= n_tasks {
            break;
        }
        let chunk = tokio::select! {
            c = body.next() => c,
            _ = done.notified() => continue,
            _ = tokio::time::sleep_until(end) => break,
        };
        let Some(Ok(chunk)) = chunk else {
            bail!("the scheduler stream ended");
        };
        dec.push(&chunk);
        while let Ok(Some(rec)) = dec.next_record() {
            let ev: Value = serde_json::from_slice(&rec).context("event JSON")?;
            match ev["type"].as_str().unwrap_or("") {
                "SUBSCRIBED" => {
                    framework_id = ev["subscribed"]["framework_id"]["value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                }
                "OFFERS" => {
                    if first_accept.is_none() {
                        first_offer = t_sub.elapsed();
                        first_accept = Some(Instant::now());
                        cpu_start = (
                            cpu_time(pid).unwrap_or_default(),
                            cpu_time(std::process::id()).unwrap_or_default(),
                        );
                    }
                    let offers = ev["offers"]["offers"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    for offer in offers {
                        let fit = fits(&offer).min(n_tasks - launched);
                        let fid = json!({"value": framework_id});
                        let call = if fit == 0 {
                            json!({"type": "DECLINE", "framework_id": fid, "decline": {
                                "offer_ids": [offer["id"]], "filters": {"refuse_seconds": 3600.0}}})
                        } else {
                            let tasks: Vec<Value> = (launched..launched + fit)
                                .map(|i| task_info(&offer, i))
                                .collect();
                            launched += fit;
                            json!({"type": "ACCEPT", "framework_id": fid, "accept": {
                                "offer_ids": [offer["id"]],
                                "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                                "filters": {"refuse_seconds": 3600.0}}})
                        };
                        let (post, calls) = (post.clone(), calls.clone());
                        tokio::spawn(async move {
                            let _permit = calls.acquire_owned().await;
                            post(call).await
                        });
                    }
                }
                "UPDATE" => {
                    let status = &ev["update"]["status"];
                    let state = status["state"].as_str().unwrap_or("").to_owned();
                    let task = status["task_id"]["value"].as_str().unwrap_or("").to_owned();
                    let terminal = capstan_master::wire::is_terminal(&state);
                    if terminal && seen.insert(task.clone(), ()).is_none() {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    let Some(uuid) = status.get("uuid").cloned() else {
                        continue;
                    };
                    let call = json!({"type": "ACKNOWLEDGE",
                        "framework_id": {"value": framework_id},
                        "acknowledge": {"agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": uuid}});
                    let is_running = state == "TASK_RUNNING" && seen.insert(task, ()).is_none();
                    let (post, calls) = (post.clone(), calls.clone());
                    let (running, last, done) =
                        (running.clone(), last_running.clone(), done.clone());
                    tokio::spawn(async move {
                        let _permit = calls.acquire_owned().await;
                        let ok = post(call).await;
                        if ok && is_running {
                            running.fetch_add(1, Ordering::SeqCst);
                            if let Ok(mut l) = last.lock() {
                                *l = Some(Instant::now());
                            }
                            done.notify_one();
                        }
                    });
                }
                "ERROR" => bail!("scheduler ERROR event: {ev}"),
                _ => {}
            }
            if running.load(Ordering::SeqCst) >= n_tasks {
                break 'events;
            }
        }
    }
    let running_n = running.load(Ordering::SeqCst);
    let start = first_accept.context("no offer arrived")?;
    let last = last_running.lock().ok().and_then(|l| *l).unwrap_or(start);
    let elapsed = last.saturating_duration_since(start);
    let master_cpu = cpu_time(pid)
        .unwrap_or_default()
        .saturating_sub(cpu_start.0);
    let harness_cpu = cpu_time(std::process::id())
        .unwrap_or_default()
        .saturating_sub(cpu_start.1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_tasks_kib = rss_kib(pid).context("master RSS")?;
    drop(agents);
    Ok(Measured {
        throughput: running_n as f64 / elapsed.as_secs_f64().max(1e-9),
        running: running_n,
        elapsed,
        register,
        first_offer,
        rss_agents_kib,
        rss_tasks_kib,
        master_cpu,
        harness_cpu,
    })
}

fn scalar(offer: &Value, name: &str) -> f64 {
    offer["resources"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["name"] == name)
                .filter_map(|r| r["scalar"]["value"].as_f64())
                .sum()
        })
        .unwrap_or(0.0)
}

/// How many benchmark tasks fit in an offer.
fn fits(offer: &Value) -> usize {
    let by_cpu = (scalar(offer, "cpus") + 1e-9) / TASK_CPUS;
    let by_mem = (scalar(offer, "mem") + 1e-9) / TASK_MEM;
    by_cpu.min(by_mem).floor().max(0.0) as usize
}

fn task_info(offer: &Value, i: usize) -> Value {
    let id = format!("bench-{i}");
    json!({
        "name": id, "task_id": {"value": id}, "agent_id": offer["agent_id"],
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": TASK_CPUS}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": TASK_MEM}},
        ],
        "command": {"value": "run", "shell": true},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_fit_by_the_scarcer_resource() {
        let offer = json!({"resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 1000.0}},
        ]});
        assert_eq!(fits(&offer), 2);
        assert_eq!(fits(&json!({"resources": []})), 0);
    }
}
