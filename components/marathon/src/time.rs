//! Marathon timestamps: ISO-8601 UTC with milliseconds (`2015-09-25T15:13:48.343Z`), which are
//! also app version ids. No calendar crate: the civil-date conversion is a few lines.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, shown as ISO-8601 UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock now.
    pub fn now() -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_millis(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Seconds from `self` until `later` (negative if `later` is earlier).
    pub fn secs_until(self, later: Timestamp) -> f64 {
        (later.0 - self.0) as f64 / 1000.0
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff…]Z` (also `+00:00`).
    pub fn parse(s: &str) -> Option<Timestamp> {
        let s = s.trim();
        let body = s
            .strip_suffix('Z')
            .or_else(|| s.strip_suffix("+00:00"))
            .unwrap_or(s);
        let (date, time) = body.split_once('T')?;
        let mut d = date.split('-');
        let y: i64 = d.next()?.parse().ok()?;
        let mo: u32 = d.next()?.parse().ok()?;
        let da: u32 = d.next()?.parse().ok()?;
        // Four-digit years only: the day arithmetic below must not overflow on input.
        if d.next().is_some()
            || !(0..=9999).contains(&y)
            || !(1..=12).contains(&mo)
            || !(1..=31).contains(&da)
        {
            return None;
        }
        let (hms, frac) = match time.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (time, None),
        };
        let mut t = hms.split(':');
        let h: i64 = t.next()?.parse().ok()?;
        let mi: i64 = t.next()?.parse().ok()?;
        let se: i64 = t.next()?.parse().ok()?;
        if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let ms = match frac {
            None => 0,
            Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
                let mut digits: String = f.chars().take(3).collect();
                while digits.len() < 3 {
                    digits.push('0');
                }
                digits.parse::<i64>().ok()?
            }
            Some(_) => return None,
        };
        let days = days_from_civil(y, mo, da);
        Some(Timestamp(
            ((days * 86_400) + h * 3600 + mi * 60 + se) * 1000 + ms,
        ))
    }
}

/// `secs` seconds as milliseconds, saturating at `i64::MAX` instead of wrapping. Validated
/// definitions stay far below that (see [`crate::limits::MAX_DURATION_SECONDS`]).
pub fn secs_to_millis(secs: u64) -> i64 {
    i64::try_from(secs).map_or(i64::MAX, |s| s.saturating_mul(1000))
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("error.expected.date.isoformat"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_marathon() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        let t = Timestamp::parse("2015-09-25T15:13:48.343Z").unwrap();
        assert_eq!(t.to_string(), "2015-09-25T15:13:48.343Z");
        assert_eq!(
            Timestamp::parse("2021-07-01T10:00:00Z")
                .unwrap()
                .to_string(),
            "2021-07-01T10:00:00.000Z"
        );
        assert!(Timestamp::parse("yesterday").is_none());
        assert!(Timestamp::parse("99999999999999999-01-01T00:00:00Z").is_none());
        assert!(Timestamp::parse("-5-01-01T00:00:00Z").is_none());
    }

    #[test]
    fn seconds_become_milliseconds_without_wrapping() {
        assert_eq!(secs_to_millis(0), 0);
        assert_eq!(secs_to_millis(60), 60_000);
        assert_eq!(secs_to_millis(u64::MAX), i64::MAX);
        assert_eq!(secs_to_millis(i64::MAX as u64), i64::MAX);
    }

    proptest! {
        #[test]
        fn timestamps_round_trip_through_text(ms in 0i64..8_000_000_000_000) {
            let t = Timestamp(ms);
            prop_assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
        }
    }
}
