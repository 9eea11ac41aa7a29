//! `capstan coord`: the coordination service of a Capstan cluster (the role ZooKeeper and
//! Exhibitor play in DC/OS). A replicated key-value store with versions, compare-and-swap,
//! transactions, watches, leases (ephemeral keys) and leader election, served over
//! HTTP/JSON on port 8181 (`docs/coord-api.md`); clients use `capstan-coord-client`.
//!
//! Key decisions:
//! - Consensus is openraft 0.9 (storage-v2). Members talk raft over the same port as the
//!   client API (`/raft/*`), so one address per member is all the configuration needs.
//!   Members prove membership with a token derived from a shared secret (`peer_secret_file`)
//!   on every raft RPC and membership change; anyone else gets 401/403 (`docs/SECURITY.md`).
//!   In strict mode (`security.mode: strict`) the port speaks TLS only and every request but
//!   `/health` and `/metrics` needs a node certificate of the cluster CA (a master's for raft,
//!   membership changes and backups); members dial each other over https with theirs.
//!   The port serves HTTP/1 with body limits, a header-read (and idle) timeout and caps on
//!   open connections (`serve.rs`).
//! - Storage is redb: the log, the vote and snapshots are in one file whose write
//!   transactions are fsynced before openraft is told they are done, so a write is
//!   acknowledged only once a quorum has it on disk. redb gives crash-safe, checksummed
//!   transactions without writing our own segment/recovery code; the log is small
//!   (compacted at every snapshot), so a B-tree is fast enough.
//! - The state machine ([`sm::KvState`]) is pure data and functions, kept in memory and made
//!   durable by the log plus snapshots. Time never enters it: the leader tracks lease
//!   deadlines in memory (a new leader grants every lease a full TTL) and proposes a revoke
//!   when one passes.
//! - Reads are linearizable by default (ReadIndex through the leader, also from followers);
//!   `serializable: true` reads the local state. Writes reaching a follower are forwarded to
//!   the leader.
//! - Group commit: concurrent writes at the leader share one log entry ([`sm::Command::Batch`],
//!   `batch.rs`) and so one fsync and one replication round; each still gets its own
//!   revision and result. A lone write is proposed at once, so batching costs no latency.

mod batch;
pub mod cli;
pub mod config;
mod http;
mod metrics;
mod node;
pub mod raft;
mod server;
pub mod sm;
pub mod snapshot;
pub mod store;

pub use config::{Config, ConfigError, MemberConfig};
pub use server::{NodeStatus, ServeError, Server, ServerHandle, StartError};
