//! Containerizers: how a task's process is started, waited for, killed and cleaned up.
//! [`docker::DockerContainerizer`] talks to the Docker Engine API; [`process::ProcessContainerizer`]
//! runs command tasks as child processes in their own process group.

pub mod docker;
#[cfg(test)]
pub mod fake;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use capstan_proto::mesos::v1::NetworkInfo;
use futures::future::BoxFuture;

use crate::spec::ContainerSpec;

/// What to run.
#[derive(Debug, Clone)]
pub enum LaunchSpec {
    Docker(Box<ContainerSpec>),
    Process(ProcessSpec),
}

/// A command task run as a process under the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// argv; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Identifies a container across agent restarts (all of it is checkpointed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub container_id: String,
    /// Docker container name, or empty for processes.
    pub name: String,
    pub sandbox: PathBuf,
    /// The process id of a process task.
    pub pid: Option<u32>,
}

/// A started container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Launched {
    pub network_infos: Vec<NetworkInfo>,
    pub pid: Option<u32>,
    /// The IP health checks reach the task on.
    pub ip: Option<String>,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// Exit status, when the process exited normally.
    pub exit_code: Option<i64>,
    /// Killed by this signal.
    pub signal: Option<i32>,
    /// Killed by the kernel's OOM killer for exceeding its memory limit.
    pub oom_killed: bool,
    /// Extra context (e.g. "exit status unknown: the agent restarted").
    pub note: Option<String>,
}

impl Termination {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.oom_killed
    }

    /// "Command exited with status 3", "Command terminated by signal 9", ...
    pub fn describe(&self) -> String {
        let mut msg = if self.oom_killed {
            "Memory limit exceeded: the container was killed by the OOM killer".to_owned()
        } else if let Some(code) = self.exit_code {
            format!("Command exited with status {code}")
        } else if let Some(sig) = self.signal {
            format!("Command terminated by signal {sig}")
        } else {
            "Command terminated".to_owned()
        };
        if let Some(note) = &self.note {
            msg.push_str(" (");
            msg.push_str(note);
            msg.push(')');
        }
        msg
    }
}

/// A container found when the agent recovers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reattached {
    Running(Launched),
    Exited(Termination),
    /// The container no longer exists.
    Missing,
}

/// Errors of a launch; the message is what the framework sees.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("Failed to obtain image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("Docker network {0} does not exist")]
    UnknownNetwork(String),
    #[error("Failed to create container: {0}")]
    Create(String),
    #[error("Failed to start container: {0}")]
    Start(String),
    #[error("Failed to run command: {0}")]
    Spawn(String),
    #[error("The Docker engine is unavailable: {0}")]
    EngineUnavailable(String),
    #[error("{0}")]
    Unsupported(String),
}

/// Errors of operations on an existing container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The engine cannot be reached; retry later.
    #[error("the Docker engine is unavailable: {0}")]
    Unavailable(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    Other(String),
}

/// A container that carries this agent's name prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedContainer {
    pub name: String,
    pub running: bool,
    /// The `capstan.agent_run` label: which agent process created it.
    pub run: Option<String>,
}

/// Runs containers. Every method may be called again after an agent restart with a
/// [`ContainerRef`] read from the checkpoint.
pub trait Containerizer: Send + Sync + 'static {
    /// Creates and starts the container; on error nothing is left behind.
    fn launch<'a>(
        &'a self,
        container: &'a ContainerRef,
        spec: &'a LaunchSpec,
    ) -> BoxFuture<'a, Result<Launched, LaunchError>>;

    /// Finds a container after an agent restart and resumes copying its logs.
    fn reattach<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<Reattached, ContainerError>>;

    /// Resolves once the container has ended (its logs are fully written by then).
    fn wait<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>>;

    /// SIGTERM, then SIGKILL after `grace` unless it ended.
    fn kill<'a>(
        &'a self,
        container: &'a ContainerRef,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ContainerError>>;

    /// Removes whatever is left of the container. Idempotent.
    fn destroy<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<(), ContainerError>>;

    /// Changes CPU and memory limits of a running container.
    fn update<'a>(
        &'a self,
        container: &'a ContainerRef,
        cpus: f64,
        mem_mb: f64,
    ) -> BoxFuture<'a, Result<(), ContainerError>>;

    /// Runs `argv` inside the container (COMMAND health checks) and returns its exit status.
    fn exec<'a>(
        &'a self,
        container: &'a ContainerRef,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<i64, ContainerError>>;
}
