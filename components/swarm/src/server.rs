//! `Server::start`: binds the Docker API, loads the container records from coord, starts
//! the identity verifier when tokens are required, the coord writer and the framework, and
//! returns a handle.

use std::net::SocketAddr;
use std::time::Duration;

use capstan_runtime::{ConfigProblem, Validate};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long start waits for coord to answer.
const COORD_WAIT: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_millis(500);

use crate::config::{Config, http_url};
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
}

pub struct Server;

#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn wait(self) -> capstan_runtime::Exit {
        let _ = self.task.await;
        capstan_runtime::Exit::Requested
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
        let coord = if config.coord_endpoints.is_empty() {
            None
        } else {
            let endpoints: Vec<String> =
                config.coord_endpoints.iter().map(|e| http_url(e)).collect();
            Some(capstan_coord_client::Client::new(endpoints).map_err(StartError::Coord)?)
        };
        let store = Store::new(coord.clone(), &config.coord_prefix);
        // coord may still be electing when swarm starts with it: retry for a while.
        let deadline = tokio::time::Instant::now() + COORD_WAIT;
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
        let iam = match (&coord, config.auth.required) {
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap_or_default();
        info!(
            containers = containers.len(),
            auth = config.auth.required,
            "Loaded container records"
        );
        let (swarm, jobs) = Swarm::new(config.clone(), store, containers, networks, http, iam);
        let writer = tokio::spawn(write_records(swarm.clone(), jobs));
        let scheduler = tokio::spawn(crate::scheduler::run(swarm.clone(), shutdown.clone()));
        let app = crate::http::router(swarm);
        info!(addr = %addr, masters = ?config.masters, "Docker API listening");
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "Docker API stopped");
            }
            stop.cancel();
            let _ = scheduler.await;
            writer.abort();
        });
        Ok(ServerHandle {
            addr,
            shutdown,
            task,
        })
    }
}
