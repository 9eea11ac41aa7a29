//! Integration tests: the master on a loopback port, simulated agents over the real agent
//! protocol, schedulers over the real HTTP API (and pymesos from PyPI).

#[path = "it/common.rs"]
mod common;

#[path = "it/agents.rs"]
mod agents;
#[path = "it/dcos_endpoints.rs"]
mod dcos_endpoints;
#[path = "it/failover.rs"]
mod failover;
#[path = "it/ha.rs"]
mod ha;
#[path = "it/operator.rs"]
mod operator;
#[path = "it/probe.rs"]
mod probe;
#[path = "it/pymesos.rs"]
mod pymesos;
#[path = "it/scheduler.rs"]
mod scheduler;
#[path = "it/security.rs"]
mod security;
