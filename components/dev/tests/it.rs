//! End-to-end: a whole dev cluster from the real `capstan` binary, running seed 001's Redis
//! walkthrough against real Docker, and (module `router`) the router driven by the real DC/OS
//! CLI. Each cluster runs on its own loopback block (`--net`), so tests and a developer's own
//! `capstan dev up` never collide; the router tests share one cluster between them.

#[path = "it/catalog.rs"]
mod catalog;
#[path = "it/l4lb.rs"]
mod l4lb;
#[path = "it/router.rs"]
mod router;
#[path = "it/swarm.rs"]
mod swarm;
#[path = "it/ui.rs"]
mod ui;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use capstan_testkit::{capstan_bin, temp_dir, wait_until};
use serde_json::{Value, json};

/// One cluster at a time: clusters share the machine's CPUs and Docker engine, and the tests
/// are heavy enough without competing.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A dev cluster that is taken down (and its state purged) when dropped, unless it is
/// shared by a test module (then it stops when the test process exits, see [`Self::shared`]).
struct DevCluster {
    state_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    net: u8,
    /// What `capstan dev up` printed.
    up_stdout: String,
}

impl DevCluster {
    /// `slot` (0–3) tells the clusters of one test process apart (each test its own slot).
    fn up(masters: u8, agents: u8, slot: u8) -> anyhow::Result<DevCluster> {
        let temp = temp_dir()?;
        Self::start(
            temp.path().to_owned(),
            Some(temp),
            masters,
            agents,
            slot,
            &[],
        )
    }

    /// A cluster for every test of a module: never taken down by a test, it stops (and
    /// removes its task containers) once this test process is gone. Its state directory is
    /// `<tmp>/capstan-dev-shared-<slot>-<pid>`; those of earlier, finished runs are removed.
    fn shared(masters: u8, agents: u8, slot: u8) -> anyhow::Result<DevCluster> {
        let tmp = std::env::temp_dir();
        let prefix = format!("capstan-dev-shared-{slot}-");
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix(&prefix)
                .and_then(|p| p.parse::<i32>().ok())
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let pid = std::process::id();
        let dir = tmp.join(format!("{prefix}{pid}"));
        let exit_with = format!("--exit-with={pid}");
        Self::start(dir, None, masters, agents, slot, &[&exit_with])
    }

    fn start(
        state_dir: PathBuf,
        temp: Option<tempfile::TempDir>,
        masters: u8,
        agents: u8,
        slot: u8,
        extra: &[&str],
    ) -> anyhow::Result<DevCluster> {
        // A block per test process and slot; 127.0.0.0/8 is all loopback on Linux.
        let net = 100 + 4 * (std::process::id() % 35) as u8 + slot;
        let mut cluster = DevCluster {
            state_dir,
            _temp: temp,
            net,
            up_stdout: String::new(),
        };
        let mut args = vec![
            "up".to_owned(),
            "--masters".to_owned(),
            masters.to_string(),
            "--agents".to_owned(),
            agents.to_string(),
            "--net".to_owned(),
            net.to_string(),
            "--detach".to_owned(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cluster.capstan(&args)?;
        if !out.status.success() {
            bail!(
                "capstan dev up failed:\n{}\n{}",
                text(&out.stdout),
                text(&out.stderr) + &cluster.logs()
            );
        }
        cluster.up_stdout = text(&out.stdout);
        Ok(cluster)
    }

    fn capstan(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(capstan_bin()?)
            .arg("dev")
            .args(args)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .output()
            .context("running capstan dev")
    }

    fn master_ip(&self, i: u8) -> String {
        format!("127.{}.1.{i}", self.net)
    }

    fn status(&self) -> anyhow::Result<Value> {
        let out = self.capstan(&["status", "--json"])?;
        ensure!(
            out.status.success(),
            "capstan dev status failed: {}",
            text(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The tail of every daemon log, for failure messages.
    fn logs(&self) -> String {
        let mut all = String::new();
        let nodes = self.state_dir.join("nodes");
        for entry in std::fs::read_dir(&nodes).into_iter().flatten().flatten() {
            for log in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = log.path();
                if p.extension().is_some_and(|e| e == "log") {
                    all.push_str(&format!("\n--- {}\n{}", p.display(), tail(&p, 15)));
                }
            }
        }
        all
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if self._temp.is_some() {
            let _ = self.capstan(&["down", "--purge"]);
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `redis-cli` from the capstan/redis image on the host network.
fn redis_cli(host: &str, port: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            "--label",
            "capstan.test=dev-e2e",
            "capstan/redis",
            "redis-cli",
        ])
        .args(["-h", host, "-p", port])
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "redis-cli failed: {}",
        text(&out.stderr)
    );
    Ok(text(&out.stdout).trim().to_owned())
}

fn dig(server: &str, args: &[&str]) -> anyhow::Result<Vec<String>> {
    let out = Command::new("dig")
        .arg(format!("@{server}"))
        .args(["+short", "+time=1", "+tries=1"])
        .args(args)
        .output()?;
    Ok(text(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_001_redis_walkthrough_works_end_to_end() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = DevCluster::up(1, 2, 0)?;
    let status = cluster.status()?;
    assert_eq!(status["leaders"]["master"], "master-1", "{status:#}");
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);

    let m = cluster.master_ip(1);
    let http = capstan_http_client::client();

    // 1. The seed's HTTPie call: every value a JSON string.
    let resp = http
        .post(format!("http://{m}:8080/v1/apps/start"))
        .json(
            &json!({"id": "multidis", "instances": "2", "mem": "512", "cpus": "1",
                      "executor": "/var/lib/mesos/executors/docker", "cmd": "capstan/redis"}),
        )
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 204, "{}", resp.text().await?);

    // 2. /v1/endpoints: `multidis <port> <agent>:<port> <agent>:<port>`.
    let endpoints = wait_until(
        "two multidis endpoints",
        Duration::from_secs(60),
        async || {
            let body = http
                .get(format!("http://{m}:8080/v1/endpoints"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let line = body
                .lines()
                .find(|l| l.starts_with("multidis "))?
                .to_owned();
            let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            (fields.len() == 4).then_some(fields)
        },
    )
    .await
    .with_context(|| cluster.logs())?;
    let (host, port) = endpoints[2].rsplit_once(':').context("host:port")?;

    // 3. redis-cli against one instance.
    assert_eq!(redis_cli(host, port, &["SET", "x", "7"])?, "OK");
    assert_eq!(redis_cli(host, port, &["GET", "x"])?, "7");

    // 4. DNS: both instances by name, and their ports by SRV.
    let a = wait_until("multidis A records", Duration::from_secs(10), async || {
        dig(&m, &["multidis.marathon.mesos"])
            .ok()
            .filter(|ips| !ips.is_empty())
    })
    .await?;
    let agent_ips: Vec<&str> = endpoints[2..]
        .iter()
        .filter_map(|e| e.rsplit_once(':').map(|(h, _)| h))
        .collect();
    for ip in &agent_ips {
        assert!(a.iter().any(|x| x == ip), "A {a:?} lacks {ip}");
    }
    let srv = dig(&m, &["SRV", "_multidis._tcp.marathon.mesos"])?;
    assert_eq!(srv.len(), 2, "SRV {srv:?}");
    for e in &endpoints[2..] {
        let port = e.rsplit_once(':').unwrap().1;
        assert!(
            srv.iter()
                .any(|r| r.split_whitespace().nth(2) == Some(port)),
            "SRV {srv:?} lacks port {port}"
        );
    }

    // The same app through /v2/apps, as a Docker container in BRIDGE mode.
    let app = json!({
        "id": "/redis-bridge", "instances": 1, "cpus": 0.1, "mem": 64,
        "container": {"type": "DOCKER", "docker": {"image": "capstan/redis", "network": "BRIDGE",
                      "portMappings": [{"containerPort": 6379, "hostPort": 0, "protocol": "tcp"}]}}
    });
    let resp = http
        .post(format!("http://{m}:8080/v2/apps"))
        .json(&app)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await?);
    let task = wait_until(
        "the bridge task running",
        Duration::from_secs(60),
        async || {
            let v: Value = http
                .get(format!("http://{m}:8080/v2/apps/redis-bridge/tasks"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let t = v["tasks"].as_array()?.first()?.clone();
            (t["state"] == "TASK_RUNNING").then_some(t)
        },
    )
    .await
    .with_context(|| cluster.logs())?;
    let host = task["host"].as_str().context("task host")?;
    let port = task["ports"][0].as_u64().context("task port")?.to_string();
    assert_eq!(redis_cli(host, &port, &["PING"])?, "PONG");
    let a = wait_until(
        "redis-bridge A record",
        Duration::from_secs(10),
        async || {
            dig(&m, &["redis-bridge.marathon.mesos"])
                .ok()
                .filter(|ips| !ips.is_empty())
        },
    )
    .await?;
    assert!(a.iter().any(|ip| ip == host), "A {a:?} lacks {host}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leading_master_leaves_the_app_running_and_resolvable() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = DevCluster::up(3, 1, 1)?;
    let http = capstan_http_client::client();
    let status = cluster.status()?;
    let leader = status["leaders"]["master"]
        .as_str()
        .context("a master leads")?
        .to_owned();

    // Ask any master node's apps: a follower forwards to the leader.
    let m1 = cluster.master_ip(1);
    // Redis on host networking: the image listens on the offered $PORT0.
    let app = json!({"id": "/redis", "instances": 1, "cpus": 0.1, "mem": 64,
                     "portDefinitions": [{"port": 0}],
                     "container": {"type": "DOCKER", "docker": {"image": "capstan/redis"}}});
    let resp = http
        .post(format!("http://{m1}:8080/v2/apps"))
        .json(&app)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().await?);
    let running = async |ip: String| -> Option<String> {
        let v: Value = http
            .get(format!("http://{ip}:8080/v2/apps/redis/tasks"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let t = v["tasks"].as_array()?.first()?.clone();
        (t["state"] == "TASK_RUNNING").then(|| t["id"].as_str().unwrap_or_default().to_owned())
    };
    let task_id = wait_until("redis running", Duration::from_secs(60), async || {
        running(m1.clone()).await
    })
    .await
    .with_context(|| cluster.logs())?;

    let out = cluster.capstan(&["kill", &leader])?;
    ensure!(out.status.success(), "kill failed: {}", text(&out.stderr));
    let survivor = (1..=3)
        .map(|i| format!("master-{i}"))
        .find(|n| *n != leader)
        .unwrap();
    let survivor_ip = cluster.master_ip(survivor.trim_start_matches("master-").parse()?);

    // A new master leads, and the same task still runs and resolves.
    wait_until(
        "a new leading master",
        Duration::from_secs(30),
        async || {
            cluster
                .status()
                .ok()
                .and_then(|s| s["leaders"]["master"].as_str().map(str::to_owned))
                .filter(|l| *l != leader)
        },
    )
    .await
    .with_context(|| cluster.logs())?;
    let after = wait_until("redis still running", Duration::from_secs(30), async || {
        running(survivor_ip.clone()).await
    })
    .await
    .with_context(|| cluster.logs())?;
    assert_eq!(after, task_id, "the task was replaced instead of kept");
    let v: Value = http
        .get(format!("http://{survivor_ip}:8080/v2/apps/redis/tasks"))
        .send()
        .await?
        .json()
        .await?;
    let (host, port) = (&v["tasks"][0]["host"], &v["tasks"][0]["ports"][0]);
    let (host, port) = (
        host.as_str().context("host")?,
        port.as_u64().context("port")?,
    );
    assert_eq!(redis_cli(host, &port.to_string(), &["PING"])?, "PONG");
    let agent_ip = format!("127.{}.2.1", cluster.net);
    let a = wait_until(
        "redis A record on a surviving master",
        Duration::from_secs(20),
        async || {
            dig(&survivor_ip, &["redis.marathon.mesos"])
                .ok()
                .filter(|ips| ips.contains(&agent_ip))
        },
    )
    .await?;
    assert_eq!(a, [agent_ip]);
    Ok(())
}
