//! The Cosmos HTTP API on axum: `POST /package/*` with Cosmos's request and response media
//! types checked and written byte for byte, errors in the error media type, the resource
//! proxy, and `/capabilities` for clients that reach the catalog directly.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::Method;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use capstan_marathon::PathId;
use capstan_runtime::auth::{Access, Role};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::catalog::describe;
use crate::error::CosmosError;
use crate::frameworks::Masters;
use crate::images::{self, ImageStore};
use crate::installed::{self, Apps};
use crate::media::{self, media_type};
use crate::render::render;
use crate::repos::Repos;

/// What the handlers share.
pub struct AppState {
    pub repos: Repos,
    pub apps: Apps,
    pub masters: Masters,
    pub http: reqwest::Client,
    pub images: ImageStore,
}

/// The largest repository `POST /package/local-repository` takes.
const MAX_LOCAL_REPOSITORY_BYTES: usize = 64 * 1024 * 1024;

type Shared = Arc<AppState>;

/// The API's routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/capabilities", get(capabilities))
        .route("/package/search", post(search))
        .route("/package/describe", post(describe_h))
        .route("/package/list-versions", post(list_versions))
        .route("/package/render", post(render_h))
        .route("/package/install", post(install))
        .route("/package/list", post(list))
        .route("/package/uninstall", post(uninstall))
        .route("/package/repository/list", post(repo_list))
        .route("/package/repository/add", post(repo_add))
        .route("/package/repository/delete", post(repo_delete))
        .route("/package/resource", get(resource))
        .route("/package/images", get(image_list))
        .route("/package/images/{*name}", get(image_get).put(image_put))
        .route(
            "/package/local-repository",
            post(local_add)
                .get(local_get)
                .layer(DefaultBodyLimit::max(MAX_LOCAL_REPOSITORY_BYTES)),
        )
        .route("/service/describe", post(service_describe))
        .route("/service/update", post(service_update))
        .route("/cosmos/service/describe", post(service_describe))
        .route("/cosmos/service/update", post(service_update))
        .fallback(not_found)
        .with_state(state)
}

/// What a call needs in strict mode (`capstan_runtime::auth`): Cosmos's read calls are
/// POSTs, so the decision is by path. Reading the catalog (search, describe, render, the
/// installed list, images for agents) is a viewer's; installing and updating services an
/// operator's; changing where packages come from (repositories, imported bundles) an
/// administrator's. Pure.
pub fn access(method: &Method, path: &str) -> Access {
    let path = path.trim_end_matches('/');
    let path = path.strip_prefix("/cosmos").unwrap_or(path);
    match (method.as_str(), path) {
        (
            "POST",
            "/package/search"
            | "/package/describe"
            | "/package/list-versions"
            | "/package/render"
            | "/package/list"
            | "/package/repository/list"
            | "/service/describe",
        ) => Access::Role(Role::Viewer),
        ("POST", "/package/install" | "/package/uninstall" | "/service/update") => {
            Access::Role(Role::Operator)
        }
        ("POST", "/package/repository/add" | "/package/repository/delete")
        | ("POST", "/package/local-repository") => Access::Role(Role::Admin),
        ("PUT", p) if p.starts_with("/package/images/") => Access::Role(Role::Admin),
        (m, _) => Access::by_method(m),
    }
}

fn error_response(e: &CosmosError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    if status.is_server_error() {
        tracing::warn!(error = %e, kind = e.kind(), "Request failed");
    }
    let mut r = (status, e.body().to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media::ERROR));
    r
}

async fn not_found() -> Response {
    error_response(&CosmosError::MalformedRequest("no such endpoint".into())).map_status(404)
}

trait MapStatus {
    fn map_status(self, code: u16) -> Response;
}

impl MapStatus for Response {
    fn map_status(mut self, code: u16) -> Response {
        *self.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND);
        self
    }
}

fn json_response(content_type: &str, body: &Value) -> Response {
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// `<scheme>://<Host>` of the request, for resource URLs (`X-Forwarded-Proto`, else http).
fn origin(h: &HeaderMap) -> String {
    let scheme = h
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    let host = header_str(h, header::HOST).unwrap_or("localhost");
    format!("{scheme}://{host}")
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the media types of a call to `endpoint` (`package.search`), decodes its body and
/// picks the response type among `versions` (most preferred first).
fn accept<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
    endpoint: &str,
    versions: &[&str],
) -> Result<(T, String), CosmosError> {
    let request = media_type(&format!("{endpoint}-request"), "v1");
    media::check_content_type(header_str(headers, header::CONTENT_TYPE), &request)?;
    let available: Vec<String> = versions
        .iter()
        .map(|v| media_type(&format!("{endpoint}-response"), v))
        .collect();
    let refs: Vec<&str> = available.iter().map(String::as_str).collect();
    let chosen = media::negotiate(header_str(headers, header::ACCEPT), &refs)?.to_owned();
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let req = serde_json::from_slice(body)
        .map_err(|e| CosmosError::MalformedRequest(format!("Invalid request body: {e}")))?;
    Ok((req, chosen))
}

async fn answer<F>(f: F) -> Response
where
    F: Future<Output = Result<(String, Value), CosmosError>>,
{
    match f.await {
        Ok((ct, body)) => json_response(&ct, &body),
        Err(e) => error_response(&e),
    }
}

async fn capabilities() -> Response {
    json_response(
        media::CAPABILITIES,
        &json!({"capabilities": [{"name": "PACKAGE_MANAGEMENT"}]}),
    )
}

#[derive(Deserialize)]
struct SearchRequest {
    #[serde(default)]
    query: Option<String>,
}

async fn search(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (SearchRequest, _) = accept(&headers, &body, "package.search", &["v1"])?;
        let c = s.repos.collection().await?;
        Ok((
            ct,
            c.search(req.query.as_deref().unwrap_or(""), &origin(&headers)),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeRequest {
    package_name: String,
    #[serde(default)]
    package_version: Option<String>,
}

async fn describe_h(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (DescribeRequest, String) =
            accept(&headers, &body, "package.describe", &["v3", "v2"])?;
        let c = s.repos.collection().await?;
        let found = c.find(&req.package_name, req.package_version.as_deref())?;
        let v3 = ct.ends_with("version=v3");
        Ok((ct, describe(found.package, v3, &origin(&headers))))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListVersionsRequest {
    package_name: String,
    #[serde(default)]
    #[allow(dead_code)]
    include_package_versions: bool,
}

async fn list_versions(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (ListVersionsRequest, _) =
            accept(&headers, &body, "package.list-versions", &["v1"])?;
        let c = s.repos.collection().await?;
        Ok((ct, c.list_versions(&req.package_name)?))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenderRequest {
    package_name: String,
    #[serde(default)]
    package_version: Option<String>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    app_id: Option<String>,
}

fn check_options(o: Option<&Value>) -> Result<(), CosmosError> {
    match o {
        None | Some(Value::Object(_)) | Some(Value::Null) => Ok(()),
        Some(_) => Err(CosmosError::MalformedRequest(
            "options must be a JSON object".into(),
        )),
    }
}

fn app_id(raw: Option<&str>) -> Option<String> {
    raw.map(|id| PathId::parse(id).to_string())
}

async fn render_h(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (RenderRequest, _) = accept(&headers, &body, "package.render", &["v1"])?;
        check_options(req.options.as_ref())?;
        let c = s.repos.collection().await?;
        let f = c.find(&req.package_name, req.package_version.as_deref())?;
        let id = app_id(req.app_id.as_deref());
        let app = render(f.package, f.source, req.options.as_ref(), id.as_deref())?;
        Ok((ct, json!({ "marathonJson": app })))
    })
    .await
}

async fn install(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (RenderRequest, String) =
            accept(&headers, &body, "package.install", &["v2", "v1"])?;
        check_options(req.options.as_ref())?;
        let c = s.repos.collection().await?;
        let f = c.find(&req.package_name, req.package_version.as_deref())?;
        let id = app_id(req.app_id.as_deref());
        let app = render(f.package, f.source, req.options.as_ref(), id.as_deref())?;
        let created = s.apps.create(&app).await?;
        let p = f.package;
        tracing::info!(package = %p.name, version = %p.version, app = %created.definition.id, "Installed package");
        let mut out = json!({
            "packageName": p.name,
            "packageVersion": p.version,
            "appId": created.definition.id.to_string(),
        });
        if ct.ends_with("version=v2") {
            if let Some(n) = &p.post_install_notes {
                out["postInstallNotes"] = json!(n);
            }
            if let Some(cli) = p.resource.as_ref().and_then(|r| r.get("cli")) {
                out["cli"] = cli.clone();
            }
        }
        Ok((ct, out))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRequest {
    #[serde(default)]
    package_name: Option<String>,
    #[serde(default)]
    app_id: Option<String>,
}

async fn list(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (ListRequest, _) = accept(&headers, &body, "package.list", &["v1"])?;
        let apps = s.apps.installs().await?;
        let id = req.app_id.as_deref().map(PathId::parse);
        Ok((
            ct,
            installed::list(&apps, req.package_name.as_deref(), id.as_ref()),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UninstallRequest {
    package_name: String,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    all: Option<bool>,
}

async fn uninstall(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (UninstallRequest, _) =
            accept(&headers, &body, "package.uninstall", &["v1"])?;
        let apps = s.apps.installs().await?;
        let id = req.app_id.as_deref().map(PathId::parse);
        let targets = installed::to_uninstall(
            &apps,
            &req.package_name,
            id.as_ref(),
            req.all.unwrap_or(false),
        )?;
        let collection = s.repos.collection().await.ok();
        let mut results = Vec::new();
        for app in targets {
            let framework = match app.definition.labels.get(crate::render::LABEL_FRAMEWORK_NAME) {
                Some(name) if s.masters.configured() => s.masters.framework_named(name).await?,
                _ => None,
            };
            s.apps.delete(&app.definition.id).await?;
            if let Some(fid) = framework {
                s.masters.teardown(&fid).await?;
                tracing::info!(framework = %fid, app = %app.definition.id, "Tore down the package's framework");
            }
            let version = app
                .definition
                .labels
                .get(crate::render::LABEL_VERSION)
                .cloned();
            let notes = collection
                .as_ref()
                .and_then(|c| c.find(&req.package_name, version.as_deref()).ok())
                .and_then(|f| f.package.post_uninstall_notes.clone())
                .or_else(|| {
                    installed::package_of(app).and_then(|p| {
                        p.get("postUninstallNotes")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                });
            tracing::info!(package = %req.package_name, app = %app.definition.id, "Uninstalled package");
            let mut r = json!({"packageName": req.package_name, "appId": app.definition.id.to_string()});
            if let Some(v) = version {
                r["packageVersion"] = json!(v);
            }
            if let Some(n) = notes {
                r["postUninstallNotes"] = json!(n);
            }
            results.push(r);
        }
        Ok((ct, json!({ "results": results })))
    })
    .await
}

fn repo_list_body(list: &[crate::repos::RepoRef]) -> Value {
    json!({ "repositories": list })
}

async fn repo_list(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (_, ct): (Value, _) = accept(&headers, &body, "package.repository.list", &["v1"])?;
        Ok((ct, repo_list_body(&s.repos.list().await?)))
    })
    .await
}

/// `index` as a number or, as `dcos package repo add --index` sends it, a numeric string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Index {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
struct AddRequest {
    name: String,
    uri: String,
    #[serde(default)]
    index: Option<Index>,
}

async fn repo_add(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (AddRequest, _) =
            accept(&headers, &body, "package.repository.add", &["v1"])?;
        let index = match req.index {
            None => None,
            Some(Index::Number(n)) => Some(n),
            Some(Index::Text(t)) => Some(t.trim().parse::<i64>().map_err(|_| {
                CosmosError::MalformedRequest(format!("index [{t}] is not a number"))
            })?),
        };
        let index = index
            .map(|i| {
                usize::try_from(i).map_err(|_| {
                    CosmosError::MalformedRequest(format!("index [{i}] must not be negative"))
                })
            })
            .transpose()?;
        let list = s.repos.add(&req.name, &req.uri, index).await?;
        tracing::info!(name = %req.name, uri = %req.uri, "Added repository");
        Ok((ct, repo_list_body(&list)))
    })
    .await
}

#[derive(Deserialize)]
struct DeleteRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
}

async fn repo_delete(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (DeleteRequest, _) =
            accept(&headers, &body, "package.repository.delete", &["v1"])?;
        let list = s
            .repos
            .delete(req.name.as_deref(), req.uri.as_deref())
            .await?;
        Ok((ct, repo_list_body(&list)))
    })
    .await
}

#[derive(Deserialize)]
struct ResourceQuery {
    url: String,
}

/// `GET /package/resource?url=`: only URLs some configured repository names.
async fn resource(State(s): State<Shared>, Query(q): Query<ResourceQuery>) -> Response {
    let result: Result<Response, CosmosError> = async {
        let c = s.repos.collection().await?;
        if !c.has_resource_url(&q.url) {
            return Err(CosmosError::Forbidden(q.url.clone()));
        }
        let resp =
            s.http
                .get(&q.url)
                .send()
                .await
                .map_err(|e| CosmosError::RepositoryUriError {
                    uri: q.url.clone(),
                    message: e.to_string(),
                })?;
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let ct = resp.headers().get(reqwest::header::CONTENT_TYPE).cloned();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CosmosError::RepositoryUriError {
                uri: q.url.clone(),
                message: e.to_string(),
            })?;
        let file = q
            .url
            .split(['?', '#'])
            .next()
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or("resource")
            .replace('"', "");
        let mut r = (status, bytes).into_response();
        if let Some(ct) = ct.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        Ok(r)
    }
    .await;
    result.unwrap_or_else(|e| error_response(&e))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceDescribeRequest {
    app_id: String,
}

/// `POST /cosmos/service/describe` (the router strips `/cosmos`): the package an app was
/// installed from, the options it was installed with, and the versions it may move to.
async fn service_describe(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (ServiceDescribeRequest, _) =
            accept(&headers, &body, "service.describe", &["v1"])?;
        let id = PathId::parse(&req.app_id);
        let apps = s.apps.installs().await?;
        let app = apps
            .iter()
            .find(|a| a.definition.id == id)
            .ok_or_else(|| CosmosError::ServiceNotFound(id.to_string()))?;
        let pkg_json = installed::package_of(app)
            .ok_or_else(|| CosmosError::ServiceNotFound(id.to_string()))?;
        let pkg: crate::universe::Package = serde_json::from_value(pkg_json.clone())
            .map_err(|e| CosmosError::Internal(format!("stored package definition: {e}")))?;
        let user = app
            .definition
            .labels
            .get(crate::render::LABEL_OPTIONS)
            .and_then(|l| crate::render::decode_json_label(l))
            .unwrap_or_else(|| json!({}));
        let resolved = crate::render::resolve_options(&pkg, Some(&user)).unwrap_or(Value::Null);
        let c = s.repos.collection().await?;
        let (up, down) = crate::catalog::moves(&c, &pkg);
        Ok((
            ct,
            json!({
                "package": pkg_json,
                "upgradesTo": up,
                "downgradesTo": down,
                "resolvedOptions": resolved,
                "userProvidedOptions": user,
            }),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceUpdateRequest {
    app_id: String,
    #[serde(default)]
    package_version: Option<String>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    replace: bool,
    #[serde(default)]
    package_name: Option<String>,
}

/// `POST /cosmos/service/update`: the app rendered again with new options and/or another
/// version of its package (as `upgradesFrom`/`downgradesTo` allow) and put in its place.
async fn service_update(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(async {
        let (req, ct): (ServiceUpdateRequest, _) =
            accept(&headers, &body, "service.update", &["v1"])?;
        check_options(req.options.as_ref())?;
        let id = PathId::parse(&req.app_id);
        let apps = s.apps.installs().await?;
        let app = apps
            .iter()
            .find(|a| a.definition.id == id)
            .ok_or_else(|| CosmosError::ServiceNotFound(id.to_string()))?;
        let labels = &app.definition.labels;
        let installed: crate::universe::Package = installed::package_of(app)
            .and_then(|p| serde_json::from_value(p).ok())
            .ok_or_else(|| CosmosError::ServiceNotFound(id.to_string()))?;
        if let Some(n) = req.package_name.as_deref().filter(|n| *n != installed.name) {
            return Err(CosmosError::MalformedRequest(format!(
                "Service [{id}] runs package [{}], not [{n}]",
                installed.name
            )));
        }
        let source = labels
            .get(crate::render::LABEL_SOURCE)
            .cloned()
            .unwrap_or_default();
        let stored = labels
            .get(crate::render::LABEL_OPTIONS)
            .and_then(|l| crate::render::decode_json_label(l));
        let options =
            crate::update::merge_options(stored.as_ref(), req.options.as_ref(), req.replace)?;
        let c = s.repos.collection().await?;
        let target =
            crate::update::target(&c, &installed, &source, req.package_version.as_deref())?;
        let (rendered, resolved) = crate::update::plan(target, &options, &id)?;
        let deployment = s.apps.update(&rendered).await?;
        tracing::info!(app = %id, package = %target.package.name, from = %installed.version,
            to = %target.package.version, "Updated service");
        Ok((
            ct,
            json!({
                "package": target.package.to_json(),
                "resolvedOptions": resolved,
                "marathonDeploymentId": deployment,
            }),
        ))
    })
    .await
}

/// `GET /package/images`: the stored images, `{"images": [{"name", "size"}]}`.
async fn image_list(State(s): State<Shared>) -> Response {
    match s.images.list().await {
        Ok(list) => {
            let images: Vec<Value> = list
                .into_iter()
                .map(|(name, size)| json!({"name": name, "size": size}))
                .collect();
            json_response("application/json", &json!({ "images": images }))
        }
        Err(e) => error_response(&CosmosError::Internal(format!(
            "reading the image store: {e}"
        ))),
    }
}

fn image_name(raw: &str) -> Result<String, CosmosError> {
    images::normalize(raw).map_err(|e| CosmosError::MalformedRequest(e.to_string()))
}

/// `GET /package/images/<name>`: the image's `docker save` archive, streamed.
async fn image_get(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    let result: Result<Response, CosmosError> = async {
        let name = image_name(&name)?;
        let path = s.images.path(&name);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CosmosError::ImageNotFound(name));
            }
            Err(e) => return Err(CosmosError::Internal(format!("{}: {e}", path.display()))),
        };
        let len = file
            .metadata()
            .await
            .map_err(|e| CosmosError::Internal(format!("{}: {e}", path.display())))?
            .len();
        tracing::info!(image = %name, bytes = len, "Serving image from the store");
        let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-tar"),
        );
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        Ok(r)
    }
    .await;
    result.unwrap_or_else(|e| error_response(&e))
}

/// Why an upload's body could not be read: too large (the server's limit) or broken off.
fn body_error(e: &axum::Error) -> CosmosError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return CosmosError::PayloadTooLarge(format!(
                "The image is larger than the limit: {err}"
            ));
        }
        source = err.source();
    }
    CosmosError::MalformedRequest(format!("Reading the image archive: {e}"))
}

/// `PUT /package/images/<name>`: stores the body (a `docker save` archive) as the image's
/// archive: written to a temporary file and renamed into place once complete, so a reader
/// never sees half an image.
async fn image_put(
    State(s): State<Shared>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Response {
    let result: Result<Response, CosmosError> = async {
        use futures::StreamExt as _;
        let name = image_name(&name)?;
        let dir = s.images.dir().to_owned();
        let internal = |e: std::io::Error| CosmosError::Internal(format!("{}: {e}", dir.display()));
        tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
        let temp = s.images.temp_path(&name);
        let mut file = tokio::fs::File::create(&temp).await.map_err(internal)?;
        let mut stream = body.into_data_stream();
        let mut head = Vec::new();
        let mut size = 0u64;
        let written: Result<(), CosmosError> = async {
            use tokio::io::AsyncWriteExt as _;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| body_error(&e))?;
                if head.len() < 512 {
                    head.extend_from_slice(&chunk[..chunk.len().min(512 - head.len())]);
                }
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(internal)?;
            }
            file.flush().await.map_err(internal)?;
            file.sync_all().await.map_err(internal)?;
            if !crate::tar::looks_like_tar(&head) {
                return Err(CosmosError::MalformedRequest(
                    "The body is not a docker save archive (not a tar file)".into(),
                ));
            }
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
        tokio::fs::rename(&temp, s.images.path(&name))
            .await
            .map_err(internal)?;
        tracing::info!(image = %name, bytes = size, "Stored image");
        Ok(json_response(
            "application/json",
            &json!({"name": name, "size": size}),
        ))
    }
    .await;
    result.unwrap_or_else(|e| error_response(&e))
}

/// `POST /package/local-repository`: a repository (as `capstan package build` writes it)
/// whose packages join the cluster's local repository.
async fn local_add(State(s): State<Shared>, body: Bytes) -> Response {
    answer(async {
        let imported = crate::universe::Repository::parse(&body).map_err(|e| {
            CosmosError::RepositoryInvalid {
                uri: crate::repos::LOCAL_URI.into(),
                message: e.to_string(),
            }
        })?;
        let merged = s.repos.add_local(&imported).await?;
        for p in &imported.packages {
            tracing::info!(package = %p.name, version = %p.version, "Imported package into the local repository");
        }
        Ok((
            "application/json".to_owned(),
            local_body(&merged),
        ))
    })
    .await
}

fn local_body(repo: &crate::universe::Repository) -> Value {
    let packages: Vec<Value> = repo
        .packages
        .iter()
        .map(|p| json!({"name": p.name, "version": p.version}))
        .collect();
    json!({
        "name": crate::repos::LOCAL_NAME,
        "uri": crate::repos::LOCAL_URI,
        "packages": packages,
    })
}

/// `GET /package/local-repository`: what the local repository holds.
async fn local_get(State(s): State<Shared>) -> Response {
    answer(async {
        let repo = s.repos.load(crate::repos::LOCAL_URI, true).await?;
        Ok(("application/json".to_owned(), local_body(&repo)))
    })
    .await
}

#[cfg(test)]
mod access_tests {
    use super::*;

    #[test]
    fn reads_are_a_viewers_installs_an_operators_sources_an_admins() {
        let viewer = Access::Role(Role::Viewer);
        let operator = Access::Role(Role::Operator);
        let admin = Access::Role(Role::Admin);
        let table: &[(Method, &str, Access)] = &[
            (Method::GET, "/capabilities", viewer),
            (Method::POST, "/package/search", viewer),
            (Method::POST, "/package/describe", viewer),
            (Method::POST, "/package/list-versions", viewer),
            (Method::POST, "/package/render", viewer),
            (Method::POST, "/package/list", viewer),
            (Method::POST, "/package/repository/list", viewer),
            (Method::POST, "/cosmos/service/describe", viewer),
            (Method::POST, "/service/describe/", viewer),
            (Method::GET, "/package/resource", viewer),
            (Method::GET, "/package/images", viewer),
            (Method::GET, "/package/images/capstan/redis:7", viewer),
            (Method::GET, "/package/local-repository", viewer),
            (Method::POST, "/package/install", operator),
            (Method::POST, "/package/uninstall", operator),
            (Method::POST, "/service/update", operator),
            (Method::POST, "/cosmos/service/update", operator),
            (Method::POST, "/package/repository/add", admin),
            (Method::POST, "/package/repository/delete", admin),
            (Method::POST, "/package/local-repository", admin),
            (Method::PUT, "/package/images/capstan/redis:7", admin),
            // Anything else: by method (a write is at least an operator's).
            (Method::POST, "/package/unknown", operator),
            (Method::DELETE, "/package/images/x", operator),
        ];
        for (method, path, want) in table {
            assert_eq!(access(method, path), *want, "{method} {path}");
        }
    }
}
