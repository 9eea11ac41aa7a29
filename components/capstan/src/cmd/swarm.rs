//! `capstan daemon swarm`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("swarm", args, |node, shutdown| async move {
        let server = capstan_swarm::Server::start(node.swarm.unwrap_or_default(), shutdown).await?;
        Ok(server.wait())
    })
}
