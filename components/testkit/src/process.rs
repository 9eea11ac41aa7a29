//! The real `capstan` binary as a child process: started with a config file, handed back only
//! once it sent `READY=1` to our `NOTIFY_SOCKET`, killed when dropped.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::net::UnixDatagram;
use tokio::time::Instant;

/// How long a spawned daemon may take to report READY=1 by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`CapstanProcess::terminate`] waits for a graceful exit before SIGKILL.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(15);
const LOG_TAIL_LINES: usize = 40;

/// Path of the `capstan` binary to run: `$CAPSTAN_BIN` if set, else `capstan` next to the
/// running test's `deps/` directory (`target/<profile>/capstan`).
pub fn capstan_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CAPSTAN_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("CAPSTAN_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let exe = std::env::current_exe().context("cannot find the running test's executable")?;
    let mut dir = exe
        .parent()
        .context("the test executable has no parent directory")?;
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir = dir.parent().unwrap_or(dir);
    }
    let bin = dir.join("capstan");
    if bin.is_file() {
        Ok(bin)
    } else {
        bail!(
            "no capstan binary at {}: build it first: cargo build -p capstan (or set CAPSTAN_BIN)",
            bin.display()
        )
    }
}

/// Config file contents for a spawned process: YAML text, or a JSON value (JSON is YAML).
#[derive(Debug, Clone)]
pub struct ConfigText(pub String);

impl From<&str> for ConfigText {
    fn from(s: &str) -> Self {
        ConfigText(s.to_owned())
    }
}

impl From<String> for ConfigText {
    fn from(s: String) -> Self {
        ConfigText(s)
    }
}

impl From<serde_json::Value> for ConfigText {
    fn from(v: serde_json::Value) -> Self {
        ConfigText::from(&v)
    }
}

impl From<&serde_json::Value> for ConfigText {
    fn from(v: &serde_json::Value) -> Self {
        ConfigText(v.to_string())
    }
}

/// Options for spawning `capstan`; [`CapstanProcess::spawn`] is the short form.
#[derive(Debug, Clone)]
pub struct CapstanCommand {
    args: Vec<String>,
    config: ConfigText,
    env: Vec<(String, String)>,
    bin: Option<PathBuf>,
    ready_timeout: Duration,
}

impl CapstanCommand {
    /// `capstan <args...> --config <temp file holding config>`.
    pub fn new(args: &[&str], config: impl Into<ConfigText>) -> Self {
        CapstanCommand {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            config: config.into(),
            env: Vec::new(),
            bin: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }

    /// Sets an environment variable for the child (e.g. `RUST_LOG`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs this binary instead of [`capstan_bin`]'s.
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = Some(bin.into());
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the process and waits until it reports READY=1.
    pub async fn spawn(self) -> anyhow::Result<CapstanProcess> {
        let bin = match self.bin.clone() {
            Some(bin) => bin,
            None => capstan_bin()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("capstan-proc-")
            .tempdir()
            .context("cannot create a temp dir for the process")?;
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, &self.config.0)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path)
            .with_context(|| format!("cannot bind {}", notify_path.display()))?;
        let mut process = CapstanProcess {
            log_path: dir.path().join("capstan.log"),
            config_path,
            notify_path,
            notify,
            dir,
            bin,
            cmd: self,
            child: None,
            pid: 0,
            starts: 0,
        };
        process.start().await?;
        Ok(process)
    }
}

/// A running `capstan` process. Killed (SIGKILL) when dropped.
pub struct CapstanProcess {
    cmd: CapstanCommand,
    bin: PathBuf,
    dir: TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    notify_path: PathBuf,
    notify: UnixDatagram,
    child: Option<Child>,
    pid: u32,
    starts: u32,
}

impl CapstanProcess {
    /// Starts `capstan <args...> --config <file with config>` and waits for READY=1.
    /// Example: `CapstanProcess::spawn(&["master"], json!({"master": {...}})).await?`.
    pub async fn spawn(args: &[&str], config: impl Into<ConfigText>) -> anyhow::Result<Self> {
        CapstanCommand::new(args, config).spawn().await
    }

    /// Process id of the latest start (stale once it exited).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The config file the process was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// stdout and stderr of every start, appended.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// A scratch directory that lives as long as this process handle.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the process's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path, LOG_TAIL_LINES)
    }

    /// Whether the process is still running (a paused process is running).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, then reap. A no-op if it already exited.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                child.kill().context("cannot SIGKILL capstan")?;
            }
            child.wait().context("cannot reap capstan")?;
        }
        Ok(())
    }

    /// SIGTERM, then wait for the exit (SIGKILL and an error after [`TERMINATE_TIMEOUT`]).
    /// Resumes a paused process first so it can act on the signal.
    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_reap()? {
            return Ok(status);
        }
        let pid = Pid::from_raw(self.pid as i32);
        kill(pid, Signal::SIGTERM).context("cannot SIGTERM capstan")?;
        let _ = kill(pid, Signal::SIGCONT);
        match self.wait_exit(TERMINATE_TIMEOUT).await {
            Ok(status) => Ok(status),
            Err(e) => {
                self.kill()?;
                Err(e.context("capstan ignored SIGTERM; killed it"))
            }
        }
    }

    /// Waits for the process to exit on its own (e.g. after a fatal error), up to `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let end = Instant::now() + deadline;
        let mut interval = Duration::from_millis(5);
        loop {
            if let Some(status) = self.try_reap()? {
                return Ok(status);
            }
            if Instant::now() >= end {
                bail!(
                    "capstan {} still running after {deadline:?}. Log tail:\n{}",
                    self.cmd.args.join(" "),
                    self.log_tail()
                );
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_millis(50));
        }
    }

    /// The exit status if the process has exited (and forgets it), `None` while it runs.
    fn try_reap(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            bail!("capstan is not running");
        };
        let status = child.try_wait().context("cannot check on capstan")?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// SIGSTOP: the process stays alive but stops answering (a hung node).
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Sends any signal to the process.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        if self.child.is_none() {
            bail!("capstan is not running");
        }
        kill(Pid::from_raw(self.pid as i32), signal)
            .with_context(|| format!("cannot send {signal} to capstan"))
    }

    /// Stops the process if it runs (SIGTERM), then starts it again with the same arguments,
    /// environment and config file, and waits for READY=1.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.terminate().await?;
        }
        self.start().await
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        // Forget datagrams from an earlier run.
        let mut buf = [0u8; 4096];
        while self.notify.try_recv(&mut buf).is_ok() {}

        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("cannot open {}", self.log_path.display()))?;
        writeln!(
            log,
            "---- testkit: start #{} of {} {} --config {}",
            self.starts,
            self.bin.display(),
            self.cmd.args.join(" "),
            self.config_path.display()
        )?;
        let stdout: File = log.try_clone()?;
        let mut command = Command::new(&self.bin);
        command
            .args(&self.cmd.args)
            .arg("--config")
            .arg(&self.config_path)
            .env("NOTIFY_SOCKET", &self.notify_path)
            .env_remove("JOURNAL_STREAM")
            .env_remove("INVOCATION_ID")
            .env_remove("CAPSTAN_CONFIG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log);
        for (k, v) in &self.cmd.env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let what = format!("capstan {}", self.cmd.args.join(" "));
        let end = Instant::now() + self.cmd.ready_timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(status) = self.try_reap()? {
                bail!(
                    "{what} exited with {status} before it was ready. Log tail:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() >= end {
                self.kill()?;
                bail!(
                    "{what} did not report READY=1 within {:?}; killed it. Log tail:\n{}",
                    self.cmd.ready_timeout,
                    self.log_tail()
                );
            }
            let received =
                tokio::time::timeout(Duration::from_millis(50), self.notify.recv(&mut buf)).await;
            if let Ok(Ok(n)) = received
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l.trim() == "READY=1")
            {
                return Ok(());
            }
        }
    }
}

impl Drop for CapstanProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_config_is_written_as_yaml_compatible_json() {
        let text = ConfigText::from(serde_json::json!({"log": {"level": "debug"}}));
        assert_eq!(text.0, r#"{"log":{"level":"debug"}}"#);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path, 3);
        assert_eq!(tail, "line 98\nline 99\nline 100");
    }
}
