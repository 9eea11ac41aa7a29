//! Custom executors across agent restarts: the test plays the executor over HTTP (its
//! process or container only sleeps), restarts the agent in process with the same work dir,
//! and checks what Mesos does: a live executor is kept until it SUBSCRIBEs again, one that
//! died fails its tasks, one that never comes back is destroyed.

use std::time::Duration;

use capstan_agent::{Config, ServerHandle, TaskView};
use capstan_proto::mesos::v1::task_status::Reason;
use capstan_proto::mesos::v1::{TaskInfo, TaskState};
use capstan_testkit::wait_until;
use serde_json::{Value, json};

use super::executor_api::{EventStream, call, subscribe, uuid_b64};
use super::harness::*;

fn base(agent: &ServerHandle) -> String {
    format!("http://{}", agent.local_addr())
}

fn ids(executor_id: &str) -> Value {
    json!({"framework_id": {"value": FRAMEWORK}, "executor_id": {"value": executor_id}})
}

fn with_ids(executor_id: &str, mut body: Value) -> Value {
    for (k, v) in ids(executor_id).as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn status(task_id: &str, state: &str, uuid: &str) -> Value {
    json!({"task_id": {"value": task_id}, "state": state, "uuid": uuid, "source": "SOURCE_EXECUTOR"})
}

/// Posts an UPDATE and expects 202; returns the status uuid (raw, base64).
async fn report(agent: &ServerHandle, executor_id: &str, task_id: &str, state: &str) -> String {
    let (_, b64) = uuid_b64();
    let body = with_ids(
        executor_id,
        json!({"type": "UPDATE", "update": {"status": status(task_id, state, &b64)}}),
    );
    assert_eq!(call(&base(agent), body).await.status(), 202);
    b64
}

async fn subscribe_as(agent: &ServerHandle, executor_id: &str, sub: Value) -> EventStream {
    subscribe(
        &base(agent),
        with_ids(executor_id, json!({"type": "SUBSCRIBE", "subscribe": sub})),
    )
    .await
}

/// A task for executor `executor_id`, which sleeps as a process (or in `image`).
fn exec_task(id: &str, executor_id: &str, image: Option<&str>) -> TaskInfo {
    let mut executor = json!({"executor_id": {"value": executor_id},
                              "framework_id": {"value": FRAMEWORK},
                              "command": {"value": "exec sleep 600"}});
    if let Some(image) = image {
        executor["container"] = json!({"type": "DOCKER", "docker": {"image": image}});
    }
    task(id, json!({"executor": executor}))
}

/// Launches the first task, waits for the executor's pid, subscribes and reports RUNNING.
async fn start_running(
    agent: &ServerHandle,
    task_id: &str,
    executor_id: &str,
    image: Option<&str>,
) -> (EventStream, u32) {
    agent
        .tasks()
        .launch(FRAMEWORK, exec_task(task_id, executor_id, image))
        .await
        .unwrap();
    let pid = wait_until("executor pid known", DEADLINE, async || {
        agent.tasks().snapshot().task(task_id)?.container.pid
    })
    .await
    .unwrap();
    let mut events = subscribe_as(agent, executor_id, json!({})).await;
    assert_eq!(events.next().await["type"], "SUBSCRIBED");
    let launch = events.next().await;
    assert_eq!(launch["launch"]["task"]["task_id"]["value"], task_id);
    report(agent, executor_id, task_id, "TASK_RUNNING").await;
    wait_state(agent, task_id, TaskState::TaskRunning).await;
    (events, pid)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

async fn wait_gone(pid: u32) {
    wait_until("executor process gone", DEADLINE, async || !alive(pid))
        .await
        .unwrap();
}

fn last_reason(t: &TaskView) -> Option<Reason> {
    t.statuses.last().map(|s| s.reason())
}

fn config(scope: &Scope, reregistration: Duration) -> Config {
    Config {
        executor_reregistration_timeout: reregistration,
        ..scope.config()
    }
}

#[tokio::test]
async fn agent_restart_keeps_a_live_process_executor_that_subscribes_again() {
    let scope = Scope::new().await;
    let cfg = config(&scope, Duration::from_secs(60));
    let agent = scope.start_with(cfg.clone()).await;
    let (mut events, pid) = start_running(&agent, "t1", "E1", None).await;
    // Two more tasks reach the executor; it will forget t2 and remember t3.
    for id in ["t2", "t3"] {
        agent
            .tasks()
            .launch(FRAMEWORK, exec_task(id, "E1", None))
            .await
            .unwrap();
        assert_eq!(
            events.next().await["launch"]["task"]["task_id"]["value"],
            id
        );
    }
    let t3_info = capstan_proto::to_json(&agent.tasks().snapshot().tasks["t3"].info);
    agent.shutdown().await;
    drop(events);
    assert!(alive(pid), "the executor outlives the agent");

    let agent = scope.start_with(cfg).await;
    let t1 = agent.tasks().snapshot().tasks["t1"].clone();
    assert_eq!(t1.state, TaskState::TaskRunning);
    assert_eq!(t1.container.pid, Some(pid));
    // Until it subscribes again, its calls are refused.
    let (_, b64) = uuid_b64();
    let early = with_ids(
        "E1",
        json!({"type": "UPDATE", "update": {"status": status("t1", "TASK_RUNNING", &b64)}}),
    );
    assert_eq!(call(&base(&agent), early).await.status(), 403);

    // It re-subscribes with what it has no acknowledgement for: t3 (no update yet), the
    // RUNNING the agent already has, and one the agent never got.
    let known = t1.statuses.last().unwrap().uuid.clone().unwrap();
    let known = base64_of(&known);
    let (new_uuid, new_b64) = uuid_b64();
    let mut events = subscribe_as(
        &agent,
        "E1",
        json!({"unacknowledged_tasks": [t3_info],
               "unacknowledged_updates": [
                   {"status": status("t1", "TASK_RUNNING", &known)},
                   {"status": status("t1", "TASK_RUNNING", &new_b64)}]}),
    )
    .await;
    let subscribed = events.next().await;
    assert_eq!(subscribed["type"], "SUBSCRIBED");
    assert_eq!(
        subscribed["subscribed"]["container_id"]["value"],
        t1.container.container_id.as_str()
    );
    let t2 = wait_state(&agent, "t2", TaskState::TaskLost).await;
    assert_eq!(last_reason(&t2), Some(Reason::AgentRestarted));
    let snap = agent.tasks().snapshot();
    assert_eq!(snap.tasks["t3"].state, TaskState::TaskStaging);
    let t1 = &snap.tasks["t1"];
    assert_eq!(t1.state, TaskState::TaskRunning);
    let uuids: Vec<&[u8]> = t1
        .statuses
        .iter()
        .filter_map(|s| s.uuid.as_deref())
        .collect();
    assert_eq!(
        uuids.iter().filter(|u| **u == new_uuid.as_slice()).count(),
        1,
        "the unacknowledged update is applied once"
    );
    assert_eq!(uuids.len(), 2, "the known update is not applied twice");

    // The executor works as before: its tasks finish, it is shut down, its process goes.
    report(&agent, "E1", "t1", "TASK_FINISHED").await;
    report(&agent, "E1", "t3", "TASK_FINISHED").await;
    wait_state(&agent, "t3", TaskState::TaskFinished).await;
    assert_eq!(events.next().await["type"], "SHUTDOWN");
    wait_gone(pid).await;
    agent.shutdown().await;
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_process_executor_that_died_while_the_agent_was_down_fails_its_task() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let (events, pid) = start_running(&agent, "doomed", "E1", None).await;
    agent.shutdown().await;
    drop(events);
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_gone(pid).await;

    let agent = scope.start().await;
    let doomed = wait_state(&agent, "doomed", TaskState::TaskFailed).await;
    assert_eq!(last_reason(&doomed), Some(Reason::ExecutorTerminated));
    // Its executor is gone for good: subscribing is refused.
    let r = call(
        &base(&agent),
        with_ids("E1", json!({"type": "SUBSCRIBE", "subscribe": {}})),
    )
    .await;
    assert_eq!(r.status(), 400);
    agent.shutdown().await;
}

#[tokio::test]
async fn an_executor_that_does_not_subscribe_again_is_killed_and_its_task_fails() {
    let scope = Scope::new().await;
    let cfg = config(&scope, Duration::from_secs(2));
    let agent = scope.start_with(cfg.clone()).await;
    let (events, pid) = start_running(&agent, "silent", "E1", None).await;
    agent.shutdown().await;
    drop(events);

    let agent = scope.start_with(cfg).await;
    let silent = wait_state(&agent, "silent", TaskState::TaskFailed).await;
    assert_eq!(
        last_reason(&silent),
        Some(Reason::ExecutorReregistrationTimeout)
    );
    wait_gone(pid).await;
    agent.shutdown().await;
}

#[tokio::test]
async fn agent_restart_keeps_a_docker_executor_and_removes_its_container_when_done() {
    let scope = Scope::new().await;
    let cfg = config(&scope, Duration::from_secs(60));
    let agent = scope.start_with(cfg.clone()).await;
    let (events, _) = start_running(&agent, "boxed", "E1", Some("capstan/busybox")).await;
    let name = agent.tasks().snapshot().tasks["boxed"]
        .container
        .name
        .clone();
    agent.shutdown().await;
    drop(events);

    let agent = scope.start_with(cfg).await;
    let mut events = subscribe_as(&agent, "E1", json!({})).await;
    assert_eq!(events.next().await["type"], "SUBSCRIBED");
    // The container was neither destroyed as an orphan nor duplicated.
    let containers = scope.containers().await;
    assert_eq!(containers, vec![format!("/{name}")]);
    assert_eq!(
        agent.tasks().snapshot().tasks["boxed"].state,
        TaskState::TaskRunning
    );
    report(&agent, "E1", "boxed", "TASK_FINISHED").await;
    wait_state(&agent, "boxed", TaskState::TaskFinished).await;
    assert_eq!(events.next().await["type"], "SHUTDOWN");
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn a_docker_executor_that_does_not_subscribe_again_leaves_no_container() {
    let scope = Scope::new().await;
    let cfg = config(&scope, Duration::from_secs(2));
    let agent = scope.start_with(cfg.clone()).await;
    let (events, _) = start_running(&agent, "boxed", "E1", Some("capstan/busybox")).await;
    agent.shutdown().await;
    drop(events);
    assert_eq!(scope.containers().await.len(), 1);

    let agent = scope.start_with(cfg).await;
    let boxed = wait_state(&agent, "boxed", TaskState::TaskFailed).await;
    assert_eq!(
        last_reason(&boxed),
        Some(Reason::ExecutorReregistrationTimeout)
    );
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

/// An unmodified pymesos executor (MESOS_CHECKPOINT=1) reconnects on its own after the
/// agent restarted on the same address, and a kill asked for meanwhile reaches it.
#[tokio::test]
async fn a_pymesos_executor_subscribes_again_after_an_agent_restart_and_still_obeys_kills() {
    let python = capstan_testkit::pymesos_python()
        .await
        .expect("pymesos virtualenv");
    let scope = Scope::new().await;
    let mut cfg = config(&scope, Duration::from_secs(60));
    let agent = scope.start_with(cfg.clone()).await;
    // The same port after the restart: the executor's MESOS_AGENT_ENDPOINT stays valid.
    cfg.listen = agent.local_addr();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pymesos/executor.py");
    let command = format!("exec {} {}", python.display(), script.display());
    let t = task(
        "py-task",
        json!({"executor": {"executor_id": {"value": "PY"}, "framework_id": {"value": FRAMEWORK},
                            "command": {"value": command}}}),
    );
    agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    let running = wait_state(&agent, "py-task", TaskState::TaskRunning).await;
    let pid = running.container.pid.expect("executor pid");
    agent.shutdown().await;

    let agent = scope.start_with(cfg).await;
    // Killed while it is still reconnecting: the KILL waits for its SUBSCRIBE.
    agent.tasks().kill("py-task", None).await.unwrap();
    let killed = wait_state(&agent, "py-task", TaskState::TaskKilled).await;
    assert_eq!(
        killed.statuses.last().unwrap().source(),
        capstan_proto::mesos::v1::task_status::Source::Executor
    );
    assert!(
        sandbox_file(&killed, "stderr").contains("reregistered with agent"),
        "{}",
        sandbox_file(&killed, "stderr")
    );
    wait_gone(pid).await;
    agent.shutdown().await;
}
