//! `capstan daemon router`: the router owns its runtime (pingora), so it takes the
//! [`OwnRuntime`](capstan_runtime::OwnRuntime) path.

use std::process::ExitCode;

use super::DaemonArgs;

pub fn run(args: &DaemonArgs) -> ExitCode {
    super::run_own_runtime::<capstan_router::Router>("router", args, |node| {
        node.router.unwrap_or_default()
    })
}
