//! A strict cluster behind the router (`cluster_tls`): the router dials the cluster's daemons
//! over TLS with its node certificate, so a strict daemon — which takes only certificates of
//! the cluster CA or credentials it verifies itself — sees a master node; the upstream's
//! certificate is checked against the CA; a router with another CA's certificate gets no
//! answer from it.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::IntoResponse;
use capstan_runtime::auth::{Access, Guard, Principal, Role};
use capstan_runtime::tls::NodeTls;
use capstan_runtime::{HttpLimits, TlsFiles, TlsServing};
use capstan_testkit::pki::TestCa;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A strict daemon's stand-in: TLS only, node certificates only (no authenticator), and it
/// answers with the principal its guard proved.
async fn strict_upstream(tls: &NodeTls, stop: CancellationToken) -> std::net::SocketAddr {
    async fn whoami(req: Request) -> axum::response::Response {
        let who = req
            .extensions()
            .get::<Principal>()
            .map(Principal::name)
            .unwrap_or_default();
        axum::Json(json!({"principal": who, "path": req.uri().path()})).into_response()
    }
    let app = axum::Router::new().fallback(whoami);
    let guard = Guard::strict(
        "upstream",
        None,
        Arc::new(|_: &_, _: &str| Access::Role(Role::Viewer)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = TlsServing {
        config: tls.server_config(),
        allow_plaintext: false,
    };
    tokio::spawn(capstan_runtime::serve_secured(
        listener,
        app,
        HttpLimits::default(),
        guard,
        Some(serving),
        stop,
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_reaches_strict_daemons_with_its_node_certificate() {
    let cluster = Cluster::start().await;
    let dir = capstan_testkit::temp_dir().unwrap();
    let ca = TestCa::new("cluster CA").unwrap();
    let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
    let files = |name: &str, unit: &str, ca: &TestCa| {
        let node = ca.write_node(dir.path(), name, unit).unwrap();
        TlsFiles {
            cert_file: node.cert,
            key_file: node.key,
            ca_file: ca_file.clone(),
        }
    };
    let master_files = files("master-1", "master", &ca);
    let stop = CancellationToken::new();
    let upstream = strict_upstream(&NodeTls::load(&master_files).unwrap(), stop.clone()).await;

    let strict_config = |tls: TlsFiles| {
        let mut config = cluster.config();
        config.masters = vec![upstream.to_string()];
        // coord itself is permissive here: an endpoint naming http:// stays plain.
        config.coord_endpoints = vec![format!("http://{}", cluster.coord_addr)];
        config.cluster_tls = Some(tls);
        config
    };

    let router = RouterHandle::start(strict_config(files("router-1", "master", &ca)))
        .await
        .unwrap();
    let token = login(&router).await.unwrap();
    let (status, v) = get_json(&router, "/mesos/master/whoami", &token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["principal"], "node:router-1", "{v}");
    assert_eq!(v["path"], "/master/whoami");
    router.stop().await;

    // Another CA's certificate: the strict daemon refuses the handshake, the router says so.
    let stranger = TestCa::new("another CA").unwrap();
    let foreign = {
        let node = stranger
            .write_node(dir.path(), "router-2", "master")
            .unwrap();
        TlsFiles {
            cert_file: node.cert,
            key_file: node.key,
            ca_file: stranger.write_cert(dir.path(), "other-ca.crt").unwrap(),
        }
    };
    let router = RouterHandle::start(strict_config(foreign)).await.unwrap();
    let token = login(&router).await.unwrap();
    let (status, v) = get_json(&router, "/mesos/master/whoami", &token)
        .await
        .unwrap();
    assert!(
        status >= 500,
        "another CA's router was answered: {status} {v}"
    );
    router.stop().await;
    stop.cancel();
}
