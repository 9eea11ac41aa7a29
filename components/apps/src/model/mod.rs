//! The app model: the Marathon wire model (path ids, timestamps, app definitions and their
//! validation) comes from `capstan-marathon`, shared with every client of the API; the task
//! records are apps' own.

pub use capstan_marathon::{app, image, limits, path, time};
pub mod task;

pub use capstan_marathon::{
    AppDefinition, HealthCheck, KillSelection, NetMode, PathId, PortSpec, ReadinessCheck,
    Timestamp, UnreachableStrategy, Violation,
};
pub use task::{HealthResult, TaskRecord};
