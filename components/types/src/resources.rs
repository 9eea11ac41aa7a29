//! The one resource model: scalars (cpus, mem, disk, gpus) in fixed-point milli-units, so sums
//! never drift and master, agent and apps agree to the unit on whether something fits; port
//! style ranges as merged inclusive intervals; sets. All arithmetic is checked or saturating:
//! no input can wrap a counter.

use std::collections::{BTreeMap, BTreeSet};

/// The default (unreserved) role.
pub const ANY_ROLE: &str = "*";

/// Milli-units in one unit (1 cpu = 1000).
pub const MILLI: i64 = 1000;

/// The largest scalar a resource may have, in units (a petabyte of MiB, a million cores are
/// far below it; `f64` represents every milli-unit up to it exactly).
pub const MAX_SCALAR: f64 = 1e12;

/// A scalar that is no resource amount.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ScalarError {
    #[error("{0} is not a finite number")]
    NotFinite(f64),
    #[error("{0} is negative")]
    Negative(f64),
    #[error("{0} is larger than {MAX_SCALAR}")]
    TooLarge(f64),
}

/// `v` units in milli-units, rounded to the nearest; `Err` for NaN, infinities, negative
/// values and values above [`MAX_SCALAR`].
pub fn checked_milli(v: f64) -> Result<i64, ScalarError> {
    if !v.is_finite() {
        Err(ScalarError::NotFinite(v))
    } else if v < 0.0 {
        Err(ScalarError::Negative(v))
    } else if v > MAX_SCALAR {
        Err(ScalarError::TooLarge(v))
    } else {
        Ok((v * MILLI as f64).round() as i64)
    }
}

/// `v` units in milli-units for a value already validated: out-of-range values saturate
/// (NaN is 0).
pub fn to_milli(v: f64) -> i64 {
    // `as` saturates and maps NaN to 0.
    (v.clamp(-MAX_SCALAR, MAX_SCALAR) * MILLI as f64).round() as i64
}

pub fn from_milli(v: i64) -> f64 {
    v as f64 / MILLI as f64
}

/// Inclusive, sorted, non-overlapping, non-adjacent ranges (Mesos `RANGES`, e.g. ports).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// The union of `ranges`; ranges with `begin > end` are ignored.
    pub fn new(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut v: Vec<(u64, u64)> = ranges.into_iter().filter(|(b, e)| b <= e).collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (b, e) in v {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        Self(out)
    }

    /// The set of the single values in `values`.
    pub fn of_values(values: impl IntoIterator<Item = u64>) -> Self {
        Self::new(values.into_iter().map(|v| (v, v)))
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many values the set holds (saturating at `u64::MAX`).
    pub fn len(&self) -> u64 {
        self.0
            .iter()
            .map(|(b, e)| (e - b).saturating_add(1))
            .fold(0u64, u64::saturating_add)
    }

    pub fn contains_value(&self, v: u64) -> bool {
        self.0.iter().any(|(b, e)| *b <= v && v <= *e)
    }

    /// Every value, in order (use on small sets: port ranges).
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(b, e)| b..=e)
    }

    pub fn union(&self, other: &Self) -> Self {
        Self::new(self.0.iter().chain(other.0.iter()).copied())
    }

    /// Whether every value of `other` is in `self`.
    pub fn contains(&self, other: &Self) -> bool {
        other
            .0
            .iter()
            .all(|(b, e)| self.0.iter().any(|(sb, se)| sb <= b && e <= se))
    }

    /// `self` minus `other` (values of `other` not in `self` are ignored).
    pub fn subtract(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        for &(mut b, e) in &self.0 {
            let mut done = false;
            for &(ob, oe) in &other.0 {
                if oe < b || ob > e {
                    continue;
                }
                if ob > b {
                    out.push((b, ob - 1));
                }
                if oe >= e {
                    done = true;
                    break;
                }
                b = oe + 1;
            }
            if !done {
                out.push((b, e));
            }
        }
        Self::new(out)
    }

    /// Mesos text form: `[31000-31005, 31010-31010]`.
    pub fn to_mesos_string(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(b, e)| format!("{b}-{e}")).collect();
        format!("[{}]", parts.join(", "))
    }

    /// Parses the Mesos text form, `[31000-32000]` or `[1-5, 8-8]` (brackets optional).
    pub fn parse_mesos(text: &str) -> Result<RangeSet, String> {
        let inner = text.trim();
        let inner = inner
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(inner);
        let mut ranges = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (b, e) = part.split_once('-').unwrap_or((part, part));
            let parse = |s: &str| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{part:?} is not a range like 31000-32000"))
            };
            let (b, e) = (parse(b)?, parse(e)?);
            if b > e {
                return Err(format!("{part:?} ends before it begins"));
            }
            ranges.push((b, e));
        }
        Ok(RangeSet::new(ranges))
    }
}

/// A bag of resources of one role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Scalar resources in milli-units (1 cpu = 1000).
    pub scalars: BTreeMap<String, i64>,
    pub ranges: BTreeMap<String, RangeSet>,
    pub sets: BTreeMap<String, BTreeSet<String>>,
}

impl Resources {
    /// Adds `value` units of a scalar (saturating; validate untrusted values with
    /// [`checked_milli`] first).
    pub fn scalar(mut self, name: &str, value: f64) -> Self {
        let e = self.scalars.entry(name.to_string()).or_default();
        *e = e.saturating_add(to_milli(value));
        self
    }

    /// Adds the values `begin..=end` of a range resource.
    pub fn range(mut self, name: &str, begin: u64, end: u64) -> Self {
        let add = RangeSet::new([(begin, end)]);
        let e = self.ranges.entry(name.to_string()).or_default();
        *e = e.union(&add);
        self
    }

    pub fn get_scalar(&self, name: &str) -> f64 {
        from_milli(self.get_milli(name))
    }

    pub fn get_milli(&self, name: &str) -> i64 {
        self.scalars.get(name).copied().unwrap_or(0)
    }

    pub fn get_ranges(&self, name: &str) -> Option<&RangeSet> {
        self.ranges.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.scalars.values().all(|v| *v <= 0)
            && self.ranges.values().all(RangeSet::is_empty)
            && self.sets.values().all(BTreeSet::is_empty)
    }

    pub fn add(&mut self, other: &Resources) {
        for (k, v) in &other.scalars {
            let e = self.scalars.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
        for (k, v) in &other.ranges {
            let e = self.ranges.entry(k.clone()).or_default();
            *e = e.union(v);
        }
        for (k, v) in &other.sets {
            self.sets
                .entry(k.clone())
                .or_default()
                .extend(v.iter().cloned());
        }
        self.normalize();
    }

    /// Whether `other` fits in `self`: every positive scalar, range value and set item.
    pub fn contains(&self, other: &Resources) -> bool {
        other
            .scalars
            .iter()
            .all(|(k, v)| *v <= 0 || self.get_milli(k) >= *v)
            && other
                .ranges
                .iter()
                .all(|(k, v)| self.ranges.get(k).map_or(v.is_empty(), |s| s.contains(v)))
            && other.sets.iter().all(|(k, v)| {
                self.sets
                    .get(k)
                    .map_or(v.is_empty(), |s| v.iter().all(|i| s.contains(i)))
            })
    }

    /// Subtracts `other`, which must be contained in `self`; returns false (and changes
    /// nothing) otherwise.
    pub fn checked_sub(&mut self, other: &Resources) -> bool {
        if !self.contains(other) {
            return false;
        }
        for (k, v) in &other.scalars {
            if *v > 0 {
                let e = self.scalars.entry(k.clone()).or_default();
                *e = e.saturating_sub(*v);
            }
        }
        for (k, v) in &other.ranges {
            if let Some(s) = self.ranges.get_mut(k) {
                *s = s.subtract(v);
            }
        }
        for (k, v) in &other.sets {
            if let Some(s) = self.sets.get_mut(k) {
                for i in v {
                    s.remove(i);
                }
            }
        }
        self.normalize();
        true
    }

    fn normalize(&mut self) {
        self.scalars.retain(|_, v| *v != 0);
        self.ranges.retain(|_, v| !v.is_empty());
        self.sets.retain(|_, v| !v.is_empty());
    }
}

/// Resources split by role (`*` = unreserved).
pub type Pools = BTreeMap<String, Resources>;

pub fn pools_add(a: &mut Pools, b: &Pools) {
    for (role, r) in b {
        a.entry(role.clone()).or_default().add(r);
    }
    a.retain(|_, r| !r.is_empty());
}

pub fn pools_contains(a: &Pools, b: &Pools) -> bool {
    b.iter()
        .all(|(role, r)| r.is_empty() || a.get(role).is_some_and(|x| x.contains(r)))
}

/// Subtracts `b` from `a` if contained; returns false (unchanged) otherwise.
pub fn pools_checked_sub(a: &mut Pools, b: &Pools) -> bool {
    if !pools_contains(a, b) {
        return false;
    }
    for (role, r) in b {
        if let Some(x) = a.get_mut(role) {
            x.checked_sub(r);
        }
    }
    a.retain(|_, r| !r.is_empty());
    true
}

pub fn pools_sum(p: &Pools) -> Resources {
    let mut out = Resources::default();
    for r in p.values() {
        out.add(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ranges_merge_and_subtract() {
        let a = RangeSet::new([(1, 5), (6, 8), (20, 30)]);
        assert_eq!(a.ranges(), &[(1, 8), (20, 30)]);
        let b = a.subtract(&RangeSet::new([(3, 4), (20, 20), (30, 40)]));
        assert_eq!(b.ranges(), &[(1, 2), (5, 8), (21, 29)]);
        assert!(a.contains(&RangeSet::new([(2, 7)])));
        assert!(!a.contains(&RangeSet::new([(7, 21)])));
        assert_eq!(a.to_mesos_string(), "[1-8, 20-30]");
        assert_eq!(RangeSet::parse_mesos("[1-8, 20-30]").unwrap(), a);
        assert_eq!(RangeSet::new([(0, u64::MAX)]).len(), u64::MAX);
    }

    #[test]
    fn mesos_range_text_is_checked() {
        assert_eq!(
            RangeSet::parse_mesos("31000-31002").unwrap().len(),
            3,
            "brackets are optional"
        );
        assert!(RangeSet::parse_mesos("[5-1]").is_err());
        assert!(RangeSet::parse_mesos("[a-b]").is_err());
        assert!(RangeSet::parse_mesos("[]").unwrap().is_empty());
    }

    #[test]
    fn scalars_do_not_drift() {
        let mut r = Resources::default().scalar("cpus", 1.0);
        for _ in 0..10 {
            assert!(r.checked_sub(&Resources::default().scalar("cpus", 0.1)));
        }
        assert!(r.is_empty());
        // 0.1 + 0.2 fits in 0.3, as it must for every daemon alike.
        let need = Resources::default().scalar("cpus", 0.1).scalar("cpus", 0.2);
        assert!(Resources::default().scalar("cpus", 0.3).contains(&need));
    }

    #[test]
    fn untrusted_scalars_are_checked() {
        assert_eq!(checked_milli(0.5), Ok(500));
        assert!(matches!(
            checked_milli(f64::NAN),
            Err(ScalarError::NotFinite(_))
        ));
        assert!(matches!(checked_milli(-1.0), Err(ScalarError::Negative(_))));
        assert!(matches!(
            checked_milli(1e308),
            Err(ScalarError::TooLarge(_))
        ));
        assert_eq!(to_milli(1e308), to_milli(MAX_SCALAR), "saturates");
        let huge = Resources::default()
            .scalar("mem", 1e308)
            .scalar("mem", 1e308);
        assert!(huge.get_milli("mem") > 0, "no wrap");
    }

    fn resources() -> impl Strategy<Value = Resources> {
        (
            0i64..5_000,
            0i64..5_000,
            proptest::collection::vec((0u64..100, 0u64..10), 0..4),
        )
            .prop_map(|(cpus, mem, ranges)| {
                let mut r = Resources::default();
                r.scalars.insert("cpus".into(), cpus);
                r.scalars.insert("mem".into(), mem);
                r.ranges.insert(
                    "ports".into(),
                    RangeSet::new(ranges.into_iter().map(|(b, l)| (b, b + l))),
                );
                r.normalize();
                r
            })
    }

    proptest! {
        #[test]
        fn what_is_taken_can_be_given_back(a in resources(), b in resources()) {
            let mut total = a.clone();
            total.add(&b);
            prop_assert!(total.contains(&a));
            prop_assert!(total.contains(&b));
            let mut rest = total.clone();
            prop_assert!(rest.checked_sub(&b));
            // Scalars come back exactly (ranges of a and b may overlap, so only a's part
            // outside b is guaranteed to be left).
            for k in ["cpus", "mem"] {
                prop_assert_eq!(rest.get_milli(k), a.get_milli(k));
            }
            let a_ports = a.get_ranges("ports").cloned().unwrap_or_default();
            let b_ports = b.get_ranges("ports").cloned().unwrap_or_default();
            let left = rest.get_ranges("ports").cloned().unwrap_or_default();
            prop_assert!(left.contains(&a_ports.subtract(&b_ports)));
            // Never over-committed: subtracting more than is there changes nothing.
            let before = rest.clone();
            let mut more = rest.clone();
            more.add(&Resources::default().scalar("cpus", 1.0));
            prop_assert!(!rest.checked_sub(&more));
            prop_assert_eq!(rest, before);
        }

        #[test]
        fn range_set_operations_agree_with_sets_of_values(
            a in proptest::collection::vec((0u64..60, 0u64..6), 0..5),
            b in proptest::collection::vec((0u64..60, 0u64..6), 0..5),
        ) {
            let ra = RangeSet::new(a.iter().map(|&(s, l)| (s, s + l)));
            let rb = RangeSet::new(b.iter().map(|&(s, l)| (s, s + l)));
            let sa: BTreeSet<u64> = ra.values().collect();
            let sb: BTreeSet<u64> = rb.values().collect();
            let diff: BTreeSet<u64> = ra.subtract(&rb).values().collect();
            prop_assert_eq!(diff, sa.difference(&sb).copied().collect::<BTreeSet<_>>());
            let union: BTreeSet<u64> = ra.union(&rb).values().collect();
            prop_assert_eq!(union, sa.union(&sb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(ra.contains(&rb), sb.is_subset(&sa));
            prop_assert_eq!(ra.len(), sa.len() as u64);
        }
    }
}
