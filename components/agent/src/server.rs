//! `Server::start`: recover, bind, serve, and keep an eye on the Docker engine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use capstan_runtime::auth::{Guard, SecurityMode};
use capstan_runtime::{ConfigProblem, TlsServing, Validate};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::containerizer::docker::DockerContainerizer;
use crate::http::{HttpState, router};
use crate::manager::{ManagerConfig, ManagerStartError, TaskManager, TaskManagerHandle};
use crate::master::LinkConfig;
use crate::resources::{AgentResources, parse_attribute};

/// How often the engine is pinged.
const DOCKER_PING: Duration = Duration::from_secs(2);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigProblem>),
    /// The work dir is open to other users (it holds checkpoints and sandboxes).
    #[error(transparent)]
    StateDir(capstan_runtime::PermissionError),
    #[error("cannot bind {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot set up the Docker client")]
    Docker(#[source] bollard::errors::Error),
    #[error("cannot recover")]
    Recover(#[from] ManagerStartError),
    #[error("cannot load the node's TLS identity")]
    Tls(#[source] capstan_runtime::tls::TlsError),
    #[error("the coord endpoints are not usable")]
    Coord(#[source] capstan_coord_client::ClientError),
    #[error("cannot load the identity records for verifying credentials")]
    Identity(#[source] capstan_iam::IamError),
}

/// The guard in front of the API, how the port speaks TLS, and the TLS the master link
/// speaks, as the `security` section says.
struct Security {
    guard: Guard,
    serving: Option<TlsServing>,
    client: Option<Arc<rustls::ClientConfig>>,
}

async fn security(config: &Config, shutdown: &CancellationToken) -> Result<Security, StartError> {
    let node_tls = config.security.node_tls().map_err(StartError::Tls)?;
    let serving = config.security.serving(node_tls.as_ref());
    let policy: capstan_runtime::auth::Policy = Arc::new(crate::http::access);
    let (guard, client) = match config.security.mode {
        SecurityMode::Permissive => (Guard::permissive("agent"), None),
        SecurityMode::Strict => {
            let authenticator: Option<Arc<dyn capstan_runtime::auth::Authenticator>> =
                if config.coord_endpoints.is_empty() {
                    info!("No coord endpoints: only the cluster's node certificates may call");
                    None
                } else {
                    let opts = capstan_coord_client::ClientOptions {
                        tls: node_tls.as_ref().map(|t| t.client_config()),
                        ..capstan_coord_client::ClientOptions::default()
                    };
                    let coord = capstan_coord_client::Client::with_options(
                        config.coord_endpoints.iter().map(String::as_str),
                        opts,
                    )
                    .map_err(StartError::Coord)?;
                    let iam = capstan_iam::Iam::verifier(
                        coord,
                        capstan_iam::Options::default(),
                        shutdown.clone(),
                    )
                    .await
                    .map_err(StartError::Identity)?;
                    Some(Arc::new(iam))
                };
            let client = node_tls.as_ref().map(|t| t.client_config());
            (Guard::strict("agent", authenticator, policy), client)
        }
    };
    Ok(Security {
        guard,
        serving,
        client,
    })
}

/// A running agent.
pub struct ServerHandle {
    local_addr: SocketAddr,
    tasks: TaskManagerHandle,
    shutdown: CancellationToken,
    joins: Vec<JoinHandle<()>>,
    docker_up: watch::Receiver<bool>,
    master_connected: watch::Receiver<bool>,
}

impl ServerHandle {
    /// The bound HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The local task API (launch, kill, acknowledge, snapshots, status updates).
    pub fn tasks(&self) -> &TaskManagerHandle {
        &self.tasks
    }

    /// The agent id (from the checkpoint, or fresh).
    pub fn agent_id(&self) -> String {
        self.tasks.snapshot().agent_id.clone()
    }

    /// Whether a master subscription is open.
    pub fn master_connected(&self) -> bool {
        *self.master_connected.borrow()
    }

    /// Whether the Docker engine currently answers.
    pub fn docker_up(&self) -> bool {
        *self.docker_up.borrow()
    }

    /// Waits until every task of the agent ended (after a shutdown).
    pub async fn wait(self) -> capstan_runtime::Exit {
        for j in self.joins {
            let _ = j.await;
        }
        capstan_runtime::Exit::Requested
    }

    /// Stops the agent. Containers keep running; the next start reattaches to them.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The agent daemon.
pub struct Server;

impl Server {
    /// Validates the config, recovers checkpointed tasks, binds the HTTP API and starts
    /// serving. Cancel `shutdown` (or call [`ServerHandle::shutdown`]) to stop.
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(StartError::Config(problems));
        }
        // 0700; refused when others can reach it once it holds checkpoints (issue #19).
        capstan_runtime::prepare_state_dir(&config.work_dir, &["meta"])
            .map_err(StartError::StateDir)?;
        let shutdown = shutdown.child_token();
        let security = security(&config, &shutdown).await?;
        let hostname = config.hostname.clone().unwrap_or_else(system_hostname);
        let advertise_ip = config.effective_advertise_ip();

        let docker =
            DockerContainerizer::connect(config.docker.host.as_deref(), config.docker.pull_timeout)
                .await
                .map_err(StartError::Docker)?
                .with_image_stores(
                    crate::containerizer::docker::image_store_urls(
                        &config.masters,
                        crate::containerizer::docker::IMAGE_STORE_PORT,
                        if security.client.is_some() {
                            "https"
                        } else {
                            "http"
                        },
                    ),
                    security.client.as_deref(),
                );
        let docker = Arc::new(docker);
        let initially_up = docker.ping().await;
        if initially_up {
            info!("Connected to the Docker engine");
        } else {
            warn!(
                "The Docker engine is not reachable; the agent reports itself unhealthy until it is"
            );
        }
        let (docker_up_tx, docker_up) = watch::channel(initially_up);
        let mut joins = Vec::new();
        {
            let docker = docker.clone();
            let shutdown = shutdown.clone();
            joins.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(DOCKER_PING) => {}
                    }
                    let up = docker.ping().await;
                    if *docker_up_tx.borrow() != up {
                        if up {
                            info!("The Docker engine is reachable again");
                        } else {
                            warn!("The Docker engine is not reachable");
                        }
                    }
                    docker_up_tx.send_replace(up);
                }
            }));
        }

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| StartError::Bind(config.listen, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| StartError::Bind(config.listen, e))?;
        let manager_cfg = ManagerConfig {
            work_dir: config.work_dir.clone(),
            hostname: hostname.clone(),
            advertise_ip,
            sandbox_mount: config.docker.sandbox_mount.clone(),
            policy: config.docker.policy(),
            pids_limit: config.docker.pids_limit,
            cpu_quota: config.docker.cpu_quota,
            extra_labels: config.docker.extra_labels.clone(),
            default_kill_grace: config.default_kill_grace,
            status_update_retry: config.status_update_retry,
            executor_reregistration_timeout: config.executor_reregistration_timeout,
            kill_orphans: config.docker.kill_orphans,
            agent_endpoint: SocketAddr::new(advertise_ip, local_addr.port()),
        };
        let (tasks, manager_join) = TaskManager::start(
            manager_cfg,
            Some(docker.clone()),
            docker_up.clone(),
            shutdown.clone(),
        )
        .await?;
        joins.push(manager_join);

        let (master_tx, master_connected) = watch::channel(false);
        let mut flags = BTreeMap::new();
        flags.insert("work_dir".to_owned(), config.work_dir.display().to_string());
        flags.insert("port".to_owned(), local_addr.port().to_string());
        flags.insert("hostname".to_owned(), hostname.clone());
        let resources = AgentResources::detect(&config);
        let attributes: Vec<_> = config
            .attributes
            .iter()
            .filter_map(|a| parse_attribute(a).ok())
            .collect();
        if config.masters.is_empty() {
            info!("No masters configured; running standalone");
        } else {
            let link = LinkConfig {
                masters: config.masters.clone(),
                hostname: hostname.clone(),
                ip: advertise_ip.to_string(),
                port: local_addr.port(),
                resources: resources.to_proto(),
                attributes: attributes.clone(),
                domain: config.domain.as_ref().map(|d| d.to_proto()),
                update_retry: config.status_update_retry,
                tls: security.client.clone(),
            };
            joins.push(tokio::spawn(crate::master::run(
                link,
                tasks.clone(),
                master_tx,
                shutdown.clone(),
            )));
        }
        let state = Arc::new(HttpState {
            tasks: tasks.clone(),
            resources,
            attributes,
            hostname,
            advertise: SocketAddr::new(advertise_ip, local_addr.port()),
            work_dir: config.work_dir.clone(),
            docker_up: docker_up.clone(),
            master_connected: master_connected.clone(),
            started: Instant::now(),
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            flags,
            docker: Some(docker.client().clone()),
            allow_privileged: config.docker.allow_privileged,
        });
        let app = router(state);
        {
            let shutdown = shutdown.clone();
            joins.push(tokio::spawn(async move {
                let limits = capstan_runtime::HttpLimits::default();
                let serve = capstan_runtime::serve_secured(
                    listener,
                    app,
                    limits,
                    security.guard,
                    security.serving,
                    shutdown,
                );
                if let Err(e) = serve.await {
                    warn!(error = %capstan_runtime::Chain(&e), "HTTP server failed");
                }
            }));
        }
        info!(addr = %local_addr, agent_id = %tasks.snapshot().agent_id, "Listening on {local_addr}");
        Ok(ServerHandle {
            local_addr,
            tasks,
            shutdown,
            joins,
            docker_up,
            master_connected,
        })
    }
}
