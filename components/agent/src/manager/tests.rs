//! The task manager against a scripted fake containerizer: no Docker, no child processes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_proto::mesos::v1::{
    CommandInfo, FrameworkId, FrameworkInfo, HealthCheck, TaskId, TaskInfo, TaskState, TaskStatus,
    framework_info, health_check, task_status,
};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Containerizers, ManagerConfig, StatusUpdate, TaskManager, TaskManagerHandle};
use crate::checkpoint::{
    self, Batch, Checkpoint, CheckpointError, CheckpointStore, FileStore, TaskRecord, decode_msg,
    encode_msg,
};
use crate::containerizer::fake::{FakeContainerizer, Script};

const DEADLINE: Duration = Duration::from_secs(10);

fn config(work_dir: &Path) -> ManagerConfig {
    ManagerConfig {
        work_dir: work_dir.to_path_buf(),
        hostname: "agent.test".into(),
        advertise_ip: [127, 0, 0, 1].into(),
        sandbox_mount: "/mnt/mesos/sandbox".into(),
        policy: Default::default(),
        pids_limit: 4096,
        cpu_quota: false,
        extra_labels: Default::default(),
        default_kill_grace: Duration::from_secs(1),
        status_update_retry: Duration::from_millis(100),
        executor_reregistration_timeout: Duration::from_secs(5),
        kill_orphans: false,
        agent_endpoint: ([127, 0, 0, 1], 5051).into(),
    }
}

struct Agent {
    tasks: TaskManagerHandle,
    join: JoinHandle<()>,
    shutdown: CancellationToken,
    _docker_up: watch::Sender<bool>,
}

impl Agent {
    async fn start(
        work_dir: &Path,
        fake: &Arc<FakeContainerizer>,
        store: Box<dyn CheckpointStore>,
    ) -> Agent {
        let (docker_up_tx, docker_up) = watch::channel(true);
        let shutdown = CancellationToken::new();
        let containerizers = Containerizers {
            docker: None,
            process: fake.clone(),
            engine: None,
        };
        let (tasks, join) = TaskManager::start_with(
            config(work_dir),
            containerizers,
            store,
            docker_up,
            shutdown.clone(),
        )
        .await
        .expect("manager starts");
        Agent {
            tasks,
            join,
            shutdown,
            _docker_up: docker_up_tx,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.join.await.expect("manager task ends cleanly");
    }
}

fn command_task(task_id: &str, command: &str) -> TaskInfo {
    TaskInfo {
        name: task_id.into(),
        task_id: TaskId {
            value: task_id.into(),
        },
        command: Some(CommandInfo {
            value: Some(command.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Polls `cond` until it holds or the deadline passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A subscription to status updates that skips resends of updates it has seen.
struct Updates {
    rx: broadcast::Receiver<StatusUpdate>,
    seen: HashSet<Option<Vec<u8>>>,
}

impl Updates {
    fn new(tasks: &TaskManagerHandle) -> Self {
        Updates {
            rx: tasks.subscribe(),
            seen: HashSet::new(),
        }
    }

    /// The next update of `task_id` not seen before.
    async fn next(&mut self, task_id: &str) -> TaskStatus {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let update = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no new update for {task_id}"))
                .expect("update stream open");
            if update.status.task_id.value == task_id
                && self.seen.insert(update.status.uuid.clone())
            {
                return update.status;
            }
        }
    }

    /// New updates of `task_id` up to and including a terminal one.
    async fn until_terminal(&mut self, task_id: &str) -> Vec<TaskStatus> {
        let mut out = Vec::new();
        loop {
            let status = self.next(task_id).await;
            let terminal = super::is_terminal(status.state());
            out.push(status);
            if terminal {
                return out;
            }
        }
    }

    /// Skips to the first new update of `task_id` in `state`.
    async fn wait_state(&mut self, task_id: &str, state: TaskState) -> TaskStatus {
        loop {
            let status = self.next(task_id).await;
            if status.state() == state {
                return status;
            }
        }
    }
}

fn states(statuses: &[TaskStatus]) -> Vec<TaskState> {
    statuses.iter().map(|s| s.state()).collect()
}

fn file_store(dir: &Path) -> Box<dyn CheckpointStore> {
    Box::new(FileStore::new(dir))
}

#[tokio::test]
async fn a_task_whose_container_fails_to_start_fails_with_the_launch_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script("broken", Script::FailToStart("exec format error".into()));
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    let mut rx = Updates::new(&agent.tasks);

    agent
        .tasks
        .launch("F", command_task("t1", "broken"))
        .await
        .unwrap();

    let statuses = rx.until_terminal("t1").await;
    assert_eq!(
        states(&statuses),
        [TaskState::TaskStarting, TaskState::TaskFailed]
    );
    let failed = statuses.last().unwrap();
    assert_eq!(
        failed.reason(),
        task_status::Reason::ContainerLaunchFailed,
        "{failed:?}"
    );
    assert!(failed.message().contains("exec format error"), "{failed:?}");
    agent.stop().await;
}

#[tokio::test]
async fn an_exit_code_of_zero_finishes_the_task_and_any_other_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script(
        "true",
        Script::Exit {
            run_for: Duration::ZERO,
            code: 0,
        },
    );
    fake.script(
        "false",
        Script::Exit {
            run_for: Duration::ZERO,
            code: 3,
        },
    );
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    let mut ok_rx = Updates::new(&agent.tasks);
    let mut bad_rx = Updates::new(&agent.tasks);

    agent
        .tasks
        .launch("F", command_task("ok", "true"))
        .await
        .unwrap();
    agent
        .tasks
        .launch("F", command_task("bad", "false"))
        .await
        .unwrap();

    let ok = ok_rx.until_terminal("ok").await;
    let finished = ok.last().unwrap();
    assert_eq!(finished.state(), TaskState::TaskFinished);
    assert!(finished.message().contains("status 0"), "{finished:?}");
    let bad = bad_rx.until_terminal("bad").await;
    let failed = bad.last().unwrap();
    assert_eq!(failed.state(), TaskState::TaskFailed);
    assert_eq!(failed.reason(), task_status::Reason::CommandExecutorFailed);
    assert!(failed.message().contains("status 3"), "{failed:?}");
    assert_eq!(fake.running(), 0, "ended containers are destroyed");
    agent.stop().await;
}

#[tokio::test]
async fn a_task_runs_for_its_time_then_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script(
        "work",
        Script::Exit {
            run_for: Duration::from_millis(300),
            code: 0,
        },
    );
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    let mut rx = Updates::new(&agent.tasks);

    agent
        .tasks
        .launch("F", command_task("w", "work"))
        .await
        .unwrap();
    let running = rx.wait_state("w", TaskState::TaskRunning).await;
    assert_eq!(running.source(), task_status::Source::Executor);
    assert!(
        running
            .container_status
            .as_ref()
            .is_some_and(|c| !c.network_infos.is_empty()),
        "a host-networked task reports the agent's address: {running:?}"
    );

    let rest = rx.until_terminal("w").await;
    assert_eq!(rest.last().unwrap().state(), TaskState::TaskFinished);
    let snap = agent.tasks.snapshot();
    let view = snap.task("w").unwrap();
    assert_eq!(
        states(&view.statuses),
        [
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFinished
        ]
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_killed_task_ends_killed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script("serve", Script::RunUntilKilled);
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    let mut rx = Updates::new(&agent.tasks);
    agent
        .tasks
        .launch("F", command_task("s", "serve"))
        .await
        .unwrap();
    rx.wait_state("s", TaskState::TaskRunning).await;

    agent.tasks.kill("s", Some(Duration::ZERO)).await.unwrap();

    let rest = rx.until_terminal("s").await;
    // No TASK_KILLING: the framework did not declare TASK_KILLING_STATE.
    assert_eq!(states(&rest), [TaskState::TaskKilled]);
    assert!(rest[0].message().contains("killed"), "{:?}", rest[0]);
    assert_eq!(fake.kills(), 1);
    // Killing it again, or a finished task, is a no-op; an unknown one is an error.
    agent.tasks.kill("s", None).await.unwrap();
    assert!(matches!(
        agent.tasks.kill("nope", None).await,
        Err(super::ManagerError::UnknownTask(_))
    ));
    agent.stop().await;
}

#[tokio::test]
async fn a_framework_with_task_killing_state_sees_task_killing_first() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script("serve", Script::RunUntilKilled);
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    let mut rx = Updates::new(&agent.tasks);
    let framework = FrameworkInfo {
        user: "root".into(),
        name: "f".into(),
        id: Some(FrameworkId { value: "F".into() }),
        capabilities: vec![framework_info::Capability {
            r#type: Some(framework_info::capability::Type::TaskKillingState as i32),
        }],
        ..Default::default()
    };
    agent
        .tasks
        .launch_with_framework(framework, command_task("s", "serve"))
        .await
        .unwrap();
    rx.wait_state("s", TaskState::TaskRunning).await;
    agent.tasks.kill("s", None).await.unwrap();
    assert_eq!(
        states(&rx.until_terminal("s").await),
        [TaskState::TaskKilling, TaskState::TaskKilled]
    );
    agent.stop().await;
}

#[tokio::test]
async fn invalid_tasks_are_refused_with_task_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    let no_command = TaskInfo {
        command: None,
        ..command_task("no-command", "")
    };
    let empty_shell = command_task("empty-shell", "");
    let cases = [
        (no_command, "neither a command nor a container"),
        (empty_shell, "Shell command has no value"),
    ];
    for (task, needle) in cases {
        let id = task.task_id.value.clone();
        let mut rx = Updates::new(&agent.tasks);
        agent.tasks.launch("F", task).await.unwrap();
        let statuses = rx.until_terminal(&id).await;
        assert_eq!(states(&statuses), [TaskState::TaskError], "{id}");
        assert_eq!(statuses[0].reason(), task_status::Reason::TaskInvalid);
        assert_eq!(statuses[0].source(), task_status::Source::Agent);
        assert!(statuses[0].message().contains(needle), "{statuses:?}");
    }
    assert_eq!(fake.running(), 0, "nothing was started");
    agent.stop().await;
}

#[tokio::test]
async fn a_second_live_task_with_the_same_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script("serve", Script::RunUntilKilled);
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    agent
        .tasks
        .launch("F", command_task("s", "serve"))
        .await
        .unwrap();
    assert!(matches!(
        agent.tasks.launch("F", command_task("s", "serve")).await,
        Err(super::ManagerError::DuplicateTask(_))
    ));
    agent.stop().await;
}

#[tokio::test]
async fn a_kill_of_an_unknown_task_is_answered_with_task_lost() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    let mut rx = Updates::new(&agent.tasks);
    agent.tasks.report_unknown("F", "ghost").await.unwrap();
    let statuses = rx.until_terminal("ghost").await;
    assert_eq!(states(&statuses), [TaskState::TaskLost]);
    assert_eq!(statuses[0].reason(), task_status::Reason::TaskUnknown);
    agent.stop().await;
}

#[tokio::test]
async fn an_acknowledged_terminal_task_is_completed_and_leaves_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script(
        "true",
        Script::Exit {
            run_for: Duration::ZERO,
            code: 0,
        },
    );
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    let mut rx = Updates::new(&agent.tasks);
    agent
        .tasks
        .launch("F", command_task("t", "true"))
        .await
        .unwrap();
    let statuses = rx.until_terminal("t").await;
    assert_eq!(
        checkpoint::load(dir.path()).unwrap().unwrap().tasks.len(),
        1,
        "an unacknowledged task is checkpointed"
    );

    for s in &statuses {
        agent
            .tasks
            .acknowledge("t", s.uuid.as_deref().unwrap())
            .await
            .unwrap();
    }

    let snap = agent.tasks.snapshot();
    assert!(snap.tasks.is_empty(), "{:?}", snap.tasks.keys());
    assert_eq!(snap.task("t").unwrap().state, TaskState::TaskFinished);
    assert!(agent.tasks.unacknowledged().await.unwrap().is_empty());
    eventually("the task's record to be removed", || {
        checkpoint::load(dir.path())
            .unwrap()
            .is_some_and(|cp| cp.tasks.is_empty())
    })
    .await;
    agent.stop().await;
}

/// A store that fails every write while `fail` is set.
struct FlakyStore {
    inner: FileStore,
    fail: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
}

impl CheckpointStore for FlakyStore {
    fn load(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        self.inner.load()
    }

    fn write(&mut self, batch: &Batch) -> Result<(), CheckpointError> {
        if self.fail.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(CheckpointError::Write {
                path: "injected".into(),
                source: std::io::Error::other("no space left on device"),
            });
        }
        self.inner.write(batch)
    }
}

#[tokio::test]
async fn a_failed_checkpoint_write_publishes_no_update_until_a_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script(
        "true",
        Script::Exit {
            run_for: Duration::ZERO,
            code: 0,
        },
    );
    let fail = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let store = FlakyStore {
        inner: FileStore::new(dir.path()),
        fail: fail.clone(),
        failed: failed.clone(),
    };
    let agent = Agent::start(dir.path(), &fake, Box::new(store)).await;
    eventually("the first checkpoint", || {
        checkpoint::checkpoint_path(dir.path()).exists()
    })
    .await;
    let mut rx = Updates::new(&agent.tasks);
    fail.store(true, Ordering::SeqCst);

    agent
        .tasks
        .launch("F", command_task("t", "true"))
        .await
        .unwrap();

    // The task runs its course in memory, and the write is retried, failing again.
    eventually("the task to end and a retry to fail", || {
        let snap = agent.tasks.snapshot();
        snap.task("t")
            .is_some_and(|t| t.state == TaskState::TaskFinished)
            && snap.checkpoint_failing
            && failed.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(
        matches!(rx.rx.try_recv(), Err(broadcast::error::TryRecvError::Empty)),
        "no update may be published before its checkpoint is written"
    );
    assert!(
        agent.tasks.deliverable().await.unwrap().is_empty(),
        "the master link is offered nothing that is not durable"
    );
    assert_eq!(
        agent.tasks.unacknowledged().await.unwrap().len(),
        3,
        "the held updates are known, not lost"
    );
    assert!(
        checkpoint::load(dir.path())
            .unwrap()
            .unwrap()
            .tasks
            .is_empty(),
        "nothing of the task reached the disk"
    );

    fail.store(false, Ordering::SeqCst);

    let statuses = rx.until_terminal("t").await;
    assert_eq!(
        states(&statuses),
        [
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFinished
        ],
        "held updates are released in order"
    );
    let on_disk = checkpoint::load(dir.path()).unwrap().unwrap();
    let uuids: Vec<_> = on_disk.tasks[0]
        .unacknowledged
        .iter()
        .filter_map(|s| decode_msg::<TaskStatus>(s))
        .map(|s| s.uuid)
        .collect();
    assert_eq!(
        uuids,
        statuses.iter().map(|s| s.uuid.clone()).collect::<Vec<_>>()
    );
    eventually("the manager to be healthy again", || {
        !agent.tasks.snapshot().checkpoint_failing
    })
    .await;
    agent.stop().await;
}

/// A store that remembers which status uuids it made durable.
struct RecordingStore {
    inner: FileStore,
    durable: Arc<Mutex<HashSet<Vec<u8>>>>,
}

impl CheckpointStore for RecordingStore {
    fn load(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        self.inner.load()
    }

    fn write(&mut self, batch: &Batch) -> Result<(), CheckpointError> {
        self.inner.write(batch)?;
        let mut durable = self.durable.lock().unwrap();
        for record in batch.tasks.iter().filter_map(|(_, r)| r.as_ref()) {
            for s in record
                .unacknowledged
                .iter()
                .filter_map(|s| decode_msg::<TaskStatus>(s))
            {
                durable.insert(s.uuid.unwrap_or_default());
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn every_update_is_durable_before_it_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script(
        "true",
        Script::Exit {
            run_for: Duration::ZERO,
            code: 0,
        },
    );
    let durable = Arc::new(Mutex::new(HashSet::new()));
    let store = RecordingStore {
        inner: FileStore::new(dir.path()),
        durable: durable.clone(),
    };
    let agent = Agent::start(dir.path(), &fake, Box::new(store)).await;
    let mut rx = Updates::new(&agent.tasks);
    let ids: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    for id in &ids {
        agent
            .tasks
            .launch("F", command_task(id, "true"))
            .await
            .unwrap();
    }
    let mut finished = HashSet::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while finished.len() < ids.len() {
        let update = tokio::time::timeout_at(deadline, rx.rx.recv())
            .await
            .expect("every task finishes")
            .unwrap();
        let uuid = update.status.uuid.clone().unwrap();
        assert!(
            durable.lock().unwrap().contains(&uuid),
            "{update:?} was published before it was durable"
        );
        if update.status.state() == TaskState::TaskFinished {
            finished.insert(update.status.task_id.value);
        }
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_restarted_manager_resends_unacknowledged_updates_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script("serve", Script::RunUntilKilled);
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    let agent_id = agent.tasks.snapshot().agent_id.clone();
    let mut rx = Updates::new(&agent.tasks);
    agent
        .tasks
        .launch("F", command_task("s", "serve"))
        .await
        .unwrap();
    let starting = rx.wait_state("s", TaskState::TaskStarting).await;
    let running = rx.wait_state("s", TaskState::TaskRunning).await;
    agent
        .tasks
        .acknowledge("s", starting.uuid.as_deref().unwrap())
        .await
        .unwrap();
    agent.stop().await;

    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    assert_eq!(agent.tasks.snapshot().agent_id, agent_id);
    let pending = agent.tasks.deliverable().await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|u| u.status.uuid.clone())
            .collect::<Vec<_>>(),
        vec![running.uuid.clone()],
        "only the unacknowledged update is pending: {pending:?}"
    );
    assert_eq!(pending[0].framework_id, "F");
    let mut rx = Updates::new(&agent.tasks);
    let resent = rx.wait_state("s", TaskState::TaskRunning).await;
    assert_eq!(resent.uuid, running.uuid, "the same update is sent again");

    // The recovered task is reattached: it runs, and a kill ends it.
    assert_eq!(
        agent.tasks.snapshot().task("s").unwrap().state,
        TaskState::TaskRunning
    );
    agent.tasks.kill("s", Some(Duration::ZERO)).await.unwrap();
    assert_eq!(
        rx.until_terminal("s").await.last().unwrap().state(),
        TaskState::TaskKilled
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_task_whose_container_vanished_during_the_restart_fails() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script("serve", Script::RunUntilKilled);
    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;
    let mut rx = Updates::new(&agent.tasks);
    agent
        .tasks
        .launch("F", command_task("s", "serve"))
        .await
        .unwrap();
    rx.wait_state("s", TaskState::TaskRunning).await;
    agent.stop().await;

    let gone = Arc::new(FakeContainerizer::new());
    let agent = Agent::start(dir.path(), &gone, file_store(dir.path())).await;
    let mut rx = Updates::new(&agent.tasks);
    let failed = rx.wait_state("s", TaskState::TaskFailed).await;
    assert_eq!(failed.reason(), task_status::Reason::ExecutorTerminated);
    agent.stop().await;
}

#[tokio::test]
async fn an_agent_upgraded_from_an_unversioned_checkpoint_recovers_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.adopt("c-1");
    let info = command_task("old", "serve");
    let running = TaskStatus {
        task_id: info.task_id.clone(),
        state: TaskState::TaskRunning as i32,
        uuid: Some(vec![7; 16]),
        ..Default::default()
    };
    let legacy = Checkpoint {
        agent_id: "OLD-S0".into(),
        registered: true,
        tasks: vec![TaskRecord {
            framework_id: "F".into(),
            task_info: encode_msg(&info),
            executor_id: "old".into(),
            container_id: "c-1".into(),
            container_name: String::new(),
            sandbox: dir.path().join("sandbox"),
            docker: false,
            custom_executor: false,
            pid: None,
            state: TaskState::TaskRunning as i32,
            statuses: vec![encode_msg(&running)],
            unacknowledged: vec![encode_msg(&running)],
        }],
        executors: Vec::new(),
    };
    std::fs::create_dir_all(dir.path().join("meta")).unwrap();
    std::fs::write(
        checkpoint::checkpoint_path(dir.path()),
        serde_json::to_vec_pretty(&legacy).unwrap(),
    )
    .unwrap();

    let agent = Agent::start(dir.path(), &fake, file_store(dir.path())).await;

    assert_eq!(agent.tasks.snapshot().agent_id, "OLD-S0");
    let pending = agent.tasks.unacknowledged().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status.uuid, running.uuid);
    let agent_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(checkpoint::checkpoint_path(dir.path())).unwrap())
            .unwrap();
    assert_eq!(agent_file["version"], checkpoint::FORMAT_VERSION);
    assert!(dir.path().join("meta/tasks/old.json").exists());
    let mut rx = Updates::new(&agent.tasks);
    agent.tasks.kill("old", Some(Duration::ZERO)).await.unwrap();
    assert_eq!(
        rx.until_terminal("old").await.last().unwrap().state(),
        TaskState::TaskKilled,
        "the recovered task was reattached"
    );
    agent.stop().await;
}

/// A store that counts the batches that changed something.
struct CountingStore {
    inner: FileStore,
    writes: Arc<AtomicUsize>,
}

impl CheckpointStore for CountingStore {
    fn load(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        self.inner.load()
    }

    fn write(&mut self, batch: &Batch) -> Result<(), CheckpointError> {
        if !batch.is_empty() {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.write(batch)
    }
}

#[tokio::test]
async fn health_check_results_that_change_nothing_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeContainerizer::new());
    fake.script("serve", Script::RunUntilKilled);
    let writes = Arc::new(AtomicUsize::new(0));
    let store = CountingStore {
        inner: FileStore::new(dir.path()),
        writes: writes.clone(),
    };
    let agent = Agent::start(dir.path(), &fake, Box::new(store)).await;
    let mut rx = Updates::new(&agent.tasks);
    let task = TaskInfo {
        health_check: Some(HealthCheck {
            r#type: Some(health_check::Type::Command as i32),
            command: Some(CommandInfo {
                value: Some("check".into()),
                ..Default::default()
            }),
            interval_seconds: Some(0.1),
            delay_seconds: Some(0.0),
            ..Default::default()
        }),
        ..command_task("h", "serve")
    };
    agent.tasks.launch("F", task).await.unwrap();
    let healthy = rx.next("h").await;
    let healthy = if healthy.healthy.is_some() {
        healthy
    } else {
        loop {
            let s = rx.next("h").await;
            if s.healthy.is_some() {
                break s;
            }
        }
    };
    assert_eq!(healthy.healthy, Some(true));
    assert_eq!(
        healthy.reason(),
        task_status::Reason::TaskHealthCheckStatusUpdated
    );

    let (before, checks) = (writes.load(Ordering::SeqCst), fake.execs());
    eventually("five more health checks", || fake.execs() >= checks + 5).await;
    // Let the manager handle the results of those checks.
    let _ = agent.tasks.unacknowledged().await.unwrap();
    assert_eq!(
        writes.load(Ordering::SeqCst),
        before,
        "an unchanged result rewrites no record"
    );
    agent.stop().await;
}
