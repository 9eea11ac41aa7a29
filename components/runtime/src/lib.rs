//! Daemon scaffolding.
