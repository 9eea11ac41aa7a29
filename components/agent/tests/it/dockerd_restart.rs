//! A real Docker daemon restarted under a running agent. The test starts a private `dockerd`
//! (its own containerd, data root, exec root, socket and network namespace, no bridge or
//! iptables set-up, live restore on) so the machine's own engine, which other tests use at the
//! same time, is never touched; a guard stops both daemons and removes their files, mounts and
//! containers even when the test fails.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use capstan_proto::mesos::v1::TaskState;
use capstan_testkit::wait_until;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::harness::*;

/// A `dockerd` with its own containerd, living entirely under one short temp dir (Unix socket
/// paths are limited to about 108 bytes).
struct PrivateEngine {
    dir: tempfile::TempDir,
    containerd: Option<Child>,
    dockerd: Option<Child>,
}

impl PrivateEngine {
    async fn start() -> anyhow::Result<PrivateEngine> {
        let dir = tempfile::Builder::new()
            .prefix("cit")
            .tempdir_in("/tmp")
            .context("temp dir")?;
        let mut engine = PrivateEngine {
            dir,
            containerd: None,
            dockerd: None,
        };
        let d = engine.path().to_owned();
        // The CRI plugin is off (it would set up networking); everything else stays in `dir`.
        std::fs::write(
            d.join("containerd.toml"),
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[debug]\n  address = \"\"\n",
                root = d.join("ctr-root").display(),
                state = d.join("ctr-state").display(),
                sock = engine.containerd_socket().display(),
            ),
        )?;
        std::fs::write(d.join("daemon.json"), "{}\n")?;
        engine.containerd = Some(
            // A network namespace of its own: dockerd with `--bridge=none` deletes the host's
            // `docker0` (the machine engine's bridge) at start-up, so it must not see it.
            Command::new("unshare")
                .args(["--net", "--", "containerd", "--config"])
                .arg(d.join("containerd.toml"))
                .stdin(Stdio::null())
                .stdout(engine.log("containerd.log")?)
                .stderr(engine.log("containerd.log")?)
                .spawn()
                .context("start containerd")?,
        );
        let socket = engine.containerd_socket();
        wait_until("private containerd listening", DEADLINE, async || {
            socket.exists()
        })
        .await?;
        engine.start_dockerd().await?;
        Ok(engine)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn containerd_socket(&self) -> PathBuf {
        self.path().join("ctr.sock")
    }

    /// `unix://...` address of the engine's API.
    fn host(&self) -> String {
        format!("unix://{}", self.path().join("docker.sock").display())
    }

    fn client(&self) -> anyhow::Result<Docker> {
        Docker::connect_with_socket(&self.host(), 30, bollard::API_DEFAULT_VERSION)
            .context("connect to the private engine")
    }

    fn log(&self, name: &str) -> anyhow::Result<File> {
        Ok(OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join(name))?)
    }

    fn dockerd_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Starts `dockerd` (again, with the same flags) and waits until it answers.
    async fn start_dockerd(&mut self) -> anyhow::Result<()> {
        assert!(self.dockerd.is_none(), "dockerd already running");
        self.dockerd = Some(self.spawn_dockerd()?);
        // The client refuses a socket that does not exist yet: connect on every check.
        let ready = wait_until("private dockerd answering", DEADLINE, async || {
            self.client()?.ping().await?;
            anyhow::Ok(())
        })
        .await;
        ready.with_context(|| format!("dockerd log:\n{}", self.dockerd_log_tail()))?;
        Ok(())
    }

    fn spawn_dockerd(&self) -> anyhow::Result<Child> {
        let d = self.path();
        let containerd = self
            .containerd
            .as_ref()
            .context("containerd is not running")?;
        // Into containerd's network namespace, and so are its host-network containers.
        Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", containerd.id()))
            .args(["--", "dockerd", "-H"])
            .arg(self.host())
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--containerd")
            .arg(self.containerd_socket())
            .args([
                "--containerd-namespace",
                "capstan-it",
                "--containerd-plugins-namespace",
                "capstan-it-plugins",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--live-restore",
            ])
            .stdin(Stdio::null())
            .stdout(self.log("dockerd.log")?)
            .stderr(self.log("dockerd.log")?)
            .spawn()
            .context("start dockerd")
    }

    /// SIGTERM to `dockerd`, then waits for it to exit (containers stay: live restore).
    async fn stop_dockerd(&mut self) -> anyhow::Result<()> {
        let child = self.dockerd.as_mut().context("dockerd is not running")?;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        // On a timeout the child stays in `self` for the guard to kill.
        let status = wait_until("private dockerd exited", DEADLINE, async || {
            child.try_wait().ok().flatten()
        })
        .await
        .with_context(|| format!("dockerd log:\n{}", self.dockerd_log_tail()))?;
        self.dockerd = None;
        if !status.success() {
            bail!("dockerd exited with {status}: {}", self.dockerd_log_tail());
        }
        Ok(())
    }

    /// Copies an image from the machine's engine (images cannot be pulled here).
    fn load_image(&self, image: &str) -> anyhow::Result<()> {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .context("docker save")?;
        let load = Command::new("docker")
            .args(["-H", &self.host(), "load"])
            .stdin(save.stdout.take().expect("piped"))
            .output()
            .context("docker load")?;
        let saved = save.wait()?;
        if !saved.success() || !load.status.success() {
            bail!(
                "cannot copy {image}: save {saved}, load {}: {}",
                load.status,
                String::from_utf8_lossy(&load.stderr)
            );
        }
        Ok(())
    }

    /// Every container of the private engine, running or not, by id.
    async fn containers(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .client()?
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await?
            .into_iter()
            .filter_map(|c| c.id)
            .collect())
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // 1. Containers outlive dockerd (live restore): remove them through a running
        //    dockerd, starting it again if the test failed while it was down.
        if self.dockerd.is_none() && self.containerd.is_some() {
            self.dockerd = self.spawn_dockerd().ok();
        }
        if self.dockerd.is_some() {
            let host = self.host();
            let _ = Command::new("timeout")
                .args(["30", "sh", "-c"])
                .arg(format!(
                    "until docker -H {host} version >/dev/null 2>&1; do sleep 0.1; done; \
                     docker -H {host} ps -aq | xargs -r docker -H {host} rm -f"
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let ids = container_ids(self.path());
        // 2. Stop the daemons: TERM, then KILL after a while.
        for child in [self.dockerd.take(), self.containerd.take()]
            .into_iter()
            .flatten()
        {
            stop_child(child);
        }
        // 3. Anything still running from this dir (shims, container processes).
        let marker = self.path().to_string_lossy().into_owned();
        for pid in pids_mentioning(&marker) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // 4. Containers the engine could not remove: kill their processes, drop their cgroups.
        if !ids.is_empty() {
            for pid in pids_in_cgroups(&ids) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            #[allow(
                clippy::disallowed_methods,
                reason = "teardown in Drop, which cannot await: let the kernel reap them"
            )]
            std::thread::sleep(Duration::from_millis(200));
            remove_cgroups(Path::new("/sys/fs/cgroup"), &ids, 4);
        }
        // 5. dockerd leaves mounts behind (its data root, the default netns): unmount them,
        //    deepest first, so the temp dir can go.
        for _ in 0..3 {
            let mut mounts = mounts_under(self.path());
            if mounts.is_empty() {
                break;
            }
            mounts.sort_by(|a, b| b.cmp(a));
            for m in mounts {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&m)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Called from `Drop`, which cannot await: polls the child with a blocking sleep.
#[allow(
    clippy::disallowed_methods,
    reason = "runs in Drop, which cannot await"
)]
fn stop_child(mut child: Child) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    for _ in 0..150 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Processes whose command line contains `marker`.
fn pids_mentioning(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// Ids of the containers the engine still has on disk.
fn container_ids(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("data/containers"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Processes in a cgroup named after one of `ids`.
fn pids_in_cgroups(ids: &[String]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cgroups =
                std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            ids.iter().any(|id| cgroups.contains(id.as_str()))
        })
        .collect()
}

/// Removes (empty) cgroup directories whose name contains one of `ids`, `depth` levels down.
fn remove_cgroups(dir: &Path, ids: &[String], depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if ids.iter().any(|id| name.contains(id.as_str())) {
            let _ = std::fs::remove_dir(e.path());
        } else if depth > 1 {
            remove_cgroups(&e.path(), ids, depth - 1);
        }
    }
}

/// Mount points at or under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_owned)
        .collect()
}

async fn container_pid(docker: &Docker, name: &str) -> anyhow::Result<i64> {
    let inspect = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await?;
    let state = inspect.state.context("no state")?;
    if state.running != Some(true) {
        bail!("container {name} is not running");
    }
    state.pid.filter(|p| *p > 0).context("no pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_dockerd_with_live_restore_keeps_the_task_running_and_killable() {
    let scope = Scope::new().await;
    let mut engine = PrivateEngine::start().await.unwrap();
    engine.load_image("capstan/busybox").unwrap();
    let private = engine.client().unwrap();

    let mut config = scope.config();
    config.docker.host = Some(engine.host());
    let agent = scope.start_with(config).await;
    let health = format!("http://{}/health", agent.local_addr());
    // Prints "after" only once the test allows it, i.e. after the engine restart.
    launch_docker(
        &agent,
        "survivor",
        "capstan/busybox",
        Some(r#"echo before; while [ ! -e "$MESOS_SANDBOX/go" ]; do sleep 0.1; done; echo after; sleep 600"#),
    )
    .await;
    let t = wait_state(&agent, "survivor", TaskState::TaskRunning).await;
    wait_until("first output", DEADLINE, async || {
        sandbox_file(&t, "stdout") == "before\n"
    })
    .await
    .unwrap();
    let pid = container_pid(&private, &t.container.name).await.unwrap();

    engine.stop_dockerd().await.unwrap();
    // Live restore: the container's process outlives the daemon.
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "container process {pid} died with dockerd"
    );
    wait_until("agent unhealthy", DEADLINE, async || {
        let r = reqwest::get(&health).await.ok()?;
        (r.status() == 503 && !agent.docker_up()).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        agent.tasks().snapshot().tasks["survivor"].state,
        TaskState::TaskRunning
    );

    engine.start_dockerd().await.unwrap();
    wait_until("agent healthy again", DEADLINE, async || {
        let r = reqwest::get(&health).await.ok()?;
        (r.status() == 200 && agent.docker_up()).then_some(())
    })
    .await
    .unwrap();
    // The agent follows the same container on the restarted engine: new output arrives.
    std::fs::write(t.container.sandbox.join("go"), "").unwrap();
    wait_until("output after the restart", DEADLINE, async || {
        sandbox_file(&t, "stdout") == "before\nafter\n"
    })
    .await
    .unwrap();
    assert_eq!(
        container_pid(&private, &t.container.name).await.unwrap(),
        pid,
        "the container was restarted, not restored"
    );
    assert_eq!(
        agent.tasks().snapshot().tasks["survivor"].state,
        TaskState::TaskRunning
    );

    agent
        .tasks()
        .kill("survivor", Some(Duration::ZERO))
        .await
        .unwrap();
    wait_state(&agent, "survivor", TaskState::TaskKilled).await;
    let left = engine.containers().await.unwrap();
    assert!(left.is_empty(), "containers left: {left:?}");
    agent.shutdown().await;
}
