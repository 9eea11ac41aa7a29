//! The daemon: validates its config, binds the API, and serves until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_runtime::{ConfigProblem, Validate};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
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
    #[error("cannot secure the API")]
    Security(#[source] capstan_iam::GuardError),
    #[error("cannot load the node's TLS identity")]
    Tls(#[source] capstan_runtime::tls::TlsError),
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
        // In strict mode the catalog's own calls (coord, apps, the masters) present the node's
        // certificate over https, as every daemon's do.
        let client_tls = config.security.client_tls().map_err(StartError::Tls)?;
        let coord = if config.coord_endpoints.is_empty() {
            None
        } else {
            let opts = capstan_coord_client::ClientOptions {
                tls: client_tls.clone(),
                ..capstan_coord_client::ClientOptions::default()
            };
            Some(
                capstan_coord_client::Client::with_options(&config.coord_endpoints, opts)
                    .map_err(StartError::Coord)?,
            )
        };
        let repos = match &coord {
            None => Repos::in_memory(ttl),
            Some(client) => Repos::in_coord(client.clone(), &config.coord_prefix, ttl),
        };
        let outbound = |b: reqwest::ClientBuilder| match &client_tls {
            Some(tls) => capstan_http_client::with_tls(b, tls),
            None => b,
        };
        let scheme = if client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        // Resources of repositories (`/package/resource`) come from anywhere a repository
        // names: that client trusts the system's roots and presents no node certificate.
        let http = capstan_http_client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default();
        let masters_http = outbound(capstan_http_client::builder())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_default();
        let apps = if client_tls.is_some() {
            let apps_http = outbound(capstan_http_client::builder())
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default();
            Apps::with_http(&config.apps, scheme, apps_http)
        } else {
            Apps::new(&config.apps)
        };
        let state = Arc::new(AppState {
            repos,
            apps,
            masters: Masters::new(&config.masters, scheme, masters_http),
            http,
            images: crate::images::ImageStore::new(&config.images_dir),
        });
        let app = router(state);
        let max_image_bytes = config.max_image_bytes;
        let shutdown = shutdown.child_token();
        let (guard, tls) = capstan_iam::secure_api(
            "catalog",
            &config.security,
            coord.as_ref(),
            Arc::new(crate::http::access),
            &shutdown,
        )
        .await
        .map_err(StartError::Security)?;
        let stop = shutdown.clone();
        info!(addr = %addr, apps = ?config.apps, images = %config.images_dir.display(), "Catalog listening");
        let task = tokio::spawn(async move {
            // Image uploads stream to disk: the body limit is the largest image; the JSON
            // endpoints keep axum's own smaller limits.
            let limits = capstan_runtime::HttpLimits {
                max_body_bytes: usize::try_from(max_image_bytes).unwrap_or(usize::MAX),
                ..capstan_runtime::HttpLimits::default()
            };
            let serve = capstan_runtime::serve_secured(listener, app, limits, guard, tls, stop);
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
