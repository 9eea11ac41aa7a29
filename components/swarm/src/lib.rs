//! `capstan daemon swarm`: a Docker Engine API front end that runs containers on the whole
//! cluster. The docker CLI, the Python docker SDK and docker-compose 1.29 point at it
//! (`DOCKER_HOST=tcp://<master>:2375`); it is a Mesos v1 scheduler framework on the masters
//! that turns Docker API calls into tasks for the agents' Docker containerizer.
//!
//! Key decisions (from the research notes, `l4lb-and-docker-api.md` Part 2): `create` only
//! records the container (in coord, so ids survive a restart of swarm); `start` launches the
//! task and answers once it runs or failed, so an attach made before start loses nothing;
//! `wait` sends its headers at once; `stop`, `kill` and `rm` are Mesos kills plus
//! bookkeeping. Logs are read from the task's sandbox through the agent's `/files` API and
//! framed as Docker's multiplexed stream; `exec`, `top` and `stats` ([`exec`]) are run by the
//! agent of the container's task, on that task's container only. User networks ([`networks`]) are records in coord
//! that track attachments and aliases (the tasks run with bridge networking); restart
//! policies relaunch a container whose task ended by itself; `/events` ([`events`]) streams
//! what swarm did; classic Swarm's placement constraints ([`constraints`]) filter offers.
//! The pure cores — the route table ([`routes`]), the create body → task translation
//! ([`translate`]), the client views and filters ([`views`]) and the container state machine
//! ([`model`]) — are table-tested without sockets. See `docs/swarm.md`.

#![recursion_limit = "256"]

pub mod config;
pub mod constraints;
pub mod events;
pub mod exec;
pub mod http;
pub mod leader;
pub mod logs;
pub mod model;
pub mod netapi;
pub mod networks;
pub mod routes;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod store;
pub mod time;
pub mod translate;
pub mod views;
pub mod volapi;
pub mod volumes;

pub use config::Config;
pub use server::{Server, ServerHandle, StartError};
