//! The node endpoint every node's bootstrap server serves over HTTPS with the node's
//! certificate ([`crate::upgrade::NODE_PORT`]): `GET /v1/node` (what the node runs) and
//! `PUT /v1/node/upgrade` (a package for `capstan-upgrade.service`, with a grant signed by the
//! cluster CA). See [`crate::upgrade`] for why.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use http_body_util::BodyExt;
use std::os::unix::fs::DirBuilderExt;

use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use crate::layout::Layout;
use crate::token::Role;
use crate::upgrade::{
    GRANT_HEADER, Grant, MAX_PACKAGE, NodeStatus, PENDING_FILE, RESULT_FILE, UPGRADE_DIR,
};

/// What the node endpoint knows about its node.
pub struct NodeInfo {
    pub layout: Layout,
    pub role: Role,
    pub hostname: String,
    pub advertise: IpAddr,
    pub ca_cert_pem: String,
}

impl NodeInfo {
    fn dir(&self) -> PathBuf {
        self.layout.state.join(UPGRADE_DIR)
    }
}

/// The node endpoint's routes.
pub fn router(info: Arc<NodeInfo>) -> Router {
    Router::new()
        .route("/v1/node", get(status))
        .route(
            "/v1/node/upgrade",
            put(upload).layer(DefaultBodyLimit::max(MAX_PACKAGE)),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such resource") })
        .with_state(info)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(crate::bootstrap::ApiError {
            code: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

async fn output(program: &str, args: &[&str]) -> String {
    match tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => {
            warn!(program, error = %capstan_types::Chain(&e), "Cannot run");
            String::new()
        }
    }
}

/// This node's status: package version, the role's units, the upgrade's state.
pub async fn gather(info: &NodeInfo) -> NodeStatus {
    let package_version = output("dpkg-query", &["-W", "-f=${Version}", "capstan"])
        .await
        .trim()
        .to_owned();
    let units = crate::activate::units(info.role);
    let mut args = vec!["is-active"];
    args.extend_from_slice(units);
    let states = output("systemctl", &args).await;
    let mut states = states.lines().map(str::trim);
    let units = units
        .iter()
        .map(|u| {
            let state = states.next().unwrap_or("unknown");
            ((*u).to_owned(), state.to_owned())
        })
        .collect();
    let dir = info.dir();
    let last_result = tokio::fs::read_to_string(dir.join(RESULT_FILE))
        .await
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    NodeStatus {
        role: info.role,
        hostname: info.hostname.clone(),
        advertise: info.advertise,
        package_version,
        units,
        upgrade_pending: tokio::fs::try_exists(dir.join(PENDING_FILE))
            .await
            .unwrap_or(false),
        last_result,
    }
}

async fn status(State(info): State<Arc<NodeInfo>>) -> Response {
    axum::Json(gather(&info).await).into_response()
}

/// `PUT /v1/node/upgrade`: the body is the package; the grant header must name this node and
/// the body's SHA-256, signed by the cluster CA. Answers 202 once the package waits for
/// `capstan-upgrade.service`; 409 if an upgrade is already under way.
async fn upload(State(info): State<Arc<NodeInfo>>, headers: HeaderMap, body: Body) -> Response {
    let Some(grant) = headers.get(GRANT_HEADER).and_then(|v| v.to_str().ok()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "grant_missing",
            format!("an upload needs a {GRANT_HEADER} header (capstan cluster upgrade)"),
        );
    };
    let grant = grant.to_owned();
    let dir = info.dir();
    let pending = dir.join(PENDING_FILE);
    if tokio::fs::try_exists(&pending).await.unwrap_or(false) {
        return error(
            StatusCode::CONFLICT,
            "upgrade_running",
            "an upgrade of this node is already under way",
        );
    }
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
    {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot create {}: {e}", dir.display()),
        );
    }
    let part = dir.join(format!("{PENDING_FILE}.part"));
    let written = receive(&part, body).await;
    let sha256 = match written {
        Ok(sha) => sha,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            warn!(path = %part.display(), error = %e, "Package upload failed");
            return error(StatusCode::BAD_REQUEST, "upload_failed", e);
        }
    };
    if let Err(e) = Grant::verify(
        &grant,
        &info.ca_cert_pem,
        info.advertise,
        &sha256,
        crate::state::now_ms(),
    ) {
        let _ = tokio::fs::remove_file(&part).await;
        warn!(error = %e, "Package upload refused");
        return error(StatusCode::FORBIDDEN, "grant_refused", e.to_string());
    }
    let _ = tokio::fs::remove_file(dir.join(RESULT_FILE)).await;
    if let Err(e) = tokio::fs::rename(&part, &pending).await {
        let _ = tokio::fs::remove_file(&part).await;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot store the package: {e}"),
        );
    }
    info!(%sha256, "Package received; capstan-upgrade.service installs it");
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "sha256": sha256 })),
    )
        .into_response()
}

/// Streams `body` into `path` (0600); returns its SHA-256.
async fn receive(path: &std::path::Path, mut body: Body) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let std_file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            format!(
                "cannot write {} (is capstan-bootstrap.service's StateDirectory there?): {e}",
                path.display()
            )
        })?;
    let mut file = tokio::fs::File::from_std(std_file);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the upload: {e}"))?;
        if let Ok(data) = frame.into_data() {
            len += data.len();
            if len > MAX_PACKAGE {
                return Err(format!("the package is larger than {MAX_PACKAGE} bytes"));
            }
            digest.update(&data);
            file.write_all(&data)
                .await
                .map_err(|e| format!("writing the package: {e}"))?;
        }
    }
    if len == 0 {
        return Err("the upload is empty".into());
    }
    file.sync_all()
        .await
        .map_err(|e| format!("writing the package: {e}"))?;
    Ok(hex::encode(digest.finish()))
}
