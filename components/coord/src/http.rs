//! The HTTP layer (thin): the client API (`/v1/...`), status endpoints and the raft RPCs
//! between members (`/raft/...`), all on one port.
//!
//! Every `/raft/*` endpoint and the membership changes (`/v1/members/add`, `/remove`) are for
//! members only: [`require_peer`] checks the peer token before anything reads the body, so
//! an anonymous request is answered `401` (a wrong token `403`) and changes nothing. In strict
//! mode every request but `/health` and `/metrics` must also present a node certificate
//! ([`require_node_certificates`]): a master's for those members-only calls, any node's for
//! the client API. Every body is read against its limit ([`JsonBody`]) and within the
//! body-read timeout.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use capstan_coord_client::{
    AddMemberRequest, ApiError, DEFAULT_LIST_LIMIT, DeleteRequest, GetRequest, GetResponse,
    LEADER_HEADER, LeaseGrantRequest, LeaseIdRequest, LeaseKeepAliveResponse, ListRequest,
    ListResponse, MAX_VALUE_BYTES, Member, MemberStatus, MembersResponse, PEER_TOKEN_HEADER,
    PutRequest, RemoveMemberRequest, StatusResponse, TxnOp, TxnRequest, WatchRequest,
    WatchResponse, validate_key, validate_prefix,
};
use futures::StreamExt;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, ChangeMembers};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::metrics::{Op, RaftSample};
use crate::node::{FORWARDED, Node, NodeError};
use crate::raft::{RAFT_VOTE_BODY_LIMIT, TypeConfig};
use crate::sm::{Command, Outcome};
use crate::snapshot::Backup;

/// Which limit a [`JsonBody`] is read against. Client bodies (`max_client_body_bytes`, 8 MiB
/// by default): 1 MiB of value is about 1.4 MiB of base64, with room for transactions of
/// several values.
const CLIENT: u8 = 0;
/// `/raft/append` and `/raft/snapshot`: `max_raft_body_bytes` (why it is what it is: `raft.rs`).
const RAFT: u8 = 1;
/// A forwarded write is one client write re-encoded by the follower: twice the client limit.
const RAFT_WRITE: u8 = 2;
/// Votes: [`RAFT_VOTE_BODY_LIMIT`].
const VOTE: u8 = 3;
/// Longest lease TTL `lease/grant` accepts: one hour. Leases mark liveness (Capstan's own
/// are seconds); a longer one would keep a dead holder's keys for longer than anyone waits.
pub(crate) use capstan_coord_client::MAX_LEASE_TTL_MS;

pub(crate) fn router(node: Arc<Node>) -> Router {
    // Each handler's `JsonBody` reads at most its own limit; no other extractor reads bodies.
    // Members only: the peer token is checked before any body is read.
    let peers_only = Router::new()
        .route("/raft/append", post(raft_append))
        .route("/raft/vote", post(raft_vote))
        .route("/raft/snapshot", post(raft_snapshot))
        .route("/raft/write", post(raft_write))
        .route("/raft/read-index", post(raft_read_index))
        .route("/v1/members/add", post(member_add))
        .route("/v1/members/remove", post(member_remove))
        .route_layer(axum::middleware::from_fn_with_state(
            node.clone(),
            require_peer,
        ));
    let api = Router::new()
        .route("/v1/kv/get", post(kv_get))
        .route("/v1/kv/list", post(kv_list))
        .route("/v1/kv/put", post(kv_put))
        .route("/v1/kv/delete", post(kv_delete))
        .route("/v1/kv/txn", post(kv_txn))
        .route("/v1/watch", post(watch))
        .route("/v1/lease/grant", post(lease_grant))
        .route("/v1/lease/keepalive", post(lease_keep_alive))
        .route("/v1/lease/revoke", post(lease_revoke))
        .route("/v1/members", get(members))
        .route("/v1/status", get(status))
        .route("/v1/snapshot", get(snapshot))
        .route("/exhibitor/v1/cluster/status", get(exhibitor_status))
        .route("/health", get(health))
        .route("/metrics", get(metrics));
    Router::new()
        .merge(peers_only)
        .merge(api)
        .fallback(|| async {
            HttpError::new(
                StatusCode::NOT_FOUND,
                ApiError::new("not_found", "no such endpoint"),
            )
        })
        .with_state(node)
}

/// What a request needs in strict mode. Coord's clients are the daemons, never users (as etcd
/// behind the Kubernetes API server): it accepts node certificates of the cluster CA only, no
/// token and no password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing: `/health` and `/metrics`, which tell whether the member is up and count
    /// things (no key, value, member address or secret).
    Open,
    /// Any node certificate, a master's or an agent's: the client API and the status calls.
    Node,
    /// A master node's certificate: raft RPCs, membership changes (both still need the peer
    /// token too) and the full backup (`/v1/snapshot`, which holds every secret).
    Master,
}

/// What `path` needs in strict mode; a path no route serves needs a node certificate (and
/// then answers 404).
pub(crate) fn need(path: &str) -> Need {
    match path {
        "/health" | "/metrics" => Need::Open,
        "/v1/members/add" | "/v1/members/remove" | "/v1/snapshot" => Need::Master,
        p if p == "/raft" || p.starts_with("/raft/") => Need::Master,
        _ => Need::Node,
    }
}

/// `router` behind strict mode's check of the client certificate ([`need`]): a request
/// without a node certificate of the cluster CA is `401`, one from an agent's where a
/// master's is needed `403`, both JSON and before any body is read. (A certificate of
/// another CA never gets here: it fails the TLS handshake.) Membership changes and backups
/// go to the audit trail with the node that asked; refusals are counted
/// (`capstan_coord_certificate_refused_total`) and logged at most every 10 s. Raft RPCs and
/// the client API are not audited one by one: they are the daemons' own traffic, many a
/// second.
pub(crate) fn require_node_certificates(router: Router, node: Arc<Node>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        node,
        require_certificate,
    ))
}

async fn require_certificate(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let needed = need(&path);
    if needed == Need::Open {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let peer = req
        .extensions()
        .get::<capstan_runtime::Transport>()
        .and_then(|t| t.peer.clone());
    let role = peer
        .as_ref()
        .map(|p| capstan_runtime::auth::NodeRole::from_unit(p.unit.as_deref()));
    let who = peer.as_ref().map_or_else(
        || "anonymous".to_owned(),
        |p| format!("node:{}", p.common_name),
    );
    let from = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let refusal = match (needed, role) {
        (_, None) => Some(HttpError::new(
            StatusCode::UNAUTHORIZED,
            ApiError::new(
                "unauthorized",
                format!(
                    "{method} {path} needs the TLS client certificate of a node of this cluster: \
                     coord accepts only the cluster CA's node certificates (no tokens)"
                ),
            ),
        )),
        (Need::Master, Some(capstan_runtime::auth::NodeRole::Agent)) => Some(HttpError::new(
            StatusCode::FORBIDDEN,
            ApiError::new(
                "forbidden",
                format!(
                    "{who} may not {method} {path}: raft RPCs, membership changes and backups \
                     need a master node's certificate"
                ),
            ),
        )),
        _ => None,
    };
    let response = match refusal {
        Some(r) => {
            node.metrics.certificate_refused(&path, &from, &who);
            r.into_response()
        }
        None => next.run(req).await,
    };
    if needed == Need::Master && !path.starts_with("/raft/") {
        tracing::info!(
            target: capstan_runtime::auth::AUDIT_TARGET,
            daemon = "coord",
            principal = %who,
            method = %method,
            path = %path,
            source = %from,
            status = response.status().as_u16(),
            "audit"
        );
    }
    response
}

/// Lets a request through only with the cluster's peer token: `401 unauthorized` without
/// one, `403 forbidden` with another. Refusals are counted and logged at most every 10 s.
async fn require_peer(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let presented = req.headers().get(PEER_TOKEN_HEADER);
    let refusal = match presented {
        None => HttpError::new(
            StatusCode::UNAUTHORIZED,
            ApiError::new(
                "unauthorized",
                format!(
                    "{} is for coord members only: send the cluster's peer token in {PEER_TOKEN_HEADER}",
                    req.uri().path()
                ),
            ),
        ),
        Some(v) if node.peer_token.matches(v.as_bytes()) => return next.run(req).await,
        Some(_) => HttpError::new(
            StatusCode::FORBIDDEN,
            ApiError::new("forbidden", "wrong coord peer token"),
        ),
    };
    let from = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    node.metrics
        .peer_refused(req.uri().path(), &from, presented.is_some());
    refusal.into_response()
}

/// A JSON error answer.
pub(crate) struct HttpError {
    status: StatusCode,
    body: ApiError,
}

impl HttpError {
    fn new(status: StatusCode, body: ApiError) -> HttpError {
        HttpError { status, body }
    }

    fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            ApiError::new("bad_request", message),
        )
    }

    fn too_large(message: impl Into<String>) -> HttpError {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::new("too_large", message),
        )
    }
}

impl From<NodeError> for HttpError {
    fn from(e: NodeError) -> HttpError {
        let (status, body) = e.to_api();
        HttpError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// A JSON object body of at most the `KIND` limit; a bigger one is `413 too_large`, one that
/// is not a JSON object of the expected shape `400 bad_request` naming the problem, one that
/// does not arrive within the body-read timeout `408 timeout`.
pub(crate) struct JsonBody<T, const KIND: u8 = CLIENT>(T);

impl<T: DeserializeOwned, const KIND: u8> FromRequest<Arc<Node>> for JsonBody<T, KIND> {
    type Rejection = HttpError;

    async fn from_request(req: Request, node: &Arc<Node>) -> Result<Self, HttpError> {
        let config = &node.config;
        let limit = match KIND {
            RAFT => config.max_raft_body_bytes,
            RAFT_WRITE => config.max_client_body_bytes.saturating_mul(2),
            VOTE => RAFT_VOTE_BODY_LIMIT,
            _ => config.max_client_body_bytes,
        };
        let timeout = Duration::from_millis(config.body_read_timeout_ms);
        let bytes = tokio::time::timeout(timeout, read_body(req, limit))
            .await
            .map_err(|_| {
                HttpError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    ApiError::new(
                        "timeout",
                        format!("the request body did not arrive within {timeout:?}"),
                    ),
                )
            })??;
        // serde reads a struct from an array as well (`[]` is a txn with no operations).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(HttpError::bad_request("request body must be a JSON object"));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| HttpError::bad_request(format!("malformed JSON body: {e}")))
    }
}

/// The whole body, at most `limit` bytes: refused by `Content-Length` before reading, or as
/// soon as it streams past the limit.
async fn read_body(req: Request, limit: usize) -> Result<Bytes, HttpError> {
    let too_large = || HttpError::too_large(format!("request body is larger than {limit} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| usize::try_from(n).map_or(true, |n| n > limit)) {
        return Err(too_large());
    }
    // Sized by the announced length (within the limit) so the buffer never doubles past it.
    let mut buf =
        bytes::BytesMut::with_capacity(declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0));
    let mut chunks = req.into_body().into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|e| HttpError::bad_request(format!("failed to read the request body: {e}")))?;
        if buf.len().checked_add(chunk.len()).is_none_or(|n| n > limit) {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

fn json_ok<T: Serialize>(node: &Node, v: &T) -> Response {
    let mut resp = axum::Json(v).into_response();
    if let Some((_, addr)) = node.leader()
        && let Ok(h) = HeaderValue::from_str(&addr)
    {
        resp.headers_mut().insert(LEADER_HEADER, h);
    }
    resp
}

fn timed(node: &Node, op: Op, start: Instant, r: Result<Response, HttpError>) -> Response {
    node.metrics.observe(op, start.elapsed(), r.is_ok());
    match r {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn check_key(key: &str) -> Result<(), HttpError> {
    validate_key(key).map_err(HttpError::bad_request)
}

fn check_value(value: &[u8]) -> Result<(), HttpError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(HttpError::too_large(format!(
            "value is {} bytes, the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

fn check_ttl(ttl_ms: u64) -> Result<(), HttpError> {
    if ttl_ms == 0 || ttl_ms > MAX_LEASE_TTL_MS {
        return Err(HttpError::bad_request(format!(
            "ttl_ms must be between 1 and {MAX_LEASE_TTL_MS} (one hour), got {ttl_ms}"
        )));
    }
    Ok(())
}

/// The checks of the client API, for a write from a client or forwarded by a member: keys,
/// values and lease TTLs within the documented limits. Batches are formed by the leader
/// itself and never arrive over HTTP.
fn check_command(cmd: &Command) -> Result<(), HttpError> {
    match cmd {
        Command::Put(p) => {
            check_key(&p.key)?;
            check_value(&p.value)
        }
        Command::Delete(d) => check_key(&d.key),
        Command::Txn(t) => {
            for c in &t.compares {
                check_key(&c.key)?;
            }
            for op in t.success.iter().chain(&t.failure) {
                match op {
                    TxnOp::Put { key, value, .. } => {
                        check_key(key)?;
                        check_value(value)?;
                    }
                    TxnOp::Delete { key } | TxnOp::Get { key } => check_key(key)?,
                }
            }
            Ok(())
        }
        Command::LeaseGrant { ttl_ms } => check_ttl(*ttl_ms),
        Command::LeaseRevoke { .. } => Ok(()),
        Command::Batch(_) => Err(HttpError::bad_request(
            "a batch is formed by the leader and cannot be sent",
        )),
    }
}

async fn kv_get(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<GetRequest>,
) -> Response {
    let start = Instant::now();
    let r = async {
        check_key(&req.key)?;
        if !req.serializable {
            node.read_barrier(is_forwarded(&headers)).await?;
        }
        let resp = node.shared.read(|s| GetResponse {
            revision: s.kv.revision(),
            kv: s.kv.get(&req.key),
        });
        Ok(json_ok(&node, &resp))
    }
    .await;
    timed(&node, Op::Get, start, r)
}

async fn kv_list(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ListRequest>,
) -> Response {
    let start = Instant::now();
    let r = async {
        validate_prefix(&req.prefix).map_err(HttpError::bad_request)?;
        let limit = req.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if limit == 0 || limit > DEFAULT_LIST_LIMIT {
            return Err(HttpError::bad_request(format!(
                "limit must be between 1 and {DEFAULT_LIST_LIMIT}"
            )));
        }
        if !req.serializable {
            node.read_barrier(is_forwarded(&headers)).await?;
        }
        let resp = node.shared.read(|s| {
            let (kvs, more) = s.kv.list(
                &req.prefix,
                req.after.as_deref(),
                limit as usize,
                req.keys_only,
            );
            ListResponse {
                revision: s.kv.revision(),
                kvs,
                more,
            }
        });
        Ok(json_ok(&node, &resp))
    }
    .await;
    timed(&node, Op::List, start, r)
}

async fn write_outcome(node: &Node, cmd: Command) -> Result<Outcome, HttpError> {
    Ok(node.write(cmd, false).await?)
}

fn outcome_response(node: &Node, outcome: Outcome) -> Result<Response, HttpError> {
    Ok(match outcome {
        Outcome::Put(r) => json_ok(node, &r),
        Outcome::Delete(r) => json_ok(node, &r),
        Outcome::Txn(r) => json_ok(node, &r),
        Outcome::LeaseGranted(r) => json_ok(node, &r),
        Outcome::LeaseRevoked(r) => json_ok(node, &r),
        // Batches are formed inside the leader and never answer a client call.
        Outcome::None | Outcome::Batch(_) => json_ok(node, &serde_json::json!({})),
    })
}

async fn kv_put(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<PutRequest>) -> Response {
    let start = Instant::now();
    let r = async {
        let cmd = Command::Put(req);
        check_command(&cmd)?;
        let o = write_outcome(&node, cmd).await?;
        outcome_response(&node, o)
    }
    .await;
    timed(&node, Op::Put, start, r)
}

async fn kv_delete(
    State(node): State<Arc<Node>>,
    JsonBody(req): JsonBody<DeleteRequest>,
) -> Response {
    let start = Instant::now();
    let r = async {
        let cmd = Command::Delete(req);
        check_command(&cmd)?;
        let o = write_outcome(&node, cmd).await?;
        outcome_response(&node, o)
    }
    .await;
    timed(&node, Op::Delete, start, r)
}

async fn kv_txn(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<TxnRequest>) -> Response {
    let start = Instant::now();
    let r = async {
        let cmd = Command::Txn(req);
        check_command(&cmd)?;
        let o = write_outcome(&node, cmd).await?;
        outcome_response(&node, o)
    }
    .await;
    timed(&node, Op::Txn, start, r)
}

async fn lease_grant(
    State(node): State<Arc<Node>>,
    JsonBody(req): JsonBody<LeaseGrantRequest>,
) -> Response {
    let start = Instant::now();
    let r = async {
        let cmd = Command::LeaseGrant { ttl_ms: req.ttl_ms };
        check_command(&cmd)?;
        let o = write_outcome(&node, cmd).await?;
        outcome_response(&node, o)
    }
    .await;
    timed(&node, Op::LeaseGrant, start, r)
}

async fn lease_keep_alive(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LeaseIdRequest>,
) -> Response {
    let start = Instant::now();
    let r = async {
        let ttl_ms = node.keep_alive(req.id, is_forwarded(&headers)).await?;
        Ok(json_ok(
            &node,
            &LeaseKeepAliveResponse { id: req.id, ttl_ms },
        ))
    }
    .await;
    timed(&node, Op::LeaseKeepAlive, start, r)
}

async fn lease_revoke(
    State(node): State<Arc<Node>>,
    JsonBody(req): JsonBody<LeaseIdRequest>,
) -> Response {
    let start = Instant::now();
    let r = async {
        let o = write_outcome(&node, Command::LeaseRevoke { id: req.id }).await?;
        outcome_response(&node, o)
    }
    .await;
    timed(&node, Op::LeaseRevoke, start, r)
}

fn ndjson_line<T: Serialize>(v: &T) -> Bytes {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The revision a watch starts from: `start_revision` (at least 1), or the next revision.
/// A start beyond the next revision is refused: nothing could ever be sent from it until the
/// store got there, and its progress lines would claim revisions that do not exist. (etcd
/// waits for such a revision instead; Capstan's watchers only ever resume from a revision
/// they have seen, plus one.)
async fn watch_start(
    node: &Node,
    forwarded: bool,
    start_revision: Option<u64>,
) -> Result<u64, HttpError> {
    let current = node.shared.read(|s| s.kv.revision());
    let next = current.saturating_add(1);
    let Some(start) = start_revision else {
        return Ok(next);
    };
    if start <= next {
        return Ok(start.max(1));
    }
    // This member may only lag: a client resuming after a failover asks for a revision
    // another member has already shown it. Catch up with the leader and look again.
    node.read_barrier(forwarded).await?;
    let current = node.shared.read(|s| s.kv.revision());
    if start > current.saturating_add(1) {
        return Err(HttpError::bad_request(format!(
            "start_revision {start} is ahead of the store: the current revision is {current}, \
             so the latest start is {}",
            current.saturating_add(1)
        )));
    }
    Ok(start)
}

async fn watch(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<WatchRequest>,
) -> Response {
    let start = Instant::now();
    let r = async {
        if req.prefix {
            validate_prefix(&req.key).map_err(HttpError::bad_request)?;
        } else {
            check_key(&req.key)?;
        }
        let from = watch_start(&node, is_forwarded(&headers), req.start_revision).await?;
        let compact = node.shared.read(|s| s.kv.compact_revision());
        if from <= compact {
            let mut e = ApiError::new(
                "compacted",
                format!(
                    "revision {from} is compacted; the oldest watchable revision is {}",
                    compact + 1
                ),
            );
            e.compact_revision = Some(compact);
            return Err(HttpError::new(StatusCode::GONE, e));
        }
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        tokio::spawn(watch_task(node.clone(), req, from, tx));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        let mut resp = Body::from_stream(stream).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        Ok(resp)
    }
    .await;
    timed(&node, Op::Watch, start, r)
}

/// Streams the changes from `from` on: first a progress line, then one line per batch of
/// whole revisions, and a progress line every second of silence.
async fn watch_task(node: Arc<Node>, req: WatchRequest, from: u64, tx: mpsc::Sender<Bytes>) {
    let mut rev_rx = node.shared.subscribe();
    let mut next = from;
    let progress = |revision: u64| {
        ndjson_line(&WatchResponse {
            revision,
            events: Vec::new(),
            error: None,
        })
    };
    if tx.send(progress(next - 1)).await.is_err() {
        return;
    }
    loop {
        rev_rx.borrow_and_update();
        let res = node.shared.read(|s| {
            s.kv.events_since(next, &req.key, req.prefix, 500)
                .map(|evs| (evs, s.kv.revision()))
        });
        match res {
            Err(c) => {
                let mut e = ApiError::new("compacted", format!("revision {next} is compacted"));
                e.compact_revision = Some(c.compact_revision);
                let _ = tx
                    .send(ndjson_line(&WatchResponse {
                        revision: next - 1,
                        events: Vec::new(),
                        error: Some(e),
                    }))
                    .await;
                return;
            }
            Ok((events, current)) => {
                if let Some(last) = events.last().map(|e| e.revision()) {
                    next = last.saturating_add(1);
                    if tx
                        .send(ndjson_line(&WatchResponse {
                            revision: last,
                            events,
                            error: None,
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                if current >= next {
                    next = current.saturating_add(1);
                }
                tokio::select! {
                    _ = rev_rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        if tx.send(progress(next - 1)).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                    _ = node.shutdown.cancelled() => return,
                }
            }
        }
    }
}

fn members_of(node: &Node) -> MembersResponse {
    let m = node.raft.metrics();
    let m = m.borrow();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, n)| Member {
            id: *id,
            addr: n.addr.clone(),
            voter: voters.contains(id),
        })
        .collect();
    MembersResponse {
        leader: m.current_leader,
        members,
    }
}

async fn members(State(node): State<Arc<Node>>) -> Response {
    let resp = members_of(&node);
    json_ok(&node, &resp)
}

/// True if the raft core itself (not its possibly lagging metrics) says this member leads as
/// a voter. A leader that has just removed itself keeps leading for a moment without being a
/// member; openraft must not be asked for membership changes then.
async fn leads_as_voter(node: &Node) -> bool {
    let id = node.id;
    node.is_leader()
        && node
            .raft
            .with_raft_state(move |st| {
                st.server_state == openraft::ServerState::Leader
                    && st
                        .membership_state
                        .effective()
                        .membership()
                        .voter_ids()
                        .any(|v| v == id)
            })
            .await
            .unwrap_or(false)
}

/// Sends the request to the leader (membership changes must run there). A member that is
/// not the leader never runs it itself, even when it still believes it leads (a leader that
/// just removed itself): the client retries once a new leader is elected.
async fn forward_to_leader(
    node: &Node,
    path: &str,
    body: Vec<u8>,
    forwarded: bool,
) -> Result<Response, HttpError> {
    let leader = node.leader();
    if forwarded {
        return Err(NodeError::NotLeader {
            leader: leader.map(|l| l.1),
        }
        .into());
    }
    let Some((_, addr)) = leader.filter(|(id, _)| *id != node.id) else {
        return Err(NodeError::Unavailable("no coord leader elected".into()).into());
    };
    let url = format!("{}{path}", node.dialer.base_url(&addr));
    let resp = node
        .http
        .post(&url)
        .header(FORWARDED, "1")
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(120))
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError::from(NodeError::Unavailable(format!("leader unreachable: {e}"))))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| HttpError::from(NodeError::OutcomeUnknown(e.to_string())))?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

fn membership_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> HttpError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            NodeError::NotLeader { leader: None }.into()
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => HttpError::new(
            StatusCode::CONFLICT,
            ApiError::new("membership", e.to_string()),
        ),
        RaftError::Fatal(e) => NodeError::OutcomeUnknown(e.to_string()).into(),
    }
}

async fn member_add(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<AddMemberRequest>,
) -> Response {
    let r = async {
        if req.id == 0 || !crate::config::valid_host_port(&req.addr) {
            return Err(HttpError::bad_request(
                "id must be > 0 and addr must be host:port",
            ));
        }
        if !leads_as_voter(&node).await {
            let body = serde_json::to_vec(&req).unwrap_or_default();
            return forward_to_leader(&node, "/v1/members/add", body, is_forwarded(&headers)).await;
        }
        tracing::info!(member = req.id, addr = %req.addr, "Adding coord member as learner");
        let add = node
            .raft
            .add_learner(req.id, BasicNode::new(&req.addr), true);
        tokio::time::timeout(Duration::from_secs(100), add)
            .await
            .map_err(|_| {
                HttpError::from(NodeError::OutcomeUnknown(
                    "learner did not catch up in time".into(),
                ))
            })?
            .map_err(membership_error)?;
        let voters = std::collections::BTreeSet::from([req.id]);
        node.raft
            .change_membership(ChangeMembers::AddVoterIds(voters), false)
            .await
            .map_err(membership_error)?;
        tracing::info!(member = req.id, addr = %req.addr, "Coord member now votes");
        Ok(json_ok(&node, &members_of(&node)))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn member_remove(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<RemoveMemberRequest>,
) -> Response {
    let r = async {
        if !leads_as_voter(&node).await {
            let body = serde_json::to_vec(&req).unwrap_or_default();
            return forward_to_leader(&node, "/v1/members/remove", body, is_forwarded(&headers))
                .await;
        }
        let current = members_of(&node);
        let Some(m) = current.members.iter().find(|m| m.id == req.id) else {
            return Err(HttpError::new(
                StatusCode::NOT_FOUND,
                ApiError::new("not_found", format!("no member {}", req.id)),
            ));
        };
        let ids = std::collections::BTreeSet::from([req.id]);
        let change = if m.voter {
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        node.raft
            .change_membership(change, false)
            .await
            .map_err(membership_error)?;
        tracing::info!(member = req.id, "Removed coord member");
        Ok(json_ok(&node, &members_of(&node)))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn probe_health(node: &Node, addr: &str) -> bool {
    let url = format!("{}/health", node.dialer.base_url(addr));
    matches!(
        node.http.get(&url).timeout(Duration::from_millis(500)).send().await,
        Ok(r) if r.status().is_success()
    )
}

pub(crate) async fn status_of(node: &Node) -> StatusResponse {
    let members = members_of(node);
    let m = node.raft.metrics().borrow().clone();
    let commit_index = node
        .raft
        .with_raft_state(|st| st.committed.map_or(0, |l| l.index))
        .await
        .unwrap_or(0);
    let probes = members.members.iter().map(|mem| async move {
        let healthy = if mem.id == node.id {
            local_health(node)
        } else {
            probe_health(node, &mem.addr).await
        };
        MemberStatus {
            id: mem.id,
            addr: mem.addr.clone(),
            voter: mem.voter,
            healthy,
            is_leader: m.current_leader == Some(mem.id),
        }
    });
    let statuses = futures::future::join_all(probes).await;
    let leader_addr = m.current_leader.and_then(|id| {
        members
            .members
            .iter()
            .find(|x| x.id == id)
            .map(|x| x.addr.clone())
    });
    StatusResponse {
        id: node.id,
        leader: m.current_leader,
        leader_addr,
        term: m.current_term,
        commit_index,
        applied_index: m.last_applied.map_or(0, |l| l.index),
        revision: node.shared.read(|s| s.kv.revision()),
        members: statuses,
    }
}

async fn status(State(node): State<Arc<Node>>) -> Response {
    let s = status_of(&node).await;
    json_ok(&node, &s)
}

/// Exhibitor's `/exhibitor/v1/cluster/status`: one entry per member; code 3 = serving,
/// 1 = down.
async fn exhibitor_status(State(node): State<Arc<Node>>) -> Response {
    let s = status_of(&node).await;
    let list: Vec<serde_json::Value> = s
        .members
        .iter()
        .map(|m| {
            let host = m.addr.rsplit_once(':').map_or(m.addr.as_str(), |(h, _)| h);
            serde_json::json!({
                "code": if m.healthy { 3 } else { 1 },
                "description": if m.healthy { "serving" } else { "down" },
                "hostname": host,
                "isLeader": m.is_leader,
            })
        })
        .collect();
    axum::Json(list).into_response()
}

fn local_health(node: &Node) -> bool {
    let m = node.raft.metrics();
    let m = m.borrow();
    m.running_state.is_ok() && m.current_leader.is_some()
}

async fn health(State(node): State<Arc<Node>>) -> Response {
    let (leader, term) = {
        let m = node.raft.metrics();
        let m = m.borrow();
        (m.current_leader, m.current_term)
    };
    let healthy = local_health(&node);
    let body =
        serde_json::json!({ "healthy": healthy, "id": node.id, "leader": leader, "term": term });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let m = node.raft.metrics().borrow().clone();
    let commit_index = node
        .raft
        .with_raft_state(|st| st.committed.map_or(0, |l| l.index))
        .await
        .unwrap_or(0);
    let (revision, keys) = node.shared.read(|s| (s.kv.revision(), s.kv.len()));
    let sample = RaftSample {
        term: m.current_term,
        commit_index,
        applied_index: m.last_applied.map_or(0, |l| l.index),
        last_log_index: m.last_log_index.unwrap_or(0),
        is_leader: m.current_leader == Some(node.id),
        revision,
        keys,
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics.render(&sample),
    )
        .into_response()
}

async fn snapshot(State(node): State<Arc<Node>>) -> Response {
    let r = async {
        node.read_barrier(false).await?;
        let backup = node.shared.read(|s| Backup::new(s.kv.without_history()));
        let bytes = serde_json::to_vec(&backup)
            .map_err(|e| HttpError::from(NodeError::Internal(e.to_string())))?;
        Ok::<_, HttpError>(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

// ----- raft RPCs between members -----

async fn raft_append(
    State(node): State<Arc<Node>>,
    JsonBody(req): JsonBody<AppendEntriesRequest<TypeConfig>, RAFT>,
) -> Response {
    axum::Json(node.raft.append_entries(req).await).into_response()
}

async fn raft_vote(
    State(node): State<Arc<Node>>,
    JsonBody(req): JsonBody<VoteRequest<u64>, VOTE>,
) -> Response {
    axum::Json(node.raft.vote(req).await).into_response()
}

async fn raft_snapshot(
    State(node): State<Arc<Node>>,
    JsonBody(req): JsonBody<InstallSnapshotRequest<TypeConfig>, RAFT>,
) -> Response {
    axum::Json(node.raft.install_snapshot(req).await).into_response()
}

/// A write forwarded by a follower: answered with the `CommandResult`, or an error whose code
/// tells whether it was applied. It gets the client API's checks: the follower has made them,
/// but a member's token is all this endpoint asks for.
async fn raft_write(
    State(node): State<Arc<Node>>,
    JsonBody(cmd): JsonBody<Command, RAFT_WRITE>,
) -> Response {
    if let Err(e) = check_command(&cmd) {
        return e.into_response();
    }
    match node.write(cmd, true).await {
        Ok(o) => axum::Json(crate::sm::CommandResult::Ok(o)).into_response(),
        Err(NodeError::Apply(e)) => axum::Json(crate::sm::CommandResult::Err(e)).into_response(),
        Err(e) => HttpError::from(e).into_response(),
    }
}

async fn raft_read_index(State(node): State<Arc<Node>>) -> Response {
    match node.local_read_index().await {
        Ok(i) => axum::Json(i).into_response(),
        Err(e) => HttpError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(chunks: usize, size: usize) -> Request {
        let stream = futures::stream::iter(
            (0..chunks).map(move |_| Ok::<_, Infallible>(Bytes::from(vec![b' '; size]))),
        );
        Request::new(Body::from_stream(stream))
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_is_413_and_one_at_the_limit_is_read() {
        let Err(e) = read_body(streamed(5, 1000), 4999).await else {
            panic!("a body over the limit is read");
        };
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.body.code, "too_large");
        let Ok(b) = read_body(streamed(5, 1000), 5000).await else {
            panic!("a body at the limit is refused");
        };
        assert_eq!(b.len(), 5000);
    }

    #[test]
    fn strict_mode_asks_masters_for_raft_and_any_node_for_the_client_api() {
        for open in ["/health", "/metrics"] {
            assert_eq!(need(open), Need::Open, "{open}");
        }
        for master in [
            "/raft/append",
            "/raft/vote",
            "/raft/snapshot",
            "/raft/write",
            "/raft/read-index",
            "/raft/unknown",
            "/v1/members/add",
            "/v1/members/remove",
            "/v1/snapshot",
        ] {
            assert_eq!(need(master), Need::Master, "{master}");
        }
        for any in [
            "/v1/kv/get",
            "/v1/kv/put",
            "/v1/watch",
            "/v1/lease/grant",
            "/v1/members",
            "/v1/status",
            "/exhibitor/v1/cluster/status",
            "/health/",
            "/raftish",
            "/nope",
        ] {
            assert_eq!(need(any), Need::Node, "{any}");
        }
    }

    #[test]
    fn forwarded_commands_get_the_client_api_checks() {
        use capstan_coord_client::{DeleteRequest, PutRequest};
        let put = |key: &str, len: usize| {
            Command::Put(PutRequest {
                key: key.into(),
                value: vec![0; len],
                ..Default::default()
            })
        };
        let status = |c: &Command| check_command(c).err().map(|e| e.status.as_u16());
        assert_eq!(status(&put("/a", MAX_VALUE_BYTES)), None);
        assert_eq!(status(&put("/a", MAX_VALUE_BYTES + 1)), Some(413));
        assert_eq!(status(&put("a", 1)), Some(400));
        let del = Command::Delete(DeleteRequest {
            key: format!("/{}", "k".repeat(capstan_coord_client::MAX_KEY_BYTES)),
            if_version: None,
        });
        assert_eq!(status(&del), Some(400));
        for (ttl, want) in [
            (0, Some(400)),
            (1, None),
            (MAX_LEASE_TTL_MS, None),
            (MAX_LEASE_TTL_MS + 1, Some(400)),
            (u64::MAX, Some(400)),
        ] {
            assert_eq!(status(&Command::LeaseGrant { ttl_ms: ttl }), want, "{ttl}");
        }
        assert_eq!(status(&Command::Batch(vec![put("/a", 1)])), Some(400));
    }
}
