//! `capstan daemon agent`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("agent", args, |node, shutdown| async move {
        let server = capstan_agent::Server::start(node.agent.unwrap_or_default(), shutdown).await?;
        Ok(server.wait())
    })
}
