use std::time::Duration;

use capstan_proto::mesos::v1::TaskState;
use capstan_testkit::wait_until;
use serde_json::json;

use super::harness::*;

#[tokio::test]
async fn command_tasks_without_a_container_run_as_processes_in_their_sandbox() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let shell = task(
        "proc",
        json!({"command": {"value": "pwd; echo \"$MESOS_TASK_ID $GREETING\"; echo err >&2",
                           "environment": {"variables": [{"name": "GREETING", "value": "hi"}]}}}),
    );
    let argv = task(
        "argv",
        json!({"command": {"shell": false, "value": "/bin/echo", "arguments": ["echo", "a  b"]}}),
    );
    let failing = task("proc-fail", json!({"command": {"value": "exit 7"}}));
    let long = task(
        "proc-long",
        json!({"command": {"value": "sleep 600 & sleep 600; wait"}}),
    );
    for t in [shell, argv, failing, long] {
        agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    }
    let done = wait_state(&agent, "proc", TaskState::TaskFinished).await;
    let sandbox = std::fs::canonicalize(&done.container.sandbox).unwrap();
    assert_eq!(
        sandbox_file(&done, "stdout"),
        format!("{}\nproc hi\n", sandbox.display())
    );
    assert_eq!(sandbox_file(&done, "stderr"), "err\n");
    let argv = wait_state(&agent, "argv", TaskState::TaskFinished).await;
    assert_eq!(sandbox_file(&argv, "stdout"), "a  b\n");
    let failed = wait_state(&agent, "proc-fail", TaskState::TaskFailed).await;
    assert!(last_message(&failed).contains("status 7"));

    let long = wait_state(&agent, "proc-long", TaskState::TaskRunning).await;
    let pid = long.container.pid.expect("pid");
    agent
        .tasks()
        .kill("proc-long", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    wait_state(&agent, "proc-long", TaskState::TaskKilled).await;
    // The whole process group is gone, the background sleep included.
    wait_until("process group gone", DEADLINE, async || {
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

#[tokio::test]
async fn process_tasks_survive_an_agent_restart_and_can_be_killed_afterwards() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    agent
        .tasks()
        .launch(
            FRAMEWORK,
            task("proc-keep", json!({"command": {"value": "sleep 600"}})),
        )
        .await
        .unwrap();
    let before = wait_state(&agent, "proc-keep", TaskState::TaskRunning).await;
    let pid = before.container.pid.expect("pid");
    agent.shutdown().await;

    let agent = scope.start().await;
    wait_until("reattached", DEADLINE, async || {
        agent
            .tasks()
            .snapshot()
            .tasks
            .get("proc-keep")
            .is_some_and(|t| t.launched.is_some())
    })
    .await
    .unwrap();
    let after = agent.tasks().snapshot().tasks["proc-keep"].clone();
    assert_eq!(after.state, TaskState::TaskRunning);
    assert_eq!(after.container.pid, Some(pid));
    agent
        .tasks()
        .kill("proc-keep", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    wait_state(&agent, "proc-keep", TaskState::TaskKilled).await;
    wait_until("process gone", DEADLINE, async || {
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
