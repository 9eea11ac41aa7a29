//! What the router answers itself: `/metadata`, `dcos-version.json`, `ui-config.json`, the
//! pkgpanda build info the CLI probes auth with, the CA certificate, `/capabilities`,
//! Exhibitor's cluster status (from coord's member status, never coord's `/raft/*`),
//! `/system/health/v1` units, `/login`, and the web console's static files; plus the loopback
//! server the IAM API (`capstan_iam::Iam::api`) runs on, which the proxy forwards
//! `/acs/api/v1/...` to.
//!
//! Key decision: small answers are built here and written by the proxy directly (no extra
//! hop); only the IAM API, which reads request bodies and owns its routing, is a real HTTP
//! server, on 127.0.0.1 only.

use std::net::SocketAddr;
use std::path::{Component, Path};

use http::{HeaderMap, Method, header};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::Config;
use crate::plan::Reply;
use crate::routes::Local;
use crate::state::State;

/// The DC/OS release whose API the router presents.
pub const DCOS_VERSION: &str = "1.11.0";
/// `/capabilities`' exact media type (the CLI compares it as a string).
pub const CAPABILITIES_TYPE: &str =
    "application/vnd.dcos.capabilities+json;charset=utf-8;version=v1";
/// The daemons `/system/health/v1/.../units` lists.
pub const UNITS: [(&str, &str); 5] = [
    ("capstan-coord.service", "Capstan coordination service"),
    ("capstan-master.service", "Capstan master (Mesos API)"),
    ("capstan-apps.service", "Capstan apps (Marathon API)"),
    ("capstan-dns.service", "Capstan DNS (Mesos-DNS API)"),
    ("capstan-router.service", "Capstan router (Admin Router)"),
];

fn no_cache(r: Reply) -> Reply {
    r.with(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate")
        .with(header::PRAGMA, "no-cache")
        .with(header::EXPIRES, "0")
}

/// The capabilities this router really serves.
pub fn capabilities(config: &Config) -> Value {
    let mut names = Vec::new();
    if config.catalog.is_some() {
        names.push("PACKAGE_MANAGEMENT");
    }
    if config.jobs.is_some() {
        names.push("METRONOME");
    }
    if config.logs.is_some() {
        names.push("LOGGING");
        names.push("LOGGING_V2");
    }
    let list: Vec<Value> = names.into_iter().map(|n| json!({ "name": n })).collect();
    json!({ "capabilities": list })
}

/// `dcos-version.json`.
pub fn dcos_version() -> Value {
    json!({
        "version": DCOS_VERSION,
        "dcos-image-commit": option_env!("CAPSTAN_GIT_SHA").unwrap_or("capstan"),
        "bootstrap-id": "capstan",
    })
}

/// `ui-config.json` for cluster `id`.
pub fn ui_config(id: Option<&str>) -> Value {
    json!({
        "uiConfiguration": {
            "plugins": {
                "banner": {"enabled": false},
                "branding": {"enabled": false},
                "external-links": {"enabled": false},
                "authentication": {"enabled": false},
                "oauth": {"enabled": false},
                "tracking": {"enabled": false},
                "mesos": {"logging-strategy": "logrotate"},
            }
        },
        "clusterConfiguration": {"firstUser": false, "id": id.unwrap_or("")},
    })
}

/// Exhibitor's `/exhibitor/v1/cluster/status` list from coord's member status.
pub fn exhibitor_status(status: &capstan_coord_client::StatusResponse) -> Value {
    let list: Vec<Value> = status
        .members
        .iter()
        .map(|m| {
            let host = m.addr.rsplit_once(':').map_or(m.addr.as_str(), |(h, _)| h);
            json!({
                "code": if m.healthy { 3 } else { 1 },
                "description": if m.healthy { "serving" } else { "down" },
                "hostname": host,
                "isLeader": m.is_leader,
            })
        })
        .collect();
    Value::Array(list)
}

fn units() -> Value {
    let units: Vec<Value> = UNITS
        .iter()
        .map(|(id, description)| {
            json!({"id": id, "name": description, "health": 0, "description": description})
        })
        .collect();
    json!({ "units": units })
}

/// `/system/health/v1/<rest>`: the units this master runs.
fn health(rest: &str, config: &Config) -> Reply {
    let rest = rest.split('?').next().unwrap_or("").trim_matches('/');
    let segs: Vec<&str> = rest.split('/').collect();
    match segs.as_slice() {
        ["units"] | ["nodes", _, "units"] => Reply::json(200, &units()),
        ["nodes"] => Reply::json(
            200,
            &json!({"nodes": [{"host_ip": config.public_ip.to_string(), "health": 0, "role": "master"}]}),
        ),
        _ => Reply::error(404, "no such health endpoint"),
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "application/javascript",
        "css" => "text/css",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The console built into the binary (`capstan_ui`): `rel` (`""` is `index.html`) with its
/// type, ETag (304 for a matching `If-None-Match`), `Cache-Control` and gzip when accepted; 404
/// for an unknown file.
pub fn console(rel: &str, headers: &HeaderMap) -> Reply {
    let h = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let r = capstan_ui::serve(rel, h(header::IF_NONE_MATCH), h(header::ACCEPT_ENCODING));
    Reply {
        status: r.status.as_u16(),
        headers: r
            .headers
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.to_str().ok()?.to_owned())))
            .collect(),
        body: bytes::Bytes::from_static(r.body),
    }
}

/// A console file: `rel` under `ui_dir`, `index.html` for the root and for anything missing
/// (the console routes in the browser); never a path outside `ui_dir`. Without `ui_dir`, the
/// built-in console.
async fn ui(rel: &str, config: &Config) -> Reply {
    let Some(dir) = &config.ui_dir else {
        return console(rel, &HeaderMap::new());
    };
    let rel = rel.split('?').next().unwrap_or("");
    let rel = Path::new(rel.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Reply::error(400, "bad path");
    }
    let Ok(root) = tokio::fs::canonicalize(dir).await else {
        return Reply::error(404, "the console directory is missing");
    };
    let mut file = root.join(rel);
    let is_file = match tokio::fs::canonicalize(&file).await {
        Ok(real) if real.starts_with(&root) => {
            file = real;
            tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_file())
        }
        Ok(_) => return Reply::error(404, "not found"),
        Err(_) => false,
    };
    if !is_file {
        file = root.join("index.html");
    }
    match tokio::fs::read(&file).await {
        Ok(body) => {
            Reply::new(200, content_type(&file), body).with(header::X_FRAME_OPTIONS, "SAMEORIGIN")
        }
        Err(_) => Reply::error(404, "not found"),
    }
}

async fn ca_pem(config: &Config, state: &State) -> Option<String> {
    if let Some(pem) = state.cluster().ca_pem {
        return Some(pem);
    }
    let path = config.tls.as_ref()?.ca.as_ref()?;
    tokio::fs::read_to_string(path).await.ok()
}

/// The answer to a locally served route (`Local::Iam` is forwarded, not answered here).
pub async fn answer(what: &Local, method: &Method, config: &Config, state: &State) -> Reply {
    match what {
        Local::Metadata => match state
            .cluster_known(std::time::Duration::from_secs(1))
            .await
            .cluster_id
        {
            Some(id) => Reply::json(
                200,
                &json!({"PUBLIC_IPV4": config.public_ip.to_string(), "CLUSTER_ID": id}),
            ),
            None => Reply::error(503, "the cluster id is not known yet (coord unreachable?)"),
        },
        Local::DcosVersion => Reply::json(200, &dcos_version()),
        Local::UiConfig => {
            let id = state.cluster().cluster_id;
            no_cache(Reply::json(200, &ui_config(id.as_deref())))
        }
        Local::BuildInfo => {
            if method == Method::GET || method == Method::HEAD {
                no_cache(Reply::json(200, &json!({})))
            } else {
                Reply::error(405, "only GET and HEAD")
            }
        }
        Local::CaCert => match ca_pem(config, state).await {
            Some(pem) => Reply::new(200, "application/x-x509-ca-cert", pem),
            None => Reply::error(404, "this cluster has no CA certificate"),
        },
        Local::Capabilities => Reply::new(200, CAPABILITIES_TYPE, capabilities(config).to_string()),
        Local::ExhibitorStatus => match state.coord_status().await {
            Ok(s) => Reply::json(200, &exhibitor_status(&s)),
            Err(e) => Reply::error(503, format!("coord status unavailable: {e}")),
        },
        Local::Exhibitor => Reply::error(404, "Exhibitor's API is not served; coord replaces it"),
        Local::Login => Reply::redirect(302, "/#/login"),
        Local::ClusterLinks => Reply::error(404, "cluster linking is not supported"),
        Local::Iam => Reply::error(500, "the IAM API is forwarded, not answered"),
        Local::Health(rest) => health(rest, config),
        Local::Ui(rel) => ui(rel, config).await,
    }
}

/// Serves `api` (the IAM API) on 127.0.0.1, port chosen by the system, until `shutdown`.
pub async fn serve_api(
    api: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        // Only the router connects (from loopback), so the per-source cap is the total one.
        let defaults = capstan_runtime::HttpLimits::default();
        let limits = capstan_runtime::HttpLimits {
            max_connections_per_ip: defaults.max_connections,
            ..defaults
        };
        let served = capstan_runtime::serve(listener, api, limits, shutdown).await;
        if let Err(e) = served {
            warn!(error = %e, "The IAM API server failed");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_list_only_what_is_configured() {
        let mut c = Config::default();
        assert_eq!(capabilities(&c), json!({"capabilities": []}));
        c.catalog = Some("127.0.0.1:7070".into());
        c.jobs = Some("127.0.0.1:9000".into());
        assert_eq!(
            capabilities(&c),
            json!({"capabilities": [{"name": "PACKAGE_MANAGEMENT"}, {"name": "METRONOME"}]})
        );
    }

    #[test]
    fn health_lists_units_per_node() {
        let c = Config::default();
        let r = health("nodes/10.0.0.1/units", &c);
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["units"][0]["id"], "capstan-coord.service");
        assert_eq!(health("report/diagnostics/list/all", &c).status, 404);
    }

    #[test]
    fn exhibitor_status_maps_members() {
        let s = capstan_coord_client::StatusResponse {
            id: 1,
            leader: Some(1),
            leader_addr: Some("10.0.0.1:8181".into()),
            term: 1,
            commit_index: 1,
            applied_index: 1,
            revision: 1,
            members: vec![capstan_coord_client::MemberStatus {
                id: 1,
                addr: "10.0.0.1:8181".into(),
                voter: true,
                healthy: true,
                is_leader: true,
            }],
        };
        assert_eq!(
            exhibitor_status(&s),
            json!([{"code": 3, "description": "serving", "hostname": "10.0.0.1", "isLeader": true}])
        );
    }
}
