//! The HTTP client: endpoint selection, retries, watches and lease keep-alive.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::peer::{PEER_TOKEN_HEADER, PeerToken};
use crate::types::*;

/// Timeouts of a [`Client`], and how it speaks to the members.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time limit of one HTTP request to one member.
    pub request_timeout: Duration,
    /// How long a call keeps trying other members (and waiting for a leader) before it fails.
    pub retry_deadline: Duration,
    /// Speak https with this TLS configuration (a strict-mode coord): usually the node's,
    /// `capstan_runtime::tls::NodeTls::client_config`, which presents the node certificate
    /// and trusts only the cluster CA. `None` (the default): plain http.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            retry_deadline: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Errors of a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The key's version was not the expected one (create-if-absent, compare-and-swap,
    /// conditional delete).
    #[error("version conflict (current version {current_version})")]
    Conflict { current_version: u64 },
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// The watch's start revision was compacted away.
    #[error("revision compacted (oldest watchable revision is {})", compact_revision + 1)]
    Compacted { compact_revision: u64 },
    /// Any other error answer of the server.
    #[error("coord answered {status}: {error}")]
    Api { status: u16, error: ApiError },
    /// No member could serve the call before the retry deadline; a write was not applied.
    #[error("no coord member could serve the request: {0}")]
    Unavailable(String),
    /// The write was sent but its answer was lost: it may or may not have been applied.
    #[error("the outcome of the write is unknown: {0}")]
    OutcomeUnknown(String),
    /// The server answered something this client does not understand.
    #[error("invalid answer from coord: {0}")]
    Protocol(String),
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl ClientError {
    fn from_api(status: u16, error: ApiError) -> ClientError {
        match error.code.as_str() {
            "conflict" => ClientError::Conflict {
                current_version: error.current_version.unwrap_or(0),
            },
            "compacted" => ClientError::Compacted {
                compact_revision: error.compact_revision.unwrap_or(0),
            },
            _ => ClientError::Api { status, error },
        }
    }
}

/// A cheap-to-clone client of a coord cluster.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// `http` or, with [`ClientOptions::tls`], `https`.
    scheme: &'static str,
    http: reqwest::Client,
    preferred: AtomicUsize,
    opts: ClientOptions,
    /// Sent on every call: membership changes need it (see [`Client::with_peer_token`]).
    peer_token: Option<PeerToken>,
}

enum Attempt<T> {
    /// The answer, and the leader's address if the member named it.
    Done(Result<T, ClientError>, Option<String>),
    /// Safe to try again (on another member).
    Retry(String),
}

impl Client {
    /// A client of the members at `endpoints` (`host:port`, optionally with `http://` or
    /// `https://`): the scheme spoken is https when [`ClientOptions::tls`] is set, unless every
    /// endpoint names `http://`.
    pub fn new<I, S>(endpoints: I) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::with_options(endpoints, ClientOptions::default())
    }

    pub fn with_options<I, S>(endpoints: I, opts: ClientOptions) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.as_ref().trim().to_owned())
            .collect();
        // Endpoints that all name `http://` keep it (a permissive coord beside a strict daemon,
        // as in tests); otherwise https exactly when TLS is configured.
        let all_plain = !endpoints.is_empty() && endpoints.iter().all(|e| e.starts_with("http://"));
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| {
                e.strip_prefix("http://")
                    .or_else(|| e.strip_prefix("https://"))
                    .unwrap_or(&e)
                    .trim_end_matches('/')
                    .to_string()
            })
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::Config("no endpoint given".into()));
        }
        // Idle connections are dropped before coord's own idle limit (30 s by default) closes
        // them, so a call never races the server closing the connection it reuses.
        let mut builder = capstan_http_client::builder()
            .connect_timeout(Duration::from_millis(1000))
            .pool_idle_timeout(Duration::from_secs(20));
        if let Some(tls) = &opts.tls {
            builder = capstan_http_client::with_tls(builder, tls);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let scheme = if opts.tls.is_some() && !all_plain {
            "https"
        } else {
            "http"
        };
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                scheme,
                http,
                preferred: AtomicUsize::new(0),
                opts,
                peer_token: None,
            }),
        })
    }

    /// This client, sending the cluster's peer token with every call: what membership changes
    /// ([`Client::member_add`], [`Client::member_remove`]) need.
    pub fn with_peer_token(self, token: PeerToken) -> Client {
        Client {
            inner: Arc::new(Inner {
                endpoints: self.inner.endpoints.clone(),
                scheme: self.inner.scheme,
                http: self.inner.http.clone(),
                preferred: AtomicUsize::new(self.inner.preferred.load(Ordering::Relaxed)),
                opts: self.inner.opts.clone(),
                peer_token: Some(token),
            }),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Linearizable read of one key.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, ClientError> {
        Ok(self
            .get_with(GetRequest {
                key: key.into(),
                serializable: false,
            })
            .await?
            .kv)
    }

    pub async fn get_with(&self, req: GetRequest) -> Result<GetResponse, ClientError> {
        self.post("/v1/kv/get", &req, true).await
    }

    /// One page of keys under `prefix` (see [`ListRequest`] for continuation).
    pub async fn list(&self, req: ListRequest) -> Result<ListResponse, ClientError> {
        self.post("/v1/kv/list", &req, true).await
    }

    /// Every key under `prefix`, following continuations. The pages are read at possibly
    /// different revisions; the returned revision is the first page's.
    pub async fn list_all(&self, prefix: &str) -> Result<ListResponse, ClientError> {
        let mut out = ListResponse {
            revision: 0,
            kvs: Vec::new(),
            more: false,
        };
        let mut after = None;
        loop {
            let page = self
                .list(ListRequest {
                    prefix: prefix.into(),
                    after: after.clone(),
                    ..Default::default()
                })
                .await?;
            if out.revision == 0 {
                out.revision = page.revision;
            }
            after = page.kvs.last().map(|kv| kv.key.clone());
            out.kvs.extend(page.kvs);
            if !page.more || after.is_none() {
                return Ok(out);
            }
        }
    }

    /// Unconditional put.
    pub async fn put(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResponse, ClientError> {
        self.put_with(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
    }

    /// Put with a lease and/or a version condition.
    pub async fn put_with(&self, req: PutRequest) -> Result<PutResponse, ClientError> {
        self.post("/v1/kv/put", &req, false).await
    }

    /// Creates `key` only if it does not exist ([`ClientError::Conflict`] otherwise).
    pub async fn create(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        lease: Option<LeaseId>,
    ) -> Result<PutResponse, ClientError> {
        self.put_with(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            if_version: Some(0),
        })
        .await
    }

    /// Replaces `key` only if its version is `version` ([`ClientError::Conflict`] otherwise).
    pub async fn compare_and_swap(
        &self,
        key: &str,
        version: u64,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResponse, ClientError> {
        self.put_with(PutRequest {
            key: key.into(),
            value: value.into(),
            lease: None,
            if_version: Some(version),
        })
        .await
    }

    pub async fn delete(&self, key: &str) -> Result<DeleteResponse, ClientError> {
        self.post(
            "/v1/kv/delete",
            &DeleteRequest {
                key: key.into(),
                if_version: None,
            },
            false,
        )
        .await
    }

    /// Deletes `key` only if its version is `version`.
    pub async fn delete_if(&self, key: &str, version: u64) -> Result<DeleteResponse, ClientError> {
        self.post(
            "/v1/kv/delete",
            &DeleteRequest {
                key: key.into(),
                if_version: Some(version),
            },
            false,
        )
        .await
    }

    /// Atomic multi-key transaction.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, ClientError> {
        self.post("/v1/kv/txn", &req, false).await
    }

    /// Starts watching; the returned [`Watcher`] resumes by itself after a reconnect.
    pub fn watch(&self, req: WatchRequest) -> Watcher {
        Watcher {
            client: self.clone(),
            next_revision: req.start_revision,
            req,
            stream: None,
            buf: Vec::new(),
        }
    }

    pub async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrantResponse, ClientError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.post("/v1/lease/grant", &LeaseGrantRequest { ttl_ms }, false)
            .await
    }

    pub async fn lease_keep_alive(
        &self,
        id: LeaseId,
    ) -> Result<LeaseKeepAliveResponse, ClientError> {
        self.post("/v1/lease/keepalive", &LeaseIdRequest { id }, true)
            .await
            .map_err(|e| lease_error(id, e))
    }

    pub async fn lease_revoke(&self, id: LeaseId) -> Result<LeaseRevokeResponse, ClientError> {
        self.post("/v1/lease/revoke", &LeaseIdRequest { id }, false)
            .await
            .map_err(|e| lease_error(id, e))
    }

    /// Keeps lease `id` alive in the background (every third of its TTL) until the returned
    /// handle is dropped or the lease is found gone.
    pub fn spawn_keep_alive(&self, id: LeaseId, ttl: Duration) -> KeepAlive {
        let (tx, rx) = tokio::sync::watch::channel(true);
        let client = self.clone();
        let period = (ttl / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match client.lease_keep_alive(id).await {
                    Ok(_) => {}
                    Err(ClientError::LeaseNotFound(_)) => {
                        tracing::warn!(lease = id, "Lease expired");
                        let _ = tx.send(false);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(lease = id, error = %e, "Lease keep-alive failed, retrying")
                    }
                }
            }
        });
        KeepAlive { alive: rx, task }
    }

    pub async fn members(&self) -> Result<MembersResponse, ClientError> {
        self.get_path("/v1/members").await
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get_path("/v1/status").await
    }

    /// Adds a member: it joins as a learner, catches up, then votes. Needs the peer token
    /// ([`Client::with_peer_token`]): anyone else gets `401`/`403`.
    pub async fn member_add(&self, id: u64, addr: &str) -> Result<MembersResponse, ClientError> {
        self.post(
            "/v1/members/add",
            &AddMemberRequest {
                id,
                addr: addr.into(),
            },
            false,
        )
        .await
    }

    pub async fn member_remove(&self, id: u64) -> Result<MembersResponse, ClientError> {
        self.post("/v1/members/remove", &RemoveMemberRequest { id }, false)
            .await
    }

    /// A consistent backup of all keys and leases (see `snapshot restore`).
    pub async fn snapshot(&self) -> Result<Vec<u8>, ClientError> {
        let bytes: Bytes = self
            .call(reqwest::Method::GET, "/v1/snapshot", None, true, |b| {
                Ok(Bytes(b))
            })
            .await?;
        Ok(bytes.0)
    }

    async fn get_path<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(reqwest::Method::GET, path, None, true, parse_json)
            .await
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        idempotent: bool,
    ) -> Result<Resp, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call(
            reqwest::Method::POST,
            path,
            Some(body),
            idempotent,
            parse_json,
        )
        .await
    }

    async fn call<T>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        idempotent: bool,
        parse: impl Fn(Vec<u8>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let inner = &self.inner;
        let n = inner.endpoints.len();
        let deadline = Instant::now() + inner.opts.retry_deadline;
        let start = inner.preferred.load(Ordering::Relaxed);
        let mut backoff = Duration::from_millis(20);
        let mut attempt = 0usize;
        loop {
            let idx = (start + attempt) % n;
            let endpoint = &inner.endpoints[idx];
            let outcome = self
                .attempt(
                    method.clone(),
                    endpoint,
                    path,
                    body.clone(),
                    idempotent,
                    &parse,
                )
                .await;
            match outcome {
                Attempt::Done(r, leader) => {
                    // Prefer the leader when it is one of our endpoints: it saves a hop. After
                    // a broken exchange, move on: that member may be dead or cut off.
                    let next = if matches!(r, Err(ClientError::OutcomeUnknown(_))) {
                        (idx + 1) % n
                    } else {
                        leader
                            .and_then(|l| inner.endpoints.iter().position(|e| *e == l))
                            .unwrap_or(idx)
                    };
                    inner.preferred.store(next, Ordering::Relaxed);
                    return r;
                }
                Attempt::Retry(why) => {
                    tracing::debug!(endpoint = %endpoint, path, why = %why, "Retrying coord call");
                    attempt += 1;
                    if Instant::now() + backoff >= deadline {
                        return Err(ClientError::Unavailable(why));
                    }
                    if attempt.is_multiple_of(n) {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                }
            }
        }
    }

    async fn attempt<T>(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        path: &str,
        body: Option<Vec<u8>>,
        idempotent: bool,
        parse: &impl Fn(Vec<u8>) -> Result<T, ClientError>,
    ) -> Attempt<T> {
        let url = format!("{}://{endpoint}{path}", self.inner.scheme);
        let mut req = self
            .inner
            .http
            .request(method, &url)
            .timeout(self.inner.opts.request_timeout);
        if let Some(token) = &self.inner.peer_token {
            req = req.header(PEER_TOKEN_HEADER, token.as_str());
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() || idempotent => return Attempt::Retry(format!("{url}: {e}")),
            Err(e) => {
                return Attempt::Done(
                    Err(ClientError::OutcomeUnknown(format!("{url}: {e}"))),
                    None,
                );
            }
        };
        let status = resp.status();
        let leader = resp
            .headers()
            .get(LEADER_HEADER)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let bytes = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) if idempotent => return Attempt::Retry(format!("{url}: {e}")),
            Err(e) => {
                return Attempt::Done(
                    Err(ClientError::OutcomeUnknown(format!("{url}: {e}"))),
                    None,
                );
            }
        };
        if status.is_success() {
            return Attempt::Done(parse(bytes), leader);
        }
        let err: ApiError = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(_) => ApiError::new(
                "internal",
                format!("{status}: {}", String::from_utf8_lossy(&bytes)),
            ),
        };
        match err.code.as_str() {
            "not_leader" | "unavailable" => Attempt::Retry(format!("{url}: {err}")),
            "outcome_unknown" if idempotent => Attempt::Retry(format!("{url}: {err}")),
            "outcome_unknown" => Attempt::Done(Err(ClientError::OutcomeUnknown(err.message)), None),
            _ => Attempt::Done(Err(ClientError::from_api(status.as_u16(), err)), leader),
        }
    }
}

struct Bytes(Vec<u8>);

fn parse_json<T: DeserializeOwned>(bytes: Vec<u8>) -> Result<T, ClientError> {
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
}

fn lease_error(id: LeaseId, e: ClientError) -> ClientError {
    match e {
        ClientError::Api { error, .. } if error.code == "lease_not_found" => {
            ClientError::LeaseNotFound(id)
        }
        e => e,
    }
}

/// Background keep-alive of a lease; dropping it stops the keep-alive.
pub struct KeepAlive {
    alive: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    /// False once the lease was found expired or revoked.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Resolves when the lease is found gone.
    pub async fn lost(&mut self) {
        let _ = self.alive.wait_for(|alive| !*alive).await;
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A watch that survives reconnects and leader changes: after a broken stream it reconnects
/// (to any member) from the revision after the last one it delivered, so no change is missed
/// or repeated.
pub struct Watcher {
    client: Client,
    req: WatchRequest,
    next_revision: Option<u64>,
    stream: Option<reqwest::Response>,
    buf: Vec<u8>,
}

impl Watcher {
    /// The revision the watch will deliver next (after the first answer of the server).
    pub fn next_revision(&self) -> Option<u64> {
        self.next_revision
    }

    /// The next batch of changes, in revision order; a batch never splits a revision.
    /// Errors: [`ClientError::Compacted`] (fatal for this watch), or
    /// [`ClientError::Unavailable`] when no member answered before the retry deadline
    /// (calling `next` again keeps trying).
    pub async fn next(&mut self) -> Result<WatchResponse, ClientError> {
        let deadline = Instant::now() + self.client.inner.opts.retry_deadline;
        let mut backoff = Duration::from_millis(20);
        loop {
            if self.stream.is_none() {
                match self.connect().await {
                    Ok(()) => {}
                    Err(ClientError::Unavailable(why)) => {
                        if Instant::now() >= deadline {
                            return Err(ClientError::Unavailable(why));
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            match self.next_line().await {
                Some(line) => {
                    let resp: WatchResponse = match serde_json::from_slice(&line) {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::debug!(error = %e, "Bad watch line, reconnecting");
                            self.stream = None;
                            continue;
                        }
                    };
                    if let Some(err) = resp.error {
                        self.stream = None;
                        if err.code == "compacted" {
                            return Err(ClientError::from_api(410, err));
                        }
                        tracing::debug!(error = %err, "Watch ended by server, reconnecting");
                        continue;
                    }
                    let next = resp.revision + 1;
                    if self.next_revision.is_none_or(|n| next > n) {
                        self.next_revision = Some(next);
                    }
                    if !resp.events.is_empty() {
                        return Ok(WatchResponse {
                            revision: resp.revision,
                            events: resp.events,
                            error: None,
                        });
                    }
                }
                None => {
                    self.stream = None;
                    if Instant::now() >= deadline {
                        return Err(ClientError::Unavailable("watch stream ended".into()));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let inner = &self.client.inner;
        let n = inner.endpoints.len();
        let start = inner.preferred.load(Ordering::Relaxed);
        let mut req = self.req.clone();
        req.start_revision = self.next_revision;
        let body = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut last = String::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let url = format!("{}://{}/v1/watch", inner.scheme, inner.endpoints[idx]);
            let resp = inner
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    self.stream = Some(r);
                    self.buf.clear();
                    return Ok(());
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let bytes = r.bytes().await.unwrap_or_default();
                    match serde_json::from_slice::<ApiError>(&bytes) {
                        Ok(err) if err.code == "unavailable" || err.code == "not_leader" => {
                            last = err.to_string()
                        }
                        Ok(err) => return Err(ClientError::from_api(status, err)),
                        Err(_) => last = format!("{url}: {status}"),
                    }
                }
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        Err(ClientError::Unavailable(last))
    }

    /// The next complete line, or `None` when the stream broke or ended.
    async fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.len() > 1 {
                    return Some(line);
                }
                continue;
            }
            // The server sends a progress line every second; silence means a dead member.
            let silence = self.client.inner.opts.request_timeout;
            let stream = self.stream.as_mut()?;
            match tokio::time::timeout(silence, stream.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    self.stream = None;
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_roots() -> Arc<rustls::ClientConfig> {
        let config = rustls::ClientConfig::builder_with_provider(capstan_http_client::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    }

    /// The first byte a client sends a listener, or `None` if it sends none in time.
    async fn first_byte(scheme: &str, opts: ClientOptions) -> Option<u8> {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let addr = listener.local_addr().ok()?;
        let client = Client::with_options([format!("{scheme}{addr}/")], opts).ok()?;
        assert_eq!(client.endpoints(), [addr.to_string()]);
        let call = tokio::spawn(async move { client.status().await });
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .ok()?
            .ok()?;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut byte)).await;
        call.abort();
        matches!(read, Ok(Ok(_))).then_some(byte[0])
    }

    #[tokio::test]
    async fn a_client_with_tls_speaks_https_and_one_without_plain_http() {
        let quick = ClientOptions {
            request_timeout: Duration::from_millis(500),
            retry_deadline: Duration::from_millis(500),
            ..ClientOptions::default()
        };
        let tls = ClientOptions {
            tls: Some(no_roots()),
            ..quick.clone()
        };
        // A TLS client hello starts with the handshake record type, 0x16; HTTP with a method.
        assert_eq!(first_byte("https://", tls.clone()).await, Some(0x16));
        assert_eq!(first_byte("", tls.clone()).await, Some(0x16));
        assert_eq!(first_byte("https://", quick.clone()).await, Some(b'G'));
        assert_eq!(first_byte("", quick).await, Some(b'G'));
        // Endpoints that name http:// keep it, TLS or not (a permissive coord).
        assert_eq!(first_byte("http://", tls).await, Some(b'G'));
    }
}
