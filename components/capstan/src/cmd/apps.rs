//! `capstan daemon apps`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("apps", args, |node, shutdown| async move {
        let server = capstan_apps::Server::start(node.apps.unwrap_or_default(), shutdown).await?;
        Ok(server.wait())
    })
}
