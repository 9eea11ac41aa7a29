//! `capstan`: the one binary. Each daemon is a subcommand (`capstan master`, ...) that only
//! parses flags, loads the node's config file, sets up logging and calls the daemon crate's
//! `Server::start`; the logic lives in the crates. The user CLI commands come later.

mod cmd;
mod config;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd::DaemonArgs;

/// `0.1.0 (git abc1234, built 2026-11-22)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("CAPSTAN_GIT_SHA"),
    ", built ",
    env!("CAPSTAN_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(name = "capstan", version = LONG_VERSION, about = "Capstan datacenter operating system")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version, git commit and build date.
    Version,
    /// Run the coordination service (replicated key-value store, leader election), or with a
    /// command (get, put, del, list, watch, members, status, member, snapshot) operate on it.
    Coord(cmd::coord::CoordArgs),
    /// Run a Mesos-compatible master.
    Master(DaemonArgs),
    /// Run an agent that launches tasks as Docker containers.
    Agent(DaemonArgs),
    /// Run the Marathon-compatible apps scheduler.
    Apps(DaemonArgs),
    /// Run the Mesos-DNS-compatible DNS server.
    Dns(DaemonArgs),
    /// Run a whole cluster on this machine: up, status, down, kill, restart.
    #[command(subcommand)]
    Dev(capstan_dev::DevCommand),
    /// Run only the daemon lifecycle (config, logs, READY=1, wait for a signal); for tests.
    #[command(hide = true)]
    Idle(DaemonArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Version => cmd::version::run(),
        Command::Coord(args) => cmd::coord::run(args),
        Command::Master(args) => cmd::master::run(&args),
        Command::Agent(args) => cmd::agent::run(&args),
        Command::Apps(args) => cmd::apps::run(&args),
        Command::Dns(args) => cmd::dns::run(&args),
        Command::Dev(cmd) => cmd::dev::run(cmd),
        Command::Idle(args) => cmd::idle::run(&args),
    }
}
