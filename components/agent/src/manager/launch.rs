//! Launching a task: its sandbox, what to run (a Docker container or a process, decided by
//! the pure [`crate::spec`] module), and its supervisor.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use capstan_proto::mesos::v1::{TaskInfo, TaskState, task_status};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{ManagerError, Task, TaskManager, is_terminal};
use crate::containerizer::{ContainerRef, Containerizer, LaunchSpec, ProcessSpec};
use crate::resources::TaskResources;
use crate::spec::{self, SpecContext};
use crate::supervisor::{self, Mode, SupervisorCtx};

impl TaskManager {
    pub(super) fn sandbox_for(
        &self,
        framework_id: &str,
        executor_id: &str,
        container_id: &str,
    ) -> PathBuf {
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

    pub(super) fn launch(
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
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn launch_spec(
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
                policy: &self.cfg.policy,
                pids_limit: self.cfg.pids_limit,
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

    pub(super) fn spawn_supervisor(&self, task: &mut Task, mode: Mode) {
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
            policy: self.cfg.policy.clone(),
            advertise_ip: self.cfg.advertise_ip,
        };
        task.kill_tx = Some(kill_tx);
        task.supervisor = Some(tokio::spawn(supervisor::supervise(ctx, mode)));
    }
}
