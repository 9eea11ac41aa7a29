//! Client of the Capstan coordination service (`capstan coord`): the HTTP/JSON wire types and
//! a Rust client that master, apps and the operator CLI use for keys, watches, leases and
//! leader election.
//!
//! Key decision: this crate knows only the public HTTP API (documented in `docs/coord-api.md`),
//! never the raft implementation, so daemons depending on it stay free of openraft and of the
//! server. The client is given a list of members; it sticks to the one that answered last,
//! moves on when a member is unreachable or has no leader, and retries reads always but writes
//! only when the server guarantees they were not applied (`not_leader`, `unavailable`, or a
//! connection that could not be opened). A write whose outcome is unknown is reported as
//! [`ClientError::OutcomeUnknown`], never silently retried.

mod client;
mod election;
pub mod keyspace;
pub mod peer;
pub mod types;

pub use client::{Client, ClientError, ClientOptions, KeepAlive, Watcher};
pub use election::{Election, LeaderInfo, LeaderObserver, Leadership};
pub use peer::{PEER_TOKEN_HEADER, PeerSecretError, PeerToken};

/// The failure detector's timing (see [`Election::with_liveness_probe`]).
pub mod election_probe {
    pub use crate::election::{PROBE_INTERVAL, PROBE_REFUSALS};
}
pub use types::*;
