//! `capstan daemon swarm`: a Docker Engine API front end that runs containers on the whole
//! cluster. The docker CLI (and, later, the SDK and compose) point at it
//! (`DOCKER_HOST=tcp://<master>:2375`); it is a Mesos v1 scheduler framework on the masters
//! that turns Docker API calls into tasks for the agents' Docker containerizer.
//!
//! Key decisions (from the research notes, `l4lb-and-docker-api.md` Part 2): `create` only
//! records the container (in coord, so ids survive a restart of swarm); `start` launches the
//! task and answers once it runs or failed, so an attach made before start loses nothing;
//! `wait` sends its headers at once; `stop`, `kill` and `rm` are Mesos kills plus
//! bookkeeping. Logs are read from the task's sandbox through the agent's `/files` API and
//! framed as Docker's multiplexed stream. The pure cores — the route table ([`routes`]), the
//! create body → task translation ([`translate`]), the client views and filters ([`views`])
//! and the container state machine ([`model`]) — are table-tested without sockets.

#![recursion_limit = "256"]

pub mod config;
pub mod http;
pub mod logs;
pub mod model;
pub mod routes;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod store;
pub mod time;
pub mod translate;
pub mod views;

pub use config::Config;
pub use server::{Server, ServerHandle, StartError};
