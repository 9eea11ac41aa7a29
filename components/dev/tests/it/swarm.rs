//! swarm (the Docker Engine API front end) on a dev cluster, driven by this machine's real
//! docker CLI (`docker -H tcp://<first master>:2375`, unmodified) with the cluster token in
//! `HttpHeaders` of a temporary `DOCKER_CONFIG`: `version`, `info`, `run -d -p` of the offline
//! `capstan/http` image reached on its published agent port, `ps` with filters, `inspect`,
//! `logs` with both streams and `--tail`, `exec` (attached with its exit code, and `-d`),
//! `exec -i` with piped stdin, `top`, `stats --no-stream`, `stop`, `rm -f`, named volumes
//! (`volume create/ls/inspect/rm`, placed by their first container), a container whose exit
//! code `wait` reads,
//! and an attached `docker run` with its output and exit code. Nothing is pulled from a
//! registry.

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

    /// Runs with `input` as its stdin (closed at the end, as a pipe does).
    fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> anyhow::Result<Output> {
        use std::io::Write as _;
        let mut child = Command::new("docker")
            .env("DOCKER_CONFIG", self.config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .args(["-H", &self.host])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running docker")?;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(input)?;
        drop(stdin);
        child.wait_with_output().context("waiting for docker")
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
    let v: Value = capstan_http_client::client()
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
    let http = capstan_http_client::client();
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

    // exec through the agent that runs the task: both streams and the exit code (exec
    // create, the hijacked start, exec inspect), then -d, whose effect a second exec reads.
    let out = docker.run(&[
        "exec",
        "talker",
        "sh",
        "-c",
        "echo exec-out; echo exec-err >&2; exit 5",
    ])?;
    ensure!(
        out.status.code() == Some(5)
            && text(&out.stdout) == "exec-out\n"
            && text(&out.stderr) == "exec-err\n",
        "docker exec: {:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    docker.ok(&[
        "exec",
        "-d",
        "talker",
        "sh",
        "-c",
        "echo marked > /tmp/marker",
    ])?;
    wait_until(
        "the detached exec ran",
        Duration::from_secs(20),
        async || {
            let out = docker.run(&["exec", "talker", "cat", "/tmp/marker"]).ok()?;
            (text(&out.stdout) == "marked\n").then_some(())
        },
    )
    .await?;
    // exec -i: the piped input is the command's stdin (hijacked through swarm and the
    // agent), its end closes that stdin, and the exit code still comes back.
    let out = docker.run_with_stdin(&["exec", "-i", "talker", "cat"], b"hi\n")?;
    ensure!(
        out.status.success() && text(&out.stdout) == "hi\n",
        "echo hi | docker exec -i: {:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = docker.run_with_stdin(
        &["exec", "-i", "talker", "sh", "-c", "wc -l; exit 6"],
        b"a\nb\nc\n",
    )?;
    ensure!(
        out.status.code() == Some(6) && text(&out.stdout).trim() == "3",
        "exec -i with an exit code: {:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    // run -i: the container is created with an open stdin (StdinOnce), the attach before
    // start carries the piped input to it through the agent, its end closes cat's stdin;
    // the output and the exit code come back, and --rm removes the container.
    let out = docker.run_with_stdin(&["run", "-i", "--rm", "capstan/busybox", "cat"], b"hi\n")?;
    ensure!(
        out.status.success() && text(&out.stdout) == "hi\n",
        "echo hi | docker run -i --rm cat: {:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = docker.run_with_stdin(
        &[
            "run",
            "-i",
            "--name",
            "counter",
            "capstan/busybox",
            "sh",
            "-c",
            "wc -l; exit 4",
        ],
        b"a\nb\n",
    )?;
    ensure!(
        out.status.code() == Some(4) && text(&out.stdout).trim() == "2",
        "docker run -i with an exit code: {:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let cfg = docker.ok(&[
        "inspect",
        "-f",
        "{{.Config.OpenStdin}} {{.Config.StdinOnce}} {{.Config.AttachStdin}}",
        "counter",
    ])?;
    ensure!(cfg.trim() == "true true true", "{cfg}");
    docker.ok(&["rm", "counter"])?;
    // top: the container's processes; stats --no-stream: one sample with its memory limit.
    let top = docker.ok(&["top", "talker"])?;
    ensure!(top.contains("PID") && top.contains("sleep 600"), "{top}");
    let stats = docker.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
        "talker",
    ])?;
    ensure!(
        stats.starts_with("talker ") && stats.contains(" / "),
        "{stats}"
    );
    // pause freezes the container on its agent; ps and inspect say so; unpause thaws it.
    docker.ok(&["pause", "talker"])?;
    let paused = docker.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.Paused}}",
        "talker",
    ])?;
    ensure!(paused == "paused true", "{paused}");
    let listed = docker.ok(&[
        "ps",
        "--filter",
        "status=paused",
        "--format",
        "{{.Names}} {{.Status}}",
    ])?;
    ensure!(
        listed.starts_with("talker Up ") && listed.ends_with("(Paused)"),
        "{listed}"
    );
    let again = docker.run(&["pause", "talker"])?;
    ensure!(
        !again.status.success(),
        "pausing a paused container must fail"
    );
    docker.ok(&["unpause", "talker"])?;
    let thawed = docker.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.Paused}}",
        "talker",
    ])?;
    ensure!(thawed == "running false", "{thawed}");
    ensure!(
        docker.ok(&["exec", "talker", "true"]).is_ok(),
        "talker answers exec after unpause"
    );

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
    // exec needs a running container: a clear 409 from swarm.
    let out = docker.run(&["exec", "exit3", "true"])?;
    ensure!(
        !out.status.success() && text(&out.stderr).contains("is not running"),
        "{}",
        text(&out.stderr)
    );

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

    // Volumes: a host path outside the container policy is refused at create with the
    // reason; an anonymous volume is a directory of the task's sandbox, mounted and writable.
    let out = docker.run(&[
        "run",
        "-d",
        "--name",
        "bound",
        "-v",
        "/etc:/host-etc:ro",
        "capstan/busybox",
        "true",
    ])?;
    ensure!(
        !out.status.success() && text(&out.stderr).contains("allowed_host_paths"),
        "a refused bind: {:?}\n{}",
        out.status,
        text(&out.stderr)
    );
    let out = docker.run(&[
        "run",
        "--name",
        "anon",
        "-v",
        "/scratch",
        "capstan/busybox",
        "sh",
        "-c",
        "echo kept > /scratch/f && cat /scratch/f && grep -q ' /scratch ' /proc/mounts",
    ])?;
    ensure!(
        out.status.success() && text(&out.stdout) == "kept\n",
        "an anonymous volume: {:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let mounts = docker.ok(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Type}} {{.Destination}}{{end}}",
        "anon",
    ])?;
    ensure!(mounts == "volume /scratch", "{mounts}");

    // Unsupported endpoints answer with their name, never hang.
    let out = docker.run(&["update", "--cpu-shares", "20", "exit3"])?;
    ensure!(
        text(&out.stderr).contains("not supported by capstan"),
        "{}",
        text(&out.stderr)
    );

    docker.ok(&["rm", "-f", "web", "exit3", "hello", "anon"])?;
    ensure!(docker.ok(&["ps", "-aq"])?.is_empty(), "containers left");
    Ok(())
}

/// Now, in Unix seconds.
fn capstan_testkit_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// swarm's `tcp://` address and a `DOCKER_CONFIG` directory whose `config.json` carries the
/// cluster token in `HttpHeaders` (the docker CLI, the SDK and compose all send it).
async fn swarm_access(cluster: &DevCluster) -> anyhow::Result<(String, tempfile::TempDir)> {
    let status = cluster.status()?;
    let swarm = status["nodes"][0]["daemons"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["name"] == "swarm")
        .with_context(|| format!("no swarm in capstan dev status: {status:#}"))?;
    ensure!(swarm["health"] == "healthy", "{swarm:#}");
    let host = swarm["endpoint"]
        .as_str()
        .context("swarm endpoint")?
        .replace("http://", "tcp://");
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
    Ok((host, dir))
}

/// Runs `program args` against swarm (`DOCKER_HOST`, `DOCKER_CONFIG`) in `cwd`, with a
/// deadline; stdout and stderr, or an error with both when it failed.
async fn client(
    program: &Path,
    args: &[&str],
    host: &str,
    config: &Path,
    cwd: &Path,
) -> anyhow::Result<(String, String)> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env("DOCKER_HOST", host)
        .env("DOCKER_CONFIG", config)
        .env("HOME", config)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("COMPOSE_API_VERSION")
        .env_remove("COMPOSE_PROJECT_NAME")
        .env_remove("COMPOSE_FILE")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .with_context(|| format!("{} {args:?} did not finish", program.display()))??;
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    ensure!(
        out.status.success(),
        "{} {args:?} failed ({}):\nstdout:\n{o}\nstderr:\n{e}",
        program.display(),
        out.status
    );
    Ok((o, e))
}

/// What the SDK script does, unmodified docker SDK 7.1 calls only; it prints `ok` at the end.
const SDK_SCRIPT: &str = r#"
import sys, time
import docker

c = docker.from_env(timeout=120)
assert c.version()["ApiVersion"] == "1.51", c.version()
assert c.ping()

# run(detach=True) with labels, environment, a published port and a restart policy.
web = c.containers.run(
    "capstan/http", detach=True, name="sdk-web", labels={"via": "sdk"},
    environment={"GREETING": "hi"}, ports={"80/tcp": None}, mem_limit="64m",
    restart_policy={"Name": "on-failure", "MaximumRetryCount": 2},
)
talker = c.containers.run(
    "capstan/busybox", ["sh", "-c", "echo sdk-out; echo sdk-err >&2; exec sleep 600"],
    detach=True, name="sdk-talker", labels={"via": "sdk"},
)
names = sorted(x.name for x in c.containers.list(filters={"label": "via=sdk"}))
assert names == ["sdk-talker", "sdk-web"], names
web.reload()
assert web.status == "running", web.status
assert web.labels["via"] == "sdk"
assert "GREETING=hi" in web.attrs["Config"]["Env"]
assert web.attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
binding = web.ports["80/tcp"][0]
assert int(binding["HostPort"]) > 0, web.ports
assert web.image.id.startswith("sha256:")

deadline = time.time() + 30
while True:
    logs = talker.logs()
    if b"sdk-out" in logs and b"sdk-err" in logs:
        break
    assert time.time() < deadline, logs
    time.sleep(0.2)
assert talker.logs(stderr=False) == b"sdk-out\n", talker.logs(stderr=False)

# exec_run: exec create, start (hijacked) and inspect, on the agent that runs the task.
code, output = talker.exec_run(["sh", "-c", "echo exec-out; exit 4"])
assert (code, output) == (4, b"exec-out\n"), (code, output)

# exec_run with stdin on the raw socket: what is sent is cat's input, the half-close ends it.
import socket as pysocket
from docker.utils.socket import frames_iter
sock = talker.exec_run(["cat"], stdin=True, socket=True).output
sock._sock.sendall(b"sdk-in\n")
sock._sock.shutdown(pysocket.SHUT_WR)
got = b"".join(data for stream, data in frames_iter(sock, tty=False) if stream == 1)
assert got == b"sdk-in\n", got
sock.close()

# run(detach=False): start, then the output through logs, then wait.
out = c.containers.run("capstan/busybox", ["sh", "-c", "echo attached-out"], name="sdk-once")
assert out == b"attached-out\n", out

# Its events, decoded by the SDK: the history, ended by until.
actions = [e["Action"] for e in c.events(
    since=0, until=int(time.time()) + 1, decode=True, filters={"container": "sdk-once"})]
assert actions[:1] == ["create"] and "start" in actions and "die" in actions, actions

# A user network: create, list, inspect, remove.
net = c.networks.create("sdknet", labels={"via": "sdk"})
assert [n.name for n in c.networks.list(names=["sdknet"])] == ["sdknet"]
assert c.networks.get("sdknet").attrs["Labels"]["via"] == "sdk"
net.remove()
assert c.networks.list(names=["sdknet"]) == []

# stop, remove.
web.stop(timeout=2)
web.reload()
assert web.status == "exited", web.status
for x in (web, talker, c.containers.get("sdk-once")):
    x.remove(force=True)
assert c.containers.list(all=True, filters={"label": "via=sdk"}) == []
print("ok")
"#;

/// A two-service project of offline images, compose file format 3.8 (API 1.38 paths).
const COMPOSE_FILE: &str = r#"version: "3.8"
services:
  web:
    image: capstan/http
    ports: ["80"]
    labels:
      tier: front
    environment:
      GREETING: hi
    restart: unless-stopped
  cache:
    image: capstan/redis
    volumes: ["data:/data"]
volumes:
  data: {}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_and_compose_run_containers_on_the_cluster() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let clients = capstan_testkit::docker_clients().await?;
    let cluster = tokio::task::spawn_blocking(|| DevCluster::up(1, 2, 0)).await??;
    let (host, config) = swarm_access(&cluster).await?;
    let work = tempfile::tempdir()?;
    let docker_cli = Docker {
        host: host.clone(),
        config: config.path(),
    };

    // The docker SDK, unmodified.
    std::fs::write(work.path().join("sdk_flow.py"), SDK_SCRIPT)?;
    let (out, _) = client(
        &clients.sdk_python,
        &["sdk_flow.py"],
        &host,
        config.path(),
        work.path(),
    )
    .await
    .with_context(|| cluster.logs())?;
    ensure!(out.trim_end().ends_with("ok"), "{out}");

    // Placement by classic Swarm constraints: one container pinned to each agent.
    let info: Value = serde_json::from_str(&docker_cli.ok(&["info", "--format", "{{json .}}"])?)?;
    let agents: Vec<String> = info["DriverStatus"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p[0].as_str())
        .filter(|k| k.starts_with(' ') && !k.trim_start().starts_with('└'))
        .map(|k| k.trim().to_owned())
        .collect();
    ensure!(agents.len() == 2, "{info:#}");
    for (i, agent) in agents.iter().enumerate() {
        let name = format!("pinned{i}");
        let constraint = format!("constraint:node=={agent}");
        docker_cli
            .ok(&[
                "run",
                "-d",
                "--name",
                &name,
                "-e",
                &constraint,
                "-e",
                "KEPT=1",
                "capstan/busybox",
                "sleep",
                "600",
            ])
            .with_context(|| cluster.logs())?;
        let c: Value = serde_json::from_str(&docker_cli.ok(&["inspect", &name])?)?;
        let c = &c[0];
        ensure!(c["Config"]["Env"] == json!(["KEPT=1"]), "{c:#}");
        ensure!(
            c["Config"]["Labels"]["com.docker.swarm.constraints"]
                == json!(format!("[\"node=={agent}\"]")),
            "{c:#}"
        );
        let agent_id = c["Capstan"]["AgentId"].as_str().unwrap_or_default();
        let placed = info["DriverStatus"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p[0].as_str().map(str::trim) == Some(agent.as_str()) && p[1] == agent_id);
        ensure!(placed, "{name} not on {agent}: {c:#}\n{info:#}");
    }
    // Nothing fits an unknown node: start fails at once with the reason, the container
    // stays created.
    docker_cli.ok(&[
        "create",
        "--name",
        "nowhere",
        "-e",
        "constraint:node==no-such-agent",
        "capstan/busybox",
    ])?;
    let out = docker_cli.run(&["start", "nowhere"])?;
    ensure!(
        !out.status.success() && text(&out.stderr).contains("node==no-such-agent"),
        "{}",
        text(&out.stderr)
    );
    let state = docker_cli.ok(&["inspect", "--format", "{{.State.Status}}", "nowhere"])?;
    ensure!(state == "created", "{state}");
    docker_cli.ok(&["rm", "-f", "pinned0", "pinned1", "nowhere"])?;

    // Named volumes: `volume create` records one (not placed yet); the first container that
    // mounts it places it on its agent (the engine volume `swarm.<name>` there), and a second
    // container, with no constraint, lands on that agent and reads what the first wrote.
    let volume = format!("itvol{}", std::process::id());
    docker_cli.ok(&["volume", "create", "--label", "via=cli", &volume])?;
    let ls = docker_cli.ok(&[
        "volume",
        "ls",
        "--filter",
        "label=via=cli",
        "--format",
        "{{.Name}} {{.Driver}}",
    ])?;
    ensure!(ls == format!("{volume} local"), "{ls}");
    let unplaced = docker_cli.ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume])?;
    ensure!(unplaced.is_empty(), "{unplaced}");
    let rw = format!("{volume}:/v");
    docker_cli
        .ok(&[
            "run",
            "--name",
            "vol-w",
            "-v",
            &rw,
            "capstan/busybox",
            "sh",
            "-c",
            "echo persisted > /v/f",
        ])
        .with_context(|| cluster.logs())?;
    let placed: Value = serde_json::from_str(&docker_cli.ok(&["volume", "inspect", &volume])?)?;
    let placed = &placed[0];
    let home = placed["Status"]["Agent"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(agents.contains(&home), "{placed:#}");
    ensure!(
        placed["Mountpoint"] == format!("/var/lib/docker/volumes/swarm.{volume}/_data"),
        "{placed:#}"
    );
    let ro = format!("{volume}:/v:ro");
    let read = docker_cli.ok(&[
        "run",
        "--name",
        "vol-r",
        "-v",
        &ro,
        "capstan/busybox",
        "cat",
        "/v/f",
    ])?;
    ensure!(read == "persisted", "{read:?}");
    let mounts = docker_cli.ok(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.RW}}{{end}}",
        "vol-r",
    ])?;
    ensure!(mounts == format!("volume {volume} /v false"), "{mounts}");
    // A volume a container (even an exited one) mounts is not removed.
    let out = docker_cli.run(&["volume", "rm", &volume])?;
    ensure!(
        !out.status.success() && text(&out.stderr).contains("volume is in use"),
        "{}",
        text(&out.stderr)
    );
    docker_cli.ok(&["rm", "vol-w", "vol-r"])?;
    // Removed: the record and the engine volume on its agent (the agents share this
    // machine's engine).
    docker_cli.ok(&["volume", "rm", &volume])?;
    let gone = Command::new("docker")
        .args(["volume", "inspect", &format!("swarm.{volume}")])
        .output()?;
    ensure!(!gone.status.success(), "the engine volume is still there");
    let out = docker_cli.run(&["volume", "inspect", &volume])?;
    ensure!(
        !out.status.success() && text(&out.stderr).contains("no such volume"),
        "{}",
        text(&out.stderr)
    );

    // A restart policy: on-failure:2 runs three times, then stays exited; stop is final.
    docker_cli.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "capstan/busybox",
        "sh",
        "-c",
        "exit 1",
    ])?;
    wait_until(
        "flaky restarted twice, then exited",
        Duration::from_secs(60),
        async || {
            let s = docker_cli
                .ok(&[
                    "inspect",
                    "--format",
                    "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}",
                    "flaky",
                ])
                .ok()?;
            (s == "2 exited 1").then_some(())
        },
    )
    .await
    .with_context(|| cluster.logs())?;
    docker_cli.ok(&[
        "run",
        "-d",
        "--name",
        "steady",
        "--restart",
        "always",
        "capstan/busybox",
        "sleep",
        "600",
    ])?;
    docker_cli.ok(&["stop", "-t", "1", "steady"])?;
    let steady = docker_cli.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.RestartCount}}",
        "steady",
    ])?;
    ensure!(steady == "exited 0", "{steady}");

    // Events: the history so far, ended by --until.
    let until = (capstan_testkit_now() + 1).to_string();
    let events = docker_cli.ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "container=flaky",
        "--format",
        "{{.Action}}",
    ])?;
    let actions: Vec<&str> = events.lines().collect();
    ensure!(
        actions.first() == Some(&"create")
            && actions.iter().filter(|a| **a == "start").count() == 3
            && actions.iter().filter(|a| **a == "die").count() == 3,
        "{events}"
    );
    docker_cli.ok(&["rm", "-f", "flaky", "steady"])?;

    // docker-compose 1.29: up -d, ps, a second up -d that changes nothing, down.
    std::fs::write(work.path().join("docker-compose.yml"), COMPOSE_FILE)?;
    let compose = |args: &'static [&'static str]| {
        let (c, h, d, w) = (
            clients.compose.clone(),
            host.clone(),
            config.path().to_owned(),
            work.path().to_owned(),
        );
        async move {
            let mut all = vec!["-p", "swarmtest"];
            all.extend_from_slice(args);
            client(&c, &all, &h, &d, &w).await
        }
    };
    compose(&["up", "-d"])
        .await
        .with_context(|| cluster.logs())?;
    let ids = docker_cli.ok(&[
        "ps",
        "--filter",
        "label=com.docker.compose.project=swarmtest",
        "--format",
        "{{.Names}} {{.Label \"com.docker.compose.service\"}}",
    ])?;
    let mut rows: Vec<&str> = ids.lines().collect();
    rows.sort_unstable();
    ensure!(
        rows == ["swarmtest_cache_1 cache", "swarmtest_web_1 web"],
        "{ids}"
    );
    let nets = docker_cli.ok(&["network", "ls", "--format", "{{.Name}}"])?;
    ensure!(nets.lines().any(|n| n == "swarmtest_default"), "{nets}");
    // The top-level volume, created first with compose's labels, mounted by cache.
    let vol = docker_cli.ok(&[
        "volume",
        "inspect",
        "--format",
        "{{index .Labels \"com.docker.compose.volume\"}} {{.Status.Agent}}",
        "swarmtest_data",
    ])?;
    ensure!(
        vol.starts_with("data ") && agents.iter().any(|a| vol.ends_with(a.as_str())),
        "{vol}"
    );
    let web: Value = serde_json::from_str(&docker_cli.ok(&["inspect", "swarmtest_web_1"])?)?;
    let web = &web[0];
    ensure!(
        web["HostConfig"]["NetworkMode"] == "swarmtest_default",
        "{web:#}"
    );
    ensure!(
        web["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped",
        "{web:#}"
    );
    ensure!(web["Config"]["Labels"]["tier"] == "front", "{web:#}");
    let aliases = &web["NetworkSettings"]["Networks"]["swarmtest_default"]["Aliases"];
    ensure!(
        aliases
            .as_array()
            .is_some_and(|a| a.contains(&json!("web"))),
        "{web:#}"
    );
    // The published port answers on its agent.
    let binding = &web["NetworkSettings"]["Ports"]["80/tcp"][0];
    let url = format!(
        "http://{}:{}/",
        binding["HostIp"].as_str().context("HostIp")?,
        binding["HostPort"].as_str().context("HostPort")?
    );
    let http = capstan_http_client::client();
    wait_until(
        "compose's web answers",
        Duration::from_secs(30),
        async || {
            http.get(&url)
                .send()
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        },
    )
    .await?;

    let (ps, _) = compose(&["ps"]).await?;
    for name in ["swarmtest_web_1", "swarmtest_cache_1"] {
        ensure!(
            ps.lines()
                .any(|l| l.starts_with(name) && l.contains(" Up ")),
            "{ps}"
        );
    }
    // Converged: nothing is recreated.
    let (_, again) = compose(&["up", "-d"]).await?;
    ensure!(
        again.contains("swarmtest_web_1 is up-to-date")
            && again.contains("swarmtest_cache_1 is up-to-date"),
        "{again}"
    );
    let after = docker_cli.ok(&["inspect", "--format", "{{.Id}}", "swarmtest_web_1"])?;
    ensure!(after == web["Id"].as_str().unwrap_or_default(), "{after}");

    // --scale: a second web, numbered 2; the first is left alone.
    let (_, scaled) = compose(&["up", "-d", "--scale", "web=2"]).await?;
    ensure!(scaled.contains("Creating swarmtest_web_2"), "{scaled}");
    let webs = docker_cli.ok(&[
        "ps",
        "--filter",
        "label=com.docker.compose.service=web",
        "--format",
        "{{.Names}}",
    ])?;
    let mut webs: Vec<&str> = webs.lines().collect();
    webs.sort_unstable();
    ensure!(webs == ["swarmtest_web_1", "swarmtest_web_2"], "{webs:?}");
    // logs (through the logs API), restart, stop.
    let (logs, _) = compose(&["logs", "--no-color", "cache"]).await?;
    ensure!(
        logs.contains("swarmtest_cache_1") && logs.contains("Ready to accept connections"),
        "{logs}"
    );
    compose(&["restart", "-t", "1", "cache"]).await?;
    let cache = docker_cli.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}}",
        "swarmtest_cache_1",
    ])?;
    ensure!(cache == "running", "{cache}");
    compose(&["stop", "-t", "1"]).await?;
    let (ps, _) = compose(&["ps"]).await?;
    ensure!(
        ps.lines()
            .filter(|l| l.starts_with("swarmtest_"))
            .all(|l| l.contains("Exit")),
        "{ps}"
    );

    compose(&["down", "-v"]).await?;
    let out = docker_cli.run(&["volume", "inspect", "swarmtest_data"])?;
    ensure!(!out.status.success(), "compose down -v left its volume");
    ensure!(
        docker_cli
            .ok(&[
                "ps",
                "-aq",
                "--filter",
                "label=com.docker.compose.project=swarmtest"
            ])?
            .is_empty(),
        "compose down left containers"
    );
    let nets = docker_cli.ok(&["network", "ls", "--format", "{{.Name}}"])?;
    ensure!(!nets.lines().any(|n| n == "swarmtest_default"), "{nets}");
    Ok(())
}
