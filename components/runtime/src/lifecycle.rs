//! The daemon lifecycle every Capstan daemon shares, and why a daemon ended.
//!
//! A daemon crate's `Server::start(config, shutdown)` binds its listeners, spawns its tasks and
//! returns a handle; it never talks to systemd. The binary then sends `READY=1`, waits on the
//! handle, sends `STOPPING=1` and turns the daemon's [`Exit`] into the process's exit code:
//! 0 only when a stop was asked for, non-zero when the daemon ended by itself (it lost
//! leadership, abdicated, a store write failed), so systemd's `Restart=on-failure` and
//! `capstan dev` start it again as a standby.
//!
//! A daemon that owns its runtime (pingora handles signals itself and may fork) cannot hand a
//! future back. It takes the second entry path instead: it implements [`OwnRuntime`], whose
//! `run` is called on the main thread with a [`Lifecycle`] to report readiness through and
//! returns its [`Exit`] the same way; the binary keeps the config loading, logging and exit
//! codes for both paths.

use std::error::Error;

/// Why a daemon stopped.
#[derive(Debug)]
pub enum Exit {
    /// A stop was asked for (a signal, `shutdown()`): the process exits 0.
    Requested,
    /// The daemon ended by itself: the process exits non-zero.
    Failed(Box<dyn Error + Send + Sync>),
}

impl Exit {
    /// The daemon ended by itself because of `e`.
    pub fn failed(e: impl Error + Send + Sync + 'static) -> Exit {
        Exit::Failed(Box::new(e))
    }

    pub fn is_requested(&self) -> bool {
        matches!(self, Exit::Requested)
    }

    /// `Ok` for a requested stop, else the reason.
    pub fn into_result(self) -> Result<(), Box<dyn Error + Send + Sync>> {
        match self {
            Exit::Requested => Ok(()),
            Exit::Failed(e) => Err(e),
        }
    }
}

/// What a daemon that owns its runtime reports through (see [`OwnRuntime`]).
pub trait Lifecycle: Send + Sync {
    /// Every listener is bound: the service manager may consider the daemon started.
    fn ready(&self);
    /// A graceful stop has begun.
    fn stopping(&self);
}

/// The second entry path, for a daemon that runs its own event loop and signal handling.
pub trait OwnRuntime {
    type Config;
    /// Runs the daemon on the calling thread until it stops; calls `lifecycle.ready()` once
    /// it serves.
    fn run(config: Self::Config, lifecycle: &dyn Lifecycle) -> Exit;
}

/// The lifecycle of a daemon under systemd (or `capstan dev`, which speaks the same protocol).
pub struct SystemdLifecycle;

impl Lifecycle for SystemdLifecycle {
    fn ready(&self) {
        crate::notify_ready();
    }
    fn stopping(&self) {
        crate::notify_stopping();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn only_a_requested_stop_is_success() {
        assert!(Exit::Requested.into_result().is_ok());
        assert!(
            Exit::failed(Outer(std::io::Error::other("x")))
                .into_result()
                .is_err()
        );
    }
}
