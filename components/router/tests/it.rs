//! Integration tests of the router: the real daemon (in-process, on its own thread) against an
//! in-process coord and fake upstreams.

#[path = "it/auth.rs"]
mod auth;
#[path = "it/routing.rs"]
mod routing;
#[path = "it/strict.rs"]
mod strict;
#[path = "it/support.rs"]
mod support;
#[path = "it/tls.rs"]
mod tls;
