//! `capstan`: the one binary. Daemons live under `capstan daemon <name>` (what systemd units
//! and `capstan dev` run); everything at the top level is for people: `capstan coord get ...`,
//! `capstan dev up`, and the user nouns to come (`app`, `task`, `node`, `package`, `job`),
//! as Nomad separates `nomad agent` from `nomad job`. A daemon subcommand only parses flags,
//! loads the node's config file, sets up logging and calls the daemon crate's `Server::start`;
//! the logic lives in the crates.

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
    /// Run one of this node's daemons (as its systemd unit or `capstan dev` does).
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Operate on the coordination service: get, put, del, list, watch, members, status,
    /// member, snapshot.
    Coord(cmd::coord::CoordArgs),
    /// Create a cluster, join nodes to it, manage its join tokens.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
    /// Check this machine before (or after) installing: kernel, cgroups, Docker, ports, clock.
    Doctor(cmd::doctor::DoctorArgs),
    /// Run a whole cluster on this machine: up, status, down, kill, restart.
    #[command(subcommand)]
    Dev(capstan_dev::DevCommand),
    /// Build Universe packages into a repository file.
    #[command(subcommand)]
    Package(cmd::package::PackageCommand),
}

#[derive(Subcommand)]
enum DaemonCommand {
    /// The coordination service (replicated key-value store, leases, leader election).
    Coord(DaemonArgs),
    /// A Mesos-compatible master.
    Master(DaemonArgs),
    /// An agent that launches tasks as Docker containers.
    Agent(DaemonArgs),
    /// The Marathon-compatible apps scheduler.
    Apps(DaemonArgs),
    /// The Mesos-DNS-compatible DNS server.
    Dns(DaemonArgs),
    /// The Admin Router-compatible entry point: every API and the console behind one login.
    Router(DaemonArgs),
    /// The Cosmos-compatible package catalog (Universe repositories, one-click installs).
    Catalog(DaemonArgs),
    /// The Docker Engine API front end: the docker CLI runs containers on the cluster.
    Swarm(DaemonArgs),
    /// The layer-4 load balancer: named and IP virtual IPs (Minuteman / dcos-l4lb).
    L4lb(DaemonArgs),
    /// The server masters run for joining nodes: install.sh, the CA, the package, joins.
    Bootstrap(DaemonArgs),
    /// Only the daemon lifecycle (config, logs, READY=1, wait for a signal); for tests.
    #[command(hide = true)]
    Idle(DaemonArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Version => cmd::version::run(),
        Command::Daemon(daemon) => match daemon {
            DaemonCommand::Coord(args) => cmd::coord::run_daemon(&args),
            DaemonCommand::Master(args) => cmd::master::run(&args),
            DaemonCommand::Agent(args) => cmd::agent::run(&args),
            DaemonCommand::Apps(args) => cmd::apps::run(&args),
            DaemonCommand::Dns(args) => cmd::dns::run(&args),
            DaemonCommand::Router(args) => cmd::router::run(&args),
            DaemonCommand::Catalog(args) => cmd::catalog::run(&args),
            DaemonCommand::Swarm(args) => cmd::swarm::run(&args),
            DaemonCommand::L4lb(args) => cmd::l4lb::run(&args),
            DaemonCommand::Bootstrap(args) => cmd::bootstrap::run(&args),
            DaemonCommand::Idle(args) => cmd::idle::run(&args),
        },
        Command::Coord(args) => cmd::coord::run(args),
        Command::Cluster(command) => cmd::cluster::run(command),
        Command::Doctor(args) => cmd::doctor::run(args),
        Command::Dev(cmd) => cmd::dev::run(cmd),
        Command::Package(command) => cmd::package::run(command),
    }
}
