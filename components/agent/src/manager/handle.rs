//! [`TaskManagerHandle`]: the manager's API for HTTP, the master link and tests, and the
//! [`EventSender`] supervisors report through. Every call is a message to the manager task.

use std::sync::Arc;
use std::time::Duration;

use capstan_proto::mesos::v1::{FrameworkId, FrameworkInfo, TaskInfo};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{AgentSnapshot, ManagerError, Msg, StatusUpdate, TaskEvent, TaskManagerHandle};

impl TaskManagerHandle {
    pub(super) async fn ask<T>(
        &self,
        f: impl FnOnce(oneshot::Sender<T>) -> Msg,
    ) -> Result<T, ManagerError> {
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

    /// Every unacknowledged update, oldest first per task, including those whose checkpoint
    /// write has not completed yet.
    pub async fn unacknowledged(&self) -> Result<Vec<StatusUpdate>, ManagerError> {
        self.ask(|reply| Msg::Unacked {
            durable_only: false,
            reply,
        })
        .await
    }

    /// The unacknowledged updates that may be sent to the master: those whose checkpoint
    /// write completed, oldest first per task.
    pub async fn deliverable(&self) -> Result<Vec<StatusUpdate>, ManagerError> {
        self.ask(|reply| Msg::Unacked {
            durable_only: true,
            reply,
        })
        .await
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
