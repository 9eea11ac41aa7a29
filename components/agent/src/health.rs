//! Health checks run by the agent (Mesos `HealthCheck`: COMMAND inside the container, HTTP,
//! TCP). Results become `TaskStatus.healthy` updates when health changes; after
//! `consecutive_failures` failures outside the grace period the task is killed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_proto::mesos::v1::{HealthCheck, TaskInfo, container_info, health_check};
use tokio::time::Instant;
use tracing::debug;

use crate::containerizer::{ContainerRef, Containerizer, Launched};
use crate::manager::{EventSender, TaskEvent};
use crate::spec::command_line;

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v.max(0.0)).unwrap_or(Duration::ZERO)
}

/// Where a network check connects: the container's IP and container port for bridged and
/// user networks (a mapped host port is translated), else loopback and the port as given.
pub fn target(info: &TaskInfo, launched: &Launched, port: u32) -> (IpAddr, u32) {
    let docker = info.container.as_ref().and_then(|c| c.docker.as_ref());
    let bridged = docker.is_some_and(|d| {
        matches!(
            d.network(),
            container_info::docker_info::Network::Bridge
                | container_info::docker_info::Network::User
        )
    });
    match (&launched.ip, bridged) {
        (Some(ip), true) => {
            let ip: IpAddr = ip.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
            let mapped = docker
                .into_iter()
                .flat_map(|d| d.port_mappings.iter())
                .find(|m| m.host_port == port && m.container_port != 0)
                .map(|m| m.container_port)
                .unwrap_or(port);
            (ip, mapped)
        }
        _ => (IpAddr::from([127, 0, 0, 1]), port),
    }
}

/// One check; `Err` says why it failed.
async fn check_once(
    hc: &HealthCheck,
    info: &TaskInfo,
    launched: &Launched,
    container: &ContainerRef,
    cz: &Arc<dyn Containerizer>,
    client: &reqwest::Client,
) -> Result<(), String> {
    let timeout = secs(hc.timeout_seconds());
    let kind = match hc.r#type() {
        health_check::Type::Unknown if hc.http.is_some() => health_check::Type::Http,
        health_check::Type::Unknown if hc.tcp.is_some() => health_check::Type::Tcp,
        health_check::Type::Unknown if hc.command.is_some() => health_check::Type::Command,
        t => t,
    };
    match kind {
        health_check::Type::Http => {
            let http = hc.http.as_ref().ok_or("HTTP check without http")?;
            let (ip, port) = target(info, launched, http.port);
            let scheme = http.scheme.as_deref().unwrap_or("http");
            let path = http.path.as_deref().unwrap_or("/");
            let host = match ip {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            };
            let url = format!("{scheme}://{host}:{port}{path}");
            let resp = client
                .get(&url)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let code = u32::from(resp.status().as_u16());
            let ok = if http.statuses.is_empty() {
                (200..400).contains(&code)
            } else {
                http.statuses.contains(&code)
            };
            if ok {
                Ok(())
            } else {
                Err(format!("GET {url} answered {code}"))
            }
        }
        health_check::Type::Tcp => {
            let tcp = hc.tcp.as_ref().ok_or("TCP check without tcp")?;
            let (ip, port) = target(info, launched, tcp.port);
            let port = u16::try_from(port).map_err(|_| format!("{port} is not a port"))?;
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, port))).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect {ip}:{port}: {e}")),
                Err(_) => Err(format!("connect {ip}:{port}: timed out")),
            }
        }
        health_check::Type::Command => {
            let command = hc.command.as_ref().ok_or("COMMAND check without command")?;
            let (entry, cmd) = command_line(Some(command));
            let argv: Vec<String> = entry
                .into_iter()
                .flatten()
                .chain(cmd.into_iter().flatten())
                .collect();
            if argv.is_empty() {
                return Err("COMMAND check has no command".into());
            }
            let env = command
                .environment
                .iter()
                .flat_map(|e| e.variables.iter())
                .map(|v| (v.name.clone(), v.value.clone().unwrap_or_default()))
                .collect();
            match cz.exec(container, argv, env, timeout).await {
                Ok(0) => Ok(()),
                Ok(code) => Err(format!("command exited with status {code}")),
                Err(e) => Err(e.to_string()),
            }
        }
        health_check::Type::Unknown => Err("health check has no type".into()),
    }
}

/// Runs until aborted by the task's supervisor.
pub async fn run(
    hc: HealthCheck,
    task_id: String,
    container: ContainerRef,
    launched: Launched,
    info: TaskInfo,
    cz: Arc<dyn Containerizer>,
    events: EventSender,
) {
    let started = Instant::now();
    let grace = secs(hc.grace_period_seconds());
    let interval = secs(hc.interval_seconds()).max(Duration::from_millis(100));
    let max_failures = hc.consecutive_failures().max(1);
    let client = capstan_http_client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default();
    tokio::time::sleep(secs(hc.delay_seconds())).await;
    let mut ever_healthy = false;
    let mut failures = 0u32;
    loop {
        match check_once(&hc, &info, &launched, &container, &cz, &client).await {
            Ok(()) => {
                failures = 0;
                ever_healthy = true;
                events
                    .send(
                        &task_id,
                        &container.container_id,
                        TaskEvent::Health {
                            healthy: true,
                            kill: false,
                        },
                    )
                    .await;
            }
            Err(why) => {
                debug!(task_id, %why, "Health check failed");
                if ever_healthy || started.elapsed() >= grace {
                    failures += 1;
                    let kill = failures >= max_failures;
                    events
                        .send(
                            &task_id,
                            &container.container_id,
                            TaskEvent::Health {
                                healthy: false,
                                kill,
                            },
                        )
                        .await;
                    if kill {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}
