//! The Capstan agent (`capstan daemon agent`, port 5051): runs tasks as Docker containers (Docker
//! Engine API via bollard), as plain processes, or under custom executors (Mesos executor
//! API); checkpoints them; reports their states to the master over `capstan.agent.v1`
//! ([`master`]); runs their health checks; and serves `/state`, `/health`,
//! `/metrics/snapshot`, `/containers`, the sandbox `/files/*` endpoints and, for swarm, exec,
//! top and stats on its own task containers ([`task_docker`]).
//!
//! Key decision: one task-manager task owns all task state and the checkpoint; per-task
//! supervisors drive a [`containerizer::Containerizer`] and only send it events. What to
//! create for a task is decided by the pure [`spec`] module, so the Docker side is a thin
//! translation. Containers (of tasks and of custom executors) are named
//! `mesos-<agent-id>.<container-id>` and labelled with the task or executor, framework and
//! agent, which is how a restarted agent finds, reattaches to, or destroys them; custom
//! executors are checkpointed too and wait for their executor to SUBSCRIBE again
//! ([`manager::executor`]). The checkpoint is one versioned record per task and executor
//! ([`checkpoint`]), written off the async runtime; a status update reaches the master only
//! after its record is durable ([`manager::persist`]).

pub mod checkpoint;
pub mod config;
pub mod containerizer;
pub mod fetcher;
pub mod health;
pub mod http;
pub mod manager;
pub mod master;
pub mod resources;
pub mod server;
pub mod spec;
pub mod supervisor;
pub mod task_docker;

pub use config::Config;
pub use manager::{AgentSnapshot, ManagerError, StatusUpdate, TaskManagerHandle, TaskView};
pub use server::{Server, ServerHandle, StartError};
