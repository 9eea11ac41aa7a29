//! `capstan daemon master`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("master", args, |node, shutdown| async move {
        let server =
            capstan_master::Server::start(node.master.unwrap_or_default(), shutdown).await?;
        Ok(server.wait())
    })
}
