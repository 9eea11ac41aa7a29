//! Machines for real multi-node install tests: Docker containers that boot systemd as PID 1
//! ("machine containers"), with a Docker engine of their own, on a private Docker network.
//!
//! [`NodeImage::ensure`] builds the bare Debian node image once (`machines/build-node-image.sh`,
//! mmdebstrap, cached by a hash of its inputs); [`Net::create`] makes an internal Docker network
//! with a private subnet (no route off the machine); [`Machine::start`] boots a node on it and
//! returns once `systemctl is-system-running` says `running` or `degraded`. Tests then drive the
//! node through `docker exec` ([`Machine::exec`], [`Machine::sh`]) the way an operator would
//! drive a server through a shell.
//!
//! Key decisions: everything goes through the `docker` CLI (its `exec`, `cp` and pipes are what
//! the tests need, and a failure message can quote the command); every resource is named
//! `capstan-test-<pid>-<n>-...` and labelled [`MACHINES_LABEL`]`=<pid>`, so the guard shared by a
//! [`Net`] and its machines removes them all when the last of those is dropped (also on panic),
//! and [`Net::create`] sweeps what a killed test process left behind.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::wait::wait_until;

/// Label on every container, volume and network made here; its value is the test process's pid.
pub const MACHINES_LABEL: &str = "capstan.test.machines";

/// How long a machine may take to boot to `running`/`degraded` (measured: ~1.5 s).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Lines of journal quoted in failure messages.
pub const JOURNAL_LINES: usize = 60;

/// Most output quoted from a failed command, per stream.
const QUOTE_LIMIT: usize = 6_000;

/// The image the nodes boot: `capstan-test/node:<hash>`, built by
/// `components/testkit/machines/build-node-image.sh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeImage {
    name: String,
}

impl NodeImage {
    /// Builds the node image unless it exists (the script is idempotent and serialised by a
    /// lock file); once per test process. Takes about 40 s the first time, ~0.1 s after.
    pub async fn ensure() -> Result<NodeImage> {
        static IMAGE: OnceCell<NodeImage> = OnceCell::const_new();
        IMAGE
            .get_or_try_init(|| async {
                docker_available().await?;
                let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("machines")
                    .join("build-node-image.sh");
                let started = Instant::now();
                let output = Command::new("sh")
                    .arg(&script)
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .with_context(|| format!("cannot run {}", script.display()))?;
                let stdout = check(&format!("sh {}", script.display()), output)?;
                let name = stdout
                    .lines()
                    .last()
                    .map(str::trim)
                    .filter(|l| l.starts_with("capstan-test/node:"))
                    .with_context(|| {
                        format!("{} printed no image name: {stdout:?}", script.display())
                    })?
                    .to_owned();
                info!(image = %name, elapsed = ?started.elapsed(), "Node image ready");
                Ok(NodeImage { name })
            })
            .await
            .cloned()
    }

    /// `capstan-test/node:<hash>`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Fails with a clear message when the `docker` CLI or its engine is not usable.
async fn docker_available() -> Result<()> {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output()
        .await
        .context("the machine tests need the docker CLI: install docker.io")?;
    check("docker version", output).context(
        "the machine tests need a running Docker engine (start dockerd, or run .ci/run)",
    )?;
    Ok(())
}

/// The resources of one [`Net`] and its machines; removed when the last holder drops.
#[derive(Debug, Default)]
struct Resources {
    network: Option<String>,
    containers: Vec<String>,
    volumes: Vec<String>,
}

#[derive(Debug)]
struct Guard {
    resources: Mutex<Resources>,
}

impl Guard {
    fn take(&self) -> Resources {
        std::mem::take(&mut *self.resources.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn add_container(&self, name: &str, volume: &str) {
        let mut r = self.resources.lock().unwrap_or_else(|e| e.into_inner());
        r.containers.push(name.to_owned());
        r.volumes.push(volume.to_owned());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Drop cannot await: remove with the blocking std Command (a few docker calls).
        let r = self.take();
        for args in removal_commands(&r) {
            match std::process::Command::new("docker")
                .args(&args)
                .stdin(Stdio::null())
                .output()
            {
                Ok(o) if o.status.success() => {}
                Ok(o) => warn!(
                    command = %args.join(" "),
                    stderr = %String::from_utf8_lossy(&o.stderr).trim(),
                    "Machine cleanup failed"
                ),
                Err(e) => warn!(command = %args.join(" "), error = %e, "Machine cleanup failed"),
            }
        }
    }
}

/// The docker commands that remove `r`: containers (with their anonymous volumes) first, then
/// the named volumes, then the network.
fn removal_commands(r: &Resources) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    if !r.containers.is_empty() {
        let mut c = vec!["rm".to_owned(), "-f".to_owned(), "-v".to_owned()];
        c.extend(r.containers.iter().cloned());
        commands.push(c);
    }
    if !r.volumes.is_empty() {
        let mut c = vec!["volume".to_owned(), "rm".to_owned(), "-f".to_owned()];
        c.extend(r.volumes.iter().cloned());
        commands.push(c);
    }
    if let Some(network) = &r.network {
        commands.push(vec!["network".to_owned(), "rm".to_owned(), network.clone()]);
    }
    commands
}

/// A private Docker network for one test's machines: `--internal` (no route off this host;
/// the host itself reaches the machines' addresses), a /24 of 10.213.0.0/16, static addresses
/// from .10 up so a machine keeps its address across [`Machine::stop`]/[`Machine::start_again`].
///
/// Dropping the `Net` and all its [`Machine`]s removes the containers, their `/var/lib/docker`
/// volumes and the network; [`Net::cleanup`] does it explicitly.
#[derive(Debug)]
pub struct Net {
    name: String,
    subnet: Ipv4Addr,
    next_host: AtomicU8,
    guard: Arc<Guard>,
}

impl Net {
    /// Creates `capstan-test-<pid>-<n>-<prefix>`, after removing machine resources left by test
    /// processes that no longer run.
    pub async fn create(prefix: &str) -> Result<Net> {
        docker_available().await?;
        if let Err(e) = remove_stale().await {
            warn!(error = %format!("{e:#}"), "Cannot remove stale machine resources");
        }
        let name = unique_name(prefix);
        let pid = std::process::id();
        let mut last_error = None;
        for attempt in 0..16u32 {
            let subnet = subnet_candidate(pid, attempt);
            let output = docker([
                "network",
                "create",
                "--internal",
                "--driver",
                "bridge",
                "--subnet",
                &format!("{subnet}/24"),
                "--label",
                &format!("{MACHINES_LABEL}={pid}"),
                &name,
            ])
            .await?;
            if output.status.success() {
                debug!(network = %name, %subnet, "Created machine network");
                return Ok(Net {
                    name: name.clone(),
                    subnet,
                    next_host: AtomicU8::new(10),
                    guard: Arc::new(Guard {
                        resources: Mutex::new(Resources {
                            network: Some(name),
                            ..Resources::default()
                        }),
                    }),
                });
            }
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if !stderr.contains("overlap") {
                bail!("docker network create {name} failed: {}", stderr.trim());
            }
            last_error = Some(stderr);
        }
        bail!(
            "no free /24 in 10.213.0.0/16 for network {name}: {}",
            last_error.unwrap_or_default().trim()
        )
    }

    /// The Docker network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network's first address (`10.213.N.0`; the subnet is a /24).
    pub fn subnet(&self) -> Ipv4Addr {
        self.subnet
    }

    fn next_ip(&self) -> Result<Ipv4Addr> {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        if host >= 250 {
            bail!("network {} has no addresses left", self.name);
        }
        let [a, b, c, _] = self.subnet.octets();
        Ok(Ipv4Addr::new(a, b, c, host))
    }

    /// Removes every machine of this network, their volumes and the network now.
    pub async fn cleanup(self) -> Result<()> {
        let r = self.guard.take();
        let mut errors = Vec::new();
        for args in removal_commands(&r) {
            let output = docker(&args).await?;
            if !output.status.success() {
                errors.push(format!(
                    "docker {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("machine cleanup failed: {}", errors.join("; "))
        }
    }
}

/// `capstan-test-<pid>-<n>-<prefix>`, unique within this host while the process runs.
fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("capstan-test-{}-{n}-{prefix}", std::process::id())
}

/// The `attempt`-th /24 to try for process `pid`: `10.213.X.0` with X in 1..=250, spread by pid
/// so parallel test processes rarely collide.
fn subnet_candidate(pid: u32, attempt: u32) -> Ipv4Addr {
    let x = (pid.wrapping_mul(7).wrapping_add(attempt.wrapping_mul(37))) % 250 + 1;
    Ipv4Addr::new(10, 213, x as u8, 0)
}

/// Removes containers, volumes and networks labelled [`MACHINES_LABEL`] whose process is gone.
async fn remove_stale() -> Result<()> {
    let kinds: [(&[&str], &str); 3] = [
        (&["ps", "-a"], "{{.Names}}"),
        (&["volume", "ls"], "{{.Name}}"),
        (&["network", "ls"], "{{.Name}}"),
    ];
    for (list, name_field) in kinds {
        let format = format!("{name_field}\t{{{{.Label \"{MACHINES_LABEL}\"}}}}");
        let mut args: Vec<&str> = list.to_vec();
        let filter = format!("label={MACHINES_LABEL}");
        args.extend(["--filter", &filter, "--format", &format]);
        let listing = check(&format!("docker {}", args.join(" ")), docker(&args).await?)?;
        let stale = stale_names(&listing, |pid| Path::new(&format!("/proc/{pid}")).exists());
        if stale.is_empty() {
            continue;
        }
        info!(
            ?stale,
            "Removing machine resources of finished test processes"
        );
        let mut rm: Vec<&str> = match list[0] {
            "ps" => vec!["rm", "-f", "-v"],
            "volume" => vec!["volume", "rm", "-f"],
            _ => vec!["network", "rm"],
        };
        rm.extend(stale.iter().map(String::as_str));
        let output = docker(&rm).await?;
        if !output.status.success() {
            warn!(
                stderr = %String::from_utf8_lossy(&output.stderr).trim(),
                "Cannot remove stale machine resources"
            );
        }
    }
    Ok(())
}

/// From `name\tpid` lines, the names whose pid parses and is not alive.
fn stale_names(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, pid)| pid.trim().parse::<u32>().is_ok_and(|pid| !alive(pid)))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// One node: a container booting systemd, named `<net>-<name>`, with hostname and network alias
/// `<name>` (other machines reach it as `<name>`), its own Docker engine on a named volume at
/// `/var/lib/docker` (overlay2; overlay-on-overlay would fall back to vfs).
#[derive(Debug)]
pub struct Machine {
    hostname: String,
    container: String,
    ip: Ipv4Addr,
    _guard: Arc<Guard>,
}

impl Machine {
    /// Starts the machine and waits until systemd reports `running` (or `degraded`, which is
    /// logged with the failed units).
    pub async fn start(net: &Net, name: &str, image: &NodeImage) -> Result<Machine> {
        let machine = Machine::create(net, name, image).await?;
        machine.wait_booted().await?;
        Ok(machine)
    }

    /// Starts one machine per name, then waits until all have booted (they boot in parallel).
    pub async fn start_all<S: AsRef<str>>(
        net: &Net,
        names: &[S],
        image: &NodeImage,
    ) -> Result<Vec<Machine>> {
        let mut machines = Vec::with_capacity(names.len());
        for name in names {
            machines.push(Machine::create(net, name.as_ref(), image).await?);
        }
        for machine in &machines {
            machine.wait_booted().await?;
        }
        Ok(machines)
    }

    /// `docker run` of the machine, without waiting for it to boot.
    async fn create(net: &Net, name: &str, image: &NodeImage) -> Result<Machine> {
        let container = format!("{}-{name}", net.name);
        let volume = format!("{container}-docker");
        let ip = net.next_ip()?;
        let label = format!("{MACHINES_LABEL}={}", std::process::id());
        // Registered before creation, so a half-made machine is removed too.
        net.guard.add_container(&container, &volume);
        check(
            &format!("docker volume create {volume}"),
            docker(["volume", "create", "--label", &label, &volume]).await?,
        )?;
        let args = run_args(
            &container,
            name,
            &net.name,
            ip,
            &volume,
            &label,
            image.name(),
        );
        check(&format!("docker {}", args.join(" ")), docker(&args).await?)?;
        Ok(Machine {
            hostname: name.to_owned(),
            container,
            ip,
            _guard: net.guard.clone(),
        })
    }

    /// The hostname (and network alias) the machine was started with.
    pub fn name(&self) -> &str {
        &self.hostname
    }

    /// The Docker container's name.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The machine's address on its [`Net`]; the host reaches it too.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Runs a command in the machine (`docker exec`), whatever its exit status.
    pub async fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["exec", self.container.as_str()];
        full.extend_from_slice(args);
        docker(&full).await
    }

    /// Runs a command in the machine; fails with its exit status, stdout and stderr unless it
    /// exits 0. Returns stdout.
    pub async fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let output = self.exec(args).await?;
        check(&format!("{}: {}", self.hostname, args.join(" ")), output)
    }

    /// `GET url` with curl from inside the machine, parsed as JSON (fails on an HTTP error).
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value> {
        let body = self
            .exec_ok(&["curl", "-fsSL", "--max-time", "10", url])
            .await?;
        serde_json::from_str(&body).with_context(|| format!("{url} answered no JSON: {body}"))
    }

    /// `POST url` with the JSON `body`, with curl from inside the machine; returns the HTTP
    /// status code (the response body goes to curl's stderr, so a failure shows it).
    pub async fn post_json(&self, url: &str, body: &serde_json::Value) -> Result<u16> {
        let code = self
            .exec_ok(&[
                "curl",
                "-sS",
                "-o",
                "/dev/stderr",
                "-w",
                "%{http_code}",
                "--max-time",
                "30",
                "-X",
                "POST",
                url,
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
            ])
            .await?;
        code.trim()
            .parse()
            .with_context(|| format!("POST {url}: no status code in {code:?}"))
    }

    /// Runs a command with `input` on its stdin (`docker exec -i`), whatever its exit status.
    pub async fn exec_with_stdin(&self, args: &[&str], input: &[u8]) -> Result<Output> {
        let mut child = Command::new("docker")
            .args(["exec", "-i", &self.container])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot run docker exec")?;
        let mut stdin = child.stdin.take().context("docker exec has no stdin")?;
        // Write while the output is read, or a chatty command could block both sides.
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            let r = stdin.write_all(&input).await;
            drop(stdin);
            r
        });
        let output = child.wait_with_output().await?;
        if let Ok(Err(e)) = writer.await
            && output.status.success()
        {
            return Err(e).context("cannot write to docker exec's stdin");
        }
        Ok(output)
    }

    /// `sh -c script` as root; fails with stdout and stderr unless it exits 0. Returns stdout.
    pub async fn sh(&self, script: &str) -> Result<String> {
        let output = self.exec(&["sh", "-c", script]).await?;
        check(&format!("{}: sh -c {script:?}", self.hostname), output)
    }

    /// `sh -c script`, whatever its exit status.
    pub async fn sh_output(&self, script: &str) -> Result<Output> {
        self.exec(&["sh", "-c", script]).await
    }

    /// Copies a host file or folder into the machine (`docker cp`). `dest` must not be on one
    /// of the machine's tmpfs mounts (`/tmp`, `/run`): `docker cp` writes beneath them.
    pub async fn copy_in(&self, host_path: &Path, dest: &str) -> Result<()> {
        if ["/tmp", "/run"]
            .iter()
            .any(|t| dest == *t || dest.starts_with(&format!("{t}/")))
        {
            bail!("copy_in to {dest}: docker cp cannot write to tmpfs mounts; use /root or /var");
        }
        let target = format!("{}:{dest}", self.container);
        let host = host_path.to_string_lossy();
        check(
            &format!("docker cp {host} {target}"),
            docker(["cp", host.as_ref(), target.as_str()]).await?,
        )?;
        Ok(())
    }

    /// Writes `contents` to the file `dest` in the machine (any path, tmpfs included).
    pub async fn write_file(&self, dest: &str, contents: &[u8]) -> Result<()> {
        let output = self
            .exec_with_stdin(&["sh", "-c", "cat > \"$1\"", "sh", dest], contents)
            .await?;
        check(&format!("{}: write {dest}", self.hostname), output)?;
        Ok(())
    }

    /// Loads a host Docker image into the machine's own engine
    /// (`docker save IMAGE | docker exec -i MACHINE docker load`).
    pub async fn load_image(&self, image: &str) -> Result<()> {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot run docker save")?;
        let pipe: Stdio = save
            .stdout
            .take()
            .context("docker save has no stdout")?
            .try_into()
            .context("cannot pipe docker save into docker load")?;
        let load = Command::new("docker")
            .args(["exec", "-i", &self.container, "docker", "load"])
            .stdin(pipe)
            .output()
            .await
            .context("cannot run docker exec ... docker load")?;
        let saved = save.wait_with_output().await?;
        check(&format!("docker save {image}"), saved)?;
        check(&format!("{}: docker load of {image}", self.hostname), load)?;
        Ok(())
    }

    /// Powers the machine off: `docker stop`, which sends systemd its shutdown signal
    /// (SIGRTMIN+3) and waits up to 30 s. State and the address survive; see
    /// [`start_again`](Self::start_again).
    pub async fn stop(&self) -> Result<()> {
        check(
            &format!("docker stop {}", self.container),
            docker(["stop", "--time", "30", &self.container]).await?,
        )?;
        Ok(())
    }

    /// Cuts the machine's power: `docker kill` (SIGKILL to every process, no shutdown).
    pub async fn kill(&self) -> Result<()> {
        check(
            &format!("docker kill {}", self.container),
            docker(["kill", &self.container]).await?,
        )?;
        Ok(())
    }

    /// Boots a stopped machine again and waits for systemd, as [`start`](Self::start) does.
    pub async fn start_again(&self) -> Result<()> {
        check(
            &format!("docker start {}", self.container),
            docker(["start", &self.container]).await?,
        )?;
        self.wait_booted().await
    }

    async fn wait_booted(&self) -> Result<()> {
        let started = Instant::now();
        let state = wait_until(
            &format!("{} to boot (systemctl is-system-running)", self.hostname),
            BOOT_TIMEOUT,
            async || -> Result<String> {
                let output = self.exec(&["systemctl", "is-system-running"]).await?;
                let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                match state.as_str() {
                    "running" | "degraded" => Ok(state),
                    "" => Err(anyhow!(
                        "no answer yet: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    )),
                    other => Err(anyhow!("system is {other}")),
                }
            },
        )
        .await;
        match state {
            Ok(state) if state == "degraded" => {
                let failed = self
                    .sh_output("systemctl --failed --no-legend --plain")
                    .await
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                    .unwrap_or_default();
                warn!(machine = %self.hostname, %failed, "Machine booted degraded");
                Ok(())
            }
            Ok(_) => {
                debug!(machine = %self.hostname, elapsed = ?started.elapsed(), "Machine booted");
                Ok(())
            }
            Err(e) => {
                let jobs = self
                    .sh_output("systemctl list-jobs --no-pager; systemctl --failed --no-pager")
                    .await
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let logs = docker(["logs", "--tail", "40", &self.container])
                    .await
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_default();
                Err(e.context(format!(
                    "machine {} did not boot\n--- systemctl ---\n{}\n--- docker logs ---\n{}",
                    self.container,
                    tail(&jobs, QUOTE_LIMIT),
                    tail(&logs, QUOTE_LIMIT)
                )))
            }
        }
    }

    /// `systemctl show -p PROPERTY --value UNIT`.
    pub async fn unit_property(&self, unit: &str, property: &str) -> Result<String> {
        let out = self
            .exec_ok(&["systemctl", "show", "-p", property, "--value", unit])
            .await?;
        Ok(out.trim().to_owned())
    }

    /// `systemctl is-active UNIT`'s answer (`active`, `inactive`, `failed`, `activating`, ...).
    pub async fn unit_state(&self, unit: &str) -> Result<String> {
        let output = self.exec(&["systemctl", "is-active", unit]).await?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// How often systemd restarted UNIT (`NRestarts`).
    pub async fn unit_restarts(&self, unit: &str) -> Result<u32> {
        let n = self.unit_property(unit, "NRestarts").await?;
        n.parse()
            .with_context(|| format!("{}: NRestarts of {unit} is {n:?}", self.hostname))
    }

    /// Waits until UNIT is `active`; the error quotes its last state and journal.
    pub async fn wait_active(&self, unit: &str, deadline: Duration) -> Result<()> {
        let r = wait_until(
            &format!("{unit} active on {}", self.hostname),
            deadline,
            async || -> Result<()> {
                match self.unit_state(unit).await?.as_str() {
                    "active" => Ok(()),
                    other => Err(anyhow!("{unit} is {other}")),
                }
            },
        )
        .await;
        self.with_journal(&[unit], r).await
    }

    /// `kill -9` of UNIT's main process; returns the pid killed.
    pub async fn kill_unit_main(&self, unit: &str) -> Result<u32> {
        let pid = self.unit_property(unit, "MainPID").await?;
        let pid: u32 = pid
            .parse()
            .with_context(|| format!("{}: MainPID of {unit} is {pid:?}", self.hostname))?;
        if pid == 0 {
            let journal = self.journal(unit).await;
            bail!(
                "{}: {unit} has no main process to kill\n{journal}",
                self.hostname
            );
        }
        self.exec_ok(&["kill", "-9", &pid.to_string()]).await?;
        info!(machine = %self.hostname, unit, pid, "Killed the unit's main process");
        Ok(pid)
    }

    /// The last [`JOURNAL_LINES`] of UNIT's journal, headed by the unit and machine, for
    /// failure messages; never fails (says why the journal could not be read instead).
    pub async fn journal(&self, unit: &str) -> String {
        let lines = JOURNAL_LINES.to_string();
        let body = match self
            .exec(&[
                "journalctl",
                "-u",
                unit,
                "-n",
                &lines,
                "--no-pager",
                "-o",
                "short-precise",
            ])
            .await
        {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(cannot read the journal: {e:#})"),
        };
        format!(
            "--- journal of {unit} on {} ---\n{}",
            self.hostname,
            tail(body.trim_end(), QUOTE_LIMIT)
        )
    }

    /// Passes `result` through; an error gets the journal tails of `units` appended.
    pub async fn with_journal<T>(&self, units: &[&str], result: Result<T>) -> Result<T> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                let mut message = format!("{e:#}");
                for unit in units {
                    let _ = write!(message, "\n{}", self.journal(unit).await);
                }
                Err(anyhow!(message))
            }
        }
    }
}

/// The `docker run` arguments of a machine container (see the module docs for why each flag).
fn run_args(
    container: &str,
    hostname: &str,
    network: &str,
    ip: Ipv4Addr,
    volume: &str,
    label: &str,
    image: &str,
) -> Vec<String> {
    [
        "run",
        "--detach",
        "--name",
        container,
        "--hostname",
        hostname,
        "--network",
        network,
        "--network-alias",
        hostname,
        "--ip",
        &ip.to_string(),
        "--label",
        label,
        // systemd needs its own cgroup namespace and CAP_SYS_ADMIN; the nested dockerd needs
        // NET_ADMIN and no seccomp filter (else "unable to join session keyring"). Not
        // --privileged: it fails on hosts whose bounding set lacks CAP_SYS_RESOURCE.
        "--cgroupns=private",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "NET_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "--tmpfs",
        "/tmp",
        "--volume",
        &format!("{volume}:/var/lib/docker"),
        // systemd shuts down on SIGRTMIN+3 and ignores SIGTERM.
        "--stop-signal",
        "SIGRTMIN+3",
        image,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Runs `docker ARGS`, whatever its exit status.
async fn docker<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run the docker CLI")
}

/// `output`'s stdout when it exited 0; else an error naming `what`, the exit status and the
/// tails of stdout and stderr.
pub fn check(what: &str, output: Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    bail!(
        "`{what}` failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        tail(stdout.trim_end(), QUOTE_LIMIT),
        tail(stderr.trim_end(), QUOTE_LIMIT)
    )
}

/// The last `limit` bytes of `text` (cut at a char boundary), marked when cut.
fn tail(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {start} bytes cut ...]{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;

    use super::*;

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn check_hands_back_stdout_of_a_success() {
        assert_eq!(check("true", output(0, "hi\n", "")).unwrap(), "hi\n");
    }

    #[test]
    fn check_quotes_the_command_status_stdout_and_stderr_of_a_failure() {
        let err = check("apt-get purge", output(100, "Reading lists", "E: locked"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`apt-get purge` failed (exit status: 100)"),
            "{err}"
        );
        assert!(err.contains("--- stdout ---\nReading lists"), "{err}");
        assert!(err.contains("--- stderr ---\nE: locked"), "{err}");
    }

    #[test]
    fn tail_keeps_the_end_and_respects_char_boundaries() {
        assert_eq!(tail("short", 10), "short");
        let cut = tail("ééééé-end", 6);
        assert!(cut.ends_with("é-end"), "{cut}");
        assert!(cut.starts_with("[... "), "{cut}");
    }

    #[test]
    fn names_are_unique_and_carry_the_pid_and_prefix() {
        let a = unique_name("install");
        let b = unique_name("install");
        assert_ne!(a, b);
        let pid = std::process::id();
        assert!(a.starts_with(&format!("capstan-test-{pid}-")), "{a}");
        assert!(a.ends_with("-install"), "{a}");
    }

    #[test]
    fn subnet_candidates_stay_in_the_private_range_and_differ_per_attempt() {
        let mut seen = std::collections::HashSet::new();
        for attempt in 0..16 {
            let s = subnet_candidate(4242, attempt);
            let [a, b, c, d] = s.octets();
            assert_eq!((a, b, d), (10, 213, 0), "{s}");
            assert!((1..=250).contains(&c), "{s}");
            seen.insert(s);
        }
        assert_eq!(seen.len(), 16);
    }

    #[test]
    fn stale_names_are_those_of_dead_processes_only() {
        let listing = "a\t100\nb\t200\nforeign\tnot-a-pid\nnolabel\n";
        let stale = stale_names(listing, |pid| pid == 200);
        assert_eq!(stale, vec!["a".to_owned()]);
    }

    #[test]
    fn removal_removes_containers_then_volumes_then_the_network() {
        let r = Resources {
            network: Some("n".into()),
            containers: vec!["c1".into(), "c2".into()],
            volumes: vec!["v1".into(), "v2".into()],
        };
        let commands = removal_commands(&r);
        assert_eq!(
            commands,
            vec![
                vec!["rm", "-f", "-v", "c1", "c2"],
                vec!["volume", "rm", "-f", "v1", "v2"],
                vec!["network", "rm", "n"],
            ]
        );
        assert!(removal_commands(&Resources::default()).is_empty());
    }

    #[test]
    fn machines_run_with_the_flags_systemd_and_nested_docker_need() {
        let args = run_args(
            "capstan-test-1-1-x-m1",
            "m1",
            "capstan-test-1-1-x",
            Ipv4Addr::new(10, 213, 5, 10),
            "capstan-test-1-1-x-m1-docker",
            "capstan.test.machines=1",
            "capstan-test/node:abc",
        );
        let joined = args.join(" ");
        for flag in [
            "--cgroupns=private",
            "--cap-add SYS_ADMIN",
            "--cap-add NET_ADMIN",
            "--security-opt seccomp=unconfined",
            "--security-opt apparmor=unconfined",
            "--tmpfs /run --tmpfs /run/lock --tmpfs /tmp",
            "--volume capstan-test-1-1-x-m1-docker:/var/lib/docker",
            "--ip 10.213.5.10",
            "--hostname m1",
            "--network-alias m1",
        ] {
            assert!(joined.contains(flag), "missing {flag}: {joined}");
        }
        assert!(!joined.contains("--privileged"), "{joined}");
        assert_eq!(
            args.last().map(String::as_str),
            Some("capstan-test/node:abc")
        );
    }
}
