//! SIGTERM / SIGINT become a cancelled [`CancellationToken`]; a second signal exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Exit code used when a second signal cuts a graceful shutdown short (128 + SIGINT).
const EXIT_ON_SECOND_SIGNAL: i32 = 130;

/// Returns a token cancelled on the first SIGTERM or SIGINT. A second signal ends the process
/// immediately. Must be called inside a tokio runtime; the handlers are installed before this
/// returns, so no signal is lost between start-up and the first `.await`.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "Cannot install signal handlers; only the default actions apply");
            return token;
        }
    };
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "Received signal, shutting down");
        cancel.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        warn!(signal = name, "Received a second signal, exiting now");
        log::logger().flush();
        std::process::exit(EXIT_ON_SECOND_SIGNAL);
    });
    token
}
