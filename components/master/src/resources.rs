//! Resource arithmetic (pure): scalars in fixed-point milli-units so sums never drift,
//! port-style ranges as merged inclusive intervals, and sets. Conversion to and from the
//! Mesos JSON `Resource` list and the flattened `/master/state` format lives here too.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// The default (unreserved) role.
pub const ANY_ROLE: &str = "*";

/// Inclusive, sorted, non-overlapping, non-adjacent ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
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

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
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
}

/// A bag of resources of one role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Scalar resources in milli-units (1 cpu = 1000).
    pub scalars: BTreeMap<String, i64>,
    pub ranges: BTreeMap<String, RangeSet>,
    pub sets: BTreeMap<String, BTreeSet<String>>,
}

/// Converts a scalar to fixed-point milli-units.
pub fn to_milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

pub fn from_milli(v: i64) -> f64 {
    v as f64 / 1000.0
}

impl Resources {
    pub fn scalar(mut self, name: &str, value: f64) -> Self {
        *self.scalars.entry(name.to_string()).or_default() += to_milli(value);
        self
    }

    pub fn range(mut self, name: &str, begin: u64, end: u64) -> Self {
        let add = RangeSet::new([(begin, end)]);
        let e = self.ranges.entry(name.to_string()).or_default();
        *e = e.union(&add);
        self
    }

    pub fn get_scalar(&self, name: &str) -> f64 {
        from_milli(self.scalars.get(name).copied().unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.scalars.values().all(|v| *v <= 0)
            && self.ranges.values().all(RangeSet::is_empty)
            && self.sets.values().all(BTreeSet::is_empty)
    }

    pub fn add(&mut self, other: &Resources) {
        for (k, v) in &other.scalars {
            *self.scalars.entry(k.clone()).or_default() += v;
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

    pub fn contains(&self, other: &Resources) -> bool {
        other
            .scalars
            .iter()
            .all(|(k, v)| *v <= 0 || self.scalars.get(k).copied().unwrap_or(0) >= *v)
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
            *self.scalars.entry(k.clone()).or_default() -= v;
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

    /// Mesos `Resource` JSON objects, all carrying `role` and `allocation_info.role` when
    /// `allocation_role` is given.
    pub fn to_mesos_json(&self, role: &str, allocation_role: Option<&str>) -> Vec<Value> {
        let mut out = Vec::new();
        let decorate = |mut v: Value| {
            v["role"] = json!(role);
            if role != ANY_ROLE {
                v["reservations"] = json!([{"type": "STATIC", "role": role}]);
            }
            if let Some(a) = allocation_role {
                v["allocation_info"] = json!({"role": a});
            }
            v
        };
        for (k, v) in &self.scalars {
            out.push(decorate(
                json!({"name": k, "type": "SCALAR", "scalar": {"value": from_milli(*v)}}),
            ));
        }
        for (k, v) in &self.ranges {
            let r: Vec<Value> = v
                .ranges()
                .iter()
                .map(|(b, e)| json!({"begin": b, "end": e}))
                .collect();
            out.push(decorate(
                json!({"name": k, "type": "RANGES", "ranges": {"range": r}}),
            ));
        }
        for (k, v) in &self.sets {
            out.push(decorate(
                json!({"name": k, "type": "SET", "set": {"item": v}}),
            ));
        }
        out
    }

    /// Flattened `/master/state` form: `{"cpus":1,"gpus":0,"mem":128,"disk":0,"ports":"[..]"}`.
    pub fn to_flat_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for k in ["cpus", "gpus", "mem", "disk"] {
            m.insert(k.into(), json!(self.get_scalar(k)));
        }
        for (k, v) in &self.scalars {
            m.insert(k.clone(), json!(from_milli(*v)));
        }
        for (k, v) in &self.ranges {
            m.insert(k.clone(), json!(v.to_mesos_string()));
        }
        for (k, v) in &self.sets {
            let items: Vec<&str> = v.iter().map(String::as_str).collect();
            m.insert(k.clone(), json!(format!("{{{}}}", items.join(", "))));
        }
        Value::Object(m)
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

pub fn pools_to_mesos_json(p: &Pools, allocation_role: Option<&str>) -> Vec<Value> {
    p.iter()
        .flat_map(|(role, r)| r.to_mesos_json(role, allocation_role))
        .collect()
}

/// Why a Mesos `Resource` list could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseResourceError {
    #[error("resource must be an object with a 'name'")]
    MissingName,
    #[error("resource '{0}' has an unsupported or missing 'type'")]
    BadType(String),
    #[error("resource '{0}' has a negative or invalid value")]
    BadValue(String),
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Reads a Mesos `Resource` JSON list, grouping by role (`role` field, or the last
/// reservation's role, default `*`).
pub fn pools_from_mesos_json(list: &[Value]) -> Result<Pools, ParseResourceError> {
    let mut pools = Pools::new();
    for r in list {
        let name = r
            .get("name")
            .and_then(Value::as_str)
            .ok_or(ParseResourceError::MissingName)?;
        let role = r
            .get("reservations")
            .and_then(Value::as_array)
            .and_then(|a| a.last())
            .and_then(|x| x.get("role"))
            .and_then(Value::as_str)
            .or_else(|| r.get("role").and_then(Value::as_str))
            .unwrap_or(ANY_ROLE)
            .to_string();
        let ty = r.get("type").and_then(Value::as_str).unwrap_or("SCALAR");
        let mut res = Resources::default();
        match ty {
            "SCALAR" => {
                let v = r
                    .pointer("/scalar/value")
                    .and_then(num)
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| ParseResourceError::BadValue(name.into()))?;
                res = res.scalar(name, v);
            }
            "RANGES" => {
                let empty = Vec::new();
                let items = r
                    .pointer("/ranges/range")
                    .and_then(Value::as_array)
                    .unwrap_or(&empty);
                let mut ranges = Vec::new();
                for it in items {
                    let b = it.get("begin").and_then(num);
                    let e = it.get("end").and_then(num);
                    match (b, e) {
                        (Some(b), Some(e)) if b >= 0.0 && e >= b => {
                            ranges.push((b as u64, e as u64))
                        }
                        _ => return Err(ParseResourceError::BadValue(name.into())),
                    }
                }
                res.ranges.insert(name.into(), RangeSet::new(ranges));
            }
            "SET" => {
                let items: BTreeSet<String> = r
                    .pointer("/set/item")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                res.sets.insert(name.into(), items);
            }
            other => return Err(ParseResourceError::BadType(format!("{name}:{other}"))),
        }
        pools.entry(role).or_default().add(&res);
    }
    pools.retain(|_, r| !r.is_empty());
    Ok(pools)
}

#[cfg(test)]
mod tests {
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
    }

    #[test]
    fn scalars_do_not_drift() {
        let mut r = Resources::default().scalar("cpus", 1.0);
        for _ in 0..10 {
            assert!(r.checked_sub(&Resources::default().scalar("cpus", 0.1)));
        }
        assert!(r.is_empty());
    }

    #[test]
    fn mesos_json_round_trips_with_roles() {
        let list = vec![
            json!({"name":"cpus","type":"SCALAR","scalar":{"value":2.5}}),
            json!({"name":"mem","type":"SCALAR","scalar":{"value":"512"},"role":"slave_public"}),
            json!({"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":31010}]}}),
        ];
        let p = pools_from_mesos_json(&list).unwrap();
        assert_eq!(p["*"].get_scalar("cpus"), 2.5);
        assert_eq!(p["slave_public"].get_scalar("mem"), 512.0);
        let back = pools_from_mesos_json(&pools_to_mesos_json(&p, Some("*"))).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            p["*"].to_flat_json(),
            json!({"cpus":2.5,"gpus":0.0,"mem":0.0,"disk":0.0,"ports":"[31000-31010]"})
        );
    }

    #[test]
    fn bad_resources_are_rejected() {
        assert_eq!(
            pools_from_mesos_json(&[json!({"type":"SCALAR"})]),
            Err(ParseResourceError::MissingName)
        );
        assert!(pools_from_mesos_json(&[json!({"name":"cpus","scalar":{"value":-1}})]).is_err());
    }
}
