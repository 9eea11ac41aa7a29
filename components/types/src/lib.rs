//! Domain types shared by every Capstan crate, with no I/O: identifiers, resources and their
//! arithmetic, task states. Key decision: a type moves here only once a second crate needs it;
//! until then it stays in the crate that owns it (the master's resource math lives in
//! `capstan-master`, the app model in `capstan-apps`), and the crates meet over the wire
//! through `capstan-proto`. Nothing is shared yet.
