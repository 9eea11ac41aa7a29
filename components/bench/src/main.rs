//! `capstan-bench`: Capstan's benchmark harness. Each benchmark ([`master`], [`dns`],
//! [`agent`], [`coord`], [`apps`], [`router`]) measures a Capstan component and, in the same run on
//! the same machine, the peer it is judged against (NSD, `docker run`, etcd, nginx, published
//! anchors), and returns a table
//! section; [`report`] renders them all into `docs/BENCHMARKS.md`.
//!
//! Key decision: servers under test run in child processes (this binary re-executed with the
//! hidden `--serve` flag, or the peer's own binary) so that their memory can be read from
//! `/proc/<pid>/status` and they can be pinned to one core with `taskset` while the load
//! generator runs on the other. Every request loop is bounded in count and in time.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool reports on its terminal

mod agent;
mod apps;
mod child;
mod coord;
mod dns;
mod l4lb;
mod master;
mod report;
mod router;
mod security;
mod stats;
mod swarm;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// Runs Capstan's benchmarks and writes the report.
#[derive(Parser, Debug)]
#[command(name = "capstan-bench")]
struct Args {
    /// Benchmarks to run (master, dns, agent, coord, apps, router, l4lb, ui, swarm, security);
    /// all when none is given.
    names: Vec<String>,
    /// Shrink every size ~10x (for iterating, not for the published numbers).
    #[arg(long)]
    quick: bool,
    /// Where to write the Markdown report.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Internal: serve one component in this process (`master`, `dns:<tasks>`, `agent`,
    /// `coord:…`, `apps:…`, `router-backend`).
    #[arg(long, hide = true)]
    serve: Option<String>,
}

pub const ALL: [&str; 10] = [
    "master", "dns", "agent", "coord", "apps", "router", "l4lb", "ui", "swarm", "security",
];

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capstan-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.serve.clone() {
        Some(what) => rt.block_on(child::serve(&what)),
        None => rt.block_on(run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capstan-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let names: Vec<String> = if args.names.is_empty() {
        ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.names.clone()
    };
    for n in &names {
        anyhow::ensure!(
            ALL.contains(&n.as_str()),
            "unknown benchmark {n:?}; known: {ALL:?}"
        );
    }
    let machine = report::Machine::detect();
    let mut sections = Vec::new();
    for name in &names {
        eprintln!(
            "capstan-bench: running {name}{}",
            if args.quick { " (quick)" } else { "" }
        );
        let started = std::time::Instant::now();
        let section = match name.as_str() {
            "master" => master::run(args.quick).await,
            "dns" => dns::run(args.quick).await,
            "agent" => agent::run(args.quick).await,
            "apps" => apps::run(args.quick).await,
            "router" => router::run(args.quick).await,
            "l4lb" => l4lb::run(args.quick).await,
            "ui" => ui::run(args.quick).await,
            "swarm" => swarm::run(args.quick).await,
            "security" => security::run(args.quick).await,
            _ => coord::run(args.quick).await,
        };
        let section = section.unwrap_or_else(|e| report::Section {
            title: name.clone(),
            rows: Vec::new(),
            notes: vec![format!("The benchmark failed: {e:#}")],
        });
        eprintln!(
            "capstan-bench: {name} done in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        sections.push(section);
    }
    let mut command = String::from("capstan-bench");
    if args.quick {
        command.push_str(" --quick");
    }
    for n in &args.names {
        command.push(' ');
        command.push_str(n);
    }
    let md = report::render(&machine, args.quick, &command, &sections);
    match &args.out {
        Some(path) => {
            std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("capstan-bench: wrote {}", path.display());
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(md.as_bytes())?;
        }
    }
    Ok(())
}
