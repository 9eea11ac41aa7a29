//! HTTPS plumbing for the bootstrap server and the join client: a TLS listener axum serves on,
//! and a one-request client that trusts exactly the TLS configuration it is given (the pinned
//! cluster CA, or — only to fetch the CA certificate whose hash the token then checks — any
//! certificate).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one client request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer the client reads (a package is the largest thing served).
pub const MAX_RESPONSE: usize = 512 << 20;
const PENDING_CONNECTIONS: usize = 64;

/// A listener whose connections have finished their TLS handshake. Handshakes run in their
/// own tasks, so a slow client never holds up the others.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` until `shutdown` is cancelled or the listener is dropped.
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(PENDING_CONNECTIONS);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %capstan_types::Chain(&e), "TLS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %capstan_types::Chain(&e), "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (shutdown): never yield another connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Where a master's bootstrap server listens: a host name or address and the HTTPS port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

impl Server {
    /// `10.0.0.1`, `master1`, `10.0.0.1:8443`, `https://master1[:port][/]` or `[fd00::1]:443`.
    pub fn parse(s: &str) -> Result<Server, String> {
        let rest = s
            .trim()
            .trim_start_matches("https://")
            .trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.starts_with("http://") {
            return Err(format!("{s:?} is not a master address (host or host:port)"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed ["))?;
            (host.to_owned(), tail.strip_prefix(':'))
        } else if rest.matches(':').count() > 1 {
            (rest.to_owned(), None)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (rest.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port {p:?}"))?,
            None => 443,
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        Ok(Server { host, port })
    }

    fn server_name(&self) -> Result<ServerName<'static>, ClientError> {
        ServerName::try_from(self.host.clone())
            .map_err(|_| ClientError::Request(format!("{} is not a valid server name", self.host)))
    }
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {server}")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {server} failed (is it this cluster's master?)")]
    Tls {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Request(String),
    #[error("{server} did not answer within {REQUEST_TIMEOUT:?}")]
    Timeout { server: String },
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: http::StatusCode,
    pub body: Bytes,
}

/// One HTTPS request to `server` over `tls`.
pub async fn request(
    server: &Server,
    tls: Arc<rustls::ClientConfig>,
    method: http::Method,
    path: &str,
    json: Option<Vec<u8>>,
) -> Result<Response, ClientError> {
    let mut headers = Vec::new();
    if json.is_some() {
        headers.push((
            http::header::CONTENT_TYPE.as_str(),
            "application/json".to_owned(),
        ));
    }
    request_with(
        server,
        tls,
        method,
        path,
        &headers,
        Bytes::from(json.unwrap_or_default()),
    )
    .await
}

/// [`request`] with any body and extra headers.
pub async fn request_with(
    server: &Server,
    tls: Arc<rustls::ClientConfig>,
    method: http::Method,
    path: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<Response, ClientError> {
    let call = async {
        let tcp = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(|source| ClientError::Connect {
                server: server.to_string(),
                source,
            })?;
        let stream = TlsConnector::from(tls)
            .connect(server.server_name()?, tcp)
            .await
            .map_err(|source| ClientError::Tls {
                server: server.to_string(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::Request(format!("HTTP with {server}: {e}")))?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, server.to_string());
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Request(format!("HTTP with {server}: {e}")))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::Request(format!("reading the answer of {server}: {e}")))?
            .to_bytes();
        Ok(Response { status, body })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| ClientError::Timeout {
            server: server.to_string(),
        })?
}

/// A client configuration that accepts any server certificate. Used only to fetch the CA
/// certificate, whose hash the join token then checks before anything else is sent.
pub fn accept_any_certificate() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_parse_in_every_form() {
        let s = |h: &str, p| Server {
            host: h.into(),
            port: p,
        };
        assert_eq!(Server::parse("10.0.0.1"), Ok(s("10.0.0.1", 443)));
        assert_eq!(Server::parse("master1:8443"), Ok(s("master1", 8443)));
        assert_eq!(Server::parse("https://master1/"), Ok(s("master1", 443)));
        assert_eq!(Server::parse("[fd00::1]:444"), Ok(s("fd00::1", 444)));
        assert_eq!(Server::parse("fd00::1"), Ok(s("fd00::1", 443)));
        assert_eq!(s("fd00::1", 443).to_string(), "[fd00::1]:443");
        for bad in ["", "http://m", "m:x", "m/path", "[fd00::1", ":443"] {
            assert!(Server::parse(bad).is_err(), "{bad}");
        }
    }
}
