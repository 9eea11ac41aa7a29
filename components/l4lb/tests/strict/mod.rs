//! Strict mode on l4lb, against a strict master and a real coord holding the identity records:
//! l4lb subscribes to the master's stream over mutual TLS with its node certificate (the
//! master's port has no plain-HTTP side) and reports it on its API, which answers only the
//! cluster's certificates and accounts with the role a call needs; a certificate of another CA
//! fails the handshake and plain HTTP is refused. No data plane: only the follower and the API.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use capstan_iam::{Iam, Options};
use capstan_l4lb::{Config, DataPlane, Server};
use capstan_runtime::auth::{Role, SecurityMode};
use capstan_runtime::tls::NodeTls;
use capstan_runtime::{SecurityConfig, TlsFiles};
use capstan_testkit::pki::{NodeFiles, TestCa};
use capstan_testkit::wait_until;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn strict(files: &NodeFiles, ca_file: &std::path::Path) -> SecurityConfig {
    SecurityConfig {
        mode: SecurityMode::Strict,
        tls: Some(TlsFiles {
            cert_file: files.cert.clone(),
            key_file: files.key.clone(),
            ca_file: ca_file.to_path_buf(),
        }),
        allow_plaintext: false,
    }
}

fn tls_client(config: &rustls::ClientConfig) -> Result<reqwest::Client> {
    Ok(
        capstan_http_client::with_tls(capstan_http_client::builder(), config)
            .no_proxy()
            .build()?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_l4lb_subscribes_to_a_strict_master_over_mutual_tls_and_guards_its_api() -> Result<()>
{
    let dir = capstan_testkit::temp_dir()?;
    let coord =
        capstan_coord::Server::start_single(dir.path().join("coord"), CancellationToken::new())
            .await
            .context("coord starts")?;
    let coord_url = format!("http://{}", coord.local_addr());
    let stop = CancellationToken::new();
    let iam = Iam::start(
        capstan_coord_client::Client::new([coord_url.clone()])?,
        Options::default(),
        stop.clone(),
    )
    .await?;
    iam.create_user("vera", "vera-pw", "", Role::Viewer).await?;
    iam.create_user("otto", "otto-pw", "", Role::Operator)
        .await?;
    let viewer = format!(
        "token={}",
        iam.login_password("vera", "vera-pw", "test").await?.token
    );
    let operator = capstan_types::ClientCredential::basic("otto", "otto-pw");

    let cluster = TestCa::new("cluster CA")?;
    let ca_file = cluster.write_cert(dir.path(), "ca.crt")?;
    let master_files = cluster.write_node(dir.path(), "master-1", "master")?;
    let l4lb_files = cluster.write_node(dir.path(), "agent-1", "agent")?;

    let mut master_cfg = capstan_master::Config::for_tests();
    master_cfg.coord.endpoints = vec![coord_url.clone()];
    master_cfg.security = strict(&master_files, &ca_file);
    let master = capstan_master::Server::start(master_cfg, CancellationToken::new())
        .await
        .context("master starts")?;

    // A bare host:port: l4lb speaks TLS to it because its security is strict.
    let config = Config {
        masters: vec![master.local_addr().to_string()],
        http_listen: "127.0.0.1:0".parse()?,
        data_plane: DataPlane::None,
        master_timeout: Duration::from_secs(2),
        reconnect_backoff_max: Duration::from_millis(200),
        security: strict(&l4lb_files, &ca_file),
        coord_endpoints: vec![coord_url],
        ..Config::default()
    };
    let server = Server::start(config, CancellationToken::new())
        .await
        .context("l4lb starts")?;
    let base = format!("https://{}", server.http_addr());
    let user = tls_client(&capstan_http_client::trusting(&cluster.cert_pem)?)?;
    let node = |name: &str, role: &str| -> Result<reqwest::Client> {
        let (cert, key) = cluster.issue(name, role)?;
        tls_client(&NodeTls::from_pem(&cert, &key, &cluster.cert_pem)?.client_config())
    };
    let master_node = node("master-2", "master")?;
    let agent_node = node("agent-2", "agent")?;

    // Subscribed over mutual TLS, as its API says (read with a node's certificate).
    wait_until("l4lb subscribes", WAIT, async || {
        let health: Value = agent_node
            .get(format!("{base}/health"))
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            health["healthy"] == true && health["subscribed"] == true,
            "{health}"
        );
        Ok(())
    })
    .await?;
    assert!(server.status().borrow().subscriptions >= 1);

    let status = async |client: &reqwest::Client,
                        post: bool,
                        path: &str,
                        auth: Option<&str>|
           -> Result<u16> {
        let url = format!("{base}{path}");
        let mut req = if post {
            client.post(url).body("{}")
        } else {
            client.get(url)
        };
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        Ok(req.send().await?.status().as_u16())
    };
    // (client, POST, path, authorization, status); 405: let through to a read-only route.
    let table: [(&reqwest::Client, bool, &str, Option<&str>, u16); 13] = [
        (&user, false, "/health", None, 200),
        (&user, false, "/v1/vips", None, 401),
        (&user, false, "/v1/vips", Some("token=forged"), 401),
        (&user, false, "/metrics", None, 401),
        (&user, false, "/v1/vips", Some(&viewer), 200),
        (&user, false, "/metrics", Some(&viewer), 200),
        (&user, true, "/v1/vips", Some(&viewer), 403),
        (&user, true, "/v1/vips", Some(operator.header_value()), 403),
        (&agent_node, false, "/v1/vips", None, 200),
        (&agent_node, false, "/metrics", None, 200),
        (&agent_node, true, "/v1/vips", None, 403),
        (&master_node, false, "/v1/vips", None, 200),
        (&master_node, true, "/v1/vips", None, 405),
    ];
    for (i, (client, post, path, auth, want)) in table.into_iter().enumerate() {
        assert_eq!(
            status(client, post, path, auth).await?,
            want,
            "row {i}: POST {post} {path} {auth:?}"
        );
    }

    // No plain HTTP on the strict port.
    let plain = capstan_http_client::client()
        .get(format!("http://{}/health", server.http_addr()))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
        "plain HTTP answered"
    );
    // A certificate from another CA fails the handshake, though it trusts l4lb's.
    let other = TestCa::new("another CA")?;
    let (cert, key) = other.issue("intruder", "master")?;
    let intruder = tls_client(&NodeTls::from_pem(&cert, &key, &cluster.cert_pem)?.client_config())?;
    let refused = intruder.get(format!("{base}/health")).send().await;
    ensure!(
        refused.is_err(),
        "another CA's certificate was accepted: {refused:?}"
    );

    server.shutdown().await;
    stop.cancel();
    Ok(())
}
