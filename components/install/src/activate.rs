//! Bringing a configured node up: loading the shipped images into Docker, enabling and
//! starting its role's systemd units, and waiting until it has really joined.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use capstan_runtime::cluster::{ClusterSecurity, ports};
use tokio::time::Instant;

use crate::token::Role;

/// How long `init` and `join` wait for the node's daemons to come up.
pub const UP_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not happen within {UP_TIMEOUT:?}; see `journalctl -u 'capstan-*'`")]
    Timeout { what: String },
}

/// The units a role runs, target last.
pub fn units(role: Role) -> &'static [&'static str] {
    match role {
        Role::Master => &[
            "capstan-coord.service",
            "capstan-master.service",
            "capstan-apps.service",
            "capstan-dns.service",
            "capstan-bootstrap.service",
            "capstan-router.service",
            "capstan-catalog.service",
            "capstan-swarm.service",
            "capstan-l4lb.service",
            "capstan-upgrade.path",
            "capstan-master.target",
        ],
        Role::Agent => &[
            "capstan-agent.service",
            "capstan-l4lb.service",
            // The node endpoint only (status, rolling upgrades: crate::upgrade).
            "capstan-bootstrap.service",
            "capstan-upgrade.path",
            "capstan-agent.target",
        ],
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, ActivateError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| ActivateError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ActivateError::Command {
            command,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_owned(),
        })
    }
}

/// `docker load`s every image archive the package ships (agents run tasks from them; nothing
/// is pulled from a registry). Returns how many archives were loaded.
pub fn load_images(dir: &Path) -> Result<usize, ActivateError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut archives: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    archives.sort();
    for archive in &archives {
        let path = archive.to_string_lossy();
        run("docker", &["load", "--quiet", "--input", &path])?;
    }
    Ok(archives.len())
}

/// Enables and (re)starts the role's units.
pub fn start_role(role: Role) -> Result<(), ActivateError> {
    run("systemctl", &["daemon-reload"])?;
    let mut args = vec!["enable", "--now"];
    args.extend_from_slice(units(role));
    run("systemctl", &args)?;
    Ok(())
}

/// Stops and disables the role's units (for `cluster leave` and the uninstaller).
pub fn stop_role(role: Role) -> Result<(), ActivateError> {
    let mut args = vec!["disable", "--now"];
    args.extend_from_slice(units(role));
    run("systemctl", &args)?;
    Ok(())
}

async fn poll<F, Fut>(what: &str, mut check: F) -> Result<(), ActivateError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + UP_TIMEOUT;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ActivateError::Timeout { what: what.into() });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until coord at `endpoints` has a leader and answers reads.
pub async fn wait_for_coord(
    security: &ClusterSecurity,
    endpoints: &[String],
) -> Result<(), ActivateError> {
    let client = crate::state::coord_client(security, endpoints.iter()).map_err(|e| {
        ActivateError::Command {
            command: "coord client".into(),
            output: capstan_types::Chain(&e).to_string(),
        }
    })?;
    poll("coord answering", || {
        let client = client.clone();
        async move { client.get("/capstan/cluster/info").await.is_ok() }
    })
    .await
}

/// The masters' API as this node's tools reach it: `(client, scheme)`, https with the node's
/// certificate in a strict cluster (which a master takes as a node's credential), plain HTTP
/// otherwise.
fn master_http(
    security: &ClusterSecurity,
) -> Result<(reqwest::Client, &'static str), ActivateError> {
    let failed = |output: String| ActivateError::Command {
        command: "master client".into(),
        output,
    };
    let Some(tls) = security
        .client_tls()
        .map_err(|e| failed(capstan_types::Chain(&e).to_string()))?
    else {
        return Ok((capstan_http_client::client(), "http"));
    };
    let http = capstan_http_client::with_tls(capstan_http_client::builder(), &tls)
        .build()
        .map_err(|e| failed(capstan_types::Chain(&e).to_string()))?;
    Ok((http, "https"))
}

/// Waits until a master lists an agent with this `hostname` as active.
pub async fn wait_for_agent(
    security: &ClusterSecurity,
    master: SocketAddr,
    hostname: &str,
) -> Result<(), ActivateError> {
    let (http, scheme) = master_http(security)?;
    let url = format!("{scheme}://{master}/master/slaves");
    poll(&format!("the master listing agent {hostname}"), || {
        let http = http.clone();
        let url = url.clone();
        async move {
            let Ok(resp) = http.get(&url).timeout(Duration::from_secs(5)).send().await else {
                return false;
            };
            let Ok(v) = resp.json::<serde_json::Value>().await else {
                return false;
            };
            v["slaves"].as_array().is_some_and(|agents| {
                agents
                    .iter()
                    .any(|a| a["hostname"] == hostname && a["active"] != false)
            })
        }
    })
    .await
}

/// Drains the agent called `hostname` through the master's operator API (`DRAIN_AGENT`
/// with `mark_gone`: its tasks are killed, so their schedulers start them elsewhere, and the
/// agent is then forgotten), and waits until it runs nothing. An agent the master does not
/// know is already drained.
///
/// In a strict cluster the call carries this node's certificate: a master's may drain, an
/// agent's may not (an operator drains it, then `cluster leave --no-drain`).
pub async fn drain_agent(
    security: &ClusterSecurity,
    master: SocketAddr,
    hostname: &str,
) -> Result<(), ActivateError> {
    let (http, scheme) = master_http(security)?;
    let failed = |output: String| ActivateError::Command {
        command: format!("DRAIN_AGENT {hostname}"),
        output,
    };
    let agents = |http: reqwest::Client| async move {
        let v: serde_json::Value = http
            .get(format!("{scheme}://{master}/master/slaves"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(v["slaves"].as_array().cloned().unwrap_or_default())
    };
    let listed = agents(http.clone()).await.map_err(failed)?;
    let Some(id) = listed
        .iter()
        .find(|a| a["hostname"] == hostname)
        .and_then(|a| a["id"].as_str())
        .map(str::to_owned)
    else {
        return Ok(());
    };
    let call = serde_json::json!({
        "type": "DRAIN_AGENT",
        "drain_agent": {"agent_id": {"value": id}, "mark_gone": true},
    });
    let resp = http
        .post(format!("{scheme}://{master}/api/v1"))
        .json(&call)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(failed(format!("{status}: {body}")));
    }
    poll(&format!("agent {hostname} drained"), || {
        let http = http.clone();
        let id = id.clone();
        async move {
            let Ok(listed) = agents(http).await else {
                return false;
            };
            listed
                .iter()
                .find(|a| a["id"] == id.as_str())
                .is_none_or(|a| {
                    let used = &a["used_resources"];
                    used["cpus"].as_f64().unwrap_or(0.0) == 0.0
                        && used["mem"].as_f64().unwrap_or(0.0) == 0.0
                })
        }
    })
    .await
}

/// The master HTTP address of a master host.
pub fn master_api(host: std::net::IpAddr) -> SocketAddr {
    SocketAddr::new(host, ports::MASTER)
}

/// coord's client address on a master host.
pub fn coord_endpoint(host: std::net::IpAddr) -> String {
    SocketAddr::new(host, ports::COORD).to_string()
}
