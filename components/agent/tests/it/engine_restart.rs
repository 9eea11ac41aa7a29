//! The Docker engine going away and coming back, simulated by a Unix-socket proxy in front
//! of the real engine that the test can take down (closing every connection) and bring back.

use std::path::PathBuf;
use std::time::Duration;

use capstan_proto::mesos::v1::{TaskState, task_status::Reason};
use capstan_testkit::wait_until;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use super::harness::*;

struct EngineProxy {
    path: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl EngineProxy {
    fn new(path: PathBuf) -> Self {
        let mut p = EngineProxy { path, task: None };
        p.up();
        p
    }

    fn up(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("bind proxy socket");
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        }));
    }

    /// Every open connection is cut and new ones are refused.
    fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.down();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_engine_is_down_the_agent_is_unhealthy_and_running_tasks_survive() {
    let scope = Scope::new().await;
    let mut proxy = EngineProxy::new(scope.work_dir().join("engine.sock"));
    let mut config = scope.config();
    config.docker.host = Some(format!("unix://{}", proxy.path.display()));
    let agent = scope.start_with(config).await;
    let health = format!("http://{}/health", agent.local_addr());
    launch_docker(
        &agent,
        "steady",
        "capstan/busybox",
        Some("echo before; sleep 600"),
    )
    .await;
    let t = wait_state(&agent, "steady", TaskState::TaskRunning).await;
    wait_until("first output", DEADLINE, async || {
        sandbox_file(&t, "stdout") == "before\n"
    })
    .await
    .unwrap();

    proxy.down();
    wait_until("unhealthy", DEADLINE, async || {
        let r = reqwest::get(&health).await.ok()?;
        (r.status() == 503 && !agent.docker_up()).then_some(())
    })
    .await
    .unwrap();
    // New launches fail with a clear reason; the running task is left alone.
    launch_docker(&agent, "during", "capstan/busybox", Some("true")).await;
    let during = wait_state(&agent, "during", TaskState::TaskFailed).await;
    assert_eq!(
        during.statuses.last().unwrap().reason,
        Some(Reason::ContainerLaunchFailed as i32)
    );
    assert!(
        last_message(&during).contains("unavailable"),
        "{}",
        last_message(&during)
    );
    assert_eq!(
        agent.tasks().snapshot().tasks["steady"].state,
        TaskState::TaskRunning
    );

    proxy.up();
    wait_until("healthy again", DEADLINE, async || {
        let r = reqwest::get(&health).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await
    .unwrap();
    // The agent carries on: the log follower is back, and kills work.
    wait_until("logs copied again", DEADLINE, async || {
        sandbox_file(&t, "stdout") == "before\n"
    })
    .await
    .unwrap();
    assert_eq!(
        agent.tasks().snapshot().tasks["steady"].state,
        TaskState::TaskRunning
    );
    agent
        .tasks()
        .kill("steady", Some(Duration::ZERO))
        .await
        .unwrap();
    wait_state(&agent, "steady", TaskState::TaskKilled).await;
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}
