//! `capstan idle` (hidden): the daemon lifecycle with no daemon. Loads the config, sets up
//! logging, reports READY=1 and waits for SIGTERM/SIGINT. The runtime and testkit tests use
//! it; an operator can use it to check a node's systemd and journald set-up.

use std::process::ExitCode;

use capstan_runtime::{notify_ready, notify_status, notify_stopping};
use tracing::info;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("idle", args, |_node, shutdown| async move {
        notify_ready();
        notify_status("idle");
        info!("Ready; idle until SIGTERM or SIGINT");
        shutdown.cancelled().await;
        notify_stopping();
        Ok(())
    })
}
