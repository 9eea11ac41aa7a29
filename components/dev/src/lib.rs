//! `capstan dev`: a whole Capstan cluster on one machine in one command, like `minidcos`,
//! `k3d` or `nomad agent -dev`. One supervisor process runs every daemon of every node as a
//! child process of the same `capstan` binary. Key decision: each node gets its own loopback
//! address (masters `127.0.1.<i>`, agents `127.0.2.<i>`), so every daemon listens on its
//! standard port and the cluster looks to clients exactly like a real one.

pub mod cli;
pub mod config;
pub mod control;
pub mod identity;
pub mod layout;
pub mod paths;
pub mod status;
pub mod supervisor;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use cli::{DevCommand, run};

/// What can go wrong running a dev cluster; every message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error(
        "{addr} (for {node}) is already in use: stop what listens there, or run `capstan dev down` if it is an old cluster"
    )]
    AddressInUse {
        addr: SocketAddr,
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no Docker engine answers ({reason}): start it (`dockerd &` or `systemctl start docker`) and try again"
    )]
    DockerUnreachable { reason: String },
    #[error(
        "a dev cluster is already up for {state_dir} (see `capstan dev status`; stop it with `capstan dev down`)"
    )]
    AlreadyUp { state_dir: PathBuf },
    #[error("no dev cluster is up for {state_dir}: start one with `capstan dev up`")]
    NotUp { state_dir: PathBuf },
    #[error("the dev cluster did not become ready within {secs} s; see {log}")]
    NotReady { secs: u64, log: PathBuf },
    #[error("the supervisor exited before the cluster was ready; last lines of {log}:\n{tail}")]
    SupervisorDied { log: PathBuf, tail: String },
    #[error("{0}")]
    Refused(String),
    #[error("cannot find the capstan binary to run the daemons")]
    Binary(#[source] std::io::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the cluster's certificates")]
    Pki(#[from] capstan_install::pki::PkiError),
    #[error("cannot store the cluster's identity in coord")]
    Seed(#[source] capstan_install::state::StateError),
    #[error("talking to the dev supervisor")]
    Control(#[source] std::io::Error),
}
