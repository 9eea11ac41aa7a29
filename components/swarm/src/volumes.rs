//! Named volumes, pure: the record swarm keeps for `docker volume create` (and for the
//! named volumes a container create or compose's top-level `volumes:` bring), the create
//! body, the views `volume ls` / `volume inspect` read, filters, and where a volume lives.
//!
//! Key decision (documented in `docs/swarm.md`): a named volume is the engine volume
//! `swarm.<name>` (local driver) of **one agent**. A new volume is not placed anywhere; the
//! first container that mounts it places it on the agent its task lands on, and from then on
//! every container that mounts it runs on that agent (its data is there). `Status` shows the
//! agent, `Mountpoint` the engine's usual path there. Removing the volume removes the engine
//! volume on that agent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::Container;

/// Version of the stored volume record format.
pub const VOLUME_RECORD_VERSION: u32 = 1;

/// `POST /volumes/create`'s body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateVolume {
    pub name: String,
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
    /// Cluster volumes (swarm mode): not served.
    pub cluster_volume_spec: Option<Value>,
}

/// Where a volume's data is: the agent that ran the first container mounting it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub agent_id: String,
    /// The agent's hostname as its offer named it.
    pub agent_host: String,
}

/// A named volume as kept in coord at `<prefix>/volumes/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub version: u32,
    pub name: String,
    pub created: String,
    pub labels: BTreeMap<String, String>,
    /// `None` until a container that mounts it is launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// A volume body or reference swarm refuses; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadVolume(pub String);

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The record of a create body. An empty name gets a random 64-hex one (as Docker).
pub fn record(
    body: &CreateVolume,
    random_name: String,
    created: String,
) -> Result<VolumeRecord, BadVolume> {
    let name = match body.name.trim() {
        "" => random_name,
        n => n.to_owned(),
    };
    if !valid_name(&name) {
        return Err(BadVolume(format!(
            "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        )));
    }
    if let Some(d) = body
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(BadVolume(format!(
            "Driver {d:?} is not supported by capstan (named volumes use the agents' local driver)"
        )));
    }
    if let Some(opts) = body.driver_opts.as_ref().filter(|o| !o.is_empty()) {
        let keys: Vec<&str> = opts.keys().map(String::as_str).collect();
        return Err(BadVolume(format!(
            "DriverOpts {keys:?} are not supported by capstan (a named volume is a plain local volume of one agent)"
        )));
    }
    if body
        .cluster_volume_spec
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(BadVolume(
            "ClusterVolumeSpec: cluster volumes are not supported by capstan".into(),
        ));
    }
    Ok(VolumeRecord {
        version: VOLUME_RECORD_VERSION,
        name,
        created,
        labels: body.labels.clone().unwrap_or_default(),
        placement: None,
    })
}

/// The record a container create brings for a named volume it mounts that is not there yet
/// (Docker creates it then, without labels).
pub fn implicit(name: &str, created: String) -> VolumeRecord {
    VolumeRecord {
        version: VOLUME_RECORD_VERSION,
        name: name.to_owned(),
        created,
        labels: BTreeMap::new(),
        placement: None,
    }
}

/// The containers (any state) that mount volume `name`.
pub fn users<'a>(name: &str, containers: &'a [Container]) -> Vec<&'a Container> {
    containers
        .iter()
        .filter(|c| c.spec.volumes.iter().any(|v| v.name == name))
        .collect()
}

/// The named volumes a container mounts.
pub fn mounted(c: &Container) -> Vec<&str> {
    let mut names: Vec<&str> = c
        .spec
        .volumes
        .iter()
        .filter(|v| !v.name.is_empty())
        .map(|v| v.name.as_str())
        .collect();
    names.dedup();
    names
}

/// The engine's mountpoint of a volume on its agent (the local driver's usual path).
pub fn mountpoint(r: &VolumeRecord) -> String {
    match &r.placement {
        Some(_) => format!(
            "/var/lib/docker/volumes/{}/_data",
            crate::translate::engine_volume(&r.name)
        ),
        None => String::new(),
    }
}

/// `volume inspect` and one item of `volume ls`.
pub fn view(r: &VolumeRecord) -> Value {
    let status = match &r.placement {
        Some(p) => json!({
            "Agent": p.agent_host, "AgentID": p.agent_id,
            "EngineVolume": crate::translate::engine_volume(&r.name),
        }),
        None => {
            json!({"Agent": "", "Note": "not placed yet: the first container that mounts it places it on its agent"})
        }
    };
    json!({
        "Name": r.name, "Driver": "local", "Mountpoint": mountpoint(r),
        "CreatedAt": r.created, "Status": status, "Labels": r.labels,
        "Scope": "local", "Options": {}, "UsageData": null,
    })
}

/// Whether a volume passes `volume ls` filters (`name` substring, `label` key or key=value,
/// `driver`, `dangling` true/false).
pub fn matches(
    filters: &BTreeMap<String, Vec<String>>,
    r: &VolumeRecord,
    containers: &[Container],
) -> Result<bool, String> {
    for (k, vals) in filters {
        let ok = match k.as_str() {
            "name" => vals.iter().any(|v| r.name.contains(v.as_str())),
            "driver" => vals.iter().any(|v| v == "local"),
            "label" => vals.iter().all(|v| match v.split_once('=') {
                Some((k, want)) => r.labels.get(k).is_some_and(|have| have == want),
                None => r.labels.contains_key(v),
            }),
            "dangling" => {
                let dangling = users(&r.name, containers).is_empty();
                vals.iter().any(|v| match v.as_str() {
                    "true" | "1" => dangling,
                    "false" | "0" => !dangling,
                    _ => false,
                })
            }
            other => return Err(format!("invalid filter '{other}'")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether container `c` may run on the agent of an offer, as far as the volumes it mounts
/// are placed; the error names the volume and its agent. Pure.
pub fn placement_fits(
    c: &Container,
    volumes: &BTreeMap<String, VolumeRecord>,
    agent_id: &str,
) -> Result<(), String> {
    for name in mounted(c) {
        if let Some(p) = volumes.get(name).and_then(|r| r.placement.as_ref())
            && p.agent_id != agent_id
        {
            return Err(format!(
                "volume {name} lives on agent {} ({})",
                p.agent_host, p.agent_id
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(v: Value) -> Result<VolumeRecord, BadVolume> {
        let b: CreateVolume = serde_json::from_value(v).unwrap();
        record(&b, "f".repeat(64), "2026-01-01T00:00:00Z".into())
    }

    #[test]
    fn create_bodies_are_kept_or_refused_with_the_reason() {
        let r = create(
            json!({"Name": "p_data", "Driver": "local", "DriverOpts": {},
            "Labels": {"com.docker.compose.project": "p", "com.docker.compose.volume": "data"}}),
        )
        .unwrap();
        assert_eq!(r.name, "p_data");
        assert_eq!(r.labels["com.docker.compose.volume"], "data");
        assert_eq!(create(json!({})).unwrap().name, "f".repeat(64));
        let cases = [
            (json!({"Name": "a/b"}), "invalid characters"),
            (json!({"Name": "x"}), "invalid characters"),
            (json!({"Name": "data", "Driver": "nfs"}), "nfs"),
            (
                json!({"Name": "data", "DriverOpts": {"type": "tmpfs"}}),
                "type",
            ),
            (
                json!({"Name": "data", "ClusterVolumeSpec": {}}),
                "cluster volumes",
            ),
        ];
        for (body, want) in cases {
            let e = create(body.clone()).unwrap_err();
            assert!(e.0.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn views_show_where_the_data_is() {
        let mut r = create(json!({"Name": "data"})).unwrap();
        let v = view(&r);
        assert_eq!(v["Mountpoint"], "");
        assert_eq!(v["Scope"], "local");
        assert_eq!(v["Driver"], "local");
        r.placement = Some(Placement {
            agent_id: "a1".into(),
            agent_host: "agent-1".into(),
        });
        let v = view(&r);
        assert_eq!(v["Mountpoint"], "/var/lib/docker/volumes/swarm.data/_data");
        assert_eq!(v["Status"]["Agent"], "agent-1");
        assert_eq!(v["Status"]["EngineVolume"], "swarm.data");
    }

    #[test]
    fn filters_and_placement() {
        let mut r = create(json!({"Name": "p_data", "Labels": {"k": "v"}})).unwrap();
        let f = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<String>> {
            let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in pairs {
                m.entry((*k).into()).or_default().push((*v).into());
            }
            m
        };
        let cases: [(&[(&str, &str)], bool); 7] = [
            (&[], true),
            (&[("name", "data")], true),
            (&[("name", "other")], false),
            (&[("label", "k")], true),
            (&[("label", "k=v")], true),
            (&[("label", "k=w")], false),
            (&[("dangling", "true")], true),
        ];
        for (pairs, want) in cases {
            assert_eq!(matches(&f(pairs), &r, &[]), Ok(want), "{pairs:?}");
        }
        assert!(matches(&f(&[("bogus", "1")]), &r, &[]).is_err());
        let vols: BTreeMap<String, VolumeRecord> = [(r.name.clone(), r.clone())].into();
        let mut c = crate::views::tests::container("c1", &[], crate::model::Status::Created);
        c.spec.volumes.push(crate::model::VolumeSpec {
            name: "p_data".into(),
            container_path: "/data".into(),
            ..Default::default()
        });
        assert_eq!(placement_fits(&c, &vols, "anywhere"), Ok(()));
        r.placement = Some(Placement {
            agent_id: "a1".into(),
            agent_host: "agent-1".into(),
        });
        let vols: BTreeMap<String, VolumeRecord> = [(r.name.clone(), r.clone())].into();
        assert_eq!(placement_fits(&c, &vols, "a1"), Ok(()));
        let e = placement_fits(&c, &vols, "a2").unwrap_err();
        assert!(e.contains("agent-1"), "{e}");
        assert_eq!(users("p_data", std::slice::from_ref(&c)).len(), 1);
        assert_eq!(matches(&f(&[("dangling", "true")]), &r, &[c]), Ok(false));
    }
}
