//! Against the real Capstan master with a simulated agent and a minimal scheduler.

use std::time::Duration;

use anyhow::{Context, bail};
use capstan_proto::recordio::RecordIoDecoder;
use capstan_testkit::sim_agent::{SimAgent, SimAgentConfig};
use capstan_testkit::wait_until;
use futures::StreamExt;
use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::support::*;

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

async fn next_of(rx: &mut mpsc::UnboundedReceiver<Value>, ty: &str) -> anyhow::Result<Value> {
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

#[tokio::test]
async fn a_task_launched_through_the_real_master_is_resolvable_and_gone_when_killed()
-> anyhow::Result<()> {
    let master = capstan_master::Server::start(
        capstan_master::config::Config {
            listen: "127.0.0.1:0".parse()?,
            allocation_interval: Duration::from_millis(50),
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await?;
    let base = format!("http://{}", master.local_addr());
    let agent = SimAgent::start_new(SimAgentConfig::new(base.clone(), "127.0.0.1"));
    agent.wait_subscribed(WAIT).await?;

    let dns_server = start(config(vec![master.local_addr().to_string()], vec![])).await?;
    let addr = dns(&dns_server);
    wait_until("the agent is named", WAIT, async || {
        resolves_to(addr, "slave.mesos.", &["127.0.0.1"]).await
    })
    .await?;

    let http = capstan_http_client::client();
    let sub = http
        .post(format!("{base}/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "root", "name": "marathon"}}}).to_string())
        .send()
        .await?;
    anyhow::ensure!(sub.status() == 200, "SUBSCRIBE answered {}", sub.status());
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
    let call = |body: Value| {
        let mut body = body;
        body["framework_id"] = framework_id.clone();
        http.post(format!("{base}/api/v1/scheduler"))
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", &stream_id)
            .body(body.to_string())
            .send()
    };
    let task = json!({
        "name": "web", "task_id": {"value": "web.1"}, "agent_id": offer["agent_id"],
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31000}]}}
        ],
        "command": {"value": "serve", "shell": true}
    });
    // Acknowledge every status update, or the agent holds back the next one.
    let (ack_http, ack_base, ack_stream, ack_fw) = (
        http.clone(),
        base.clone(),
        stream_id.clone(),
        framework_id.clone(),
    );
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let status = &ev["update"]["status"];
            if ev["type"] != "UPDATE" || status.get("uuid").is_none() {
                continue;
            }
            let ack = json!({"type": "ACKNOWLEDGE", "framework_id": ack_fw, "acknowledge": {
                "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]}});
            let _ = ack_http
                .post(format!("{ack_base}/api/v1/scheduler"))
                .header("Content-Type", "application/json")
                .header("Mesos-Stream-Id", &ack_stream)
                .body(ack.to_string())
                .send()
                .await;
        }
    });
    let accepted = call(
        json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}]}}),
    )
    .await?;
    anyhow::ensure!(
        accepted.status().is_success(),
        "ACCEPT answered {}",
        accepted.status()
    );

    wait_until("web.marathon.mesos resolves", WAIT, async || {
        resolves_to(addr, "web.marathon.mesos.", &["127.0.0.1"]).await
    })
    .await?;
    let m = ask(addr, "_web._tcp.marathon.mesos.", RecordType::SRV).await?;
    let ports: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect();
    assert_eq!(ports, [31000]);

    let killed = call(json!({"type": "KILL", "kill": {"task_id": {"value": "web.1"}}})).await?;
    anyhow::ensure!(
        killed.status().is_success(),
        "KILL answered {}",
        killed.status()
    );
    wait_until("web.marathon.mesos is gone", WAIT, async || {
        is_nxdomain(addr, "web.marathon.mesos.").await
    })
    .await?;

    dns_server.shutdown().await;
    drop(agent);
    master.shutdown().await;
    Ok(())
}
