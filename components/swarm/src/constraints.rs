//! Placement constraints as classic Swarm accepted them, pure: `-e constraint:<key><op><value>`
//! in the environment (taken out of it, as Swarm did) and the label
//! `com.docker.swarm.constraints` (a JSON array of the same expressions), matched against an
//! offer. `<op>` is `==` or `!=`, followed by `~` for a soft rule (a preference: offers that
//! meet it are taken first, others only when none does). Values are exact or globs (`*`,
//! `?`); Swarm's `/regex/` values are refused. `node` matches the agent's hostname or id; any
//! other key matches an agent attribute (text, or a scalar's number).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The label classic Swarm keeps constraints in.
pub const LABEL: &str = "com.docker.swarm.constraints";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    pub key: String,
    /// `==` (true) or `!=` (false).
    pub equal: bool,
    pub value: String,
    pub soft: bool,
}

impl Constraint {
    /// Parses `key==value`, `key!=value`, `key==~value`.
    pub fn parse(expr: &str) -> Result<Constraint, String> {
        let (at, equal) = match (expr.find("=="), expr.find("!=")) {
            (Some(a), Some(b)) => (a.min(b), a < b),
            (Some(a), None) => (a, true),
            (None, Some(b)) => (b, false),
            (None, None) => {
                return Err(format!(
                    "constraint {expr:?}: expected <key>==<value> or <key>!=<value>"
                ));
            }
        };
        let key = expr[..at].trim();
        let mut value = expr[at + 2..].trim();
        let soft = value.starts_with('~');
        if soft {
            value = value[1..].trim();
        }
        if key.is_empty() || value.is_empty() {
            return Err(format!("constraint {expr:?}: key and value are required"));
        }
        if value.len() >= 2 && value.starts_with('/') && value.ends_with('/') {
            return Err(format!(
                "constraint {expr:?}: regular expressions are not supported by capstan (use a glob)"
            ));
        }
        Ok(Constraint {
            key: key.to_owned(),
            equal,
            value: value.to_owned(),
            soft,
        })
    }

    /// Whether `offer`'s agent meets the rule.
    pub fn holds(&self, offer: &Value) -> bool {
        let candidates: Vec<String> = if self.key == "node" {
            [&offer["hostname"], &offer["agent_id"]["value"]]
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        } else {
            offer["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["name"] == self.key.as_str())
                .filter_map(|a| {
                    a["text"]["value"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| a["scalar"]["value"].as_f64().map(|f| f.to_string()))
                })
                .collect()
        };
        let any = candidates.iter().any(|c| glob(&self.value, c));
        any == self.equal
    }
}

/// `*` and `?` globs, case-insensitive as classic Swarm's.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The constraints of a create body's environment and labels; the environment without them.
pub fn extract(
    env: &[String],
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<(Vec<Constraint>, Vec<String>), String> {
    let mut out = Vec::new();
    let mut rest = Vec::new();
    for e in env {
        match e.strip_prefix("constraint:") {
            Some(expr) => out.push(Constraint::parse(expr)?),
            None if e.starts_with("affinity:") => {
                return Err(format!(
                    "{e:?}: affinities are not supported by capstan (constraints are)"
                ));
            }
            None => rest.push(e.clone()),
        }
    }
    if let Some(text) = labels.and_then(|l| l.get(LABEL)) {
        let list: Vec<String> = serde_json::from_str(text)
            .map_err(|e| format!("label {LABEL}: not a JSON array of strings: {e}"))?;
        for expr in list {
            let c = Constraint::parse(&expr)?;
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok((out, rest))
}

/// Whether every hard rule holds for `offer`.
pub fn hard_hold(cs: &[Constraint], offer: &Value) -> Result<(), String> {
    match cs.iter().find(|c| !c.soft && !c.holds(offer)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "constraint {}{}{} does not hold on agent {}",
            c.key,
            if c.equal { "==" } else { "!=" },
            c.value,
            offer["hostname"].as_str().unwrap_or_default()
        )),
    }
}

/// Whether every soft rule holds for `offer` (the preferred offers).
pub fn soft_hold(cs: &[Constraint], offer: &Value) -> bool {
    cs.iter().filter(|c| c.soft).all(|c| c.holds(offer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn offer(host: &str, zone: &str) -> Value {
        json!({"hostname": host, "agent_id": {"value": format!("A-{host}")},
               "attributes": [{"name": "zone", "type": "TEXT", "text": {"value": zone}},
                              {"name": "rack", "type": "SCALAR", "scalar": {"value": 3.0}}]})
    }

    #[test]
    fn classic_swarm_constraints_parse_and_match_offers() {
        let env = vec![
            "A=1".to_owned(),
            "constraint:node==agent-2".to_owned(),
            "constraint:zone!=b*".to_owned(),
            "constraint:rack==~3".to_owned(),
        ];
        let labels = [(LABEL.to_owned(), r#"["zone==a"]"#.to_owned())]
            .into_iter()
            .collect();
        let (cs, rest) = extract(&env, Some(&labels)).unwrap();
        assert_eq!(rest, vec!["A=1".to_owned()]);
        assert_eq!(cs.len(), 4);
        assert!(cs[2].soft && !cs[1].equal);
        assert!(hard_hold(&cs, &offer("agent-2", "a")).is_ok());
        assert!(hard_hold(&cs, &offer("AGENT-2", "a")).is_ok());
        let e = hard_hold(&cs, &offer("agent-1", "a")).unwrap_err();
        assert!(e.contains("node==agent-2"), "{e}");
        assert!(hard_hold(&cs, &offer("agent-2", "b1")).is_err());
        assert!(soft_hold(&cs, &offer("agent-2", "a")));
        // By agent id too, and globs.
        let by_id = Constraint::parse("node==A-agent-*").unwrap();
        assert!(by_id.holds(&offer("agent-9", "a")));
        for bad in ["node", "node==", "==x", "node==/a.*/"] {
            assert!(Constraint::parse(bad).is_err(), "{bad}");
        }
        assert!(extract(&["affinity:container==x".into()], None).is_err());
        assert!(
            extract(
                &[],
                Some(&[(LABEL.to_owned(), "x".to_owned())].into_iter().collect())
            )
            .is_err()
        );
    }
}
