//! The task manager: the one task that owns the agent's task state and its checkpoint.
//!
//! Callers (HTTP, master link, tests) talk to it through a [`TaskManagerHandle`]; per-task
//! supervisors (see [`crate::supervisor`]) drive the containerizer and report [`TaskEvent`]s
//! back. Every state change is checkpointed before its status update is published, and
//! updates stay in the checkpoint until acknowledged, so a restarted agent resends them.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capstan_proto::mesos::v1::{
    AgentId, ContainerId, ContainerStatus, ExecutorId, FrameworkId, FrameworkInfo, TaskInfo,
    TaskState, TaskStatus, framework_info, task_status,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::checkpoint::{self, Checkpoint, TaskRecord, decode_msg, encode_msg};
use crate::containerizer::docker::DockerContainerizer;
use crate::containerizer::process::ProcessContainerizer;
use crate::containerizer::{ContainerRef, Containerizer, LaunchSpec, Launched, ProcessSpec};
use crate::resources::TaskResources;
use crate::spec::{self, SpecContext};
use crate::supervisor::{self, Mode, SupervisorCtx};

pub mod executor;

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
    pub allow_privileged: bool,
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

impl TaskManagerHandle {
    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, ManagerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(f(reply))
            .await
            .map_err(|_| ManagerError::ShuttingDown)?;
        rx.await.map_err(|_| ManagerError::ShuttingDown)
    }

    /// Accepts a task. Problems with the task itself are reported as status updates
    /// (TASK_ERROR / TASK_FAILED), not as errors here.
    pub async fn launch(&self, framework_id: &str, task: TaskInfo) -> Result<(), ManagerError> {
        let framework = FrameworkInfo {
            user: "root".to_owned(),
            name: String::new(),
            id: Some(FrameworkId {
                value: framework_id.to_owned(),
            }),
            ..Default::default()
        };
        self.launch_with_framework(framework, task).await
    }

    /// Like [`launch`](Self::launch), with the framework's full info (given to executors).
    pub async fn launch_with_framework(
        &self,
        framework: FrameworkInfo,
        task: TaskInfo,
    ) -> Result<(), ManagerError> {
        self.ask(|reply| Msg::Launch {
            framework: Box::new(framework),
            task: Box::new(task),
            reply,
        })
        .await?
    }

    /// Kills a task: SIGTERM, then SIGKILL after `grace` (default: the task's kill policy).
    pub async fn kill(&self, task_id: &str, grace: Option<Duration>) -> Result<(), ManagerError> {
        let task_id = task_id.to_owned();
        self.ask(|reply| Msg::Kill {
            task_id,
            grace,
            reply,
        })
        .await?
    }

    /// Acknowledges a status update by its uuid.
    pub async fn acknowledge(&self, task_id: &str, uuid: &[u8]) -> Result<(), ManagerError> {
        let (task_id, uuid) = (task_id.to_owned(), uuid.to_vec());
        self.ask(|reply| Msg::Ack {
            task_id,
            uuid,
            reply,
        })
        .await?
    }

    /// Changes a running task's CPU and memory limits.
    pub async fn update_resources(
        &self,
        task_id: &str,
        cpus: f64,
        mem: f64,
    ) -> Result<(), ManagerError> {
        let task_id = task_id.to_owned();
        self.ask(|reply| Msg::Update {
            task_id,
            cpus,
            mem,
            reply,
        })
        .await?
    }

    /// Every unacknowledged update, oldest first per task.
    pub async fn unacknowledged(&self) -> Result<Vec<StatusUpdate>, ManagerError> {
        self.ask(|reply| Msg::Unacked { reply }).await
    }

    /// A master assigned (or confirmed) the agent id. A fresh agent without tasks adopts it.
    pub async fn registered(&self, agent_id: &str) -> Result<(), ManagerError> {
        let agent_id = agent_id.to_owned();
        self.tx
            .send(Msg::Registered { agent_id })
            .await
            .map_err(|_| ManagerError::ShuttingDown)
    }

    /// The master marked this agent gone: kill every task, forget them, and drop the agent id
    /// so the next SUBSCRIBE registers a new agent.
    pub async fn wipe(&self) -> Result<(), ManagerError> {
        self.tx
            .send(Msg::Wipe)
            .await
            .map_err(|_| ManagerError::ShuttingDown)
    }

    /// A kill for a task this agent does not know: answered with TASK_LOST.
    pub async fn report_unknown(
        &self,
        framework_id: &str,
        task_id: &str,
    ) -> Result<(), ManagerError> {
        let (framework_id, task_id) = (framework_id.to_owned(), task_id.to_owned());
        self.tx
            .send(Msg::Unknown {
                framework_id,
                task_id,
            })
            .await
            .map_err(|_| ManagerError::ShuttingDown)
    }

    /// The latest published state.
    pub fn snapshot(&self) -> Arc<AgentSnapshot> {
        self.snapshot.borrow().clone()
    }

    /// A watch on the published state.
    pub fn watch(&self) -> watch::Receiver<Arc<AgentSnapshot>> {
        self.snapshot.clone()
    }

    /// Every status update from now on (new ones and retries).
    pub fn subscribe(&self) -> broadcast::Receiver<StatusUpdate> {
        self.updates.subscribe()
    }

    pub(crate) fn event_sender(&self) -> EventSender {
        EventSender {
            tx: self.tx.clone(),
        }
    }
}

/// Lets supervisors report events.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Msg>,
}

impl EventSender {
    pub async fn send(&self, task_id: &str, container_id: &str, event: TaskEvent) {
        let _ = self
            .tx
            .send(Msg::Event {
                task_id: task_id.to_owned(),
                container_id: container_id.to_owned(),
                event,
            })
            .await;
    }
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
    docker: Option<Arc<DockerContainerizer>>,
    process: Arc<ProcessContainerizer>,
    docker_up: watch::Receiver<bool>,
    tasks: BTreeMap<String, Task>,
    completed: VecDeque<TaskView>,
    /// Custom executors by (framework id, executor id).
    executors: BTreeMap<(String, String), executor::Executor>,
    frameworks: BTreeMap<String, FrameworkInfo>,
    rx: mpsc::Receiver<Msg>,
    handle: TaskManagerHandle,
    snapshot_tx: watch::Sender<Arc<AgentSnapshot>>,
}

/// Why the manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum ManagerStartError {
    #[error("cannot recover the agent's state")]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

impl TaskManager {
    /// Loads the checkpoint (or creates an agent id), reattaches to checkpointed containers,
    /// destroys orphans, and spawns the manager task. Returns its handle and join handle.
    pub fn start(
        cfg: ManagerConfig,
        docker: Option<Arc<DockerContainerizer>>,
        docker_up: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) -> Result<(TaskManagerHandle, JoinHandle<()>), ManagerStartError> {
        let cp = checkpoint::load(&cfg.work_dir)?;
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
            docker,
            process: Arc::new(ProcessContainerizer::new()),
            docker_up,
            tasks: BTreeMap::new(),
            completed: VecDeque::new(),
            executors: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            rx,
            handle: handle.clone(),
            snapshot_tx,
        };
        if recovered {
            info!(agent_id = %mgr.agent_id, tasks = cp.tasks.len(), "Recovering checkpointed tasks");
        } else {
            info!(agent_id = %mgr.agent_id, "Starting with a fresh agent id");
        }
        mgr.recover(cp.tasks, cp.executors);
        mgr.checkpoint();
        mgr.publish();
        let join = tokio::spawn(mgr.run(shutdown));
        Ok((handle, join))
    }

    fn recover(&mut self, records: Vec<TaskRecord>, executors: Vec<checkpoint::ExecutorRecord>) {
        let mut known_names = self.recover_executors(executors);
        for rec in records {
            let Some(info) = decode_msg::<TaskInfo>(&rec.task_info) else {
                warn!(container_id = %rec.container_id, "Dropping an unreadable checkpointed task");
                continue;
            };
            let state = TaskState::try_from(rec.state).unwrap_or(TaskState::TaskStaging);
            let task_id = info.task_id.value.clone();
            let executor_recovered = rec.custom_executor
                && self
                    .executors
                    .contains_key(&(rec.framework_id.clone(), rec.executor_id.clone()));
            if !is_terminal(state) && !rec.custom_executor {
                // A terminal task's container is left over from a crash: an orphan.
                // (Custom executors' containers are known from their own records.)
                known_names.push(rec.container_name.clone());
            }
            let mut task = Task {
                framework_id: rec.framework_id,
                info,
                executor_id: rec.executor_id,
                container: ContainerRef {
                    container_id: rec.container_id,
                    name: rec.container_name,
                    sandbox: rec.sandbox,
                    pid: rec.pid,
                },
                docker: rec.docker,
                custom: rec.custom_executor,
                state,
                statuses: rec.statuses.iter().filter_map(|s| decode_msg(s)).collect(),
                unacked: rec
                    .unacknowledged
                    .iter()
                    .filter_map(|s| decode_msg(s))
                    .collect(),
                healthy: None,
                launched: None,
                kill_tx: None,
                supervisor: None,
            };
            let mut executor_lost = false;
            if !is_terminal(state) {
                if task.custom {
                    executor_lost = !executor_recovered;
                } else {
                    self.spawn_supervisor(&mut task, Mode::Reattach);
                }
            }
            info!(task_id = %task_id, state = state.as_str_name(), "Recovered task");
            let (pid, docker) = (task.container.pid, task.docker);
            self.tasks.insert(task_id.clone(), task);
            if executor_lost {
                // Its executor was not checkpointed (an older agent wrote the checkpoint):
                // it cannot be reattached. Its process ends here; a container of it is an
                // orphan, destroyed below.
                if !docker && let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                self.transition(
                    &task_id,
                    TaskState::TaskFailed,
                    Some(task_status::Reason::AgentRestarted),
                    "The agent restarted and the task's executor was not checkpointed".into(),
                    None,
                );
            }
        }
        // Resend what the framework has not acknowledged yet.
        for task in self.tasks.values() {
            for status in &task.unacked {
                let _ = self.handle.updates.send(StatusUpdate {
                    framework_id: task.framework_id.clone(),
                    status: status.clone(),
                });
            }
        }
        if let (Some(docker), true) = (self.docker.clone(), self.cfg.kill_orphans) {
            let agent_id = self.agent_id.clone();
            let mut up = self.docker_up.clone();
            let run = self.cfg.extra_labels.get(spec::LABEL_RUN).cloned();
            tokio::spawn(async move {
                let _ = up.wait_for(|u| *u).await;
                destroy_orphans(&docker, &agent_id, &known_names, run).await;
            });
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let mut retry = tokio::time::interval(self.cfg.status_update_retry);
        retry.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = self.rx.recv() => match msg {
                    Some(msg) => self.handle_msg(msg),
                    None => break,
                },
                _ = retry.tick() => self.resend_unacked(),
            }
        }
        // Containers keep running; a restarted agent reattaches to them.
        for task in self.tasks.values_mut() {
            if let Some(s) = task.supervisor.take() {
                s.abort();
            }
        }
        // Executors' watchers stop; their processes and containers stay, and a restarted
        // agent recovers them.
        self.executors.clear();
        if let Some(d) = &self.docker {
            d.stop_log_followers();
        }
        info!("Task manager stopped");
    }

    fn resend_unacked(&self) {
        for task in self.tasks.values() {
            for status in &task.unacked {
                let _ = self.handle.updates.send(StatusUpdate {
                    framework_id: task.framework_id.clone(),
                    status: status.clone(),
                });
            }
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
                self.frameworks.insert(framework_id.clone(), *framework);
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
            Msg::Unacked { reply } => {
                let all = self
                    .tasks
                    .values()
                    .flat_map(|t| {
                        t.unacked.iter().map(|s| StatusUpdate {
                            framework_id: t.framework_id.clone(),
                            status: s.clone(),
                        })
                    })
                    .collect();
                let _ = reply.send(all);
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
                if !self.registered {
                    self.registered = true;
                    self.checkpoint();
                }
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
        self.publish();
    }

    fn sandbox_for(&self, framework_id: &str, executor_id: &str, container_id: &str) -> PathBuf {
        self.cfg
            .work_dir
            .join("slaves")
            .join(&self.agent_id)
            .join("frameworks")
            .join(framework_id)
            .join("executors")
            .join(executor_id)
            .join("runs")
            .join(container_id)
    }

    fn launch(&mut self, framework_id: String, info: TaskInfo) -> Result<(), ManagerError> {
        let task_id = info.task_id.value.clone();
        if let Some(existing) = self.tasks.get(&task_id)
            && !is_terminal(existing.state)
        {
            return Err(ManagerError::DuplicateTask(task_id));
        }
        if self.tasks.contains_key(&task_id) {
            self.complete(&task_id);
        }
        let container_id = uuid::Uuid::new_v4().to_string();
        let executor_id = task_id.clone();
        let sandbox = self.sandbox_for(&framework_id, &executor_id, &container_id);
        let docker = info.container.is_some();
        let name = if docker {
            spec::container_name(&self.agent_id, &container_id)
        } else {
            String::new()
        };
        let mut task = Task {
            framework_id,
            info,
            executor_id,
            container: ContainerRef {
                container_id,
                name,
                sandbox: sandbox.clone(),
                pid: None,
            },
            docker,
            custom: false,
            state: TaskState::TaskStaging,
            statuses: Vec::new(),
            unacked: VecDeque::new(),
            healthy: None,
            launched: None,
            kill_tx: None,
            supervisor: None,
        };
        info!(task_id = %task_id, container_id = %task.container.container_id, docker, "Launching task");

        let spec = match self.launch_spec(&task) {
            Ok(spec) => spec,
            Err((state, reason, message)) => {
                warn!(task_id = %task_id, %message, "Refusing task");
                self.tasks.insert(task_id.clone(), task);
                self.transition(&task_id, state, Some(reason), message, None);
                return Ok(());
            }
        };
        if let Err(e) = std::fs::create_dir_all(&sandbox) {
            self.tasks.insert(task_id.clone(), task);
            self.transition(
                &task_id,
                TaskState::TaskFailed,
                Some(task_status::Reason::ContainerLaunchFailed),
                format!("Cannot create sandbox {}: {e}", sandbox.display()),
                None,
            );
            return Ok(());
        }
        self.spawn_supervisor(&mut task, Mode::Launch(Box::new(spec)));
        self.tasks.insert(task_id.clone(), task);
        self.checkpoint();
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn launch_spec(
        &self,
        task: &Task,
    ) -> Result<LaunchSpec, (TaskState, task_status::Reason, String)> {
        let invalid = |m: String| (TaskState::TaskError, task_status::Reason::TaskInvalid, m);
        if task.info.task_id.value.is_empty() {
            return Err(invalid("Task id is empty".into()));
        }
        if task.info.executor.is_some() {
            return Err(invalid(
                "Custom executors are not supported by this agent".into(),
            ));
        }
        if task.docker {
            if self.docker.is_none() {
                return Err((
                    TaskState::TaskFailed,
                    task_status::Reason::ContainerLaunchFailed,
                    "The Docker containerizer is not available on this agent".into(),
                ));
            }
            let ctx = SpecContext {
                agent_id: &self.agent_id,
                framework_id: &task.framework_id,
                executor_id: &task.executor_id,
                container_id: &task.container.container_id,
                hostname: &self.cfg.hostname,
                advertise_ip: self.cfg.advertise_ip,
                sandbox: &task.container.sandbox,
                sandbox_mount: &self.cfg.sandbox_mount,
                allow_privileged: self.cfg.allow_privileged,
                cpu_quota: self.cfg.cpu_quota,
                extra_labels: &self.cfg.extra_labels,
            };
            spec::build_spec(&task.info, &ctx)
                .map(|spec| LaunchSpec::Docker(Box::new(spec)))
                .map_err(|e| invalid(format!("Invalid task: {e}")))
        } else {
            let Some(command) = task.info.command.as_ref() else {
                return Err(invalid("Task has neither a command nor a container".into()));
            };
            let argv = if command.shell() {
                match command.value.as_deref() {
                    Some(v) if !v.is_empty() => {
                        vec!["/bin/sh".to_owned(), "-c".to_owned(), v.to_owned()]
                    }
                    _ => return Err(invalid("Shell command has no value".into())),
                }
            } else {
                // execvp(value, arguments): arguments[0] is argv[0].
                let mut argv: Vec<String> = command.value.iter().cloned().collect();
                let skip = usize::from(!argv.is_empty());
                argv.extend(command.arguments.iter().skip(skip).cloned());
                if argv.is_empty() {
                    return Err(invalid("Command has no value and no arguments".into()));
                }
                argv
            };
            let ports = TaskResources::from_proto(&task.info.resources).ports;
            let sandbox = task.container.sandbox.display().to_string();
            let env = spec::task_environment(
                &task.info,
                Some(command),
                &self.cfg.hostname,
                &sandbox,
                &ports,
            )
            .map_err(|e| invalid(format!("Invalid task: {e}")))?;
            let mut env = env;
            if let Ok(path) = std::env::var("PATH") {
                env.insert(0, ("PATH".to_owned(), path));
            }
            Ok(LaunchSpec::Process(ProcessSpec { argv, env }))
        }
    }

    fn spawn_supervisor(&self, task: &mut Task, mode: Mode) {
        let containerizer: Arc<dyn Containerizer> = if task.docker {
            match &self.docker {
                Some(d) => d.clone(),
                None => return,
            }
        } else {
            self.process.clone()
        };
        let (kill_tx, kill_rx) = watch::channel(None);
        let ctx = SupervisorCtx {
            task_id: task.info.task_id.value.clone(),
            container: task.container.clone(),
            info: task.info.clone(),
            containerizer,
            docker_up: self.docker_up.clone(),
            events: self.handle.event_sender(),
            kill_rx,
            advertise_ip: self.cfg.advertise_ip,
        };
        task.kill_tx = Some(kill_tx);
        task.supervisor = Some(tokio::spawn(supervisor::supervise(ctx, mode)));
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
            self.checkpoint();
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
        for (_, exec) in std::mem::take(&mut self.executors) {
            exec.abandon();
        }
        self.wipe_pending = false;
        self.registered = false;
        self.agent_id = format!("{}-S0", uuid::Uuid::new_v4());
        info!(agent_id = %self.agent_id, "Agent state wiped");
        self.checkpoint();
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
                self.checkpoint();
            }
            TaskEvent::Pid(pid) => {
                task.container.pid = Some(pid);
                self.checkpoint();
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

    /// Records a state change, checkpoints it and publishes the status update.
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

    /// Stores a status (ours or an executor's), checkpoints it and publishes it.
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
        self.checkpoint();
        let _ = self.handle.updates.send(update);
    }

    fn checkpoint(&self) {
        let cp = Checkpoint {
            agent_id: self.agent_id.clone(),
            registered: self.registered,
            tasks: self.tasks.values().map(Task::record).collect(),
            executors: self
                .executors
                .iter()
                .map(|((fid, _), e)| e.record(fid, self.frameworks.get(fid)))
                .collect(),
        };
        if let Err(e) = checkpoint::store(&self.cfg.work_dir, &cp) {
            error!(error = %e, cause = ?std::error::Error::source(&e), "Cannot write the checkpoint");
        }
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
        };
        self.snapshot_tx.send_replace(Arc::new(snapshot));
    }
}

/// Removes containers named for this agent that no checkpointed task owns.
async fn destroy_orphans(
    docker: &DockerContainerizer,
    agent_id: &str,
    known: &[String],
    run: Option<String>,
) {
    let prefix = spec::container_name_prefix(agent_id);
    match docker.list(agent_id, &prefix).await {
        Ok(listed) => {
            for c in listed
                .into_iter()
                .filter(|c| !known.contains(&c.name) && (run.is_none() || c.run != run))
            {
                warn!(container = %c.name, running = c.running, "Destroying orphan container");
                if let Err(e) = docker.remove_by_name(&c.name).await {
                    warn!(container = %c.name, error = %e, "Cannot destroy orphan container");
                }
            }
        }
        Err(e) => warn!(error = %e, "Cannot list containers to find orphans"),
    }
}
