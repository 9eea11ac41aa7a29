//! The one HTTP accept loop of the daemons' own ports, in place of `axum::serve`, with the
//! request limits every API needs against hostile clients (reliability probe F11, issue #19):
//!
//! - a header-read timeout, which also closes kept-alive connections left idle (hyper starts
//!   it when it waits for the next request's head), so a slowloris or an idle socket cannot
//!   hold a connection open;
//! - a body-read timeout between two pieces of a request body;
//! - caps on open connections overall and per source address (a connection over either cap
//!   is closed as soon as it is accepted);
//! - a cap on request head size and header count;
//! - a request-body ceiling (`413` by `Content-Length` up front, or as the body streams in);
//! - a JSON nesting-depth limit for JSON bodies, checked as the body streams in (the read
//!   fails as soon as it is crossed, so handlers answer 400; below `serde_json`'s own
//!   recursion limit of 128, and nothing is buffered here);
//! - the peer address on every request (`ConnectInfo<SocketAddr>`), and a graceful stop that
//!   waits a bounded time for requests in flight;
//! - with [`serve_tls`], TLS (optionally beside plain HTTP on the same port) and the client
//!   certificate's subject on every request ([`Transport`]).
//!
//! Errors are JSON (`{"code": …, "message": …}`). A daemon with its own, tighter per-route
//! limits keeps them: these are the ceilings under every route.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tls::{PeerCert, Transport};

/// How long a stop waits for requests in flight before it drops their connections.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The limits of [`serve`]. [`HttpLimits::default`] suits every daemon's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time allowed to send a request's head; also how long a kept-alive connection may idle.
    pub header_read_timeout: Duration,
    /// Time allowed between two pieces of a request body.
    pub body_read_timeout: Duration,
    /// Open connections at most, all sources together.
    pub max_connections: usize,
    /// Open connections at most from one source address.
    pub max_connections_per_ip: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects accepted in a JSON body.
    pub max_json_depth: usize,
    /// Most header fields in one request (more is `431`).
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_ip: 1024,
            max_body_bytes: 16 * 1024 * 1024,
            max_json_depth: 64,
            max_headers: 100,
        }
    }
}

/// Counts open connections, overall and per source address.
#[derive(Default)]
struct Counter {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    counter: Arc<Mutex<Counter>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counter.lock() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.per_ip.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.per_ip.remove(&self.ip);
                }
            }
        }
    }
}

fn admit(counter: &Arc<Mutex<Counter>>, ip: IpAddr, limits: &HttpLimits) -> Option<Slot> {
    let mut c = counter.lock().ok()?;
    let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
    if c.total >= limits.max_connections || from_ip >= limits.max_connections_per_ip {
        return None;
    }
    c.total += 1;
    c.per_ip.insert(ip, from_ip + 1);
    Some(Slot {
        counter: counter.clone(),
        ip,
    })
}

/// Serves `router` on `listener` with `limits` until `stop` fires, then waits (at most
/// [`STOP_GRACE`]) for requests in flight. Accept errors (out of file descriptors, a
/// connection reset before it was accepted) are logged and never end the loop.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    accept_loop(listener, router, limits, None, stop).await
}

/// How [`serve_tls`] speaks TLS.
#[derive(Clone, Debug)]
pub struct TlsServing {
    /// The server's TLS configuration (for a node: [`crate::tls::NodeTls::server_config`]).
    pub config: Arc<rustls::ServerConfig>,
    /// Also answer clients that speak plain HTTP on the same port (told apart by the first
    /// byte, as Mesos's `SSL_SUPPORT_DOWNGRADE` does), for clients that cannot speak TLS
    /// (pymesos). Such requests carry no certificate: they must bring a credential.
    pub allow_plaintext: bool,
}

/// [`serve`] over TLS: each request carries a [`Transport`] extension saying whether it came
/// over TLS and what client certificate the handshake proved. A plain-HTTP request on a port
/// that does not allow them is answered `400` with a JSON hint to use `https://`.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: TlsServing,
    stop: CancellationToken,
) -> std::io::Result<()> {
    accept_loop(listener, router, limits, Some(tls), stop).await
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<TlsServing>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let router = with_limits(router, limits);
    let acceptor = tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    let allow_plaintext = tls.as_ref().is_none_or(|t| t.allow_plaintext);
    let counter: Arc<Mutex<Counter>> = Arc::default();
    let tracker = TaskTracker::new();
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot accept a connection; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = admit(&counter, peer.ip(), &limits) else {
            let due = last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10));
            if due {
                last_refusal_log = Some(Instant::now());
                tracing::warn!(
                    peer = %peer,
                    max = limits.max_connections,
                    max_per_ip = limits.max_connections_per_ip,
                    "Too many open connections; closing new ones"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        let acceptor = acceptor.clone();
        tracker.spawn(async move {
            let _slot = slot;
            match acceptor {
                None => {
                    let transport = Transport::default();
                    serve_connection(stream, peer, transport, router, limits, stop).await;
                }
                Some(acceptor) => {
                    serve_maybe_tls(
                        stream,
                        peer,
                        acceptor,
                        allow_plaintext,
                        router,
                        limits,
                        stop,
                    )
                    .await;
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(STOP_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::info!("Requests still in flight after the stop grace; dropping them");
    }
    Ok(())
}

/// The TLS record type of a handshake: the first byte a TLS client sends.
const TLS_HANDSHAKE: u8 = 0x16;

async fn serve_maybe_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    allow_plaintext: bool,
    router: Router,
    limits: HttpLimits,
    stop: CancellationToken,
) {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return;
    }
    if first[0] != TLS_HANDSHAKE {
        if allow_plaintext {
            serve_connection(stream, peer, Transport::default(), router, limits, stop).await;
        } else {
            refuse_plaintext(stream).await;
        }
        return;
    }
    let handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            return;
        }
    };
    let transport = Transport {
        tls: true,
        peer: stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| PeerCert::from_der(leaf)),
    };
    serve_connection(stream, peer, transport, router, limits, stop).await;
}

/// Answers a plain-HTTP client of a TLS-only port, then closes.
async fn refuse_plaintext(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    let body = r#"{"code":"tls_required","message":"This port speaks TLS only: use https://"}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    transport: Transport,
    router: Router,
    limits: HttpLimits,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let inner = TowerToHyperService::new(router);
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(transport.clone());
            inner.call(req)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers.max(1))
        // The head (request line and headers) must fit; hyper's floor is 8 KiB.
        .max_buf_size(64 * 1024);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "Connection ended with an error");
    }
}

/// `router` with the body ceiling, the body-read timeout and the JSON depth limit in front of
/// every route (what [`serve`] applies; public for daemons that serve some other way).
pub fn with_limits(router: Router, limits: HttpLimits) -> Router {
    router.layer(axum::middleware::from_fn_with_state(limits, limit_request))
}

/// A JSON error response, `{"code": …, "message": …}`.
fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        })
        .unwrap_or(false)
}

async fn limit_request(State(limits): State<HttpLimits>, req: Request, next: Next) -> Response {
    let max = limits.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| usize::try_from(n).map_or(true, |n| n > max)) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("The request body is larger than the limit of {max} bytes"),
        );
    }
    let depth = is_json(&req).then_some(limits.max_json_depth);
    let (parts, body) = req.into_parts();
    // Nothing is buffered here: the body streams on to the handler, whose read fails with a
    // length-limit error (413 from axum's extractors) past the ceiling, a `TimedOut` error when
    // it stalls, and an `InvalidData` error (400) as soon as JSON nests too deep.
    let body = checked_body(body, limits.body_read_timeout, depth);
    let limited = Body::new(http_body_util::Limited::new(body, max));
    next.run(Request::from_parts(parts, limited)).await
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `body`, failing with a `TimedOut` I/O error when no piece arrives within `timeout`, and
/// with an `InvalidData` one when `max_depth` is given and the JSON nests deeper.
fn checked_body(body: Body, timeout: Duration, max_depth: Option<usize>) -> Body {
    let scanner = max_depth.map(DepthScanner::new);
    let state = Some((body.into_data_stream(), scanner));
    let pieces = futures::stream::unfold(state, move |state| async move {
        let (mut stream, mut scanner) = state?;
        let fail = |kind, message: String| {
            Some((
                Err(BoxError::from(std::io::Error::new(kind, message))),
                None,
            ))
        };
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(piece))) => {
                if let Some(s) = scanner.as_mut()
                    && s.feed(&piece)
                {
                    return fail(
                        std::io::ErrorKind::InvalidData,
                        format!("JSON nests arrays and objects deeper than {} levels", s.max),
                    );
                }
                Some((Ok::<Bytes, BoxError>(piece), Some((stream, scanner))))
            }
            Ok(Some(Err(e))) => Some((Err(BoxError::from(e)), None)),
            Ok(None) => None,
            Err(_) => fail(
                std::io::ErrorKind::TimedOut,
                format!("the request body stalled for more than {timeout:?}"),
            ),
        }
    });
    Body::from_stream(pieces)
}

/// Tracks the nesting of arrays and objects across the pieces of a JSON text (brackets inside
/// strings do not count). Says nothing about whether the text is valid JSON.
#[derive(Debug, Clone)]
struct DepthScanner {
    max: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl DepthScanner {
    fn new(max: usize) -> Self {
        Self {
            max,
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    /// Reads the next piece; true once the nesting went deeper than `max`.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth > self.max {
                        return true;
                    }
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }
}

/// True if `bytes`, read as JSON, nests arrays and objects deeper than `max` (brackets inside
/// strings do not count). Linear, no allocation; says nothing about whether `bytes` is valid.
pub fn json_depth_exceeds(bytes: &[u8], max: usize) -> bool {
    DepthScanner::new(max).feed(bytes)
}

#[cfg(test)]
mod tests;
