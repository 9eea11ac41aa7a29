//! The one place Capstan makes HTTP clients.
//!
//! reqwest is built over rustls without a crypto provider of its own (the workspace's rustls
//! uses *ring*, as the daemons' servers do), so a client can only be built once a
//! process-wide provider is installed. [`builder`] installs it, once, and hands out reqwest's
//! builder; every crate calls it instead of `reqwest::Client::builder()` or
//! `reqwest::Client::new()` (clippy's `disallowed-methods` enforces it), so no code path can
//! build a client before the provider exists, in a daemon, a CLI command or a test.
//!
//! Talking to a strict-mode daemon: [`with_tls`] gives the builder a rustls client
//! configuration — usually the node's (`capstan_runtime::tls::NodeTls::client_config`: it
//! presents the node certificate and trusts only the cluster CA) — or [`trusting`] one that
//! trusts a given CA and presents nothing (the CLI, which brings a token instead).

use std::sync::{Arc, Once, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// The crypto provider every TLS client and server of Capstan uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process's default, once. Another default installed first
/// (a library's, a test's) is kept: any provider serves reqwest.
pub fn install_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err only when a default exists already, which is all this needs.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// How long a client keeps an idle connection for reuse: below the 10 s after which the
/// daemons' servers close an idle kept-alive connection (`capstan_runtime::HttpLimits`), so a
/// request is never sent on a connection the server is closing at that moment (the call
/// would fail with "connection closed before message completed").
pub const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// reqwest's client builder, once the process has a crypto provider, idle connections kept
/// [`POOL_IDLE_TIMEOUT`]. Use it wherever a client is made. Its TLS is preconfigured (the
/// system's roots, see [`system_tls`]): reqwest's own TLS options (`add_root_certificate`
/// and the like) do nothing on it; TLS is changed with [`with_tls`].
#[allow(clippy::disallowed_methods)]
pub fn builder() -> reqwest::ClientBuilder {
    install_provider();
    let builder = reqwest::Client::builder().pool_idle_timeout(POOL_IDLE_TIMEOUT);
    match system_tls() {
        Some(config) => builder.use_preconfigured_tls(config.clone()),
        None => builder,
    }
}

/// The TLS of a client that trusts the system's roots (the platform verifier reqwest would
/// build), made once per process: the verifier reads every certificate under `/etc/ssl` when
/// it is made, milliseconds each time, and a process may build clients by the thousand (a
/// benchmark's simulated agents spent 3 s of their start doing only that). `None` if the
/// roots cannot be read: reqwest then builds its own, and reports why.
fn system_tls() -> Option<&'static rustls::ClientConfig> {
    static SYSTEM: OnceLock<Option<rustls::ClientConfig>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let provider = provider();
            let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).ok()?;
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(config)
        })
        .as_ref()
}

/// A client with reqwest's defaults, as `reqwest::Client::new()`.
///
/// # Panics
/// If the TLS backend cannot be initialised, which [`install_provider`] rules out; as
/// `reqwest::Client::new()` does.
pub fn client() -> reqwest::Client {
    builder()
        .build()
        .expect("an HTTP client builds once a crypto provider is installed")
}

/// `builder` speaking TLS with `config`: its roots are the only ones trusted, its client
/// certificate (if any) is presented. ALPN is set to HTTP/1.1, the only protocol the
/// workspace's reqwest speaks.
pub fn with_tls(
    builder: reqwest::ClientBuilder,
    config: &rustls::ClientConfig,
) -> reqwest::ClientBuilder {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    builder.use_preconfigured_tls(config)
}

/// Why a CA certificate could not be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("the CA certificate is not PEM: {0}")]
    Pem(String),
    #[error("the CA certificate holds no certificate")]
    Empty,
    #[error("the CA certificate is not usable: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration trusting only the CA certificates in `ca_pem` and presenting no
/// certificate of its own.
pub fn trusting(ca_pem: &str) -> Result<rustls::ClientConfig, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| TrustError::Pem(e.to_string()))?)?;
    }
    if roots.is_empty() {
        return Err(TrustError::Empty);
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
    fn clients_build_in_any_order_and_any_number() {
        let a = client();
        let b = builder().build().expect("builds");
        drop((a, b));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| drop(client()));
            }
        });
    }

    #[test]
    fn trusting_refuses_what_is_not_a_certificate() {
        assert!(matches!(trusting(""), Err(TrustError::Empty)));
        assert!(
            trusting("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }

    #[test]
    fn trusting_a_ca_gives_a_client_that_builds() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("CA");
        let config = trusting(&ca.pem()).expect("trusted");
        with_tls(builder(), &config).build().expect("builds");
    }
}
