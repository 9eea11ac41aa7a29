//! The volume endpoints: `volumes` list, inspect, create, remove and prune. A named volume is
//! a record in coord ([`crate::volumes`]) and, once placed, the engine volume `swarm.<name>`
//! on its agent; removing a placed volume asks that agent to remove the engine volume
//! (`DELETE /capstan/v1/docker-volumes/swarm.<name>`, which refuses any other name).

use std::collections::HashMap;

use axum::response::IntoResponse;
use http::StatusCode;
use serde_json::{Value, json};
use tracing::info;

use crate::events::Event;
use crate::http::{Answer, ApiError, encode, internal, state_summary};
use crate::state::Swarm;
use crate::volumes::{self, CreateVolume, VolumeRecord};

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn event(name: &str, action: &str) -> Event {
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert("driver".to_owned(), "local".to_owned());
    Event {
        kind: "volume",
        action: action.to_owned(),
        actor_id: name.to_owned(),
        attributes,
        time_nano: {
            let (s, n) = crate::time::now();
            s.saturating_mul(1_000_000_000) + i64::from(n)
        },
    }
}

fn find(sw: &Swarm, name: &str) -> Result<VolumeRecord, ApiError> {
    sw.read(|s| s.volumes.get(name).cloned())
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("get {name}: no such volume")))
}

/// `GET /volumes`.
pub fn list(sw: &Swarm, q: &HashMap<String, String>) -> Answer {
    let filters =
        crate::views::Filters::parse_any(q.get("filters").map(String::as_str).unwrap_or_default())
            .map_err(bad)?;
    let containers = sw.list();
    let all: Vec<VolumeRecord> = sw.read(|s| s.volumes.values().cloned().collect());
    let mut items = Vec::new();
    for r in &all {
        if volumes::matches(&filters, r, &containers).map_err(bad)? {
            items.push(volumes::view(r));
        }
    }
    Ok(axum::Json(json!({"Volumes": items, "Warnings": []})).into_response())
}

/// `GET /volumes/{name}`.
pub fn inspect(sw: &Swarm, name: &str) -> Answer {
    Ok(axum::Json(volumes::view(&find(sw, name)?)).into_response())
}

/// `POST /volumes/create`: 201 with the volume; an existing name answers that volume.
pub async fn create(sw: &Swarm, body: &[u8]) -> Answer {
    let b: CreateVolume = if body.is_empty() {
        CreateVolume::default()
    } else {
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid volume create body: {e}")))?
    };
    let rec = volumes::record(&b, crate::model::new_id(), crate::time::now_rfc3339())
        .map_err(|e| bad(e.0))?;
    if let Some(existing) = sw.read(|s| s.volumes.get(&rec.name).cloned()) {
        return Ok((StatusCode::CREATED, axum::Json(volumes::view(&existing))).into_response());
    }
    ensure(sw, rec.clone()).await?;
    info!(volume = %rec.name, "Volume created");
    Ok((StatusCode::CREATED, axum::Json(volumes::view(&rec))).into_response())
}

/// Stores a new volume record unless one of that name exists (a create racing another).
pub async fn ensure(sw: &Swarm, rec: VolumeRecord) -> Result<(), ApiError> {
    let added = sw.with(|s| {
        if s.volumes.contains_key(&rec.name) {
            return false;
        }
        s.volumes.insert(rec.name.clone(), rec.clone());
        true
    });
    if !added {
        return Ok(());
    }
    if let Err(e) = sw.store.put_volume(&rec).await {
        sw.with(|s| s.volumes.remove(&rec.name));
        return Err(internal(format!(
            "cannot store the volume: {}",
            capstan_types::Chain(&e)
        )));
    }
    sw.emit(event(&rec.name, "create"));
    Ok(())
}

/// The named volumes a new container mounts that do not exist yet become volumes (Docker's
/// implicit create).
pub async fn ensure_mounted(sw: &Swarm, c: &crate::model::Container) -> Result<(), ApiError> {
    for name in volumes::mounted(c) {
        if sw.read(|s| s.volumes.contains_key(name)) {
            continue;
        }
        ensure(sw, volumes::implicit(name, crate::time::now_rfc3339())).await?;
    }
    Ok(())
}

/// Removes the engine volume of a placed volume on its agent.
async fn remove_on_agent(sw: &Swarm, r: &VolumeRecord) -> Result<(), String> {
    let Some(p) = &r.placement else {
        return Ok(());
    };
    let summary = state_summary(sw)
        .await
        .ok_or("the Mesos master's state is not available")?;
    let agent = summary["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["id"] == p.agent_id.as_str())
        .and_then(|s| s["pid"].as_str())
        .and_then(crate::logs::agent_address)
        .ok_or_else(|| format!("agent {} ({}) is not registered", p.agent_host, p.agent_id))?
        .to_owned();
    let url = format!(
        "{}://{agent}/capstan/v1/docker-volumes/{}",
        sw.cfg.agent_scheme(),
        encode(&crate::translate::engine_volume(&r.name))
    );
    let resp = sw
        .http
        .delete(&url)
        .send()
        .await
        .map_err(|e| format!("cannot reach the agent at {agent}: {e}"))?;
    if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
        return Ok(());
    }
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    Err(v["message"]
        .as_str()
        .unwrap_or("the agent refused to remove the engine volume")
        .to_owned())
}

/// `DELETE /volumes/{name}`: refused while a container (any state) mounts it; `force=1`
/// forgets the volume even when its agent cannot remove the engine volume.
pub async fn remove(sw: &Swarm, name: &str, q: &HashMap<String, String>) -> Answer {
    let force = q
        .get("force")
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True"));
    let r = match find(sw, name) {
        Ok(r) => r,
        Err(_) if force => return Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => return Err(e),
    };
    let containers = sw.list();
    let using: Vec<String> = volumes::users(name, &containers)
        .iter()
        .map(|c| c.id.clone())
        .collect();
    if !using.is_empty() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("remove {name}: volume is in use - [{}]", using.join(", ")),
        ));
    }
    if let Err(e) = remove_on_agent(sw, &r).await
        && !force
    {
        return Err(ApiError(
            StatusCode::BAD_GATEWAY,
            format!("remove {name}: {e} (force=1 forgets the volume anyway)"),
        ));
    }
    sw.store
        .delete_volume(name)
        .await
        .map_err(|e| internal(capstan_types::Chain(&e)))?;
    sw.with(|s| s.volumes.remove(name));
    info!(volume = %name, "Volume removed");
    sw.emit(event(name, "destroy"));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /volumes/prune`: every volume no container mounts goes with `all=true` (swarm has no
/// anonymous named volumes, so without it nothing is pruned, as Docker ≥ 23 does).
pub async fn prune(sw: &Swarm, q: &HashMap<String, String>) -> Answer {
    let filters =
        crate::views::Filters::parse_any(q.get("filters").map(String::as_str).unwrap_or_default())
            .map_err(bad)?;
    let all = filters
        .get("all")
        .is_some_and(|v| v.iter().any(|x| x == "true" || x == "1"));
    let mut deleted = Vec::new();
    if all {
        let names: Vec<String> = sw.read(|s| s.volumes.keys().cloned().collect());
        for name in names {
            if remove(sw, &name, &HashMap::new()).await.is_ok() {
                deleted.push(name);
            }
        }
    }
    Ok(axum::Json(json!({"VolumesDeleted": deleted, "SpaceReclaimed": 0})).into_response())
}
