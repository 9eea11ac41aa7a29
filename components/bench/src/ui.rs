//! The web console on a big cluster, in a real browser: `capstan-master` and `capstan apps`
//! (in-memory store) in child processes, simulated agents ([`SimAgent`], the real agent
//! protocol) in the harness running 1,000 apps × 10 instances, and `capstan daemon router`
//! (the `capstan` binary next to this one, with its built-in console) in front of them with
//! a single-member coord for its identity store. `components/ui/e2e/bench.mjs` then drives
//! Debian's `chromium` (headless, `playwright-core`) through the router exactly as a user's
//! browser: cold loads of the services page (navigation start → first app row with data),
//! and one failed task per watched app (the harness ends it on its simulated agent; the time
//! runs from there to the row's change in the DOM). The shipped size is the embedded
//! assets' gzip forms, as the router sends them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use capstan_testkit::sim_agent::{SimAgent, SimAgentConfig};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::child::{have, spawn_self};
use crate::report::{Row, Section};
use crate::router::daemon;
use crate::stats::{ms, percentile};

const INSTANCES: usize = 10;
/// Apps per group (`/g00/app-0000` …): the services page shows a tree.
const PER_GROUP: usize = 100;
/// Cold loads of the services page.
const LOADS: usize = 5;
/// Apps whose task is failed, one at a time (the first rows of the page).
const WATCHED: usize = 5;
const GOAL_RENDER: Duration = Duration::from_secs(1);
const GOAL_EVENT: Duration = Duration::from_millis(500);
const GOAL_ASSET_BYTES: usize = 300 * 1024;
const CHROMIUM: &str = "/usr/bin/chromium";

fn app_id(i: usize) -> String {
    format!("/g{:02}/app-{i:04}", i / PER_GROUP)
}

/// The e2e directory (bench.mjs and its node_modules) of this source tree.
fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ui/e2e")
}

/// Why the browser cannot run, if it cannot.
fn browser_unavailable(e2e: &Path) -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    if !have("node") {
        return Some("node is not installed".into());
    }
    if !e2e.join("node_modules/playwright-core").is_dir() {
        return Some(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            e2e.display()
        ));
    }
    None
}

/// The bytes the console costs a browser: every embedded file in the form the router sends
/// to a client that accepts gzip.
fn shipped_bytes() -> (usize, usize, usize) {
    let assets = capstan_ui::assets();
    let gz = assets
        .iter()
        .map(|a| a.gzip.as_ref().map_or(a.body.len(), |(g, _)| g.len()))
        .sum();
    let raw = assets.iter().map(|a| a.body.len()).sum();
    (gz, raw, assets.len())
}

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    let n_apps = if quick { 100 } else { 1_000 };
    let n_tasks = n_apps * INSTANCES;
    let mut section = Section {
        title: "ui: the web console in headless Chromium".into(),
        ..Default::default()
    };
    let (gz, raw, files) = shipped_bytes();
    let mut r = Row::new(format!(
        "shipped console assets, gzip as served ({files} files, {:.0} KiB uncompressed)",
        raw as f64 / 1024.0
    ));
    r.capstan = format!("{:.1} KiB", gz as f64 / 1024.0);
    r.peer = "— (anchor: DC/OS 1.x's UI bundle was several MiB)".into();
    r.goal = "≤ 300 KiB".into();
    r.met = Some(gz <= GOAL_ASSET_BYTES);
    section.rows.push(r);

    // `CAPSTAN_BENCH_BIN`: another `capstan` build than the one next to this binary.
    let bin = match std::env::var_os("CAPSTAN_BENCH_BIN") {
        Some(b) => PathBuf::from(b),
        None => daemon::binary()?,
    };
    if let Some(why) = daemon::unavailable(&bin) {
        section
            .notes
            .push(format!("The browser rows did not run: {why}."));
        return Ok(section);
    }
    let e2e = e2e_dir();
    if let Some(why) = browser_unavailable(&e2e) {
        section
            .notes
            .push(format!("The browser rows did not run: {why}."));
        return Ok(section);
    }
    let m = measure(&bin, &e2e, n_apps).await?;

    let p50 = percentile(&m.renders, 50.0);
    let max = m.renders.iter().max().copied();
    let mut r = Row::new(format!(
        "services page, cold load to the first row with data ({n_apps} apps, {} tasks), \
         p50 / max of {}",
        m.running,
        m.renders.len()
    ));
    r.capstan = format!(
        "{} / {}",
        p50.map_or_else(|| "—".into(), ms),
        max.map_or_else(|| "—".into(), ms)
    );
    r.goal = "≤ 1 s".into();
    r.met = max.map(|d| d <= GOAL_RENDER && m.running >= n_tasks);
    section.rows.push(r);

    let p50 = percentile(&m.events, 50.0);
    let max = m.events.iter().max().copied();
    let mut r = Row::new(format!(
        "a task fails → its app's row changes on the open services page, p50 / max of {}",
        m.events.len()
    ));
    r.capstan = format!(
        "{} / {}",
        p50.map_or_else(|| "—".into(), ms),
        max.map_or_else(|| "—".into(), ms)
    );
    r.goal = "≤ 500 ms".into();
    r.met = max.map(|d| d <= GOAL_EVENT);
    section.rows.push(r);

    section.notes = vec![
        format!(
            "Setup: `capstan-master` and `capstan apps` (in-memory store, default timers) in \
             child processes; {n_apps} simulated agents in the harness; {n_apps} apps in {} \
             groups × {INSTANCES} instances ({} of {n_tasks} tasks running, reached in {:.1} \
             s); `capstan daemon router` with its built-in console and a one-member coord; \
             Debian's Chromium headless ({}), 1280×800, driven by playwright-core. Nothing is \
             pinned: the 2 cores are shared by the browser, the router, apps, master and the \
             agents.",
            n_apps.div_ceil(PER_GROUP),
            m.running,
            m.launch.as_secs_f64(),
            m.chromium,
        ),
        format!(
            "Cold load: a new tab with the HTTP cache disabled and a session cookie, \
             `#/services` from navigation start until a MutationObserver sees the first app \
             row (the page fetches `/v2/apps` with counts, the queue and the deployments \
             through the router); the browser received {:.1} KiB for the console's own files \
             on the last load. Samples: {}.",
            m.browser_asset_bytes as f64 / 1024.0,
            m.renders
                .iter()
                .map(|d| ms(*d))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "Event: on the open page, the harness ends one running task of each of the first \
             {WATCHED} apps with exit code 1 on its simulated agent (apps' backoff keeps it \
             down), and the time runs from that call (wall clock) until the row's status or \
             instance count changes in the DOM: agent → master → apps → `/v2/events` → \
             router → browser → the page's refresh. Samples: {}.",
            m.events
                .iter()
                .map(|d| ms(*d))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    if let Ok(d) = std::env::var("CAPSTAN_BENCH_UI_DIR") {
        section.notes.push(format!(
            "The router served the console from {d} (`CAPSTAN_BENCH_UI_DIR`), not the files \
             built into `capstan`, uncompressed."
        ));
    }
    Ok(section)
}

struct Measured {
    launch: Duration,
    running: usize,
    renders: Vec<Duration>,
    events: Vec<Duration>,
    browser_asset_bytes: usize,
    chromium: String,
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

async fn measure(bin: &Path, e2e: &Path, n_apps: usize) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let d = dir.path();
    let coord = daemon::start_coord(d, 0).await?;
    let ca = capstan_install::pki::Ca::generate("bench", "bench").context("making a CA")?;
    daemon::seed(&coord.addr, &ca.0.cert_pem).await?;
    let master = spawn_self("master", None).await?;
    let apps = spawn_self(&format!("apps:{}", master.addr), None).await?;
    let base = format!("http://{}", apps.addr);
    let client = capstan_http_client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()?;

    let mut agents = Vec::with_capacity(n_apps);
    for i in 0..n_apps {
        let mut cfg = SimAgentConfig::new(format!("http://{}", master.addr), format!("sim-{i:04}"));
        cfg.update_retry = Duration::from_secs(30);
        agents.push(SimAgent::start_new(cfg));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while agents.iter().any(|a| !a.connected()) {
        if Instant::now() > deadline {
            bail!("the simulated agents did not all register in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

    let t0 = Instant::now();
    futures::stream::iter(0..n_apps)
        .for_each_concurrent(32, |i| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                // A failed task stays down for the backoff: the change it makes stays visible.
                let body = json!({"id": app_id(i), "cmd": "sleep 100000", "cpus": 0.1,
                    "mem": 32, "instances": INSTANCES, "backoffSeconds": 600,
                    "maxLaunchDelaySeconds": 600});
                if let Err(e) = client
                    .post(format!("{base}/v2/apps"))
                    .json(&body)
                    .send()
                    .await
                {
                    tracing::warn!(error = %e, "POST /v2/apps failed");
                }
            }
        })
        .await;
    let n_tasks = n_apps * INSTANCES;
    let deadline = t0 + Duration::from_secs(180);
    let mut running = 0;
    while running < n_tasks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(r) = client.get(format!("{base}/v2/apps")).send().await
            && let Ok(v) = r.json::<Value>().await
        {
            running = v["apps"].as_array().map_or(0, |a| {
                a.iter()
                    .map(|x| x["tasksRunning"].as_u64().unwrap_or(0) as usize)
                    .sum()
            });
        }
    }
    let launch = t0.elapsed();

    let port = capstan_testkit::free_port()?;
    let router = start_router(bin, d, port, &coord.addr, &master.addr, &apps.addr).await?;
    let url = format!("http://127.0.0.1:{port}");
    // The first apps in the page's order with a running task (on a loaded machine the launch
    // may not have finished).
    let mut watched = Vec::new();
    for i in 0..n_apps {
        if watched.len() == WATCHED {
            break;
        }
        if task_of(&client, &base, &app_id(i)).await.is_ok() {
            watched.push(app_id(i));
        }
    }
    let chromium = std::process::Command::new(CHROMIUM)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();

    let mut child = tokio::process::Command::new("node")
        .arg("bench.mjs")
        .current_dir(e2e)
        .env("CAPSTAN_URL", &url)
        .env("CAPSTAN_USER", daemon::ADMIN_UID)
        .env("CAPSTAN_PASSWORD", daemon::ADMIN_PASSWORD)
        .env("UI_LOADS", LOADS.to_string())
        .env("UI_WATCH", watched.join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("running node bench.mjs")?;
    let mut stdin = child.stdin.take().context("node's stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("node's stdout")?).lines();
    let (mut renders, mut events) = (Vec::new(), Vec::new());
    let mut browser_asset_bytes = 0;
    let result: anyhow::Result<()> = async {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(180), lines.next_line())
                .await
                .context("bench.mjs said nothing for 180 s")??
                .context("bench.mjs exited without DONE")?;
            let mut words = line.split_whitespace();
            match words.next() {
                Some("RENDER") => {
                    let v: f64 = words.next().unwrap_or("").parse().context("RENDER ms")?;
                    renders.push(Duration::from_secs_f64(v / 1000.0));
                }
                Some("WATCH") => {
                    let id = words.next().context("WATCH id")?;
                    let task = task_of(&client, &base, id).await?;
                    let agent = agents
                        .iter()
                        .find(|a| a.tasks().get(&task).is_some_and(|s| s == "TASK_RUNNING"))
                        .with_context(|| format!("no simulated agent runs {task}"))?;
                    let at = epoch_ms();
                    agent.finish_task(&task, 1);
                    stdin
                        .write_all(format!("KILLED {at:.1}\n").as_bytes())
                        .await?;
                    stdin.flush().await?;
                }
                Some("SEEN") => {
                    let v: f64 = words.next().unwrap_or("").parse().context("SEEN ms")?;
                    events.push(Duration::from_secs_f64(v.max(0.0) / 1000.0));
                }
                Some("DONE") => {
                    browser_asset_bytes = words.next().unwrap_or("0").parse().unwrap_or(0);
                    return Ok(());
                }
                Some("FAIL") => bail!(
                    "bench.mjs: {line} (after {} loads, {} changes; {} of {} tasks running)",
                    renders.len(),
                    events.len(),
                    running,
                    n_apps * INSTANCES
                ),
                _ => tracing::warn!(%line, "bench.mjs said something else"),
            }
        }
    }
    .await;
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    drop(router);
    drop(agents);
    drop(apps);
    drop(master);
    drop(coord);
    result?;
    Ok(Measured {
        launch,
        running,
        renders,
        events,
        browser_asset_bytes,
        chromium,
    })
}

/// One running task of app `id`, from apps' API.
async fn task_of(client: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<String> {
    let v: Value = client
        .get(format!("{base}/v2/apps{id}/tasks"))
        .send()
        .await?
        .json()
        .await?;
    v["tasks"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|t| t["state"] == "TASK_RUNNING")
                .and_then(|t| t["id"].as_str())
        })
        .map(str::to_owned)
        .with_context(|| format!("{id} has no running task: {v}"))
}

/// `capstan daemon router` on loopback in front of this master and apps (plain HTTP, the
/// built-in console); ready when the open `/dcos-metadata/dcos-version.json` answers.
async fn start_router(
    bin: &Path,
    dir: &Path,
    port: u16,
    coord: &str,
    master: &str,
    apps: &str,
) -> anyhow::Result<tokio::process::Child> {
    let conf = dir.join("router.yaml");
    // For iterating on the console without rebuilding `capstan`: its files from a directory.
    let ui_dir = std::env::var("CAPSTAN_BENCH_UI_DIR")
        .map(|d| format!("  ui_dir: {d}\n"))
        .unwrap_or_default();
    std::fs::write(
        &conf,
        format!(
            "log:\n  level: warn\n  format: text\nrouter:\n  http_listen: 127.0.0.1:{port}\n  \
             public_ip: 127.0.0.1\n  coord_endpoints: [\"{coord}\"]\n  masters: [\"{master}\"]\n  \
             apps: [\"{apps}\"]\n  dns_http: 127.0.0.1:9\n{ui_dir}"
        ),
    )?;
    let log = dir.join("router.log");
    let mut child = tokio::process::Command::new(bin)
        .args(["daemon", "router", "--config"])
        .arg(&conf)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting the router")?;
    let client = capstan_http_client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/dcos-metadata/dcos-version.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the router exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("the router did not answer {url} in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
