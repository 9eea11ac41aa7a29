//! The Mesos JSON forms of the shared resource model (`capstan_types::resources`): the
//! `Resource` list of the v1 APIs and the flattened `/master/state` format. The arithmetic
//! itself — milli-unit scalars, range sets, pools by role — is the one every daemon uses.

use std::collections::BTreeSet;

use serde_json::{Value, json};

pub use capstan_types::resources::{
    ANY_ROLE, Pools, RangeSet, Resources, from_milli, pools_add, pools_checked_sub, pools_contains,
    pools_sum, to_milli,
};

/// The Mesos JSON forms of a [`Resources`] bag.
pub trait MesosJson {
    /// Mesos `Resource` JSON objects, all carrying `role` and `allocation_info.role` when
    /// `allocation_role` is given.
    fn to_mesos_json(&self, role: &str, allocation_role: Option<&str>) -> Vec<Value>;
    /// Flattened `/master/state` form: `{"cpus":1,"gpus":0,"mem":128,"disk":0,"ports":"[..]"}`.
    fn to_flat_json(&self) -> Value;
}

impl MesosJson for Resources {
    fn to_mesos_json(&self, role: &str, allocation_role: Option<&str>) -> Vec<Value> {
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

    fn to_flat_json(&self) -> Value {
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
