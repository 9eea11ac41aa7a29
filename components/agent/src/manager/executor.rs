//! Custom executors (Mesos executor API v1, `POST /api/v1/executor`).
//!
//! A task whose TaskInfo carries an `executor` runs under that executor: the agent starts the
//! executor once per framework and executor id, hands it the Mesos executor environment, and,
//! once it SUBSCRIBEs, streams it LAUNCH / KILL / ACKNOWLEDGED / SHUTDOWN events. The
//! executor reports task states with UPDATE calls; those go through the same checkpointed,
//! acknowledged status-update path as the agent's own. When all its tasks ended the executor
//! is shut down (SHUTDOWN, then SIGKILL after a grace period); when it exits, its unfinished
//! tasks fail (REASON_EXECUTOR_TERMINATED).
//!
//! Without a `container` the executor is a process in its own process group, with the
//! sandbox as working directory. With `container: {type: DOCKER, docker: {...}}` it is a
//! Docker container built like a task's ([`crate::spec::build_executor_spec`]: same name
//! scheme and labels, so recovery and orphan clean-up see it; same command semantics; the
//! sandbox mounted at `docker.sandbox_mount`, which `MESOS_SANDBOX` and `MESOS_DIRECTORY`
//! name; limits from the executor's and its tasks' resources). `MESOS_AGENT_ENDPOINT` is the
//! agent's advertised address (`advertise_ip` and the HTTP port). An executor container
//! uses host networking unless its DockerInfo asks for another network (HOST is the
//! protobuf default), so it reaches the agent even on loopback; with BRIDGE or USER
//! networking the agent must listen on an address containers can reach (e.g. `listen:
//! 0.0.0.0:5051` with `advertise_ip` set to the host's IP), or the executor cannot
//! subscribe.
//!
//! Executors are checkpointed (ExecutorInfo, container, pid and its start time, task ids,
//! undelivered tasks). After an agent restart each is reattached: a process executor whose
//! pid still runs with the same start time, or a Docker executor whose container still
//! runs, is kept without a stream until it SUBSCRIBEs again (executors get
//! `MESOS_CHECKPOINT=1` and reconnect). Its re-SUBSCRIBE is handled as in Mesos: tasks still
//! STAGING that it neither lists in `unacknowledged_tasks` nor has updates for end TASK_LOST
//! (TASK_DROPPED for PARTITION_AWARE frameworks) with REASON_AGENT_RESTARTED, and its
//! `unacknowledged_updates` are applied unless the agent already has them. One that does
//! not re-subscribe within `executor_reregistration_timeout` is destroyed and its tasks
//! fail with REASON_EXECUTOR_REREGISTRATION_TIMEOUT; one that ended while the agent was
//! down fails its tasks with REASON_EXECUTOR_TERMINATED.

use std::time::Duration;

use capstan_proto::mesos::v1::executor::{Event, call, event};
use capstan_proto::mesos::v1::{
    AgentId, AgentInfo, ContainerId, DurationInfo, ExecutorInfo, FrameworkId, FrameworkInfo,
    KillPolicy, TaskId, TaskInfo, TaskState, TaskStatus, container_info, framework_info,
    task_status,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{ManagerError, Task, TaskEvent, TaskManager, TaskManagerHandle, is_terminal, now_secs};
use crate::checkpoint::{ExecutorRecord, decode_msg, encode_msg};
use crate::containerizer::process::process_start_time;
use crate::containerizer::{ContainerRef, Containerizer, LaunchSpec, Launched, ProcessSpec};
use crate::spec::{self, SpecContext};
use crate::supervisor::{self, Mode, SupervisorCtx};

/// Supervisor "task ids" of executors start with this, so their events are told apart.
pub const EXECUTOR_KEY_PREFIX: &str = "\u{0}executor/";

/// How long an executor gets between SHUTDOWN and SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const EVENT_BUFFER: usize = 256;

pub(crate) struct Executor {
    info: ExecutorInfo,
    container: ContainerRef,
    /// Runs in a Docker container (else as a process).
    docker: bool,
    /// Its container's addresses, once running.
    launched: Option<Launched>,
    stream: Option<mpsc::Sender<Event>>,
    queued: Vec<TaskInfo>,
    tasks: Vec<String>,
    kill_tx: watch::Sender<Option<Duration>>,
    shutting_down: bool,
    supervisor: JoinHandle<()>,
    /// When `container.pid` started (`/proc/<pid>/stat`), for process executors.
    pid_start: Option<u64>,
    /// Recovered after an agent restart and not subscribed again yet.
    awaiting_resubscribe: bool,
    /// How its unfinished tasks end when it ends (set when the agent kills it).
    pending_termination: Option<(TaskState, task_status::Reason, String)>,
    /// Kills of tasks it has, asked for while it was not connected: sent when it subscribes.
    pending_kills: Vec<(String, Duration)>,
}

impl Drop for Executor {
    /// Dropped when it ended (its watcher is done) or when the agent stops.
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl Executor {
    pub(super) fn record(
        &self,
        framework_id: &str,
        framework: Option<&FrameworkInfo>,
    ) -> ExecutorRecord {
        ExecutorRecord {
            framework_id: framework_id.to_owned(),
            executor_info: encode_msg(&self.info),
            framework_info: framework.map(encode_msg),
            container_id: self.container.container_id.clone(),
            container_name: self.container.name.clone(),
            sandbox: self.container.sandbox.clone(),
            docker: self.docker,
            pid: self.container.pid,
            pid_start: self.pid_start,
            tasks: self.tasks.clone(),
            queued: self.queued.iter().map(encode_msg).collect(),
            shutting_down: self.shutting_down,
        }
    }

    /// A task of it ended and was acknowledged: it is no longer tracked here.
    pub(super) fn forget_task(&mut self, task_id: &str) {
        self.tasks.retain(|t| t != task_id);
    }

    /// The manager forgets the executor (agent wipe): its supervisor still kills it and
    /// removes its container, so nothing is left behind.
    pub(super) fn abandon(mut self) {
        let (placeholder, _) = watch::channel(None);
        let kill_tx = std::mem::replace(&mut self.kill_tx, placeholder);
        let _ = kill_tx.send(Some(Duration::ZERO));
        let supervisor = std::mem::replace(&mut self.supervisor, tokio::spawn(async {}));
        tokio::spawn(async move {
            let _ = supervisor.await;
            drop(kill_tx);
        });
    }
}

/// Executor API errors, each with the HTTP status Mesos uses.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorApiError {
    #[error("Executor {executor_id} of framework {framework_id} is not known to this agent")]
    UnknownExecutor {
        framework_id: String,
        executor_id: String,
    },
    #[error("Executor is not subscribed")]
    NotSubscribed,
    #[error("{0}")]
    BadUpdate(String),
    #[error("The agent is shutting down")]
    ShuttingDown,
}

impl ExecutorApiError {
    pub fn http_status(&self) -> u16 {
        match self {
            ExecutorApiError::UnknownExecutor { .. } | ExecutorApiError::BadUpdate(_) => 400,
            ExecutorApiError::NotSubscribed => 403,
            ExecutorApiError::ShuttingDown => 503,
        }
    }
}

/// Opaque data between a framework and one of its executors.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorMessage {
    pub framework_id: String,
    pub executor_id: String,
    pub data: Vec<u8>,
}

pub(crate) enum ExecutorCall {
    Subscribe {
        framework_id: String,
        executor_id: String,
        subscribe: Box<call::Subscribe>,
        reply: oneshot::Sender<Result<mpsc::Receiver<Event>, ExecutorApiError>>,
    },
    Update {
        framework_id: String,
        executor_id: String,
        status: Box<TaskStatus>,
        reply: oneshot::Sender<Result<(), ExecutorApiError>>,
    },
}

impl TaskManagerHandle {
    /// An executor subscribes: returns its event stream (SUBSCRIBED first).
    pub async fn executor_subscribe(
        &self,
        framework_id: &str,
        executor_id: &str,
    ) -> Result<mpsc::Receiver<Event>, ExecutorApiError> {
        self.executor_subscribe_with(framework_id, executor_id, call::Subscribe::default())
            .await
    }

    /// An executor subscribes (again, e.g. after an agent restart) with the tasks and
    /// updates it has no acknowledgement for. As in Mesos, a task still STAGING that it
    /// does not know of ends TASK_LOST (TASK_DROPPED for PARTITION_AWARE frameworks), and
    /// its unacknowledged updates are applied unless already known.
    pub async fn executor_subscribe_with(
        &self,
        framework_id: &str,
        executor_id: &str,
        subscribe: call::Subscribe,
    ) -> Result<mpsc::Receiver<Event>, ExecutorApiError> {
        let (framework_id, executor_id) = (framework_id.to_owned(), executor_id.to_owned());
        self.ask(|reply| {
            super::Msg::Executor(ExecutorCall::Subscribe {
                framework_id,
                executor_id,
                subscribe: Box::new(subscribe),
                reply,
            })
        })
        .await
        .map_err(|_| ExecutorApiError::ShuttingDown)?
    }

    /// An executor reports a task status.
    pub async fn executor_update(
        &self,
        framework_id: &str,
        executor_id: &str,
        status: TaskStatus,
    ) -> Result<(), ExecutorApiError> {
        let (framework_id, executor_id) = (framework_id.to_owned(), executor_id.to_owned());
        self.ask(|reply| {
            super::Msg::Executor(ExecutorCall::Update {
                framework_id,
                executor_id,
                status: Box::new(status),
                reply,
            })
        })
        .await
        .map_err(|_| ExecutorApiError::ShuttingDown)?
    }
}

impl TaskManagerHandle {
    /// An executor's message for its framework (the master link forwards it).
    pub fn executor_message(&self, message: ExecutorMessage) {
        let _ = self.messages.send(message);
    }

    /// Messages executors send to their frameworks.
    pub fn subscribe_executor_messages(&self) -> tokio::sync::broadcast::Receiver<ExecutorMessage> {
        self.messages.subscribe()
    }

    /// A framework's message for one of its executors on this agent.
    pub async fn framework_message(&self, message: ExecutorMessage) -> Result<(), ManagerError> {
        self.tx
            .send(super::Msg::FrameworkMessage(message))
            .await
            .map_err(|_| ManagerError::ShuttingDown)
    }
}

fn key_string(framework_id: &str, executor_id: &str) -> String {
    format!("{EXECUTOR_KEY_PREFIX}{framework_id}/{executor_id}")
}

impl TaskManager {
    pub(super) fn launch_custom(
        &mut self,
        framework_id: String,
        info: TaskInfo,
    ) -> Result<(), ManagerError> {
        let task_id = info.task_id.value.clone();
        if let Some(existing) = self.tasks.get(&task_id)
            && !is_terminal(existing.state)
        {
            return Err(ManagerError::DuplicateTask(task_id));
        }
        if self.tasks.contains_key(&task_id) {
            self.complete(&task_id);
        }
        let exec_info = info
            .executor
            .clone()
            .expect("launch_custom needs an executor");
        let executor_id = exec_info.executor_id.value.clone();
        let key = (framework_id.clone(), executor_id.clone());
        let refuse = |this: &mut TaskManager, message: String| {
            let task = Task {
                framework_id: framework_id.clone(),
                info: info.clone(),
                executor_id: executor_id.clone(),
                container: ContainerRef {
                    container_id: String::new(),
                    name: String::new(),
                    sandbox: Default::default(),
                    pid: None,
                },
                docker: false,
                custom: true,
                state: TaskState::TaskStaging,
                statuses: Vec::new(),
                unacked: Default::default(),
                healthy: None,
                launched: None,
                kill_tx: None,
                supervisor: None,
            };
            warn!(task_id = %task_id, %message, "Refusing task");
            this.tasks.insert(task_id.clone(), task);
            this.transition(
                &task_id,
                TaskState::TaskError,
                Some(task_status::Reason::TaskInvalid),
                message,
                None,
            );
        };
        if !self.executors.contains_key(&key) {
            match self.start_executor(&framework_id, &exec_info, &info) {
                Ok(e) => {
                    self.executors.insert(key.clone(), e);
                }
                Err(message) => {
                    refuse(self, message);
                    return Ok(());
                }
            }
        }
        let exec = self.executors.get_mut(&key).expect("inserted above");
        let task = Task {
            framework_id,
            info: info.clone(),
            executor_id,
            container: exec.container.clone(),
            docker: exec.docker,
            custom: true,
            state: TaskState::TaskStaging,
            statuses: Vec::new(),
            unacked: Default::default(),
            healthy: None,
            launched: exec.launched.clone(),
            kill_tx: None,
            supervisor: None,
        };
        exec.tasks.push(task_id.clone());
        let launch = Event {
            r#type: Some(event::Type::Launch as i32),
            launch: Some(event::Launch { task: info.clone() }),
            ..Default::default()
        };
        match &exec.stream {
            Some(tx) if tx.try_send(launch).is_ok() => {}
            _ => exec.queued.push(info),
        }
        info!(task_id = %task_id, "Task handed to its custom executor");
        self.tasks.insert(task_id, task);
        self.resize_executor(&key);
        Ok(())
    }

    /// A Docker executor's limits cover the executor and its live tasks (they share its
    /// container); they grow when a second task arrives.
    fn resize_executor(&self, key: &(String, String)) {
        let (Some(exec), Some(docker)) = (self.executors.get(key), &self.docker) else {
            return;
        };
        let live: Vec<&Task> = exec
            .tasks
            .iter()
            .filter_map(|t| self.tasks.get(t))
            .filter(|t| !is_terminal(t.state))
            .collect();
        if !exec.docker || live.len() < 2 {
            return; // The first task's resources were part of the launch.
        }
        let mut resources = exec.info.resources.clone();
        for t in live {
            resources.extend(t.info.resources.iter().cloned());
        }
        let r = crate::resources::TaskResources::from_proto(&resources);
        if r.mem <= 0.0 || r.cpus <= 0.0 {
            return; // No limits were set at launch either.
        }
        let (docker, container) = (docker.clone(), exec.container.clone());
        tokio::spawn(async move {
            if let Err(e) = docker.update(&container, r.cpus, r.mem).await {
                warn!(container = %container.name, error = %capstan_runtime::Chain(&e), "Cannot resize the executor's container");
            }
        });
    }

    /// The Mesos executor environment; `sandbox` is the sandbox as the executor sees it.
    fn executor_environment(
        &self,
        framework_id: &str,
        executor_id: &str,
        sandbox: &str,
    ) -> Vec<(String, String)> {
        let endpoint = self.cfg.agent_endpoint;
        vec![
            ("MESOS_FRAMEWORK_ID".into(), framework_id.into()),
            ("MESOS_EXECUTOR_ID".into(), executor_id.into()),
            ("MESOS_AGENT_ENDPOINT".into(), endpoint.to_string()),
            ("MESOS_DIRECTORY".into(), sandbox.into()),
            ("MESOS_SANDBOX".into(), sandbox.into()),
            ("MESOS_SLAVE_ID".into(), self.agent_id.clone()),
            ("MESOS_SLAVE_PID".into(), format!("slave(1)@{endpoint}")),
            ("LIBPROCESS_IP".into(), endpoint.ip().to_string()),
            ("LIBPROCESS_PORT".into(), "0".into()),
            ("MESOS_HTTP_COMMAND_EXECUTOR".into(), "0".into()),
            ("MESOS_CHECKPOINT".into(), "1".into()),
            (
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".into(),
                format!("{}secs", SHUTDOWN_GRACE.as_secs()),
            ),
            ("MESOS_RECOVERY_TIMEOUT".into(), "15mins".into()),
            ("MESOS_SUBSCRIPTION_BACKOFF_MAX".into(), "2secs".into()),
        ]
    }

    /// Starts an executor for its first task: a process, or a Docker container when the
    /// ExecutorInfo has a DOCKER `container`. Errors are the message the task fails with.
    fn start_executor(
        &self,
        framework_id: &str,
        exec: &ExecutorInfo,
        first_task: &TaskInfo,
    ) -> Result<Executor, String> {
        let command = exec.command.as_ref().ok_or("Executor has no command")?;
        let docker = match &exec.container {
            None => false,
            Some(c) if c.r#type() == container_info::Type::Docker => {
                if self.docker.is_none() {
                    return Err("The Docker containerizer is not available on this agent".into());
                }
                true
            }
            Some(c) => {
                return Err(format!(
                    "Executor container type {} is not supported by this agent (only DOCKER)",
                    c.r#type().as_str_name()
                ));
            }
        };
        let executor_id = exec.executor_id.value.as_str();
        let container_id = uuid::Uuid::new_v4().to_string();
        let sandbox = self.sandbox_for(framework_id, executor_id, &container_id);
        let name = if docker {
            spec::container_name(&self.agent_id, &container_id)
        } else {
            String::new()
        };
        let spec = if docker {
            let env = self.executor_environment(framework_id, executor_id, &self.cfg.sandbox_mount);
            let ctx = SpecContext {
                agent_id: &self.agent_id,
                framework_id,
                executor_id,
                container_id: &container_id,
                hostname: &self.cfg.hostname,
                advertise_ip: self.cfg.advertise_ip,
                sandbox: &sandbox,
                sandbox_mount: &self.cfg.sandbox_mount,
                policy: &self.cfg.policy,
                pids_limit: self.cfg.pids_limit,
                cpu_quota: self.cfg.cpu_quota,
                extra_labels: &self.cfg.extra_labels,
            };
            let mut resources = exec.resources.clone();
            resources.extend(first_task.resources.iter().cloned());
            let spec = spec::build_executor_spec(exec, resources, env, &ctx)
                .map_err(|e| format!("Invalid executor: {e}"))?;
            LaunchSpec::Docker(Box::new(spec))
        } else {
            let argv: Vec<String> = if command.shell() {
                match command.value.as_deref() {
                    Some(v) if !v.is_empty() => vec!["/bin/sh".into(), "-c".into(), v.into()],
                    _ => return Err("Executor shell command has no value".into()),
                }
            } else {
                let mut argv: Vec<String> = command.value.iter().cloned().collect();
                let skip = usize::from(!argv.is_empty());
                argv.extend(command.arguments.iter().skip(skip).cloned());
                argv
            };
            if argv.is_empty() {
                return Err("Executor command is empty".into());
            }
            let mut env = self.executor_environment(
                framework_id,
                executor_id,
                &sandbox.display().to_string(),
            );
            if let Ok(path) = std::env::var("PATH") {
                env.insert(0, ("PATH".into(), path));
            }
            for v in command.environment.iter().flat_map(|e| e.variables.iter()) {
                env.push((v.name.clone(), v.value.clone().unwrap_or_default()));
            }
            LaunchSpec::Process(ProcessSpec { argv, env })
        };
        std::fs::create_dir_all(&sandbox).map_err(|e| format!("Cannot create sandbox: {e}"))?;
        let container = ContainerRef {
            container_id,
            name,
            sandbox,
            pid: None,
        };
        info!(
            executor_id,
            framework_id, docker, "Starting custom executor"
        );
        let (kill_tx, supervisor) = self.spawn_executor_supervisor(
            framework_id,
            exec,
            &container,
            docker,
            Mode::Launch(Box::new(spec)),
        );
        Ok(Executor {
            info: exec.clone(),
            container,
            docker,
            launched: None,
            stream: None,
            queued: Vec::new(),
            tasks: Vec::new(),
            kill_tx,
            shutting_down: false,
            supervisor,
            pid_start: None,
            awaiting_resubscribe: false,
            pending_termination: None,
            pending_kills: Vec::new(),
        })
    }

    fn spawn_executor_supervisor(
        &self,
        framework_id: &str,
        exec: &ExecutorInfo,
        container: &ContainerRef,
        docker: bool,
        mode: Mode,
    ) -> (watch::Sender<Option<Duration>>, JoinHandle<()>) {
        let key = key_string(framework_id, &exec.executor_id.value);
        let (kill_tx, kill_rx) = watch::channel(None);
        let cz: std::sync::Arc<dyn Containerizer> = match (&self.docker, docker) {
            (Some(d), true) => d.clone(),
            _ => self.process.clone(),
        };
        let ctx = SupervisorCtx {
            task_id: key.clone(),
            container: container.clone(),
            // Carries the executor's command (its URIs are fetched too) and container.
            info: TaskInfo {
                name: key.clone(),
                task_id: TaskId { value: key },
                command: exec.command.clone(),
                container: exec.container.clone(),
                ..Default::default()
            },
            containerizer: cz,
            docker_up: self.docker_up.clone(),
            events: self.handle.event_sender(),
            kill_rx,
            policy: self.cfg.policy.clone(),
            advertise_ip: self.cfg.advertise_ip,
        };
        (kill_tx, tokio::spawn(supervisor::supervise(ctx, mode)))
    }

    /// Recovers checkpointed executors after an agent restart. Each gets a supervisor that
    /// reattaches to its process (same pid and start time) or Docker container, and waits
    /// without a stream until it SUBSCRIBEs again; one that is gone ends and fails its
    /// tasks (REASON_EXECUTOR_TERMINATED). Returns the Docker container names they own.
    pub(super) fn recover_executors(&mut self, records: Vec<ExecutorRecord>) -> Vec<String> {
        let mut names = Vec::new();
        for rec in records {
            let Some(info) = decode_msg::<ExecutorInfo>(&rec.executor_info) else {
                warn!(container_id = %rec.container_id, "Dropping an unreadable checkpointed executor");
                continue;
            };
            let executor_id = info.executor_id.value.clone();
            if rec.docker && self.docker.is_none() {
                warn!(%executor_id, "Cannot recover a Docker executor without the Docker containerizer");
                continue;
            }
            if let Some(f) = rec
                .framework_info
                .as_deref()
                .and_then(decode_msg::<FrameworkInfo>)
            {
                self.frameworks.entry(rec.framework_id.clone()).or_insert(f);
            }
            let mut pid = rec.pid;
            if !rec.docker
                && let Some(p) = pid
                && rec.pid_start.is_some()
                && process_start_time(p) != rec.pid_start
            {
                info!(%executor_id, pid = p, "The executor's pid now belongs to another process");
                pid = None;
            }
            let container = ContainerRef {
                container_id: rec.container_id,
                name: rec.container_name,
                sandbox: rec.sandbox,
                pid,
            };
            if rec.docker {
                names.push(container.name.clone());
            }
            let (kill_tx, supervisor) = self.spawn_executor_supervisor(
                &rec.framework_id,
                &info,
                &container,
                rec.docker,
                Mode::Reattach,
            );
            if rec.shutting_down {
                let _ = kill_tx.send(Some(SHUTDOWN_GRACE));
            }
            info!(%executor_id, framework_id = %rec.framework_id, "Recovered custom executor; waiting for it to subscribe again");
            let exec = Executor {
                info,
                container,
                docker: rec.docker,
                launched: None,
                stream: None,
                queued: rec.queued.iter().filter_map(|t| decode_msg(t)).collect(),
                tasks: rec.tasks,
                kill_tx,
                shutting_down: rec.shutting_down,
                supervisor,
                pid_start: rec.pid_start,
                awaiting_resubscribe: true,
                pending_termination: None,
                pending_kills: Vec::new(),
            };
            self.executors.insert((rec.framework_id, executor_id), exec);
        }
        if !self.executors.is_empty() {
            let tx = self.handle.tx.clone();
            let timeout = self.cfg.executor_reregistration_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                let _ = tx.send(super::Msg::ReregistrationTimeout).await;
            });
        }
        names
    }

    /// Recovered executors that did not subscribe again in time are destroyed; their tasks
    /// fail with REASON_EXECUTOR_REREGISTRATION_TIMEOUT (as in Mesos).
    pub(super) fn on_reregistration_timeout(&mut self) {
        let timeout = self.cfg.executor_reregistration_timeout;
        for (key, exec) in self
            .executors
            .iter_mut()
            .filter(|(_, e)| e.awaiting_resubscribe)
        {
            warn!(executor_id = %key.1, ?timeout, "The executor did not subscribe again after the agent restarted; destroying it");
            exec.awaiting_resubscribe = false;
            exec.pending_termination = Some((
                TaskState::TaskFailed,
                task_status::Reason::ExecutorReregistrationTimeout,
                format!(
                    "Executor did not re-subscribe within {}s after the agent restarted",
                    timeout.as_secs_f64()
                ),
            ));
            let _ = exec.kill_tx.send(Some(Duration::ZERO));
        }
    }

    fn executor_key_of(&self, container_id: &str) -> Option<(String, String)> {
        self.executors
            .iter()
            .find(|(_, e)| e.container.container_id == container_id)
            .map(|(k, _)| k.clone())
    }

    pub(super) fn on_executor_event(&mut self, container_id: &str, event: TaskEvent) {
        let Some(key) = self.executor_key_of(container_id) else {
            return;
        };
        match event {
            TaskEvent::Pid(pid) => self.executor_pid(&key, pid, None),
            TaskEvent::Running(launched) | TaskEvent::Reattached(launched) => {
                let pid = launched.pid;
                self.executor_pid(&key, pid.unwrap_or(0), Some(launched));
            }
            TaskEvent::Terminal {
                state,
                reason,
                message,
                ..
            } => {
                let mut exec = self.executors.remove(&key).expect("found above");
                info!(executor_id = %key.1, %message, "Custom executor ended");
                let launch_failed = state == TaskState::TaskFailed
                    && reason == Some(task_status::Reason::ContainerLaunchFailed);
                let (state, reason, message) = match exec.pending_termination.take() {
                    Some(p) => p,
                    None if launch_failed => (
                        TaskState::TaskFailed,
                        task_status::Reason::ContainerLaunchFailed,
                        format!("Executor terminated: {message}"),
                    ),
                    None => (
                        TaskState::TaskFailed,
                        task_status::Reason::ExecutorTerminated,
                        format!("Executor terminated: {message}"),
                    ),
                };
                for t in std::mem::take(&mut exec.tasks) {
                    if self
                        .tasks
                        .get(&t)
                        .is_some_and(|task| !is_terminal(task.state))
                    {
                        self.transition(&t, state, Some(reason), message.clone(), None);
                    }
                }
            }
            _ => {}
        }
    }

    /// Records an executor's pid (0: unknown) and, once running, its addresses; its tasks
    /// share both.
    fn executor_pid(&mut self, key: &(String, String), pid: u32, launched: Option<Launched>) {
        let pid = (pid != 0).then_some(pid);
        let tasks = {
            let Some(exec) = self.executors.get_mut(key) else {
                return;
            };
            if pid.is_some() && pid != exec.container.pid && !exec.docker {
                exec.pid_start = pid.and_then(process_start_time);
            }
            exec.container.pid = pid.or(exec.container.pid);
            if launched.is_some() {
                exec.launched = launched.clone();
            }
            exec.tasks.clone()
        };
        for t in tasks {
            if let Some(task) = self.tasks.get_mut(&t) {
                task.container.pid = pid.or(task.container.pid);
                if launched.is_some() {
                    task.launched = launched.clone();
                }
            }
        }
    }

    pub(super) fn on_executor_call(&mut self, call: ExecutorCall) {
        match call {
            ExecutorCall::Subscribe {
                framework_id,
                executor_id,
                subscribe,
                reply,
            } => {
                let _ = reply.send(self.executor_subscribe(framework_id, executor_id, *subscribe));
            }
            ExecutorCall::Update {
                framework_id,
                executor_id,
                status,
                reply,
            } => {
                let _ = reply.send(self.executor_update(framework_id, executor_id, *status));
            }
        }
    }

    fn executor_subscribe(
        &mut self,
        framework_id: String,
        executor_id: String,
        subscribe: call::Subscribe,
    ) -> Result<mpsc::Receiver<Event>, ExecutorApiError> {
        let key = (framework_id.clone(), executor_id.clone());
        let framework = self
            .frameworks
            .get(&framework_id)
            .cloned()
            .unwrap_or_else(|| FrameworkInfo {
                user: "root".into(),
                name: String::new(),
                id: Some(FrameworkId {
                    value: framework_id.clone(),
                }),
                ..Default::default()
            });
        let agent_info = AgentInfo {
            hostname: self.cfg.hostname.clone(),
            port: Some(i32::from(self.cfg.agent_endpoint.port())),
            id: Some(AgentId {
                value: self.agent_id.clone(),
            }),
            ..Default::default()
        };
        let Some(exec) = self.executors.get(&key) else {
            return Err(ExecutorApiError::UnknownExecutor {
                framework_id,
                executor_id,
            });
        };
        if exec.pending_termination.is_some() {
            return Err(ExecutorApiError::BadUpdate(
                "The executor is being destroyed".into(),
            ));
        }
        // Tasks handed to it that it does not know of were lost in the restart.
        let known: Vec<&str> = subscribe
            .unacknowledged_tasks
            .iter()
            .map(|t| t.task_id.value.as_str())
            .chain(
                subscribe
                    .unacknowledged_updates
                    .iter()
                    .map(|u| u.status.task_id.value.as_str()),
            )
            .collect();
        let lost: Vec<String> = exec
            .tasks
            .iter()
            .filter(|t| !known.contains(&t.as_str()))
            .filter(|t| !exec.queued.iter().any(|q| q.task_id.value == **t))
            .filter(|t| {
                self.tasks
                    .get(*t)
                    .is_some_and(|task| task.state == TaskState::TaskStaging)
            })
            .cloned()
            .collect();
        let partition_aware = framework
            .capabilities
            .iter()
            .any(|c| c.r#type == Some(framework_info::capability::Type::PartitionAware as i32));
        for t in lost {
            let state = if partition_aware {
                TaskState::TaskDropped
            } else {
                TaskState::TaskLost
            };
            warn!(task_id = %t, %executor_id, "The re-subscribing executor does not know its task");
            self.transition(
                &t,
                state,
                Some(task_status::Reason::AgentRestarted),
                "Task launched during agent restart".into(),
                None,
            );
        }
        // Updates it sent that the agent may not have recorded.
        for update in subscribe.unacknowledged_updates {
            let status = update.status;
            let task_id = status.task_id.value.clone();
            let seen = self.tasks.get(&task_id).is_some_and(|t| {
                t.statuses.iter().any(|s| s.uuid == status.uuid)
                    || t.unacked.iter().any(|s| s.uuid == status.uuid)
            });
            if seen {
                continue;
            }
            if let Err(e) = self.apply_executor_update(&key, status) {
                warn!(task_id = %task_id, %executor_id, error = %capstan_runtime::Chain(&e), "Ignoring an unacknowledged update of a re-subscribing executor");
            }
        }
        let exec = self.executors.get_mut(&key).expect("checked above");
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let mut info = exec.info.clone();
        info.framework_id = Some(FrameworkId {
            value: framework_id.clone(),
        });
        let subscribed = Event {
            r#type: Some(event::Type::Subscribed as i32),
            subscribed: Some(event::Subscribed {
                executor_info: info,
                framework_info: framework,
                agent_info,
                container_id: Some(ContainerId {
                    value: exec.container.container_id.clone(),
                    parent: None,
                }),
            }),
            ..Default::default()
        };
        let _ = tx.try_send(subscribed);
        for task in exec.queued.drain(..) {
            let _ = tx.try_send(Event {
                r#type: Some(event::Type::Launch as i32),
                launch: Some(event::Launch { task }),
                ..Default::default()
            });
        }
        for (task_id, grace) in std::mem::take(&mut exec.pending_kills) {
            if self
                .tasks
                .get(&task_id)
                .is_some_and(|t| !is_terminal(t.state))
            {
                let _ = tx.try_send(kill_event(&task_id, grace));
            }
        }
        if exec.shutting_down {
            let _ = tx.try_send(shutdown_event());
        }
        exec.stream = Some(tx);
        let resubscribed = std::mem::replace(&mut exec.awaiting_resubscribe, false);
        info!(%executor_id, %framework_id, resubscribed, "Executor subscribed");
        self.maybe_shutdown_executor(&key);
        Ok(rx)
    }

    fn executor_update(
        &mut self,
        framework_id: String,
        executor_id: String,
        status: TaskStatus,
    ) -> Result<(), ExecutorApiError> {
        let key = (framework_id.clone(), executor_id.clone());
        let Some(exec) = self.executors.get(&key) else {
            return Err(ExecutorApiError::UnknownExecutor {
                framework_id,
                executor_id,
            });
        };
        if exec.stream.is_none() {
            return Err(ExecutorApiError::NotSubscribed);
        }
        self.apply_executor_update(&key, status)
    }

    /// Records a status an executor reported, filling in what the agent knows.
    fn apply_executor_update(
        &mut self,
        key: &(String, String),
        mut status: TaskStatus,
    ) -> Result<(), ExecutorApiError> {
        let executor_id = key.1.clone();
        let Some(exec) = self.executors.get(key) else {
            return Err(ExecutorApiError::UnknownExecutor {
                framework_id: key.0.clone(),
                executor_id,
            });
        };
        let task_id = status.task_id.value.clone();
        if !exec.tasks.contains(&task_id) {
            return Err(ExecutorApiError::BadUpdate(format!(
                "Task {task_id} does not belong to executor {executor_id}"
            )));
        }
        if status.uuid.as_ref().is_none_or(|u| u.len() != 16) {
            return Err(ExecutorApiError::BadUpdate(
                "status.uuid must be a 16-byte UUID".into(),
            ));
        }
        if self
            .tasks
            .get(&task_id)
            .is_some_and(|t| is_terminal(t.state))
        {
            return Err(ExecutorApiError::BadUpdate(format!(
                "Task {task_id} already ended"
            )));
        }
        let container_id = exec.container.container_id.clone();
        let pid = exec.container.pid;
        let network_infos = exec
            .launched
            .as_ref()
            .map(|l| l.network_infos.clone())
            .unwrap_or_default();
        status.agent_id = Some(AgentId {
            value: self.agent_id.clone(),
        });
        status.executor_id = Some(capstan_proto::mesos::v1::ExecutorId {
            value: executor_id.clone(),
        });
        status.source = Some(task_status::Source::Executor as i32);
        if status.timestamp.is_none() {
            status.timestamp = Some(now_secs());
        }
        let cs = status.container_status.get_or_insert_with(Default::default);
        cs.container_id.get_or_insert(ContainerId {
            value: container_id,
            parent: None,
        });
        if cs.executor_pid.is_none() {
            cs.executor_pid = pid;
        }
        if cs.network_infos.is_empty() {
            cs.network_infos = network_infos;
        }
        let terminal = TaskState::try_from(status.state).is_ok_and(is_terminal);
        self.record_status(&task_id, status);
        if terminal {
            self.maybe_shutdown_executor(key);
        }
        Ok(())
    }

    pub(super) fn deliver_framework_message(&mut self, m: ExecutorMessage) {
        let key = (m.framework_id.clone(), m.executor_id.clone());
        match self.executors.get(&key).and_then(|e| e.stream.as_ref()) {
            Some(tx) => {
                let _ = tx.try_send(Event {
                    r#type: Some(event::Type::Message as i32),
                    message: Some(event::Message { data: m.data }),
                    ..Default::default()
                });
            }
            None => {
                warn!(executor_id = %m.executor_id, "Dropping a framework message for an executor that is not subscribed")
            }
        }
    }

    pub(super) fn executor_acknowledged(&mut self, task_id: &str, uuid: &[u8]) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let key = (task.framework_id.clone(), task.executor_id.clone());
        if let Some(tx) = self.executors.get(&key).and_then(|e| e.stream.as_ref()) {
            let _ = tx.try_send(Event {
                r#type: Some(event::Type::Acknowledged as i32),
                acknowledged: Some(event::Acknowledged {
                    task_id: TaskId {
                        value: task_id.to_owned(),
                    },
                    uuid: uuid.to_vec(),
                }),
                ..Default::default()
            });
        }
    }

    pub(super) fn kill_custom(&mut self, task_id: &str, grace: Duration) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let key = (task.framework_id.clone(), task.executor_id.clone());
        let Some(exec) = self.executors.get_mut(&key) else {
            self.transition(
                task_id,
                TaskState::TaskKilled,
                None,
                "Task killed: its executor is gone".into(),
                None,
            );
            return;
        };
        let kill = kill_event(task_id, grace);
        let queued = exec.queued.iter().any(|t| t.task_id.value == task_id);
        match &exec.stream {
            Some(tx) if tx.try_send(kill).is_ok() => {}
            // Handed to it, but it is not connected (e.g. it has to subscribe again after an
            // agent restart): the kill is sent when it subscribes.
            _ if !queued => exec.pending_kills.push((task_id.to_owned(), grace)),
            _ => {
                exec.queued.retain(|t| t.task_id.value != task_id);
                self.transition(
                    task_id,
                    TaskState::TaskKilled,
                    None,
                    "Task killed before its executor subscribed".into(),
                    None,
                );
                self.maybe_shutdown_executor(&key);
            }
        }
    }

    /// Once every task of an executor ended, it gets SHUTDOWN and, after a grace period,
    /// SIGKILL, so no executor outlives its tasks.
    fn maybe_shutdown_executor(&mut self, key: &(String, String)) {
        let all_done = {
            let Some(exec) = self.executors.get(key) else {
                return;
            };
            !exec.shutting_down
                && exec
                    .tasks
                    .iter()
                    .all(|t| self.tasks.get(t).is_none_or(|task| is_terminal(task.state)))
        };
        if !all_done {
            return;
        }
        let exec = self.executors.get_mut(key).expect("checked above");
        exec.shutting_down = true;
        info!(executor_id = %key.1, "All tasks of the executor ended; shutting it down");
        if let Some(tx) = &exec.stream {
            let _ = tx.try_send(shutdown_event());
        }
        let _ = exec.kill_tx.send(Some(SHUTDOWN_GRACE));
    }
}

fn kill_event(task_id: &str, grace: Duration) -> Event {
    Event {
        r#type: Some(event::Type::Kill as i32),
        kill: Some(event::Kill {
            task_id: TaskId {
                value: task_id.to_owned(),
            },
            kill_policy: Some(KillPolicy {
                grace_period: Some(DurationInfo {
                    nanoseconds: i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX),
                }),
            }),
        }),
        ..Default::default()
    }
}

fn shutdown_event() -> Event {
    Event {
        r#type: Some(event::Type::Shutdown as i32),
        ..Default::default()
    }
}
