//! The pingora side: [`Proxy`] implements `ProxyHttp` over a [`Planner`].
//!
//! `request_filter` applies the guardrails (431 for a request line plus headers over
//! `limits.max_header_bytes`, 413 for a declared body over `limits.max_body_bytes`; not an open
//! proxy: an absolute-form target is routed by its path alone, or refused with 400 while it
//! still names a scheme or authority), asks the planner, writes local answers
//! and takes a slot of the route family's concurrency limit (503 when full). The upstream
//! request keeps the client's `Host`, gets `X-Real-IP`, `X-Forwarded-For` (appended) and
//! `X-Forwarded-Proto`, loses the DC/OS cookies (and, when the token came from the cookie,
//! carries it as `Authorization: token=...`). Bodies stream both ways unbuffered (SSE, Mesos
//! streaming); WebSocket upgrades pass only on routes that allow them. A streamed body is
//! counted in `request_body_filter`, so a chunked upload over the limit fails with 413 too.
//! Upstream `Location`s are rewritten back under the route's prefix. Every error is JSON.
//!
//! Timeouts: pingora waits at most 60 s for each read of a request's headers on a new
//! connection (fixed by pingora); `limits.client_header_timeout_ms` bounds each read of the
//! request body and the idle time before the next request on a kept-alive connection (whose
//! headers are then read under the same bound); `limits.upstream_connect_timeout_ms` bounds
//! connecting (TCP and TLS) to an upstream. Upstream reads have no timeout: streams and long
//! polls stay open as long as both ends do.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, header};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::H1UpgradePolicy;
use pingora::{Error, ErrorSource, ErrorType, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::config::Limits;
use crate::plan::{AUTH_COOKIE, Family, Forward, INFO_COOKIE, Plan, Planner, Reply, Request};

/// One listener's proxy (plain or TLS: `X-Forwarded-Proto` and the https redirect differ).
pub struct Proxy {
    planner: Arc<Planner>,
    tls: bool,
    limits: Limits,
    families: Arc<Vec<Arc<Semaphore>>>,
}

impl Proxy {
    pub fn new(planner: Arc<Planner>, tls: bool, families: Arc<Vec<Arc<Semaphore>>>) -> Proxy {
        let limits = planner.config.limits.clone();
        Proxy {
            planner,
            tls,
            limits,
            families,
        }
    }

    /// One semaphore per [`Family`], `limit` permits each; shared by both listeners.
    pub fn families(limit: usize) -> Arc<Vec<Arc<Semaphore>>> {
        Arc::new(
            Family::ALL
                .iter()
                .map(|_| Arc::new(Semaphore::new(limit)))
                .collect(),
        )
    }
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    forward: Option<Box<Forward>>,
    /// Held until the request ends.
    _permit: Option<OwnedSemaphorePermit>,
    body_bytes: u64,
}

/// The request line and headers as they came on the wire, approximately (`name: value\r\n`).
fn header_bytes(req: &RequestHeader) -> usize {
    let target = req.uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    let line = req.method.as_str().len() + target + 12;
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// Writes `reply` (headers only for HEAD).
async fn write_reply(session: &mut Session, reply: Reply) -> Result<()> {
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 1))?;
    for (k, v) in reply.headers {
        resp.append_header(k, v)?;
    }
    resp.insert_header(header::CONTENT_LENGTH, reply.body.len().to_string())?;
    let head = session.req_header().method == Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}

/// How long the rest of a refused body is read (and dropped) before the connection closes, so
/// the client, still sending, gets to read the 413 instead of a reset (nginx's lingering close).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops what is left of the request body, for at most [`LINGER`].
async fn linger(session: &mut Session) {
    let _ = tokio::time::timeout(LINGER, session.as_downstream_mut().drain_request_body()).await;
}

/// `Cookie` without the DC/OS cookies; `None` if nothing is left.
fn strip_dcos_cookies(value: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|c| {
            let name = c.split('=').next().unwrap_or("");
            !c.is_empty() && name != AUTH_COOKIE && name != INFO_COOKIE
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

fn status_error(code: u16, why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(code), why)
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let timeout = self.limits.client_timeout();
        session.set_read_timeout(Some(timeout));
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(timeout.as_secs().max(1)));
        }
        let req = session.req_header();
        if header_bytes(req) > self.limits.max_header_bytes {
            write_reply(session, Reply::error(431, "request headers too large")).await?;
            return Ok(true);
        }
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.max_body_bytes) {
            write_reply(session, Reply::error(413, "request body too large")).await?;
            linger(session).await;
            return Ok(true);
        }
        if req.uri.scheme().is_some() || req.uri.authority().is_some() {
            let reply = Reply::error(400, "absolute-form request targets are not served");
            write_reply(session, reply).await?;
            return Ok(true);
        }
        let target = req
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let plan = self
            .planner
            .plan(&Request {
                method: &req.method,
                target: &target,
                headers: &req.headers,
                tls: self.tls,
            })
            .await;
        match plan {
            Plan::Reply(reply) => {
                write_reply(session, reply).await?;
                Ok(true)
            }
            Plan::Forward(forward) => {
                let slots = &self.families[forward.family.index()];
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        ctx._permit = Some(permit);
                        ctx.forward = Some(forward);
                        Ok(false)
                    }
                    Err(_) => {
                        let reply = Reply::error(503, "too many requests in flight on this route");
                        write_reply(session, reply).await?;
                        Ok(true)
                    }
                }
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(f) = ctx.forward.as_ref() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no upstream planned",
            ));
        };
        let addr = match tokio::net::lookup_host(f.peer.as_str()).await {
            Ok(mut addrs) => addrs.next(),
            Err(_) => None,
        };
        let Some(addr) = addr else {
            let mut e = Error::explain(
                ErrorType::ConnectNoRoute,
                format!("cannot resolve {}", f.peer),
            );
            e.as_up();
            return Err(e);
        };
        let host = match f.peer.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            None => f.peer.clone(),
        };
        let mut peer = HttpPeer::new(addr, f.tls, host);
        let connect = self.limits.connect_timeout();
        peer.options.connection_timeout = Some(connect);
        peer.options.total_connection_timeout = Some(connect);
        match &self.planner.cluster {
            // A strict cluster's own daemon: mutual TLS, its certificate checked.
            Some(id) if f.tls && f.family != Family::Service => id.apply(&mut peer),
            // A service's own https (its certificate is its business, as Admin Router's).
            _ => {
                peer.options.verify_cert = false;
                peer.options.verify_hostname = false;
            }
        }
        if !f.websocket {
            peer.options.http_upstream_request_policy.h1_upgrade = H1UpgradePolicy::Deny;
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(f) = ctx.forward.as_ref() else {
            return Ok(());
        };
        let uri = f
            .path
            .parse::<http::Uri>()
            .map_err(|_| status_error(400, "bad upstream path"))?;
        up.set_uri(uri);
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
        {
            let forwarded = match up
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
                _ => ip.clone(),
            };
            up.insert_header("x-real-ip", ip)?;
            up.insert_header("x-forwarded-for", forwarded)?;
        }
        up.insert_header("x-forwarded-proto", if self.tls { "https" } else { "http" })?;
        let cookies: Vec<String> = up
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(strip_dcos_cookies)
            .collect();
        up.remove_header(&header::COOKIE);
        if !cookies.is_empty() {
            up.insert_header(header::COOKIE, cookies.join("; "))?;
        }
        if f.clear_authorization {
            up.remove_header(&header::AUTHORIZATION);
        } else if let Some(token) = &f.cookie_token {
            up.insert_header(header::AUTHORIZATION, format!("token={token}"))?;
        }
        if f.strip_accept_encoding {
            up.remove_header(&header::ACCEPT_ENCODING);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > self.limits.max_body_bytes {
                return Err(status_error(413, "request body too large"));
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(f) = ctx.forward.as_ref() else {
            return Ok(());
        };
        let Some(prefix) = &f.location_prefix else {
            return Ok(());
        };
        let rewritten = resp
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|loc| crate::plan::rewrite_location(loc, prefix, &f.peer));
        if let Some(loc) = rewritten {
            resp.insert_header(header::LOCATION, loc)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let upstream = ctx.forward.as_ref().map(|f| f.peer.clone());
        let (code, message) = match e.etype() {
            ErrorType::HTTPStatus(code) => (
                *code,
                e.context
                    .as_ref()
                    .map_or_else(|| "request failed".to_owned(), |c| c.as_str().to_owned()),
            ),
            _ => match e.esource() {
                ErrorSource::Upstream => (
                    502,
                    match &upstream {
                        Some(u) => format!("upstream {u} is unavailable: {}", e.etype().as_str()),
                        None => "upstream unavailable".to_owned(),
                    },
                ),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        (0, String::new())
                    }
                    ErrorType::ReadTimedout => (408, "request timed out".to_owned()),
                    _ => (400, "bad request".to_owned()),
                },
                ErrorSource::Internal | ErrorSource::Unset => {
                    (500, format!("internal error: {}", e.etype().as_str()))
                }
            },
        };
        debug!(code, error = %e, "Request failed");
        if code > 0 {
            let _ = write_reply(session, Reply::error(code, message)).await;
            if code == 413 {
                linger(session).await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcos_cookies_are_stripped() {
        assert_eq!(
            strip_dcos_cookies("a=1; dcos-acs-auth-cookie=t; dcos-acs-info-cookie=i; b=2")
                .as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_dcos_cookies("dcos-acs-auth-cookie=t"), None);
    }
}
