//! `capstan master`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("master", args, |node, shutdown| async move {
        // Binds, reports READY=1 to systemd, serves until the shutdown token fires.
        capstan_master::run(node.master.unwrap_or_default(), shutdown).await?;
        Ok(())
    })
}
