//! `GET /events`, pure parts: the event swarm records when a container or network changes
//! (create, start, die, stop, kill, destroy, rename, restart; network create, connect,
//! disconnect, destroy), its JSON as Docker writes it — with the legacy `status`, `id` and
//! `from` fields compose v1 reads, since swarm serves API versions below 1.52 only — and the
//! `filters=` of the endpoint.
//!
//! Events are swarm's own view (what its API and its tasks did), kept in memory: the last
//! [`KEEP`] are replayed for `since=`, and a swarm restart starts an empty history.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::model::Container;

/// How many past events are kept for `since=`.
pub const KEEP: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `container` or `network`.
    pub kind: &'static str,
    pub action: String,
    pub actor_id: String,
    pub attributes: BTreeMap<String, String>,
    /// Unix nanoseconds.
    pub time_nano: i64,
}

impl Event {
    /// A container event; its attributes are the container's labels, image and name.
    pub fn container(c: &Container, action: &str, extra: &[(&str, String)]) -> Event {
        let mut attributes = c.spec.labels.clone();
        attributes.insert("image".into(), c.spec.image.clone());
        attributes.insert("name".into(), c.name.clone());
        for (k, v) in extra {
            attributes.insert((*k).to_owned(), v.clone());
        }
        Event {
            kind: "container",
            action: action.to_owned(),
            actor_id: c.id.clone(),
            attributes,
            time_nano: now_nanos(),
        }
    }

    /// A network event (`container` names the attached container, if any).
    pub fn network(id: &str, name: &str, action: &str, container: Option<&str>) -> Event {
        let mut attributes = BTreeMap::new();
        attributes.insert("name".to_owned(), name.to_owned());
        attributes.insert("type".to_owned(), "bridge".to_owned());
        if let Some(c) = container {
            attributes.insert("container".to_owned(), c.to_owned());
        }
        Event {
            kind: "network",
            action: action.to_owned(),
            actor_id: id.to_owned(),
            attributes,
            time_nano: now_nanos(),
        }
    }

    /// One line of the stream.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": self.attributes},
            "scope": "local",
            "time": self.time_nano / 1_000_000_000,
            "timeNano": self.time_nano,
        });
        // Legacy fields (API < 1.52), which compose v1 reads.
        if self.kind == "container" {
            v["status"] = json!(self.action);
            v["id"] = json!(self.actor_id);
            v["from"] = json!(self.attributes.get("image").cloned().unwrap_or_default());
        }
        v
    }
}

fn now_nanos() -> i64 {
    let (s, n) = crate::time::now();
    s.saturating_mul(1_000_000_000).saturating_add(i64::from(n))
}

/// `since=` / `until=`: Unix seconds, with an optional fraction (`1700000000.5`), or an RFC
/// 3339 time; in nanoseconds.
pub fn parse_time(v: &str) -> Result<i64, String> {
    let v = v.trim();
    if let Some(secs) = crate::time::parse_rfc3339(v) {
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = whole
        .parse()
        .map_err(|_| format!("invalid timestamp {v:?}: use Unix seconds or RFC 3339"))?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("invalid timestamp {v:?}"));
        }
        nanos = format!("{digits:0<9}").parse().unwrap_or(0);
    }
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// The `filters=` of `/events`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilters(BTreeMap<String, Vec<String>>);

impl EventFilters {
    pub fn parse(text: &str) -> Result<EventFilters, String> {
        let f = crate::views::Filters::parse_any(text)?;
        for k in f.keys() {
            if !matches!(
                k.as_str(),
                "type" | "event" | "container" | "label" | "network" | "image" | "scope"
            ) {
                return Err(format!("invalid filter '{k}'"));
            }
        }
        Ok(EventFilters(f))
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.0.iter().all(|(k, vals)| {
            vals.is_empty()
                || match k.as_str() {
                    "type" => vals.iter().any(|t| t == e.kind),
                    "event" => vals.contains(&e.action),
                    "container" => {
                        e.kind == "container"
                            && vals.iter().any(|c| {
                                e.actor_id.starts_with(c.as_str())
                                    || e.attributes.get("name") == Some(c)
                            })
                    }
                    "network" => {
                        e.kind == "network"
                            && vals.iter().any(|n| {
                                e.actor_id.starts_with(n.as_str())
                                    || e.attributes.get("name") == Some(n)
                            })
                    }
                    "image" => vals.iter().any(|i| {
                        e.attributes.get("image").is_some_and(|x| {
                            crate::model::normalise_image(x) == crate::model::normalise_image(i)
                        })
                    }),
                    "label" => vals.iter().all(|l| match l.split_once('=') {
                        Some((k, v)) => e.attributes.get(k).is_some_and(|x| x == v),
                        None => e.attributes.contains_key(l.as_str()),
                    }),
                    "scope" => vals.iter().any(|s| s == "local"),
                    _ => false,
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, labels: &[(&str, &str)]) -> Event {
        Event {
            kind: "container",
            action: action.into(),
            actor_id: "abc123".into(),
            attributes: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([
                    ("image".into(), "capstan/http".into()),
                    ("name".into(), "web".into()),
                ])
                .collect(),
            time_nano: 1_700_000_000_123_456_789,
        }
    }

    #[test]
    fn events_carry_the_legacy_fields_and_filter_as_docker_does() {
        let e = event("start", &[("com.docker.compose.project", "p")]);
        let v = e.to_json();
        assert_eq!(v["status"], "start");
        assert_eq!(v["id"], "abc123");
        assert_eq!(v["from"], "capstan/http");
        assert_eq!(v["time"], 1_700_000_000);
        assert_eq!(v["Actor"]["Attributes"]["com.docker.compose.project"], "p");
        let f = |t: &str| EventFilters::parse(t).unwrap().matches(&e);
        assert!(f(r#"{"label":["com.docker.compose.project=p"]}"#));
        assert!(f(r#"{"type":["container"],"event":["start","die"]}"#));
        assert!(f(r#"{"container":["web"]}"#) && f(r#"{"container":["abc"]}"#));
        assert!(!f(r#"{"label":["com.docker.compose.project=q"]}"#));
        assert!(!f(r#"{"type":["network"]}"#));
        assert!(EventFilters::parse(r#"{"bogus":["x"]}"#).is_err());
        let n = Event::network("nid", "p_default", "create", None).to_json();
        assert!(n.get("status").is_none());
    }

    #[test]
    fn times_are_unix_seconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(
            parse_time("1700000000.5").unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(parse_time("1970-01-01T00:00:10Z").unwrap(), 10_000_000_000);
        assert!(parse_time("soon").is_err());
    }
}
