//! `capstan l4lb`: Minuteman-style layer-4 virtual IPs on every node (issue 14).
//!
//! It follows the leading master's operator event stream ([`follower`]), keeps the same
//! cluster model `dns` keeps, and recomputes the VIP table with the shared pure function
//! [`capstan_types::vip::VipTable::build`] after every batch of events, so `dns` and every
//! node's `l4lb` agree on names, addresses and backends without publishing to each other.
//! The table is a `watch` value; the data plane (the kernel one, [`nft`] + [`netdev`], or
//! the userspace [`proxy`]) and the operator API ([`http`], `GET /v1/vips` as dcos-net, and
//! [`metrics`]) read it. The model is the shared one in `capstan_mesos_client::model`
//! (daemons never depend on each other).
//!
//! Key decision: the table is the only interface between control and data plane, so both
//! modes are readers of the same value and share every rule about backends.
//!
//! Entry point: [`Server::start`].

pub mod config;
pub mod follower;
pub mod http;
pub mod metrics;
pub mod netdev;
pub mod nft;
pub mod proxy;
pub mod server;

pub use config::{Config, DataPlane};
pub use server::{Server, ServerHandle, StartError};
