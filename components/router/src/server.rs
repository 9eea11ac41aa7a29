//! Running the router: a control tokio runtime (coord, leaders, snapshots, the IAM and its
//! loopback API, certificate reloads) beside pingora's `Server`, which owns its own threads.
//!
//! [`run`] binds-checks the listeners, loads the certificate, starts the control side, then
//! runs pingora on a thread of its own and reports readiness once every listener accepts
//! connections. A stop (`shutdown` cancelled: SIGTERM/SIGINT in the binary, the handle in
//! tests) is passed to pingora as its graceful-terminate signal; pingora stops accepting, lets
//! requests in flight finish for up to [`DRAIN_SECS`] and returns, and `run` answers
//! [`Exit::Requested`]. Pingora stopping by itself is [`Exit::Failed`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_runtime::{Exit, Lifecycle, OwnRuntime};
use capstan_types::Backoff;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::identity;
use crate::plan::Planner;
use crate::proxy::Proxy;
use crate::state::State;
use crate::tls::ReloadingCert;

/// Longest time requests in flight get to finish after a stop was asked for.
pub const DRAIN_SECS: u64 = 5;
/// Longest wait for the listeners to accept after pingora started.
const BIND_DEADLINE: Duration = Duration::from_secs(30);
/// Worker threads of each listener's pingora runtime.
const PROXY_THREADS: usize = 2;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the control runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("https_listen is set but tls is not")]
    NoTls,
    #[error("cannot load the TLS certificate")]
    Cert(#[source] crate::tls::LoadCertError),
    #[error("invalid coord endpoints")]
    Coord(#[source] capstan_coord_client::ClientError),
    #[error("cannot load the certificate the router presents to the cluster's daemons")]
    ClusterTls(#[source] capstan_runtime::tls::TlsError),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot serve the IAM API on loopback")]
    LocalApi(#[source] std::io::Error),
    #[error("{0} did not accept connections within {BIND_DEADLINE:?}")]
    NotListening(SocketAddr),
    #[error("the proxy stopped by itself")]
    Stopped,
}

/// The router daemon (`capstan daemon router`).
pub struct Router;

impl OwnRuntime for Router {
    type Config = Config;

    /// Runs until SIGTERM or SIGINT.
    fn run(config: Config, lifecycle: &dyn Lifecycle) -> Exit {
        let shutdown = CancellationToken::new();
        run_inner(config, lifecycle, shutdown, true)
    }
}

/// Runs the router on the calling thread until `shutdown` is cancelled (no signal handling:
/// for tests and embedding).
pub fn run(config: Config, lifecycle: &dyn Lifecycle, shutdown: CancellationToken) -> Exit {
    run_inner(config, lifecycle, shutdown, false)
}

/// pingora's shutdown signal: our token.
struct TokenSignal(CancellationToken);

#[async_trait]
impl ShutdownSignalWatch for TokenSignal {
    async fn recv(&self) -> ShutdownSignal {
        self.0.cancelled().await;
        ShutdownSignal::GracefulTerminate
    }
}

/// Polls `addr` until it accepts a connection.
async fn accepting(addr: SocketAddr) -> bool {
    let addr = if addr.ip().is_unspecified() {
        let ip: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    };
    let deadline = Instant::now() + BIND_DEADLINE;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn run_inner(
    config: Config,
    lifecycle: &dyn Lifecycle,
    shutdown: CancellationToken,
    signals: bool,
) -> Exit {
    match serve(config, lifecycle, shutdown.clone(), signals) {
        Ok(()) => Exit::Requested,
        Err(e) => {
            shutdown.cancel();
            Exit::failed(e)
        }
    }
}

/// The control side: coord, the state followers, the IAM (retried until coord answers) and its
/// loopback API, the certificate watcher.
async fn start_control(
    config: Arc<Config>,
    cert: Option<Arc<ReloadingCert>>,
    shutdown: CancellationToken,
) -> Result<Arc<Planner>, StartError> {
    let cluster = match &config.cluster_tls {
        Some(files) => Some(Arc::new(
            crate::upstream::ClusterIdentity::load(files).map_err(StartError::ClusterTls)?,
        )),
        None => None,
    };
    let client_tls = cluster.as_ref().map(|c| c.client_config());
    let coord = capstan_coord_client::Client::with_options(
        &config.coord_endpoints,
        capstan_coord_client::ClientOptions {
            tls: client_tls.clone(),
            ..capstan_coord_client::ClientOptions::default()
        },
    )
    .map_err(StartError::Coord)?;
    let state = State::start(&config, coord.clone(), client_tls, shutdown.clone());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let id = loop {
        match identity::start(coord.clone(), &config, shutdown.clone()).await {
            Ok(id) => break id,
            Err(e) => {
                warn!(error = %e, "Cannot start the identity service (is coord up?); retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    };
    let local_api = crate::local::serve_api(id.api, shutdown.clone())
        .await
        .map_err(StartError::LocalApi)?;
    if let Some(cert) = &cert {
        cert.watch(shutdown.clone());
    }
    Ok(Arc::new(Planner {
        config,
        state,
        verifier: id.verifier,
        local_api,
        cluster,
    }))
}

fn serve(
    config: Config,
    lifecycle: &dyn Lifecycle,
    shutdown: CancellationToken,
    signals: bool,
) -> Result<(), StartError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Fail early and clearly on a taken port (pingora would panic in its listener task).
    for addr in [config.http_listen, config.https_listen]
        .into_iter()
        .flatten()
    {
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    }
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("router-control")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    if signals {
        let token = shutdown.clone();
        control.spawn(async move {
            capstan_runtime::shutdown_on_signals().cancelled().await;
            token.cancel();
        });
    }
    let config = Arc::new(config);
    let cert = match (&config.https_listen, &config.tls) {
        (None, _) => None,
        (Some(_), None) => return Err(StartError::NoTls),
        (Some(_), Some(files)) => {
            Some(ReloadingCert::open(&files.cert, &files.key).map_err(StartError::Cert)?)
        }
    };
    let started = control.block_on(async {
        tokio::select! {
            () = shutdown.cancelled() => None,
            p = start_control(config.clone(), cert.clone(), shutdown.clone()) => Some(p),
        }
    });
    let planner = match started {
        None => return Ok(()),
        Some(p) => p?,
    };

    let conf = ServerConf {
        threads: PROXY_THREADS,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(DRAIN_SECS),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let families = Proxy::families(config.limits.max_requests_per_route);
    if let Some(addr) = config.http_listen {
        let proxy = Proxy::new(planner.clone(), false, families.clone());
        let mut service = http_proxy_service_with_name(&server.configuration, proxy, "router-http");
        service.add_tcp(&addr.to_string());
        server.add_service(service);
    }
    if let (Some(addr), Some(cert)) = (config.https_listen, cert.clone()) {
        let proxy = Proxy::new(planner.clone(), true, families.clone());
        let mut service =
            http_proxy_service_with_name(&server.configuration, proxy, "router-https");
        let mut tls =
            TlsSettings::intermediate("", "").map_err(|e| StartError::Tls(e.to_string()))?;
        tls.set_cert_resolver(cert);
        service.add_tls_with_settings(&addr.to_string(), None, tls);
        server.add_service(service);
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = TokenSignal(shutdown.clone());
    let pingora = std::thread::Builder::new()
        .name("router-pingora".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(signal),
            });
            let _ = done_tx.send(());
        })
        .map_err(StartError::Runtime)?;

    let listeners: Vec<SocketAddr> = [config.http_listen, config.https_listen]
        .into_iter()
        .flatten()
        .collect();
    let outcome = control.block_on(async {
        for addr in &listeners {
            let ok = tokio::select! {
                ok = accepting(*addr) => ok,
                () = shutdown.cancelled() => return Ok(()),
            };
            if !ok {
                return Err(StartError::NotListening(*addr));
            }
            info!(%addr, "Listening");
        }
        lifecycle.ready();
        let mut done_rx = done_rx;
        tokio::select! {
            () = shutdown.cancelled() => {
                lifecycle.stopping();
                info!("Stopping: draining requests in flight");
                Ok(())
            }
            _ = &mut done_rx => Err(StartError::Stopped),
        }
    });
    shutdown.cancel();
    let _ = pingora.join();
    control.shutdown_timeout(Duration::from_secs(2));
    outcome
}
