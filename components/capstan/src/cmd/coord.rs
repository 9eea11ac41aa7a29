//! `capstan coord`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("coord", args, |node, shutdown| async move {
        // Server::start binds, joins the cluster and reports READY=1 to systemd.
        let server = capstan_coord::Server::start(node.coord.unwrap_or_default(), shutdown).await?;
        server.wait().await?;
        Ok(())
    })
}
