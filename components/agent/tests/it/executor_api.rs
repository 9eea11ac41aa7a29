//! The executor API, with the test playing the custom executor over HTTP.

use base64::Engine as _;
use capstan_proto::mesos::v1::TaskState;
use capstan_proto::recordio::RecordIoDecoder;
use capstan_testkit::wait_until;
use futures::StreamExt;
use serde_json::{Value, json};

use super::harness::*;

pub struct EventStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    decoder: RecordIoDecoder,
}

impl EventStream {
    pub async fn next(&mut self) -> Value {
        loop {
            if let Some(rec) = self.decoder.next_record().unwrap() {
                return serde_json::from_slice(&rec).unwrap();
            }
            let chunk = tokio::time::timeout(DEADLINE, self.body.next())
                .await
                .expect("an event in time")
                .expect("stream open")
                .unwrap();
            self.decoder.push(&chunk);
        }
    }
}

pub fn uuid_b64() -> (Vec<u8>, String) {
    let u = uuid::Uuid::new_v4().as_bytes().to_vec();
    let b = base64::engine::general_purpose::STANDARD.encode(&u);
    (u, b)
}

pub async fn call(base: &str, body: Value) -> reqwest::Response {
    capstan_http_client::client()
        .post(format!("{base}/api/v1/executor"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// SUBSCRIBEs as the executor and returns its event stream.
pub async fn subscribe(base: &str, body: Value) -> EventStream {
    let resp = call(base, body).await;
    assert_eq!(resp.status(), 200);
    EventStream {
        body: resp.bytes_stream().boxed(),
        decoder: RecordIoDecoder::new(1 << 20),
    }
}

fn update(state: &str, uuid: &str) -> Value {
    json!({"type": "UPDATE", "framework_id": {"value": FRAMEWORK}, "executor_id": {"value": "E1"},
           "update": {"status": {"task_id": {"value": "exec-task"}, "state": state, "uuid": uuid,
                                 "source": "SOURCE_EXECUTOR"}}})
}

#[tokio::test]
async fn a_custom_executor_subscribes_gets_its_tasks_and_reports_their_states() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let base = format!("http://{}", agent.local_addr());
    let t = task(
        "exec-task",
        json!({"executor": {"executor_id": {"value": "E1"}, "framework_id": {"value": FRAMEWORK},
                            "command": {"value": "env > executor.env; exec sleep 600"}}}),
    );
    agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    let view = wait_until("executor started", DEADLINE, async || {
        let snap = agent.tasks().snapshot();
        let t = snap.task("exec-task")?.clone();
        let env = std::fs::read_to_string(t.container.sandbox.join("executor.env")).ok()?;
        env.contains("MESOS_SUBSCRIPTION_BACKOFF_MAX")
            .then_some((t, env))
    })
    .await
    .unwrap();
    let (view, env) = view;
    for needle in [
        "MESOS_EXECUTOR_ID=E1".to_owned(),
        format!("MESOS_FRAMEWORK_ID={FRAMEWORK}"),
        format!("MESOS_AGENT_ENDPOINT={}", agent.local_addr()),
        format!("MESOS_SLAVE_ID={}", agent.agent_id()),
        "MESOS_CHECKPOINT=1".to_owned(),
    ] {
        assert!(
            env.lines().any(|l| l == needle),
            "{needle} missing from:\n{env}"
        );
    }
    assert_eq!(view.state, TaskState::TaskStaging);

    // Bad calls are refused with Mesos' status codes.
    let r = call(&base, json!({"type": "UPDATE", "framework_id": {"value": FRAMEWORK}, "executor_id": {"value": "nope"},
        "update": {"status": {"task_id": {"value": "exec-task"}, "state": "TASK_RUNNING", "uuid": uuid_b64().1}}})).await;
    assert_eq!(r.status(), 400);
    let r = call(&base, update("TASK_RUNNING", &uuid_b64().1)).await;
    assert_eq!(r.status(), 403, "not subscribed yet");
    let r = capstan_http_client::client()
        .post(format!("{base}/api/v1/executor"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = capstan_http_client::client()
        .post(format!("{base}/api/v1/executor"))
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    let resp = call(
        &base,
        json!({"type": "SUBSCRIBE", "framework_id": {"value": FRAMEWORK},
        "executor_id": {"value": "E1"}, "subscribe": {}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut events = EventStream {
        body: resp.bytes_stream().boxed(),
        decoder: RecordIoDecoder::new(1 << 20),
    };
    let subscribed = events.next().await;
    assert_eq!(subscribed["type"], "SUBSCRIBED");
    assert_eq!(
        subscribed["subscribed"]["executor_info"]["executor_id"]["value"],
        "E1"
    );
    assert_eq!(
        subscribed["subscribed"]["framework_info"]["id"]["value"],
        FRAMEWORK
    );
    assert_eq!(
        subscribed["subscribed"]["agent_info"]["id"]["value"],
        agent.agent_id()
    );
    assert_eq!(
        subscribed["subscribed"]["container_id"]["value"],
        view.container.container_id.as_str()
    );
    let launch = events.next().await;
    assert_eq!(launch["type"], "LAUNCH");
    assert_eq!(launch["launch"]["task"]["task_id"]["value"], "exec-task");

    let (running_uuid, running_b64) = uuid_b64();
    assert_eq!(
        call(&base, update("TASK_RUNNING", &running_b64))
            .await
            .status(),
        202
    );
    let running = wait_state(&agent, "exec-task", TaskState::TaskRunning).await;
    assert_eq!(
        running.statuses.last().unwrap().uuid.as_deref(),
        Some(running_uuid.as_slice())
    );
    agent
        .tasks()
        .acknowledge("exec-task", &running_uuid)
        .await
        .unwrap();
    let ack = events.next().await;
    assert_eq!(ack["type"], "ACKNOWLEDGED");
    assert_eq!(ack["acknowledged"]["uuid"], running_b64);

    // Messages both ways: executor → framework (via the master link) and back.
    let mut to_framework = agent.tasks().subscribe_executor_messages();
    let data = base64::engine::general_purpose::STANDARD.encode(b"hello framework");
    let r = call(
        &base,
        json!({"type": "MESSAGE", "framework_id": {"value": FRAMEWORK},
        "executor_id": {"value": "E1"}, "message": {"data": data}}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let m = tokio::time::timeout(DEADLINE, to_framework.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.executor_id.as_str(), m.data.as_slice()),
        ("E1", b"hello framework".as_slice())
    );
    agent
        .tasks()
        .framework_message(capstan_agent::manager::executor::ExecutorMessage {
            framework_id: FRAMEWORK.into(),
            executor_id: "E1".into(),
            data: b"hello executor".to_vec(),
        })
        .await
        .unwrap();
    let msg = events.next().await;
    assert_eq!(msg["type"], "MESSAGE");
    assert_eq!(
        msg["message"]["data"],
        base64::engine::general_purpose::STANDARD.encode(b"hello executor")
    );

    agent.tasks().kill("exec-task", None).await.unwrap();
    let kill = events.next().await;
    assert_eq!(kill["type"], "KILL");
    assert_eq!(kill["kill"]["task_id"]["value"], "exec-task");
    let (_, killed_b64) = uuid_b64();
    assert_eq!(
        call(&base, update("TASK_KILLED", &killed_b64))
            .await
            .status(),
        202
    );
    wait_state(&agent, "exec-task", TaskState::TaskKilled).await;
    // Its last task ended: the executor is told to shut down, and its process goes.
    assert_eq!(events.next().await["type"], "SHUTDOWN");
    let pid = wait_until("executor pid known", DEADLINE, async || {
        agent.tasks().snapshot().task("exec-task")?.container.pid
    })
    .await
    .unwrap();
    wait_until("executor process gone", DEADLINE, async || {
        let out = std::process::Command::new("pgrep")
            .arg("-g")
            .arg(pid.to_string())
            .output()
            .unwrap();
        out.stdout.is_empty()
    })
    .await
    .unwrap();
    agent.shutdown().await;
}

/// A custom executor written in busybox sh: SUBSCRIBEs with `wget` (the event stream goes
/// to a sandbox file), reports TASK_RUNNING for the task it is given, TASK_KILLED when told
/// to kill it, and exits on SHUTDOWN. Busybox `wget` calls 202 an error; the call still
/// went through, so its status is ignored.
const SH_EXECUTOR: &str = r#"
env > "$MESOS_SANDBOX/executor.env"
events="$MESOS_SANDBOX/events"
url="http://$MESOS_AGENT_ENDPOINT/api/v1/executor"
ids="\"framework_id\":{\"value\":\"$MESOS_FRAMEWORK_ID\"},\"executor_id\":{\"value\":\"$MESOS_EXECUTOR_ID\"}"
wget -q -O "$events" --header 'Content-Type: application/json' --header 'Accept: application/json' \
  --post-data "{\"type\":\"SUBSCRIBE\",$ids,\"subscribe\":{}}" "$url" &
wait_for() { until grep -q "\"$1\"" "$events" 2>/dev/null; do sleep 0.1; done; }
wait_for LAUNCH
task=$(grep -o '"task_id":{"value":"[^"]*"' "$events" | head -n 1 | sed 's/.*"value":"//; s/"$//')
update() {
  uuid=$(head -c 16 /dev/urandom | base64)
  wget -q -O /dev/null --header 'Content-Type: application/json' \
    --post-data "{\"type\":\"UPDATE\",$ids,\"update\":{\"status\":{\"task_id\":{\"value\":\"$task\"},\"state\":\"$1\",\"source\":\"SOURCE_EXECUTOR\",\"uuid\":\"$uuid\"}}}" \
    "$url" || true
}
update TASK_RUNNING
wait_for KILL
update TASK_KILLED
wait_for SHUTDOWN
echo executor done
"#;

#[tokio::test]
async fn a_custom_executor_in_a_docker_container_runs_its_task_and_leaves_no_container() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let base = format!("http://{}", agent.local_addr());
    let t = task(
        "docker-exec-task",
        json!({"executor": {"executor_id": {"value": "E1"}, "framework_id": {"value": FRAMEWORK},
                            "name": "sh executor",
                            "command": {"value": SH_EXECUTOR},
                            "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}}}}),
    );
    agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    let running = wait_state(&agent, "docker-exec-task", TaskState::TaskRunning).await;
    assert!(running.docker && running.custom_executor);
    let name = running.container.name.clone();
    assert_eq!(
        name,
        format!(
            "mesos-{}.{}",
            agent.agent_id(),
            running.container.container_id
        )
    );

    // Named and labelled like task containers, so recovery and orphan clean-up see it.
    let inspect = scope.docker.inspect_container(&name, None).await.unwrap();
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels["capstan.agent_id"], agent.agent_id());
    assert_eq!(labels["capstan.framework_id"], FRAMEWORK);
    assert_eq!(labels["capstan.executor_id"], "E1");
    assert_eq!(
        labels["capstan.container_id"],
        running.container.container_id
    );
    let host = inspect.host_config.unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    assert_eq!(
        host.binds.unwrap(),
        vec![format!(
            "{}:/mnt/mesos/sandbox",
            running.container.sandbox.display()
        )]
    );
    let env = sandbox_file(&running, "executor.env");
    for needle in [
        "MESOS_EXECUTOR_ID=E1".to_owned(),
        format!("MESOS_FRAMEWORK_ID={FRAMEWORK}"),
        format!("MESOS_AGENT_ENDPOINT={}", agent.local_addr()),
        "MESOS_SANDBOX=/mnt/mesos/sandbox".to_owned(),
        "MESOS_DIRECTORY=/mnt/mesos/sandbox".to_owned(),
        format!("MESOS_CONTAINER_NAME={name}"),
        "MESOS_CHECKPOINT=1".to_owned(),
    ] {
        assert!(
            env.lines().any(|l| l == needle),
            "{needle} missing from:\n{env}"
        );
    }
    assert!(!env.contains("MESOS_TASK_ID="), "{env}");

    // Listed once in /containers, under the executor.
    let containers: Value = reqwest::get(format!("{base}/containers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = containers.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{containers}");
    assert_eq!(listed[0]["container_name"], name.as_str());
    assert_eq!(listed[0]["executor_id"], "E1");
    assert_eq!(listed[0]["executor_name"], "sh executor");

    // Killing the task: the executor reports it killed, gets SHUTDOWN, exits, and its
    // container is removed.
    agent.tasks().kill("docker-exec-task", None).await.unwrap();
    let killed = wait_state(&agent, "docker-exec-task", TaskState::TaskKilled).await;
    assert_eq!(
        killed.statuses.last().unwrap().source(),
        capstan_proto::mesos::v1::task_status::Source::Executor
    );
    scope.assert_no_containers_left().await;
    wait_until("executor log copied", DEADLINE, async || {
        sandbox_file(&killed, "stdout").contains("executor done")
    })
    .await
    .unwrap();
    agent.shutdown().await;
}

#[tokio::test]
async fn a_docker_executor_whose_image_is_missing_fails_its_task_and_leaves_nothing() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let t = task(
        "no-image-task",
        json!({"executor": {"executor_id": {"value": "E2"}, "framework_id": {"value": FRAMEWORK},
                            "command": {"value": "sleep 600"},
                            "container": {"type": "DOCKER",
                                          "docker": {"image": "capstan/no-such-image-here"}}}}),
    );
    agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    let failed = wait_state(&agent, "no-image-task", TaskState::TaskFailed).await;
    assert_eq!(
        failed.statuses.last().unwrap().reason(),
        capstan_proto::mesos::v1::task_status::Reason::ContainerLaunchFailed
    );
    assert!(
        last_message(&failed).contains("capstan/no-such-image-here"),
        "{}",
        last_message(&failed)
    );
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}
