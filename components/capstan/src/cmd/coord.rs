//! `capstan daemon coord` runs the coordination service; `capstan coord <command>` is the
//! operator CLI against `--endpoints`.

use std::process::ExitCode;

use capstan_runtime::Exit;

use super::DaemonArgs;

/// `capstan coord`: the operator CLI.
#[derive(Debug, clap::Args)]
pub struct CoordArgs {
    #[command(flatten)]
    cli: capstan_coord::cli::CliArgs,
}

/// `capstan daemon coord`.
pub fn run_daemon(args: &DaemonArgs) -> ExitCode {
    super::run_daemon("coord", args, |node, shutdown| async move {
        let server = capstan_coord::Server::start(node.coord.unwrap_or_default(), shutdown).await?;
        Ok(async move {
            match server.wait().await {
                Ok(()) => Exit::Requested,
                Err(e) => Exit::failed(e),
            }
        })
    })
}

pub fn run(args: CoordArgs) -> ExitCode {
    let Some(command) = args.cli.command else {
        super::fail(
            "error: `capstan coord` needs a command (get, put, del, list, watch, members, status, \
             member, snapshot; see --help); the daemon is `capstan daemon coord`",
        );
        return ExitCode::from(2);
    };
    let Some(runtime) = super::cli_runtime() else {
        return ExitCode::FAILURE;
    };
    let mut out = std::io::stdout();
    match runtime.block_on(capstan_coord::cli::run_cli(
        &args.cli.endpoints,
        command,
        &mut out,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::fail(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
