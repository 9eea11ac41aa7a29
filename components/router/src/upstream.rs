//! The router's identity towards the cluster's own daemons when they run in strict mode
//! (`cluster_tls`): it dials masters, apps, agents, dns, the catalog, jobs, logs and metrics
//! over TLS, presents the node's certificate (so a strict daemon sees a master node) and
//! accepts only certificates of the cluster CA for the address it dialed. coord and the
//! router's own reads of the masters' and apps' state speak the same TLS.

use std::sync::Arc;

use capstan_runtime::TlsFiles;
use capstan_runtime::tls::{NodeTls, TlsError};
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{CertKey, WrappedX509, parse_x509};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The node certificate and the cluster CA, in the forms pingora and reqwest take.
pub struct ClusterIdentity {
    cert_key: Arc<CertKey>,
    ca: Arc<CaType>,
    node: NodeTls,
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIdentity").finish_non_exhaustive()
    }
}

impl ClusterIdentity {
    /// Reads the files (the key must be a secret file, as every daemon's).
    pub fn load(files: &TlsFiles) -> Result<ClusterIdentity, TlsError> {
        let node = NodeTls::load(files)?;
        let pem = |what: &'static str| {
            move |e: rustls::pki_types::pem::Error| TlsError::Pem {
                what,
                why: e.to_string(),
            }
        };
        let chain = CertificateDer::pem_file_iter(&files.cert_file)
            .map_err(pem("the node certificate"))?
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("the node certificate"))?;
        let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(pem("the node key"))?;
        let ca: Vec<WrappedX509> = CertificateDer::pem_slice_iter(node.ca_pem().as_bytes())
            .map(|c| c.map(|c| WrappedX509::new(c.to_vec(), parse_x509)))
            .collect::<Result<_, _>>()
            .map_err(pem("the CA certificate"))?;
        if chain.is_empty() || ca.is_empty() {
            return Err(TlsError::Pem {
                what: "the node certificate or the CA",
                why: "no certificate in the file".into(),
            });
        }
        Ok(ClusterIdentity {
            cert_key: Arc::new(CertKey::new(chain, key.secret_der().to_vec())),
            ca: Arc::from(ca.into_boxed_slice()),
            node,
        })
    }

    /// `peer` speaks TLS with the node certificate and checks the upstream's against the CA
    /// and the address dialed.
    pub fn apply(&self, peer: &mut HttpPeer) {
        peer.client_cert_key = Some(self.cert_key.clone());
        peer.options.ca = Some(self.ca.clone());
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
    }

    /// The same identity for reqwest and the coord client.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.node.client_config()
    }
}
