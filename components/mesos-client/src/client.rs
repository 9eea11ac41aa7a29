//! The HTTP side: leader discovery, the SUBSCRIBE request, and calls to the leader.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_types::{Chain, ClientCredential};
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use tracing::debug;

use crate::endpoint::{Endpoint, EndpointError, Scheme};
use crate::subscription::Subscription;
use crate::watchdog::{DEFAULT_HEARTBEAT, Watchdog};

/// The header naming a scheduler's subscription on every later call.
pub const STREAM_ID_HEADER: &str = "Mesos-Stream-Id";
const JSON: &str = "application/json";
/// How much of a refusal's body is kept for the error.
const MAX_ERROR_BODY_CHARS: usize = 1024;

/// Settings of a [`MasterClient`]; [`ClientConfig::new`] has the defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The masters, tried in turn; a standby's `307` is followed to the leader.
    pub masters: Vec<Endpoint>,
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Longest wait for a SUBSCRIBE's response headers.
    pub request_timeout: Duration,
    /// Longest wait for a call's answer.
    pub call_timeout: Duration,
    /// Most redirects followed from one configured master.
    pub max_redirects: u32,
    /// Longest record accepted from a stream; a larger one ends it with an error.
    pub max_record_len: usize,
    /// The heartbeat interval assumed until the stream announces one.
    pub heartbeat: Duration,
    /// A stream without a record for this many heartbeat intervals is dead.
    pub missed_heartbeats: u32,
    /// Sent with every request: a framework's principal and secret, or a token (a master in
    /// strict mode wants one).
    pub credential: Option<ClientCredential>,
    /// Speak TLS to the masters with this configuration (usually the node's,
    /// `capstan_runtime::tls::NodeTls::client_config`: it presents the node certificate and
    /// trusts only the cluster CA). A bare `host:port` master, and the leader a redirect
    /// names by `//host:port`, are then `https`; `http://` written out stays plain. `None`:
    /// plain HTTP for bare endpoints, and `https://` ones trust the default roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientConfig {
    pub fn new(masters: Vec<Endpoint>) -> ClientConfig {
        ClientConfig {
            masters,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(30),
            max_redirects: 4,
            max_record_len: capstan_proto::recordio::DEFAULT_MAX_RECORD_LEN,
            heartbeat: DEFAULT_HEARTBEAT,
            missed_heartbeats: 5,
            credential: None,
            tls: None,
        }
    }

    /// The scheme of a master named by `host:port` alone.
    pub fn default_scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }
}

/// The client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("a master address is not usable")]
    Endpoint(#[from] EndpointError),
    #[error("cannot build the HTTP client for the masters")]
    Http(#[source] reqwest::Error),
    #[error("the credential is not a valid header value")]
    Credential,
}

/// One HTTP exchange with one master failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot reach the master at {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the master at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("the master at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("the master at {url} redirected to an unusable Location {location:?}")]
    BadRedirect {
        url: String,
        location: String,
        #[source]
        source: Option<EndpointError>,
    },
    #[error("more than {max} redirects starting at {url}")]
    TooManyRedirects { url: String, max: u32 },
}

impl RequestError {
    /// The status a master answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RequestError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The body of a refusal (empty if there was none).
    pub fn body(&self) -> &str {
        match self {
            RequestError::Status { body, .. } => body,
            _ => "",
        }
    }
}

/// No subscription could be opened.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("no master is configured")]
    NoMasters,
    /// A master understood the request and refused it (a 4xx): asking the others, which
    /// would redirect to the same leader, is pointless.
    #[error("the master refused the subscription")]
    Refused(#[source] RequestError),
    #[error("none of the {tried} masters accepted the subscription")]
    Unavailable {
        tried: usize,
        #[source]
        last: RequestError,
    },
}

impl SubscribeError {
    /// The refusal's status and body, when a master refused.
    pub fn refusal(&self) -> Option<(StatusCode, &str)> {
        match self {
            SubscribeError::Refused(e) => e.status().map(|s| (s, e.body())),
            _ => None,
        }
    }
}

/// A client of the masters' HTTP APIs: finds the leader, subscribes, and makes calls.
#[derive(Debug, Clone)]
pub struct MasterClient {
    http: reqwest::Client,
    cfg: ClientConfig,
    /// Which configured master the next round of [`MasterClient::subscribe`] starts at.
    next: usize,
}

impl MasterClient {
    pub fn new(mut cfg: ClientConfig) -> Result<MasterClient, BuildError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(c) = &cfg.credential {
            let mut value = reqwest::header::HeaderValue::from_str(c.header_value())
                .map_err(|_| BuildError::Credential)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = capstan_http_client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout)
            .default_headers(headers)
            .no_proxy();
        if let Some(tls) = &cfg.tls {
            builder = capstan_http_client::with_tls(builder, tls);
        }
        let http = builder.build().map_err(BuildError::Http)?;
        let scheme = cfg.default_scheme();
        cfg.masters = std::mem::take(&mut cfg.masters)
            .into_iter()
            .map(|m| m.or_scheme(scheme))
            .collect();
        Ok(MasterClient { http, cfg, next: 0 })
    }

    /// A client of the masters at `addresses` (`host:port`, `http://host:port` or
    /// `https://host:port`), with the
    /// defaults of [`ClientConfig::new`] changed by `tune`.
    pub fn for_masters<S: AsRef<str>>(
        addresses: &[S],
        tune: impl FnOnce(&mut ClientConfig),
    ) -> Result<MasterClient, BuildError> {
        let mut cfg = ClientConfig::new(Endpoint::parse_all(addresses)?);
        tune(&mut cfg);
        MasterClient::new(cfg)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Posts `body` (JSON) to `path` on the configured masters in turn, starting after the
    /// one that led to the last subscription, following redirects to the leader, until one
    /// answers `2xx`; that answer's body is the RecordIO stream.
    pub async fn subscribe(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Subscription, SubscribeError> {
        let body = body.into();
        let n = self.cfg.masters.len();
        let mut last = None;
        for i in 0..n {
            let idx = (self.next + i) % n;
            let start = self.cfg.masters[idx].clone();
            match self.subscribe_at(&start, path, &body).await {
                Ok(sub) => {
                    // The next round starts with the next master: this one may be gone.
                    self.next = (idx + 1) % n;
                    return Ok(sub);
                }
                Err(e) if e.status().is_some_and(|s| s.is_client_error()) => {
                    self.next = (idx + 1) % n;
                    return Err(SubscribeError::Refused(e));
                }
                Err(e) => {
                    debug!(master = %start, error = %Chain(&e), "Master not usable");
                    last = Some(e);
                }
            }
        }
        match last {
            Some(last) => Err(SubscribeError::Unavailable { tried: n, last }),
            None => Err(SubscribeError::NoMasters),
        }
    }

    async fn subscribe_at(
        &self,
        start: &Endpoint,
        path: &str,
        body: &Bytes,
    ) -> Result<Subscription, RequestError> {
        let mut endpoint = start.clone().or_scheme(self.cfg.default_scheme());
        let mut url = endpoint.url(path);
        for _ in 0..=self.cfg.max_redirects {
            let send = self
                .http
                .post(&url)
                .header(CONTENT_TYPE, JSON)
                .header(ACCEPT, JSON)
                .body(body.clone())
                .send();
            let resp = self.answer(&url, send, self.cfg.request_timeout).await?;
            let status = resp.status();
            if status.is_success() {
                let stream_id = resp
                    .headers()
                    .get(STREAM_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let watchdog = Watchdog::new(
                    self.cfg.heartbeat,
                    self.cfg.missed_heartbeats,
                    tokio::time::Instant::now(),
                );
                return Ok(Subscription::new(
                    endpoint,
                    stream_id,
                    resp.bytes_stream().boxed(),
                    self.cfg.max_record_len,
                    watchdog,
                ));
            }
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let redirect =
                    endpoint
                        .redirect(&location)
                        .map_err(|e| RequestError::BadRedirect {
                            url: url.clone(),
                            location: location.clone(),
                            source: Some(e),
                        })?;
                let path = if redirect.path.is_empty() {
                    path
                } else {
                    &redirect.path
                };
                url = redirect.endpoint.url(path);
                endpoint = redirect.endpoint;
                debug!(to = %url, "Following the redirect to the leading master");
                continue;
            }
            return Err(self.refusal(url, resp).await);
        }
        Err(RequestError::TooManyRedirects {
            url: start.url(path),
            max: self.cfg.max_redirects,
        })
    }

    /// Waits for a response's headers, within `timeout`.
    async fn answer(
        &self,
        url: &str,
        send: impl Future<Output = reqwest::Result<reqwest::Response>>,
        timeout: Duration,
    ) -> Result<reqwest::Response, RequestError> {
        tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| RequestError::Timeout {
                url: url.to_owned(),
                timeout,
            })?
            .map_err(|source| RequestError::Connect {
                url: url.to_owned(),
                source,
            })
    }

    async fn refusal(&self, url: String, resp: reqwest::Response) -> RequestError {
        let status = resp.status();
        let body = tokio::time::timeout(self.cfg.request_timeout, resp.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        RequestError::Status {
            url,
            status,
            body: body.chars().take(MAX_ERROR_BODY_CHARS).collect(),
        }
    }

    /// Calls to `path` on `leader` (the master a subscription reached), each carrying
    /// `Mesos-Stream-Id: stream_id` when one is given (over TLS if the client speaks it and
    /// `leader` names no scheme).
    pub fn calls(&self, leader: &Endpoint, path: &str, stream_id: Option<&str>) -> Calls {
        let leader = leader.clone().or_scheme(self.cfg.default_scheme());
        Calls {
            client: self.clone(),
            url: leader.url(path),
            leader,
            stream_id: stream_id.map(str::to_owned),
        }
    }
}

/// Posts calls to the master a subscription reached; cheap to clone.
#[derive(Debug, Clone)]
pub struct Calls {
    client: MasterClient,
    leader: Endpoint,
    url: String,
    stream_id: Option<String>,
}

impl Calls {
    pub fn leader(&self) -> &Endpoint {
        &self.leader
    }

    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    /// Posts one call already serialised as JSON (so a caller can queue pre-serialised
    /// calls); `Ok` on any `2xx`.
    pub async fn send_json(&self, body: impl Into<Bytes>) -> Result<StatusCode, RequestError> {
        let mut req = self
            .client
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, JSON)
            .body(body.into());
        if let Some(id) = &self.stream_id {
            req = req.header(STREAM_ID_HEADER, id);
        }
        let timeout = self.client.cfg.call_timeout;
        let resp = self.client.answer(&self.url, req.send(), timeout).await?;
        let status = resp.status();
        if status.is_success() {
            Ok(status)
        } else {
            Err(self.client.refusal(self.url.clone(), resp).await)
        }
    }

    /// Posts one protobuf message in Mesos JSON.
    pub async fn send<M: capstan_proto::Message + capstan_proto::prost::Name>(
        &self,
        call: &M,
    ) -> Result<StatusCode, RequestError> {
        self.send_json(capstan_proto::to_json_vec(call)).await
    }
}
