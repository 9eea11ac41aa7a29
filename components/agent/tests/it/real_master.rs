//! NOT COMPILED (not listed in `tests/it.rs`): scheduler → real capstan-master → real agent →
//! Docker, end to end. It passed on 2026-11-22 with `capstan-master = { path = "../master" }`
//! as a temporary dev-dependency, which the house rule (daemons never depend on each other's
//! crates) keeps out of this crate. Meant to move into a cross-crate test (testkit / the
//! `capstan` binary tests) where both daemons are available.

use capstan_proto::recordio::RecordIoDecoder;
use capstan_testkit::wait_until;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::harness::*;

struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    dec: RecordIoDecoder,
}

impl Events {
    async fn next(&mut self) -> Value {
        loop {
            if let Some(r) = self.dec.next_record().unwrap() {
                return serde_json::from_slice(&r).unwrap();
            }
            let c = tokio::time::timeout(DEADLINE, self.body.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            self.dec.push(&c);
        }
    }
    async fn next_of(&mut self, ty: &str) -> Value {
        loop {
            let e = self.next().await;
            if e["type"] == ty {
                return e;
            }
        }
    }
}

#[tokio::test]
async fn real_master_schedules_a_docker_task_on_the_real_agent() {
    let scope = Scope::new().await;
    let master = capstan_master::Server::start(
        capstan_master::Config::for_tests(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let m = master.local_addr();
    let mut config = scope.config();
    config.masters = vec![m.to_string()];
    config.status_update_retry = std::time::Duration::from_millis(500);
    let agent = scope.start_with(config).await;
    wait_until("agent registered", DEADLINE, async || {
        agent.master_connected()
    })
    .await
    .unwrap();
    let agent_id = agent.agent_id();
    assert!(agent_id.starts_with(master.master_id()), "{agent_id}");

    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{m}/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "root", "name": "smoke"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stream_id = resp.headers()["mesos-stream-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut ev = Events {
        body: resp.bytes_stream().boxed(),
        dec: RecordIoDecoder::new(1 << 24),
    };
    let sub = ev.next_of("SUBSCRIBED").await;
    let fid = sub["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = async |body: Value| {
        let r = client
            .post(format!("http://{m}/api/v1/scheduler"))
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", &stream_id)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    };
    let offer = loop {
        let o = ev.next_of("OFFERS").await;
        if let Some(o) = o["offers"]["offers"].as_array().and_then(|a| {
            a.iter()
                .find(|o| o["agent_id"]["value"] == agent_id.as_str())
        }) {
            break o.clone();
        }
    };
    call(
        json!({"framework_id": {"value": fid}, "type": "ACCEPT", "accept": {
        "offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
            "name": "smoke", "task_id": {"value": "smoke-1"}, "agent_id": {"value": agent_id},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
            "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
            "command": {"value": "sleep 600"}}]}}]}}),
    )
    .await;
    let mut seen = Vec::new();
    loop {
        let u = ev.next_of("UPDATE").await;
        let st = u["update"]["status"].clone();
        seen.push(st["state"].as_str().unwrap().to_owned());
        if let Some(uuid) = st.get("uuid") {
            call(
                json!({"framework_id": {"value": fid}, "type": "ACKNOWLEDGE", "acknowledge": {
                "agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": uuid}}),
            )
            .await;
        }
        if st["state"] == "TASK_RUNNING" {
            assert!(st["container_status"]["network_infos"].is_array(), "{st}");
            call(json!({"framework_id": {"value": fid}, "type": "KILL", "kill": {"task_id": {"value": "smoke-1"}}})).await;
        }
        if st["state"] == "TASK_KILLED" {
            break;
        }
    }
    assert_eq!(seen, ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLED"]);
    wait_until("all acknowledged on the agent", DEADLINE, async || {
        agent
            .tasks()
            .unacknowledged()
            .await
            .map(|u| u.is_empty())
            .unwrap_or(false)
    })
    .await
    .unwrap();
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
    master.shutdown().await;
}
