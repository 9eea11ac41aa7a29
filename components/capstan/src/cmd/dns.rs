//! `capstan dns`.

use std::process::ExitCode;

use capstan_runtime::notify_ready;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("dns", args, |node, shutdown| async move {
        let server = capstan_dns::Server::start(node.dns.unwrap_or_default(), shutdown).await?;
        notify_ready();
        server.wait().await;
        Ok(())
    })
}
