//! Python clients from PyPI, unmodified, for compatibility tests: a virtualenv under the
//! target directory, created once and shared by every crate's tests (a lock file serializes
//! concurrent set-ups): pymesos, the DC/OS CLI (`dcoscli` 0.6.1) with [`DcosCli`], and the
//! Docker API clients (the docker SDK, docker-compose 1.29) with [`docker_clients`].

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where shared test environments live: `$CARGO_TARGET_DIR` or the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The python of a virtualenv with `pymesos` (and its pure-Python HTTP parser) installed,
/// created on first use (`python/pymesos_env.sh`).
pub async fn pymesos_python() -> anyhow::Result<PathBuf> {
    let venv = target_dir().join("pyenv");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pymesos_env.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(&venv)
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "pymesos virtualenv set-up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(venv.join("bin/python"))
}

/// The Docker API clients from PyPI, unmodified (`python/docker_clients_env.sh`): the python
/// of a venv with the docker SDK 7.1.0, and `docker-compose` 1.29.2 (under Python 3.9).
#[derive(Debug, Clone)]
pub struct DockerClients {
    pub sdk_python: PathBuf,
    pub compose: PathBuf,
}

/// The Docker API clients' venvs, built on first use (kept under the target directory).
pub async fn docker_clients() -> anyhow::Result<DockerClients> {
    let (sdk, compose) = (
        target_dir().join("swarm-sdk-env"),
        target_dir().join("swarm-compose-env"),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/docker_clients_env.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(&sdk)
        .arg(&compose)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "docker clients' virtualenv set-up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(DockerClients {
        sdk_python: sdk.join("bin/python"),
        compose: compose.join("bin/docker-compose"),
    })
}

/// What one `dcos` run printed and how it ended.
#[derive(Debug)]
pub struct DcosOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl DcosOutput {
    /// The output, or an error with both streams when the command failed.
    pub fn ok(self) -> anyhow::Result<Self> {
        if !self.status.success() {
            bail!(
                "dcos exited with {}\nstdout:\n{}\nstderr:\n{}",
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// How `dcos cluster setup` treats the cluster's TLS certificate.
#[derive(Debug, Clone)]
pub enum ClusterTls {
    /// No flag: http URLs, or https with the CLI's own CA download and `yes` prompt
    /// (answered on stdin by [`DcosCli::cluster_setup`]).
    Default,
    /// `--insecure`: no verification.
    Insecure,
    /// `--ca-certs=<file>`: verify against these CAs.
    CaCerts(PathBuf),
}

/// The real DC/OS CLI (`dcoscli` 0.6.1 from PyPI, unmodified; `python/dcoscli_env.sh`)
/// with its state in a private temporary `DCOS_DIR` (and `HOME`), so a test never reads or
/// writes `~/.dcos` and runs no matter what the calling environment says: every `DCOS_*`
/// variable of the test process is dropped. The virtualenv is built once per process
/// (and kept under the target directory across processes); `DCOSCLI_RECIPE=A|B` picks
/// the install recipe.
#[derive(Debug)]
pub struct DcosCli {
    dcos: PathBuf,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    timeout: std::time::Duration,
}

/// The `dcos` executable, once the virtualenv is set up.
static DCOS_BIN: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();

/// The `dcos` executable of the shared virtualenv, built on first use.
pub async fn dcoscli_bin() -> anyhow::Result<PathBuf> {
    DCOS_BIN
        .get_or_try_init(|| async {
            // One venv per recipe choice, so forcing a recipe does not rebuild the other.
            let name = match std::env::var("DCOSCLI_RECIPE").ok().as_deref() {
                Some(r @ ("A" | "B")) => format!("dcoscli-env-{r}"),
                _ => "dcoscli-env".to_string(),
            };
            let venv = target_dir().join(name);
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/dcoscli_env.sh");
            let out = tokio::process::Command::new("bash")
                .arg(&script)
                .arg(&venv)
                .kill_on_drop(true)
                .output()
                .await
                .with_context(|| format!("running {}", script.display()))?;
            if !out.status.success() {
                bail!(
                    "dcoscli virtualenv set-up failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(venv.join("bin/dcos"))
        })
        .await
        .cloned()
}

impl DcosCli {
    /// A CLI with a fresh, empty state directory.
    pub async fn new() -> anyhow::Result<Self> {
        let dcos = dcoscli_bin().await?;
        let dir = tempfile::Builder::new()
            .prefix("dcos-dir")
            .tempdir()
            .context("creating a DCOS_DIR")?;
        std::fs::create_dir(dir.path().join("home")).context("creating the CLI's HOME")?;
        Ok(DcosCli {
            dcos,
            dir,
            env: Vec::new(),
            timeout: std::time::Duration::from_secs(120),
        })
    }

    /// The CLI's state directory (`DCOS_DIR`): `clusters/<id>/dcos.toml` and so on.
    pub fn dcos_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sets an environment variable for every later run (e.g. `DCOS_CLUSTER`).
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How long one run may take before it is killed and reported as an error (120 s).
    pub fn timeout(&mut self, t: std::time::Duration) -> &mut Self {
        self.timeout = t;
        self
    }

    /// Runs `dcos <args>` with no input.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<DcosOutput> {
        self.run_with_stdin(args, None).await
    }

    /// Runs `dcos <args>`, writing `stdin` (if any) to its input and then closing it.
    pub async fn run_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<DcosOutput> {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new(&self.dcos);
        cmd.args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("DCOS_")) {
                cmd.env_remove(&k);
            }
        }
        cmd.env("DCOS_DIR", self.dir.path())
            .env("HOME", self.dir.path().join("home"))
            .env("PYTHONIOENCODING", "utf-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.dcos.display()))?;
        let mut input = child.stdin.take().context("the CLI's stdin")?;
        let data = stdin.unwrap_or("").to_string();
        // Written alongside the wait so a CLI that does not read cannot block us.
        let writer = tokio::spawn(async move {
            let _ = input.write_all(data.as_bytes()).await;
            let _ = input.shutdown().await;
        });
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| anyhow::anyhow!("dcos {args:?} did not finish within {:?}", self.timeout))?
            .with_context(|| format!("running dcos {args:?}"))?;
        writer.abort();
        Ok(DcosOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `dcos cluster setup <url> --username=<u> --password=<p>` with the given TLS mode;
    /// `yes` is written to stdin for the CA fingerprint prompt of [`ClusterTls::Default`].
    pub async fn cluster_setup(
        &self,
        url: &str,
        username: &str,
        password: &str,
        tls: &ClusterTls,
    ) -> anyhow::Result<DcosOutput> {
        let user = format!("--username={username}");
        let pass = format!("--password={password}");
        let mut args = vec!["cluster", "setup", url, user.as_str(), pass.as_str()];
        let ca;
        match tls {
            ClusterTls::Default => {}
            ClusterTls::Insecure => args.push("--insecure"),
            ClusterTls::CaCerts(p) => {
                ca = format!("--ca-certs={}", p.display());
                args.push(ca.as_str());
            }
        }
        self.run_with_stdin(&args, Some("yes\n")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the real CLI (PyPI) and runs it without a cluster: `--version` needs no
    /// network, and nothing may appear outside the private `DCOS_DIR`.
    #[tokio::test]
    async fn dcoscli_runs_with_its_state_in_a_private_dir() -> anyhow::Result<()> {
        let mut cli = DcosCli::new().await?;
        cli.env("DCOS_URL_UNUSED", "x");
        let out = cli.run(&["--version"]).await?.ok()?;
        assert!(
            out.stdout.contains("dcoscli.version=0.6.1"),
            "{}",
            out.stdout
        );
        let out = cli.run(&["cluster", "list", "--json"]).await?.ok()?;
        assert_eq!(out.stdout.trim(), "[]", "no cluster set up: {out:?}");
        assert!(cli.dcos_dir().join("clusters").is_dir());
        // Input reaches the CLI: an unknown command fails cleanly, not by a hang.
        let out = cli
            .run_with_stdin(&["no-such-command"], Some("yes\n"))
            .await?;
        assert!(!out.status.success());
        Ok(())
    }
}
