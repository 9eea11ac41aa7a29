//! swarm (the Docker Engine API front end) on a dev cluster, driven by this machine's real
//! docker CLI (`docker -H tcp://<first master>:2375`, unmodified) with the cluster token in
//! `HttpHeaders` of a temporary `DOCKER_CONFIG`: `version`, `info`, `run -d -p` of the offline
//! `capstan/http` image reached on its published agent port, `ps` with filters, `inspect`,
//! `logs` with both streams and `--tail`, `stop`, `rm -f`, and a container whose exit code
//! `wait` reads, and an attached `docker run` with its output and exit code. Nothing is pulled
//! from a registry.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use capstan_testkit::wait_until;
use serde_json::{Value, json};

use super::{DevCluster, ONE_AT_A_TIME, text};

/// The docker CLI against `host` with `config` as its `DOCKER_CONFIG`.
struct Docker<'a> {
    host: String,
    config: &'a Path,
}

impl Docker<'_> {
    fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("docker")
            .env("DOCKER_CONFIG", self.config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .args(["-H", &self.host])
            .args(args)
            .output()
            .context("running docker")
    }

    /// Runs and requires success; stdout, trimmed.
    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        ensure!(
            out.status.success(),
            "docker {args:?} failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        Ok(text(&out.stdout).trim().to_owned())
    }
}

async fn login(router: &str, password: &str) -> anyhow::Result<String> {
    let v: Value = reqwest::Client::new()
        .post(format!("{router}/acs/api/v1/auth/login"))
        .json(&json!({"uid": "admin", "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["token"].as_str().context("login token")?.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_cli_runs_inspects_logs_stops_and_removes_containers_on_the_cluster()
-> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = tokio::task::spawn_blocking(|| DevCluster::up(1, 2, 0)).await??;
    let status = cluster.status()?;
    let master = &status["nodes"][0];
    let swarm = master["daemons"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["name"] == "swarm")
        .with_context(|| format!("no swarm in capstan dev status: {status:#}"))?;
    ensure!(swarm["health"] == "healthy", "{swarm:#}");
    let endpoint = swarm["endpoint"].as_str().context("swarm endpoint")?;
    let host = endpoint.replace("http://", "tcp://");
    ensure!(host.ends_with(":2375"), "{host}");

    // No token: refused with the reason.
    let empty = tempfile::tempdir()?;
    let anonymous = Docker {
        host: host.clone(),
        config: empty.path(),
    };
    let out = anonymous.run(&["version"])?;
    ensure!(!out.status.success(), "version without a token succeeded");
    ensure!(
        text(&out.stderr).contains("authentication required"),
        "{}",
        text(&out.stderr)
    );

    // The token from the cluster's login, as HttpHeaders in config.json.
    let router = status["router"].as_str().context("router url")?;
    let password = status["admin"]["password"]
        .as_str()
        .context("admin password")?;
    let token = login(router, password).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("config.json"),
        json!({"HttpHeaders": {"Authorization": format!("token={token}")}}).to_string(),
    )?;
    let docker = Docker {
        host,
        config: dir.path(),
    };

    let version = docker.ok(&["version", "--format", "{{.Server.APIVersion}}"])?;
    ensure!(version == "1.51", "{version}");
    docker.ok(&["info"])?;
    // Both agents, once the master knows them.
    let info: Value = wait_until(
        "two agents in docker info",
        Duration::from_secs(30),
        async || {
            let out = docker.ok(&["info", "--format", "{{json .}}"]).ok()?;
            let v: Value = serde_json::from_str(&out).ok()?;
            (v["DriverStatus"][0] == json!(["Agents", "2"])).then_some(v)
        },
    )
    .await
    .with_context(|| cluster.logs())?;
    ensure!(info["Driver"] == "capstan", "{info:#}");
    ensure!(info["NCPU"].as_i64().unwrap_or(0) > 0, "{info:#}");

    // run -d -p: the CLI's create, wait (headers at once) and start.
    let id = docker
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "80",
            "-m",
            "64m",
            "--cpus",
            "0.2",
            "-e",
            "GREETING=hi",
            "--label",
            "app=web",
            "capstan/http",
        ])
        .with_context(|| cluster.logs())?;
    ensure!(
        id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    let ps = docker.ok(&["ps", "--format", "{{.ID}} {{.Names}} {{.Ports}}"])?;
    ensure!(ps.starts_with(&format!("{} web ", &id[..12])), "{ps}");
    let inspect: Value = serde_json::from_str(&docker.ok(&["inspect", "web"])?)?;
    let c = &inspect[0];
    ensure!(c["Id"] == id.as_str() && c["Name"] == "/web", "{c:#}");
    ensure!(c["State"]["Running"] == true, "{c:#}");
    ensure!(c["Config"]["Labels"]["app"] == "web", "{c:#}");
    ensure!(
        c["Config"]["Env"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("GREETING=hi"))),
        "{c:#}"
    );
    ensure!(c["HostConfig"]["Memory"] == 64 * 1024 * 1024, "{c:#}");
    ensure!(c["HostConfig"]["NanoCpus"] == 200_000_000, "{c:#}");
    let binding = &c["NetworkSettings"]["Ports"]["80/tcp"][0];
    let (agent, port) = (
        binding["HostIp"].as_str().context("HostIp")?,
        binding["HostPort"].as_str().context("HostPort")?,
    );
    ensure!(ps.contains(&format!("{agent}:{port}->80/tcp")), "{ps}");
    let http = reqwest::Client::new();
    let url = format!("http://{agent}:{port}/");
    wait_until(
        "the published port answers",
        Duration::from_secs(30),
        async || {
            let r = http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await?;

    // swarm killed (SIGKILL) and started again by the supervisor: the container keeps its id
    // and its running task (records in coord, the same framework re-subscribed).
    let pid = swarm["pid"].as_i64().context("swarm pid")? as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_until(
        "swarm back after a kill",
        Duration::from_secs(60),
        async || {
            let s = cluster.status().ok()?;
            let d = s["nodes"][0]["daemons"]
                .as_array()?
                .iter()
                .find(|d| d["name"] == "swarm")?
                .clone();
            (d["pid"] != json!(pid) && d["health"] == "healthy").then_some(())
        },
    )
    .await
    .with_context(|| cluster.logs())?;
    let again = docker.ok(&["inspect", "--format", "{{.Id}} {{.State.Status}}", "web"])?;
    ensure!(again == format!("{id} running"), "{again}");
    ensure!(
        docker.ok(&["ps", "-q", "--filter", "name=web"])? == id[..12],
        "web not listed after the swarm restart"
    );

    // Filters by label, name and status.
    ensure!(
        docker.ok(&["ps", "-q", "--filter", "label=app=web"])? == id[..12],
        "label filter"
    );
    ensure!(
        docker
            .ok(&["ps", "-q", "--filter", "name=nomatch"])?
            .is_empty(),
        "name filter"
    );
    ensure!(
        docker
            .ok(&["ps", "-q", "--filter", "status=exited"])?
            .is_empty(),
        "status filter"
    );

    // Logs: both streams, demultiplexed by the CLI, and --tail.
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "capstan/busybox",
        "sh",
        "-c",
        "echo out-1; echo out-2; echo err-1 >&2; exec sleep 600",
    ])?;
    let (stdout, stderr) = wait_until(
        "both streams in docker logs",
        Duration::from_secs(30),
        async || {
            let out = docker.run(&["logs", "talker"]).ok()?;
            let (o, e) = (text(&out.stdout), text(&out.stderr));
            (o.contains("out-2") && e.contains("err-1")).then_some((o, e))
        },
    )
    .await
    .with_context(|| cluster.logs())?;
    ensure!(stdout == "out-1\nout-2\n", "{stdout:?}");
    ensure!(stderr == "err-1\n", "{stderr:?}");
    let out = docker.run(&["logs", "--tail", "1", "talker"])?;
    ensure!(text(&out.stdout) == "out-2\n", "{:?}", text(&out.stdout));

    // stop: exited, no longer listed without -a.
    docker.ok(&["stop", "-t", "2", "web"])?;
    ensure!(
        docker.ok(&["ps", "-q", "--filter", "name=web"])?.is_empty(),
        "web still running"
    );
    let state = docker.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=web",
        "--format",
        "{{.Status}}",
    ])?;
    ensure!(state.starts_with("Exited ("), "{state}");

    // start, restart and kill keep the container and its id; each run is a new task.
    docker.ok(&["start", "web"])?;
    ensure!(
        docker.ok(&["ps", "-q", "--filter", "name=web"])? == id[..12],
        "web not running after start"
    );
    docker.ok(&["restart", "-t", "1", "web"])?;
    let after = docker.ok(&["inspect", "--format", "{{.Id}} {{.State.Status}}", "web"])?;
    ensure!(after == format!("{id} running"), "{after}");
    docker.ok(&["kill", "web"])?;
    let killed = docker.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        "web",
    ])?;
    ensure!(killed.starts_with("exited "), "{killed}");

    // logs -f follows the running container and ends when it is removed.
    let mut follow = Command::new("docker")
        .env("DOCKER_CONFIG", docker.config)
        .env_remove("DOCKER_HOST")
        .args(["-H", &docker.host, "logs", "-f", "talker"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;

    // rm -f of a running container.
    docker.ok(&["rm", "-f", "talker"])?;
    ensure!(
        docker
            .ok(&["ps", "-aq", "--filter", "name=talker"])?
            .is_empty(),
        "talker kept"
    );
    let ended = wait_until("logs -f ends", Duration::from_secs(20), async || {
        follow.try_wait().ok().flatten()
    })
    .await;
    if ended.is_err() {
        let _ = follow.kill();
        let _ = follow.wait();
    }
    let ended = ended?;
    let mut followed = String::new();
    std::io::Read::read_to_string(&mut follow.stdout.take().context("stdout")?, &mut followed)?;
    ensure!(
        ended.success() && followed == "out-1\nout-2\n",
        "{ended:?} {followed:?}"
    );

    // An exit code, read by wait.
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "exit3",
        "capstan/busybox",
        "sh",
        "-c",
        "exit 3",
    ])?;
    let code = docker.ok(&["wait", "exit3"])?;
    ensure!(code == "3", "{code}");
    let exited = docker.ok(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}} {{.State.Status}}",
        "exit3",
    ])?;
    ensure!(exited == "3 exited", "{exited}");

    // Attached run: attach before start, both streams, then the exit code.
    let out = docker.run(&[
        "run",
        "--name",
        "hello",
        "capstan/busybox",
        "sh",
        "-c",
        "echo hello-out; echo hello-err >&2; exit 7",
    ])?;
    ensure!(
        out.status.code() == Some(7),
        "attached run: {:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    ensure!(
        text(&out.stdout) == "hello-out\n",
        "{:?}",
        text(&out.stdout)
    );
    ensure!(
        text(&out.stderr) == "hello-err\n",
        "{:?}",
        text(&out.stderr)
    );

    // Unsupported endpoints answer with their name, never hang.
    let out = docker.run(&["pause", "exit3"])?;
    ensure!(
        text(&out.stderr).contains("not supported by capstan"),
        "{}",
        text(&out.stderr)
    );

    docker.ok(&["rm", "-f", "web", "exit3", "hello"])?;
    ensure!(docker.ok(&["ps", "-aq"])?.is_empty(), "containers left");
    Ok(())
}
