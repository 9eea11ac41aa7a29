//! The app model: path ids, timestamps, app definitions and task records.

pub mod app;
pub mod path;
pub mod task;
pub mod time;

pub use app::{
    AppDefinition, HealthCheck, KillSelection, NetMode, PortSpec, ReadinessCheck,
    UnreachableStrategy, Violation,
};
pub use path::PathId;
pub use task::{HealthResult, TaskRecord};
pub use time::Timestamp;
