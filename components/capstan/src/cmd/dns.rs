//! `capstan daemon dns`.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("dns", args, |node, shutdown| async move {
        let server = capstan_dns::Server::start(node.dns.unwrap_or_default(), shutdown).await?;
        Ok(server.wait())
    })
}
