//! The cluster CA and node certificates, and the TLS configurations built from them.
//!
//! `capstan cluster init` makes one CA per cluster (ECDSA P-256, ten years); every node gets a
//! certificate from it when it joins, for its hostname and addresses, good for both server and
//! client authentication (the router, and mutual TLS between strict-mode daemons, which read
//! the node's role from the certificate's organizational unit). The CA's
//! fingerprint, as join tokens carry it, is the SHA-256 of its PEM text.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use capstan_types::access::NodeRole;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::token::sha256_hex;

/// How long the CA is valid.
pub const CA_VALIDITY_YEARS: i32 = 10;
/// How long a node certificate is valid (rotation comes with the security issue).
pub const NODE_VALIDITY_YEARS: i32 = 5;
/// The names a master's certificate carries besides its hostname and addresses: the router
/// serves it on 443, and clients reach a master as `master.mesos` or `leader.mesos`.
pub const MASTER_NAMES: &[&str] = &["master.mesos", "leader.mesos"];

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot make a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("bad PEM: {0}")]
    Pem(String),
    #[error("cannot build a TLS configuration")]
    Tls(#[from] rustls::Error),
}

/// A certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").finish_non_exhaustive()
    }
}

/// The cluster CA.
#[derive(Debug, Clone)]
pub struct Ca(pub CertifiedKey);

fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Close enough for a validity bound (the certificate starts at this year's 1 January).
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

fn validity(params: &mut CertificateParams, years: i32) {
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

impl Ca {
    /// A new CA for the cluster `cluster_id` named `name`.
    pub fn generate(name: &str, cluster_id: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Capstan");
        dn.push(
            DnType::CommonName,
            format!("Capstan CA {name} {cluster_id}"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_VALIDITY_YEARS);
        let cert = params.self_signed(&key)?;
        Ok(Ca(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }))
    }

    /// The fingerprint join tokens carry: SHA-256 of the PEM text, hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0.cert_pem)
    }

    /// A certificate for an agent node called `hostname` reachable at `addresses`.
    pub fn issue_node(
        &self,
        hostname: &str,
        addresses: &[IpAddr],
    ) -> Result<CertifiedKey, PkiError> {
        self.issue_server(hostname, NodeRole::Agent, &[], addresses)
    }

    /// [`Ca::issue_node`] for a node in `role` (its organizational unit, which strict-mode
    /// daemons read: a master's certificate may do what an administrator may, an agent's
    /// read and speak the agent protocol), also naming `dns_names` (a master's
    /// `master.mesos`, `leader.mesos`).
    pub fn issue_server(
        &self,
        hostname: &str,
        role: NodeRole,
        dns_names: &[&str],
        addresses: &[IpAddr],
    ) -> Result<CertifiedKey, PkiError> {
        let ca_key = KeyPair::from_pem(&self.0.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.0.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let mut names: Vec<String> = vec![hostname.to_owned()];
        names.extend(dns_names.iter().map(|n| (*n).to_owned()));
        names.extend(addresses.iter().map(IpAddr::to_string));
        names.push("localhost".to_owned());
        names.push("127.0.0.1".to_owned());
        names.sort();
        names.dedup();
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Capstan");
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::CommonName, hostname);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, NODE_VALIDITY_YEARS);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// SHA-256 of a certificate's PEM text, hex.
pub fn fingerprint(cert_pem: &str) -> String {
    sha256_hex(cert_pem.as_bytes())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(PkiError::Pem("no certificate".into()));
    }
    Ok(certs)
}

/// A TLS server configuration presenting `node`'s certificate.
pub fn server_config(node: &CertifiedKey) -> Result<rustls::ServerConfig, PkiError> {
    let key = PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes())
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs(&node.cert_pem)?, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS client configuration that trusts only the CA in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<rustls::ClientConfig, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca_pem)? {
        roots.add(cert)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_chains_to_its_ca_and_no_other() {
        let ca = Ca::generate("test", "c1").unwrap();
        assert_eq!(ca.fingerprint().len(), 64);
        let node = ca
            .issue_node("node-1", &["10.0.0.7".parse().unwrap()])
            .unwrap();
        let server = server_config(&node).unwrap();
        assert_eq!(server.alpn_protocols, vec![b"http/1.1".to_vec()]);

        let verify = |ca_pem: &str, name: &str| {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca_pem).unwrap() {
                roots.add(c).unwrap();
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            let end = certs(&node.cert_pem).unwrap().remove(0);
            let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
            verifier.verify_server_cert(&end, &[], &name, &[], rustls::pki_types::UnixTime::now())
        };
        assert!(client_config(&ca.0.cert_pem).is_ok());
        use rustls::client::danger::ServerCertVerifier;
        assert!(verify(&ca.0.cert_pem, "node-1").is_ok());
        assert!(verify(&ca.0.cert_pem, "10.0.0.7").is_ok());
        assert!(verify(&ca.0.cert_pem, "127.0.0.1").is_ok());
        assert!(verify(&ca.0.cert_pem, "other-host").is_err());
        let other = Ca::generate("test", "c2").unwrap();
        assert_ne!(other.fingerprint(), ca.fingerprint());
        assert!(verify(&other.0.cert_pem, "node-1").is_err());
        // The role is the organizational unit, which strict-mode daemons read.
        let subject = |cert: &CertifiedKey| {
            capstan_runtime::tls::PeerCert::from_der(&certs(&cert.cert_pem).unwrap()[0]).unwrap()
        };
        let agent = subject(&node);
        assert_eq!(
            (agent.common_name.as_str(), agent.unit.as_deref()),
            ("node-1", Some("agent"))
        );
        let master = ca
            .issue_server("m1", NodeRole::Master, MASTER_NAMES, &[])
            .unwrap();
        assert_eq!(subject(&master).unit.as_deref(), Some("master"));
        assert!(
            verify(&ca.0.cert_pem, "master.mesos").is_err(),
            "agents are not masters"
        );
    }

    #[test]
    fn a_master_certificate_names_master_and_leader_mesos() {
        let ca = Ca::generate("test", "c1").unwrap();
        let node = ca
            .issue_server(
                "m1",
                NodeRole::Master,
                MASTER_NAMES,
                &["10.0.0.1".parse().unwrap()],
            )
            .unwrap();
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            r.add(certs(&ca.0.cert_pem).unwrap().remove(0)).unwrap();
            Arc::new(r)
        };
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .unwrap();
        let end = certs(&node.cert_pem).unwrap().remove(0);
        use rustls::client::danger::ServerCertVerifier;
        for name in ["m1", "10.0.0.1", "master.mesos", "leader.mesos"] {
            let sn = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
            assert!(
                verifier
                    .verify_server_cert(&end, &[], &sn, &[], rustls::pki_types::UnixTime::now())
                    .is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        assert!(client_config("not a certificate").is_err());
        let bad = CertifiedKey {
            cert_pem: String::new(),
            key_pem: String::new(),
        };
        assert!(server_config(&bad).is_err());
    }
}
