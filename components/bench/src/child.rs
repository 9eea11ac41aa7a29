//! Servers under test in child processes: this binary re-executed with `--serve WHAT`,
//! optionally pinned to a core. The child prints `READY <addr>` once it serves and exits
//! when its stdin closes (so it never outlives the harness).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// A running child; killed when dropped.
pub struct ServeChild {
    pub child: Child,
    pub addr: String,
}

impl ServeChild {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// Starts `capstan-bench --serve WHAT` (pinned to `cpu` if given) and waits for READY.
pub async fn spawn_self(what: &str, cpu: Option<usize>) -> anyhow::Result<ServeChild> {
    let exe = std::env::current_exe().context("locating capstan-bench")?;
    let mut cmd = pinned(cpu, exe.to_str().context("exe path")?);
    cmd.arg("--serve").arg(what).env("RUST_LOG", "off");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning --serve {what}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .with_context(|| format!("--serve {what} did not get ready in 120 s"))??
        .with_context(|| format!("--serve {what} exited before it was ready"))?;
    let Some(addr) = line.strip_prefix("READY ") else {
        bail!("--serve {what} said {line:?}");
    };
    Ok(ServeChild {
        child,
        addr: addr.to_owned(),
    })
}

/// A command, under `taskset -c CPU` when `cpu` is given.
pub fn pinned(cpu: Option<usize>, program: &str) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// The child side: serve `what` until stdin closes.
pub async fn serve(what: &str) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    let (kind, arg) = what.split_once(':').unwrap_or((what, ""));
    let addr = match kind {
        "master" => crate::master::serve(token.clone()).await?,
        "dns" => crate::dns::serve(arg.parse().context("dns:<tasks>")?, token.clone()).await?,
        "agent" => crate::agent::serve(arg, token.clone()).await?,
        "coord" => crate::coord::serve(arg, token.clone()).await?,
        "apps" => crate::apps::serve(arg, token.clone()).await?,
        "router-backend" => crate::router::serve(token.clone()).await?,
        "l4lb-backends" | "l4lb-proxy" | "l4lb-kernel" => {
            crate::l4lb::serve(kind, arg, token.clone()).await?
        }
        _ => bail!("cannot serve {what:?}"),
    };
    println!("READY {addr}");
    // Blocks a thread until the harness closes our stdin (or dies).
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while stdin.read(&mut buf).unwrap_or(0) > 0 {}
    })
    .await;
    token.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure `program` exists, installing Debian `packages` if it does not.
/// Returns why it is unavailable, if it is.
pub async fn ensure_program(program: &str, packages: &[&str]) -> Result<(), String> {
    if have(program) {
        return Ok(());
    }
    eprintln!("capstan-bench: installing {packages:?} for {program}");
    let out = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .await;
    match out {
        Ok(_) if have(program) => Ok(()),
        Ok(o) => Err(format!(
            "`apt-get install {}` did not provide {program}: {}",
            packages.join(" "),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Err(e) => Err(format!("cannot run apt-get: {e}")),
    }
}
