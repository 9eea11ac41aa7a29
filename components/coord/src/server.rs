//! `Server::start`: opens the store, starts raft, binds the port, bootstraps or joins the
//! cluster, and runs until the shutdown token fires.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batch::Batcher;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::node::{Node, run_lease_keeper};
use crate::raft::{Dialer, Network, NodeId, Raft};
use crate::store::{self, LogStore, OpenError, StateMachineStore};
use capstan_coord_client::{PEER_TOKEN_HEADER, PeerToken};

/// Error starting the coord server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open coord data directory")]
    Open(#[source] OpenError),
    #[error("cannot load coord state: {0}")]
    Storage(String),
    #[error("cannot start raft: {0}")]
    Raft(String),
    #[error("cannot use the coord peer secret")]
    PeerSecret(#[source] capstan_coord_client::PeerSecretError),
    /// The node certificate, its key or the cluster CA (the `security.tls` files).
    #[error("cannot load coord's TLS identity")]
    Tls(#[source] capstan_runtime::tls::TlsError),
    /// The data directory is open to other users (it holds apps' environment secrets).
    #[error(transparent)]
    StateDir(capstan_runtime::PermissionError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Error of a running server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("coord HTTP server failed")]
    Http(#[source] std::io::Error),
    #[error("coord task failed: {0}")]
    Task(String),
}

/// A coord member's state as seen by itself (for tests and the binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub applied_index: u64,
    pub is_leader: bool,
}

pub struct Server;

/// A running member.
pub struct ServerHandle {
    id: NodeId,
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
    node: Arc<Node>,
}

impl Server {
    /// Binds `config.listen` and starts the member.
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        Server::start_on(config, listener, shutdown).await
    }

    /// A one-member cluster on a free port of 127.0.0.1, its data under `data_dir`: what tests
    /// and benchmarks of the daemons that keep state in coord start.
    pub async fn start_single(
        data_dir: impl Into<std::path::PathBuf>,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = tokio::net::TcpListener::bind(any)
            .await
            .map_err(|source| StartError::Bind { addr: any, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: any, source })?;
        let config = Config {
            id: 1,
            listen: addr,
            data_dir: data_dir.into(),
            members: vec![crate::config::MemberConfig {
                id: 1,
                addr: addr.to_string(),
            }],
            ..Config::default()
        };
        Server::start_on(config, listener, shutdown).await
    }

    /// Starts the member on an already bound listener (`config.listen` is ignored).
    pub async fn start_on(
        config: Config,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        config.validate()?;
        // 0700; refused when others can reach it once it holds the database (issue #19).
        capstan_runtime::prepare_state_dir(&config.data_dir, &["coord.redb"])
            .map_err(StartError::StateDir)?;
        let peer_token = peer_token(&config)?;
        let strict = config.security.mode == capstan_runtime::auth::SecurityMode::Strict;
        let node_tls = config.security.node_tls().map_err(StartError::Tls)?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let db = open_db_retrying(&config).await?;
        let log_store = LogStore::new(db.clone());
        let sm = StateMachineStore::open(db, config.watch_history)
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let shared = sm.shared();

        let raft_config = openraft::Config {
            cluster_name: "capstan-coord".into(),
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            heartbeat_interval: config.heartbeat_interval_ms,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 64,
            // The `/raft/snapshot` body limit is sized for this (see `raft.rs`).
            snapshot_max_chunk_size: crate::raft::SNAPSHOT_CHUNK_BYTES,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            max_in_snapshot_log_to_keep: config.log_entries_kept_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;

        // Every request a member sends another (raft RPCs, forwarded writes, reads and
        // membership changes) carries the peer token.
        let mut peer_headers = reqwest::header::HeaderMap::new();
        let token_value = reqwest::header::HeaderValue::from_str(peer_token.as_str())
            .map_err(|e| StartError::Raft(e.to_string()))?;
        peer_headers.insert(PEER_TOKEN_HEADER, token_value);
        // Idle connections are dropped before a peer's header-read timeout (30 s by default)
        // would close them under a request.
        let idle = Duration::from_millis(config.header_read_timeout_ms / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(20));
        let mut builder = capstan_http_client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(idle)
            .default_headers(peer_headers);
        // Strict: members reach each other over https, presenting the node certificate and
        // trusting only the cluster CA (validation makes strict mode name the files).
        let client_tls = node_tls.as_ref().filter(|_| strict);
        if let Some(tls) = client_tls {
            builder = capstan_http_client::with_tls(builder, &tls.client_config());
        }
        let http = builder
            .build()
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let dialer = Dialer::new(config.dial_overrides.clone()).with_https(client_tls.is_some());
        let network = Network::new(http.clone(), dialer.clone(), config.max_raft_body_bytes);
        let raft = Raft::new(config.id, Arc::new(raft_config), network, log_store, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let token = shutdown.child_token();
        let (keeper_tx, keeper_rx) = mpsc::channel(256);
        let node = Arc::new(Node {
            id: config.id,
            raft: raft.clone(),
            shared,
            http,
            dialer,
            config: Arc::new(config.clone()),
            metrics: Arc::new(Metrics::default()),
            keeper: keeper_tx,
            batcher: Batcher::spawn(
                raft.clone(),
                Duration::from_millis(config.request_timeout_ms),
                token.clone(),
            ),
            reads: crate::batch::ReadCoalescer::new(raft.clone()),
            shutdown: token.clone(),
            peer_token,
        });

        let mut router = crate::http::router(node.clone());
        if strict {
            router = crate::http::require_node_certificates(router, node.clone());
        }
        let limits = capstan_runtime::HttpLimits {
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            // No shared ceiling: each route reads its body against its own limit (http.rs),
            // the raft ones larger than any client's, and answers in coord's error format.
            max_body_bytes: usize::MAX,
            ..capstan_runtime::HttpLimits::default()
        };
        let serving = config.security.serving(node_tls.as_ref());
        let tls_kind = match &serving {
            None => "plain HTTP",
            Some(t) if t.allow_plaintext => "TLS and plain HTTP",
            Some(_) => "TLS",
        };
        let serve = match serving {
            None => tokio::spawn(capstan_runtime::serve(
                listener,
                router,
                limits,
                token.clone(),
            )),
            Some(tls) => tokio::spawn(capstan_runtime::serve_tls(
                listener,
                router,
                limits,
                tls,
                token.clone(),
            )),
        };
        tracing::info!(
            id = config.id,
            addr = %local_addr,
            mode = %config.security.mode,
            "Listening on {local_addr} ({tls_kind})"
        );

        bootstrap(&raft, &config).await?;
        let keeper = tokio::spawn(run_lease_keeper(node.clone(), keeper_rx));
        let observer = tokio::spawn(observe_leadership(node.clone()));

        let task_token = token.clone();
        let task_raft = raft.clone();
        let id = config.id;
        let task = tokio::spawn(async move {
            task_token.cancelled().await;
            tracing::info!(id, "Coord member shutting down");
            let _ = task_raft.shutdown().await;
            observer.abort();
            let _ = keeper.await;
            match serve.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ServeError::Http(e)),
                Err(e) => Err(ServeError::Task(e.to_string())),
            }
        });
        Ok(ServerHandle {
            id,
            local_addr,
            shutdown: token,
            task,
            node,
        })
    }
}

/// The token members-only requests must carry: derived from the configured secret, or, with
/// none (a one-member cluster), one nobody else knows, so no peer RPC is ever accepted.
fn peer_token(config: &Config) -> Result<PeerToken, StartError> {
    if let Some(path) = &config.peer_secret_file {
        return PeerToken::from_file(path).map_err(StartError::PeerSecret);
    }
    if let Some(secret) = &config.peer_secret {
        return PeerToken::derive(secret.as_bytes()).map_err(StartError::PeerSecret);
    }
    tracing::info!(
        id = config.id,
        "No peer secret configured: this member accepts no raft RPCs and no membership changes"
    );
    Ok(PeerToken::random())
}

/// Opens the database, waiting a little if a previous instance in this process is still
/// releasing it.
async fn open_db_retrying(config: &Config) -> Result<Arc<redb::Database>, StartError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store::open_db(&config.data_dir) {
            Ok(db) => return Ok(db),
            Err(OpenError::Open {
                source: redb::DatabaseError::DatabaseAlreadyOpen,
                ..
            }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(StartError::Open(e)),
        }
    }
}

async fn bootstrap(raft: &Raft, config: &Config) -> Result<(), StartError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if initialized {
        tracing::info!(id = config.id, "Rejoining coord cluster from local state");
        return Ok(());
    }
    if !config.members.iter().any(|m| m.id == config.id) {
        tracing::info!(id = config.id, "Waiting to be added to a coord cluster");
        return Ok(());
    }
    let members: BTreeMap<NodeId, BasicNode> = config
        .members
        .iter()
        .map(|m| (m.id, BasicNode::new(&m.addr)))
        .collect();
    tracing::info!(
        id = config.id,
        members = members.len(),
        "Bootstrapping coord cluster"
    );
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(StartError::Raft(e.to_string())),
    }
}

/// Logs leadership as a narrative and counts leader changes.
async fn observe_leadership(node: Arc<Node>) {
    let mut rx = node.raft.metrics();
    let mut last: Option<NodeId> = None;
    let mut joined = false;
    loop {
        let (leader, term) = {
            let m = rx.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if leader != last {
            if let Some(l) = leader {
                if !joined {
                    joined = true;
                    tracing::info!(id = node.id, leader = l, term, "Joined coord cluster");
                }
                node.metrics
                    .leader_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if l == node.id {
                    tracing::info!(id = node.id, term, "Elected leader");
                } else {
                    tracing::info!(id = node.id, leader = l, term, "Following leader");
                }
            } else {
                tracing::info!(
                    id = node.id,
                    term,
                    "Coord leader lost; waiting for an election"
                );
            }
            last = leader;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl ServerHandle {
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn status(&self) -> NodeStatus {
        let m = self.node.raft.metrics().borrow().clone();
        NodeStatus {
            id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            is_leader: m.current_leader == Some(self.id)
                && m.state == openraft::ServerState::Leader,
        }
    }

    /// Builds a snapshot now and compacts the log.
    pub async fn trigger_snapshot(&self) {
        let _ = self.node.raft.trigger().snapshot().await;
    }

    /// Waits until the member stops (after the shutdown token fires).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task
            .await
            .map_err(|e| ServeError::Task(e.to_string()))?
    }

    /// Stops the member and waits for it.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        self.wait().await
    }
}
