//! The Mesos-DNS HTTP API (api-compat §7.3), served from the same snapshot as DNS.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use capstan_runtime::auth::{Access, Role, is_read};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::Config;
use crate::snapshot::{Producer, Snapshot, fqdn};

#[derive(Clone)]
struct AppState {
    config: Arc<Config>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

impl AppState {
    fn snap(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }
}

/// The API's routes.
pub fn router(config: Arc<Config>, snapshots: watch::Receiver<Arc<Snapshot>>) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/config", get(config_view))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/hosts/{host}/ports", get(host_ports))
        .route("/v1/services/{service}", get(services))
        .route("/v1/enumerate", get(enumerate))
        .route("/v1/axfr", get(axfr))
        .fallback(not_found)
        .with_state(AppState { config, snapshots })
}

/// What a call needs in strict mode (`capstan_runtime::auth`). The version is open; looking
/// up one name (`/v1/hosts`, `/v1/services`) is a viewer's, as asking the DNS port is anyone's
/// on the cluster network, and any node's certificate may. Dumping every name
/// (`/v1/axfr`, `/v1/enumerate`) and the daemon's settings (`/v1/config`: the masters and
/// the resolvers) need an operator or a master's certificate. The API changes nothing, so
/// any other method is an administrator's. Pure.
pub fn access(method: &Method, path: &str) -> Access {
    if !is_read(method.as_str()) {
        return Access::Role(Role::Admin);
    }
    let path = match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    match path {
        "/v1/version" => Access::Public,
        "/v1/axfr" | "/v1/enumerate" | "/v1/config" => Access::Role(Role::Operator),
        _ => Access::Role(Role::Viewer),
    }
}

async fn version() -> Json<Value> {
    Json(json!({
        "Service": "Mesos-DNS",
        "Version": env!("CARGO_PKG_VERSION"),
        "URL": "https://github.com/mesosphere/mesos-dns",
    }))
}

async fn config_view(State(st): State<AppState>) -> Json<Value> {
    Json(st.config.mesos_dns_view())
}

async fn hosts(State(st): State<AppState>, Path(host): Path<String>) -> Json<Value> {
    let name = fqdn(&host);
    let snap = st.snap();
    let source = source_name(&snap, &name);
    let found = snap.lookup(&source);
    let mut out: Vec<Value> = found
        .ips()
        .map(|ip| json!({"host": name, "ip": ip.to_string()}))
        .collect();
    if out.is_empty() {
        out.push(json!({"host": "", "ip": ""}));
    }
    Json(Value::Array(out))
}

/// The name whose records answer for `name` (different only in a mirror zone).
fn source_name(snap: &Snapshot, name: &str) -> String {
    match snap.zone_of(name) {
        Some(zone) => zone.source_name(name).into_owned(),
        None => name.to_owned(),
    }
}

async fn host_ports() -> Response {
    (StatusCode::NOT_IMPLEMENTED, "To be implemented...").into_response()
}

async fn services(State(st): State<AppState>, Path(service): Path<String>) -> Json<Value> {
    let name = fqdn(&service);
    let snap = st.snap();
    let mut out = Vec::new();
    let source = source_name(&snap, &name);
    for (srv, _) in snap.lookup(&source).srv() {
        let target = snap.lookup(&srv.target);
        let ips: Vec<String> = target.ips().map(|ip| ip.to_string()).collect();
        if ips.is_empty() {
            out.push(json!({"service": service, "host": &*srv.target, "ip": "", "port": srv.port.to_string()}));
        }
        for ip in ips {
            out.push(json!({"service": service, "host": &*srv.target, "ip": ip, "port": srv.port.to_string()}));
        }
    }
    if out.is_empty() {
        out.push(json!({"service": "", "host": "", "ip": "", "port": ""}));
    }
    Json(Value::Array(out))
}

async fn enumerate(State(st): State<AppState>) -> Response {
    if !st.config.enumeration_on {
        return not_found().await;
    }
    let snap = st.snap();
    let frameworks = snap
        .records(Producer::Mesos)
        .map(|rs| rs.enumeration())
        .unwrap_or_default();
    Json(json!({ "frameworks": frameworks })).into_response()
}

async fn axfr(State(st): State<AppState>) -> Response {
    if !st.config.enumeration_on {
        return not_found().await;
    }
    let snap = st.snap();
    let domain = fqdn(&st.config.domain);
    let suffix = format!(".{domain}");
    let mut a: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut aaaa: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut srv: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(rs) = snap.records(Producer::Mesos) {
        for (name, recs) in rs.iter() {
            if !(name == domain || name.ends_with(&suffix)) {
                continue;
            }
            if !recs.a.is_empty() {
                a.insert(
                    name.to_owned(),
                    recs.a.iter().map(ToString::to_string).collect(),
                );
            }
            if !recs.aaaa.is_empty() {
                aaaa.insert(
                    name.to_owned(),
                    recs.aaaa.iter().map(ToString::to_string).collect(),
                );
            }
            if !recs.srv.is_empty() {
                srv.insert(
                    name.to_owned(),
                    recs.srv
                        .iter()
                        .map(|s| format!("{}:{}", s.target, s.port))
                        .collect(),
                );
            }
        }
    }
    Json(json!({
        "TTL": st.config.ttl,
        "Serial": snap.serial,
        "RefreshSeconds": 0,
        "Mname": snap.soa.mname,
        "Rname": snap.soa.rname,
        "Domain": st.config.domain,
        "Records": {"As": a, "AAAAs": aaaa, "SRVs": srv},
    }))
    .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": "not_found", "message": "no such endpoint"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_call_what() {
        let viewer = Access::Role(Role::Viewer);
        let operator = Access::Role(Role::Operator);
        let admin = Access::Role(Role::Admin);
        let table = [
            (Method::GET, "/v1/version", Access::Public),
            (Method::HEAD, "/v1/version/", Access::Public),
            (Method::GET, "/v1/hosts/leader.mesos", viewer),
            (Method::GET, "/v1/hosts/leader.mesos/ports", viewer),
            (Method::GET, "/v1/services/_web._tcp.marathon.mesos", viewer),
            (Method::GET, "/v1/axfr", operator),
            (Method::GET, "/v1/axfr/", operator),
            (Method::GET, "/v1/enumerate", operator),
            (Method::GET, "/v1/config", operator),
            (Method::GET, "/nope", viewer),
            (Method::GET, "/", viewer),
            (Method::POST, "/v1/version", admin),
            (Method::PUT, "/v1/hosts/x", admin),
            (Method::DELETE, "/v1/axfr", admin),
        ];
        for (method, path, want) in table {
            assert_eq!(access(&method, path), want, "{method} {path}");
        }
    }
}
