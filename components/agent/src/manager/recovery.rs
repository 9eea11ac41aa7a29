//! Recovery after an agent restart: checkpointed tasks are reattached to their containers
//! (or fail when those are gone), unacknowledged updates are sent again, and containers
//! named for this agent that nothing owns are destroyed.

use capstan_proto::mesos::v1::{TaskInfo, TaskState, task_status};
use tracing::{info, warn};

use super::{StatusUpdate, Task, TaskManager, is_terminal};
use crate::checkpoint::{self, TaskRecord, decode_msg};
use crate::containerizer::ContainerRef;
use crate::containerizer::docker::DockerContainerizer;
use crate::spec;
use crate::supervisor::Mode;

impl TaskManager {
    pub(super) fn recover(
        &mut self,
        records: Vec<TaskRecord>,
        executors: Vec<checkpoint::ExecutorRecord>,
    ) {
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
        if let (Some(docker), true) = (self.engine.clone(), self.cfg.kill_orphans) {
            let agent_id = self.agent_id.clone();
            let mut up = self.docker_up.clone();
            let run = self.cfg.extra_labels.get(spec::LABEL_RUN).cloned();
            tokio::spawn(async move {
                let _ = up.wait_for(|u| *u).await;
                destroy_orphans(&docker, &agent_id, &known_names, run).await;
            });
        }
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
                    warn!(container = %c.name, error = %capstan_runtime::Chain(&e), "Cannot destroy orphan container");
                }
            }
        }
        Err(e) => {
            warn!(error = %capstan_runtime::Chain(&e), "Cannot list containers to find orphans")
        }
    }
}
