use std::collections::HashMap;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, KillContainerOptions};
use capstan_proto::mesos::v1::TaskState;
use capstan_testkit::wait_until;

use super::harness::*;

#[tokio::test]
async fn agent_restart_reattaches_to_ten_running_containers_and_leaks_none() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let agent_id = agent.agent_id();
    let ids: Vec<String> = (0..10).map(|i| format!("sleeper-{i}")).collect();
    for id in &ids {
        let cmd = format!("echo {id} up; sleep 600");
        launch_docker(&agent, id, "capstan/busybox", Some(&cmd)).await;
    }
    let mut before = HashMap::new();
    for id in &ids {
        let v = wait_state(&agent, id, TaskState::TaskRunning).await;
        before.insert(id.clone(), v.container.container_id.clone());
    }
    // Nothing was acknowledged: the updates are still pending.
    let pending = agent.tasks().unacknowledged().await.unwrap().len();
    assert_eq!(pending, 20, "STARTING and RUNNING for each task");
    agent.shutdown().await;
    assert_eq!(
        scope.containers().await.len(),
        10,
        "containers outlive the agent"
    );

    let agent = scope.start().await;
    assert_eq!(agent.agent_id(), agent_id, "the agent id is checkpointed");
    let mut resent = agent.tasks().subscribe();
    for id in &ids {
        let v = wait_state(&agent, id, TaskState::TaskRunning).await;
        assert_eq!(
            before[id], v.container.container_id,
            "same container for {id}"
        );
        // Reattached: the log follower is back and the sandbox log is complete.
        wait_until("log copied again", DEADLINE, async || {
            sandbox_file(&v, "stdout") == format!("{id} up\n")
        })
        .await
        .unwrap();
        wait_until("reattached", DEADLINE, async || {
            agent
                .tasks()
                .snapshot()
                .tasks
                .get(id.as_str())
                .is_some_and(|t| t.launched.is_some())
        })
        .await
        .unwrap();
    }
    // Unacknowledged updates are sent again (the retry interval is 1 s in tests).
    let again = tokio::time::timeout(DEADLINE, resent.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.framework_id, FRAMEWORK);
    let all = agent.tasks().unacknowledged().await.unwrap();
    assert_eq!(all.len(), 20);
    // Acknowledging removes them.
    for u in &all {
        agent
            .tasks()
            .acknowledge(&u.status.task_id.value, u.status.uuid.as_deref().unwrap())
            .await
            .unwrap();
    }
    assert!(agent.tasks().unacknowledged().await.unwrap().is_empty());
    assert_eq!(
        scope.containers().await.len(),
        10,
        "no duplicate containers"
    );

    for id in &ids {
        agent.tasks().kill(id, Some(Duration::ZERO)).await.unwrap();
    }
    for id in &ids {
        wait_state(&agent, id, TaskState::TaskKilled).await;
    }
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn agent_restart_reports_containers_that_ended_while_it_was_down_and_destroys_orphans() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let agent_id = agent.agent_id();
    launch_docker(&agent, "doomed", "capstan/busybox", Some("sleep 600")).await;
    launch_docker(&agent, "survivor", "capstan/busybox", Some("sleep 600")).await;
    let doomed = wait_state(&agent, "doomed", TaskState::TaskRunning).await;
    wait_state(&agent, "survivor", TaskState::TaskRunning).await;
    agent.shutdown().await;

    // While the agent is down: its container dies, and a stranger with its prefix appears.
    scope
        .docker
        .kill_container(
            &doomed.container.name,
            Some(KillContainerOptions {
                signal: "SIGKILL".into(),
            }),
        )
        .await
        .unwrap();
    let orphan = format!("mesos-{agent_id}.orphan-{}", std::process::id());
    let mut labels = scope.cleanup.labels();
    labels.insert("capstan.agent_id".into(), agent_id.clone());
    scope
        .docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(orphan.clone()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some("capstan/busybox".into()),
                cmd: Some(vec!["sleep".into(), "600".into()]),
                labels: Some(labels),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    scope.docker.start_container(&orphan, None).await.unwrap();

    let agent = scope.start().await;
    let doomed = wait_state(&agent, "doomed", TaskState::TaskFailed).await;
    assert!(
        last_message(&doomed).contains("137"),
        "{}",
        last_message(&doomed)
    );
    wait_until("orphan destroyed", DEADLINE, async || {
        !scope
            .containers()
            .await
            .iter()
            .any(|n| n.contains("orphan"))
    })
    .await
    .unwrap();
    // The checkpointed survivor is untouched.
    assert_eq!(
        agent.tasks().snapshot().tasks["survivor"].state,
        TaskState::TaskRunning
    );
    assert_eq!(scope.containers().await.len(), 1);

    agent
        .tasks()
        .kill("survivor", Some(Duration::ZERO))
        .await
        .unwrap();
    wait_state(&agent, "survivor", TaskState::TaskKilled).await;
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}
