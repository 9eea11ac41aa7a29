//! The operator API on the l4lb port: `GET /v1/vips` in dcos-net's shape,
//! `[{"vip": "<name>:<port>" | "<ip>:<port>", "protocol": "tcp", "backend": [{"ip", "port"}]}]`,
//! read from the current table; `GET /metrics` (Prometheus text, see [`crate::metrics`]);
//! `GET /health` (200 while the daemon runs, with whether the master's stream is open).
//! Unknown paths get a 404 JSON error.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
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
