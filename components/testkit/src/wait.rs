//! Polling a condition against a deadline: the only way tests wait.

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;

/// What a [`wait_until`] condition returns: whether it holds yet, and if not, why not.
///
/// - `bool`: done when `true`.
/// - `Option<T>`: done with `T` when `Some`.
/// - `Result<T, E>`: done with `T` when `Ok`; an `Err` means "not yet" and is remembered as the
///   last error for the timeout message. Return `Err(anyhow!("2 of 3 up"))` to explain a "no".
pub trait PollOutcome {
    type Output;
    /// `Ok(v)` when done; `Err(Some(why))` or `Err(None)` when not yet.
    fn into_poll(self) -> Result<Self::Output, Option<String>>;
}

impl PollOutcome for bool {
    type Output = ();
    fn into_poll(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> PollOutcome for Option<T> {
    type Output = T;
    fn into_poll(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Display> PollOutcome for Result<T, E> {
    type Output = T;
    fn into_poll(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(format!("{e:#}")))
    }
}

const FIRST_INTERVAL: Duration = Duration::from_millis(5);
const MAX_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `condition` until it holds or `deadline` has passed, starting with a 5 ms interval
/// and backing off to 100 ms. A single check that hangs is cut off at the deadline too.
///
/// The error says what was awaited, for how long, and the last error the condition reported:
/// `timed out after 5s waiting for leader elected (31 checks); last error: connection refused`.
pub async fn wait_until<O: PollOutcome>(
    what: &str,
    deadline: Duration,
    mut condition: impl AsyncFnMut() -> O,
) -> anyhow::Result<O::Output> {
    let end = Instant::now() + deadline;
    let mut interval = FIRST_INTERVAL;
    let mut last_error: Option<String> = None;
    let mut checks = 0u32;
    loop {
        checks += 1;
        let remaining = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining.max(Duration::from_millis(1)), condition()).await {
            Ok(outcome) => match outcome.into_poll() {
                Ok(value) => return Ok(value),
                Err(Some(e)) => last_error = Some(e),
                Err(None) => {}
            },
            Err(_) => {
                last_error = Some("the last check was still running at the deadline".to_owned())
            }
        }
        let now = Instant::now();
        if now >= end {
            let why = match &last_error {
                Some(e) => format!("last error: {e}"),
                None => "the condition never held".to_owned(),
            };
            anyhow::bail!(
                "timed out after {deadline:?} waiting for {what} ({checks} checks); {why}"
            );
        }
        tokio::time::sleep(interval.min(end - now)).await;
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn wait_until_returns_as_soon_as_the_condition_holds() {
        let calls = AtomicU32::new(0);
        wait_until("third call", Duration::from_secs(10), async || {
            calls.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn wait_until_hands_back_the_value_of_an_option_or_result() {
        let v = wait_until("some", Duration::from_secs(1), async || Some(7))
            .await
            .unwrap();
        assert_eq!(v, 7);
        let v = wait_until("ok", Duration::from_secs(1), async || Ok::<_, String>("x"))
            .await
            .unwrap();
        assert_eq!(v, "x");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_timeout_names_what_was_awaited_and_the_last_error() {
        let mut n = 0;
        let err = wait_until("the leader", Duration::from_secs(2), async || {
            n += 1;
            Err::<(), _>(format!("no leader yet (try {n})"))
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for the leader"), "{err}");
        assert!(err.contains("last error: no leader yet (try "), "{err}");
        assert!(err.contains(&format!("(try {n})")), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_says_when_a_condition_never_held() {
        let err = wait_until("never", Duration::from_millis(300), async || false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("the condition never held"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_cuts_off_a_check_that_hangs() {
        let err = wait_until("hang", Duration::from_secs(1), async || {
            std::future::pending::<bool>().await
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("still running at the deadline"), "{err}");
    }
}
