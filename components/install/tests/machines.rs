//! The slow multi-node suite of issue #13, run once as one test binary: real installs on
//! systemd machine containers (`capstan_testkit::machines`), each a bare Debian node with a
//! Docker engine of its own, on an internal Docker network.
//!
//! It uses only what an operator has: the `.deb` from `packaging/build-deb.sh`, `install.sh`,
//! the `capstan` CLI on the nodes and the public HTTP and DNS APIs. The `capstan` binary packed
//! into the `.deb` is the one `capstan_testkit::capstan_bin()` finds (`cargo build -p capstan`
//! first, or set `CAPSTAN_BIN`); the images come from `make images`.
//!
//! ```sh
//! cargo build -p capstan && make images
//! cargo test -p capstan-install --test machines -- --nocapture   # prints each step's time
//! ```

#[path = "machines/cluster.rs"]
mod cluster;
#[path = "machines/common.rs"]
mod common;
#[path = "machines/package.rs"]
mod package;
#[path = "machines/smoke.rs"]
mod smoke;
