//! `capstan daemon idle` (hidden): the daemon lifecycle with no daemon. Loads the config, sets up
//! logging, reports READY=1 and waits for SIGTERM/SIGINT. The runtime and testkit tests use
//! it; an operator can use it to check a node's systemd and journald set-up.

use std::process::ExitCode;

use capstan_runtime::{Exit, notify_status};
use tracing::info;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("idle", args, |_node, shutdown| async move {
        Ok(async move {
            notify_status("idle");
            info!("Ready; idle until SIGTERM or SIGINT");
            shutdown.cancelled().await;
            Exit::Requested
        })
    })
}
