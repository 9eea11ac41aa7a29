//! `capstan agent`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("agent", args, |node, shutdown| async move {
        // Server::start binds and reports READY=1 to systemd.
        let server = capstan_agent::Server::start(node.agent.unwrap_or_default(), shutdown).await?;
        server.wait().await;
        Ok(())
    })
}
