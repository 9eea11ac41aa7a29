//! Capstan's router: Admin Router's routes on pingora, with identity and TLS.
//!
//! One daemon on every master (ports 80 and 443) that is the cluster's way in: it matches
//! Admin Router's locations ([`routes`]), resolves `/service/<name>` ([`service`]) against a
//! snapshot of apps and frameworks kept by [`state`], checks tokens with the IAM, and either
//! answers itself ([`local`]) or proxies with pingora ([`proxy`]), following the master and
//! apps leaders through coord. Key decision: deciding (the [`plan`]) is separate from moving
//! bytes (the pingora `ProxyHttp`), so everything but the byte pump is testable without
//! sockets; pingora owns its threads, so the daemon takes the [`capstan_runtime::OwnRuntime`]
//! path ([`server::Router`]).

pub mod config;
pub mod identity;
pub mod local;
pub mod plan;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod service;
pub mod state;
pub mod tls;
pub mod upstream;

#[cfg(test)]
mod fuzz;

pub use config::Config;
pub use server::{Router, run};
