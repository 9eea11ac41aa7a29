//! systemd readiness notification (`Type=notify` units). Without `NOTIFY_SOCKET` these do
//! nothing, so daemons call them unconditionally. Test harnesses set `NOTIFY_SOCKET` to learn
//! when a spawned daemon is ready.

use sd_notify::NotifyState;
use tracing::{debug, warn};

/// Tells the service manager the daemon is ready. Call once every listener is bound.
pub fn notify_ready() {
    send(&[NotifyState::Ready], "READY=1");
}

/// Sets the one-line status `systemctl status` shows.
pub fn notify_status(status: &str) {
    send(&[NotifyState::Status(status)], "STATUS");
}

/// Tells the service manager a graceful shutdown has begun.
pub fn notify_stopping() {
    send(&[NotifyState::Stopping], "STOPPING=1");
}

fn send(state: &[NotifyState<'_>], what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(state) {
        Ok(()) => debug!(state = what, "Notified service manager"),
        Err(e) => warn!(state = what, error = %e, "Cannot notify service manager"),
    }
}
