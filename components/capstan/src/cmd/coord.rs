//! `capstan coord`: the daemon, or with a command the operator CLI against `--endpoints`.

use std::process::ExitCode;

use super::DaemonArgs;

#[derive(Debug, clap::Args)]
pub struct CoordArgs {
    #[command(flatten)]
    daemon: DaemonArgs,
    #[command(flatten)]
    cli: capstan_coord::cli::CliArgs,
}

pub fn run(args: CoordArgs) -> ExitCode {
    let Some(command) = args.cli.command else {
        return super::run_daemon("coord", &args.daemon, |node, shutdown| async move {
            // Server::start binds, joins the cluster and reports READY=1 to systemd.
            let server =
                capstan_coord::Server::start(node.coord.unwrap_or_default(), shutdown).await?;
            server.wait().await?;
            Ok(())
        });
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            super::fail(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
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
