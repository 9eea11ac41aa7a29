//! The `security` section every daemon's config has, and serving an API behind its guard.
//!
//! ```yaml
//! security:
//!   mode: strict            # or permissive (the default)
//!   tls:                    # required in strict mode: the node's certificate from the cluster CA
//!     cert_file: /var/lib/capstan/pki/node.crt
//!     key_file: /var/lib/capstan/pki/node.key
//!     ca_file: /var/lib/capstan/pki/ca.crt
//!   allow_plaintext: false  # also answer plain HTTP on the port (credentials still required)
//! ```

use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ConfigProblem;
use crate::auth::{Guard, SecurityMode};
use crate::http::{HttpLimits, TlsServing, serve, serve_tls};
use crate::tls::{NodeTls, TlsError, TlsFiles};

/// How a daemon secures its own port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub mode: SecurityMode,
    /// The node's TLS identity; required in strict mode, optional in permissive mode (then the
    /// port speaks TLS and plain HTTP both, without asking for credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// In strict mode, also answer plain HTTP on the same port (for clients that cannot speak
    /// TLS, such as pymesos); every request must still carry a credential.
    pub allow_plaintext: bool,
}

impl SecurityConfig {
    /// Problems with the section, field paths under `field` (e.g. `security`).
    pub fn problems(&self, field: &str) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.mode == SecurityMode::Strict && self.tls.is_none() {
            out.push(ConfigProblem::new(
                format!("{field}.tls"),
                "strict mode needs the node's certificate, key and the cluster CA (cert_file, key_file, ca_file)",
            ));
        }
        out
    }

    /// Problems with a daemon's listen address under this mode: in strict mode an internal
    /// port binds the node's cluster address, never every address (`0.0.0.0`, `::`).
    pub fn listen_problems(&self, field: &str, listen: std::net::SocketAddr) -> Vec<ConfigProblem> {
        if self.mode == SecurityMode::Strict && listen.ip().is_unspecified() {
            vec![ConfigProblem::new(
                field,
                format!(
                    "strict mode binds the node's cluster address, not {}",
                    listen.ip()
                ),
            )]
        } else {
            Vec::new()
        }
    }

    /// The TLS identity, when the section names one (reads and checks the files).
    pub fn node_tls(&self) -> Result<Option<NodeTls>, TlsError> {
        self.tls.as_ref().map(NodeTls::load).transpose()
    }

    /// The TLS a strict daemon's own clients speak (to coord, the masters, apps, ...): the
    /// node's certificate presented, only the cluster CA trusted. `None` in permissive mode,
    /// where they speak plain HTTP.
    pub fn client_tls(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, TlsError> {
        if self.mode != SecurityMode::Strict {
            return Ok(None);
        }
        Ok(self.node_tls()?.map(|t| t.client_config()))
    }

    /// How the port speaks TLS, if it does: plain HTTP beside TLS in permissive mode, and in
    /// strict mode only if `allow_plaintext`.
    pub fn serving(&self, tls: Option<&NodeTls>) -> Option<TlsServing> {
        tls.map(|t| TlsServing {
            config: t.server_config(),
            allow_plaintext: self.mode == SecurityMode::Permissive || self.allow_plaintext,
        })
    }
}

/// Serves `router` behind `guard`, over TLS when `tls` says so (see [`serve`], [`serve_tls`]).
pub async fn serve_secured(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    guard: Guard,
    tls: Option<TlsServing>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let router = guard.layer(router);
    match tls {
        None => serve(listener, router, limits, stop).await,
        Some(tls) => serve_tls(listener, router, limits, tls, stop).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_mode_needs_tls_files() {
        let strict = SecurityConfig {
            mode: SecurityMode::Strict,
            ..SecurityConfig::default()
        };
        let p = strict.problems("security");
        assert_eq!(p.len(), 1);
        assert!(p[0].to_string().contains("security.tls"), "{}", p[0]);
        assert!(SecurityConfig::default().problems("security").is_empty());
        let parsed: SecurityConfig = serde_yaml_ng::from_str(
            "mode: strict\ntls: {cert_file: /a, key_file: /b, ca_file: /c}\n",
        )
        .unwrap();
        assert!(parsed.problems("security").is_empty());
        assert!(serde_yaml_ng::from_str::<SecurityConfig>("mode: lax\n").is_err());
        assert!(serde_yaml_ng::from_str::<SecurityConfig>("modes: strict\n").is_err());
        let any = "0.0.0.0:8080".parse().unwrap();
        let one = "10.0.0.5:8080".parse().unwrap();
        assert_eq!(parsed.listen_problems("listen", any).len(), 1);
        assert!(parsed.listen_problems("listen", one).is_empty());
        assert!(
            SecurityConfig::default()
                .listen_problems("listen", any)
                .is_empty()
        );
    }
}
