//! Integration tests of capstan-coord (one binary; modules under `tests/it/`).

mod it {
    pub mod api;
    pub mod cluster;
    pub mod harness;
    pub mod limits;
    pub mod linearizability;
    pub mod security;
    pub mod storage;
    pub mod strict;
}
