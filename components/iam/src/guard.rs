//! The guard of a daemon's own API in one call: its `security` section, the identity records
//! in coord to verify tokens and basic credentials against (strict mode), and its policy.

use std::sync::Arc;

use capstan_coord_client::Client;
use capstan_runtime::auth::{Guard, Policy, SecurityMode};
use capstan_runtime::{SecurityConfig, TlsServing};
use tokio_util::sync::CancellationToken;

use crate::{Iam, IamError, Options};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot load the node's TLS identity")]
    Tls(#[source] capstan_runtime::tls::TlsError),
    #[error("strict mode needs coord, where the identity records are")]
    NeedsCoord,
    #[error("cannot load the identity records for verifying credentials")]
    Identity(#[source] IamError),
}

/// The guard and TLS of `daemon`'s API as `security` says: in strict mode, credentials are
/// verified against the identity records in `coord` (kept current until `shutdown`).
pub async fn secure_api(
    daemon: &'static str,
    security: &SecurityConfig,
    coord: Option<&Client>,
    policy: Policy,
    shutdown: &CancellationToken,
) -> Result<(Guard, Option<TlsServing>), GuardError> {
    let node_tls = security.node_tls().map_err(GuardError::Tls)?;
    let tls = security.serving(node_tls.as_ref());
    let guard = match security.mode {
        SecurityMode::Permissive => Guard::permissive(daemon),
        SecurityMode::Strict => {
            let coord = coord.ok_or(GuardError::NeedsCoord)?;
            let iam = Iam::verifier(coord.clone(), Options::default(), shutdown.clone())
                .await
                .map_err(GuardError::Identity)?;
            Guard::strict(daemon, Some(Arc::new(iam)), policy)
        }
    };
    Ok((guard, tls))
}
