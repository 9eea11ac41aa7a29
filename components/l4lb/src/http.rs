//! The operator API on the l4lb port: `GET /v1/vips` in dcos-net's shape,
//! `[{"vip": "<name>:<port>" | "<ip>:<port>", "protocol": "tcp", "backend": [{"ip", "port"}]}]`,
//! read from the current table. Unknown paths get a 404 JSON error.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use capstan_types::vip::VipTable;
use serde_json::{Value, json};
use tokio::sync::watch;

/// The API's routes.
pub fn router(table: watch::Receiver<Arc<VipTable>>) -> Router {
    Router::new()
        .route("/v1/vips", get(vips))
        .fallback(not_found)
        .with_state(table)
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

async fn vips(State(table): State<watch::Receiver<Arc<VipTable>>>) -> Json<Value> {
    let t = table.borrow().clone();
    Json(vips_json(&t))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": 404, "message": "no such resource"})),
    )
        .into_response()
}
