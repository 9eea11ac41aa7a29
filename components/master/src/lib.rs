//! The Capstan master (`capstan master`, port 5050): the Mesos-compatible scheduler API
//! (`/api/v1/scheduler`), operator API (`/api/v1`), read-only state endpoints, the
//! Capstan agent protocol (`/api/capstan/agent/v1`, see
//! `components/proto/proto/capstan/agent/v1/agent.proto`) and the offer allocator.
//!
//! Key decision: all mutable state lives in one synchronous state machine ([`core`]) owned
//! by a single task; HTTP handlers send it closures and streams are bounded channels of
//! pre-framed RecordIO records. The allocator ([`allocator`]) is pure and property-tested.
//! Mesos objects (TaskInfo, FrameworkInfo, statuses) are kept as their Mesos JSON so that
//! everything a framework sends is passed through to agents and state endpoints unchanged.

pub mod allocator;
pub mod config;
pub mod core;
pub mod ha;
mod http;
pub mod registry;
pub mod resources;
mod server;
pub mod wire;

pub use config::{Config, CoordConfig};
pub use http::Leadership;
pub use server::{Server, ServerHandle, StartError, Stopped};
