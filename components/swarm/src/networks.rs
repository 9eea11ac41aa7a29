//! Docker networks, pure: the record swarm keeps for a user network (`docker network create`,
//! compose's `<project>_default`), the create body, the built-in `bridge`, `host` and `none`,
//! and the views `network ls` / `network inspect` read.
//!
//! Key decision (documented in `docs/swarm.md`): a user network is bookkeeping. Its
//! containers run with the agents' bridge networking, wherever they are placed; the network
//! records who is attached with which aliases (so compose converges without disconnect and
//! connect), but it gives them no private subnet and no name resolution of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::Container;

/// Version of the stored network record format.
pub const NETWORK_RECORD_VERSION: u32 = 1;

/// The networks every Docker engine has; they cannot be created or removed.
pub const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

/// `POST /networks/create`'s body (what swarm keeps; the rest is ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    pub name: String,
    pub driver: Option<String>,
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "IPAM")]
    pub ipam: Option<Value>,
    pub internal: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    pub attachable: bool,
    pub labels: Option<BTreeMap<String, String>>,
    pub check_duplicate: Option<bool>,
}

/// A user network as kept in coord at `<prefix>/networks/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub version: u32,
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    pub created: String,
    pub driver: String,
    pub options: BTreeMap<String, String>,
    pub ipam: Value,
    pub internal: bool,
    pub enable_ipv6: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
}

/// A network create body swarm refuses; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadNetwork(pub String);

/// The record of a create body (`id` and `created` from the caller).
pub fn record(
    body: &CreateNetwork,
    id: String,
    created: String,
) -> Result<NetworkRecord, BadNetwork> {
    let name = body.name.trim();
    if name.is_empty() {
        return Err(BadNetwork("Name is required".into()));
    }
    if PREDEFINED.contains(&name) {
        return Err(BadNetwork(format!(
            "operation is not permitted on predefined {name} network"
        )));
    }
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(BadNetwork(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    let driver = body
        .driver
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "bridge".into());
    if driver != "bridge" {
        return Err(BadNetwork(format!(
            "Driver {driver:?} is not supported by capstan (user networks are bridge networks)"
        )));
    }
    let ipam = match &body.ipam {
        Some(v) if !v.is_null() => v.clone(),
        _ => json!({"Driver": "default", "Options": {}, "Config": []}),
    };
    Ok(NetworkRecord {
        version: NETWORK_RECORD_VERSION,
        id,
        name: name.to_owned(),
        created,
        driver,
        options: body.options.clone().unwrap_or_default(),
        ipam,
        internal: body.internal,
        enable_ipv6: body.enable_ipv6.unwrap_or(false),
        attachable: body.attachable,
        labels: body.labels.clone().unwrap_or_default(),
    })
}

/// A network as the API shows it: a user network's record or a predefined one.
#[derive(Debug, Clone, PartialEq)]
pub enum Net<'a> {
    Predefined(&'static str),
    User(&'a NetworkRecord),
}

impl Net<'_> {
    pub fn name(&self) -> &str {
        match self {
            Net::Predefined(n) => n,
            Net::User(r) => &r.name,
        }
    }

    /// The id: a user network's own, a stable one derived from the name for predefined ones.
    pub fn id(&self) -> String {
        match self {
            Net::Predefined(n) => predefined_id(n),
            Net::User(r) => r.id.clone(),
        }
    }
}

/// The stable id of a predefined network.
pub fn predefined_id(name: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("capstan-network:{name}").as_bytes(),
    );
    hex::encode(d.as_ref())
}

/// The network a reference (full id, name, or unique id prefix) names, as Docker resolves it.
pub fn resolve<'a>(users: &'a [NetworkRecord], reference: &str) -> Result<Net<'a>, String> {
    let all: Vec<Net<'a>> = PREDEFINED
        .iter()
        .map(|n| Net::Predefined(n))
        .chain(users.iter().map(Net::User))
        .collect();
    if let Some(n) = all.iter().find(|n| n.id() == reference) {
        return Ok(n.clone());
    }
    if let Some(n) = all.iter().find(|n| n.name() == reference) {
        return Ok(n.clone());
    }
    let mut prefixed = all
        .iter()
        .filter(|n| !reference.is_empty() && n.id().starts_with(reference));
    match (prefixed.next(), prefixed.next()) {
        (Some(n), None) => Ok(n.clone()),
        (Some(_), Some(_)) => Err(format!("network {reference} is ambiguous")),
        _ => Err(format!("network {reference} not found")),
    }
}

/// The containers attached to network `name`: a user network's by their attachment, a
/// predefined one's by their network mode.
pub fn attached<'a>(name: &str, containers: &'a [Container]) -> Vec<&'a Container> {
    containers
        .iter()
        .filter(|c| {
            if c.spec.networks.is_empty() {
                c.spec.network.docker_name() == name
            } else {
                c.spec.networks.contains_key(name)
            }
        })
        .collect()
}

/// `GET /networks/{id}` (and, without `Containers`, an item of `GET /networks`).
pub fn view(net: &Net<'_>, containers: &[Container], with_containers: bool) -> Value {
    let (driver, scope, created, options, ipam, internal, ipv6, attachable, labels) = match net {
        Net::Predefined(n) => (
            match *n {
                "host" => "host",
                "none" => "null",
                _ => "bridge",
            }
            .to_owned(),
            "local",
            crate::time::format_rfc3339(0, 0),
            BTreeMap::new(),
            json!({"Driver": "default", "Options": null, "Config": []}),
            false,
            false,
            false,
            BTreeMap::new(),
        ),
        Net::User(r) => (
            r.driver.clone(),
            "local",
            r.created.clone(),
            r.options.clone(),
            r.ipam.clone(),
            r.internal,
            r.enable_ipv6,
            r.attachable,
            r.labels.clone(),
        ),
    };
    let mut v = json!({
        "Name": net.name(),
        "Id": net.id(),
        "Created": created,
        "Scope": scope,
        "Driver": driver,
        "EnableIPv4": true,
        "EnableIPv6": ipv6,
        "IPAM": ipam,
        "Internal": internal,
        "Attachable": attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Options": options,
        "Labels": labels,
        "Containers": {},
    });
    if with_containers {
        let mut m = serde_json::Map::new();
        for c in attached(net.name(), containers)
            .into_iter()
            .filter(|c| c.running())
        {
            let ip = c
                .task
                .as_ref()
                .and_then(|t| t.ip_address.clone())
                .map(|ip| format!("{ip}/32"))
                .unwrap_or_default();
            m.insert(
                c.id.clone(),
                json!({"Name": c.name, "EndpointID": "", "MacAddress": "", "IPv4Address": ip, "IPv6Address": ""}),
            );
        }
        v["Containers"] = Value::Object(m);
    }
    v
}

/// `filters=` of `GET /networks`: `name` (substring), `id` (prefix), `driver`, `label`
/// (`k` or `k=v`, all must hold), `type` (`builtin` or `custom`).
pub fn matches(filters: &BTreeMap<String, Vec<String>>, net: &Net<'_>, view: &Value) -> bool {
    filters.iter().all(|(k, vals)| {
        vals.is_empty()
            || match k.as_str() {
                "name" => vals.iter().any(|n| net.name().contains(n.as_str())),
                "id" => vals.iter().any(|p| net.id().starts_with(p.as_str())),
                "driver" => vals.iter().any(|d| view["Driver"] == d.as_str()),
                "label" => vals.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => view["Labels"][k] == v,
                    None => view["Labels"].get(l.as_str()).is_some(),
                }),
                "type" => vals.iter().any(|t| match t.as_str() {
                    "builtin" => matches!(net, Net::Predefined(_)),
                    "custom" => matches!(net, Net::User(_)),
                    _ => false,
                }),
                "scope" => vals.iter().any(|s| s == "local"),
                _ => false,
            }
    })
}

/// Parses `filters=` (the same shapes as containers' filters) for networks.
pub fn parse_filters(text: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let parsed = crate::views::Filters::parse_any(text)?;
    for k in parsed.keys() {
        if !matches!(
            k.as_str(),
            "name" | "id" | "driver" | "label" | "type" | "scope" | "dangling"
        ) {
            return Err(format!("invalid filter '{k}'"));
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(v: Value) -> Result<NetworkRecord, BadNetwork> {
        let body: CreateNetwork = serde_json::from_value(v).unwrap();
        record(&body, "ab".repeat(32), "2026-01-01T00:00:00Z".into())
    }

    #[test]
    fn compose_network_bodies_are_kept_as_sent_and_bad_ones_refused() {
        let r = create(
            json!({"Name": "p_default", "Options": {}, "IPAM": null, "Internal": false,
            "Labels": {"com.docker.compose.network": "default", "com.docker.compose.project": "p"},
            "Attachable": true, "CheckDuplicate": true}),
        )
        .unwrap();
        assert_eq!((r.driver.as_str(), r.attachable), ("bridge", true));
        assert_eq!(r.labels["com.docker.compose.project"], "p");
        let v = view(&Net::User(&r), &[], true);
        assert_eq!(v["Driver"], "bridge");
        assert_eq!(v["Options"], json!({}));
        assert_eq!(v["Internal"], false);
        assert_eq!(v["EnableIPv6"], false);
        for (body, needle) in [
            (json!({}), "Name"),
            (json!({"Name": "bridge"}), "predefined"),
            (json!({"Name": "n", "Driver": "overlay"}), "Driver"),
            (json!({"Name": "a/b"}), "invalid network name"),
        ] {
            let e = create(body.clone()).expect_err(&body.to_string());
            assert!(e.0.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn networks_resolve_by_id_name_and_prefix_and_filter() {
        let r = create(json!({"Name": "p_default", "Labels": {"a": "1"}})).unwrap();
        let users = vec![r.clone()];
        assert_eq!(resolve(&users, "p_default").unwrap(), Net::User(&users[0]));
        assert_eq!(resolve(&users, "abab").unwrap(), Net::User(&users[0]));
        assert_eq!(
            resolve(&users, "bridge").unwrap(),
            Net::Predefined("bridge")
        );
        assert!(resolve(&users, "nope").unwrap_err().contains("not found"));
        let net = Net::User(&users[0]);
        let v = view(&net, &[], false);
        let f = |t: &str| matches(&parse_filters(t).unwrap(), &net, &v);
        assert!(
            f(r#"{"label":["a=1"]}"#) && f(r#"{"name":["p_"]}"#) && f(r#"{"type":["custom"]}"#)
        );
        assert!(!f(r#"{"label":["a=2"]}"#) && !f(r#"{"type":["builtin"]}"#));
        assert!(parse_filters(r#"{"bogus":["x"]}"#).is_err());
        assert_eq!(predefined_id("bridge"), predefined_id("bridge"));
        assert_ne!(predefined_id("bridge"), predefined_id("host"));
    }
}
