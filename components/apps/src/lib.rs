//! `capstan apps` (port 8080): Marathon-compatible long-running services. It owns app
//! definitions and their versions, groups, deployments, the launch queue and the task
//! records, serves Marathon's REST API (`/v2/...`, the 2013 `/v1/apps/start` and
//! `/v1/endpoints`, `/v2/events` as SSE), and is a Mesos framework named `marathon` on the
//! master through the public v1 scheduler HTTP API, exactly like Marathon.
//!
//! Key decision: the hard logic is pure and property-tested — app model and validation
//! ([`model`]), offer matching with constraints ([`placement`]), deployment planning,
//! rolling restarts, kill selection and backoff ([`planner`]) and readiness ([`readiness`]).
//! All mutable state lives in one synchronous state machine ([`core::Core`]) owned by one
//! task; the HTTP API, the Mesos scheduler driver ([`driver`]) and the health and readiness
//! checker send it closures and read its answers.
//! Everything persistent goes through the [`store::Store`] trait: coord (`capstan coord`) when
//! configured — then instances elect a leader through coord, followers proxy to it, and a new
//! leader re-registers with the stored framework id and reconciles — else memory. Scheduler
//! calls leave only after every store write queued before them is persisted, so a task is
//! stored before it is launched and a new leader knows every task the old one started.

pub mod config;
pub mod core;
pub mod driver;
pub mod events;
pub mod health;
mod http;
pub mod mesos;
pub mod model;
pub mod placement;
pub mod planner;
pub mod readiness;
mod server;
pub mod store;

pub use config::Config;
pub use server::{Server, ServerHandle, StartError, Stopped};
pub use store::{CoordStore, InMemoryStore, Store, StoreError};
