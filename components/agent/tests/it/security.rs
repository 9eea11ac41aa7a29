//! Strict mode on the agent, against a strict master and a real coord holding the identity
//! records: the agent registers over mutual TLS with its node certificate (the master's port
//! has no plain-HTTP side here), its own API answers only the cluster's certificates and
//! accounts with the role a call needs, a certificate of another CA fails the handshake, and a
//! task a scheduler launches through the master runs.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use capstan_iam::{Iam, Options};
use capstan_proto::mesos::v1::TaskState;
use capstan_proto::recordio::RecordIoDecoder;
use capstan_runtime::auth::{Role, SecurityMode};
use capstan_runtime::tls::NodeTls;
use capstan_runtime::{SecurityConfig, TlsFiles};
use capstan_testkit::pki::TestCa;
use capstan_testkit::wait_until;
use capstan_types::ClientCredential;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::harness::*;

const WAIT: Duration = Duration::from_secs(30);

fn strict(files: &capstan_testkit::pki::NodeFiles, ca_file: &std::path::Path) -> SecurityConfig {
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

/// A client speaking TLS with `config` (a node's certificate, or none).
fn tls_client(config: &rustls::ClientConfig) -> Result<reqwest::Client> {
    Ok(
        capstan_http_client::with_tls(capstan_http_client::builder(), config)
            .no_proxy()
            .build()?,
    )
}

/// Reads a scheduler event stream into a channel of JSON events.
fn events(resp: reqwest::Response) -> mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut dec = RecordIoDecoder::default();
        while let Some(Ok(chunk)) = body.next().await {
            dec.push(&chunk);
            while let Ok(Some(rec)) = dec.next_record() {
                let Ok(v) = serde_json::from_slice::<Value>(&rec) else {
                    return;
                };
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn next_of(rx: &mut mpsc::UnboundedReceiver<Value>, ty: &str) -> Result<Value> {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(v)) if v["type"] == ty => return Ok(v),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the scheduler stream ended before {ty}"),
            Err(_) => bail!("no {ty} within {WAIT:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_agent_registers_over_mutual_tls_and_guards_its_api() -> Result<()> {
    let scope = Scope::new().await;
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
    iam.create_user("fw", "fw-secret", "a framework", Role::Operator)
        .await?;
    iam.create_user("vera", "vera-pw", "", Role::Viewer).await?;
    iam.create_user("root", "root-pw", "", Role::Admin).await?;
    let viewer = format!(
        "token={}",
        iam.login_password("vera", "vera-pw", "test").await?.token
    );
    let admin = ClientCredential::basic("root", "root-pw");
    let operator = ClientCredential::basic("fw", "fw-secret");

    let cluster = TestCa::new("cluster CA")?;
    let ca_file = cluster.write_cert(dir.path(), "ca.crt")?;
    let master_files = cluster.write_node(dir.path(), "master-1", "master")?;
    let agent_files = cluster.write_node(dir.path(), "agent-1", "agent")?;

    let mut master_cfg = capstan_master::Config::for_tests();
    master_cfg.coord.endpoints = vec![coord_url.clone()];
    master_cfg.security = strict(&master_files, &ca_file);
    let master = capstan_master::Server::start(master_cfg, CancellationToken::new())
        .await
        .context("master starts")?;
    let master_base = format!("https://{}", master.local_addr());
    // Users bring a token or basic credentials, trusting the cluster CA.
    let user = tls_client(&capstan_http_client::trusting(&cluster.cert_pem)?)?;
    wait_until("the master leads", WAIT, async || {
        let r = user
            .get(format!("{master_base}/master/state"))
            .header("authorization", &viewer)
            .send()
            .await?;
        ensure!(r.status() == 200, "{}", r.status());
        Ok(())
    })
    .await?;

    let mut cfg = scope.config();
    // A bare host:port: the agent speaks TLS to it because its security is strict.
    cfg.masters = vec![master.local_addr().to_string()];
    cfg.coord_endpoints = vec![coord_url];
    cfg.security = strict(&agent_files, &ca_file);
    let agent = scope.start_with(cfg).await;
    let agent_base = format!("https://{}", agent.local_addr());

    // Registered over TLS: the master lists it, read with a viewer's token.
    let agent_id = wait_until("the agent registers", WAIT, async || {
        let state: Value = user
            .get(format!("{master_base}/master/state"))
            .header("authorization", &viewer)
            .send()
            .await?
            .json()
            .await?;
        let slaves = state["slaves"].as_array().cloned().unwrap_or_default();
        match slaves.as_slice() {
            [one] if one["hostname"] == "agent-under-test" && agent.master_connected() => {
                Ok(one["id"].as_str().unwrap_or_default().to_owned())
            }
            _ => bail!("slaves: {slaves:?}"),
        }
    })
    .await?;
    assert_eq!(agent.agent_id(), agent_id);

    // The agent's API: who may do what.
    let master_node = {
        let (cert, key) = cluster.issue("master-2", "master")?;
        tls_client(&NodeTls::from_pem(&cert, &key, &cluster.cert_pem)?.client_config())?
    };
    let agent_node = {
        let (cert, key) = cluster.issue("agent-2", "agent")?;
        tls_client(&NodeTls::from_pem(&cert, &key, &cluster.cert_pem)?.client_config())?
    };
    let exec = "/capstan/v1/tasks/none/exec";
    let status = async |client: &reqwest::Client,
                        post: bool,
                        path: &str,
                        auth: Option<&str>|
           -> Result<u16> {
        let url = format!("{agent_base}{path}");
        let mut req = if post {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(r#"{"cmd": ["true"]}"#)
        } else {
            client.get(url)
        };
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        Ok(req.send().await?.status().as_u16())
    };
    // (client, POST, path, authorization, status); 404: let through to an unknown task.
    let table: [(&reqwest::Client, bool, &str, Option<&str>, u16); 13] = [
        (&user, false, "/health", None, 200),
        (&user, false, "/version", None, 200),
        (&user, false, "/state", None, 401),
        (&user, false, "/state", Some("token=forged"), 401),
        (&user, false, "/state", Some(&viewer), 200),
        (&user, false, "/metrics/snapshot", Some(&viewer), 200),
        (&user, true, exec, Some(&viewer), 403),
        (&user, true, exec, Some(operator.header_value()), 403),
        (&user, true, exec, Some(admin.header_value()), 404),
        (&user, false, "/state", Some(admin.header_value()), 200),
        (&master_node, true, exec, None, 404),
        (&agent_node, false, "/state", None, 200),
        (&agent_node, true, exec, None, 403),
    ];
    for (i, (client, post, path, auth, want)) in table.into_iter().enumerate() {
        assert_eq!(
            status(client, post, path, auth).await?,
            want,
            "row {i}: POST {post} {path} {auth:?}"
        );
    }
    // No plain HTTP on a strict port without allow_plaintext.
    let plain = capstan_http_client::client()
        .get(format!("http://{}/health", agent.local_addr()))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
        "plain HTTP answered"
    );
    // A certificate from another CA fails the handshake, though it trusts the agent's.
    let other = TestCa::new("another CA")?;
    let (cert, key) = other.issue("intruder", "master")?;
    let intruder = tls_client(&NodeTls::from_pem(&cert, &key, &cluster.cert_pem)?.client_config())?;
    let refused = intruder.get(format!("{agent_base}/health")).send().await;
    assert!(
        refused.is_err(),
        "another CA's certificate was accepted: {refused:?}"
    );
    // And the agent does not trust a server certificate of another CA either.
    let wrong_ca = tls_client(&capstan_http_client::trusting(&other.cert_pem)?)?;
    assert!(
        wrong_ca
            .get(format!("{agent_base}/health"))
            .send()
            .await
            .is_err()
    );

    // A scheduler (an operator, by basic credentials over TLS) launches a command task
    // through the master; the agent runs it and its RUNNING reaches the master over TLS.
    let operator_http = |req: reqwest::RequestBuilder| {
        req.header("authorization", operator.header_value())
            .header("content-type", "application/json")
            .header("accept", "application/json")
    };
    let scheduler = format!("{master_base}/api/v1/scheduler");
    let sub = operator_http(user.post(&scheduler))
        .body(
            json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "root", "name": "strict"}}})
                .to_string(),
        )
        .send()
        .await?;
    ensure!(sub.status() == 200, "SUBSCRIBE answered {}", sub.status());
    let stream_id = sub
        .headers()
        .get("Mesos-Stream-Id")
        .context("stream id")?
        .to_str()?
        .to_owned();
    let mut rx = events(sub);
    let subscribed = next_of(&mut rx, "SUBSCRIBED").await?;
    let framework_id = subscribed["subscribed"]["framework_id"].clone();
    let offers = next_of(&mut rx, "OFFERS").await?;
    let offer = offers["offers"]["offers"][0].clone();
    {
        // Acknowledge every update, or the agent holds back the next one.
        let (http, url, stream, fw, auth) = (
            user.clone(),
            scheduler.clone(),
            stream_id.clone(),
            framework_id.clone(),
            operator.header_value().to_owned(),
        );
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let status = &ev["update"]["status"];
                if ev["type"] != "UPDATE" || status.get("uuid").is_none() {
                    continue;
                }
                let ack = json!({"type": "ACKNOWLEDGE", "framework_id": fw, "acknowledge": {
                    "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]}});
                let _ = http
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .header("Mesos-Stream-Id", &stream)
                    .body(ack.to_string())
                    .send()
                    .await;
            }
        });
    }
    let task = json!({
        "name": "sleeper", "task_id": {"value": "sleeper.1"}, "agent_id": offer["agent_id"],
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}
        ],
        "command": {"value": "sleep 600", "shell": true}
    });
    let accepted = operator_http(user.post(&scheduler))
        .header("Mesos-Stream-Id", &stream_id)
        .body(
            json!({"type": "ACCEPT", "framework_id": framework_id, "accept": {
                "offer_ids": [offer["id"]],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}]}})
            .to_string(),
        )
        .send()
        .await?;
    ensure!(
        accepted.status().is_success(),
        "ACCEPT answered {}",
        accepted.status()
    );
    wait_state(&agent, "sleeper.1", TaskState::TaskRunning).await;
    wait_until("the master sees the task RUNNING", WAIT, async || {
        let state: Value = user
            .get(format!("{master_base}/master/state"))
            .header("authorization", &viewer)
            .send()
            .await?
            .json()
            .await?;
        let states: Vec<&str> = state["frameworks"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| f["tasks"].as_array().into_iter().flatten())
            .filter_map(|t| t["state"].as_str())
            .collect();
        ensure!(states == ["TASK_RUNNING"], "task states: {states:?}");
        Ok(())
    })
    .await?;

    agent
        .tasks()
        .kill("sleeper.1", Some(Duration::from_secs(2)))
        .await?;
    wait_state(&agent, "sleeper.1", TaskState::TaskKilled).await;
    agent.shutdown().await;
    master.shutdown().await;
    scope.assert_no_containers_left().await;
    stop.cancel();
    drop(coord);
    Ok(())
}
