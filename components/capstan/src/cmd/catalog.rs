//! `capstan daemon catalog`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("catalog", args, |node, shutdown| async move {
        let server =
            capstan_catalog::Server::start(node.catalog.unwrap_or_default(), shutdown).await?;
        Ok(server.wait())
    })
}
