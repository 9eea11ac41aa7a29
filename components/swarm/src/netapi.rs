//! The network and event endpoints: `networks` list, inspect, create, remove, connect,
//! disconnect and prune (user networks are records in coord, see [`crate::networks`]), and
//! `GET /events`, a stream of newline-delimited JSON that starts with the kept history from
//! `since=` and ends at `until=` (or never).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tracing::info;

use crate::events::{Event, EventFilters, parse_time};
use crate::http::{Answer, ApiError, internal};
use crate::model::{Attachment, EndpointConfig};
use crate::networks::{self, CreateNetwork, Net};
use crate::state::Swarm;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg)
}

/// `GET /networks`.
pub fn list(sw: &Swarm, q: &HashMap<String, String>) -> Answer {
    let filters = networks::parse_filters(q.get("filters").map(String::as_str).unwrap_or_default())
        .map_err(bad)?;
    let users = sw.networks();
    let containers = sw.list();
    let items: Vec<Value> = networks::PREDEFINED
        .iter()
        .map(|n| Net::Predefined(n))
        .chain(users.iter().map(Net::User))
        .filter_map(|n| {
            let v = networks::view(&n, &containers, false);
            networks::matches(&filters, &n, &v).then_some(v)
        })
        .collect();
    Ok(axum::Json(items).into_response())
}

/// `GET /networks/{id}`.
pub fn inspect(sw: &Swarm, reference: &str) -> Answer {
    let users = sw.networks();
    let net = networks::resolve(&users, reference).map_err(not_found)?;
    Ok(axum::Json(networks::view(&net, &sw.list(), true)).into_response())
}

/// `POST /networks/create`: 201 `{"Id", "Warning"}`; a taken name is a 409.
pub async fn create(sw: &Swarm, body: &[u8]) -> Answer {
    let b: CreateNetwork = serde_json::from_slice(body)
        .map_err(|e| bad(format!("invalid network create body: {e}")))?;
    let rec =
        networks::record(&b, crate::model::new_id(), crate::time::now_rfc3339()).map_err(|e| {
            if e.0.contains("predefined") {
                ApiError(StatusCode::FORBIDDEN, e.0)
            } else {
                bad(e.0)
            }
        })?;
    let taken = sw.with(|s| {
        if s.networks.values().any(|n| n.name == rec.name) {
            return true;
        }
        s.networks.insert(rec.id.clone(), rec.clone());
        false
    });
    if taken {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("network with name {} already exists", rec.name),
        ));
    }
    if let Err(e) = sw.store.put_network(&rec).await {
        sw.with(|s| s.networks.remove(&rec.id));
        return Err(internal(format!(
            "cannot store the network: {}",
            capstan_types::Chain(&e)
        )));
    }
    info!(network = %rec.id, name = %rec.name, "Network created");
    sw.emit(Event::network(&rec.id, &rec.name, "create", None));
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"Id": rec.id, "Warning": ""})),
    )
        .into_response())
}

/// The user network a reference names (predefined ones are refused with `what`).
fn user_network(
    sw: &Swarm,
    reference: &str,
    what: &str,
) -> Result<networks::NetworkRecord, ApiError> {
    let users = sw.networks();
    match networks::resolve(&users, reference).map_err(not_found)? {
        Net::User(r) => Ok(r.clone()),
        Net::Predefined(n) => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{n} is a pre-defined network and cannot be {what} by capstan"),
        )),
    }
}

/// `DELETE /networks/{id}`: refused while an active container is attached.
pub async fn remove(sw: &Swarm, reference: &str) -> Answer {
    let rec = user_network(sw, reference, "removed")?;
    let containers = sw.list();
    if networks::attached(&rec.name, &containers)
        .iter()
        .any(|c| c.active())
    {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "error while removing network: network {} id {} has active endpoints",
                rec.name, rec.id
            ),
        ));
    }
    sw.store
        .delete_network(&rec.id)
        .await
        .map_err(|e| internal(capstan_types::Chain(&e)))?;
    sw.with(|s| s.networks.remove(&rec.id));
    info!(network = %rec.id, name = %rec.name, "Network removed");
    sw.emit(Event::network(&rec.id, &rec.name, "destroy", None));
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
    endpoint_config: Option<EndpointConfig>,
    force: bool,
}

/// `POST /networks/{id}/connect`: records the attachment and its aliases.
pub async fn connect(sw: &Swarm, reference: &str, body: &[u8]) -> Answer {
    let rec = user_network(sw, reference, "joined")?;
    let b: ConnectBody =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid connect body: {e}")))?;
    let c = sw.find(&b.container)?;
    let aliases = b
        .endpoint_config
        .and_then(|e| e.aliases)
        .unwrap_or_default();
    sw.modify(&c.id, |c| {
        c.spec.networks.insert(
            rec.name.clone(),
            Attachment {
                network_id: rec.id.clone(),
                aliases,
            },
        )
    });
    sw.persist(&c.id).await.map_err(internal)?;
    sw.emit(Event::network(&rec.id, &rec.name, "connect", Some(&c.id)));
    Ok(StatusCode::OK.into_response())
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(sw: &Swarm, reference: &str, body: &[u8]) -> Answer {
    let rec = user_network(sw, reference, "left")?;
    let b: ConnectBody =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid disconnect body: {e}")))?;
    let c = sw.find(&b.container)?;
    let was = sw
        .modify(&c.id, |c| c.spec.networks.remove(&rec.name))
        .flatten();
    if was.is_none() && !b.force {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "container {} is not connected to network {}",
                c.short_id(),
                rec.name
            ),
        ));
    }
    sw.persist(&c.id).await.map_err(internal)?;
    sw.emit(Event::network(
        &rec.id,
        &rec.name,
        "disconnect",
        Some(&c.id),
    ));
    Ok(StatusCode::OK.into_response())
}

/// `POST /networks/prune`: removes the user networks no container uses.
pub async fn prune(sw: &Swarm) -> Answer {
    let containers = sw.list();
    let mut deleted = Vec::new();
    for rec in sw.networks() {
        if !networks::attached(&rec.name, &containers).is_empty() {
            continue;
        }
        if sw.store.delete_network(&rec.id).await.is_ok() {
            sw.with(|s| s.networks.remove(&rec.id));
            sw.emit(Event::network(&rec.id, &rec.name, "destroy", None));
            deleted.push(rec.name);
        }
    }
    Ok(axum::Json(json!({ "NetworksDeleted": deleted })).into_response())
}

/// `GET /events`: the history from `since`, then live events, until `until`.
pub fn events(sw: &Arc<Swarm>, q: &HashMap<String, String>) -> Answer {
    let filters = EventFilters::parse(q.get("filters").map(String::as_str).unwrap_or_default())
        .map_err(bad)?;
    let time = |k: &str| -> Result<Option<i64>, ApiError> {
        q.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| parse_time(v).map_err(bad))
            .transpose()
    };
    let (since, until) = (time("since")?, time("until")?);
    // Subscribed before the history is read, so nothing falls in between.
    let rx = sw.events.subscribe();
    let past: Vec<Event> = match since {
        None => Vec::new(),
        Some(from) => sw.read(|s| {
            s.events
                .iter()
                .filter(|e| e.time_nano >= from && until.is_none_or(|u| e.time_nano <= u))
                .cloned()
                .collect()
        }),
    };
    let last_past = past.last().map(|e| e.time_nano).unwrap_or(i64::MIN);
    let line = |e: &Event| Bytes::from(e.to_json().to_string() + "\n");
    let head: Vec<Bytes> = past
        .iter()
        .filter(|e| filters.matches(e))
        .map(line)
        .collect();
    let now = {
        let (s, n) = crate::time::now();
        s.saturating_mul(1_000_000_000) + i64::from(n)
    };
    let live_until = until.map(|u| {
        let left = u.saturating_sub(now).max(0) as u64;
        tokio::time::Instant::now() + std::time::Duration::from_nanos(left)
    });
    let ended = until.is_some_and(|u| u <= now);
    let stream = futures::stream::unfold(
        (rx, filters, ended),
        move |(mut rx, filters, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let next = match live_until {
                    Some(at) => tokio::select! {
                        r = rx.recv() => r,
                        _ = tokio::time::sleep_until(at) => return None,
                    },
                    None => rx.recv().await,
                };
                match next {
                    Ok(e) if e.time_nano > last_past && filters.matches(&e) => {
                        return Some((line(&e), (rx, filters, false)));
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    use futures::StreamExt;
    let body = futures::stream::iter(head)
        .chain(stream)
        .map(Ok::<Bytes, Infallible>);
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
