//! App-run health checks (HTTP, HTTPS, TCP): the pure per-task state machine (grace period,
//! consecutive failures, when to kill) and the probes. HTTPS probes do not verify the task's
//! certificate (Marathon does not either): rustls with the `ring` provider and a verifier
//! that accepts any certificate but still checks handshake signatures. COMMAND and MESOS_* checks are handed
//! to the agent in `TaskInfo.health_check`; their results arrive as `TaskStatus.healthy`.
//! Readiness probes ([`crate::readiness`]) run here too.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

use crate::model::time::secs_to_millis;
use crate::model::{HealthCheck, HealthResult, Timestamp};
use crate::readiness::{HttpResponse, ProbeOutcome, ReadinessJob};

/// What one check result means for the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthOutcome {
    /// Nothing to report (still healthy, or a failure inside the grace period).
    Unchanged,
    BecameHealthy,
    /// A failure was counted (the task may already have been unhealthy).
    Failed,
    /// `maxConsecutiveFailures` reached: kill and replace the task.
    Kill,
}

/// Records one probe result. Failures before the first success within
/// `gracePeriodSeconds` of the task starting are ignored.
pub fn record(
    r: &mut HealthResult,
    check: &HealthCheck,
    ok: bool,
    cause: Option<String>,
    now: Timestamp,
    started_at: Option<Timestamp>,
) -> HealthOutcome {
    if ok {
        let was = r.alive;
        r.alive = true;
        r.consecutive_failures = 0;
        r.first_success.get_or_insert(now);
        r.last_success = Some(now);
        return if was {
            HealthOutcome::Unchanged
        } else {
            HealthOutcome::BecameHealthy
        };
    }
    let started = started_at.unwrap_or(now);
    let in_grace = r.first_success.is_none()
        && (now.millis() - started.millis()) < secs_to_millis(check.grace_period_seconds);
    if in_grace {
        return HealthOutcome::Unchanged;
    }
    r.alive = false;
    r.consecutive_failures += 1;
    r.last_failure = Some(now);
    r.last_failure_cause = cause;
    if check.max_consecutive_failures > 0
        && r.consecutive_failures >= check.max_consecutive_failures
    {
        HealthOutcome::Kill
    } else {
        HealthOutcome::Failed
    }
}

/// One probe to run.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckJob {
    pub task_id: capstan_types::TaskId,
    pub index: usize,
    pub protocol: String,
    pub host: String,
    pub port: u32,
    pub path: String,
    pub timeout: Duration,
    pub ignore_http1xx: bool,
}

/// Whether an HTTP(S) health check answer counts as healthy: 200–399, and 1xx with
/// `ignoreHttp1xx`.
pub fn http_healthy(status: u16, ignore_http1xx: bool) -> bool {
    (200..400).contains(&status) || (ignore_http1xx && (100..200).contains(&status))
}

/// Runs one probe: an HTTP or HTTPS GET must answer 200–399 (the task's certificate is not
/// verified, as in Marathon); TCP must accept a connection.
pub async fn probe(client: &reqwest::Client, job: &CheckJob) -> Result<(), String> {
    let addr = format!("{}:{}", job.host, job.port);
    match job.protocol.as_str() {
        "HTTP" | "HTTPS" => {
            let https = job.protocol == "HTTPS";
            let url = format!(
                "{}://{addr}{}",
                if https { "https" } else { "http" },
                job.path
            );
            let code = tokio::time::timeout(job.timeout, async {
                if https {
                    https_get(&job.host, job.port, &job.path, 0)
                        .await
                        .map(|r| r.status)
                } else {
                    client
                        .get(&url)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .map_err(|e| e.to_string())
                }
            })
            .await
            .map_err(|_| format!("GET {url} timed out"))?
            .map_err(|e| format!("GET {url}: {e}"))?;
            if http_healthy(code, job.ignore_http1xx) {
                Ok(())
            } else {
                Err(format!("GET {url} answered {code}"))
            }
        }
        _ => {
            tokio::time::timeout(job.timeout, tokio::net::TcpStream::connect(&addr))
                .await
                .map_err(|_| format!("connect {addr} timed out"))?
                .map_err(|e| format!("connect {addr}: {e}"))?;
            Ok(())
        }
    }
}

/// Largest body kept from a readiness answer (`lastResponse.body`).
const MAX_READINESS_BODY: usize = 64 * 1024;

/// Runs one readiness probe: a GET whose status, content type and (truncated) body the
/// state machine judges.
pub async fn probe_readiness(client: &reqwest::Client, job: &ReadinessJob) -> ProbeOutcome {
    let url = &job.url();
    if job.https {
        return tokio::time::timeout(
            job.timeout,
            https_get(&job.host, job.port, &job.path, MAX_READINESS_BODY),
        )
        .await
        .map_err(|_| format!("GET {url} timed out"))?
        .map_err(|e| format!("GET {url}: {e}"));
    }
    let fetch = async {
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
        let body =
            String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_READINESS_BODY)]).into_owned();
        Ok(HttpResponse {
            status,
            content_type,
            body,
        })
    };
    tokio::time::timeout(job.timeout, fetch)
        .await
        .map_err(|_| format!("GET {url} timed out"))?
}

/// Accepts any server certificate (tasks present self-signed ones; Marathon does not verify
/// them either) but still checks the handshake signatures against the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

/// The TLS client for HTTPS checks (built once).
fn tls_connector() -> Result<TlsConnector, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Arc::new(config))
    });
    config.clone().map(TlsConnector::from)
}

/// `GET https://host:port/path` without verifying the server's certificate, over one
/// HTTP/1.1 connection; keeps at most `max_body` bytes of the body.
pub async fn https_get(
    host: &str,
    port: u32,
    path: &str,
    max_body: usize,
) -> Result<HttpResponse, String> {
    let port = u16::try_from(port).map_err(|_| format!("bad port {port}"))?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("bad host: {e}"))?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = tls_connector()?
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "capstan-apps")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let result = async {
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while bytes.len() < max_body {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        bytes.extend_from_slice(data);
                    }
                }
                Some(Err(e)) => return Err(format!("body: {e}")),
                None => break,
            }
        }
        bytes.truncate(max_body);
        Ok(HttpResponse {
            status,
            content_type,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(grace: u64, max: u32) -> HealthCheck {
        HealthCheck {
            grace_period_seconds: grace,
            max_consecutive_failures: max,
            ..HealthCheck::default()
        }
    }

    #[test]
    fn failures_in_grace_period_are_ignored_until_first_success() {
        let c = check(10, 2);
        let mut r = HealthResult::default();
        let start = Timestamp(0);
        assert_eq!(
            record(&mut r, &c, false, None, Timestamp(5_000), Some(start)),
            HealthOutcome::Unchanged
        );
        assert_eq!(r.consecutive_failures, 0);
        assert_eq!(
            record(&mut r, &c, true, None, Timestamp(6_000), Some(start)),
            HealthOutcome::BecameHealthy
        );
        assert_eq!(
            record(
                &mut r,
                &c,
                false,
                Some("boom".into()),
                Timestamp(7_000),
                Some(start)
            ),
            HealthOutcome::Failed
        );
        assert!(!r.alive);
        assert_eq!(
            record(&mut r, &c, false, None, Timestamp(8_000), Some(start)),
            HealthOutcome::Kill
        );
    }

    #[test]
    fn http_checks_pass_on_2xx_and_3xx_and_1xx_only_when_ignored() {
        let table = [
            (200, false, true),
            (302, false, true),
            (399, false, true),
            (400, false, false),
            (503, false, false),
            (101, false, false),
            (101, true, true),
            (503, true, false),
        ];
        for (status, ignore_1xx, healthy) in table {
            assert_eq!(
                http_healthy(status, ignore_1xx),
                healthy,
                "{status} {ignore_1xx}"
            );
        }
    }

    #[tokio::test]
    async fn an_https_get_to_a_closed_port_reports_the_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = u32::from(listener.local_addr().unwrap().port());
        drop(listener);
        let err = https_get("127.0.0.1", port, "/", 0).await.unwrap_err();
        assert!(err.starts_with("connect"), "{err}");
        let err = https_get("127.0.0.1", 70_000, "/", 0).await.unwrap_err();
        assert!(err.contains("bad port"), "{err}");
    }

    #[test]
    fn consecutive_failures_after_grace_kill_and_success_resets() {
        let c = check(0, 3);
        let mut r = HealthResult::default();
        for _ in 0..2 {
            assert_eq!(
                record(&mut r, &c, false, None, Timestamp(1), Some(Timestamp(0))),
                HealthOutcome::Failed
            );
        }
        assert_eq!(
            record(&mut r, &c, true, None, Timestamp(2), Some(Timestamp(0))),
            HealthOutcome::BecameHealthy
        );
        assert_eq!(r.consecutive_failures, 0);
        let c0 = check(0, 0);
        for _ in 0..5 {
            assert_eq!(
                record(&mut r, &c0, false, None, Timestamp(3), None),
                HealthOutcome::Failed,
                "0 = never kill"
            );
        }
    }
}
