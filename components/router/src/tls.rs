//! The HTTPS listener's certificate, reloaded from disk while the listener keeps running.
//!
//! [`ReloadingCert`] is a rustls [`ResolvesServerCert`] whose current certificate is swapped
//! under a lock that is only held to clone an `Arc`. [`ReloadingCert::watch`] polls the files'
//! modification times (every [`POLL_EVERY`]) and loads a new pair only when the chain parses,
//! the key parses, and the key belongs to the leaf certificate: a rotation caught half-written
//! keeps serving the old certificate and is picked up on the next poll once complete.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the files' modification times are checked.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Why a certificate pair was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadCertError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key", path.display())]
    NoKey { path: PathBuf },
    #[error("the key in {} does not fit the certificate in {}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The key is readable (or writable) by others than its owner.
    #[error(transparent)]
    KeyTooOpen(#[from] capstan_runtime::PermissionError),
}

/// The provider every TLS config of the router uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, LoadCertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| LoadCertError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    capstan_runtime::check_secret_file(key)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| LoadCertError::NoCertificate {
            path: cert.to_owned(),
        })?;
    if chain.is_empty() {
        return Err(LoadCertError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| LoadCertError::NoKey {
        path: key.to_owned(),
    })?;
    let mismatch = |source| LoadCertError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(mismatch)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(mismatch)?;
    Ok(certified)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A certificate resolver that follows the files it was loaded from.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the pair once; an error here means the listener cannot start.
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, LoadCertError> {
        let first = load(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(first)),
        }))
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, new: CertifiedKey) {
        let new = Arc::new(new);
        match self.current.write() {
            Ok(mut c) => *c = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Reloads the pair if it parses and matches; `Ok(false)` if it was left as it was.
    pub fn reload(&self) -> Result<(), LoadCertError> {
        let new = load(&self.cert, &self.key)?;
        self.replace(new);
        Ok(())
    }

    /// Polls the files until `shutdown` and reloads after each change (on the current runtime).
    pub fn watch(self: &Arc<Self>, shutdown: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            let stamp = || (mtime(&me.cert), mtime(&me.key));
            let mut seen = stamp();
            // A change that did not load yet (half-written) is retried each poll.
            let mut pending = false;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(POLL_EVERY) => {}
                }
                let now = stamp();
                if now == seen && !pending {
                    continue;
                }
                seen = now;
                let me2 = me.clone();
                let loaded = tokio::task::spawn_blocking(move || me2.reload()).await;
                match loaded {
                    Ok(Ok(())) => {
                        pending = false;
                        info!(cert = %me.cert.display(), "Reloaded the TLS certificate");
                    }
                    Ok(Err(e)) => {
                        if !pending {
                            warn!(error = %capstan_types::Chain(&e), "Not loading the changed TLS certificate; keeping the old one");
                        }
                        pending = true;
                    }
                    Err(e) => warn!(error = %e, "The certificate reload task failed"),
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
