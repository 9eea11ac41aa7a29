//! The identity service as the router uses it: a [`Verifier`] for every request and the
//! `/acs/api/v1` API, served on loopback for the proxy to forward to (`capstan_iam`).

use std::sync::Arc;
use std::time::Duration;

use capstan_types::Chain;
use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::plan::Verifier;

/// What the router gets from the identity service.
pub struct Identity {
    pub verifier: Arc<dyn Verifier>,
    pub api: axum::Router,
}

impl Verifier for capstan_iam::Iam {
    fn verify(&self, headers: &HeaderMap) -> Result<(), String> {
        let token = capstan_iam::token_from_headers(headers)
            .ok_or_else(|| "missing authentication token".to_owned())?;
        capstan_iam::Iam::verify(self, &token)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Starts the identity service against `coord` (its records, keys and first administrator).
pub async fn start(
    coord: capstan_coord_client::Client,
    config: &Config,
    shutdown: CancellationToken,
) -> Result<Identity, String> {
    let opts = capstan_iam::Options {
        token_ttl: Duration::from_secs(config.token_ttl_secs),
        ..capstan_iam::Options::default()
    };
    let iam = capstan_iam::Iam::start(coord, opts, shutdown)
        .await
        .map_err(|e| Chain(&e).to_string())?;
    Ok(Identity {
        api: iam.api(),
        verifier: Arc::new(iam),
    })
}
