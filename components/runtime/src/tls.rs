//! TLS on the daemons' own ports, with the node certificates the cluster CA issues (the
//! installer writes them: `/var/lib/capstan/pki/{ca.crt,node.crt,node.key}`).
//!
//! A daemon in strict mode serves TLS with its node's certificate and asks every client for a
//! certificate without requiring one: a client that presents one from the cluster CA is a node
//! of the cluster (its role, `master` or `agent`, is the certificate's organizational unit), a
//! client that presents none must bring a token (users, services, frameworks); a certificate
//! from any other CA fails the handshake. [`PeerCert`] is what the handshake proved; the HTTP
//! guard ([`crate::auth`]) turns it into a principal.
//!
//! The daemons' clients use [`NodeTls::client_config`]: they present the node's certificate and
//! trust only the cluster CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// Where a node's certificate, its key and the cluster CA's certificate are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The node's certificate (PEM), issued by the cluster CA.
    pub cert_file: PathBuf,
    /// The node certificate's private key (PEM); must not be readable by others.
    pub key_file: PathBuf,
    /// The cluster CA's certificate (PEM): the only issuer trusted, for servers and clients.
    pub ca_file: PathBuf,
}

impl TlsFiles {
    /// The files of an installed node's PKI directory (`ca.crt`, `node.crt`, `node.key`).
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert_file: dir.join("node.crt"),
            key_file: dir.join("node.key"),
            ca_file: dir.join("ca.crt"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Permissions(#[from] crate::PermissionError),
    #[error("{what}: {why}")]
    Pem { what: &'static str, why: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A node's TLS identity: its certificate and key and the CA it trusts.
#[derive(Clone)]
pub struct NodeTls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    ca_pem: String,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn certs(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            why: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

impl NodeTls {
    /// Reads the three files; the key must be a secret file (0600 or narrower, see
    /// [`crate::check_secret_file`]).
    pub fn load(files: &TlsFiles) -> Result<NodeTls, TlsError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        crate::check_secret_file(&files.key_file)?;
        NodeTls::from_pem(
            &read(&files.cert_file)?,
            &read(&files.key_file)?,
            &read(&files.ca_file)?,
        )
    }

    /// The identity from PEM texts.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<NodeTls, TlsError> {
        let chain = certs(cert_pem, "the node certificate")?;
        let key = || {
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
                what: "the node key",
                why: e.to_string(),
            })
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(ca_pem, "the CA certificate")? {
            roots.add(cert)?;
        }
        let roots = Arc::new(roots);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .allow_unauthenticated()
                .build()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key()?)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key()?)?;
        Ok(NodeTls {
            server: Arc::new(server),
            client: Arc::new(client),
            ca_pem: ca_pem.to_owned(),
        })
    }

    /// What a server presents: the node certificate; clients may present one of the CA's.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// What a daemon's client presents: the node certificate; it trusts only the CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// The cluster CA's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

/// What a client's certificate proved in the handshake (it chains to the cluster CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The subject's common name: the node's hostname.
    pub common_name: String,
    /// The subject's organizational unit: the node's role (`master`, `agent`), if named.
    pub unit: Option<String>,
}

impl PeerCert {
    /// The subject of a DER certificate; `None` if it does not parse or names no one.
    pub fn from_der(der: &[u8]) -> Option<PeerCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned)?;
        let unit = subject
            .iter_organizational_unit()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned);
        Some(PeerCert { common_name, unit })
    }
}

/// How a connection reached a server: over TLS or not, and the client certificate's subject
/// when it presented one. [`crate::http::serve_tls`] puts it on every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    pub tls: bool,
    pub peer: Option<PeerCert>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_an_error_naming_what() {
        let e = NodeTls::from_pem("junk", "junk", "junk").unwrap_err();
        assert!(e.to_string().contains("node certificate"), "{e}");
    }

    #[test]
    fn garbage_is_no_peer() {
        assert_eq!(PeerCert::from_der(b"not a certificate"), None);
        assert_eq!(PeerCert::from_der(&[]), None);
    }
}
