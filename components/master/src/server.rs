//! Server wiring: the core task (owner of all state), its timer, and the HTTP listener.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use capstan_runtime::{ConfigProblem, Validate};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::core::{ApiError, Core};
use crate::http::{App, Leadership, dispatch};
use crate::registry::{Durability, InMemoryRegistry};

type Job = Box<dyn FnOnce(&mut Core, Instant) + Send>;

/// A cheap handle to the core task.
#[derive(Clone)]
pub(crate) struct CoreHandle {
    tx: mpsc::Sender<Job>,
    durability: Durability,
}

impl CoreHandle {
    /// Runs `f` on the core task and returns its result once every registry change made so
    /// far is durable (so a reply never acknowledges what a crash could undo); 503 if the
    /// core is gone.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Instant) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let durability = self.durability.clone();
        let (r, after) = self
            .run(move |c, now| {
                let r = f(c, now);
                (r, durability.mark())
            })
            .await?;
        if !self.durability.wait(after).await {
            return Err(shutting_down());
        }
        Ok(r)
    }

    /// Reads from the core without waiting for the registry (a read acknowledges nothing).
    pub(crate) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Core) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        self.run(move |c, _| f(c)).await
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Instant) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c, now| {
            let _ = tx.send(f(c, now));
        });
        self.tx.send(job).await.map_err(|_| shutting_down())?;
        rx.await.map_err(|_| shutting_down())
    }

    /// The registry's durability, for streams to hold back events until it catches up.
    pub(crate) fn durability(&self) -> &Durability {
        &self.durability
    }
}

/// How long an allocation asked for between ticks waits for more of the same burst.
const ALLOCATE_SOON: Duration = Duration::from_millis(20);

fn shutting_down() -> ApiError {
    ApiError {
        status: 503,
        message: "Master is shutting down".into(),
    }
}

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid master config: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigProblem>),
    #[error("invalid coord endpoints")]
    Coord(#[source] capstan_coord_client::ClientError),
    #[error("cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot secure the API")]
    Security(#[source] capstan_iam::GuardError),
}

/// The master daemon.
pub struct Server;

/// A running master.
pub struct ServerHandle {
    local_addr: SocketAddr,
    master_id: String,
    token: CancellationToken,
    core: JoinHandle<()>,
    http: JoinHandle<()>,
    election: Option<JoinHandle<()>>,
    lost_leadership: Arc<AtomicBool>,
}

impl ServerHandle {
    /// The bound HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The random master id (prefix of framework, agent and offer ids).
    pub fn master_id(&self) -> &str {
        &self.master_id
    }

    /// True once this master stopped because it lost its coord lease while leading.
    pub fn lost_leadership(&self) -> bool {
        self.lost_leadership.load(Ordering::SeqCst)
    }

    /// Waits until the server stopped, and says why: a leader that lost its coord lease
    /// stopped by itself, so the service manager restarts it as a standby.
    pub async fn wait(self) -> capstan_runtime::Exit {
        let _ = self.core.await;
        let _ = self.http.await;
        if let Some(e) = self.election {
            let _ = e.await;
        }
        if self.lost_leadership.load(Ordering::SeqCst) {
            capstan_runtime::Exit::failed(Stopped::LostLeadership)
        } else {
            capstan_runtime::Exit::Requested
        }
    }

    /// Stops the server: all streams end, the listener closes.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.wait().await;
    }
}

impl Server {
    /// Validates the config, binds, spawns the core task and the HTTP server.
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(StartError::Invalid(problems));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let ip = config
            .advertise_ip
            .unwrap_or(if local_addr.ip().is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                local_addr.ip()
            });
        let advertised = SocketAddr::new(ip, local_addr.port());
        let advertised_name = format!(
            "{}:{}",
            config.hostname.clone().unwrap_or_else(|| ip.to_string()),
            local_addr.port()
        );
        let interval = config.allocation_interval;
        let (max_connections, max_connections_per_ip) =
            (config.max_connections, config.max_connections_per_ip);
        let coord_cfg = config.coord.clone();
        let coord = if coord_cfg.is_standalone() {
            None
        } else {
            // A strict master speaks to coord with its node certificate.
            let tls = config
                .security
                .client_tls()
                .map_err(|e| StartError::Security(capstan_iam::GuardError::Tls(e)))?;
            let opts = capstan_coord_client::ClientOptions {
                tls,
                ..capstan_coord_client::ClientOptions::default()
            };
            Some(
                capstan_coord_client::Client::with_options(
                    coord_cfg.endpoints.iter().map(String::as_str),
                    opts,
                )
                .map_err(StartError::Coord)?,
            )
        };
        let mut registry_writer = None;
        let registry: Box<dyn crate::registry::Registry> = match &coord {
            None => Box::new(InMemoryRegistry::default()),
            Some(c) => {
                let (r, writer) = crate::ha::CoordRegistry::spawn(c.clone(), &coord_cfg.prefix);
                registry_writer = Some(writer);
                Box::new(r)
            }
        };
        let token = shutdown.child_token();
        let (guard, tls) = capstan_iam::secure_api(
            "master",
            &config.security,
            coord.as_ref(),
            Arc::new(crate::http::access),
            &token,
        )
        .await
        .map_err(StartError::Security)?;
        let durability = registry.durability();
        let mut core = Core::new(config, advertised, registry);
        let master_id = core.master_id().to_string();
        let (tx, mut rx) = mpsc::channel::<Job>(1024);
        let core_token = token.clone();
        let core_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // An allocation asked for between ticks, run after a short batching delay so a
            // burst of (re-)registrations costs one allocation.
            let mut soon: Option<Instant> = None;
            loop {
                let allocate_at = soon.map(tokio::time::Instant::from_std);
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => {
                            job(&mut core, Instant::now());
                            if soon.is_none() && core.take_allocation_request() {
                                soon = Some(Instant::now() + ALLOCATE_SOON);
                            }
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep_until(allocate_at.unwrap_or_else(tokio::time::Instant::now)), if allocate_at.is_some() => {
                        soon = None;
                        core.allocate(Instant::now());
                    }
                    _ = tick.tick() => core.tick(Instant::now()),
                    _ = core_token.cancelled() => break,
                }
            }
            // Dropping the core closes every stream so the HTTP server can drain.
            drop(core);
            info!("Master core stopped");
        });
        // Standalone: always the leader; with coord, the election drives this watch.
        let initial = if coord.is_some() {
            Leadership::NoLeader
        } else {
            Leadership::Leader
        };
        let (leader_tx, leader_rx) = watch::channel(initial);
        let core_handle = CoreHandle { tx, durability };
        let mut election = None;
        let lost_leadership = Arc::new(AtomicBool::new(false));
        if let (Some(client), Some(writer)) = (coord, registry_writer) {
            election = Some(tokio::spawn(crate::ha::run_election(
                crate::ha::ElectionTask {
                    client,
                    cfg: coord_cfg,
                    me: advertised_name.clone(),
                    core: core_handle.clone(),
                    leader_tx: leader_tx.clone(),
                    token: token.clone(),
                    registry_writer: writer,
                    lost: lost_leadership.clone(),
                },
            )));
        }
        let app = App {
            core: core_handle,
            leadership: leader_rx,
            advertised: advertised_name,
        };
        let router = axum::Router::new().fallback(dispatch).with_state(app);
        let http_token = token.clone();
        let http = tokio::spawn(async move {
            // The v1 APIs read bodies themselves (16 MiB, Mesos's text 413); the shared ceiling
            // sits above that so a streamed body over the limit still gets the master's answer.
            let limits = capstan_runtime::HttpLimits {
                max_body_bytes: 32 << 20,
                max_connections,
                max_connections_per_ip,
                ..capstan_runtime::HttpLimits::default()
            };
            let r =
                capstan_runtime::serve_secured(listener, router, limits, guard, tls, http_token)
                    .await;
            // Keep the leadership sender alive for as long as we serve.
            drop(leader_tx);
            if let Err(e) = r {
                warn!(error = %e, "Master HTTP server failed");
            }
        });
        info!(addr = %local_addr, master_id = %master_id, "Master listening");
        Ok(ServerHandle {
            local_addr,
            master_id,
            token,
            core: core_task,
            http,
            election,
            lost_leadership,
        })
    }
}

/// Why a master stopped by itself.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    /// The leader lost its coord lease.
    #[error("lost master leadership")]
    LostLeadership,
}
