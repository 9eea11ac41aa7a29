//! Retrying a daemon's start-up steps against coord (granting a lease, campaigning, loading
//! state) until they succeed or the daemon is told to stop.

use std::future::Future;

use capstan_types::{Backoff, Chain};
use tokio_util::sync::CancellationToken;

/// Runs `f` until it succeeds, waiting `backoff`'s delays between failed tries (each logged
/// with its error chain as "`what` failed; retrying"); `None` once `token` is cancelled.
pub async fn retry_until_cancelled<T, E, F>(
    what: &str,
    token: &CancellationToken,
    mut backoff: Backoff,
    mut f: impl FnMut() -> F,
) -> Option<T>
where
    E: std::error::Error,
    F: Future<Output = Result<T, E>>,
{
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => tracing::warn!(error = %Chain(&e), "{what} failed; retrying"),
        }
        tokio::select! {
            _ = token.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn retries_until_success_and_stops_when_cancelled() {
        let token = CancellationToken::new();
        let backoff = || Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let mut tries = 0;
        let got = retry_until_cancelled("step", &token, backoff(), || {
            tries += 1;
            let ok = tries == 3;
            async move {
                if ok {
                    Ok(tries)
                } else {
                    Err(std::io::Error::other("not yet"))
                }
            }
        })
        .await;
        assert_eq!(got, Some(3));
        token.cancel();
        let never = retry_until_cancelled("step", &token, backoff(), || async {
            Err::<(), _>(std::io::Error::other("down"))
        })
        .await;
        assert_eq!(never, None);
    }
}
