//! HTTPS: the served certificate verifies against the cluster CA, `X-Forwarded-Proto` says
//! https, a rotated certificate is served without dropping the listener or open connections,
//! and a half-written rotation keeps the old certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use capstan_router::tls::ReloadingCert;
use capstan_testkit::wait_until;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::*;

/// A kept-alive HTTPS connection that trusts only `ca_pem`.
struct Conn(TlsStream<TcpStream>);

impl Conn {
    async fn open(addr: SocketAddr, ca_pem: &str) -> anyhow::Result<Conn> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await?;
        let tls = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        Ok(Conn(tls))
    }

    /// The leaf certificate the server presented.
    fn served(&self) -> Vec<u8> {
        self.0.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// GET `path` on this connection; returns status and body.
    async fn get(&mut self, path: &str, auth: Option<&str>) -> anyhow::Result<(u16, String)> {
        let auth = auth
            .map(|t| format!("Authorization: token={t}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n");
        self.0.write_all(req.as_bytes()).await?;
        let head = read_head(&mut self.0).await;
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status line in {head:?}"))?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| anyhow::anyhow!("no content-length in {head:?}"))?;
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).await?;
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_verified_by_the_cluster_ca_and_rotates_without_dropping_connections() {
    let cluster = Cluster::start().await;
    let router = RouterHandle::start(cluster.config()).await.unwrap();
    let https = router.https.unwrap();
    let token = login(&router).await.unwrap();
    let old = der(&std::fs::read_to_string(&cluster.cert_path).unwrap());

    let mut kept = Conn::open(https, &cluster.ca.cert_pem).await.unwrap();
    assert_eq!(kept.served(), old);
    let (code, body) = kept
        .get("/dcos-metadata/dcos-version.json", None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = kept.get("/ca/dcos-ca.crt", None).await.unwrap();
    assert_eq!((code, body.as_str()), (200, cluster.ca.cert_pem.as_str()));
    let (code, body) = kept.get("/mesos/master/state", Some(&token)).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");

    // Half-written rotation: the new certificate is there, its key not yet.
    let (new_cert, new_key) = cluster.ca.issue("router-2");
    write_atomic(&cluster.cert_path, &new_cert);
    // Every connection meanwhile still completes with one of the two certificates; once the
    // key lands, new connections get the new one.
    let mut wrote_key = false;
    wait_until("the rotated certificate is served", WAIT, async || {
        let conn = Conn::open(https, &cluster.ca.cert_pem).await?;
        let served = conn.served();
        anyhow::ensure!(
            served == old || served == der(&new_cert),
            "an unknown certificate was served"
        );
        if !wrote_key {
            assert_eq!(served, old, "a certificate without its key was loaded");
            write_atomic(&cluster.key_path, &new_key);
            wrote_key = true;
        }
        anyhow::ensure!(served == der(&new_cert), "still the old certificate");
        Ok(())
    })
    .await
    .unwrap();

    // The connection opened before the rotation is still served.
    let (code, _) = kept
        .get("/dcos-metadata/dcos-version.json", None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(router.stop().await.is_requested());
}

#[test]
fn a_half_written_or_mismatched_pair_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, key) = ca.issue("one");
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    write_atomic(&cert_path, &cert);
    write_atomic(&key_path, &key);
    let resolver = ReloadingCert::open(&cert_path, &key_path).unwrap();
    let before = resolver.current().cert[0].to_vec();
    assert_eq!(before, der(&cert));

    let (cert2, key2) = ca.issue("two");
    write_atomic(&cert_path, &cert2);
    assert!(
        resolver.reload().is_err(),
        "the key does not fit the new certificate"
    );
    assert_eq!(resolver.current().cert[0].to_vec(), before);

    write_atomic(&key_path, &key2[..key2.len() / 2]);
    assert!(resolver.reload().is_err(), "a truncated key");
    write_atomic(&key_path, &key2);
    write_atomic(&cert_path, &cert2[..cert2.len() / 2]);
    assert!(resolver.reload().is_err(), "a truncated certificate");
    assert_eq!(resolver.current().cert[0].to_vec(), before);

    write_atomic(&cert_path, &cert2);
    resolver.reload().unwrap();
    assert_eq!(resolver.current().cert[0].to_vec(), der(&cert2));

    // A key others may read is refused, at start and at a reload, naming the chmod to run.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = ReloadingCert::open(&cert_path, &key_path).unwrap_err();
    assert!(refused.to_string().contains("chmod"), "{refused}");
    assert!(resolver.reload().is_err(), "a key readable by others");
    assert_eq!(resolver.current().cert[0].to_vec(), der(&cert2));
}

/// The bootstrap paths reach the bootstrap server without a token, and `X-Forwarded-Proto`
/// is the router's verdict, never the client's: a client on plain HTTP that claims https is
/// still `http` upstream (the bootstrap server accepts joins only when it says https).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_paths_are_open_and_carry_the_real_scheme() {
    let cluster = Cluster::start().await;
    let bootstrap = echo_server("bootstrap", axum::Router::new()).await;
    let mut config = cluster.config();
    config.bootstrap = Some(bootstrap.to_string());
    let router = RouterHandle::start(config).await.unwrap();

    let v: Value = http()
        .post(router.url("/v1/join"))
        .header("x-forwarded-proto", "https")
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["server"], "bootstrap", "{v}");
    assert_eq!(v["path"], "/v1/join");
    assert_eq!(v["headers"]["x-forwarded-proto"], "http", "{v}");

    let mut conn = Conn::open(router.https.unwrap(), &cluster.ca.cert_pem)
        .await
        .unwrap();
    for path in [
        "/install.sh",
        "/v1/cluster/ca.pem",
        "/v1/packages/capstan.deb",
    ] {
        let (code, body) = conn.get(path, None).await.unwrap();
        assert_eq!(code, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["server"], "bootstrap", "{path}: {v}");
        assert_eq!(v["path"], path);
        assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{path}: {v}");
    }
    router.stop().await;

    // Without a bootstrap server configured: a clear 503, not a 404 or a hang.
    let router = RouterHandle::start(cluster.config()).await.unwrap();
    let resp = http().get(router.url("/install.sh")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("bootstrap"), "{v}");
}
