//! The task manager: the one task that owns the agent's task state and its checkpoint.
//!
//! Callers (HTTP, master link, tests) talk to it through a [`TaskManagerHandle`]; per-task
//! supervisors (see [`crate::supervisor`]) drive the containerizer and report [`TaskEvent`]s
//! back. Every state change is checkpointed before its status update is published, and
//! updates stay in the checkpoint until acknowledged, so a restarted agent resends them.
//! Checkpoint writes run off the async runtime, and an update whose write failed is held,
//! not published, until a retry succeeds ([`persist`]).
//!
//! The containerizers and the checkpoint store are injected ([`TaskManager::start_with`]),
//! so the manager's logic is tested against a scripted fake containerizer without Docker
//! (`tests.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capstan_proto::mesos::v1::{
    AgentId, ContainerId, ContainerStatus, ExecutorId, FrameworkInfo, TaskInfo, TaskState,
    TaskStatus, framework_info, task_status,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checkpoint::{self, Checkpoint, CheckpointStore, FileStore, TaskRecord, encode_msg};
use crate::containerizer::docker::DockerContainerizer;
use crate::containerizer::process::ProcessContainerizer;
use crate::containerizer::{ContainerRef, Containerizer, Launched};
use crate::spec;

pub mod executor;
mod handle;
mod launch;
pub mod persist;
mod recovery;
#[cfg(test)]
mod tests;

pub use handle::EventSender;

use persist::{Persistence, Tracked};

/// A status update and the framework it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub framework_id: String,
    pub status: TaskStatus,
}

/// What a supervisor or health checker reports about its task.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    Starting,
    Running(Launched),
    /// Found running after an agent restart; no status update is sent.
    Reattached(Launched),
    Killing,
    Health {
        healthy: bool,
        kill: bool,
    },
    Terminal {
        state: TaskState,
        reason: Option<task_status::Reason>,
        message: String,
    },
    /// The process containerizer learned its pid.
    Pid(u32),
}

/// A read-only view of one task.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub framework_id: String,
    pub info: TaskInfo,
    pub executor_id: String,
    pub container: ContainerRef,
    pub docker: bool,
    pub custom_executor: bool,
    pub state: TaskState,
    pub statuses: Vec<TaskStatus>,
    pub unacknowledged: usize,
    pub healthy: Option<bool>,
    pub launched: Option<Launched>,
}

/// What the manager publishes after every change.
#[derive(Debug, Clone, Default)]
pub struct AgentSnapshot {
    pub agent_id: String,
    /// Whether a master assigned or confirmed the agent id.
    pub registered: bool,
    /// Active and terminal-but-unacknowledged tasks, by task id.
    pub tasks: BTreeMap<String, TaskView>,
    /// Recently completed tasks (newest last), bounded.
    pub completed: Vec<TaskView>,
    /// The last checkpoint write failed: status updates are held until one succeeds.
    pub checkpoint_failing: bool,
}

impl AgentSnapshot {
    pub fn task(&self, task_id: &str) -> Option<&TaskView> {
        self.tasks.get(task_id).or_else(|| {
            self.completed
                .iter()
                .rev()
                .find(|t| t.info.task_id.value == task_id)
        })
    }
}

/// Why a request to the manager failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("task {0} is unknown")]
    UnknownTask(String),
    #[error("task {0} already exists on this agent")]
    DuplicateTask(String),
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error("cannot update container resources: {0}")]
    Update(String),
}

/// Settings the manager and its supervisors need.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub work_dir: PathBuf,
    pub hostname: String,
    pub advertise_ip: std::net::IpAddr,
    pub sandbox_mount: String,
    /// What containers may ask of this host (volumes, privileges, fetched files).
    pub policy: capstan_types::ContainerPolicy,
    /// Docker's `PidsLimit` for every container.
    pub pids_limit: i64,
    pub cpu_quota: bool,
    pub extra_labels: BTreeMap<String, String>,
    pub default_kill_grace: Duration,
    pub status_update_retry: Duration,
    /// How long a recovered executor has to SUBSCRIBE again.
    pub executor_reregistration_timeout: Duration,
    pub kill_orphans: bool,
    /// The agent's HTTP address, given to custom executors (`MESOS_AGENT_ENDPOINT`).
    pub agent_endpoint: std::net::SocketAddr,
}

enum Msg {
    Launch {
        framework: Box<FrameworkInfo>,
        task: Box<TaskInfo>,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
    Kill {
        task_id: String,
        grace: Option<Duration>,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
    Ack {
        task_id: String,
        uuid: Vec<u8>,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
    Update {
        task_id: String,
        cpus: f64,
        mem: f64,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
    Unacked {
        durable_only: bool,
        reply: oneshot::Sender<Vec<StatusUpdate>>,
    },
    Registered {
        agent_id: String,
    },
    Executor(executor::ExecutorCall),
    /// Recovered executors had their time to subscribe again.
    ReregistrationTimeout,
    Wipe,
    FrameworkMessage(executor::ExecutorMessage),
    Unknown {
        framework_id: String,
        task_id: String,
    },
    Event {
        task_id: String,
        container_id: String,
        event: TaskEvent,
    },
}

/// Cheap to clone; every method is a request to the manager task.
#[derive(Clone)]
pub struct TaskManagerHandle {
    tx: mpsc::Sender<Msg>,
    snapshot: watch::Receiver<Arc<AgentSnapshot>>,
    updates: broadcast::Sender<StatusUpdate>,
    messages: broadcast::Sender<executor::ExecutorMessage>,
}

struct Task {
    framework_id: String,
    info: TaskInfo,
    executor_id: String,
    container: ContainerRef,
    docker: bool,
    /// Runs under a custom executor (which reports its states over the executor API).
    custom: bool,
    state: TaskState,
    statuses: Vec<TaskStatus>,
    unacked: VecDeque<TaskStatus>,
    healthy: Option<bool>,
    launched: Option<Launched>,
    kill_tx: Option<watch::Sender<Option<Duration>>>,
    supervisor: Option<JoinHandle<()>>,
}

impl Task {
    fn view(&self) -> TaskView {
        TaskView {
            framework_id: self.framework_id.clone(),
            info: self.info.clone(),
            executor_id: self.executor_id.clone(),
            container: self.container.clone(),
            docker: self.docker,
            custom_executor: self.custom,
            state: self.state,
            statuses: self.statuses.clone(),
            unacknowledged: self.unacked.len(),
            healthy: self.healthy,
            launched: self.launched.clone(),
        }
    }

    fn record(&self) -> TaskRecord {
        TaskRecord {
            framework_id: self.framework_id.clone(),
            task_info: encode_msg(&self.info),
            executor_id: self.executor_id.clone(),
            container_id: self.container.container_id.clone(),
            container_name: self.container.name.clone(),
            sandbox: self.container.sandbox.clone(),
            docker: self.docker,
            custom_executor: self.custom,
            pid: self.container.pid,
            state: self.state as i32,
            statuses: self
                .statuses
                .iter()
                .rev()
                .take(8)
                .rev()
                .map(encode_msg)
                .collect(),
            unacknowledged: self.unacked.iter().map(encode_msg).collect(),
        }
    }

    fn kill_grace(&self, default: Duration) -> Duration {
        self.info
            .kill_policy
            .as_ref()
            .and_then(|k| k.grace_period.as_ref())
            .map(|d| Duration::from_nanos(u64::try_from(d.nanoseconds).unwrap_or(0)))
            .unwrap_or(default)
    }
}

pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskError
            | TaskState::TaskLost
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator
    )
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

const COMPLETED_KEPT: usize = 1000;
/// Status history kept per task (health flapping must not grow it without bound).
const MAX_STATUSES: usize = 100;

/// The manager task's state.
pub struct TaskManager {
    cfg: Arc<ManagerConfig>,
    agent_id: String,
    registered: bool,
    /// A wipe was requested; it completes once every task ended.
    wipe_pending: bool,
    /// Runs Docker tasks and executors; `None` without Docker.
    docker: Option<Arc<dyn Containerizer>>,
    /// Runs command tasks and executors without a container.
    process: Arc<dyn Containerizer>,
    /// The Docker engine itself, for orphan clean-up and log followers.
    engine: Option<Arc<DockerContainerizer>>,
    docker_up: watch::Receiver<bool>,
    tasks: Tracked<String, Task>,
    completed: VecDeque<TaskView>,
    /// Custom executors by (framework id, executor id).
    executors: Tracked<(String, String), executor::Executor>,
    frameworks: BTreeMap<String, FrameworkInfo>,
    rx: mpsc::Receiver<Msg>,
    handle: TaskManagerHandle,
    snapshot_tx: watch::Sender<Arc<AgentSnapshot>>,
    persist: Persistence,
}

/// What runs the manager's tasks.
pub struct Containerizers {
    /// For tasks and executors with a Docker container; `None` when Docker is unavailable.
    pub docker: Option<Arc<dyn Containerizer>>,
    /// For command tasks and executors without a container.
    pub process: Arc<dyn Containerizer>,
    /// The Docker engine behind `docker`, for orphan clean-up and log followers.
    pub engine: Option<Arc<DockerContainerizer>>,
}

/// Why the manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum ManagerStartError {
    #[error("cannot recover the agent's state")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("the checkpoint reader did not finish")]
    Interrupted(#[source] tokio::task::JoinError),
}

impl TaskManager {
    /// Loads the checkpoint of `cfg.work_dir` (or creates an agent id), reattaches to
    /// checkpointed containers, destroys orphans, and spawns the manager task. Returns its
    /// handle and join handle.
    pub async fn start(
        cfg: ManagerConfig,
        docker: Option<Arc<DockerContainerizer>>,
        docker_up: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) -> Result<(TaskManagerHandle, JoinHandle<()>), ManagerStartError> {
        let containerizers = Containerizers {
            docker: docker.clone().map(|d| d as Arc<dyn Containerizer>),
            process: Arc::new(ProcessContainerizer::new()),
            engine: docker,
        };
        let store = Box::new(FileStore::new(&cfg.work_dir));
        Self::start_with(cfg, containerizers, store, docker_up, shutdown).await
    }

    /// [`start`](Self::start) with the given containerizers and checkpoint store.
    pub async fn start_with(
        cfg: ManagerConfig,
        containerizers: Containerizers,
        store: Box<dyn CheckpointStore>,
        docker_up: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) -> Result<(TaskManagerHandle, JoinHandle<()>), ManagerStartError> {
        let (store, cp) = tokio::task::spawn_blocking(move || {
            let mut store = store;
            let cp = store.load();
            (store, cp)
        })
        .await
        .map_err(ManagerStartError::Interrupted)?;
        let cp = cp?;
        let recovered = cp.is_some();
        let cp = cp.unwrap_or_else(|| Checkpoint {
            agent_id: format!("{}-S0", uuid::Uuid::new_v4()),
            registered: false,
            tasks: Vec::new(),
            executors: Vec::new(),
        });
        let mut cfg = cfg;
        cfg.extra_labels
            .insert(spec::LABEL_RUN.to_owned(), uuid::Uuid::new_v4().to_string());
        let (tx, rx) = mpsc::channel(1024);
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(AgentSnapshot {
            agent_id: cp.agent_id.clone(),
            ..Default::default()
        }));
        let (updates, _) = broadcast::channel(4096);
        let (messages, _) = broadcast::channel(256);
        let handle = TaskManagerHandle {
            tx,
            snapshot: snapshot_rx,
            updates,
            messages,
        };
        let mut mgr = TaskManager {
            cfg: Arc::new(cfg),
            agent_id: cp.agent_id.clone(),
            registered: cp.registered,
            wipe_pending: false,
            docker: containerizers.docker,
            process: containerizers.process,
            engine: containerizers.engine,
            docker_up,
            tasks: Tracked::default(),
            completed: VecDeque::new(),
            executors: Tracked::default(),
            frameworks: BTreeMap::new(),
            rx,
            handle: handle.clone(),
            snapshot_tx,
            persist: Persistence::new(store),
        };
        if recovered {
            info!(agent_id = %mgr.agent_id, tasks = cp.tasks.len(), "Recovering checkpointed tasks");
        } else {
            info!(agent_id = %mgr.agent_id, "Starting with a fresh agent id");
        }
        mgr.recover(cp.tasks, cp.executors);
        // The first write replaces the whole checkpoint (see `Persistence::new`).
        mgr.persist();
        mgr.publish();
        let join = tokio::spawn(mgr.run(shutdown));
        Ok((handle, join))
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let mut retry = tokio::time::interval(self.cfg.status_update_retry);
        retry.tick().await;
        loop {
            let write_retry = self.persist.retry_at();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = self.rx.recv() => match msg {
                    Some(msg) => self.handle_msg(msg),
                    None => break,
                },
                r = persist::written(&mut self.persist) => {
                    self.write_finished(r);
                    self.persist();
                    self.publish();
                }
                _ = sleep_until(write_retry), if write_retry.is_some() => {
                    self.persist.clear_retry();
                    self.persist();
                }
                _ = retry.tick() => self.resend_unacked(),
            }
        }
        // What changed last is written before the manager stops.
        self.flush().await;
        // Containers keep running; a restarted agent reattaches to them.
        for task in self.tasks.values_mut_unpersisted() {
            if let Some(s) = task.supervisor.take() {
                s.abort();
            }
        }
        // Executors' watchers stop; their processes and containers stay, and a restarted
        // agent recovers them.
        drop(self.executors.take_all());
        if let Some(d) = &self.engine {
            d.stop_log_followers();
        }
        info!("Task manager stopped");
    }

    /// Broadcasts every durable unacknowledged update again.
    fn resend_unacked(&self) {
        for update in self.unacked(true) {
            let _ = self.handle.updates.send(update);
        }
    }

    fn handle_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Launch {
                framework,
                task,
                reply,
            } => {
                let framework_id = framework
                    .id
                    .as_ref()
                    .map(|f| f.value.clone())
                    .unwrap_or_default();
                if self.frameworks.get(&framework_id) != Some(&*framework) {
                    // Executor records carry their framework's info.
                    self.executors.mark_where(|k| k.0 == framework_id);
                    self.frameworks.insert(framework_id.clone(), *framework);
                }
                let r = if task.executor.is_some() {
                    self.launch_custom(framework_id, *task)
                } else {
                    self.launch(framework_id, *task)
                };
                let _ = reply.send(r);
            }
            Msg::Executor(call) => self.on_executor_call(call),
            Msg::ReregistrationTimeout => self.on_reregistration_timeout(),
            Msg::Kill {
                task_id,
                grace,
                reply,
            } => {
                let _ = reply.send(self.kill(&task_id, grace));
            }
            Msg::Ack {
                task_id,
                uuid,
                reply,
            } => {
                let _ = reply.send(self.acknowledge(&task_id, &uuid));
            }
            Msg::Update {
                task_id,
                cpus,
                mem,
                reply,
            } => self.update(&task_id, cpus, mem, reply),
            Msg::Unacked {
                durable_only,
                reply,
            } => {
                let _ = reply.send(self.unacked(durable_only));
            }
            Msg::Event {
                task_id,
                container_id,
                event,
            } => self.on_event(&task_id, &container_id, event),
            Msg::Registered { agent_id } => {
                if agent_id != self.agent_id {
                    if self.tasks.is_empty() {
                        info!(agent_id = %agent_id, previous = %self.agent_id, "Adopting the agent id the master assigned");
                        self.agent_id = agent_id;
                    } else {
                        warn!(agent_id = %agent_id, ours = %self.agent_id, "The master assigned a different id while tasks run; keeping ours");
                    }
                }
                self.registered = true;
            }
            Msg::Unknown {
                framework_id,
                task_id,
            } => self.lost(framework_id, task_id),
            Msg::FrameworkMessage(m) => self.deliver_framework_message(m),
            Msg::Wipe => {
                if !self.wipe_pending {
                    warn!(agent_id = %self.agent_id, "The master marked this agent gone; killing every task and registering anew");
                    self.wipe_pending = true;
                    let live: Vec<String> = self
                        .tasks
                        .iter()
                        .filter(|(_, t)| !is_terminal(t.state))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for task_id in live {
                        let _ = self.kill(&task_id, Some(Duration::ZERO));
                    }
                }
            }
        }
        self.finish_wipe();
        self.persist();
        self.publish();
    }

    fn kill(&mut self, task_id: &str, grace: Option<Duration>) -> Result<(), ManagerError> {
        let default = self.cfg.default_kill_grace;
        let Some(task) = self.tasks.get_mut(task_id) else {
            if self
                .completed
                .iter()
                .any(|t| t.info.task_id.value == task_id)
            {
                return Ok(());
            }
            return Err(ManagerError::UnknownTask(task_id.to_owned()));
        };
        if is_terminal(task.state) {
            return Ok(());
        }
        let grace = grace.unwrap_or_else(|| task.kill_grace(default));
        info!(task_id, ?grace, "Killing task");
        if task.custom {
            self.kill_custom(task_id, grace);
            return Ok(());
        }
        if let Some(tx) = &task.kill_tx {
            let _ = tx.send(Some(grace));
        }
        Ok(())
    }

    fn acknowledge(&mut self, task_id: &str, uuid: &[u8]) -> Result<(), ManagerError> {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return Err(ManagerError::UnknownTask(task_id.to_owned()));
        };
        let before = task.unacked.len();
        let custom = task.custom;
        task.unacked.retain(|s| s.uuid.as_deref() != Some(uuid));
        let (after, done) = (
            task.unacked.len(),
            is_terminal(task.state) && task.unacked.is_empty(),
        );
        if after != before {
            if custom {
                self.executor_acknowledged(task_id, uuid);
            }
            if done {
                self.complete(task_id);
            }
        }
        Ok(())
    }

    fn finish_wipe(&mut self) {
        if !self.wipe_pending || self.tasks.values().any(|t| !is_terminal(t.state)) {
            return;
        }
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            self.complete(&id);
        }
        for (_, exec) in self.executors.take_all() {
            exec.abandon();
        }
        self.wipe_pending = false;
        self.registered = false;
        self.agent_id = format!("{}-S0", uuid::Uuid::new_v4());
        info!(agent_id = %self.agent_id, "Agent state wiped");
    }

    fn lost(&mut self, framework_id: String, task_id: String) {
        if self.tasks.contains_key(&task_id) {
            return;
        }
        let info = TaskInfo {
            name: task_id.clone(),
            task_id: capstan_proto::mesos::v1::TaskId {
                value: task_id.clone(),
            },
            agent_id: AgentId {
                value: self.agent_id.clone(),
            },
            ..Default::default()
        };
        let task = Task {
            framework_id,
            info,
            executor_id: task_id.clone(),
            container: ContainerRef {
                container_id: String::new(),
                name: String::new(),
                sandbox: PathBuf::new(),
                pid: None,
            },
            docker: false,
            custom: false,
            state: TaskState::TaskStaging,
            statuses: Vec::new(),
            unacked: VecDeque::new(),
            healthy: None,
            launched: None,
            kill_tx: None,
            supervisor: None,
        };
        self.tasks.insert(task_id.clone(), task);
        self.transition(
            &task_id,
            TaskState::TaskLost,
            Some(task_status::Reason::TaskUnknown),
            "Task is unknown to the agent".into(),
            None,
        );
    }

    fn complete(&mut self, task_id: &str) {
        if let Some(task) = self.tasks.remove(task_id) {
            if task.custom
                && let Some(exec) = self
                    .executors
                    .get_mut(&(task.framework_id.clone(), task.executor_id.clone()))
            {
                exec.forget_task(task_id);
            }
            self.completed.push_back(task.view());
            while self.completed.len() > COMPLETED_KEPT {
                self.completed.pop_front();
            }
        }
    }

    fn update(
        &mut self,
        task_id: &str,
        cpus: f64,
        mem: f64,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    ) {
        let Some(task) = self.tasks.get(task_id) else {
            let _ = reply.send(Err(ManagerError::UnknownTask(task_id.to_owned())));
            return;
        };
        if task.custom && task.docker {
            let _ = reply.send(Err(ManagerError::Update(
                "the task shares its custom executor's container, which is sized for the \
                 executor and all its tasks"
                    .into(),
            )));
            return;
        }
        let containerizer: Arc<dyn Containerizer> = match (&self.docker, task.docker) {
            (Some(d), true) => d.clone(),
            _ => self.process.clone(),
        };
        let container = task.container.clone();
        tokio::spawn(async move {
            let r = containerizer
                .update(&container, cpus, mem)
                .await
                .map_err(|e| ManagerError::Update(e.to_string()));
            let _ = reply.send(r);
        });
    }

    fn on_event(&mut self, task_id: &str, container_id: &str, event: TaskEvent) {
        if task_id.starts_with(executor::EXECUTOR_KEY_PREFIX) {
            self.on_executor_event(container_id, event);
            return;
        }
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        if task.container.container_id != container_id {
            return; // A stale supervisor of an earlier run of the same task id.
        }
        match event {
            TaskEvent::Starting => {
                self.transition(task_id, TaskState::TaskStarting, None, String::new(), None);
            }
            TaskEvent::Running(launched) => {
                task.container.pid = launched.pid.or(task.container.pid);
                task.launched = Some(launched);
                info!(task_id, "Task running");
                self.transition(task_id, TaskState::TaskRunning, None, String::new(), None);
            }
            TaskEvent::Reattached(launched) => {
                task.launched = Some(launched);
                info!(task_id, "Reattached to task");
            }
            TaskEvent::Pid(pid) => {
                task.container.pid = Some(pid);
            }
            TaskEvent::Killing => {
                info!(task_id, "Task killing");
                // Mesos sends TASK_KILLING only to frameworks that declared TASK_KILLING_STATE.
                let wants = self.frameworks.get(&task.framework_id).is_some_and(|f| {
                    f.capabilities.iter().any(|c| {
                        c.r#type == Some(framework_info::capability::Type::TaskKillingState as i32)
                    })
                });
                if wants && !is_terminal(task.state) {
                    self.transition(task_id, TaskState::TaskKilling, None, String::new(), None);
                }
            }
            TaskEvent::Health { healthy, kill } => {
                let changed = task.healthy != Some(healthy);
                task.healthy = Some(healthy);
                let state = task.state;
                if changed && !is_terminal(state) {
                    info!(task_id, healthy, "Task health changed");
                    self.transition(
                        task_id,
                        state,
                        Some(task_status::Reason::TaskHealthCheckStatusUpdated),
                        String::new(),
                        Some(healthy),
                    );
                }
                if kill {
                    let _ = self.kill(task_id, None);
                }
            }
            TaskEvent::Terminal {
                state,
                reason,
                message,
            } => {
                task.supervisor = None;
                task.kill_tx = None;
                info!(task_id, state = state.as_str_name(), %message, "Task ended");
                self.transition(task_id, state, reason, message, None);
            }
        }
    }

    /// Records a state change; its status update is published once checkpointed.
    fn transition(
        &mut self,
        task_id: &str,
        state: TaskState,
        reason: Option<task_status::Reason>,
        message: String,
        healthy: Option<bool>,
    ) {
        let agent_id = self.agent_id.clone();
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        let source = if matches!(
            reason,
            Some(
                task_status::Reason::TaskInvalid
                    | task_status::Reason::AgentRestarted
                    | task_status::Reason::ExecutorReregistrationTimeout
            )
        ) {
            task_status::Source::Agent
        } else {
            task_status::Source::Executor
        };
        let container_status = ContainerStatus {
            container_id: Some(ContainerId {
                value: task.container.container_id.clone(),
                parent: None,
            }),
            network_infos: task
                .launched
                .as_ref()
                .map(|l| l.network_infos.clone())
                .unwrap_or_default(),
            executor_pid: task.container.pid,
        };
        let status = TaskStatus {
            task_id: task.info.task_id.clone(),
            state: state as i32,
            message: (!message.is_empty()).then_some(message),
            source: Some(source as i32),
            reason: reason.map(|r| r as i32),
            agent_id: Some(AgentId { value: agent_id }),
            executor_id: Some(ExecutorId {
                value: task.executor_id.clone(),
            }),
            timestamp: Some(now_secs()),
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            healthy: healthy.or(task.healthy),
            container_status: Some(container_status),
            ..Default::default()
        };
        self.record_status(task_id, status);
    }

    /// Stores a status (ours or an executor's); it is published once checkpointed.
    fn record_status(&mut self, task_id: &str, status: TaskStatus) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        task.state = TaskState::try_from(status.state).unwrap_or(task.state);
        if task.statuses.len() >= MAX_STATUSES {
            task.statuses.remove(0);
        }
        task.statuses.push(status.clone());
        task.unacked.push_back(status.clone());
        let update = StatusUpdate {
            framework_id: task.framework_id.clone(),
            status,
        };
        // Written with the task's record; published once that is durable.
        self.queue_update(update);
    }

    fn publish(&self) {
        let snapshot = AgentSnapshot {
            agent_id: self.agent_id.clone(),
            registered: self.registered,
            tasks: self
                .tasks
                .iter()
                .map(|(k, t)| (k.clone(), t.view()))
                .collect(),
            completed: self.completed.iter().cloned().collect(),
            checkpoint_failing: self.persist.failing,
        };
        self.snapshot_tx.send_replace(Arc::new(snapshot));
    }
}
