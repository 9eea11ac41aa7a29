//! The daemon: validates its config, binds the API, and serves until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_runtime::{ConfigProblem, Validate};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, http_url};
use crate::frameworks::Masters;
use crate::http::{AppState, router};
use crate::installed::Apps;
use crate::repos::Repos;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigProblem>),
    #[error("cannot bind the API on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the coord client")]
    Coord(#[source] capstan_coord_client::ClientError),
}

/// The `capstan daemon catalog` daemon.
pub struct Server;

/// A running catalog.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Where the API listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server stopped (after shutdown was requested).
    pub async fn wait(self) -> capstan_runtime::Exit {
        let _ = self.task.await;
        capstan_runtime::Exit::Requested
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

impl Server {
    /// Validates `config`, binds `config.listen` and serves.
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(StartError::Config(problems));
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Server::start_on(config, listener, shutdown).await
    }

    /// Serves on an already bound `listener` (tests bind port 0).
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
        let ttl = Duration::from_secs(config.repository_cache_secs);
        let repos = if config.coord_endpoints.is_empty() {
            Repos::in_memory(ttl)
        } else {
            let endpoints: Vec<String> =
                config.coord_endpoints.iter().map(|e| http_url(e)).collect();
            let client = capstan_coord_client::Client::new(endpoints).map_err(StartError::Coord)?;
            Repos::in_coord(client, &config.coord_prefix, ttl)
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default();
        let state = Arc::new(AppState {
            repos,
            apps: Apps::new(&config.apps),
            masters: Masters::new(&config.masters, http.clone()),
            http,
            images: crate::images::ImageStore::new(&config.images_dir),
        });
        let app = router(state);
        let max_image_bytes = config.max_image_bytes;
        let shutdown = shutdown.child_token();
        let stop = shutdown.clone();
        info!(addr = %addr, apps = ?config.apps, images = %config.images_dir.display(), "Catalog listening");
        let task = tokio::spawn(async move {
            // Image uploads stream to disk: the body limit is the largest image; the JSON
            // endpoints keep axum's own smaller limits.
            let limits = capstan_runtime::HttpLimits {
                max_body_bytes: usize::try_from(max_image_bytes).unwrap_or(usize::MAX),
                ..capstan_runtime::HttpLimits::default()
            };
            let serve = capstan_runtime::serve(listener, app, limits, stop);
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "Catalog API stopped");
            }
        });
        Ok(ServerHandle {
            addr,
            shutdown,
            task,
        })
    }
}
