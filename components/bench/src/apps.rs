//! apps (Marathon API) deployment throughput, API latency and memory. A master and `capstan
//! apps` (in-memory store, production timers) run in child processes pinned to core 0;
//! simulated agents ([`SimAgent`], the real agent protocol) and the load generator run in the
//! harness on core 1. The harness creates the apps the way a Marathon user's script does — one
//! `POST /v2/apps` per app, 32 in flight — and counts `TASK_RUNNING` on the `/v2/events`
//! stream (each task once) with a periodic `GET /v2/apps` as a cross-check. Then it times
//! sequential `GET /v2/apps?embed=apps.tasks` and reads apps' RSS.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use capstan_testkit::sim_agent::{SimAgent, SimAgentConfig};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::child::spawn_self;
use crate::master::pin_self;
use crate::report::{Row, Section};
use crate::stats::{cpu_time, mib, ms, percentile, rss_kib};

const INSTANCES: usize = 10;
const APP_CPUS: f64 = 0.1;
const APP_MEM: f64 = 32.0;
/// Creates in flight at once.
const CREATE_CONCURRENCY: usize = 32;
/// Sequential `GET /v2/apps?embed=apps.tasks` requests (bounded by [`LIST_BUDGET`] too).
const LIST_REQUESTS: usize = 200;
const LIST_BUDGET: Duration = Duration::from_secs(30);
/// Goals from issue #6.
const GOAL_TASKS_PER_SEC: f64 = 5_000.0;
const GOAL_P99: Duration = Duration::from_millis(50);
const GOAL_RSS_KIB: u64 = 150 * 1024;

/// Child side: `capstan apps` on loopback with its default (production) timers, registered
/// as a framework with the master at `arg` (`host:port`), with the in-memory store; or, with
/// `arg` = `<master host:port>,<coord host:port>`, storing in coord and electing its leader
/// there (the failover trials).
pub async fn serve(arg: &str, token: CancellationToken) -> anyhow::Result<String> {
    anyhow::ensure!(
        !arg.is_empty(),
        "--serve apps:<master host:port>[,<coord host:port>]"
    );
    let (master, coord) = match arg.split_once(',') {
        Some((m, c)) => (m, Some(c)),
        None => (arg, None),
    };
    let mut cfg = capstan_apps::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        masters: vec![format!("http://{master}")],
        ..capstan_apps::Config::default()
    };
    if let Some(coord) = coord {
        cfg.store.coord_endpoints = vec![format!("http://{coord}")];
    }
    let handle = capstan_apps::Server::start(cfg, token)
        .await
        .context("starting apps")?;
    let addr = handle.local_addr().to_string();
    std::mem::forget(handle); // lives until the process exits
    Ok(addr)
}

/// Apps failover trials: a coord member, a master and two apps instances electing their
/// leader through coord, in child processes. Each trial kills the leader with SIGKILL and
/// times, from the kill, the first read (`GET /v2/apps`) and the first write
/// (`POST /v2/apps` → 201) the surviving instance answers; the killed one comes back as a
/// standby before the next trial.
async fn failover(trials: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let port = capstan_testkit::free_port()?;
    let coord = spawn_self(&format!("coord:1:{port}:{}", dir.path().display()), None).await?;
    let master = spawn_self("master", None).await?;
    let arg = format!("apps:{},{}", master.addr, coord.addr);
    let mut instances = vec![spawn_self(&arg, None).await?, spawn_self(&arg, None).await?];
    let http = capstan_http_client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        // Both instances agree on a leader, and it answers writes.
        let deadline = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            if Instant::now() > deadline {
                bail!("trial {trial}: no apps leader within 60 s");
            }
            let mut seen = Vec::new();
            for i in &instances {
                let v: Option<Value> = async {
                    http.get(format!("http://{}/v2/leader", i.addr))
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()
                }
                .await;
                seen.push(v.and_then(|v| v["leader"].as_str().map(str::to_owned)));
            }
            match (&seen[0], &seen[1]) {
                (Some(a), Some(b)) if a == b => {
                    if let Some(pos) = instances.iter().position(|i| &i.addr == a) {
                        break pos;
                    }
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let survivor = instances[1 - leader].addr.clone();
        let mut killed = instances.swap_remove(leader);
        let t0 = Instant::now();
        killed.child.start_kill().context("SIGKILL")?;
        let (mut read, mut write) = (None, None);
        let mut n = 0;
        while (read.is_none() || write.is_none()) && t0.elapsed() < Duration::from_secs(60) {
            if read.is_none() {
                let ok = http
                    .get(format!("http://{survivor}/v2/apps"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    read = Some(t0.elapsed());
                }
            }
            if write.is_none() {
                n += 1;
                let body = json!({"id": format!("/failover/t{trial}-{n}"), "cmd": "sleep 1",
                    "cpus": 0.01, "mem": 8, "instances": 0});
                let ok = http
                    .post(format!("http://{survivor}/v2/apps"))
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 201);
                if ok {
                    write = Some(t0.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = killed.child.wait().await;
        reads.push(read.context("no read answered within 60 s of the kill")?);
        writes.push(write.context("no write answered within 60 s of the kill")?);
        instances.push(spawn_self(&arg, None).await?);
    }
    drop(instances);
    drop(master);
    drop(coord);
    Ok((reads, writes))
}

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    let n_apps = if quick { 100 } else { 1_000 };
    let n_agents = n_apps;
    let n_tasks = n_apps * INSTANCES;
    let launch_budget = Duration::from_secs(if quick { 60 } else { 180 });
    let master = spawn_self("master", Some(0)).await?;
    let apps = match spawn_self(&format!("apps:{}", master.addr), Some(0)).await {
        Ok(a) => a,
        Err(e) => {
            drop(master);
            return Err(e);
        }
    };
    pin_self("1");
    let result = measure(
        &apps.addr,
        &master.addr,
        (apps.pid(), master.pid()),
        n_apps,
        n_agents,
        launch_budget,
    )
    .await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    pin_self(&format!("0-{}", cores.saturating_sub(1)));
    drop(apps);
    drop(master);
    let m = result?;

    let mut section = Section {
        title: "apps: deployment throughput, API latency and memory".into(),
        ..Default::default()
    };
    let all_up = m.running >= n_tasks;
    let mut r = Row::new(format!(
        "tasks running/s ({n_apps} apps × {INSTANCES} instances via POST /v2/apps, \
         {n_agents} simulated agents)"
    ));
    r.capstan = if all_up {
        format!("{:.0} tasks/s", m.throughput)
    } else {
        format!(
            "{:.0} tasks/s ({} of {n_tasks} running after {:.0} s)",
            m.throughput,
            m.running,
            m.elapsed.as_secs_f64()
        )
    };
    r.peer = "— (no Marathon package; anchor: ~35 tasks/s)".into();
    r.goal = "≥ 5,000 tasks/s".into();
    r.met = Some(all_up && m.throughput >= GOAL_TASKS_PER_SEC);
    section.rows.push(r);

    let p50 = percentile(&m.list_latency, 50.0);
    let p99 = percentile(&m.list_latency, 99.0);
    let what = format!(
        "GET /v2/apps?embed=apps.tasks ({n_apps} apps, {} tasks)",
        m.listed_tasks
    );
    let mut r = Row::new(format!("{what} p50"));
    r.capstan = p50.map_or_else(|| "—".into(), ms);
    section.rows.push(r);
    let mut r = Row::new(format!("{what} p99"));
    r.capstan = p99.map_or_else(|| "—".into(), ms);
    r.peer = "— (anchor: Marathon's API timed out past 2,664 apps)".into();
    r.goal = "≤ 50 ms".into();
    r.met = p99.map(|p| p <= GOAL_P99 && m.listed_tasks >= n_tasks);
    section.rows.push(r);

    let mut r = Row::new(format!(
        "apps RSS, {n_apps} apps + {} tasks",
        m.listed_tasks
    ));
    r.capstan = mib(m.rss_apps_kib);
    r.goal = "≤ 150 MiB".into();
    r.met = Some(m.rss_apps_kib <= GOAL_RSS_KIB && m.listed_tasks >= n_tasks);
    section.rows.push(r);

    let secs = |d: Duration| d.as_secs_f64();
    let pct = |cpu: Duration| 100.0 * secs(cpu) / secs(m.elapsed).max(1e-9);
    section.notes = vec![
        format!(
            "Setup: `capstan-master` and `capstan apps` (in-memory store, default timers) in \
             child processes pinned together to core 0; {n_agents} simulated agents (4 cpus, \
             4096 MB each, real `capstan.agent.v1` protocol, tasks report TASK_RUNNING at once) \
             and the HTTP load generator in the harness on core 1. Each app is {APP_CPUS} cpus \
             / {APP_MEM} MB with one port and {INSTANCES} instances, created with one \
             `POST /v2/apps` per app ({CREATE_CONCURRENCY} in flight), as a user's script or \
             marathon-python would. Time runs from the first POST to the last first \
             TASK_RUNNING `status_update_event` on `/v2/events`."
        ),
        format!(
            "{} of {n_tasks} tasks running after {:.2} s ({} first TASK_RUNNINGs seen on the \
             event stream, the first after {}; `GET /v2/apps` then counted {} running and {} \
             staged; the agents were running {}). Creates: {} of {n_apps} answered 201 and {} \
             failed, the last answer {:.2} s after the first POST{}. Registering the agents \
             took {:.2} s.",
            m.running,
            secs(m.elapsed),
            m.sse_running,
            m.first_running
                .map_or_else(|| "never came".into(), |d| format!("{:.2} s", secs(d))),
            m.polled_running,
            m.polled_staged
                .map_or_else(|| "? (no answer in 15 s)".into(), |n| n.to_string()),
            m.on_agents,
            m.created,
            m.create_failures,
            secs(m.create_time),
            if m.created + m.create_failures < n_apps {
                format!(
                    "; {} were still unanswered when the budget ran out",
                    n_apps - m.created - m.create_failures
                )
            } else {
                String::new()
            },
            secs(m.register),
        ),
        format!(
            "CPU during the launch phase: apps {:.2} s ({:.0}% of a core), master {:.2} s \
             ({:.0}%), harness (agents + client) {:.2} s ({:.0}%).",
            secs(m.apps_cpu),
            pct(m.apps_cpu),
            secs(m.master_cpu),
            pct(m.master_cpu),
            secs(m.harness_cpu),
            pct(m.harness_cpu),
        ),
        format!(
            "{} sequential `GET /v2/apps?embed=apps.tasks` after the launch phase (responses \
             of {:.1} MiB listing {} tasks){}; master RSS at that point {}.",
            m.list_latency.len(),
            m.list_bytes as f64 / (1024.0 * 1024.0),
            m.listed_tasks,
            if all_up {
                ""
            } else {
                ", timed while apps was still working through the unfinished launch, so they \
                 include queueing behind it"
            },
            mib(m.rss_master_kib),
        ),
        "Peer: Marathon is not packaged here, so no same-run peer. Published anchors: \
         Marathon launched ~35 tasks/s for one 500-instance app on 189 agents, and its \
         `/v2/apps` API timed out past 2,664 apps."
            .into(),
    ];
    let trials = if quick { 3 } else { 10 };
    match failover(trials).await {
        Ok((reads, writes)) => {
            for (what, samples) in [("reads", &reads), ("writes", &writes)] {
                let p50 = percentile(samples, 50.0);
                let p99 = percentile(samples, 99.0);
                let mut r = Row::new(format!(
                    "apps leader killed with SIGKILL: first {what} answered by the standby, \
                     p50 / p99 of {trials} trials"
                ));
                r.capstan = format!(
                    "{} / {}",
                    p50.map_or_else(|| "—".into(), ms),
                    p99.map_or_else(|| "—".into(), ms)
                );
                r.peer = "— (Marathon: the ZooKeeper session timeout, 10 s by default)".into();
                r.goal = "≤ 2 s".into();
                r.met = p99.map(|p| p <= Duration::from_secs(2));
                section.rows.push(r);
            }
            section.notes.push(format!(
                "Failover: 1 coord member, 1 master, 2 apps instances (coord store, lease 2 s, \
                 default timers) in child processes; the next candidate probes the leader's \
                 address every {} ms and revokes its lease after {} refused connections; a \
                 leader that is alive but slow still accepts connections and is left to its \
                 lease.",
                capstan_coord_client::election_probe::PROBE_INTERVAL.as_millis(),
                capstan_coord_client::election_probe::PROBE_REFUSALS
            ));
        }
        Err(e) => section
            .notes
            .push(format!("The apps failover trials failed: {e:#}")),
    }
    Ok(section)
}

struct Measured {
    throughput: f64,
    running: usize,
    sse_running: usize,
    polled_running: usize,
    /// From the first create to the last TASK_RUNNING (or to the end of the budget).
    elapsed: Duration,
    /// From the first create to the last create answered.
    create_time: Duration,
    created: usize,
    create_failures: usize,
    first_running: Option<Duration>,
    /// TASK_RUNNING as the simulated agents see it, at the end of the launch phase.
    on_agents: usize,
    /// `tasksStaged` summed over `GET /v2/apps` at the end of the launch phase.
    polled_staged: Option<usize>,
    register: Duration,
    list_latency: Vec<Duration>,
    list_bytes: usize,
    listed_tasks: usize,
    rss_apps_kib: u64,
    rss_master_kib: u64,
    apps_cpu: Duration,
    master_cpu: Duration,
    harness_cpu: Duration,
}

/// What the event-stream reader has seen.
#[derive(Default)]
struct Seen {
    running: HashSet<String>,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Answers to the creates so far.
#[derive(Default)]
struct Creates {
    ok: AtomicUsize,
    failed: AtomicUsize,
    last: Mutex<Option<Instant>>,
}

impl Creates {
    fn answered(&self, ok: bool) {
        let n = if ok { &self.ok } else { &self.failed };
        n.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut l) = self.last.lock() {
            *l = Some(Instant::now());
        }
    }

    /// (201s, failures, when the last answer came).
    fn snapshot(&self) -> (usize, usize, Option<Instant>) {
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            self.last.lock().ok().and_then(|l| *l),
        )
    }
}

async fn measure(
    apps_addr: &str,
    master_addr: &str,
    (apps_pid, master_pid): (u32, u32),
    n_apps: usize,
    n_agents: usize,
    launch_budget: Duration,
) -> anyhow::Result<Measured> {
    let n_tasks = n_apps * INSTANCES;
    let base = format!("http://{apps_addr}");
    let client = capstan_http_client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()?;

    // Agents first, so the first offers already cover the whole cluster.
    let t_reg = Instant::now();
    let mut agents = Vec::with_capacity(n_agents);
    for i in 0..n_agents {
        let mut cfg = SimAgentConfig::new(format!("http://{master_addr}"), format!("sim-{i:04}"));
        cfg.update_retry = Duration::from_secs(30);
        agents.push(SimAgent::start_new(cfg));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let up = agents.iter().filter(|a| a.connected()).count();
        if up == n_agents {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {up} of {n_agents} simulated agents registered in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let register = t_reg.elapsed();

    // apps must be registered with the master before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info: Option<Value> = match client.get(format!("{base}/v2/info")).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if info.is_some_and(|i| i["frameworkId"].is_string()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("apps did not register with the master in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Count first TASK_RUNNINGs on the event stream.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let resp = client
        .get(format!("{base}/v2/events?event_type=status_update_event"))
        .header("Accept", "text/event-stream")
        .timeout(Duration::from_secs(3600))
        .send()
        .await
        .context("opening /v2/events")?;
    anyhow::ensure!(
        resp.status() == 200,
        "/v2/events answered {}",
        resp.status()
    );
    let reader = tokio::spawn(read_events(resp, seen.clone()));

    let cpu_start = (
        cpu_time(apps_pid).unwrap_or_default(),
        cpu_time(master_pid).unwrap_or_default(),
        cpu_time(std::process::id()).unwrap_or_default(),
    );
    let t0 = Instant::now();
    let creates = Arc::new(Creates::default());
    let create_task = {
        let (client, base, creates) = (client.clone(), base.clone(), creates.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..n_apps)
                .for_each_concurrent(CREATE_CONCURRENCY, |i| {
                    let (client, base, creates) = (client.clone(), base.clone(), creates.clone());
                    async move {
                        let r = client
                            .post(format!("{base}/v2/apps"))
                            .json(&app_definition(i))
                            .send()
                            .await;
                        let ok = match r {
                            Ok(r) if r.status() == 201 => true,
                            Ok(r) => {
                                tracing::warn!(status = %r.status(), "POST /v2/apps failed");
                                false
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "POST /v2/apps failed");
                                false
                            }
                        };
                        creates.answered(ok);
                    }
                })
                .await;
        })
    };

    // Wait until every task runs, or the budget is spent.
    let end = t0 + launch_budget;
    let mut polled_running = 0usize;
    let mut polled_at: Option<Instant> = None;
    let mut next_poll = t0 + Duration::from_secs(2);
    loop {
        let sse = seen.lock().map(|s| s.running.len()).unwrap_or(0);
        if sse >= n_tasks || polled_running >= n_tasks || Instant::now() >= end {
            break;
        }
        if Instant::now() >= next_poll {
            // Cross-check (the event bus drops events for slow readers).
            if let Ok(Ok((n, _))) = tokio::time::timeout(
                end.saturating_duration_since(Instant::now()),
                running_total(&client, &base),
            )
            .await
            {
                polled_running = n;
                polled_at = Some(Instant::now());
            }
            next_poll = Instant::now() + Duration::from_secs(2);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (sse_running, sse_last) = seen
        .lock()
        .map(|s| (s.running.len(), s.last))
        .unwrap_or((0, None));
    let (running, finished_at) = if sse_running >= n_tasks {
        (sse_running, sse_last.unwrap_or_else(Instant::now))
    } else if polled_running >= n_tasks {
        (polled_running, polled_at.unwrap_or_else(Instant::now))
    } else {
        (sse_running.max(polled_running), Instant::now())
    };
    let elapsed = finished_at.saturating_duration_since(t0);
    let apps_cpu = cpu_time(apps_pid)
        .unwrap_or_default()
        .saturating_sub(cpu_start.0);
    let master_cpu = cpu_time(master_pid)
        .unwrap_or_default()
        .saturating_sub(cpu_start.1);
    let harness_cpu = cpu_time(std::process::id())
        .unwrap_or_default()
        .saturating_sub(cpu_start.2);
    reader.abort();
    create_task.abort();
    let (created, create_failures, create_last) = creates.snapshot();
    let create_time = create_last.map_or(Duration::ZERO, |l| l.saturating_duration_since(t0));
    let first_running = seen
        .lock()
        .ok()
        .and_then(|s| s.first)
        .map(|f| f.saturating_duration_since(t0));
    let on_agents: usize = agents
        .iter()
        .map(|a| a.tasks().values().filter(|s| *s == "TASK_RUNNING").count())
        .sum();
    // The authoritative count, once the launch phase is over.
    let (polled_running, polled_staged) =
        match tokio::time::timeout(Duration::from_secs(15), running_total(&client, &base)).await {
            Ok(Ok(v)) => (v.0, Some(v.1)),
            _ => (polled_running, None),
        };

    // API latency with everything in place.
    let mut list_latency = Vec::with_capacity(LIST_REQUESTS);
    let mut list_bytes = 0;
    let mut listed_tasks = 0;
    let list_end = Instant::now() + LIST_BUDGET;
    let url = format!("{base}/v2/apps?embed=apps.tasks");
    for i in 0..LIST_REQUESTS {
        if Instant::now() >= list_end {
            break;
        }
        let t = Instant::now();
        let left = list_end.saturating_duration_since(t) + Duration::from_secs(5);
        let body = match client.get(&url).timeout(left).send().await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        list_latency.push(t.elapsed());
        let Ok(body) = body else {
            break; // timed out: the sample above is a lower bound
        };
        if i == 0 {
            let v: Value = serde_json::from_slice(&body).context("/v2/apps JSON")?;
            list_bytes = body.len();
            listed_tasks = v["apps"].as_array().map_or(0, |a| {
                a.iter()
                    .map(|x| x["tasks"].as_array().map_or(0, Vec::len))
                    .sum()
            });
        }
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_apps_kib = rss_kib(apps_pid).context("apps RSS")?;
    let rss_master_kib = rss_kib(master_pid).unwrap_or(0);
    drop(agents);
    Ok(Measured {
        throughput: running as f64 / elapsed.as_secs_f64().max(1e-9),
        running,
        sse_running,
        polled_running,
        elapsed,
        create_time,
        created,
        create_failures,
        first_running,
        on_agents,
        polled_staged,
        register,
        list_latency,
        list_bytes,
        listed_tasks,
        rss_apps_kib,
        rss_master_kib,
        apps_cpu,
        master_cpu,
        harness_cpu,
    })
}

/// The app a benchmark user deploys: a small web server with one port.
fn app_definition(i: usize) -> Value {
    json!({
        "id": format!("/bench/app-{i:04}"),
        "cmd": "python3 -m http.server $PORT0",
        "cpus": APP_CPUS,
        "mem": APP_MEM,
        "instances": INSTANCES,
    })
}

/// `tasksRunning` and `tasksStaged` summed over `GET /v2/apps`.
async fn running_total(client: &reqwest::Client, base: &str) -> anyhow::Result<(usize, usize)> {
    let v: Value = client
        .get(format!("{base}/v2/apps"))
        .send()
        .await?
        .json()
        .await?;
    Ok((sum_of(&v, "tasksRunning"), sum_of(&v, "tasksStaged")))
}

fn sum_of(v: &Value, field: &str) -> usize {
    v["apps"].as_array().map_or(0, |apps| {
        apps.iter().filter_map(|a| a[field].as_u64()).sum::<u64>() as usize
    })
}

/// Reads the SSE stream and records each task's first TASK_RUNNING.
async fn read_events(resp: reqwest::Response, seen: Arc<Mutex<Seen>>) {
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if let Some(task) = running_task(&line)
                && let Ok(mut s) = seen.lock()
                && s.running.insert(task)
            {
                let now = Instant::now();
                s.first.get_or_insert(now);
                s.last = Some(now);
            }
        }
    }
}

/// The task id of an SSE `data:` line carrying a TASK_RUNNING status update.
fn running_task(line: &[u8]) -> Option<String> {
    let data = line.strip_prefix(b"data:")?;
    let v: Value = serde_json::from_slice(data).ok()?;
    if v["eventType"] != "status_update_event" || v["taskStatus"] != "TASK_RUNNING" {
        return None;
    }
    v["taskId"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_updates_are_read_from_sse_data_lines() {
        let line = br#"data: {"eventType":"status_update_event","taskStatus":"TASK_RUNNING","taskId":"a.1"}
"#;
        assert_eq!(running_task(line).as_deref(), Some("a.1"));
        let staging =
            br#"data: {"eventType":"status_update_event","taskStatus":"TASK_STAGING","taskId":"a.1"}"#;
        assert_eq!(running_task(staging), None);
        assert_eq!(running_task(b"event: status_update_event\n"), None);
    }

    #[test]
    fn running_tasks_are_summed_over_apps() {
        let v = json!({"apps": [{"tasksRunning": 3}, {"tasksRunning": 7}, {}]});
        assert_eq!(sum_of(&v, "tasksRunning"), 10);
        assert_eq!(sum_of(&json!({}), "tasksRunning"), 0);
    }
}
