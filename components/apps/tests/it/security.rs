//! Strict mode on the apps API: TLS with the node certificate, and every call verified by apps
//! itself — tokens with their role, basic credentials, node certificates of the cluster CA —
//! against the identity records in a real coord (written by the identity service, as the router
//! would). Clients are `curl`, the way an operator reaches the port.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use capstan_apps::{Config, Server};
use capstan_iam::{Iam, Options};
use capstan_runtime::auth::{Role, SecurityMode};
use capstan_runtime::{SecurityConfig, TlsFiles};
use capstan_testkit::pki::{NodeFiles, TestCa};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::fake_master::FakeMaster;

/// One `curl` call: the status, or `None` when the connection (the handshake) failed.
#[derive(Default)]
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    auth: Option<String>,
    cert: Option<&'a NodeFiles>,
    body: Option<&'a str>,
    plain: bool,
}

fn curl(base: &str, ca_file: &Path, call: &Call<'_>) -> Option<(u16, String)> {
    let scheme = if call.plain { "http" } else { "https" };
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--max-time",
        "10",
        "-X",
        call.method,
    ])
    .arg("--cacert")
    .arg(ca_file);
    if let Some(node) = call.cert {
        cmd.arg("--cert")
            .arg(&node.cert)
            .arg("--key")
            .arg(&node.key);
    }
    if let Some(a) = &call.auth {
        cmd.args(["-H", &format!("Authorization: {a}")]);
    }
    if let Some(b) = call.body {
        cmd.args(["-H", "Content-Type: application/json", "--data", b]);
    }
    cmd.arg(format!("{scheme}://{base}{}", call.path));
    let out = cmd.output().expect("curl runs");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_apps_verifies_every_call_itself() -> Result<()> {
    let dir = capstan_testkit::temp_dir()?;
    let coord =
        capstan_coord::Server::start_single(dir.path().join("coord"), CancellationToken::new())
            .await
            .context("coord starts")?;
    let coord_url = format!("http://{}", coord.local_addr());
    let coord_client = capstan_coord_client::Client::new([coord_url.clone()])?;

    // The identity service (the router's part) holds a key and two users.
    let stop = CancellationToken::new();
    let iam = Iam::start(coord_client.clone(), Options::default(), stop.clone()).await?;
    iam.create_user("vera", "vera-pw", "", Role::Viewer).await?;
    iam.create_user("otto", "otto-pw", "", Role::Operator)
        .await?;
    let vera = iam.login_password("vera", "vera-pw", "test").await?.token;
    let otto = iam.login_password("otto", "otto-pw", "test").await?.token;

    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki)?;
    let cluster = TestCa::new("cluster CA")?;
    let ca_file = cluster.write_cert(&pki, "ca.crt")?;
    let server_cert = cluster.write_node(&pki, "apps-node", "master")?;
    let master_node = cluster.write_node(&pki, "master-2", "master")?;
    let agent_node = cluster.write_node(&pki, "agent-1", "agent")?;
    let stranger = TestCa::new("another CA")?.write_node(&pki, "intruder", "master")?;

    let master = FakeMaster::start(1).await;
    let mut config = Config::for_tests(&master.url());
    config.store.coord_endpoints = vec![coord_url];
    config.security = SecurityConfig {
        mode: SecurityMode::Strict,
        tls: Some(TlsFiles {
            cert_file: server_cert.cert.clone(),
            key_file: server_cert.key.clone(),
            ca_file: ca_file.clone(),
        }),
        allow_plaintext: false,
    };
    let apps = Server::start(config, CancellationToken::new()).await?;
    let base = format!("localhost:{}", apps.local_addr().port());

    let app = r#"{"id": "/secure", "cmd": "sleep 100", "cpus": 0.1, "mem": 16, "instances": 0}"#;
    let basic = |user: &str, pw: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };
    let token = |t: &str| Some(format!("token={t}"));
    // (what, call, expected status; None = the connection is refused)
    let table: Vec<(&str, Call<'_>, Option<u16>)> = vec![
        (
            "ping is open",
            Call {
                method: "GET",
                path: "/ping",
                ..Call::default()
            },
            Some(200),
        ),
        (
            "no credential",
            Call {
                method: "GET",
                path: "/v2/apps",
                ..Call::default()
            },
            Some(401),
        ),
        (
            "a viewer reads",
            Call {
                method: "GET",
                path: "/v2/apps",
                auth: token(&vera),
                ..Call::default()
            },
            Some(200),
        ),
        (
            "a viewer may not deploy",
            Call {
                method: "POST",
                path: "/v2/apps",
                auth: token(&vera),
                body: Some(app),
                ..Call::default()
            },
            Some(403),
        ),
        (
            "a forged token",
            Call {
                method: "GET",
                path: "/v2/apps",
                auth: token("eyJhbGciOiJub25lIn0.e30."),
                ..Call::default()
            },
            Some(401),
        ),
        (
            "an operator deploys",
            Call {
                method: "POST",
                path: "/v2/apps",
                auth: Some(format!("Bearer {otto}")),
                body: Some(app),
                ..Call::default()
            },
            Some(201),
        ),
        (
            "an operator may not make the leader abdicate",
            Call {
                method: "DELETE",
                path: "/v2/leader",
                auth: token(&otto),
                ..Call::default()
            },
            Some(403),
        ),
        (
            "basic credentials of an operator",
            Call {
                method: "PUT",
                path: "/v2/apps/secure",
                auth: Some(basic("otto", "otto-pw")),
                body: Some(app),
                ..Call::default()
            },
            Some(200),
        ),
        (
            "a wrong password",
            Call {
                method: "GET",
                path: "/v2/apps",
                auth: Some(basic("otto", "guess")),
                ..Call::default()
            },
            Some(401),
        ),
        (
            "an agent's certificate reads",
            Call {
                method: "GET",
                path: "/v2/apps",
                cert: Some(&agent_node),
                ..Call::default()
            },
            Some(200),
        ),
        (
            "an agent's certificate may not deploy",
            Call {
                method: "DELETE",
                path: "/v2/apps/secure",
                cert: Some(&agent_node),
                ..Call::default()
            },
            Some(403),
        ),
        (
            "a master's certificate may",
            Call {
                method: "DELETE",
                path: "/v2/apps/secure",
                cert: Some(&master_node),
                ..Call::default()
            },
            Some(200),
        ),
        (
            "a certificate from another CA fails the handshake",
            Call {
                method: "GET",
                path: "/v2/apps",
                cert: Some(&stranger),
                ..Call::default()
            },
            None,
        ),
        (
            "plain HTTP is told to use TLS",
            Call {
                method: "GET",
                path: "/ping",
                plain: true,
                ..Call::default()
            },
            Some(400),
        ),
    ];
    let leading = Call {
        method: "GET",
        path: "/v2/leader",
        auth: token(&vera),
        ..Call::default()
    };
    capstan_testkit::wait_until(
        "apps leads",
        std::time::Duration::from_secs(20),
        async || {
            tokio::task::block_in_place(|| curl(&base, &ca_file, &leading)).map(|g| g.0)
                == Some(200)
        },
    )
    .await?;
    for (what, call, want) in table {
        let got = tokio::task::block_in_place(|| curl(&base, &ca_file, &call));
        assert_eq!(got.as_ref().map(|g| g.0), want, "{what}: {got:?}");
        if want == Some(401) {
            let body: Value = serde_json::from_str(&got.unwrap().1)?;
            assert_eq!(body["code"], "unauthorized", "{what}");
        }
    }
    stop.cancel();
    drop(coord);
    Ok(())
}
