//! Integration tests of the agent against the real Docker engine. Every container an agent
//! creates here carries the test label of its scenario; each scenario ends by asserting that
//! none is left, and a guard removes them even when the test fails.

mod it {
    pub mod harness;

    mod docker_tasks;
    mod dockerd_restart;
    mod endpoints;
    mod engine_restart;
    mod executor_api;
    mod executor_recovery;
    mod health_checks;
    mod master_link;
    mod process_tasks;
    mod recovery;
    mod security;
}
