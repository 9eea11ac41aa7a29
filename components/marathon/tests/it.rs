//! Integration tests of the Marathon client against a real `capstan apps` server, started
//! in-process with an in-memory store against the fake Mesos master of apps' own tests.

#[path = "it/client.rs"]
mod client;
// The fake master of `capstan-apps`' integration tests, shared rather than copied; this
// suite uses only part of it.
#[allow(dead_code)]
#[path = "../../apps/tests/it/fake_master.rs"]
mod fake_master;
#[path = "it/support.rs"]
mod support;
