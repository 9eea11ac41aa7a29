//! `capstan daemon l4lb`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("l4lb", args, |node, shutdown| async move {
        let server = capstan_l4lb::Server::start(node.l4lb.unwrap_or_default(), shutdown).await?;
        Ok(server.wait())
    })
}
