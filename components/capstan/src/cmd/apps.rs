//! `capstan apps`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("apps", args, |node, shutdown| async move {
        // Binds, reports READY=1 to systemd, serves until the shutdown token fires.
        capstan_apps::run(node.apps.unwrap_or_default(), shutdown).await?;
        Ok(())
    })
}
