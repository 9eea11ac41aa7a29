//! The reconnect loop every stream client runs: one session after another, with
//! [`Backoff`] between them, until shutdown.

use capstan_types::Backoff;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How one session ended, for [`reconnect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Reconnect after the backoff delay. A session that received at least one record
    /// (`got_records`) starts the backoff over: the master was there, so the next attempt
    /// comes soon.
    Retry { got_records: bool },
    /// Do not reconnect.
    Stop,
}

impl SessionEnd {
    /// `Retry` for a session that received `records` records.
    pub fn after(records: u64) -> SessionEnd {
        SessionEnd::Retry {
            got_records: records > 0,
        }
    }
}

/// Runs `session` again and again, waiting `backoff` between attempts (reset after a session
/// that got records), until a session returns [`SessionEnd::Stop`] or `shutdown` is
/// cancelled; a session still running then is dropped.
pub async fn reconnect<F>(mut backoff: Backoff, shutdown: &CancellationToken, mut session: F)
where
    F: AsyncFnMut() -> SessionEnd,
{
    while !shutdown.is_cancelled() {
        let end = tokio::select! {
            end = session() => end,
            _ = shutdown.cancelled() => return,
        };
        match end {
            SessionEnd::Stop => return,
            SessionEnd::Retry { got_records } => {
                if got_records {
                    backoff.reset();
                }
            }
        }
        let delay = backoff.next_delay();
        debug!(retry_in = ?delay, attempts = backoff.attempts(), "Reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_double_while_sessions_fail_and_start_over_after_records() {
        let started = Instant::now();
        let at = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        // Sessions 1-3 fail at once, 4 gets records, 5-6 fail, 7 stops.
        let mut n = 0;
        let seen = at.clone();
        reconnect(
            Backoff::new(Duration::from_millis(100), Duration::from_millis(350)),
            &shutdown,
            async || {
                n += 1;
                seen.lock().unwrap().push(started.elapsed());
                match n {
                    4 => SessionEnd::after(3),
                    7 => SessionEnd::Stop,
                    _ => SessionEnd::after(0),
                }
            },
        )
        .await;
        let ms: Vec<u128> = at.lock().unwrap().iter().map(Duration::as_millis).collect();
        // Waits: 100, 200, 350 (cap), reset → 100, then 200, 350.
        assert_eq!(ms, [0, 100, 300, 650, 750, 950, 1300]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_a_running_session_and_a_pending_retry() {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.cancel();
        });
        let mut calls = 0;
        reconnect(
            Backoff::new(Duration::from_secs(1), Duration::from_secs(1)),
            &shutdown,
            async || {
                calls += 1;
                std::future::pending::<SessionEnd>().await
            },
        )
        .await;
        assert_eq!(calls, 1);
        assert!(shutdown.is_cancelled());
    }
}
