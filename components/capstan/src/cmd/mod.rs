//! Subcommands. A daemon subcommand is a few lines over [`run_daemon`], which owns the shared
//! lifecycle: load and validate the config, `--check-config`, logging, signals, exit codes.

pub mod agent;
pub mod apps;
pub mod bootstrap;
pub mod catalog;
pub mod cluster;
pub mod coord;
pub mod dev;
pub mod dns;
pub mod doctor;
pub mod idle;
pub mod l4lb;
pub mod master;
pub mod package;
pub mod router;
pub mod swarm;
pub mod version;

use std::path::PathBuf;
use std::process::ExitCode;

use capstan_runtime::{
    Chain, EX_CONFIG, Exit, OwnRuntime, SystemdLifecycle, init_logging, load_config, notify_ready,
    notify_stopping, shutdown_on_signals,
};
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
/// signals and runs the daemon on a multi-threaded runtime: `start` binds and returns the
/// future of the running daemon; then the service manager hears `READY=1`, and `STOPPING=1`
/// once a stop is asked for. The exit code is 0 only for a requested stop: a daemon that ended
/// by itself (lost leadership, a fatal error) exits 1 so `Restart=on-failure` starts it again.
pub fn run_daemon<F, Fut, W>(name: &str, args: &DaemonArgs, start: F) -> ExitCode
where
    F: FnOnce(NodeConfig, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<W>>,
    W: Future<Output = Exit>,
{
    let node = match prepare(name, args) {
        Ok(node) => node,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %Chain(&e), "Cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let shutdown = shutdown_on_signals();
        let running = start(node, shutdown.clone()).await?;
        notify_ready();
        let mut running = std::pin::pin!(running);
        let exit = tokio::select! {
            exit = &mut running => exit,
            () = shutdown.cancelled() => {
                notify_stopping();
                running.await
            }
        };
        anyhow::Ok(exit)
    });
    match outcome {
        Ok(exit) => exit_code(name, exit),
        Err(e) => {
            error!(daemon = name, error = format!("{e:#}"), "Failed");
            ExitCode::FAILURE
        }
    }
}

/// The same lifecycle for a daemon that owns its runtime and signal handling
/// ([`OwnRuntime`], e.g. the router on pingora): `section` picks its config out of the node
/// config; readiness and stopping reach systemd through [`SystemdLifecycle`].
pub fn run_own_runtime<D: OwnRuntime>(
    name: &str,
    args: &DaemonArgs,
    section: impl FnOnce(NodeConfig) -> D::Config,
) -> ExitCode {
    let node = match prepare(name, args) {
        Ok(node) => node,
        Err(code) => return code,
    };
    exit_code(name, D::run(section(node), &SystemdLifecycle))
}

/// Loads the node config; `Err` is the exit code when there is nothing more to do
/// (`--check-config`, a bad config, logging that cannot start).
fn prepare(name: &str, args: &DaemonArgs) -> Result<NodeConfig, ExitCode> {
    let node: NodeConfig = match load_config(&args.config) {
        Ok(node) => node,
        Err(e) => {
            fail(&format!("error: {}", Chain(&e)));
            return Err(ExitCode::from(EX_CONFIG as u8));
        }
    };
    if args.check_config {
        say(&format!("config OK: {}", args.config.display()));
        return Err(ExitCode::SUCCESS);
    }
    if let Err(e) = init_logging(&node.log) {
        fail(&format!("error: {}", Chain(&e)));
        return Err(ExitCode::FAILURE);
    }
    info!(daemon = name, version = crate::LONG_VERSION, config = %args.config.display(), "Starting");
    Ok(node)
}

/// 0 only for a requested stop.
fn exit_code(name: &str, exit: Exit) -> ExitCode {
    match exit {
        Exit::Requested => {
            info!(daemon = name, "Stopped");
            ExitCode::SUCCESS
        }
        Exit::Failed(e) => {
            error!(daemon = name, error = %Chain(&*e), "Stopped by itself");
            ExitCode::FAILURE
        }
    }
}

/// The single-threaded runtime a user command runs on; `None` (after saying why) if it
/// cannot be made.
pub fn cli_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            fail(&format!("error: cannot start the async runtime: {e}"));
            None
        }
    }
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

/// The `cluster:` section of this node's config (`/etc/capstan/config.yaml` on an installed
/// node).
pub fn read_cluster_section(
    layout: &capstan_install::Layout,
) -> anyhow::Result<capstan_runtime::ClusterConfig> {
    #[derive(serde::Deserialize)]
    struct OnlyCluster {
        cluster: Option<capstan_runtime::ClusterConfig>,
    }
    use anyhow::Context as _;
    let text = std::fs::read_to_string(&layout.config)
        .with_context(|| format!("cannot read {}", layout.config.display()))?;
    let doc: OnlyCluster = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not a node config", layout.config.display()))?;
    doc.cluster
        .with_context(|| format!("{} has no cluster: section", layout.config.display()))
}
