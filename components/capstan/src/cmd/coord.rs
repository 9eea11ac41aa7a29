//! `capstan daemon coord` runs the coordination service; `capstan coord <command>` is the
//! operator CLI against `--endpoints`.

use std::process::ExitCode;

use anyhow::Context as _;
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
    let (endpoints, tls) = match target(&args.cli.endpoints) {
        Ok(t) => t,
        Err(e) => {
            super::fail(&format!("error: {e:#}"));
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    match runtime.block_on(capstan_coord::cli::run_cli(
        &endpoints, tls, command, &mut out,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::fail(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Where `capstan coord` goes, and with what TLS. On a node of a cluster (its config has a
/// `cluster:` section): the masters' coord members unless `--endpoints` names others, with the
/// node's certificate when the cluster is strict (its members answer nothing else). Elsewhere:
/// `--endpoints`, or the local member at 127.0.0.1:8181, over plain HTTP.
fn target(
    endpoints: &[String],
) -> anyhow::Result<(Vec<String>, Option<std::sync::Arc<rustls::ClientConfig>>)> {
    let layout = capstan_install::Layout::default();
    let Ok(node) = super::read_cluster_section(&layout) else {
        let endpoints = if endpoints.is_empty() {
            vec![format!(
                "127.0.0.1:{}",
                capstan_runtime::cluster::ports::COORD
            )]
        } else {
            endpoints.to_vec()
        };
        return Ok((endpoints, None));
    };
    let tls = node
        .security
        .client_tls()
        .context("this node's certificate (a strict cluster; run as root)")?;
    let endpoints = if endpoints.is_empty() {
        node.masters
            .iter()
            .map(|m| capstan_install::activate::coord_endpoint(*m))
            .collect()
    } else {
        endpoints.to_vec()
    };
    Ok((endpoints, tls))
}
