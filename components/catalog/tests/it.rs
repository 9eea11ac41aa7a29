//! Integration tests of `capstan daemon catalog`: the Cosmos API on port 0 against a real
//! in-process coord (the repository list) and a real apps daemon (installs), spoken to with
//! the exact media types `dcos package` 0.6.1 sends.

mod it {
    pub mod support;

    mod api;
    mod bundle;
    mod strict;
}
