//! Strict mode on dns, against a strict master and a real coord holding the identity records:
//! dns reads the master's stream over mutual TLS with its node certificate (the master's port
//! has no plain-HTTP side) and answers DNS from it, its HTTP API answers only the cluster's
//! certificates and accounts with the role a call needs, a certificate of another CA fails the
//! handshake, and plain HTTP is refused. The DNS port itself stays plain DNS.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use capstan_iam::{Iam, Options};
use capstan_runtime::auth::{Role, SecurityMode};
use capstan_runtime::tls::NodeTls;
use capstan_runtime::{SecurityConfig, TlsFiles};
use capstan_testkit::pki::{NodeFiles, TestCa};
use capstan_testkit::wait_until;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::support::*;

const STRICT_WAIT: Duration = Duration::from_secs(30);

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
async fn strict_dns_follows_a_strict_master_over_mutual_tls_and_guards_its_api() -> Result<()> {
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
    // dns on an agent node: its certificate is an agent's.
    let dns_files = cluster.write_node(dir.path(), "agent-1", "agent")?;

    let mut master_cfg = capstan_master::Config::for_tests();
    master_cfg.coord.endpoints = vec![coord_url.clone()];
    master_cfg.security = strict(&master_files, &ca_file);
    let master = capstan_master::Server::start(master_cfg, CancellationToken::new())
        .await
        .context("master starts")?;

    // A bare host:port: dns speaks TLS to it because its security is strict.
    let mut cfg = config(vec![master.local_addr().to_string()], vec![]);
    cfg.security = strict(&dns_files, &ca_file);
    cfg.coord_endpoints = vec![coord_url];
    let server = start(cfg).await.context("dns starts")?;
    let addr = dns(&server);
    // Answered from the master's state, read over mutual TLS; DNS itself is plain.
    wait_until("the leader is named", STRICT_WAIT, async || {
        resolves_to(addr, "leader.mesos.", &["127.0.0.1"]).await
    })
    .await?;
    assert!(server.master_status().borrow().subscribed);

    let http = server.http_addr().context("HTTP is on")?;
    let base = format!("https://{http}");
    let user = tls_client(&capstan_http_client::trusting(&cluster.cert_pem)?)?;
    let node = |name: &str, role: &str| -> Result<reqwest::Client> {
        let (cert, key) = cluster.issue(name, role)?;
        tls_client(&NodeTls::from_pem(&cert, &key, &cluster.cert_pem)?.client_config())
    };
    let master_node = node("master-2", "master")?;
    let agent_node = node("agent-2", "agent")?;
    let status = async |client: &reqwest::Client, path: &str, auth: Option<&str>| -> Result<u16> {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        Ok(req.send().await?.status().as_u16())
    };
    let hosts = "/v1/hosts/leader.mesos";
    let table: [(&reqwest::Client, &str, Option<&str>, u16); 14] = [
        (&user, "/v1/version", None, 200),
        (&user, hosts, None, 401),
        (&user, hosts, Some("token=forged"), 401),
        (&user, hosts, Some(&viewer), 200),
        (&user, "/v1/services/_leader._tcp.mesos", Some(&viewer), 200),
        (&user, "/v1/axfr", None, 401),
        (&user, "/v1/axfr", Some(&viewer), 403),
        (&user, "/v1/config", Some(&viewer), 403),
        (&user, "/v1/axfr", Some(operator.header_value()), 200),
        (&user, "/v1/config", Some(operator.header_value()), 200),
        (&agent_node, hosts, None, 200),
        (&agent_node, "/v1/axfr", None, 403),
        (&master_node, "/v1/axfr", None, 200),
        (&master_node, "/v1/enumerate", None, 200),
    ];
    for (i, (client, path, auth, want)) in table.into_iter().enumerate() {
        assert_eq!(
            status(client, path, auth).await?,
            want,
            "row {i}: {path} {auth:?}"
        );
    }
    let found: Value = agent_node
        .get(format!("{base}{hosts}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(found[0]["ip"], "127.0.0.1", "{found}");

    // No plain HTTP on the strict port.
    let plain = capstan_http_client::client()
        .get(format!("http://{http}/v1/version"))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
        "plain HTTP answered"
    );
    // A certificate from another CA fails the handshake, though it trusts dns's.
    let other = TestCa::new("another CA")?;
    let (cert, key) = other.issue("intruder", "master")?;
    let intruder = tls_client(&NodeTls::from_pem(&cert, &key, &cluster.cert_pem)?.client_config())?;
    let refused = intruder.get(format!("{base}/v1/version")).send().await;
    ensure!(
        refused.is_err(),
        "another CA's certificate was accepted: {refused:?}"
    );

    server.shutdown().await;
    stop.cancel();
    Ok(())
}
