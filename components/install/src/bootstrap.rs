//! The bootstrap server every master runs (`capstan daemon bootstrap`).
//!
//! It serves what a joining node needs: `install.sh`, the CA certificate and the cluster's
//! public facts to anyone, and the package and the join endpoints (which turn a join token
//! into a node certificate and a node config) only to clients that came over HTTPS. Tokens are
//! checked against the records in coord, so every master admits the same nodes.
//!
//! Key decision: on an installed master the router owns ports 80 and 443 and terminates TLS
//! with this master's node certificate; it proxies exactly these paths to this server, which
//! listens on plain HTTP on loopback only (`127.0.0.1:8090`, [`ports::BOOTSTRAP_HTTP`]). The
//! guarantee that tokens and node keys never cross the network in clear text is kept by
//! [`came_over_https`]: a request on the plain listener counts as HTTPS only when it comes from
//! a loopback address and carries `X-Forwarded-Proto: https`, which the router always sets
//! itself (overwriting whatever the client sent). A direct HTTPS listener (`https_listen`,
//! off by default) still exists for a master without the router.
//!
//! [`ports::BOOTSTRAP_HTTP`]: capstan_runtime::cluster::ports::BOOTSTRAP_HTTP

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use capstan_runtime::{ClusterConfig, ConfigProblem, Exit, Validate};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::https::TlsListener;
use crate::layout::Layout;
use crate::pki::{Ca, CertifiedKey};
use crate::state::{ClusterState, StateError, member_id_for};
use crate::token::{JoinToken, Role, TokenRefused};

/// The package file name masters keep under `<state>/packages/` and serve.
pub const PACKAGE_FILE: &str = "capstan.deb";
/// The line of `install.sh` that names its default server; the served copy fills it in.
pub const SERVER_LINE: &str = "CAPSTAN_SERVER=\"${CAPSTAN_SERVER:-}\"";
/// Largest join request body.
const MAX_JOIN_BODY: usize = 16 << 10;

/// The `bootstrap:` section of the node config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Plain HTTP, loopback by default: everything, but the package and the joins only to
    /// requests the router forwarded from HTTPS (loopback peer, `X-Forwarded-Proto: https`).
    pub http_listen: Option<SocketAddr>,
    /// Direct HTTPS with this master's node certificate (a master without the router): all.
    pub https_listen: Option<SocketAddr>,
    /// coord members (`host:port`); default: every master's coord.
    pub coord_endpoints: Vec<String>,
    /// The node's state directory (keys under `pki/`, packages under `packages/`).
    pub state_dir: PathBuf,
    /// Shipped files (`install.sh`).
    pub share_dir: PathBuf,
    /// The node endpoint (`/v1/node`, rolling upgrades: [`crate::upgrade`]), HTTPS with the
    /// node's certificate, on masters and agents alike. An unspecified address
    /// (`0.0.0.0:8091`, the default) means this node's advertised address; none turns it off.
    pub node_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        let layout = Layout::default();
        Config {
            http_listen: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                capstan_runtime::cluster::ports::BOOTSTRAP_HTTP,
            )),
            https_listen: None,
            coord_endpoints: vec!["127.0.0.1:8181".into()],
            state_dir: layout.state,
            share_dir: layout.share,
            node_listen: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                crate::upgrade::NODE_PORT,
            )),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.http_listen.is_none() && self.https_listen.is_none() {
            out.push(ConfigProblem::new(
                "https_listen",
                "at least one of http_listen and https_listen must be set",
            ));
        }
        if self.coord_endpoints.is_empty() {
            out.push(ConfigProblem::new("coord_endpoints", "must not be empty"));
        }
        for (field, dir) in [
            ("state_dir", &self.state_dir),
            ("share_dir", &self.share_dir),
        ] {
            if !dir.is_absolute() {
                out.push(ConfigProblem::new(field, "must be an absolute path"));
            }
        }
        out
    }
}

impl Config {
    fn layout(&self) -> Layout {
        Layout {
            config: Layout::default().config,
            state: self.state_dir.clone(),
            share: self.share_dir.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigProblem>),
    #[error(
        "the node config has no cluster: section; run `capstan cluster init` or join a cluster first"
    )]
    NoCluster,
    #[error("cannot read {path} (has `capstan cluster init` or `join` run on this master?)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error("coord client")]
    Coord(#[from] StateError),
    #[error("cannot bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

struct Shared {
    cluster: ClusterConfig,
    layout: Layout,
    state: ClusterState,
    ca: Ca,
    /// Keys the CA proof for ids no token has, so the answer does not tell which ids exist.
    decoy_key: String,
}

/// The running server.
pub struct ServerHandle {
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    node_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<std::io::Result<()>>,
}

impl ServerHandle {
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The node endpoint's address ([`crate::node`]).
    pub fn node_addr(&self) -> Option<SocketAddr> {
        self.node_addr
    }

    /// Runs until shutdown; a listener that fails ends the daemon with its error.
    pub async fn wait(mut self) -> Exit {
        while let Some(done) = self.tasks.join_next().await {
            let failure = match done {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => Exit::failed(e),
                Err(e) => Exit::failed(e),
            };
            if !self.shutdown.is_cancelled() {
                self.shutdown.cancel();
                return failure;
            }
        }
        Exit::Requested
    }

    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.wait().await;
    }
}

/// The bootstrap server.
pub struct Server;

impl Server {
    /// Loads the CA and this master's certificate, binds, and serves until `shutdown`.
    pub async fn start(
        config: Config,
        cluster: Option<ClusterConfig>,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(StartError::Config(problems));
        }
        let cluster = cluster.ok_or(StartError::NoCluster)?;
        let layout = config.layout();
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| StartError::Read { path, source })
        };
        let shutdown = shutdown.child_token();
        let mut tasks = JoinSet::new();
        let role = crate::layout::Membership::read(&layout)
            .ok()
            .flatten()
            .map(|m| m.role);
        let node_addr = match config.node_listen {
            Some(addr) => Some(
                start_node(
                    &layout,
                    &cluster,
                    role.unwrap_or(Role::Master),
                    addr,
                    &mut tasks,
                    &shutdown,
                )
                .await?,
            ),
            None => None,
        };
        if role == Some(Role::Agent) {
            // An agent holds no CA key and no coord: it serves the node endpoint only.
            info!(node = ?node_addr, "Bootstrap server on an agent: the node endpoint only");
            return Ok(ServerHandle {
                http_addr: None,
                https_addr: None,
                node_addr,
                shutdown,
                tasks,
            });
        }
        let ca = Ca(CertifiedKey {
            cert_pem: read(layout.ca_cert())?,
            key_pem: read(layout.ca_key())?,
        });
        // Adding a joining master to coord is a membership change: it needs the peer token,
        // derived from the CA key as every master's coord derives it.
        let peer_token =
            capstan_coord_client::PeerToken::derive(ca.0.key_pem.as_bytes()).map_err(|_| {
                StartError::Read {
                    path: layout.ca_key(),
                    source: std::io::Error::other("the CA key is too short to be a key"),
                }
            })?;
        // In a strict cluster coord takes only node certificates: this master's.
        let coord = crate::state::coord_client(&cluster.security, config.coord_endpoints.iter())?
            .with_peer_token(peer_token);
        let shared = Arc::new(Shared {
            cluster,
            layout,
            state: ClusterState::new(coord),
            ca,
            decoy_key: crate::token::generate_nonce(),
        });
        let public = Router::new()
            .route("/install.sh", get(install_script))
            .route("/v1/cluster/ca.pem", get(ca_pem))
            .route("/v1/cluster/ca-proof", get(ca_proof))
            .route("/v1/cluster", get(cluster_facts));
        let private = Router::new()
            .route("/v1/packages/capstan.deb", get(package))
            .route("/v1/join", post(join))
            .route("/v1/join/coord", post(join_coord))
            .layer(DefaultBodyLimit::max(MAX_JOIN_BODY))
            .route_layer(axum::middleware::from_fn(require_https));
        let app = public.merge(private).fallback(not_found);
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { what, addr, source })
        };
        let mut http_addr = None;
        if let Some(addr) = config.http_listen {
            let listener = bind("HTTP", addr).await?;
            http_addr = listener.local_addr().ok();
            let app = app
                .clone()
                .layer(axum::Extension(Transport::Plain))
                .with_state(shared.clone())
                .into_make_service_with_connect_info::<SocketAddr>();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            });
        }
        let mut https_addr = None;
        if let Some(addr) = config.https_listen {
            let listener = bind("HTTPS", addr).await?;
            https_addr = listener.local_addr().ok();
            let node = CertifiedKey {
                cert_pem: read(shared.layout.node_cert())?,
                key_pem: read(shared.layout.node_key())?,
            };
            let tls = Arc::new(crate::pki::server_config(&node)?);
            let listener = TlsListener::new(listener, tls, shutdown.clone()).map_err(|source| {
                StartError::Bind {
                    what: "HTTPS",
                    addr,
                    source,
                }
            })?;
            let app = app
                .layer(axum::Extension(Transport::Tls))
                .with_state(shared.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            });
        }
        info!(http = ?http_addr, https = ?https_addr, cluster = %shared.cluster.name, "Bootstrap server listening");
        Ok(ServerHandle {
            http_addr,
            https_addr,
            node_addr,
            shutdown,
            tasks,
        })
    }
}

/// Binds the node endpoint ([`crate::node`]) on `addr` (an unspecified address: the node's
/// advertised one) with the node's certificate; returns the bound address.
async fn start_node(
    layout: &Layout,
    cluster: &ClusterConfig,
    role: Role,
    addr: SocketAddr,
    tasks: &mut JoinSet<std::io::Result<()>>,
    shutdown: &CancellationToken,
) -> Result<SocketAddr, StartError> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).map_err(|source| StartError::Read { path, source })
    };
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::new(cluster.advertise, addr.port())
    } else {
        addr
    };
    let node = CertifiedKey {
        cert_pem: read(layout.node_cert())?,
        key_pem: read(layout.node_key())?,
    };
    let info = Arc::new(crate::node::NodeInfo {
        layout: layout.clone(),
        role,
        hostname: cluster
            .hostname
            .clone()
            .unwrap_or_else(crate::join::system_hostname),
        advertise: cluster.advertise,
        ca_cert_pem: read(layout.ca_cert())?,
    });
    let tls = Arc::new(crate::pki::server_config(&node)?);
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what: "node HTTPS",
            addr,
            source,
        })?;
    let bound = tcp.local_addr().unwrap_or(addr);
    let listener =
        TlsListener::new(tcp, tls, shutdown.clone()).map_err(|source| StartError::Bind {
            what: "node HTTPS",
            addr,
            source,
        })?;
    let app = crate::node::router(info);
    let stop = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    info!(node = %bound, "Node endpoint listening");
    Ok(bound)
}

/// An error answer: `{"code": ..., "message": ...}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            code: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

fn state_error(e: &StateError) -> Response {
    match e {
        StateError::Refused(refused) => {
            let (status, code) = match refused {
                TokenRefused::Unknown => (StatusCode::UNAUTHORIZED, "token_invalid"),
                TokenRefused::Revoked(_) => (StatusCode::UNAUTHORIZED, "token_revoked"),
                TokenRefused::Expired(_) => (StatusCode::UNAUTHORIZED, "token_expired"),
                TokenRefused::Role { .. } => (StatusCode::FORBIDDEN, "token_role"),
            };
            error(status, code, refused.to_string())
        }
        other => {
            warn!(error = %capstan_types::Chain(other), "Cluster state unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!(
                    "the cluster state is unavailable: {}",
                    capstan_types::Chain(other)
                ),
            )
        }
    }
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// The direct HTTPS listener.
    Tls,
    /// The plain HTTP listener (the router's upstream).
    Plain,
}

/// The header the router sets to the scheme its client used.
const FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Whether the client reached this master over HTTPS: it came in on the TLS listener, or on
/// the plain one from a loopback address (the router on this master) with exactly one
/// `X-Forwarded-Proto: https`. A remote peer's `X-Forwarded-Proto` is never trusted.
fn came_over_https(extensions: &Extensions, headers: &HeaderMap) -> bool {
    match extensions.get::<Transport>() {
        Some(Transport::Tls) => true,
        Some(Transport::Plain) => {
            let from_loopback = extensions
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
            let mut protos = headers.get_all(FORWARDED_PROTO).iter();
            let https = matches!(
                (protos.next(), protos.next()),
                (Some(v), None) if v.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("https"))
            );
            from_loopback && https
        }
        None => false,
    }
}

/// Keeps the package and the joins off plain HTTP (403 `https_required`).
async fn require_https(req: Request, next: Next) -> Response {
    if came_over_https(req.extensions(), req.headers()) {
        return next.run(req).await;
    }
    error(
        StatusCode::FORBIDDEN,
        "https_required",
        "joins and the package are served only over HTTPS (https://<master>/...)",
    )
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such resource")
}

/// The host a request reached us at, without a port: what `install.sh` should talk to.
fn request_host(headers: &HeaderMap, fallback: IpAddr) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::trim)
        .filter(|h| !h.is_empty());
    let Some(host) = host else {
        return crate::init::url_host(fallback);
    };
    let bare = if host.starts_with('[') {
        host.split_once(']').map_or(host, |(h, _)| h).to_owned() + "]"
    } else {
        host.split(':').next().unwrap_or(host).to_owned()
    };
    // Only characters a host name or address can hold: the value lands in a shell script.
    if bare
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
    {
        bare
    } else {
        crate::init::url_host(fallback)
    }
}

/// `install.sh` with its default server set to `host`.
pub fn render_install_script(script: &str, host: &str) -> String {
    script.replacen(
        SERVER_LINE,
        &format!("CAPSTAN_SERVER=\"${{CAPSTAN_SERVER:-{host}}}\""),
        1,
    )
}

async fn install_script(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let path = s.layout.install_script();
    match tokio::fs::read_to_string(&path).await {
        Ok(script) => {
            let host = request_host(&headers, s.cluster.advertise);
            (
                [(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8")],
                render_install_script(&script, &host),
            )
                .into_response()
        }
        Err(e) => {
            warn!(path = %path.display(), error = %capstan_types::Chain(&e), "install.sh missing");
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "install.sh is not installed on this master",
            )
        }
    }
}

async fn ca_pem(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        s.ca.0.cert_pem.clone(),
    )
        .into_response()
}

/// The query of `GET /v1/cluster/ca-proof`.
#[derive(Debug, Deserialize)]
pub struct CaProofQuery {
    /// The token's id.
    pub token: String,
    /// The asker's fresh nonce ([`crate::token::NONCE_LEN`] hex characters).
    pub nonce: String,
}

/// `GET /v1/cluster/ca-proof?token=<id>&nonce=<nonce>`: what a node holding a short token
/// checks the CA it was served against ([`crate::token::ca_proof`]), as plain text. Revoked and
/// expired tokens get a real proof (the join then says why it is refused); ids of no token
/// get one under a random key, so the answer never tells which ids exist.
async fn ca_proof(
    State(s): State<Arc<Shared>>,
    query: Result<Query<CaProofQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    if !crate::token::is_nonce(&q.nonce) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "nonce must be {} lowercase hex characters",
                crate::token::NONCE_LEN
            ),
        );
    }
    let key = match s.state.token(&q.token).await {
        Ok(Some(record)) => record.secret_sha256,
        // Before `cluster init` has stored anything, no token is known yet: say so (it tells
        // nothing about which ids exist), so a node racing the init waits instead of hearing
        // a proof that fails like a man in the middle.
        Ok(None) => match s.state.info().await {
            Ok(Some(_)) => s.decoy_key.clone(),
            Ok(None) => return not_initialized(),
            Err(e) => return state_error(&e),
        },
        Err(e) => return state_error(&e),
    };
    let proof = crate::token::ca_proof(&key, &q.nonce, &s.ca.fingerprint());
    ([(header::CONTENT_TYPE, "text/plain")], proof + "\n").into_response()
}

/// `GET /v1/cluster`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterFacts {
    pub cluster_id: String,
    pub name: String,
    pub masters: Vec<IpAddr>,
    pub ca_fingerprint: String,
    pub version: String,
}

async fn cluster_facts(State(s): State<Arc<Shared>>) -> Response {
    // The live membership: masters that joined after this one started are in coord, not in
    // this master's config file.
    let masters = match s.state.masters().await {
        Ok(masters) if !masters.is_empty() => masters,
        Ok(_) => s.cluster.masters.clone(),
        Err(e) => return state_error(&e),
    };
    match s.state.info().await {
        Ok(Some(info)) => Json(ClusterFacts {
            cluster_id: info.cluster_id,
            name: info.name,
            masters,
            ca_fingerprint: s.ca.fingerprint(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .into_response(),
        Ok(None) => not_initialized(),
        Err(e) => state_error(&e),
    }
}

/// `503 not_initialized`: this master's cluster has no record yet (`cluster init` is running
/// or has not run); a joining node retries.
fn not_initialized() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_initialized",
        "the cluster is not initialized yet (capstan cluster init)",
    )
}

async fn package(State(s): State<Arc<Shared>>) -> Response {
    let path = s.layout.packages().join(PACKAGE_FILE);
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            let len = file.metadata().await.map(|m| m.len()).ok();
            let stream = tokio_util::io::ReaderStream::new(file);
            let mut resp = (
                [
                    (
                        header::CONTENT_TYPE,
                        "application/vnd.debian.binary-package",
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"capstan.deb\"",
                    ),
                ],
                Body::from_stream(stream),
            )
                .into_response();
            if let Some(len) = len {
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, len.into());
            }
            resp
        }
        Err(_) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this master has no package to hand out (cluster init --package FILE)",
        ),
    }
}

/// `POST /v1/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub token: String,
    pub role: Role,
    pub hostname: String,
    pub advertise: IpAddr,
}

/// The answer to a join: everything the node writes.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinResponse {
    pub cluster_id: String,
    pub name: String,
    /// The node config text (`/etc/capstan/config.yaml`).
    pub config: String,
    pub ca: String,
    pub cert: String,
    pub key: String,
    /// Masters only: the CA key they sign node certificates with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<String>,
}

impl std::fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinResponse")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A JSON request body and the join token it carries, or the 4xx answer.
#[allow(clippy::result_large_err)]
fn request_with_token<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
    token: impl Fn(&T) -> &str,
) -> Result<(T, JoinToken), Response> {
    let Json(req) = body.map_err(|e| error(e.status(), "bad_request", e.body_text()))?;
    let parsed = token(&req)
        .parse()
        .map_err(|e: crate::token::TokenParseError| {
            error(StatusCode::BAD_REQUEST, "token_malformed", e.to_string())
        })?;
    Ok((req, parsed))
}

async fn join(
    State(s): State<Arc<Shared>>,
    body: Result<Json<JoinRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (req, token) = match request_with_token(body, |r| &r.token) {
        Ok(parsed) => parsed,
        Err(answer) => return answer,
    };
    if token.ca_hash != s.ca.fingerprint() {
        return error(
            StatusCode::UNAUTHORIZED,
            "token_other_cluster",
            "the join token is for another cluster's CA",
        );
    }
    if !valid_hostname(&req.hostname) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("hostname {:?} is not a valid host name", req.hostname),
        );
    }
    if req.advertise.is_unspecified() || req.advertise.is_multicast() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("advertise {} is not a node address", req.advertise),
        );
    }
    // The cluster first: a join during `cluster init` must not use up the token's admission.
    let info = match s.state.info().await {
        Ok(Some(info)) => info,
        Ok(None) => return not_initialized(),
        Err(e) => return state_error(&e),
    };
    let record = match s.state.admit(&token, req.role).await {
        Ok(record) => record,
        Err(e) => return state_error(&e),
    };
    let (members, retired) = match s.state.membership().await {
        Ok(m) => m,
        Err(e) => return state_error(&e),
    };
    let mut masters: Vec<IpAddr> = members.iter().map(|(_, ip)| *ip).collect();
    if masters.is_empty() {
        masters = s.cluster.masters.clone();
    }
    // A joining master's coord member id: one never used before, so that a replaced
    // master's id (and its old log, should that machine come back) means no one.
    let coord_id =
        (req.role == Role::Master).then(|| member_id_for(&members, req.advertise, retired));
    if req.role == Role::Master && !masters.contains(&req.advertise) {
        masters.push(req.advertise);
    }
    let node_cluster = ClusterConfig {
        name: s.cluster.name.clone(),
        masters,
        advertise: req.advertise,
        hostname: Some(req.hostname.clone()),
        containers: s.cluster.containers.clone(),
        security: s.cluster.security.clone(),
    };
    let names: &[&str] = match req.role {
        Role::Master => crate::pki::MASTER_NAMES,
        Role::Agent => &[],
    };
    let unit = match req.role {
        Role::Master => capstan_types::access::NodeRole::Master,
        Role::Agent => capstan_types::access::NodeRole::Agent,
    };
    let cert = match s
        .ca
        .issue_server(&req.hostname, unit, names, &[req.advertise])
    {
        Ok(cert) => cert,
        Err(e) => {
            warn!(error = %capstan_types::Chain(&e), "Cannot issue a node certificate");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot issue a certificate",
            );
        }
    };
    info!(
        token = %record.id,
        role = %req.role,
        hostname = %req.hostname,
        advertise = %req.advertise,
        "Node joined"
    );
    Json(JoinResponse {
        cluster_id: info.cluster_id,
        name: info.name,
        config: crate::render_node_config(
            &node_cluster,
            req.role,
            crate::Written::Join { coord_id },
        ),
        ca: s.ca.0.cert_pem.clone(),
        cert: cert.cert_pem,
        key: cert.key_pem,
        ca_key: (req.role == Role::Master).then(|| s.ca.0.key_pem.clone()),
    })
    .into_response()
}

/// `POST /v1/join/coord`: a master that joined and started its coord asks to be added to
/// coord's membership. Answers once the new member votes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinCoordRequest {
    pub token: String,
    pub advertise: IpAddr,
    /// The coord member id the node's config gives it (what `/v1/join` chose); absent from
    /// older nodes, which are given the id `/v1/join` would choose now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<u64>,
}

async fn join_coord(
    State(s): State<Arc<Shared>>,
    body: Result<Json<JoinCoordRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (req, token) = match request_with_token(body, |r| &r.token) {
        Ok(parsed) => parsed,
        Err(answer) => return answer,
    };
    if let Err(e) = s.state.admit(&token, Role::Master).await {
        return state_error(&e);
    }
    if req.advertise.is_unspecified() || req.advertise.is_multicast() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("advertise {} is not a node address", req.advertise),
        );
    }
    let (members, retired) = match s.state.membership().await {
        Ok(m) => m,
        Err(e) => return state_error(&e),
    };
    let id = req
        .member_id
        .unwrap_or_else(|| member_id_for(&members, req.advertise, retired));
    if id <= retired && !members.iter().any(|(m, _)| *m == id) {
        return error(
            StatusCode::CONFLICT,
            "membership",
            format!("coord member id {id} was a removed master's; join again to get a new one"),
        );
    }
    if let Some(conflict) = membership_conflict(&members, id, req.advertise) {
        return error(StatusCode::CONFLICT, "membership", conflict);
    }
    let addr = SocketAddr::new(req.advertise, capstan_runtime::cluster::ports::COORD).to_string();
    info!(member = id, %addr, "Adding a joining master to coord");
    match s.state.add_member(id, &addr).await {
        Ok(()) => Json(serde_json::json!({"member_id": id, "addr": addr})).into_response(),
        Err(e) => state_error(&e),
    }
}

/// Why master `ip` cannot be coord member `id` among `members`, if it cannot: the id is
/// another master's, or the master is a member under another id.
fn membership_conflict(members: &[(u64, IpAddr)], id: u64, ip: IpAddr) -> Option<String> {
    if id == 0 {
        return Some("coord member ids start at 1".into());
    }
    if let Some((_, other)) = members.iter().find(|(m, other)| *m == id && *other != ip) {
        return Some(format!(
            "coord member {id} is the master at {other}; if that master is dead, remove it \
             first with `capstan cluster remove-master {other}`"
        ));
    }
    if let Some((other_id, _)) = members.iter().find(|(m, other)| *other == ip && *m != id) {
        return Some(format!(
            "the master at {ip} is already coord member {other_id}, not {id}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_script_names_the_host_it_was_fetched_from() {
        let script = format!("#!/bin/sh\n{SERVER_LINE}\necho hi\n");
        let out = render_install_script(&script, "10.0.0.1");
        assert!(
            out.contains("CAPSTAN_SERVER=\"${CAPSTAN_SERVER:-10.0.0.1}\"\n"),
            "{out}"
        );
        let fallback: IpAddr = "10.9.9.9".parse().unwrap();
        let host = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, h.parse().unwrap());
            request_host(&m, fallback)
        };
        assert_eq!(host("master1"), "master1");
        assert_eq!(host("10.0.0.1:8080"), "10.0.0.1");
        assert_eq!(host("[fd00::1]:80"), "[fd00::1]");
        assert_eq!(host("evil$(reboot)"), "10.9.9.9");
        assert_eq!(request_host(&HeaderMap::new(), fallback), "10.9.9.9");
    }

    #[test]
    fn only_tls_or_the_local_router_saying_https_counts_as_https() {
        let verdict = |transport: Option<Transport>, peer: Option<&str>, protos: &[&str]| {
            let mut ext = Extensions::new();
            if let Some(t) = transport {
                ext.insert(t);
            }
            if let Some(p) = peer {
                ext.insert(ConnectInfo(p.parse::<SocketAddr>().unwrap()));
            }
            let mut h = HeaderMap::new();
            for p in protos {
                h.append(FORWARDED_PROTO, p.parse().unwrap());
            }
            came_over_https(&ext, &h)
        };
        let tls = Some(Transport::Tls);
        let plain = Some(Transport::Plain);
        assert!(verdict(tls, None, &[]));
        assert!(verdict(tls, Some("10.0.0.9:1234"), &["http"]));
        assert!(verdict(plain, Some("127.0.0.1:40000"), &["https"]));
        assert!(verdict(plain, Some("[::1]:40000"), &["HTTPS"]));
        assert!(!verdict(plain, Some("127.0.0.1:40000"), &[]));
        assert!(!verdict(plain, Some("127.0.0.1:40000"), &["http"]));
        assert!(!verdict(plain, Some("127.0.0.1:40000"), &["https", "http"]));
        assert!(
            !verdict(plain, Some("10.0.0.9:1234"), &["https"]),
            "remote peers are not trusted"
        );
        assert!(!verdict(plain, None, &["https"]));
        assert!(!verdict(None, Some("127.0.0.1:1"), &["https"]));
    }

    #[test]
    fn a_master_joins_coord_only_under_an_id_of_its_own() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let members = [(1, ip("10.0.0.1")), (2, ip("10.0.0.2"))];
        assert_eq!(membership_conflict(&members, 3, ip("10.0.0.3")), None);
        assert_eq!(
            membership_conflict(&members, 2, ip("10.0.0.2")),
            None,
            "a re-run"
        );
        let taken = membership_conflict(&members, 2, ip("10.0.0.4")).unwrap();
        assert!(taken.contains("remove-master 10.0.0.2"), "{taken}");
        let moved = membership_conflict(&members, 4, ip("10.0.0.1")).unwrap();
        assert!(moved.contains("already coord member 1"), "{moved}");
        assert!(membership_conflict(&members, 0, ip("10.0.0.3")).is_some());
    }

    #[test]
    fn hostnames_are_checked() {
        for ok in ["agent-1", "a.b.c", "x"] {
            assert!(valid_hostname(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a b", "a_b", &"x".repeat(64)] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }
}
