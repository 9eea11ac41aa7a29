//! `capstan daemon catalog`: Capstan's package manager, Cosmos-compatible. It keeps a list of
//! Universe repositories (in coord, with a built-in repository shipped inside the binary so a
//! cluster with no network has a catalog), answers Cosmos's `/package/*` API byte for byte as
//! `dcos package` expects it, renders a package's Marathon template with the user's options
//! exactly as Cosmos did, and installs, lists and uninstalls packages through the apps
//! (Marathon) API, finding installs again from the `DCOS_PACKAGE_*` labels.
//!
//! Key decision: no state of its own besides the repository list and the local repository
//! (both in coord) — an install *is* a labelled Marathon app, so every master's catalog
//! answers the same and none leads. The one exception is the image store for air-gapped
//! sites (`images_dir`, [`images`]): `docker save` archives that `capstan package import`
//! uploads and agents fetch when an image is missing, kept on disk as they are large.

pub mod builtin;
pub mod bundle;
pub mod catalog;
pub mod config;
pub mod error;
pub mod frameworks;
pub mod http;
pub mod images;
pub mod installed;
pub mod media;
pub mod mustache;
pub mod render;
pub mod repos;
pub mod server;
pub mod source;
pub mod tar;
pub mod universe;
pub mod update;

pub use error::CosmosError;

pub use config::Config;
pub use server::{Server, ServerHandle, StartError};
