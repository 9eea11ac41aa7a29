//! The one client of the masters' streaming HTTP APIs, used by every Capstan daemon that
//! follows a master: leader discovery (the configured masters in turn, a standby's `307`
//! followed in its `//host:port`, `http://host:port` or `host:port` form; over TLS with the
//! node's certificate when [`ClientConfig::tls`] is set), a SUBSCRIBE stream
//! of RecordIO records with a maximum record size, the `Mesos-Stream-Id`, and a heartbeat
//! watchdog; the reconnect loop with the shared [`capstan_types::Backoff`]; scheduler calls;
//! the operator event stream; and the cluster-state [`model`] that stream's events are
//! applied to, shared by `dns` and `l4lb` so both see the same tasks.
//!
//! Key decision: the layer moves records, not meanings. A [`Subscription`] yields raw records
//! and the caller decodes them in its own protocol (the v1 scheduler API, the operator API,
//! `capstan.agent.v1`), telling the watchdog the heartbeat interval the master announced, so
//! every protocol gets the same discovery, framing, liveness and reconnect code. The pure
//! parts ([`endpoint`], [`watchdog`], [`model`]) have no I/O.

pub mod client;
pub mod endpoint;
pub mod model;
pub mod operator;
pub mod reconnect;
pub mod scheduler;
pub mod subscription;
pub mod watchdog;

pub use client::{
    BuildError, Calls, ClientConfig, MasterClient, RequestError, STREAM_ID_HEADER, SubscribeError,
};
pub use endpoint::{Endpoint, EndpointError, Location, Redirect, Scheme};
pub use operator::{OPERATOR_PATH, OperatorEvents};
pub use reconnect::{SessionEnd, reconnect};
pub use scheduler::SCHEDULER_PATH;
pub use subscription::{StreamError, Subscription};
pub use watchdog::{DEFAULT_HEARTBEAT, Watchdog};
