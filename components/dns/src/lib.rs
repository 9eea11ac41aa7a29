//! `capstan dns`: the cluster's DNS server, a Mesos-DNS compatible daemon.
//!
//! It follows the leading master through the operator API `SUBSCRIBE` stream, keeps a
//! cluster-state [`model`], synthesises records from it with pure code ([`records`]) and answers
//! DNS over UDP and TCP from an immutable [`Snapshot`] swapped atomically on every change, so a
//! task is resolvable the moment it is `TASK_RUNNING`. Zones: the Mesos-DNS domain (`mesos`),
//! DC/OS's `dcos.thisdcos.directory` (autoip/agentip/containerip) and its
//! `mesos.thisdcos.directory` mirror, and `l4lb.thisdcos.directory`, whose named VIPs come
//! from the shared VIP function (`capstan_types::vip`) the load balancer also uses, so both
//! compute the same names and addresses from the same stream (another producer can still
//! add records through its own [`Publisher`] handle). Other names are forwarded to
//! upstream resolvers. A Mesos-DNS compatible HTTP API (`/v1/hosts`, `/v1/services`,
//! `/v1/axfr`, ...) serves the same snapshot.
//!
//! Key decision: everything that decides an answer is pure and synchronous — the model, record
//! synthesis, and the DNS responder in [`resolve`], which turns a parsed request into a
//! response already cut to the transport's limit (or a "forward this" verdict) — so it is
//! table-tested and fuzzed without sockets. The I/O shell only moves bytes: `hickory-server`
//! serves UDP and TCP on one port (framing, pipelining, timeouts, FORMERR for unreadable
//! messages) with the responder plugged in as its request handler.
//!
//! Entry points: [`Config::load`] (YAML, or a Mesos-DNS `config.json`), then
//! [`Server::start`].

pub mod config;
pub mod follower;
pub mod forward;
pub mod http;
pub mod labels;
/// The cluster-state model, shared with `l4lb` through the master-stream client crate.
pub use capstan_mesos_client::model;
pub mod records;
pub mod resolve;
pub mod server;
pub mod snapshot;

pub use config::{Config, MesosDnsConfigError};
pub use follower::MasterStatus;
pub use labels::LabelSpec;
pub use model::{ClusterState, IpSource};
pub use records::{RecordSet, SynthConfig, synthesize};
pub use server::{Publisher, Server, ServerHandle, StartError};
pub use snapshot::{Producer, Snapshot};
