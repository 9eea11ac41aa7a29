//! Integration tests of `capstan apps`: the REST API against the server with a fake Mesos
//! master, the scheduler driver, seed 001's HTTPie calls, marathon-python, and end to end with
//! the real master and simulated agents.

#[path = "it/api.rs"]
mod api;
#[path = "it/api_validation.rs"]
mod api_validation;
#[path = "it/durability.rs"]
mod durability;
#[path = "it/e2e.rs"]
mod e2e;
#[path = "it/fake_master.rs"]
mod fake_master;
#[path = "it/ha.rs"]
mod ha;
#[path = "it/marathon_python.rs"]
mod marathon_python;
#[path = "it/scheduler.rs"]
mod scheduler;
#[path = "it/security.rs"]
mod security;
#[path = "it/seed001.rs"]
mod seed001;
#[path = "it/support.rs"]
mod support;
