//! Subcommands. A daemon subcommand is a few lines over [`run_daemon`], which owns the shared
//! lifecycle: load and validate the config, `--check-config`, logging, signals, exit codes.

pub mod agent;
pub mod apps;
pub mod coord;
pub mod dev;
pub mod dns;
pub mod idle;
pub mod master;
pub mod version;

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use capstan_runtime::{EX_CONFIG, init_logging, load_config, shutdown_on_signals};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::NodeConfig;

/// Flags every daemon subcommand takes.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The node's config file.
    #[arg(
        long,
        env = "CAPSTAN_CONFIG",
        default_value = "/etc/capstan/config.yaml"
    )]
    pub config: PathBuf,
    /// Validate the config file and exit: 0 if it is good, 78 (EX_CONFIG) if not.
    #[arg(long)]
    pub check_config: bool,
}

/// Loads the node config, then either checks it (`--check-config`) or sets up logging and
/// signals and runs `daemon` on a multi-threaded runtime until it returns.
pub fn run_daemon<F, Fut>(name: &str, args: &DaemonArgs, daemon: F) -> ExitCode
where
    F: FnOnce(NodeConfig, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let node: NodeConfig = match load_config(&args.config) {
        Ok(node) => node,
        Err(e) => {
            fail(&format!("error: {}", chain(&e)));
            return ExitCode::from(EX_CONFIG as u8);
        }
    };
    if args.check_config {
        say(&format!("config OK: {}", args.config.display()));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_logging(&node.log) {
        fail(&format!("error: {}", chain(&e)));
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "Cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    info!(daemon = name, version = crate::LONG_VERSION, config = %args.config.display(), "Starting");
    match runtime.block_on(async { daemon(node, shutdown_on_signals()).await }) {
        Ok(()) => {
            info!(daemon = name, "Stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(daemon = name, error = format!("{e:#}"), "Failed");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line: `cannot read config file x: No such file (os error 2)`.
fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The binary's user-facing output on stdout.
#[allow(clippy::print_stdout)]
pub fn say(line: &str) {
    println!("{line}");
}

/// The binary's user-facing errors on stderr (before logging is set up).
#[allow(clippy::print_stderr)]
pub fn fail(line: &str) {
    eprintln!("{line}");
}
