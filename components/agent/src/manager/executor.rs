//! Custom executors (Mesos executor API v1, `POST /api/v1/executor`).
//!
//! A task whose TaskInfo carries an `executor` runs under that executor: the agent starts the
//! executor's command as a process (once per framework and executor id), hands it the Mesos
//! executor environment, and, once it SUBSCRIBEs, streams it LAUNCH / KILL / ACKNOWLEDGED /
//! SHUTDOWN events. The executor reports task states with UPDATE calls; those go through the
//! same checkpointed, acknowledged status-update path as the agent's own. When all its tasks
//! ended the executor is shut down; when it exits, its unfinished tasks fail.
//! Executors run as processes only and are not recovered after an agent restart.

use std::time::Duration;

use capstan_proto::mesos::v1::executor::{Event, event};
use capstan_proto::mesos::v1::{
    AgentId, AgentInfo, ContainerId, DurationInfo, ExecutorInfo, FrameworkId, FrameworkInfo,
    KillPolicy, TaskId, TaskInfo, TaskState, TaskStatus, task_status,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{ManagerError, Task, TaskEvent, TaskManager, TaskManagerHandle, is_terminal, now_secs};
use crate::containerizer::{ContainerRef, Containerizer, LaunchSpec, ProcessSpec};
use crate::supervisor::{self, Mode, SupervisorCtx};

/// Supervisor "task ids" of executors start with this, so their events are told apart.
pub const EXECUTOR_KEY_PREFIX: &str = "\u{0}executor/";

/// How long an executor gets between SHUTDOWN and SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const EVENT_BUFFER: usize = 256;

pub(crate) struct Executor {
    info: ExecutorInfo,
    container: ContainerRef,
    stream: Option<mpsc::Sender<Event>>,
    queued: Vec<TaskInfo>,
    tasks: Vec<String>,
    kill_tx: watch::Sender<Option<Duration>>,
    shutting_down: bool,
    supervisor: JoinHandle<()>,
}

impl Drop for Executor {
    /// Dropped when it ended (its watcher is done) or when the agent stops.
    fn drop(&mut self) {
        self.supervisor.abort();
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
        let (framework_id, executor_id) = (framework_id.to_owned(), executor_id.to_owned());
        self.ask(|reply| {
            super::Msg::Executor(ExecutorCall::Subscribe {
                framework_id,
                executor_id,
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
        if exec_info.container.is_some() {
            refuse(
                self,
                "Custom executors in containers are not supported by this agent".into(),
            );
            return Ok(());
        }
        if !self.executors.contains_key(&key) {
            match self.start_executor(&framework_id, &exec_info) {
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
        self.checkpoint();
        Ok(())
    }

    fn start_executor(&self, framework_id: &str, exec: &ExecutorInfo) -> Result<Executor, String> {
        let command = exec.command.as_ref().ok_or("Executor has no command")?;
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
        let executor_id = exec.executor_id.value.as_str();
        let container_id = uuid::Uuid::new_v4().to_string();
        let sandbox = self.sandbox_for(framework_id, executor_id, &container_id);
        std::fs::create_dir_all(&sandbox).map_err(|e| format!("Cannot create sandbox: {e}"))?;
        let endpoint = self.cfg.agent_endpoint;
        let dir = sandbox.display().to_string();
        let mut env: Vec<(String, String)> = vec![
            ("MESOS_FRAMEWORK_ID".into(), framework_id.into()),
            ("MESOS_EXECUTOR_ID".into(), executor_id.into()),
            ("MESOS_AGENT_ENDPOINT".into(), endpoint.to_string()),
            ("MESOS_DIRECTORY".into(), dir.clone()),
            ("MESOS_SANDBOX".into(), dir),
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
        ];
        if let Ok(path) = std::env::var("PATH") {
            env.insert(0, ("PATH".into(), path));
        }
        for v in command.environment.iter().flat_map(|e| e.variables.iter()) {
            env.push((v.name.clone(), v.value.clone().unwrap_or_default()));
        }
        let container = ContainerRef {
            container_id,
            name: String::new(),
            sandbox,
            pid: None,
        };
        let key = key_string(framework_id, executor_id);
        let (kill_tx, kill_rx) = watch::channel(None);
        let cz: std::sync::Arc<dyn Containerizer> = self.process.clone();
        let ctx = SupervisorCtx {
            task_id: key.clone(),
            container: container.clone(),
            // Carries the executor's command so its URIs are fetched too.
            info: TaskInfo {
                name: key.clone(),
                task_id: TaskId { value: key },
                command: exec.command.clone(),
                ..Default::default()
            },
            containerizer: cz,
            docker_up: self.docker_up.clone(),
            events: self.handle.event_sender(),
            kill_rx,
            advertise_ip: self.cfg.advertise_ip,
        };
        let spec = LaunchSpec::Process(ProcessSpec { argv, env });
        info!(executor_id, framework_id, "Starting custom executor");
        let supervisor = tokio::spawn(supervisor::supervise(ctx, Mode::Launch(Box::new(spec))));
        Ok(Executor {
            info: exec.clone(),
            container,
            stream: None,
            queued: Vec::new(),
            tasks: Vec::new(),
            kill_tx,
            shutting_down: false,
            supervisor,
        })
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
            TaskEvent::Pid(pid)
            | TaskEvent::Running(crate::containerizer::Launched { pid: Some(pid), .. }) => {
                let tasks = {
                    let exec = self.executors.get_mut(&key).expect("found above");
                    exec.container.pid = Some(pid);
                    exec.tasks.clone()
                };
                for t in tasks {
                    if let Some(task) = self.tasks.get_mut(&t) {
                        task.container.pid = Some(pid);
                    }
                }
                self.checkpoint();
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
                for t in std::mem::take(&mut exec.tasks) {
                    if self
                        .tasks
                        .get(&t)
                        .is_some_and(|task| !is_terminal(task.state))
                    {
                        let reason = if launch_failed {
                            task_status::Reason::ContainerLaunchFailed
                        } else {
                            task_status::Reason::ExecutorTerminated
                        };
                        self.transition(
                            &t,
                            TaskState::TaskFailed,
                            Some(reason),
                            format!("Executor terminated: {message}"),
                            None,
                        );
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_executor_call(&mut self, call: ExecutorCall) {
        match call {
            ExecutorCall::Subscribe {
                framework_id,
                executor_id,
                reply,
            } => {
                let _ = reply.send(self.executor_subscribe(framework_id, executor_id));
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
        let Some(exec) = self.executors.get_mut(&key) else {
            return Err(ExecutorApiError::UnknownExecutor {
                framework_id,
                executor_id,
            });
        };
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
        if exec.shutting_down {
            let _ = tx.try_send(shutdown_event());
        }
        exec.stream = Some(tx);
        info!(%executor_id, %framework_id, "Executor subscribed");
        Ok(rx)
    }

    fn executor_update(
        &mut self,
        framework_id: String,
        executor_id: String,
        mut status: TaskStatus,
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
        let terminal = TaskState::try_from(status.state).is_ok_and(is_terminal);
        self.record_status(&task_id, status);
        if terminal {
            self.maybe_shutdown_executor(&key);
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
        if let Some(tx) = &exec.stream {
            let _ = tx.try_send(Event {
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
            });
        } else {
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

fn shutdown_event() -> Event {
    Event {
        r#type: Some(event::Type::Shutdown as i32),
        ..Default::default()
    }
}
