//! Test harness for every Capstan crate's tests and benchmarks: unique temp dirs and free
//! loopback ports, [`wait_until`] (poll a condition against a deadline, never sleep), the real
//! `capstan` binary as a [`CapstanProcess`] that is only handed back once it told us READY=1
//! over `NOTIFY_SOCKET` (kill, pause, restart, read its log), [`FaultProxy`] to partition nodes,
//! Docker helpers that label every test container and remove them on drop, and Python
//! clients from PyPI (pymesos) in a shared virtualenv.
//!
//! Key decision: this is test code, so errors are `anyhow` with messages that say what was
//! awaited and what was last seen; a failing test should explain itself without a re-run.

pub mod docker;
pub mod machines;
pub mod net;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod python;
pub mod sim_agent;
pub mod wait;

/// The Docker Engine client testkit uses, so tests need no `bollard` dependency of their own.
pub use bollard;
pub use docker::{
    ContainerCleanup, TEST_LABEL, docker, ensure_image, remove_stale_test_containers,
    remove_test_containers,
};
pub use net::{bind_loopback, free_port, free_ports, loopback_addr};
/// Signals for [`CapstanProcess::signal`].
pub use nix::sys::signal::Signal;
pub use process::{CapstanCommand, CapstanProcess, ConfigText, capstan_bin};
pub use proxy::FaultProxy;
pub use python::pymesos_python;
pub use python::{DockerClients, docker_clients};
pub use tempfile::TempDir;
pub use wait::{PollOutcome, wait_until};

/// A fresh, uniquely named temporary directory, removed when dropped.
pub fn temp_dir() -> anyhow::Result<TempDir> {
    Ok(tempfile::Builder::new().prefix("capstan-test-").tempdir()?)
}
