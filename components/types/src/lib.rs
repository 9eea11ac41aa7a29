//! Domain types shared by every Capstan crate, with no I/O: typed ids ([`ids`]), task states
//! and their names, resource amounts and their arithmetic, the reconnect backoff every client
//! uses, the layer-4 VIP table ([`vip`]), the container policy apps and agents both enforce
//! ([`policy`]), who may call what ([`access`]), and the versions Capstan reports.
//!
//! Key decision: a type lives here once a second crate needs it, so two daemons can never
//! disagree on what a name means (whether a state is terminal, how long to wait before
//! reconnecting); the crates still meet over the wire through `capstan-proto`.

pub mod access;
pub mod backoff;
pub mod cluster;
pub mod error;
pub mod ids;
pub mod policy;
pub mod resources;
pub mod task_state;
pub mod vip;

pub use access::{Access, ClientCredential, NodeRole, Principal, Role, SecurityMode};
pub use backoff::Backoff;
pub use error::Chain;
pub use ids::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId};
pub use policy::ContainerPolicy;
pub use resources::{RangeSet, Resources};
pub use task_state::TaskState;

/// The Mesos release whose HTTP APIs Capstan's master and agent speak (`/version`,
/// `/master/state`, framework and agent info).
pub const MESOS_VERSION: &str = "1.11.0";
