//! The master link against a scripted fake master that speaks `capstan.agent.v1`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use capstan_proto::capstan::agent::v1::{Call, call};
use capstan_proto::mesos::v1::TaskState;
use capstan_testkit::wait_until;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::harness::*;

#[derive(Default)]
struct Fake {
    calls: Vec<Call>,
    stream: Option<mpsc::Sender<Bytes>>,
    /// Ids handed to agents that subscribe without one, in order.
    assign: Vec<String>,
    /// Ids marked gone: refused with 403.
    gone: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn record(ev: &Value) -> Bytes {
    Bytes::from(capstan_proto::recordio::encode_to_vec(
        &serde_json::to_vec(ev).unwrap(),
    ))
}

async fn api(State(fake): State<Shared>, body: Bytes) -> Response {
    let call: Call = match capstan_proto::from_json_slice(&body) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut f = fake.lock().unwrap();
    f.calls.push(call.clone());
    if call.r#type() != call::Type::Subscribe {
        return StatusCode::ACCEPTED.into_response();
    }
    let claimed = call
        .subscribe
        .as_ref()
        .and_then(|s| s.agent_info.id.clone())
        .map(|i| i.value);
    if let Some(id) = claimed.as_ref().filter(|id| f.gone.contains(id)) {
        return (
            StatusCode::FORBIDDEN,
            format!("Agent {id} has been marked gone"),
        )
            .into_response();
    }
    let id = claimed.unwrap_or_else(|| f.assign.remove(0));
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    tx.try_send(record(&json!({"type": "SUBSCRIBED", "subscribed": {
        "agent_id": {"value": id}, "ping_interval_seconds": 15.0}})))
        .unwrap();
    f.stream = Some(tx);
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::io::Error>))
    });
    (
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

struct FakeMaster {
    state: Shared,
    addr: std::net::SocketAddr,
}

impl FakeMaster {
    async fn start(assign: &[&str]) -> FakeMaster {
        let state: Shared = Arc::new(Mutex::new(Fake {
            assign: assign.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/api/capstan/agent/v1", post(api))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeMaster { state, addr }
    }

    async fn send(&self, ev: Value) {
        let tx = self
            .state
            .lock()
            .unwrap()
            .stream
            .clone()
            .expect("agent subscribed");
        tx.send(record(&ev)).await.unwrap();
    }

    fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    fn updates(&self) -> Vec<call::Update> {
        self.calls().into_iter().filter_map(|c| c.update).collect()
    }

    async fn wait_update(&self, task: &str, state: TaskState) -> call::Update {
        wait_until(
            &format!("UPDATE {task} {}", state.as_str_name()),
            DEADLINE,
            async || {
                self.updates()
                    .into_iter()
                    .find(|u| u.status.task_id.value == task && u.status.state == state as i32)
            },
        )
        .await
        .unwrap()
    }

    async fn ack(&self, u: &call::Update) {
        let uuid = capstan_proto::to_json(&u.status)["uuid"].clone();
        self.send(json!({"type": "ACKNOWLEDGED", "acknowledged": {
            "framework_id": {"value": u.framework_id.value}, "task_id": {"value": u.status.task_id.value},
            "uuid": uuid}}))
            .await;
    }
}

#[tokio::test]
async fn master_link_registers_launches_and_delivers_updates_one_at_a_time() {
    let scope = Scope::new().await;
    let master = FakeMaster::start(&["M-S7"]).await;
    let mut config = scope.config();
    config.masters = vec![master.addr.to_string()];
    let agent = scope.start_with(config.clone()).await;

    // First registration: no id claimed; the agent adopts the assigned one.
    wait_until("registered", DEADLINE, async || {
        let s = agent.tasks().snapshot();
        (s.registered && s.agent_id == "M-S7").then_some(())
    })
    .await
    .unwrap();
    let first = master.calls()[0].clone();
    assert_eq!(first.r#type(), call::Type::Subscribe);
    let sub = first.subscribe.unwrap();
    assert!(sub.agent_info.id.is_none());
    assert_eq!(sub.agent_info.hostname, "agent-under-test");
    assert!(sub.agent_info.resources.iter().any(|r| r.name == "ports"));

    master
        .send(json!({"type": "LAUNCH", "launch": {
            "framework_info": {"user": "root", "name": "fw", "id": {"value": FRAMEWORK}},
            "task": {"name": "t", "task_id": {"value": "linked"}, "agent_id": {"value": "M-S7"},
                     "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
                     "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
                     "command": {"value": "sleep 600"}}}}))
        .await;
    let starting = master.wait_update("linked", TaskState::TaskStarting).await;
    assert_eq!(starting.status.agent_id.as_ref().unwrap().value, "M-S7");
    assert_eq!(starting.framework_id.value, FRAMEWORK);
    wait_state(&agent, "linked", TaskState::TaskRunning).await;
    // RUNNING waits behind the unacknowledged STARTING.
    assert!(
        master
            .updates()
            .iter()
            .all(|u| u.status.state == TaskState::TaskStarting as i32)
    );
    master.ack(&starting).await;
    let running = master.wait_update("linked", TaskState::TaskRunning).await;
    master.ack(&running).await;

    master.send(json!({"type": "PING"})).await;
    wait_until("PONG", DEADLINE, async || {
        master
            .calls()
            .iter()
            .any(|c| c.r#type() == call::Type::Pong)
    })
    .await
    .unwrap();

    // Killing an unknown task answers TASK_LOST.
    master
        .send(json!({"type": "KILL", "kill": {"framework_id": {"value": FRAMEWORK}, "task_id": {"value": "nope"}}}))
        .await;
    let lost = master.wait_update("nope", TaskState::TaskLost).await;
    master.ack(&lost).await;

    master
        .send(json!({"type": "KILL", "kill": {"framework_id": {"value": FRAMEWORK}, "task_id": {"value": "linked"},
            "kill_policy": {"grace_period": {"nanoseconds": 0}}}}))
        .await;
    let killed = master.wait_update("linked", TaskState::TaskKilled).await;
    master.ack(&killed).await;
    wait_until("all acknowledged", DEADLINE, async || {
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

    // After a restart the agent claims its persisted id.
    let before = master.calls().len();
    let agent = scope.start_with(config).await;
    wait_until("re-subscribed", DEADLINE, async || {
        master.calls()[before..]
            .iter()
            .find(|c| c.r#type() == call::Type::Subscribe)
            .cloned()
    })
    .await
    .map(|c| assert_eq!(c.subscribe.unwrap().agent_info.id.unwrap().value, "M-S7"))
    .unwrap();
    wait_until("connected", DEADLINE, async || agent.master_connected())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), agent.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_agent_the_master_marked_gone_kills_its_tasks_and_registers_anew() {
    let scope = Scope::new().await;
    let master = FakeMaster::start(&["M-S1", "M-S2"]).await;
    let mut config = scope.config();
    config.masters = vec![master.addr.to_string()];
    let agent = scope.start_with(config).await;
    wait_until("registered", DEADLINE, async || {
        (agent.tasks().snapshot().agent_id == "M-S1").then_some(())
    })
    .await
    .unwrap();
    master
        .send(json!({"type": "LAUNCH", "launch": {
            "framework_info": {"user": "root", "name": "fw", "id": {"value": FRAMEWORK}},
            "task": {"name": "t", "task_id": {"value": "doomed"}, "agent_id": {"value": "M-S1"},
                     "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
                     "command": {"value": "sleep 600"}}}}))
        .await;
    wait_state(&agent, "doomed", TaskState::TaskRunning).await;

    // The operator marks the agent gone; its stream ends and it is refused.
    {
        let mut f = master.state.lock().unwrap();
        f.gone.push("M-S1".into());
        f.stream = None;
    }
    wait_until("registered anew", DEADLINE, async || {
        (agent.tasks().snapshot().agent_id == "M-S2").then_some(())
    })
    .await
    .unwrap();
    assert!(agent.tasks().snapshot().tasks.is_empty());
    scope.assert_no_containers_left().await;
    wait_until("connected", DEADLINE, async || agent.master_connected())
        .await
        .unwrap();
    agent.shutdown().await;
}
