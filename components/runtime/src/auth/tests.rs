use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::routing::get;
use http_body_util::BodyExt as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::http::{HttpLimits, TlsServing, serve, serve_tls};
use crate::tls::NodeTls;

/// Accounts: token `viewer-token` → viewer, `operator-token` → operator; basic `fw:secret` →
/// operator.
struct Fake;

impl Authenticator for Fake {
    fn verify_token(&self, token: &str) -> Result<Account, Refusal> {
        let role = match token {
            "viewer-token" => Role::Viewer,
            "operator-token" => Role::Operator,
            _ => return Err(Refusal("the token does not verify".into())),
        };
        Ok(Account {
            uid: format!("{role}-user"),
            role,
        })
    }

    fn verify_basic<'a>(&'a self, principal: &'a str, secret: &'a str) -> Verifying<'a> {
        Box::pin(async move {
            if principal == "fw" && secret == "secret" {
                Ok(Account {
                    uid: "fw".into(),
                    role: Role::Operator,
                })
            } else {
                Err(Refusal("wrong principal or secret".into()))
            }
        })
    }
}

fn policy() -> Policy {
    Arc::new(|m: &Method, path: &str| {
        if path == "/health" {
            Access::Public
        } else if path.starts_with("/agent") {
            Access::AgentProtocol
        } else if path.starts_with("/admin") {
            Access::Role(Role::Admin)
        } else {
            Access::by_method(m.as_str())
        }
    })
}

fn app() -> Router {
    let whoami = |p: Option<axum::Extension<Principal>>| async move {
        p.map_or_else(|| "none".to_owned(), |axum::Extension(p)| p.name())
    };
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/apps", get(whoami).post(whoami))
        .route("/admin", axum::routing::post(whoami))
        .route("/agent", axum::routing::post(whoami))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn credentials_are_found_where_admin_router_looks() {
    let basic = base64::engine::general_purpose::STANDARD.encode("fw:s:e:cret");
    let table: Vec<(HeaderMap, Option<Credential>)> = vec![
        (HeaderMap::new(), None),
        (
            headers(&[("authorization", "token=abc")]),
            Some(Credential::Token("abc".into())),
        ),
        (
            headers(&[("authorization", "Bearer abc")]),
            Some(Credential::Token("abc".into())),
        ),
        (
            headers(&[("authorization", "bearer  abc ")]),
            Some(Credential::Token("abc".into())),
        ),
        // token= wins over Bearer, in whichever order they come.
        (
            headers(&[("authorization", "Bearer b"), ("authorization", "token=t")]),
            Some(Credential::Token("t".into())),
        ),
        (
            headers(&[("authorization", &format!("Basic {basic}"))]),
            Some(Credential::Basic {
                principal: "fw".into(),
                secret: "s:e:cret".into(),
            }),
        ),
        (headers(&[("authorization", "Basic !!!")]), None),
        (headers(&[("authorization", "token=")]), None),
        (headers(&[("authorization", "Bearer ")]), None),
        // A cookie is the router's business, not a daemon's.
        (headers(&[("cookie", "dcos-acs-auth-cookie=abc")]), None),
    ];
    for (h, want) in table {
        assert_eq!(Credential::from_headers(&h), want, "{h:?}");
    }
}

/// A test CA and certificates it issues, with rcgen.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = cert.pem();
        Pki {
            issuer: Issuer::from_ca_cert_pem(&ca_pem, key).unwrap(),
            ca_pem,
        }
    }

    fn node(&self, name: &str, unit: Option<&str>) -> NodeTls {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Capstan");
        if let Some(u) = unit {
            dn.push(DnType::OrganizationalUnitName, u);
        }
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        NodeTls::from_pem(&cert.pem(), &key.serialize_pem(), &self.ca_pem).unwrap()
    }

    /// A client that trusts this CA and presents no certificate.
    fn anonymous_client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::tls::certs(&self.ca_pem, "the CA").unwrap() {
            roots.add(c).unwrap();
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }
}

struct Served {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(guard: Guard, tls: Option<TlsServing>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let router = guard.layer(app());
    let s = stop.clone();
    tokio::spawn(async move {
        match tls {
            None => serve(listener, router, HttpLimits::default(), s).await,
            Some(t) => serve_tls(listener, router, HttpLimits::default(), t, s).await,
        }
    });
    Served { addr, stop }
}

/// One request; `Err` when the connection fails (a refused handshake).
async fn call(
    served: &Served,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<(StatusCode, HeaderMap, String), String> {
    let tcp = tokio::net::TcpStream::connect(served.addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost");
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    macro_rules! send {
        ($io:expr) => {{
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new($io))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok((
                status,
                headers,
                String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            ))
        }};
    }
    match tls {
        None => send!(tcp),
        Some(config) => {
            let connector = tokio_rustls::TlsConnector::from(config);
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            send!(stream)
        }
    }
}

#[tokio::test]
async fn strict_mode_wants_a_credential_with_the_role_for_the_call() {
    let served = start(Guard::strict("test", Some(Arc::new(Fake)), policy()), None).await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("fw:secret")
    );
    let wrong_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("fw:guess")
    );
    // (method, path, authorization, status, body contains)
    let table = [
        ("GET", "/health", None, 200, "ok"),
        ("GET", "/apps", None, 401, "needs the viewer role"),
        ("POST", "/apps", None, 401, "needs the operator role"),
        (
            "GET",
            "/apps",
            Some("token=viewer-token"),
            200,
            "viewer-user",
        ),
        (
            "POST",
            "/apps",
            Some("token=viewer-token"),
            403,
            "viewer-user may not POST /apps",
        ),
        (
            "POST",
            "/apps",
            Some("Bearer operator-token"),
            200,
            "operator-user",
        ),
        (
            "POST",
            "/admin",
            Some("token=operator-token"),
            403,
            "admin role",
        ),
        (
            "POST",
            "/agent",
            Some("token=operator-token"),
            403,
            "node certificate",
        ),
        ("GET", "/apps", Some("token=forged"), 401, "does not verify"),
        ("POST", "/apps", Some(basic.as_str()), 200, "fw"),
        (
            "POST",
            "/apps",
            Some(wrong_basic.as_str()),
            401,
            "wrong principal",
        ),
    ];
    for (method, path, auth, status, contains) in table {
        let (got, headers, body) = call(&served, None, method, path, auth).await.unwrap();
        assert_eq!(got.as_u16(), status, "{method} {path} {auth:?}: {body}");
        assert!(body.contains(contains), "{method} {path} {auth:?}: {body}");
        if status == 401 {
            assert_eq!(headers[header::WWW_AUTHENTICATE], "acsjwt");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["code"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn permissive_mode_lets_everyone_through() {
    let served = start(Guard::permissive("test"), None).await;
    for (method, path) in [("GET", "/apps"), ("POST", "/apps"), ("POST", "/admin")] {
        let (status, _, body) = call(&served, None, method, path, None).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{method} {path}");
        assert_eq!(body, "anonymous");
    }
}

#[tokio::test]
async fn node_certificates_of_the_cluster_ca_authenticate_over_tls() {
    let pki = Pki::new("cluster CA");
    let server = pki.node("master-1", Some("master"));
    let tls = TlsServing {
        config: server.server_config(),
        allow_plaintext: false,
    };
    let served = start(
        Guard::strict("test", Some(Arc::new(Fake)), policy()),
        Some(tls),
    )
    .await;
    let master = pki.node("master-2", Some("master")).client_config();
    let agent = pki.node("agent-1", Some("agent")).client_config();
    let anonymous = pki.anonymous_client();
    // (client, method, path, authorization, status, body contains)
    let table = [
        (&master, "POST", "/admin", None, 200, "node:master-2"),
        (&agent, "POST", "/agent", None, 200, "node:agent-1"),
        (&agent, "GET", "/apps", None, 200, "node:agent-1"),
        (&agent, "POST", "/apps", None, 403, "node:agent-1 may not"),
        (
            &anonymous,
            "GET",
            "/apps",
            None,
            401,
            "needs the viewer role",
        ),
        (
            &anonymous,
            "GET",
            "/apps",
            Some("token=viewer-token"),
            200,
            "viewer-user",
        ),
    ];
    for (client, method, path, auth, status, contains) in table {
        let (got, _, body) = call(&served, Some(client.clone()), method, path, auth)
            .await
            .unwrap();
        assert_eq!(got.as_u16(), status, "{method} {path}: {body}");
        assert!(body.contains(contains), "{method} {path}: {body}");
    }

    // A certificate from another CA fails the handshake.
    let stranger = Pki::new("another CA").node("intruder", Some("master"));
    let mut config = (*stranger.client_config()).clone();
    config.root_store_replace(&pki);
    let refused = call(&served, Some(Arc::new(config)), "GET", "/apps", None).await;
    assert!(refused.is_err(), "{refused:?}");

    // Plain HTTP on a TLS-only port is told to use https://.
    let (status, _, body) = call(&served, None, "GET", "/health", None).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("tls_required"), "{body}");
}

#[tokio::test]
async fn a_port_that_allows_plaintext_still_wants_a_credential() {
    let pki = Pki::new("cluster CA");
    let tls = TlsServing {
        config: pki.node("master-1", Some("master")).server_config(),
        allow_plaintext: true,
    };
    let served = start(
        Guard::strict("test", Some(Arc::new(Fake)), policy()),
        Some(tls),
    )
    .await;
    let (status, _, _) = call(&served, None, "GET", "/apps", None).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("fw:secret")
    );
    let (status, _, body) = call(&served, None, "POST", "/apps", Some(&basic))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fw"));
    let (status, _, _) = call(
        &served,
        Some(pki.anonymous_client()),
        "GET",
        "/health",
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// Lets a client with a stranger's certificate trust our CA (so only its certificate is wrong).
trait TrustPki {
    fn root_store_replace(&mut self, pki: &Pki);
}

impl TrustPki for rustls::ClientConfig {
    fn root_store_replace(&mut self, pki: &Pki) {
        // The stranger's client config trusts its own CA; the server's certificate comes from
        // `pki`, so trust that one too, or the handshake would fail for the wrong reason.
        let trusting = pki.anonymous_client();
        let resolver = self.client_auth_cert_resolver.clone();
        let mut config = (*trusting).clone();
        config.client_auth_cert_resolver = resolver;
        *self = config;
    }
}
