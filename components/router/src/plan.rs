//! From a request to what the router does with it: the route ([`crate::routes::route`]),
//! the auth check, and the upstream resolved to an address — or the answer itself.
//!
//! Key decision: everything that can be decided before touching an upstream is decided here,
//! in one async function with no pingora types, so the proxy layer only moves bytes. Errors are
//! JSON (`{"message": ...}`): 404 for an unknown agent or service, 503 when there is no leader
//! or the upstream is not configured, 401 with `WWW-Authenticate: acsjwt` and
//! `{"title","description"}` when the token is missing or invalid. (502 for an upstream that
//! does not answer is the proxy layer's, once it tried.)

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, header};
use serde_json::{Value, json};

use crate::config::{Config, authority};
use crate::local;
use crate::routes::{self, Local, Proxy, Route, Scheme, Upstream};
use crate::service::{self, Resolved};
use crate::state::State;

/// The cookie a browser login leaves (its token is accepted when there is no
/// `Authorization` header).
pub const AUTH_COOKIE: &str = "dcos-acs-auth-cookie";
/// The cookie with the logged-in user's public facts (stripped from upstream requests too).
pub const INFO_COOKIE: &str = "dcos-acs-info-cookie";

/// Checks a request's credentials (the IAM, or a stand-in in tests).
pub trait Verifier: Send + Sync + 'static {
    /// `Ok` when the headers carry a valid token; `Err` says why not (for the 401 body).
    fn verify(&self, headers: &HeaderMap) -> Result<(), String>;
}

/// Route families, each with its own limit of requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Mesos,
    Agent,
    Dns,
    Apps,
    Service,
    Catalog,
    Jobs,
    Logs,
    Metrics,
    Bootstrap,
    Local,
}

impl Family {
    pub const ALL: [Family; 11] = [
        Family::Mesos,
        Family::Agent,
        Family::Dns,
        Family::Apps,
        Family::Service,
        Family::Catalog,
        Family::Jobs,
        Family::Logs,
        Family::Metrics,
        Family::Bootstrap,
        Family::Local,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// An answer the router writes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(header::HeaderName, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            headers: vec![(header::CONTENT_TYPE, content_type.to_owned())],
            body: body.into(),
        }
    }

    pub fn json(status: u16, value: &Value) -> Reply {
        Reply::new(status, "application/json", value.to_string())
    }

    /// `{"message": ...}` with `status`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &json!({ "message": message.into() }))
    }

    /// 401 as Admin Router's EE flavour sends it (the CLI then prompts for uid/password).
    pub fn unauthorized(description: &str) -> Reply {
        Reply::json(
            401,
            &json!({"title": "Unauthorized", "description": description}),
        )
        .with(header::WWW_AUTHENTICATE, "acsjwt")
    }

    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::json(
            status,
            &json!({ "message": format!("moved to {location}") }),
        )
        .with(header::LOCATION, location)
    }

    pub fn with(mut self, name: header::HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// `host:port` to connect to.
    pub peer: String,
    pub tls: bool,
    /// Path and query to send.
    pub path: String,
    pub family: Family,
    pub streaming: bool,
    pub websocket: bool,
    pub strip_accept_encoding: bool,
    pub clear_authorization: bool,
    pub location_prefix: Option<String>,
    /// The token came from the auth cookie: send it upstream as `Authorization: token=...`.
    pub cookie_token: Option<String>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Reply(Reply),
    Forward(Box<Forward>),
}

/// Everything the plan needs; shared by every request.
pub struct Planner {
    pub config: Arc<Config>,
    pub state: State,
    pub verifier: Arc<dyn Verifier>,
    /// The loopback server of the IAM API.
    pub local_api: SocketAddr,
    /// Set when the cluster's daemons run in strict mode (`cluster_tls`): they are dialed
    /// over TLS with the node's certificate.
    pub cluster: Option<Arc<crate::upstream::ClusterIdentity>>,
}

/// The request as the plan sees it.
pub struct Request<'a> {
    pub method: &'a Method,
    /// The raw request target (path and query).
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    /// Came in over TLS.
    pub tls: bool,
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then(|| v.trim().to_owned())
        })
        .filter(|v| !v.is_empty())
}

/// What the plain port still serves when it redirects everything else to https: what a new
/// node fetches before it trusts the cluster (`install.sh`, which pins the CA by the join
/// token's digest, and the CA certificate) and the version a client probes first. Reads only.
/// Pure.
pub fn served_in_plain(method: &Method, target: &str) -> bool {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    matches!(*method, Method::GET | Method::HEAD)
        && matches!(
            path,
            "/install.sh" | "/ca/dcos-ca.crt" | "/dcos-metadata/dcos-version.json"
        )
}

impl Planner {
    /// `Ok(cookie token)` when the request may pass, else the 401.
    fn authorize(&self, headers: &HeaderMap) -> Result<Option<String>, Box<Reply>> {
        match self.verifier.verify(headers) {
            Ok(()) if headers.contains_key(header::AUTHORIZATION) => Ok(None),
            Ok(()) => Ok(cookie(headers, AUTH_COOKIE)),
            Err(why) => Err(Box::new(Reply::unauthorized(&why))),
        }
    }

    pub async fn plan(&self, req: &Request<'_>) -> Plan {
        if self.config.redirect_http && !req.tls && !served_in_plain(req.method, req.target) {
            return Plan::Reply(self.to_https(req));
        }
        match routes::route(req.method, req.target) {
            Route::Redirect { status, location } => Plan::Reply(Reply::redirect(status, &location)),
            Route::NotFound => Plan::Reply(Reply::error(404, "no such route")),
            Route::BadRequest(why) => Plan::Reply(Reply::error(400, why)),
            Route::Local { what, auth } => {
                if auth && let Err(r) = self.authorize(req.headers) {
                    return Plan::Reply(*r);
                }
                if what == Local::Iam {
                    let cookie_token = if req.headers.contains_key(header::AUTHORIZATION) {
                        None
                    } else {
                        cookie(req.headers, AUTH_COOKIE)
                    };
                    return Plan::Forward(Box::new(Forward {
                        peer: self.local_api.to_string(),
                        tls: false,
                        path: req.target.to_owned(),
                        family: Family::Local,
                        streaming: false,
                        websocket: false,
                        strip_accept_encoding: false,
                        clear_authorization: false,
                        location_prefix: None,
                        cookie_token,
                    }));
                }
                if let Local::Ui(rel) = &what
                    && self.config.ui_dir.is_none()
                {
                    return Plan::Reply(local::console(rel, req.headers));
                }
                Plan::Reply(local::answer(&what, req.method, &self.config, &self.state).await)
            }
            Route::Proxy(p) => {
                let cookie_token = if p.auth {
                    match self.authorize(req.headers) {
                        Ok(t) => t,
                        Err(r) => return Plan::Reply(*r),
                    }
                } else {
                    None
                };
                self.forward(p, cookie_token, req).await
            }
            Route::Service { rest, query } => {
                let cookie_token = match self.authorize(req.headers) {
                    Ok(t) => t,
                    Err(r) => return Plan::Reply(*r),
                };
                self.service(&rest, query.as_deref(), cookie_token, req)
                    .await
            }
        }
    }

    fn to_https(&self, req: &Request<'_>) -> Reply {
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| host_without_port(h).to_owned())
            .unwrap_or_else(|| self.config.public_ip.to_string());
        let port = match self.config.https_listen.map(|a| a.port()) {
            Some(443) | None => String::new(),
            Some(p) => format!(":{p}"),
        };
        Reply::redirect(301, &format!("https://{host}{port}{}", req.target))
    }

    async fn service(
        &self,
        rest: &str,
        query: Option<&str>,
        cookie_token: Option<String>,
        req: &Request<'_>,
    ) -> Plan {
        let mut resolved = service::resolve(rest, query, &self.state.snapshot());
        if resolved == Resolved::NotFound {
            let fresh = self.state.refreshed().await;
            resolved = service::resolve(rest, query, &fresh);
        }
        match resolved {
            Resolved::NotFound => Plan::Reply(Reply::error(404, "service not found")),
            Resolved::Proxy(p) => self.forward(p, cookie_token, req).await,
            Resolved::Srv {
                service,
                prefix,
                path,
            } => match self.state.srv(&self.config.dns_http, &service).await {
                Ok(Some(addr)) => {
                    let p = Proxy {
                        upstream: Upstream::Direct {
                            scheme: Scheme::Http,
                            authority: addr,
                        },
                        path,
                        auth: true,
                        streaming: true,
                        websocket: true,
                        strip_accept_encoding: true,
                        clear_authorization: false,
                        location_prefix: Some(prefix),
                    };
                    self.forward(p, cookie_token, req).await
                }
                Ok(None) => Plan::Reply(Reply::error(404, "service not found")),
                Err(e) => Plan::Reply(Reply::error(
                    503,
                    format!("cannot look up service {service}: {e}"),
                )),
            },
        }
    }

    /// The address of `upstream`, or the error answer.
    async fn peer(&self, upstream: &Upstream) -> Result<(String, bool, Family), Reply> {
        // The cluster's own daemons speak TLS in strict mode; the bootstrap server is on
        // loopback, plain.
        let strict = self.cluster.is_some();
        let configured =
            |v: &Option<String>, what: &str, family| match v.as_deref().and_then(authority) {
                Some(a) => Ok((a, strict && family != Family::Bootstrap, family)),
                None => Err(Reply::error(503, format!("{what} is not configured"))),
            };
        match upstream {
            Upstream::MasterLeader => match self.state.master_leader() {
                Some(a) => Ok((a, strict, Family::Mesos)),
                None => Err(Reply::error(503, "there is no leading master")),
            },
            Upstream::AppsLeader => match self.state.apps_leader() {
                Some(a) => Ok((a, strict, Family::Apps)),
                None => Err(Reply::error(503, "there is no leading apps daemon")),
            },
            Upstream::Agent(id) => {
                let known = self.state.snapshot().agent(id).map(str::to_owned);
                let known = match known {
                    Some(a) => Some(a),
                    None => self.state.refreshed().await.agent(id).map(str::to_owned),
                };
                match known {
                    Some(a) => Ok((a, strict, Family::Agent)),
                    None => Err(Reply::error(404, format!("agent {id} unknown"))),
                }
            }
            Upstream::Dns => configured(&Some(self.config.dns_http.clone()), "dns", Family::Dns),
            Upstream::Catalog => configured(&self.config.catalog, "the catalog", Family::Catalog),
            Upstream::Jobs => configured(&self.config.jobs, "jobs", Family::Jobs),
            Upstream::Logs => configured(&self.config.logs, "logs", Family::Logs),
            Upstream::Metrics => configured(&self.config.metrics, "metrics", Family::Metrics),
            Upstream::Bootstrap => configured(
                &self.config.bootstrap,
                "the bootstrap server",
                Family::Bootstrap,
            ),
            Upstream::Health => Err(Reply::error(404, "no such health endpoint")),
            Upstream::Direct { scheme, authority } => {
                Ok((authority.clone(), *scheme == Scheme::Https, Family::Service))
            }
        }
    }

    async fn forward(&self, p: Proxy, cookie_token: Option<String>, req: &Request<'_>) -> Plan {
        if p.upstream == Upstream::Health {
            let rest = p.path.trim_start_matches('/').to_owned();
            let what = Local::Health(rest);
            let answer = local::answer(&what, req.method, &self.config, &self.state).await;
            return Plan::Reply(answer);
        }
        match self.peer(&p.upstream).await {
            Err(reply) => Plan::Reply(reply),
            Ok((peer, tls, family)) => Plan::Forward(Box::new(Forward {
                peer,
                tls,
                path: if p.path.is_empty() {
                    "/".to_owned()
                } else {
                    p.path
                },
                family,
                streaming: p.streaming,
                websocket: p.websocket,
                strip_accept_encoding: p.strip_accept_encoding,
                clear_authorization: p.clear_authorization,
                location_prefix: p.location_prefix,
                cookie_token,
            })),
        }
    }
}

/// `example.com:80` → `example.com`, `[::1]:80` → `[::1]`.
fn host_without_port(h: &str) -> &str {
    if h.starts_with('[') {
        h.find(']').map_or(h, |i| &h[..=i])
    } else {
        h.split(':').next().unwrap_or(h)
    }
}

/// `Location` from an upstream, rewritten under `prefix` as nginx's `proxy_redirect` does: a
/// path (`/x`) or an absolute URL to the upstream itself becomes `<prefix>/x`; anything else
/// (another host) is left alone.
pub fn rewrite_location(location: &str, prefix: &str, upstream: &str) -> Option<String> {
    let prefix = prefix.trim_end_matches('/');
    if location.starts_with('/') && !location.starts_with("//") {
        if location.starts_with(&format!("{prefix}/")) || location == prefix {
            return None;
        }
        return Some(format!("{prefix}{location}"));
    }
    for scheme in ["http://", "https://"] {
        if let Some(rest) = location.strip_prefix(scheme) {
            let (auth, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            if auth.eq_ignore_ascii_case(upstream) {
                return Some(format!("{prefix}{path}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_port_serves_only_what_a_new_node_needs() {
        let table = [
            (Method::GET, "/install.sh", true),
            (Method::HEAD, "/install.sh", true),
            (Method::GET, "/install.sh?role=agent", true),
            (Method::GET, "/ca/dcos-ca.crt", true),
            (Method::GET, "/dcos-metadata/dcos-version.json", true),
            (Method::POST, "/install.sh", false),
            (Method::GET, "/install.sh/", false),
            (Method::GET, "/ca/dcos-ca.crt.key", false),
            (Method::GET, "/", false),
            (Method::GET, "/acs/api/v1/auth/login", false),
            (Method::GET, "/service/marathon/v2/apps", false),
            (Method::GET, "/v1/join", false),
        ];
        for (method, target, plain) in table {
            assert_eq!(served_in_plain(&method, target), plain, "{method} {target}");
        }
    }

    #[test]
    fn locations_are_rewritten_under_the_prefix() {
        let p = "/service/app";
        assert_eq!(
            rewrite_location("/login", p, "10.0.0.1:31000").as_deref(),
            Some("/service/app/login")
        );
        assert_eq!(
            rewrite_location("http://10.0.0.1:31000/a?b", p, "10.0.0.1:31000").as_deref(),
            Some("/service/app/a?b")
        );
        assert_eq!(
            rewrite_location("http://10.0.0.1:31000", p, "10.0.0.1:31000").as_deref(),
            Some("/service/app/")
        );
        assert_eq!(
            rewrite_location("https://example.com/x", p, "10.0.0.1:31000"),
            None
        );
        assert_eq!(rewrite_location("/service/app/x", p, "h:1"), None);
        assert_eq!(rewrite_location("//evil/x", p, "h:1"), None);
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; dcos-acs-auth-cookie=tok; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, AUTH_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn a_401_names_the_scheme() {
        let r = Reply::unauthorized("missing authentication token");
        assert_eq!(r.status, 401);
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| *k == header::WWW_AUTHENTICATE && v == "acsjwt")
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["title"], "Unauthorized");
    }
}
