//! The system under test: `capstan daemon router` (the `capstan` binary next to this one) with
//! the single-member coord it needs, seeded with a cluster identity and a first administrator
//! exactly as the installer stores them; then a login for the token every request carries.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use capstan_install::state::{AdminRecord, ClusterInfo, ClusterState};

use crate::child::{ServeChild, pinned, spawn_self};

pub const ADMIN_UID: &str = "bench-admin";
pub const ADMIN_PASSWORD: &str = "bench-password-not-secret";

/// The `capstan` binary this benchmark runs: next to `capstan-bench` (same target dir).
pub fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating capstan-bench")?;
    let dir = exe.parent().context("capstan-bench's directory")?;
    Ok(dir.join("capstan"))
}

/// Why the router cannot run, if it cannot: no binary, or a binary without the subcommand.
pub fn unavailable(bin: &Path) -> Option<String> {
    if !bin.exists() {
        return Some(format!(
            "{} does not exist (build it with `cargo build --release -p capstan`)",
            bin.display()
        ));
    }
    match std::process::Command::new(bin)
        .args(["daemon", "router", "--help"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`{} daemon router` is not a command of this build: {}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
        )),
        Err(e) => Some(format!("cannot run {}: {e}", bin.display())),
    }
}

/// Ports and files of the router.
pub struct Setup<'a> {
    pub dir: &'a Path,
    pub http_port: u16,
    pub https_port: u16,
    pub coord: &'a str,
    pub backend: &'a str,
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: &'a Path,
}

/// The node config: only `log:` and `router:`; masters and apps point at a port nobody
/// serves (no route of the benchmark goes there).
pub fn config(s: &Setup<'_>) -> String {
    format!(
        "log:\n  level: warn\n  format: text\nrouter:\n  http_listen: 127.0.0.1:{http}\n  \
         https_listen: 127.0.0.1:{https}\n  public_ip: 127.0.0.1\n  coord_endpoints: [\"{coord}\"]\n  \
         masters: [\"127.0.0.1:9\"]\n  apps: [\"127.0.0.1:9\"]\n  dns_http: {backend}\n  \
         tls:\n    cert: {cert}\n    key: {key}\n    ca: {ca}\n",
        http = s.http_port,
        https = s.https_port,
        coord = s.coord,
        backend = s.backend,
        cert = s.cert.display(),
        key = s.key.display(),
        ca = s.ca.display(),
    )
}

/// A single-member coord (this binary's `--serve coord`), pinned to `cpu`.
pub async fn start_coord(dir: &Path, cpu: usize) -> anyhow::Result<ServeChild> {
    let port = capstan_testkit::free_port()?;
    let data = dir.join("coord");
    std::fs::create_dir_all(&data)?;
    spawn_self(&format!("coord:1:{port}:{}", data.display()), Some(cpu)).await
}

/// Stores the cluster identity and the first administrator, retrying while coord elects.
pub async fn seed(coord: &str, ca_pem: &str) -> anyhow::Result<()> {
    let client = capstan_coord_client::Client::new([coord])?;
    let state = ClusterState::new(client);
    let info = ClusterInfo {
        cluster_id: uuid::Uuid::new_v4().to_string(),
        name: "bench".into(),
        ca_pem: ca_pem.to_owned(),
        ca_fingerprint: capstan_install::pki::fingerprint(ca_pem),
        created_ms: capstan_install::state::now_ms(),
    };
    let admin = AdminRecord {
        uid: ADMIN_UID.into(),
        password_hash: capstan_install::state::hash_password(ADMIN_PASSWORD),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match state.create(&info, &admin).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow::Error::new(e).context("seeding coord for 30 s"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A running router and where its log goes.
pub struct Router {
    pub child: tokio::process::Child,
    pub log: PathBuf,
}

impl Router {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }
}

/// Starts the router pinned to `cpu`; ready when its plain listener answers the open
/// `/dcos-metadata/dcos-version.json` with 200.
pub async fn start(bin: &Path, s: &Setup<'_>, cpu: usize) -> anyhow::Result<Router> {
    let conf = s.dir.join("router.yaml");
    std::fs::write(&conf, config(s))?;
    let log = s.dir.join("router.log");
    let log_file = std::fs::File::create(&log)?;
    let child = pinned(Some(cpu), bin.to_str().context("binary path")?)
        .args(["daemon", "router", "--config"])
        .arg(&conf)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .context("starting the router")?;
    let mut router = Router { child, log };
    let client = capstan_http_client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let url = format!(
        "http://127.0.0.1:{}/dcos-metadata/dcos-version.json",
        s.http_port
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(router);
        }
        if let Ok(Some(status)) = router.child.try_wait() {
            bail!("the router exited ({status}): {}", router.log_tail());
        }
        if Instant::now() > deadline {
            bail!(
                "the router did not answer {url} in 60 s: {}",
                router.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs in as the seeded administrator; the token.
pub async fn login(http_port: u16) -> anyhow::Result<String> {
    let client = capstan_http_client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("http://127.0.0.1:{http_port}/acs/api/v1/auth/login");
    let body = serde_json::json!({"uid": ADMIN_UID, "password": ADMIN_PASSWORD});
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await.context("login answer")?;
                return v["token"]
                    .as_str()
                    .map(str::to_owned)
                    .context("the login answer has no token");
            }
            // A refusal is final (retrying would only meet the failed-login slow-down); a
            // 5xx or no answer may be a router still loading its identity store.
            Ok(r) if r.status().is_client_error() || Instant::now() > deadline => {
                let status = r.status();
                bail!(
                    "login answered {status}: {}",
                    r.text().await.unwrap_or_default()
                );
            }
            Err(e) if Instant::now() > deadline => return Err(e).context("login"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
