//! The Marathon v2 wire model that every Capstan crate speaking Marathon shares, and a typed
//! client for the apps (Marathon) API.
//!
//! The model is pure (no tokio, no I/O): app definitions ([`AppDefinition`] and its parts)
//! with Marathon's defaults, the legacy spellings it still accepts and their normalisation,
//! validation into Marathon's 422 `{path, errors}` [`Violation`]s with Capstan's bounds
//! ([`limits`]), path ids ([`PathId`]), version timestamps ([`Timestamp`]), and the read views
//! the API answers with ([`App`], [`Task`], [`Deployment`], [`Group`], [`DeploymentResult`],
//! [`Info`], [`Event`]). `capstan apps` parses and validates with these types; the catalog, the
//! user CLI, the Docker-API front end and the console build and read them.
//!
//! Key decision: one definition of each wire type, so a field the daemon writes is a field
//! every client reads. The client ([`Client`], feature `client`, on by default) sends plain
//! requests: an apps follower proxies to its leader, so no redirect handling is needed.

pub mod app;
pub mod image;
pub mod limits;
pub mod path;
pub mod sse;
pub mod time;
pub mod views;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod error;

pub use app::{
    AppDefinition, Container, Docker, FetchUri, HealthCheck, KillSelection, NetMode, Network,
    Parameter, PortDefinition, PortMapping, PortSpec, ReadinessCheck, UnreachableStrategy,
    UpgradeStrategy, VersionInfo, Violation, Volume,
};
pub use capstan_types::TaskState;
pub use path::PathId;
pub use sse::Event;
pub use time::Timestamp;
pub use views::{
    App, CurrentAction, Deployment, DeploymentAction, DeploymentActionKind, DeploymentRef,
    DeploymentResult, DeploymentStep, ErrorBody, Group, HealthCheckResult, Info, IpAddress, Task,
    TaskFailure,
};

#[cfg(feature = "client")]
pub use client::{AppEmbed, Client, Created, EventStream, KillTasks, Killed, ListApps};
#[cfg(feature = "client")]
pub use error::ClientError;
