//! The operator API on the l4lb port: `GET /v1/vips` in dcos-net's shape,
//! `[{"vip": "<name>:<port>" | "<ip>:<port>", "protocol": "tcp", "backend": [{"ip", "port"}]}]`,
//! read from the current table; `GET /metrics` (Prometheus text, see [`crate::metrics`]);
//! `GET /health` (200 while the daemon runs, with whether the master's stream is open).
//! Unknown paths get a 404 JSON error.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use capstan_runtime::auth::{Access, Role, is_read};
use capstan_types::vip::VipTable;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::follower::FollowStatus;
use crate::metrics::Metrics;
use crate::proxy::ProxyStats;

/// What the API reads.
#[derive(Clone)]
pub struct ApiState {
    pub table: watch::Receiver<Arc<VipTable>>,
    pub status: watch::Receiver<FollowStatus>,
    pub metrics: Arc<Metrics>,
    /// The userspace proxy's counters (userspace mode only).
    pub proxy: Option<Arc<ProxyStats>>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/vips", get(vips))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(state)
}

/// What a call needs in strict mode (`capstan_runtime::auth`). `/health` is open, as every
/// daemon's is (it says only whether the stream is open); the table (`/v1/vips`), the
/// metrics and every other read are a viewer's, and any node's certificate may read them.
/// The API changes nothing, so any other method is an administrator's (or a master's
/// certificate). Pure.
pub fn access(method: &Method, path: &str) -> Access {
    if !is_read(method.as_str()) {
        return Access::Role(Role::Admin);
    }
    match path.trim_end_matches('/') {
        "/health" => Access::Public,
        _ => Access::Role(Role::Viewer),
    }
}

/// The table in dcos-net's `/v1/vips` form.
pub fn vips_json(table: &VipTable) -> Value {
    let list: Vec<Value> = table
        .vips
        .iter()
        .map(|(key, vip)| {
            let backend: Vec<Value> = vip
                .backends
                .iter()
                .map(|b| json!({"ip": b.ip.to_string(), "port": b.port}))
                .collect();
            json!({"vip": key.vip.to_string(), "protocol": key.protocol.as_str(), "backend": backend})
        })
        .collect();
    Value::Array(list)
}

async fn vips(State(s): State<ApiState>) -> Json<Value> {
    let t = s.table.borrow().clone();
    Json(vips_json(&t))
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let table = s.table.borrow().clone();
    let status = s.status.borrow().clone();
    let text = s.metrics.render(&table, &status, s.proxy.as_deref());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn health(State(s): State<ApiState>) -> Json<Value> {
    let subscribed = s.status.borrow().subscribed;
    Json(json!({"healthy": true, "subscribed": subscribed}))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": 404, "message": "no such resource"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_call_what() {
        let viewer = Access::Role(Role::Viewer);
        let admin = Access::Role(Role::Admin);
        let table = [
            (Method::GET, "/health", Access::Public),
            (Method::HEAD, "/health/", Access::Public),
            (Method::GET, "/v1/vips", viewer),
            (Method::GET, "/metrics", viewer),
            (Method::GET, "/nope", viewer),
            (Method::GET, "/", viewer),
            (Method::POST, "/health", admin),
            (Method::PUT, "/v1/vips", admin),
            (Method::DELETE, "/v1/vips", admin),
            (Method::PATCH, "/metrics", admin),
        ];
        for (method, path, want) in table {
            assert_eq!(access(&method, path), want, "{method} {path}");
        }
    }
}
