//! `Server::start`: binds the Docker API, starts the identity verifier when tokens are
//! required (in strict mode the guard's, `capstan_iam::secure_api`, over TLS with the node
//! certificate) and returns a handle. Without coord the swarm leads at once: it loads its records
//! (in memory), starts the writer and the framework. With coord it campaigns first
//! ([`crate::leader`]) and answers as a standby until elected.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use capstan_runtime::{ConfigProblem, Validate};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long start waits for coord to answer.
const COORD_WAIT: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_millis(500);
/// How long a stopping swarm lets open requests finish.
const SERVE_DRAIN: Duration = Duration::from_secs(10);

use crate::config::Config;
use crate::leader::{Front, Stopped, candidate_address};
use crate::state::{Swarm, write_records};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigProblem>),
    #[error("cannot bind the Docker API on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the coord client")]
    Coord(#[source] capstan_coord_client::ClientError),
    #[error("cannot load the container records")]
    Load(#[source] StoreError),
    #[error("cannot start the token verifier")]
    Iam(#[source] capstan_iam::IamError),
    #[error("cannot load the node's TLS identity")]
    Tls(#[source] capstan_runtime::tls::TlsError),
    #[error("cannot secure the Docker API")]
    Security(#[source] capstan_iam::GuardError),
}

pub struct Server;

#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<capstan_runtime::Exit>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Why the swarm stopped: `Requested` after a shutdown, `Failed` when a leader lost its
    /// lease (or could not load its records), so the process exits non-zero and restarts.
    pub async fn wait(self) -> capstan_runtime::Exit {
        self.task
            .await
            .unwrap_or_else(capstan_runtime::Exit::failed)
    }

    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

impl Server {
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Server::start_on(config, listener, shutdown).await
    }

    /// Serves on `listener` (tests bind port 0).
    pub async fn start_on(
        config: Config,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(StartError::Config(problems));
        }
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let shutdown = shutdown.child_token();
        // In strict mode swarm's own calls (coord, the masters, the agents) present the node's
        // certificate over https.
        let client_tls = config.security.client_tls().map_err(StartError::Tls)?;
        let coord = if config.coord_endpoints.is_empty() {
            None
        } else {
            // Bare endpoints are http, or https with the node certificate in strict mode.
            let opts = capstan_coord_client::ClientOptions {
                tls: client_tls.clone(),
                ..capstan_coord_client::ClientOptions::default()
            };
            Some(
                capstan_coord_client::Client::with_options(&config.coord_endpoints, opts)
                    .map_err(StartError::Coord)?,
            )
        };
        let store = Store::new(coord.clone(), &config.coord_prefix);
        // coord may still be electing when swarm starts with it: retry for a while.
        let deadline = tokio::time::Instant::now() + COORD_WAIT;
        // In strict mode the guard in front of the port verifies every caller (with roles);
        // swarm's own token check is the permissive mode's.
        let (guard, serving) = loop {
            match capstan_iam::secure_api(
                "swarm",
                &config.security,
                coord.as_ref(),
                Arc::new(crate::http::access),
                &shutdown,
            )
            .await
            {
                Ok(g) => break g,
                Err(e @ capstan_iam::GuardError::Identity(_))
                    if tokio::time::Instant::now() < deadline =>
                {
                    warn!(error = %capstan_types::Chain(&e), "Cannot load the identity records yet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => return Err(StartError::Security(e)),
            }
        };
        let token_check = config.auth.required && !config.strict();
        let iam = match (&coord, token_check) {
            (Some(coord), true) => {
                let mut opts = capstan_iam::Options::default();
                if let Some(p) = &config.auth.iam_prefix {
                    opts.prefix = p.clone();
                }
                loop {
                    match capstan_iam::Iam::start(coord.clone(), opts.clone(), shutdown.clone())
                        .await
                    {
                        Ok(iam) => break Some(iam),
                        Err(e) if tokio::time::Instant::now() < deadline => {
                            warn!(error = %capstan_types::Chain(&e), "Cannot start the token verifier yet; retrying");
                            tokio::time::sleep(RETRY).await;
                        }
                        Err(e) => return Err(StartError::Iam(e)),
                    }
                }
            }
            _ => None,
        };
        let mut http = capstan_http_client::builder();
        if let Some(tls) = &client_tls {
            http = capstan_http_client::with_tls(http, tls);
        }
        let http = http
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap_or_default();
        let me = candidate_address(addr, &config.hostname);
        let (leader_tx, leader_rx) = watch::channel(None);
        let front = Arc::new(Front {
            swarm: OnceLock::new(),
            leader: leader_rx,
            iam: iam.clone(),
            me: me.clone(),
        });
        let parts = Parts {
            config: config.clone(),
            store,
            http,
            client_tls,
            iam,
            shutdown: shutdown.clone(),
        };
        // Without coord the one swarm leads: its records load before start returns, as
        // before the election existed.
        let mode = match coord {
            None => {
                let running = parts.run(deadline).await?;
                let _ = front.swarm.set(running.swarm.clone());
                Mode::Alone(running)
            }
            Some(coord) => Mode::Campaign(coord, Box::new(parts)),
        };
        let app = crate::http::front_router(front.clone());
        info!(addr = %addr, masters = ?config.masters, mode = ?config.security.mode, tls = serving.is_some(), "Docker API listening");
        let stop = shutdown.clone();
        let serve_stop = shutdown.clone();
        let mut serve = tokio::spawn(async move {
            let limits = capstan_runtime::HttpLimits::default();
            let serve = capstan_runtime::serve_secured(
                listener,
                app,
                limits,
                guard,
                serving,
                serve_stop.clone(),
            );
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "Docker API stopped");
            }
            serve_stop.cancel();
        });
        let ttl = Duration::from_secs(config.leader_lease_ttl_secs);
        let election_prefix = capstan_coord_client::keyspace::election(&config.coord_prefix);
        let task = tokio::spawn(async move {
            let (exit, running) = match mode {
                Mode::Alone(running) => {
                    stop.cancelled().await;
                    (capstan_runtime::Exit::Requested, Some(running))
                }
                Mode::Campaign(coord, parts) => {
                    lead(
                        &coord,
                        &election_prefix,
                        ttl,
                        &me,
                        *parts,
                        &front,
                        leader_tx,
                    )
                    .await
                }
            };
            stop.cancel();
            // Long streams (`events`, `logs -f`, attach) need not end by themselves: a stopping
            // swarm waits a while, then drops them.
            if tokio::time::timeout(SERVE_DRAIN, &mut serve).await.is_err() {
                serve.abort();
            }
            if let Some(running) = running {
                running.stop().await;
            }
            exit
        });
        Ok(ServerHandle {
            addr,
            shutdown,
            task,
        })
    }
}

/// Campaigns, then leads until `parts.shutdown` is cancelled or the lease is lost; the
/// standby's view of the leader is kept meanwhile. Returns why it stopped and what ran.
async fn lead(
    coord: &capstan_coord_client::Client,
    election_prefix: &str,
    ttl: Duration,
    me: &str,
    parts: Parts,
    front: &Front,
    leader_tx: watch::Sender<Option<String>>,
) -> (capstan_runtime::Exit, Option<Running>) {
    use capstan_runtime::Exit;
    let token = parts.shutdown.clone();
    let election = crate::leader::election(coord, election_prefix);
    let observer = tokio::spawn(crate::leader::observe(
        election.clone(),
        leader_tx,
        token.clone(),
    ));
    let mut held = match crate::leader::campaign(coord, &election, ttl, me, &token).await {
        Ok(Some(held)) => held,
        Ok(None) => return (Exit::Requested, None),
        Err(e) => {
            tracing::error!(error = %e, "Cannot campaign for swarm leadership; stopping");
            return (Exit::failed(e), None);
        }
    };
    let deadline = tokio::time::Instant::now() + COORD_WAIT;
    let running = tokio::select! {
        r = parts.run(deadline) => r,
        _ = token.cancelled() => {
            held.release().await;
            return (Exit::Requested, None);
        }
        _ = held.lost() => {
            tracing::error!("Lost swarm leadership while loading; stopping this instance");
            return (Exit::failed(Stopped::LostLeadership), None);
        }
    };
    let running = match running {
        Ok(r) => r,
        Err(e) => {
            held.release().await;
            return (Exit::failed(e), None);
        }
    };
    let _ = front.swarm.set(running.swarm.clone());
    let exit = tokio::select! {
        _ = token.cancelled() => Exit::Requested,
        _ = held.lost() => {
            tracing::error!("Lost swarm leadership; stopping this instance");
            Exit::failed(Stopped::LostLeadership)
        }
    };
    token.cancel();
    let _ = observer.await;
    // Stop the framework before the lease goes, so the next leader's subscription is not
    // knocked off by this one.
    running.stop().await;
    held.release().await;
    (exit, None)
}

/// A swarm without coord leads alone; with coord it campaigns.
enum Mode {
    Alone(Running),
    Campaign(capstan_coord_client::Client, Box<Parts>),
}

/// What a swarm needs to start leading.
struct Parts {
    config: Config,
    store: Store,
    http: reqwest::Client,
    client_tls: Option<Arc<rustls::ClientConfig>>,
    iam: Option<capstan_iam::Iam>,
    shutdown: CancellationToken,
}

/// A leading swarm's state and tasks.
struct Running {
    swarm: Arc<Swarm>,
    scheduler: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Running {
    /// Waits for the scheduler (it stops with the shutdown token) and ends the writer.
    async fn stop(self) {
        let _ = self.scheduler.await;
        self.writer.abort();
    }
}

impl Parts {
    /// Loads the records (retrying until `deadline`) and starts the writer and the framework.
    async fn run(self, deadline: tokio::time::Instant) -> Result<Running, StartError> {
        let Parts {
            config,
            store,
            http,
            client_tls,
            iam,
            shutdown,
        } = self;
        let containers = loop {
            match store.load().await {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    warn!(error = %capstan_types::Chain(&e), "Cannot load the container records yet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => return Err(StartError::Load(e)),
            }
        };
        // A container that waited in its restart backoff when swarm stopped starts now.
        let containers: Vec<crate::model::Container> = containers
            .into_iter()
            .map(|mut c| {
                if c.status == crate::model::Status::Restarting && !c.stop_requested {
                    c.pending_start = true;
                }
                c
            })
            .collect();
        let networks = loop {
            match store.load_networks().await {
                Ok(n) => break n,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    warn!(error = %capstan_types::Chain(&e), "Cannot load the network records yet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => return Err(StartError::Load(e)),
            }
        };
        let volumes = loop {
            match store.load_volumes().await {
                Ok(v) => break v,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    warn!(error = %capstan_types::Chain(&e), "Cannot load the volume records yet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => return Err(StartError::Load(e)),
            }
        };
        info!(
            containers = containers.len(),
            auth = config.auth.required,
            "Loaded container records"
        );
        let (swarm, jobs) = Swarm::new(
            config,
            store,
            containers,
            networks,
            crate::state::Clients { http, client_tls },
            iam,
        );
        swarm.with(|s| s.volumes = volumes.into_iter().map(|v| (v.name.clone(), v)).collect());
        let writer = tokio::spawn(write_records(swarm.clone(), jobs));
        let scheduler = tokio::spawn(crate::scheduler::run(swarm.clone(), shutdown));
        Ok(Running {
            swarm,
            scheduler,
            writer,
        })
    }
}
