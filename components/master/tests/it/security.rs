//! Strict mode on the master: every call verified by the master itself against the identity
//! records in a real coord — frameworks by HTTP basic authentication (an unmodified pymesos,
//! which cannot speak TLS, on the port's plain-HTTP side), agents by an administrator's
//! credential here (simulated agents have no TLS client yet), readers by a token with its role.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result};
use capstan_iam::{Iam, Options};
use capstan_master::Config;
use capstan_runtime::auth::{Role, SecurityMode};
use capstan_runtime::{SecurityConfig, TlsFiles};
use capstan_testkit::pki::TestCa;
use capstan_testkit::sim_agent::{SimAgent, SimAgentConfig};
use capstan_types::ClientCredential;
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_master_verifies_frameworks_agents_and_readers() -> Result<()> {
    let python = capstan_testkit::pymesos_python().await?;
    let dir = capstan_testkit::temp_dir()?;
    let coord =
        capstan_coord::Server::start_single(dir.path().join("coord"), CancellationToken::new())
            .await
            .context("coord starts")?;
    let coord_url = format!("http://{}", coord.local_addr());
    let coord_client = capstan_coord_client::Client::new([coord_url.clone()])?;
    let stop = CancellationToken::new();
    let iam = Iam::start(coord_client, Options::default(), stop.clone()).await?;
    iam.create_user("fw", "fw-secret", "a framework", Role::Operator)
        .await?;
    iam.create_user("vera", "vera-pw", "", Role::Viewer).await?;
    iam.create_user("root", "root-pw", "", Role::Admin).await?;
    let vera = iam.login_password("vera", "vera-pw", "test").await?.token;

    let cluster = TestCa::new("cluster CA")?;
    let ca_file = cluster.write_cert(dir.path(), "ca.crt")?;
    let node = cluster.write_node(dir.path(), "master-1", "master")?;
    let mut cfg = Config::for_tests();
    cfg.coord.endpoints = vec![coord_url];
    cfg.security = SecurityConfig {
        mode: SecurityMode::Strict,
        tls: Some(TlsFiles {
            cert_file: node.cert,
            key_file: node.key,
            ca_file,
        }),
        allow_plaintext: true,
    };
    let m = Master::start_with(cfg).await;
    let http = capstan_http_client::client();
    // A POST without a body, or with `call` as its JSON body (the operator API).
    let send =
        async |path: &str, auth: Option<&str>, post: bool, call: Option<&str>| -> Result<u16> {
            let url = format!("{}{path}", m.base);
            let mut req = if post { http.post(url) } else { http.get(url) };
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            if let Some(c) = call {
                req = req
                    .header("content-type", "application/json")
                    .header("accept", "application/json")
                    .body(c.to_owned());
            }
            Ok(req.send().await?.status().as_u16())
        };
    let status =
        async |path: &str, auth: Option<&str>, post: bool| send(path, auth, post, None).await;
    let viewer = format!("token={vera}");
    capstan_testkit::wait_until("the master leads", WAIT, async || {
        status("/master/state", Some(&viewer), false)
            .await
            .map(|s| s == 200)
    })
    .await?;
    let operator_basic = ClientCredential::basic("fw", "fw-secret");
    // (path, authorization, POST, status)
    let table: [(&str, Option<&str>, bool, u16); 7] = [
        ("/version", None, false, 200),
        ("/health", None, false, 200),
        ("/master/state", None, false, 401),
        ("/master/state", Some("token=forged"), false, 401),
        ("/master/teardown", Some(&viewer), true, 403),
        (
            "/master/teardown",
            Some(operator_basic.header_value()),
            true,
            403,
        ),
        (
            "/api/capstan/agent/v1",
            Some(operator_basic.header_value()),
            true,
            403,
        ),
    ];
    for (path, auth, post, want) in table {
        assert_eq!(status(path, auth, post).await?, want, "{path} {auth:?}");
    }
    // The operator API: its reads are for viewers, what it changes is judged by the call.
    let get_state = r#"{"type": "GET_STATE"}"#;
    let teardown = r#"{"type": "TEARDOWN", "teardown": {"framework_id": {"value": "none"}}}"#;
    let table = [
        (get_state, None, 401),
        (get_state, Some(viewer.as_str()), 200),
        (teardown, Some(viewer.as_str()), 403),
        (teardown, Some(operator_basic.header_value()), 403),
    ];
    for (call, auth, want) in table {
        assert_eq!(
            send("/api/v1", auth, true, Some(call)).await?,
            want,
            "{call} {auth:?}"
        );
    }

    // An agent with an administrator's credential subscribes; pymesos with its principal and
    // secret runs its whole scenario.
    let mut agent_cfg = SimAgentConfig::new(m.base.clone(), "a1");
    agent_cfg.credential = Some(ClientCredential::basic("root", "root-pw"));
    let agent = SimAgent::start_new(agent_cfg);
    agent.wait_subscribed(WAIT).await?;
    let addr = m
        .handle
        .as_ref()
        .map(|h| h.local_addr())
        .context("running")?;

    // An agent node's certificate is a viewer's, except that it may drain its own agent
    // (`capstan cluster leave` on the agent): not another one.
    let agents: serde_json::Value = http
        .get(format!("{}/master/slaves", m.base))
        .header("authorization", &viewer)
        .send()
        .await?
        .json()
        .await?;
    let a1 = agents["slaves"][0]["id"]
        .as_str()
        .context("a1's agent id")?
        .to_owned();
    let drain =
        format!(r#"{{"type": "DRAIN_AGENT", "drain_agent": {{"agent_id": {{"value": "{a1}"}}}}}}"#);
    let node_client = |name: &str| -> Result<reqwest::Client> {
        let files = cluster.write_node(dir.path(), name, "agent")?;
        let tls = capstan_runtime::tls::NodeTls::load(&TlsFiles {
            cert_file: files.cert,
            key_file: files.key,
            ca_file: dir.path().join("ca.crt"),
        })?;
        Ok(
            capstan_http_client::with_tls(capstan_http_client::builder(), &tls.client_config())
                .build()?,
        )
    };
    let nodes = [("a1", node_client("a1")?), ("a2", node_client("a2")?)];
    let as_node = async |name: &str, call: &str| -> Result<u16> {
        let client = &nodes.iter().find(|(n, _)| *n == name).context("a node")?.1;
        let resp = client
            .post(format!("https://127.0.0.1:{}/api/v1", addr.port()))
            .header("content-type", "application/json")
            .body(call.to_owned())
            .send()
            .await?;
        Ok(resp.status().as_u16())
    };
    assert_eq!(
        as_node("a2", &drain).await?,
        403,
        "another agent's certificate"
    );
    assert_eq!(as_node("a1", get_state).await?, 200, "an agent node reads");
    assert_eq!(
        as_node("a1", teardown).await?,
        403,
        "and changes nothing else"
    );
    assert_eq!(as_node("a1", &drain).await?, 200, "the agent drains itself");
    let reactivate = drain
        .replace("DRAIN_AGENT", "REACTIVATE_AGENT")
        .replace("drain_agent", "reactivate_agent");
    assert_eq!(
        as_node("a1", &reactivate).await?,
        403,
        "reactivating is an operator's"
    );
    assert_eq!(
        send(
            "/api/v1",
            Some(operator_basic.header_value()),
            true,
            Some(&reactivate)
        )
        .await?,
        200
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pymesos/scheduler.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(addr.to_string())
        .env("TEST_TIMEOUT", "30")
        .env("MESOS_PRINCIPAL", "fw")
        .env("MESOS_SECRET", "fw-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("RESULT OK"),
        "pymesos with basic auth\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: serde_json::Value = http
        .get(format!("{}/master/state", m.base))
        .header("authorization", &viewer)
        .send()
        .await?
        .json()
        .await?;
    let principals: Vec<&str> = state["completed_frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(state["frameworks"].as_array().into_iter().flatten())
        .filter_map(|f| f["principal"].as_str())
        .collect();
    assert_eq!(principals, ["fw"], "{state}");

    // Without the secret, pymesos's subscription is refused (it exits: pymesos treats any
    // answer but 200 as fatal).
    let refused = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(addr.to_string())
        .env("TEST_TIMEOUT", "10")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await?;
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("RESULT OK"));
    stop.cancel();
    drop(coord);
    Ok(())
}
