//! Exponential backoff between retries: the one reconnect and retry policy of every Capstan
//! client (master streams, coord, the store writer). Pure: it computes delays; callers sleep.

use std::time::Duration;

/// Doubles the delay after each failure, from `initial` up to `max`; `reset` after a success.
///
/// ```
/// # use std::time::Duration;
/// # use capstan_types::Backoff;
/// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
/// assert_eq!(b.next_delay(), Duration::from_millis(100));
/// assert_eq!(b.next_delay(), Duration::from_millis(200));
/// assert_eq!(b.next_delay(), Duration::from_millis(350));
/// b.reset();
/// assert_eq!(b.next_delay(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    attempts: u32,
}

impl Backoff {
    /// A backoff starting at `initial` (at least 1 ms) and never waiting longer than `max`
    /// (at least `initial`).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
            attempts: 0,
        }
    }

    /// The delay to wait before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        d
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_never_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        let mut last = Duration::ZERO;
        for _ in 0..200 {
            let d = b.next_delay();
            assert!(d >= last);
            last = d;
        }
        assert_eq!(b.attempts(), 200);
    }

    #[test]
    fn degenerate_bounds_are_raised() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::from_millis(1));
        assert_eq!(b.next_delay(), Duration::from_millis(1));
    }
}
