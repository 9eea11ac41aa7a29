//! `capstan daemon bootstrap`: the server masters run for nodes that join
//! (`capstan_install::bootstrap`).

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("bootstrap", args, |node, shutdown| async move {
        let server = capstan_install::bootstrap::Server::start(
            node.bootstrap.unwrap_or_default(),
            node.cluster,
            shutdown,
        )
        .await?;
        Ok(server.wait())
    })
}
