//! The I/O shell: validates the config, serves the operator API, runs the stream follower and
//! applies every new table to the data plane, counting each application in [`Metrics`].

use std::net::SocketAddr;
use std::sync::Arc;

use capstan_runtime::auth::{Guard, Policy, SecurityMode};
use capstan_runtime::{ConfigProblem, TlsServing, Validate};
use capstan_types::Chain;
use capstan_types::vip::VipTable;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, DataPlane};
use crate::follower::{self, FollowStatus, FollowerConfig};
use crate::http::ApiState;
use crate::metrics::Metrics;
use crate::netdev::{self, VipDevice};
use crate::nft::{self, KernelPlane, NftPlane};
use crate::proxy::{Proxy, ProxyStats};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigProblem>),
    #[error("cannot set up the nftables data plane (needs CAP_NET_ADMIN and the nft command)")]
    DataPlane(#[source] crate::nft::NftError),
    #[error("cannot bind the HTTP API on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load the node's TLS identity")]
    Tls(#[source] capstan_runtime::tls::TlsError),
    #[error("cannot create the coord client")]
    Coord(#[source] capstan_coord_client::ClientError),
    #[error("cannot secure the HTTP API")]
    Security(#[source] capstan_iam::GuardError),
}

/// The `capstan l4lb` daemon.
pub struct Server;

/// A running daemon.
pub struct ServerHandle {
    http_addr: SocketAddr,
    table: watch::Receiver<Arc<VipTable>>,
    status: watch::Receiver<FollowStatus>,
    stats: Option<Arc<ProxyStats>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl ServerHandle {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The current VIP table; `changed()` wakes on every update.
    pub fn table(&self) -> watch::Receiver<Arc<VipTable>> {
        self.table.clone()
    }

    pub fn status(&self) -> watch::Receiver<FollowStatus> {
        self.status.clone()
    }

    /// The userspace proxy's counters (userspace mode only).
    pub fn proxy_stats(&self) -> Option<Arc<ProxyStats>> {
        self.stats.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Waits until the daemon stopped (only a cancelled shutdown token stops it).
    pub async fn wait(mut self) -> capstan_runtime::Exit {
        while self.tasks.join_next().await.is_some() {}
        capstan_runtime::Exit::Requested
    }

    /// Stops everything and waits for it.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

impl Server {
    /// Starts following the masters, serving `/v1/vips` and (in userspace mode) proxying.
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(StartError::Config(problems));
        }
        let shutdown = shutdown.child_token();
        let (table_tx, table) = watch::channel(Arc::new(VipTable::default()));
        let (status_tx, status) = watch::channel(FollowStatus::default());
        let mut tasks = JoinSet::new();

        let listener = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.http_listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.http_listen,
            source,
        })?;
        let metrics = Arc::new(Metrics::default());
        let proxy = (config.data_plane == DataPlane::Userspace).then(|| {
            Proxy::new(config.backend_connect_timeout, shutdown.clone())
                .with_reuse_port(config.reuse_port)
        });
        let stats = proxy.as_ref().map(Proxy::stats);
        let app = crate::http::router(ApiState {
            table: table.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            proxy: stats.clone(),
        });
        let (guard, tls) = secure_api(&config, &shutdown).await?;
        let client_tls = config.security.client_tls().map_err(StartError::Tls)?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let limits = capstan_runtime::HttpLimits::default();
            let serve = capstan_runtime::serve_secured(listener, app, limits, guard, tls, stop);
            if let Err(e) = serve.await {
                warn!(error = %Chain(&e), "HTTP API stopped");
            }
        });

        if let Some(mut proxy) = proxy {
            let mut rx = table.clone();
            let stop = shutdown.clone();
            let metrics = metrics.clone();
            tasks.spawn(async move {
                loop {
                    let t = rx.borrow_and_update().clone();
                    let errors = proxy.apply(&t.listeners()).await;
                    for e in &errors {
                        warn!(error = %Chain(e), "VIP not served (is its address local?)");
                    }
                    metrics.rules_applied(proxy.addresses().len(), errors.len());
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { return },
                        _ = stop.cancelled() => return,
                    }
                }
            });
        }

        if config.data_plane == DataPlane::Nftables {
            let kernel = KernelPlane::new(
                NftPlane::new(nft::DEFAULT_TABLE).map_err(StartError::DataPlane)?,
                VipDevice::new(netdev::DEFAULT_DEVICE)
                    .map_err(|e| StartError::DataPlane(e.into()))?,
                config.guard(),
            );
            kernel.start().await.map_err(StartError::DataPlane)?;
            info!(
                table = nft::DEFAULT_TABLE,
                device = netdev::DEFAULT_DEVICE,
                "nftables data plane ready"
            );
            tasks.spawn(program_kernel(
                kernel,
                table.clone(),
                status.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
        }

        let fcfg = FollowerConfig {
            masters: config.masters.clone(),
            timeout: config.master_timeout,
            missed_heartbeats: config.missed_heartbeats,
            backoff_max: config.reconnect_backoff_max,
            vip: config.vip_config(),
            tls: client_tls,
        };
        tasks.spawn(follower::run(
            fcfg,
            table_tx,
            status_tx,
            metrics.clone(),
            shutdown.clone(),
        ));
        info!(http = %http_addr, data_plane = ?config.data_plane, "Listening");
        Ok(ServerHandle {
            http_addr,
            table,
            status,
            stats,
            metrics,
            shutdown,
            tasks,
        })
    }
}

/// The API's guard and TLS as `config.security` says. In strict mode tokens and basic
/// credentials are verified against the identity records in coord when `coord_endpoints`
/// names it (the coord client presenting the node's certificate); without coord only the
/// cluster's node certificates may call.
async fn secure_api(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(Guard, Option<TlsServing>), StartError> {
    let policy: Policy = Arc::new(crate::http::access);
    if config.security.mode == SecurityMode::Strict && config.coord_endpoints.is_empty() {
        info!("No coord endpoints: only the cluster's node certificates may call the API");
        let node_tls = config.security.node_tls().map_err(StartError::Tls)?;
        let tls = config.security.serving(node_tls.as_ref());
        return Ok((Guard::strict("l4lb", None, policy), tls));
    }
    let coord = if config.security.mode == SecurityMode::Strict {
        let opts = capstan_coord_client::ClientOptions {
            tls: config.security.client_tls().map_err(StartError::Tls)?,
            ..capstan_coord_client::ClientOptions::default()
        };
        Some(
            capstan_coord_client::Client::with_options(&config.coord_endpoints, opts)
                .map_err(StartError::Coord)?,
        )
    } else {
        None
    };
    capstan_iam::secure_api("l4lb", &config.security, coord.as_ref(), policy, shutdown)
        .await
        .map_err(StartError::Security)
}

/// The nftables mode's task: it owns the kernel plane and applies every new table.
///
/// Nothing is applied before the first subscription, so the rules a previous l4lb left keep
/// serving until the full table is known (they are then replaced as a whole, stale ones
/// removed). Every later subscription (after a stream gap) replaces the whole table again;
/// in between, only what changed is sent. A failed apply is retried as a whole table at the
/// next change.
async fn program_kernel(
    mut kernel: KernelPlane,
    mut table: watch::Receiver<Arc<VipTable>>,
    mut status: watch::Receiver<FollowStatus>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut seen_subscriptions = 0;
    loop {
        let subscriptions = status.borrow_and_update().subscriptions;
        if subscriptions > 0 {
            if subscriptions != seen_subscriptions {
                kernel.forget();
                seen_subscriptions = subscriptions;
            }
            let t = table.borrow_and_update().clone();
            let listeners = t.listeners();
            match kernel.apply(&listeners).await {
                Ok(applied) => {
                    debug!(listeners = applied.listeners, update = ?applied.update, took = ?applied.took, "VIP rules applied");
                    metrics.rules_applied(applied.listeners, 0);
                }
                Err(e) => {
                    warn!(error = %Chain(&e), "VIP rules not applied");
                    kernel.forget();
                    metrics.rules_applied(0, listeners.len().max(1));
                }
            }
        }
        tokio::select! {
            r = table.changed() => if r.is_err() { return },
            r = status.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}
