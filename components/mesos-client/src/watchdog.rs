//! The heartbeat watchdog: a stream is dead when no record (a HEARTBEAT counts) arrived within
//! `missed` heartbeat intervals. Pure: it is given the time (tokio's clock, so tests pause it).

use std::time::Duration;

use tokio::time::Instant;

/// The heartbeat interval assumed until the master announces its own (Mesos' default).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Tracks when the last record arrived and when the stream counts as dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    interval: Duration,
    missed: u32,
    last: Instant,
}

impl Watchdog {
    /// A watchdog that declares the stream dead after `missed` (at least 1) silent `interval`s
    /// counted from `now`.
    pub fn new(interval: Duration, missed: u32, now: Instant) -> Watchdog {
        Watchdog {
            interval: nonzero(interval),
            missed: missed.max(1),
            last: now,
        }
    }

    /// A record arrived at `now`.
    pub fn record(&mut self, now: Instant) {
        self.last = now;
    }

    /// The master announced its heartbeat interval (`heartbeat_interval_seconds`); a zero,
    /// negative, non-finite or absurd value keeps the current interval.
    pub fn set_interval_secs(&mut self, secs: f64) {
        if let Ok(d) = Duration::try_from_secs_f64(secs)
            && !d.is_zero()
        {
            self.interval = d;
        }
    }

    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = nonzero(interval);
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long the stream may stay silent.
    pub fn limit(&self) -> Duration {
        self.interval.saturating_mul(self.missed)
    }

    /// When the stream is dead unless a record arrives first (`None`: never within the
    /// clock's range).
    pub fn deadline(&self) -> Option<Instant> {
        self.last.checked_add(self.limit())
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }
}

fn nonzero(d: Duration) -> Duration {
    if d.is_zero() { DEFAULT_HEARTBEAT } else { d }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_dead_after_the_missed_heartbeats_and_a_record_rearms_it() {
        let start = Instant::now();
        let mut w = Watchdog::new(Duration::from_secs(1), 3, start);
        assert_eq!(w.limit(), Duration::from_secs(3));
        tokio::time::advance(Duration::from_millis(2999)).await;
        assert!(!w.expired(Instant::now()));
        w.record(Instant::now());
        tokio::time::advance(Duration::from_millis(2999)).await;
        assert!(!w.expired(Instant::now()), "the record re-armed it");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(w.expired(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_announced_interval_replaces_the_default_unless_it_is_unusable() {
        let mut w = Watchdog::new(Duration::ZERO, 0, Instant::now());
        assert_eq!(w.interval(), DEFAULT_HEARTBEAT, "zero means the default");
        assert_eq!(w.limit(), DEFAULT_HEARTBEAT, "at least one interval");
        w.set_interval_secs(0.5);
        assert_eq!(w.interval(), Duration::from_millis(500));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            w.set_interval_secs(bad);
            assert_eq!(w.interval(), Duration::from_millis(500), "secs {bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn huge_limits_saturate_instead_of_overflowing() {
        let w = Watchdog::new(Duration::MAX, u32::MAX, Instant::now());
        assert_eq!(w.limit(), Duration::MAX);
        assert_eq!(w.deadline(), None);
        assert!(!w.expired(Instant::now()));
    }
}
