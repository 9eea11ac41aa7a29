//! Slowing down password guessing: after a number of failed logins for one key (a uid, or a
//! source address) every further attempt must wait, the wait doubling with each failure up to a
//! cap; the login endpoint answers 429 with `Retry-After` meanwhile. A key's count is forgotten
//! after a quiet period, or when the uid logs in successfully.
//!
//! Pure: time is passed in (milliseconds on any monotonic scale), so the policy is tested as
//! tables. Memory is bounded: past `max_entries` keys, forgotten ones are dropped first, then
//! the longest-quiet ones.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// How a [`Limiter`] counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Failures allowed before any wait.
    pub free_failures: u32,
    /// The wait after the `free_failures`-th failure; doubled for each further one.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A key with no failure for this long starts over.
    pub forget_after: Duration,
    pub max_entries: usize,
}

impl Policy {
    /// Per uid: 5 free failures, then 1 s, 2 s, 4 s, … up to 5 min.
    pub fn per_uid() -> Policy {
        Policy {
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
            max_entries: 10_000,
        }
    }

    /// Per source address: more generous (several people behind one address), same curve.
    pub fn per_source() -> Policy {
        Policy {
            free_failures: 20,
            ..Policy::per_uid()
        }
    }

    fn delay(&self, failures: u32) -> Duration {
        if failures < self.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures).min(30);
        self.base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure_ms: u64,
}

/// Failed-attempt counts per key.
#[derive(Debug)]
pub struct Limiter<K> {
    policy: Policy,
    entries: HashMap<K, Entry>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(policy: Policy) -> Limiter<K> {
        Limiter {
            policy,
            entries: HashMap::new(),
        }
    }

    fn live(&self, key: &K, now_ms: u64) -> Option<Entry> {
        self.entries
            .get(key)
            .copied()
            .filter(|e| now_ms.saturating_sub(e.last_failure_ms) < ms(self.policy.forget_after))
    }

    /// `Err(wait)` while `key` must wait before its next attempt.
    pub fn check(&self, key: &K, now_ms: u64) -> Result<(), Duration> {
        let Some(e) = self.live(key, now_ms) else {
            return Ok(());
        };
        let until = e
            .last_failure_ms
            .saturating_add(ms(self.policy.delay(e.failures)));
        if now_ms < until {
            Err(Duration::from_millis(until - now_ms))
        } else {
            Ok(())
        }
    }

    /// Counts a failed attempt.
    pub fn failure(&mut self, key: &K, now_ms: u64) {
        let failures = self.live(key, now_ms).map_or(0, |e| e.failures);
        if !self.entries.contains_key(key) && self.entries.len() >= self.policy.max_entries {
            self.make_room(now_ms);
        }
        self.entries.insert(
            key.clone(),
            Entry {
                failures: failures.saturating_add(1),
                last_failure_ms: now_ms,
            },
        );
    }

    /// Forgets `key`'s failures (a successful login).
    pub fn success(&mut self, key: &K) {
        self.entries.remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self, now_ms: u64) {
        let forget = ms(self.policy.forget_after);
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.last_failure_ms) < forget);
        if self.entries.len() >= self.policy.max_entries {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_failure_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            free_failures: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            forget_after: Duration::from_secs(60),
            max_entries: 3,
        }
    }

    #[test]
    fn delays_double_after_the_free_failures_up_to_the_cap() {
        let p = policy();
        let table = [
            (0, 0),
            (1, 0),
            (2, 0),
            (3, 1),
            (4, 2),
            (5, 4),
            (6, 8),
            (7, 8),
            (99, 8),
        ];
        for (failures, secs) in table {
            assert_eq!(p.delay(failures), Duration::from_secs(secs), "{failures}");
        }
        assert_eq!(Policy::per_uid().delay(u32::MAX), Duration::from_secs(300));
    }

    enum Op {
        Fail(u64),
        Succeed,
        Check(u64, Result<(), u64>),
    }
    use Op::*;

    #[test]
    fn attempts_wait_after_repeated_failures() {
        let cases: Vec<(&str, Vec<Op>)> = vec![
            (
                "free failures never wait",
                vec![Fail(0), Fail(1), Check(2, Ok(()))],
            ),
            (
                "the third failure asks for one second",
                vec![
                    Fail(0),
                    Fail(10),
                    Fail(20),
                    Check(20, Err(1000)),
                    Check(520, Err(500)),
                    Check(1020, Ok(())),
                ],
            ),
            (
                "each further failure doubles the wait",
                vec![
                    Fail(0),
                    Fail(0),
                    Fail(0),
                    Fail(1000),
                    Check(1000, Err(2000)),
                    Fail(3000),
                    Check(3000, Err(4000)),
                ],
            ),
            (
                "a success starts over",
                vec![
                    Fail(0),
                    Fail(0),
                    Fail(0),
                    Succeed,
                    Check(0, Ok(())),
                    Fail(1),
                    Check(1, Ok(())),
                ],
            ),
            (
                "a quiet minute starts over",
                vec![
                    Fail(0),
                    Fail(0),
                    Fail(0),
                    Check(0, Err(1000)),
                    Fail(60_000),
                    Check(60_000, Ok(())),
                ],
            ),
        ];
        for (what, ops) in cases {
            let mut l = Limiter::new(policy());
            let k = "alice".to_string();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Fail(t) => l.failure(&k, t),
                    Succeed => l.success(&k),
                    Check(t, want) => assert_eq!(
                        l.check(&k, t),
                        want.map_err(Duration::from_millis),
                        "{what}, step {i}"
                    ),
                }
            }
        }
    }

    #[test]
    fn keys_are_counted_apart_and_memory_is_bounded() {
        let mut l = Limiter::new(policy());
        for _ in 0..3 {
            l.failure(&"a", 0);
        }
        assert!(l.check(&"a", 0).is_err());
        assert!(l.check(&"b", 0).is_ok());
        l.failure(&"b", 1);
        l.failure(&"c", 2);
        assert_eq!(l.len(), 3);
        // Full: the longest-quiet key ("a", last failure at 0) makes room.
        l.failure(&"d", 3);
        assert_eq!(l.len(), 3);
        assert!(l.check(&"a", 3).is_ok());
        // Forgotten keys go first.
        l.failure(&"e", 100_000);
        assert_eq!(l.len(), 1);
        assert!(!l.is_empty());
    }
}
