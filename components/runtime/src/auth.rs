//! The guard in front of a daemon's API: who is calling ([`Principal`]), whether they may
//! ([`Access`], decided per route by the daemon's policy), and the audit trail of every call
//! that changes something.
//!
//! In `strict` mode a call is authenticated by, in order: the client certificate the TLS
//! handshake proved (a node of the cluster, see [`crate::tls`]); a token in `Authorization:
//! token=<t>` or `Authorization: Bearer <t>` (users and service accounts, as the router issues
//! them); HTTP basic authentication `principal:secret` (Mesos frameworks such as pymesos). The
//! daemon verifies the credential itself through its [`Authenticator`] (the identity service's
//! records, kept in memory); the router having checked it is not enough. A call without a
//! credential where one is needed is `401` (with `WWW-Authenticate`), a credential that does
//! not verify is `401` naming why, one whose role falls short is `403`. In `permissive` mode
//! every call passes as [`Principal::Anonymous`] (a node certificate, if any, still names the
//! caller) and only the audit trail remains.
//!
//! Every call that is not a read (`GET`, `HEAD`, `OPTIONS`) is written to the audit trail, the
//! `capstan::audit` tracing target (journald under systemd): daemon, principal, method, path,
//! source address and the status answered — refused calls included.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

pub use capstan_types::access::{Access, NodeRole, Principal, Role, SecurityMode, is_read};

use crate::tls::Transport;

/// The tracing target of the audit trail.
pub const AUDIT_TARGET: &str = "capstan::audit";

/// A credential a request carries in its `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `token=<t>` or `Bearer <t>`.
    Token(String),
    /// `Basic base64(principal:secret)`.
    Basic { principal: String, secret: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(…)"),
            Credential::Basic { principal, .. } => write!(f, "Basic({principal}, …)"),
        }
    }
}

impl Credential {
    /// The credential of `headers`: a token (`token=` first, as Admin Router looks, then
    /// `Bearer`), else basic credentials. Cookies are not read: browsers send them only to the
    /// router.
    pub fn from_headers(headers: &HeaderMap) -> Option<Credential> {
        let values: Vec<&str> = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .collect();
        let token = values
            .iter()
            .filter_map(|v| v.strip_prefix("token="))
            .chain(values.iter().filter_map(|v| scheme_value(v, "bearer")))
            .map(str::trim)
            .find(|t| !t.is_empty());
        if let Some(t) = token {
            return Some(Credential::Token(t.to_owned()));
        }
        values.iter().find_map(|v| {
            let encoded = scheme_value(v, "basic")?.trim();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (principal, secret) = text.split_once(':')?;
            (!principal.is_empty()).then(|| Credential::Basic {
                principal: principal.to_owned(),
                secret: secret.to_owned(),
            })
        })
    }
}

fn scheme_value<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Why a credential did not verify (said in the 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// An account as a credential proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: String,
    pub role: Role,
}

/// A future an [`Authenticator`] returns.
pub type Verifying<'a> = Pin<Box<dyn Future<Output = Result<Account, Refusal>> + Send + 'a>>;

/// Verifies the credentials of users, service accounts and frameworks (the identity service
/// implements it over its records).
pub trait Authenticator: Send + Sync + 'static {
    /// A token the router issued.
    fn verify_token(&self, token: &str) -> Result<Account, Refusal>;
    /// HTTP basic credentials: a uid and its password.
    fn verify_basic<'a>(&'a self, principal: &'a str, secret: &'a str) -> Verifying<'a>;
}

/// What a route needs, by method and path.
pub type Policy = Arc<dyn Fn(&Method, &str) -> Access + Send + Sync>;

/// A daemon's guard: its mode, how it verifies accounts, and its policy.
#[derive(Clone)]
pub struct Guard {
    daemon: &'static str,
    mode: SecurityMode,
    authenticator: Option<Arc<dyn Authenticator>>,
    policy: Policy,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("daemon", &self.daemon)
            .field("mode", &self.mode)
            .field("accounts", &self.authenticator.is_some())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Every call passes; mutations are still audited.
    pub fn permissive(daemon: &'static str) -> Guard {
        Guard {
            daemon,
            mode: SecurityMode::Permissive,
            authenticator: None,
            policy: Arc::new(|m, _| Access::by_method(m.as_str())),
        }
    }

    /// Calls need what `policy` says. Without an authenticator only node certificates
    /// authenticate (a daemon with no access to the identity records).
    pub fn strict(
        daemon: &'static str,
        authenticator: Option<Arc<dyn Authenticator>>,
        policy: Policy,
    ) -> Guard {
        Guard {
            daemon,
            mode: SecurityMode::Strict,
            authenticator,
            policy,
        }
    }

    pub fn mode(&self) -> SecurityMode {
        self.mode
    }

    /// `router` behind this guard. The [`Principal`] of each request that passes is in its
    /// extensions.
    pub fn layer(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(
            Arc::new(self),
            guard_request,
        ))
    }

    /// Who `req`'s credential says it is; `Ok(Anonymous)` when it carries none.
    async fn identify(
        &self,
        transport: Option<&Transport>,
        headers: &HeaderMap,
    ) -> Result<Principal, Refusal> {
        if let Some(peer) = transport.and_then(|t| t.peer.as_ref()) {
            return Ok(Principal::Node {
                name: peer.common_name.clone(),
                role: NodeRole::from_unit(peer.unit.as_deref()),
            });
        }
        if self.mode == SecurityMode::Permissive {
            return Ok(Principal::Anonymous);
        }
        let Some(credential) = Credential::from_headers(headers) else {
            return Ok(Principal::Anonymous);
        };
        let Some(auth) = &self.authenticator else {
            return Err(Refusal(
                "this daemon accepts only the cluster's node certificates".into(),
            ));
        };
        let account = match &credential {
            Credential::Token(t) => auth.verify_token(t)?,
            Credential::Basic { principal, secret } => auth.verify_basic(principal, secret).await?,
        };
        Ok(Principal::Account {
            uid: account.uid,
            role: account.role,
        })
    }
}

fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    let mut response = (
        status,
        axum::Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("acsjwt"));
    }
    response
}

fn needs(access: Access) -> &'static str {
    match access {
        Access::Public => "nothing",
        Access::Role(Role::Viewer) => "the viewer role",
        Access::Role(Role::Operator) => "the operator role",
        Access::Role(Role::Admin) => "the admin role",
        Access::AgentProtocol => "a node certificate of this cluster",
    }
}

/// For a handler whose need depends on the request's body (the Mesos operator API, whose reads
/// and writes are all `POST`s): whether the caller the guard let through may also do what
/// needs `access`, described as `what`: `None`, or the refusal the guard would have answered.
/// Without a guard in front, or in permissive mode, everything is allowed.
pub fn refusal(
    extensions: &axum::http::Extensions,
    access: Access,
    what: &str,
) -> Option<Response> {
    if extensions.get::<SecurityMode>() != Some(&SecurityMode::Strict) {
        return None;
    }
    let principal = extensions
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Anonymous);
    if principal.may(access) {
        return None;
    }
    Some(if principal == Principal::Anonymous {
        refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("{what} needs {}", needs(access)),
        )
    } else {
        refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} may not {what}: it needs {}",
                principal.name(),
                needs(access)
            ),
        )
    })
}

async fn guard_request(State(guard): State<Arc<Guard>>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let access = (guard.policy)(&method, &path);
    let identified = guard
        .identify(req.extensions().get::<Transport>(), req.headers())
        .await;
    let (principal, response) = match identified {
        Err(why) => (
            None,
            refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("The credential was refused: {why}"),
            ),
        ),
        Ok(principal) => {
            let allowed = guard.mode == SecurityMode::Permissive || principal.may(access);
            if allowed {
                req.extensions_mut().insert(principal.clone());
                req.extensions_mut().insert(guard.mode);
                (Some(principal), next.run(req).await)
            } else if principal == Principal::Anonymous {
                let response = refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    format!(
                        "{method} {path} needs {}: send `Authorization: token=<token>` (from `capstan auth login` or the router's /acs/api/v1/auth/login)",
                        needs(access)
                    ),
                );
                (Some(principal), response)
            } else {
                let response = refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "{} may not {method} {path}: it needs {}",
                        principal.name(),
                        needs(access)
                    ),
                );
                (Some(principal), response)
            }
        }
    };
    if !is_read(method.as_str()) {
        let who = principal
            .as_ref()
            .map_or_else(|| "refused credential".to_owned(), Principal::name);
        tracing::info!(
            target: AUDIT_TARGET,
            daemon = guard.daemon,
            principal = %who,
            method = %method,
            path = %path,
            source = %source,
            status = response.status().as_u16(),
            "audit"
        );
    }
    response
}

#[cfg(test)]
mod tests;
