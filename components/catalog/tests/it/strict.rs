//! Strict mode on the Cosmos API: TLS with the node certificate, every call verified by the
//! catalog itself against the identity records in a real strict coord, and the catalog's own
//! call to a strict apps (an install) made over https with its node certificate — every
//! connection between the daemons (catalog, apps and coord) mutual TLS. The clients are the
//! workspace's one HTTP client over rustls (`capstan_http_client`), as the daemons' are.

use anyhow::{Context, Result, ensure};
use capstan_catalog::{Config, Server};
use capstan_iam::{Iam, Options};
use capstan_runtime::auth::{Role, SecurityMode};
use capstan_runtime::tls::NodeTls;
use capstan_runtime::{SecurityConfig, TlsFiles};
use capstan_testkit::pki::{NodeFiles, TestCa};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::support::media;

fn strict(node: &NodeFiles, ca_file: &std::path::Path) -> SecurityConfig {
    SecurityConfig {
        mode: SecurityMode::Strict,
        tls: Some(TlsFiles {
            cert_file: node.cert.clone(),
            key_file: node.key.clone(),
            ca_file: ca_file.to_owned(),
        }),
        allow_plaintext: false,
    }
}

fn node_tls(node: &NodeFiles, ca_file: &std::path::Path) -> NodeTls {
    NodeTls::load(&TlsFiles {
        cert_file: node.cert.clone(),
        key_file: node.key.clone(),
        ca_file: ca_file.to_owned(),
    })
    .expect("node identity")
}

/// A client trusting the cluster CA, presenting `node`'s certificate if given.
fn client(ca_pem: &str, node: Option<&NodeFiles>, ca_file: &std::path::Path) -> reqwest::Client {
    let tls = match node {
        Some(n) => (*node_tls(n, ca_file).client_config()).clone(),
        None => capstan_http_client::trusting(ca_pem).expect("CA"),
    };
    capstan_http_client::with_tls(capstan_http_client::builder(), &tls)
        .build()
        .expect("client")
}

/// `POST /package/<endpoint>` with Cosmos's media types; the status, or the error when the
/// connection failed.
async fn cosmos(
    http: &reqwest::Client,
    base: &str,
    endpoint: &str,
    auth: Option<&str>,
    body: Value,
) -> Result<(u16, Value), reqwest::Error> {
    let name = format!("package.{}", endpoint.replace('/', "."));
    let mut req = http
        .post(format!("{base}/package/{endpoint}"))
        .header("Content-Type", media(&format!("{name}-request"), "v1"))
        .header("Accept", media(&format!("{name}-response"), "v1"))
        .body(body.to_string());
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// What a call tests, its client, endpoint, credential and body, and the status it expects.
type Case<'a> = (
    &'a str,
    &'a reqwest::Client,
    &'a str,
    Option<&'a str>,
    Value,
    u16,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_catalog_verifies_every_call_and_installs_over_tls() -> Result<()> {
    let dir = capstan_testkit::temp_dir()?;
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki)?;
    let cluster = TestCa::new("cluster CA")?;
    let ca_file = cluster.write_cert(&pki, "ca.crt")?;
    let coord_node = cluster.write_node(&pki, "coord-node", "master")?;
    let apps_node = cluster.write_node(&pki, "apps-node", "master")?;
    let catalog_node = cluster.write_node(&pki, "catalog-node", "master")?;
    let agent_node = cluster.write_node(&pki, "agent-1", "agent")?;
    let stranger = TestCa::new("another CA")?.write_node(&pki, "intruder", "master")?;

    // A strict coord: every daemon below reaches it over https with its node certificate.
    let coord_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let coord_addr = coord_listener.local_addr()?;
    let coord_config = capstan_coord::Config {
        id: 1,
        listen: coord_addr,
        data_dir: dir.path().join("coord"),
        members: vec![capstan_coord::config::MemberConfig {
            id: 1,
            addr: coord_addr.to_string(),
        }],
        security: strict(&coord_node, &ca_file),
        ..capstan_coord::Config::default()
    };
    let coord =
        capstan_coord::Server::start_on(coord_config, coord_listener, CancellationToken::new())
            .await
            .context("coord starts")?;
    let coord_url = coord_addr.to_string();
    let coord_client = capstan_coord_client::Client::with_options(
        [coord_url.clone()],
        capstan_coord_client::ClientOptions {
            tls: Some(node_tls(&catalog_node, &ca_file).client_config()),
            ..capstan_coord_client::ClientOptions::default()
        },
    )?;
    let stop = CancellationToken::new();
    let iam = Iam::start(coord_client.clone(), Options::default(), stop.clone()).await?;
    iam.create_user("vera", "vera-pw", "", Role::Viewer).await?;
    iam.create_user("otto", "otto-pw", "", Role::Operator)
        .await?;
    iam.create_user("ada", "ada-pw", "", Role::Admin).await?;
    let token = |t: String| format!("token={t}");
    let vera = token(iam.login_password("vera", "vera-pw", "test").await?.token);
    let otto = token(iam.login_password("otto", "otto-pw", "test").await?.token);
    let ada = token(iam.login_password("ada", "ada-pw", "test").await?.token);

    // A strict apps (its store in coord; no master: installs are stored, deployments wait).
    let mut apps_cfg = capstan_apps::Config::for_tests("127.0.0.1:1");
    apps_cfg.store.coord_endpoints = vec![coord_url.clone()];
    apps_cfg.security = strict(&apps_node, &ca_file);
    let apps = capstan_apps::Server::start(apps_cfg, CancellationToken::new())
        .await
        .context("apps starts")?;
    let apps_base = format!("https://localhost:{}", apps.local_addr().port());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = Config {
        listen: listener.local_addr()?,
        coord_endpoints: vec![coord_url],
        coord_prefix: "/test/catalog".into(),
        // A bare endpoint: strict mode reaches it over https.
        apps: vec![format!("localhost:{}", apps.local_addr().port())],
        images_dir: dir.path().join("images"),
        security: strict(&catalog_node, &ca_file),
        ..Config::default()
    };
    let catalog = Server::start_on(config, listener, CancellationToken::new())
        .await
        .context("catalog starts")?;
    let base = format!("https://localhost:{}", catalog.local_addr().port());

    let user = client(&cluster.cert_pem, None, &ca_file);
    let agent = client(&cluster.cert_pem, Some(&agent_node), &ca_file);
    let intruder = client(&cluster.cert_pem, Some(&stranger), &ca_file);
    let redis = json!({"packageName": "redis", "options": {}});

    // (what, client, endpoint, credential, body, expected status)
    let table: Vec<Case<'_>> = vec![
        ("no credential", &user, "search", None, json!({}), 401),
        (
            "a forged token",
            &user,
            "search",
            Some("token=eyJhbGciOiJub25lIn0.e30."),
            json!({}),
            401,
        ),
        (
            "a viewer searches",
            &user,
            "search",
            Some(&vera),
            json!({}),
            200,
        ),
        (
            "a viewer may not install",
            &user,
            "install",
            Some(&vera),
            redis.clone(),
            403,
        ),
        (
            "an agent's certificate reads",
            &agent,
            "list",
            None,
            json!({}),
            200,
        ),
        (
            "an agent's certificate may not install",
            &agent,
            "install",
            None,
            redis.clone(),
            403,
        ),
        (
            "an operator may not add a repository",
            &user,
            "repository/add",
            Some(&otto),
            json!({"name": "x", "uri": "https://example.invalid/repo.json"}),
            403,
        ),
        (
            "an admin lists the repositories",
            &user,
            "repository/list",
            Some(&ada),
            json!({}),
            200,
        ),
        // The catalog creates the app in the strict apps with its own node certificate.
        (
            "an operator installs",
            &user,
            "install",
            Some(&otto),
            redis.clone(),
            200,
        ),
    ];
    let mut failures = Vec::new();
    for (what, http, endpoint, auth, body, want) in table {
        match cosmos(http, &base, endpoint, auth, body).await {
            Ok((got, _)) if got == want => {}
            Ok((got, body)) => failures.push(format!("{what}: {got}, wanted {want}: {body}")),
            Err(e) => failures.push(format!("{what}: no answer: {e}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));

    // The install reached apps: a viewer sees the app there, over TLS.
    let apps_list: Value = user
        .get(format!("{apps_base}/v2/apps"))
        .header("Authorization", &vera)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        apps_list["apps"][0]["id"] == "/redis",
        "the installed app in apps: {apps_list}"
    );

    // A certificate from another CA fails the handshake.
    let refused = cosmos(&intruder, &base, "search", Some(&ada), json!({})).await;
    ensure!(
        refused.is_err(),
        "another CA's certificate was answered: {refused:?}"
    );
    // Plain HTTP is refused on a strict port.
    let plain = capstan_http_client::client()
        .post(format!(
            "http://localhost:{}/package/search",
            catalog.local_addr().port()
        ))
        .header("Authorization", &ada)
        .send()
        .await?;
    ensure!(plain.status() == 400, "plain HTTP: {}", plain.status());

    catalog.shutdown().await;
    let _ = apps.shutdown().await;
    stop.cancel();
    let _ = coord.shutdown().await;
    Ok(())
}
