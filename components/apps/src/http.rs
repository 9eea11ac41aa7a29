//! The REST API: Marathon v2 (`/v2/...`), the 2013 v1 calls of seed 001, `/ping`, `/metrics`
//! and the `/v2/events` SSE stream. One hand-written router, because app ids contain slashes
//! and clients send `//` (marathon-python puts `/grp/app` after `/v2/apps/`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use capstan_runtime::auth::{Access, Role};
use capstan_types::TaskId;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{ApiError, AppEmbed, Core, DeploymentResult, KillOutcome};
use crate::events::{EventBus, render};
use crate::model::limits::MAX_INSTANCES;
use crate::model::{AppDefinition, PathId, Timestamp, Violation};
use crate::server::Leadership;

type Job = Box<dyn FnOnce(&mut Core, Timestamp) + Send>;

/// How far the store writer got: every store op the core issued, numbered from 1, up to
/// `stored` is persisted. `failed` once a write was refused: the instance then steps down and
/// stores nothing more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Durability {
    pub stored: u64,
    pub failed: bool,
}

/// A cheap handle to the core task.
#[derive(Clone)]
pub(crate) struct CoreHandle {
    pub(crate) tx: mpsc::Sender<Job>,
    pub(crate) durable: watch::Receiver<Durability>,
}

impl CoreHandle {
    /// Runs `f` on the core task and returns once every store write it made is persisted, so
    /// an answer built from it acknowledges only what is durable (Marathon's contract). 503 if
    /// the core is gone or the write failed.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Timestamp) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let (r, written) = self.run(f).await?;
        if let Some(seq) = written {
            self.stored(seq).await?;
        }
        Ok(r)
    }

    /// Runs `f` on the core task without waiting for its writes. For the Mesos driver and the
    /// health checker: what they change reaches the master only through scheduler calls, which
    /// the writer releases after the writes before them anyway.
    pub(crate) async fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Timestamp) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        Ok(self.run(f).await?.0)
    }

    /// Runs `f`; also returns the number of the last store op it issued, if it issued any.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Timestamp) -> R + Send + 'static,
    ) -> Result<(R, Option<u64>), ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c, now| {
            let r = f(c, now);
            // The core's ops are drained after every job, so these are this job's.
            let written =
                (!c.store_ops.is_empty()).then(|| c.ops_issued + c.store_ops.len() as u64);
            let _ = tx.send((r, written));
        });
        let gone = || ApiError::new(503, "Marathon is shutting down");
        self.tx.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Waits until store op `seq` is persisted.
    async fn stored(&self, seq: u64) -> Result<(), ApiError> {
        let mut durable = self.durable.clone();
        match durable.wait_for(|d| d.failed || d.stored >= seq).await {
            Ok(d) if !d.failed => Ok(()),
            Ok(_) => Err(ApiError::new(
                503,
                "The change could not be stored, so it was not made; this instance stepped down. Retry once a leader is elected.",
            )),
            Err(_) => Err(ApiError::new(
                503,
                "Marathon stopped before the change was stored, so it was not made",
            )),
        }
    }
}

/// Static facts `/v2/info` and the headers report.
#[derive(Debug, Clone)]
pub(crate) struct Info {
    pub leader: String,
    pub http_port: u16,
    pub masters: Vec<String>,
    pub framework_name: String,
    pub mesos_role: String,
    pub mesos_user: String,
    pub failover_timeout_secs: u64,
    pub local_port_min: u32,
    pub local_port_max: u32,
    pub decline_offer_duration_ms: u64,
    /// Leader election through coord is on.
    pub ha: bool,
    /// What app containers may ask of the agents' hosts (the agents enforce it too).
    pub container_policy: capstan_types::ContainerPolicy,
}

#[derive(Clone)]
pub(crate) struct Ctx {
    pub core: CoreHandle,
    pub events: EventBus,
    pub info: Arc<Info>,
    /// Cancelled at shutdown; ends open event streams so the server can drain.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub leadership: tokio::sync::watch::Receiver<crate::server::Leadership>,
    /// Forwards a follower's requests to the leader.
    pub proxy: reqwest::Client,
    /// `DELETE /v2/leader` with HA: the leader steps down.
    pub abdicate: Arc<tokio::sync::Notify>,
}

const VERSION: &str = "1.11.0";

type Reply = Result<Response, ApiError>;

fn json_response(status: u16, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn deployment_response(status: u16, d: &DeploymentResult) -> Response {
    let mut r = json_response(status, &serde_json::to_value(d).unwrap_or_default());
    if let Ok(v) = HeaderValue::from_str(&d.deployment_id) {
        r.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    r
}

fn text_response(status: u16, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn empty(status: u16) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT);
    r
}

/// Decoded query string; repeated keys kept in order.
pub(crate) struct Query(Vec<(String, String)>);

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Query {
        Query(
            q.unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (percent_decode(k), percent_decode(v)),
                    None => (percent_decode(p), String::new()),
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Java-style booleans: case-insensitive `true`; a bare key counts as true.
    fn flag(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some("") => true,
            Some(v) => v.eq_ignore_ascii_case("true"),
        }
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError {
        status: 400,
        body: json!({"message": "Invalid JSON", "details": e.to_string()}),
    })
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "/".to_string() } else { format!("/{}", path.replace('.', "/")) };
        ApiError {
            status: 400,
            body: json!({"message": "Invalid JSON", "details": [{"path": path, "errors": [e.inner().to_string()]}]}),
        }
    })
}

/// Fields of the AppInfo response a client may send back; they are not part of a definition.
const READ_ONLY: [&str; 12] = [
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "versionInfo",
    "readinessCheckResults",
    "counts",
    "version",
];

/// Parses, normalises and validates an app definition from JSON.
pub(crate) fn parse_app(
    mut v: Value,
    id: Option<&PathId>,
    base: &PathId,
) -> Result<AppDefinition, ApiError> {
    if let Some(o) = v.as_object_mut() {
        for k in READ_ONLY {
            o.remove(k);
        }
        if let Some(id) = id {
            o.insert("id".into(), json!(id.to_string()));
        }
        if let Some(raw) = o.get("id").and_then(Value::as_str) {
            let abs = PathId::parse_relative(raw, base);
            o.insert("id".into(), json!(abs.to_string()));
        }
    } else {
        return Err(ApiError {
            status: 422,
            body: json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": ["error.expected.jsobject"]}]}),
        });
    }
    let missing_id = v.get("id").is_none();
    let mut def: AppDefinition = typed(v)?;
    def.normalize(&def.id.parent());
    let mut problems = def.validate();
    if missing_id {
        problems.retain(|p| p.path != "/id");
        problems.insert(0, Violation::new("/id", "error.path.missing"));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    Ok(def)
}

/// `current` overlaid with the top-level fields of `patch` (Marathon's partial update).
fn merge(current: &AppDefinition, patch: &Value) -> Value {
    let mut base = serde_json::to_value(current).unwrap_or_default();
    if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            if READ_ONLY.contains(&k.as_str()) || k == "id" {
                continue;
            }
            b.insert(k.clone(), v.clone());
        }
        // Changing networking invalidates the normalised port fields unless given again.
        if p.contains_key("container") || p.contains_key("networks") {
            if !p.contains_key("networks") {
                b.remove("networks");
            }
            if !p.contains_key("portDefinitions") && !p.contains_key("ports") {
                b.remove("portDefinitions");
            }
        }
        b.remove("version");
        b.remove("versionInfo");
    }
    base
}

fn is_rollback(v: &Value) -> Option<Timestamp> {
    let o = v.as_object()?;
    let ver = o.get("version")?.as_str()?;
    if o.keys().all(|k| k == "version" || k == "id") {
        Timestamp::parse(ver)
    } else {
        None
    }
}

fn normalize_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut prev_slash = false;
    for c in p.chars() {
        if c == '/' {
            if prev_slash {
                continue;
            }
            prev_slash = true;
        } else {
            prev_slash = false;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out
}

fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains(media)))
}

fn prefers_text(headers: &HeaderMap) -> bool {
    accepts(headers, "text/plain") && !accepts(headers, "application/json")
}

/// What a call to the API needs in strict mode: `/ping` is open (load balancers and the
/// leader proxy's health probe); leader abdication is an administrator's; otherwise reading
/// needs `viewer` and changing needs `operator`.
pub(crate) fn access(method: &Method, path: &str) -> Access {
    let path = normalize_path(path);
    if path == "/ping" {
        Access::Public
    } else if path == "/v2/leader" && method == Method::DELETE {
        Access::Role(Role::Admin)
    } else {
        Access::by_method(method.as_str())
    }
}

pub(crate) async fn dispatch(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = normalize_path(&percent_decode(uri.path()));
    let query = Query::parse(uri.query());
    let leadership = ctx.leadership.borrow().clone();
    let (mut resp, leader) = match leadership {
        Leadership::Leader => {
            let r = match route(&ctx, &method, &path, &query, &headers, &body).await {
                Ok(r) => r,
                Err(e) => {
                    let mut r = json_response(e.status, &e.body);
                    if e.status == 405
                        && let Some(allow) = allowed_methods(&path)
                    {
                        r.headers_mut()
                            .insert(header::ALLOW, HeaderValue::from_static(allow));
                    }
                    r
                }
            };
            (r, Some(ctx.info.leader.clone()))
        }
        _ if path == "/ping" => (ping(&headers), None),
        Leadership::Follower(Some(leader)) if path.starts_with("/v2/events") => {
            let mut r = empty(302);
            let target = format!(
                "http://{leader}{}",
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            );
            if let Ok(v) = HeaderValue::from_str(&target) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            (r, Some(leader))
        }
        Leadership::Follower(Some(leader)) => (
            proxy(&ctx, &leader, &method, &uri, &headers, body).await,
            Some(leader),
        ),
        Leadership::Follower(None) => (
            json_response(
                503,
                &json!({"message": "Could not determine the current leader"}),
            ),
            None,
        ),
    };
    if let Some(leader) = leader
        && let Ok(v) = HeaderValue::from_str(&format!("http://{leader}"))
    {
        resp.headers_mut().insert("X-Marathon-Leader", v);
    }
    resp
}

/// Forwards a request to the leader and hands back its answer (Marathon's leader proxy).
async fn proxy(
    ctx: &Ctx,
    leader: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let url = format!(
        "http://{leader}{}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut req = ctx.proxy.request(method.clone(), &url).body(body);
    for (k, v) in headers {
        if k != header::HOST && k != header::CONTENT_LENGTH {
            req = req.header(k, v);
        }
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status();
            let mut out_headers = HeaderMap::new();
            for (k, v) in r.headers() {
                if k != header::TRANSFER_ENCODING
                    && k != header::CONTENT_LENGTH
                    && k != header::CONNECTION
                {
                    out_headers.insert(k.clone(), v.clone());
                }
            }
            let bytes = r.bytes().await.unwrap_or_default();
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            *resp.headers_mut() = out_headers;
            resp
        }
        Err(e) => json_response(
            502,
            &json!({"message": format!("Cannot reach the leader {leader}: {e}")}),
        ),
    }
}

async fn route(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Reply {
    let m = method.clone();
    match (m, path) {
        (Method::GET, "/ping") => Ok(ping(headers)),
        (Method::GET, "/metrics") => metrics(ctx).await,
        (Method::GET, "/v2/info") => info(ctx).await,
        (Method::GET, "/v2/leader") => Ok(json_response(200, &json!({"leader": ctx.info.leader}))),
        (Method::DELETE, "/v2/leader") => {
            if ctx.info.ha {
                ctx.abdicate.notify_one();
            }
            Ok(json_response(
                200,
                &json!({"message": "Leadership abdicated"}),
            ))
        }
        (Method::GET, "/v2/events") => events(ctx, q, headers).await,
        (Method::GET, "/v2/apps") => list_apps(ctx, q).await,
        (Method::POST, "/v2/apps") => create_app(ctx, q, body).await,
        (Method::PUT | Method::PATCH, "/v2/apps") => {
            update_apps(ctx, q, body, method == Method::PATCH).await
        }
        (Method::GET, "/v2/tasks") => list_tasks(ctx, None, q, headers).await,
        (Method::POST, "/v2/tasks/delete") => delete_tasks_by_id(ctx, q, body).await,
        (Method::GET, "/v2/deployments") => {
            ctx.core
                .call(|c, _| {
                    Ok(json_response(
                        200,
                        &json!(
                            c.deployments()
                                .iter()
                                .map(|d| c.deployment_json(d))
                                .collect::<Vec<_>>()
                        ),
                    ))
                })
                .await?
        }
        (Method::GET, "/v2/queue") => {
            let embed = q.all("embed").contains(&"lastUnusedOffers");
            ctx.core
                .call(move |c, now| Ok(json_response(200, &c.queue_json(embed, now))))
                .await?
        }
        (Method::GET, "/v2/eventSubscriptions") => {
            Ok(json_response(200, &json!({"callbackUrls": []})))
        }
        (Method::POST, "/v1/apps/start") => v1_start(ctx, body).await,
        (Method::POST, "/v1/apps/stop") => v1_stop(ctx, body).await,
        (Method::POST, "/v1/apps/scale") => v1_scale(ctx, body).await,
        (Method::GET, "/v1/apps") => {
            ctx.core
                .call(|c, _| {
                    Ok(json_response(
                        200,
                        &json!(c.apps().map(|a| &a.def).collect::<Vec<_>>()),
                    ))
                })
                .await?
        }
        (Method::GET, "/v1/endpoints") => v1_endpoints(ctx, headers).await,
        (_, p) if p.starts_with("/v2/apps/") => {
            app_routes(ctx, method, &p["/v2/apps".len()..], q, headers, body).await
        }
        (Method::DELETE, p) if p.starts_with("/v2/deployments/") => {
            let id = p["/v2/deployments/".len()..].to_string();
            let force = q.flag("force", false);
            match ctx
                .core
                .call(move |c, now| c.cancel_deployment(&id, force, now))
                .await??
            {
                None => Ok(empty(202)),
                Some(d) => Ok(deployment_response(200, &d)),
            }
        }
        (Method::DELETE, p) if p.starts_with("/v2/queue/") && p.ends_with("/delay") => {
            let id = PathId::parse(&p["/v2/queue".len()..p.len() - "/delay".len()]);
            let found = ctx.core.call(move |c, _| c.reset_delay(&id)).await?;
            if found {
                Ok(empty(204))
            } else {
                Err(ApiError::not_found("Application not found in queue"))
            }
        }
        (_, p) if p == "/v2/groups" || p.starts_with("/v2/groups/") => {
            group_routes(ctx, method, &p["/v2/groups".len()..], q, body).await
        }
        _ if allowed_methods(path).is_some() => Err(method_not_allowed(method, path)),
        _ => Err(ApiError::not_found(format!("Not found: {path}"))),
    }
}

fn method_not_allowed(method: &Method, path: &str) -> ApiError {
    ApiError::new(405, format!("Method {method} is not allowed on {path}"))
}

/// The methods [`route`] answers on `path` (the `Allow` header of a 405), or `None` for a
/// path it does not know (404). Mirrors the order in which `route` and `app_routes` match.
fn allowed_methods(path: &str) -> Option<&'static str> {
    Some(match path {
        "/ping"
        | "/metrics"
        | "/v2/info"
        | "/v2/events"
        | "/v2/tasks"
        | "/v2/deployments"
        | "/v2/queue"
        | "/v2/eventSubscriptions"
        | "/v1/apps"
        | "/v1/endpoints" => "GET",
        "/v2/leader" => "GET, DELETE",
        "/v2/apps" => "GET, POST, PUT, PATCH",
        "/v2/tasks/delete" | "/v1/apps/start" | "/v1/apps/stop" | "/v1/apps/scale" => "POST",
        p if p.starts_with("/v2/apps/") => {
            let rest = &p["/v2/apps".len()..];
            if rest.ends_with("/restart") {
                "POST"
            } else if rest.contains("/tasks/") {
                "DELETE"
            } else if rest.ends_with("/tasks") {
                "GET, DELETE"
            } else if rest.contains("/versions/") || rest.ends_with("/versions") {
                "GET"
            } else {
                "GET, PUT, PATCH, DELETE"
            }
        }
        p if p.starts_with("/v2/groups/") && p.ends_with("/versions") => "GET",
        p if p == "/v2/groups" || p.starts_with("/v2/groups/") => "GET, POST, PUT, PATCH, DELETE",
        p if p.starts_with("/v2/deployments/") => "DELETE",
        p if p.starts_with("/v2/queue/") && p.ends_with("/delay") => "DELETE",
        _ => return None,
    })
}

fn ping(headers: &HeaderMap) -> Response {
    let any = headers.get(header::ACCEPT).is_none()
        || accepts(headers, "*/*")
        || accepts(headers, "text/plain");
    if any {
        text_response(200, "pong".into())
    } else if accepts(headers, "application/json") {
        json_response(200, &json!("pong"))
    } else {
        empty(204)
    }
}

async fn metrics(ctx: &Ctx) -> Reply {
    let v = ctx
        .core
        .call(|c, _| {
            let apps = c.apps().count();
            let tasks = c.tasks().count();
            let running = c.tasks().filter(|t| t.is_running()).count();
            let deployments = c.deployments().len();
            json!({
                "version": "4.0.0",
                "counters": {},
                "gauges": {
                    "marathon.apps.active.gauge": {"value": apps},
                    "marathon.tasks.launched.gauge": {"value": tasks},
                    "marathon.tasks.running.gauge": {"value": running},
                    "marathon.deployments.active.gauge": {"value": deployments},
                    "marathon.mesos.connected.gauge": {"value": u8::from(c.is_connected())},
                },
                "histograms": {}, "meters": {}, "timers": {},
            })
        })
        .await?;
    Ok(json_response(200, &v))
}

async fn info(ctx: &Ctx) -> Reply {
    let fw = ctx
        .core
        .call(|c, _| c.framework_id().map(|f| f.as_str().to_string()))
        .await?;
    let i = &ctx.info;
    Ok(json_response(
        200,
        &json!({
            "name": "marathon", "version": VERSION, "buildref": concat!("capstan-", env!("CARGO_PKG_VERSION")),
            "elected": true, "leader": i.leader, "frameworkId": fw,
            "marathon_config": {
                "master": i.masters.join(","), "framework_name": i.framework_name, "failover_timeout": i.failover_timeout_secs,
                "ha": i.ha, "hostname": i.leader.rsplit_once(':').map(|(h, _)| h).unwrap_or(&i.leader), "checkpoint": true, "executor": "//cmd",
                "local_port_min": i.local_port_min, "local_port_max": i.local_port_max, "mesos_role": i.mesos_role,
                "mesos_user": i.mesos_user, "decline_offer_duration": i.decline_offer_duration_ms,
                "reconciliation_initial_delay": 15000, "reconciliation_interval": 600_000, "task_launch_timeout": 300_000,
                "features": [], "webui_url": null, "mesos_leader_ui_url": null,
            },
            "zookeeper_config": {"zk": "", "zk_timeout": 10000, "zk_session_timeout": 10000, "zk_max_versions": 50,
                "zk_compression": true, "zk_compression_threshold": 65536, "zk_connection_timeout": 10000, "zk_max_node_size": 1_024_000},
            "http_config": {"http_port": i.http_port, "https_port": 8443},
        }),
    ))
}

// ------------------------------------------------------------------------------------ events

struct Detach {
    bus: EventBus,
    remote: String,
}

impl Drop for Detach {
    fn drop(&mut self) {
        self.bus.publish(
            "event_stream_detached",
            json!({"remoteAddress": self.remote}),
        );
    }
}

async fn events(ctx: &Ctx, q: &Query, headers: &HeaderMap) -> Reply {
    if !accepts(headers, "text/event-stream") {
        return Err(ApiError::new(
            406,
            "The event stream needs 'Accept: text/event-stream'",
        ));
    }
    let filter: BTreeSet<String> = q
        .all("event_type")
        .into_iter()
        .map(str::to_string)
        .collect();
    let remote = String::new();
    let attached = render(
        "event_stream_attached",
        json!({"remoteAddress": remote}),
        Timestamp::now(),
    );
    ctx.events
        .publish("event_stream_attached", json!({"remoteAddress": remote}));
    // Subscribed after publishing: this stream gets its own attach event first, once.
    let rx = ctx.events.subscribe();
    let guard = Arc::new(Detach {
        bus: ctx.events.clone(),
        remote,
    });
    let frame = |ty: &str, data: &str| Bytes::from(format!("event: {ty}\ndata: {data}\n\n"));
    let first = if filter.is_empty() || filter.contains("event_stream_attached") {
        Some(Ok::<Bytes, std::io::Error>(frame(
            &attached.event_type,
            &attached.data,
        )))
    } else {
        None
    };
    let filter = Arc::new(filter);
    let rest = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |ev| {
        let filter = filter.clone();
        let _keep = guard.clone();
        async move {
            let ev = ev.ok()?;
            (filter.is_empty() || filter.contains(&ev.event_type))
                .then(|| Ok(frame(&ev.event_type, &ev.data)))
        }
    });
    let stream = futures::stream::iter(first)
        .chain(rest)
        .take_until(ctx.shutdown.clone().cancelled_owned());
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

// ------------------------------------------------------------------------------------ apps

/// Marathon label selectors: `k`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `,` = and.
fn label_matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    terms.push(cur);
    terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .all(|t| {
            let set = |s: &str| -> Vec<String> {
                s.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .collect()
            };
            if let Some((k, v)) = t.split_once("==") {
                labels.get(k.trim()).is_some_and(|x| x == v.trim())
            } else if let Some((k, v)) = t.split_once("!=") {
                labels.get(k.trim()).is_none_or(|x| x != v.trim())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                labels.get(k.trim()).is_none_or(|x| !set(v).contains(x))
            } else if let Some((k, v)) = t.split_once(" in ") {
                labels.get(k.trim()).is_some_and(|x| set(v).contains(x))
            } else {
                labels.contains_key(t)
            }
        })
}

async fn list_apps(ctx: &Ctx, q: &Query) -> Reply {
    let cmd = q.get("cmd").map(str::to_string);
    let id = q.get("id").map(str::to_string);
    let label = q.get("label").map(str::to_string);
    let embed: Vec<String> = q.all("embed").into_iter().map(str::to_string).collect();
    let tasks = embed.iter().any(|e| e == "apps.tasks");
    let failures = embed.iter().any(|e| e == "apps.lastTaskFailure");
    let readiness = embed.iter().any(|e| e == "apps.readiness");
    let embed = AppEmbed {
        tasks,
        last_task_failure: failures,
        readiness,
    };
    let body = ctx
        .core
        .call(move |c, _| {
            c.apps_list_json(
                |a| {
                    cmd.as_ref()
                        .is_none_or(|s| a.def.cmd.as_ref().is_some_and(|x| x.contains(s.as_str())))
                        && id
                            .as_ref()
                            .is_none_or(|s| a.def.id.to_string().contains(s.as_str()))
                        && label
                            .as_ref()
                            .is_none_or(|s| label_matches(s, &a.def.labels))
                },
                embed,
            )
        })
        .await?;
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// 422 when a definition asks for what the cluster's container policy refuses.
fn check_policy(
    def: &AppDefinition,
    policy: &capstan_types::ContainerPolicy,
    prefix: &str,
) -> Result<(), ApiError> {
    let problems = def.policy_violations(policy);
    if problems.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        problems
            .into_iter()
            .map(|mut v| {
                v.path = format!("{prefix}{}", v.path);
                v
            })
            .collect(),
    ))
}

async fn create_app(ctx: &Ctx, q: &Query, body: &Bytes) -> Reply {
    let v = parse_body(body)?;
    let def = parse_app(v.clone(), None, &PathId::root())?;
    check_policy(&def, &ctx.info.container_policy, "")?;
    let force = q.flag("force", false);
    ctx.events.publish(
        "api_post_event",
        json!({"clientIp": "", "uri": "/v2/apps", "appDefinition": def}),
    );
    let (status, app, d) = ctx
        .core
        .call(move |c, now| create_app_in(c, def, force, now))
        .await??;
    let mut r = json_response(status, &app);
    if let Ok(h) = HeaderValue::from_str(&d.deployment_id) {
        r.headers_mut().insert("Marathon-Deployment-Id", h);
    }
    if let Some(id) = app["id"].as_str()
        && let Ok(h) = HeaderValue::from_str(id)
    {
        r.headers_mut().insert(header::LOCATION, h);
    }
    Ok(r)
}

fn create_app_in(
    c: &mut Core,
    def: AppDefinition,
    force: bool,
    now: Timestamp,
) -> Result<(u16, Value, DeploymentResult), ApiError> {
    let id = def.id.clone();
    if c.app(&id).is_some() {
        return Err(ApiError::new(
            409,
            format!("An app with id [{id}] already exists."),
        ));
    }
    if c.group_exists(&id) && !id.is_root() {
        return Err(ApiError::new(
            409,
            format!("A group with id [{id}] already exists."),
        ));
    }
    if let Some(parent_app) = id.ancestors().into_iter().find(|a| c.app(a).is_some()) {
        return Err(ApiError::invalid(vec![Violation::new(
            "/id",
            format!("The path {parent_app} is an app, not a group"),
        )]));
    }
    let d = c.deploy(
        BTreeMap::from([(id.clone(), Some(def))]),
        BTreeSet::new(),
        force,
        now,
    )?;
    let app = c.app(&id).map(|a| c.app_json(a, false)).unwrap_or_default();
    Ok((201, app, d))
}

/// PUT (partial unless `partialUpdate=false`) / PATCH of one app inside the core.
fn update_app_in(
    c: &Core,
    id: &PathId,
    body: &Value,
    partial: bool,
    must_exist: bool,
) -> Result<(AppDefinition, bool), ApiError> {
    let (def, created) = update_app_unchecked(c, id, body, partial, must_exist)?;
    check_policy(&def, c.container_policy(), "")?;
    Ok((def, created))
}

fn update_app_unchecked(
    c: &Core,
    id: &PathId,
    body: &Value,
    partial: bool,
    must_exist: bool,
) -> Result<(AppDefinition, bool), ApiError> {
    let current = c.app(id).map(|a| a.def.clone());
    if let Some(v) = is_rollback(body) {
        let Some(app) = c.app(id) else {
            return Err(ApiError::not_found(format!("App '{id}' does not exist")));
        };
        let Some(def) = app.versions.get(&v) else {
            return Err(ApiError::not_found(format!(
                "Version '{v}' of app '{id}' does not exist"
            )));
        };
        let mut def = def.clone();
        def.version = None;
        def.version_info = None;
        return Ok((def, false));
    }
    match current {
        Some(cur) if partial => Ok((
            parse_app(merge(&cur, body), Some(id), &PathId::root())?,
            false,
        )),
        Some(_) => Ok((parse_app(body.clone(), Some(id), &PathId::root())?, false)),
        None if must_exist => Err(ApiError::not_found(format!("App '{id}' does not exist"))),
        None => Ok((parse_app(body.clone(), Some(id), &PathId::root())?, true)),
    }
}

async fn update_apps(ctx: &Ctx, q: &Query, body: &Bytes, patch: bool) -> Reply {
    let v = parse_body(body)?;
    let Some(list) = v.as_array().cloned() else {
        return Err(ApiError::invalid(vec![Violation::new(
            "/",
            "error.expected.jsarray",
        )]));
    };
    if list.is_empty() {
        return Err(ApiError::invalid(vec![Violation::new(
            "/",
            "expected a non-empty array of apps",
        )]));
    }
    let force = q.flag("force", false);
    let partial = patch || q.flag("partialUpdate", true);
    let d = ctx
        .core
        .call(move |c, now| {
            let mut changes = BTreeMap::new();
            for item in list {
                let Some(raw) = item.get("id").and_then(Value::as_str) else {
                    return Err(ApiError::invalid(vec![Violation::new(
                        "/id",
                        "error.path.missing",
                    )]));
                };
                let id = PathId::parse(raw);
                let (def, _) = update_app_in(c, &id, &item, partial, patch)?;
                changes.insert(id, Some(def));
            }
            c.deploy(changes, BTreeSet::new(), force, now)
        })
        .await??;
    Ok(deployment_response(200, &d))
}

async fn app_routes(
    ctx: &Ctx,
    method: &Method,
    rest: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Reply {
    let force = q.flag("force", false);
    if let Some(id) = rest.strip_suffix("/restart") {
        if method != Method::POST {
            return Err(method_not_allowed(method, &format!("/v2/apps{rest}")));
        }
        let id = PathId::parse(id);
        let d = ctx
            .core
            .call(move |c, now| {
                if c.app(&id).is_none() {
                    return Err(ApiError::not_found(format!("App '{id}' does not exist")));
                }
                c.deploy(BTreeMap::new(), BTreeSet::from([id]), force, now)
            })
            .await??;
        return Ok(deployment_response(200, &d));
    }
    if let Some((id, task)) = rest.rsplit_once("/tasks/") {
        let id = PathId::parse(id);
        let task = TaskId::from(task);
        if method != Method::DELETE {
            return Err(method_not_allowed(method, &format!("/v2/apps{rest}")));
        }
        let (scale, wipe) = (q.flag("scale", false), q.flag("wipe", false));
        let out = ctx
            .core
            .call(move |c, now| {
                if c.task(task.as_str()).is_none_or(|t| t.app_id != id) {
                    return Err(ApiError::not_found(format!("Task '{task}' does not exist")));
                }
                c.kill_tasks(&[task], scale, wipe, force, now)
            })
            .await??;
        return Ok(match out {
            KillOutcome::Tasks(t) => json_response(200, &json!({"task": t.into_iter().next()})),
            KillOutcome::Deployment(d) => deployment_response(200, &d),
        });
    }
    if let Some(id) = rest.strip_suffix("/tasks") {
        let id = PathId::parse(id);
        return match *method {
            Method::GET => list_tasks(ctx, Some(id), q, headers).await,
            Method::DELETE => {
                let (scale, wipe) = (q.flag("scale", false), q.flag("wipe", false));
                let host = q.get("host").map(str::to_string);
                let out = ctx
                    .core
                    .call(move |c, now| {
                        if c.app(&id).is_none() {
                            return Err(ApiError::not_found(format!("App '{id}' does not exist")));
                        }
                        let ids: Vec<TaskId> = c
                            .tasks_of(&id)
                            .filter(|t| host.as_ref().is_none_or(|h| &t.host == h))
                            .map(|t| t.id.clone())
                            .collect();
                        c.kill_tasks(&ids, scale, wipe, force, now)
                    })
                    .await??;
                Ok(match out {
                    KillOutcome::Tasks(t) => json_response(200, &json!({ "tasks": t })),
                    KillOutcome::Deployment(d) => deployment_response(200, &d),
                })
            }
            _ => Err(method_not_allowed(method, &format!("/v2/apps{rest}"))),
        };
    }
    if (rest.contains("/versions/") || rest.ends_with("/versions")) && method != Method::GET {
        return Err(method_not_allowed(method, &format!("/v2/apps{rest}")));
    }
    if let Some((id, version)) = rest.rsplit_once("/versions/") {
        let id = PathId::parse(id);
        let v = Timestamp::parse(version)
            .ok_or_else(|| ApiError::not_found(format!("Version '{version}' does not exist")))?;
        let def = ctx
            .core
            .call(move |c, _| c.app(&id).and_then(|a| a.versions.get(&v).cloned()))
            .await?;
        return match def {
            Some(d) => Ok(json_response(
                200,
                &serde_json::to_value(d).unwrap_or_default(),
            )),
            None => Err(ApiError::not_found(format!(
                "App '{}' does not exist in version '{v}'",
                rest.split("/versions/").next().unwrap_or_default()
            ))),
        };
    }
    if let Some(id) = rest.strip_suffix("/versions") {
        let id = PathId::parse(id);
        let v = ctx
            .core
            .call(move |c, _| {
                c.app(&id).map(|a| {
                    a.versions
                        .keys()
                        .rev()
                        .map(|v| json!(v))
                        .collect::<Vec<_>>()
                })
            })
            .await?
            .ok_or_else(|| ApiError::not_found("App does not exist"))?;
        return Ok(json_response(200, &json!({ "versions": v })));
    }
    let id = PathId::parse(rest);
    match *method {
        Method::GET => {
            let idc = id.clone();
            let v = ctx
                .core
                .call(move |c, _| c.app(&idc).map(|a| c.app_json(a, true)))
                .await?;
            match v {
                Some(app) => Ok(json_response(200, &json!({ "app": app }))),
                None => Err(ApiError::not_found(format!("App '{id}' does not exist"))),
            }
        }
        Method::PUT | Method::PATCH => {
            let v = parse_body(body)?;
            let patch = method == Method::PATCH;
            let partial = patch || q.flag("partialUpdate", true);
            ctx.events.publish(
                "api_post_event",
                json!({"clientIp": "", "uri": format!("/v2/apps{id}"), "appDefinition": v}),
            );
            let (created, d) = ctx
                .core
                .call(move |c, now| {
                    let (def, created) = update_app_in(c, &id, &v, partial, patch)?;
                    let d = c.deploy(
                        BTreeMap::from([(id, Some(def))]),
                        BTreeSet::new(),
                        force,
                        now,
                    )?;
                    Ok::<_, ApiError>((created, d))
                })
                .await??;
            Ok(deployment_response(if created { 201 } else { 200 }, &d))
        }
        Method::DELETE => {
            // Marathon deletes by default even while the app is being deployed.
            let force = q.flag("force", true);
            let d = ctx
                .core
                .call(move |c, now| {
                    if c.app(&id).is_none() {
                        return Err(ApiError::not_found(format!("App '{id}' does not exist")));
                    }
                    c.deploy(BTreeMap::from([(id, None)]), BTreeSet::new(), force, now)
                })
                .await??;
            Ok(deployment_response(200, &d))
        }
        _ => Err(method_not_allowed(method, &format!("/v2/apps{rest}"))),
    }
}

/// Text form of tasks (haproxy-marathon-bridge): per service port a line
/// `<safeAppId>\t<servicePort>\t<host>:<hostPort>\t…`.
fn tasks_text(c: &Core, app: Option<&PathId>) -> String {
    let mut out = String::new();
    for a in c.apps().filter(|a| app.is_none_or(|id| &a.def.id == id)) {
        let running: Vec<_> = c.tasks_of(&a.def.id).filter(|t| t.is_running()).collect();
        let specs = a.def.port_specs();
        let safe = a.def.id.safe_id();
        if specs.is_empty() {
            out.push_str(&format!("{safe}\t \t"));
            for t in &running {
                out.push_str(&format!("{}\t", t.host));
            }
            out.push('\n');
            continue;
        }
        for (i, s) in specs.iter().enumerate() {
            out.push_str(&format!("{safe}\t{}\t", s.service_port));
            for t in &running {
                if let Some(p) = t.ports.get(i) {
                    out.push_str(&format!("{}:{p}\t", t.host));
                }
            }
            out.push('\n');
        }
    }
    out
}

async fn list_tasks(ctx: &Ctx, app: Option<PathId>, q: &Query, headers: &HeaderMap) -> Reply {
    let mut statuses: Vec<String> = q
        .all("status")
        .into_iter()
        .chain(q.all("status[]"))
        .map(str::to_lowercase)
        .collect();
    statuses.retain(|s| !s.is_empty());
    let text = prefers_text(headers);
    ctx.core
        .call(move |c, _| {
            if let Some(id) = &app
                && c.app(id).is_none()
            {
                return Err(ApiError::not_found(format!("App '{id}' does not exist")));
            }
            if text {
                return Ok(text_response(200, tasks_text(c, app.as_ref())));
            }
            let tasks: Vec<Value> = c
                .tasks()
                .filter(|t| app.as_ref().is_none_or(|id| &t.app_id == id))
                .filter(|t| {
                    statuses.is_empty()
                        || statuses
                            .iter()
                            .any(|s| t.state.name().eq_ignore_ascii_case(&format!("task_{s}")))
                })
                .map(|t| c.task_json(t))
                .collect();
            Ok(json_response(200, &json!({ "tasks": tasks })))
        })
        .await?
}

async fn delete_tasks_by_id(ctx: &Ctx, q: &Query, body: &Bytes) -> Reply {
    let v = parse_body(body)?;
    let Some(ids) = v["ids"].as_array().map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(TaskId::from)
            .collect::<Vec<_>>()
    }) else {
        return Err(ApiError::new(400, "Body must be {\"ids\": [taskId, ...]}"));
    };
    let (scale, wipe, force) = (
        q.flag("scale", false),
        q.flag("wipe", false),
        q.flag("force", false),
    );
    match ctx
        .core
        .call(move |c, now| c.kill_tasks(&ids, scale, wipe, force, now))
        .await??
    {
        KillOutcome::Tasks(t) => Ok(json_response(200, &json!({ "tasks": t }))),
        KillOutcome::Deployment(d) => Ok(deployment_response(200, &d)),
    }
}

// ------------------------------------------------------------------------------------ groups

fn group_json(c: &Core, id: &PathId) -> Value {
    let apps: Vec<Value> = c
        .apps()
        .filter(|a| a.def.id.parent() == *id)
        .map(|a| serde_json::to_value(&a.def).unwrap_or_default())
        .collect();
    let mut children: BTreeSet<PathId> = BTreeSet::new();
    for a in c.apps() {
        if a.def.id.is_under(id) && a.def.id.segments().len() > id.segments().len() + 1 {
            children.insert(PathId::parse(&format!(
                "{id}/{}",
                a.def.id.segments()[id.segments().len()]
            )));
        }
    }
    for g in c.groups().keys() {
        if g.is_under(id) && g.segments().len() > id.segments().len() {
            children.insert(PathId::parse(&format!(
                "{id}/{}",
                g.segments()[id.segments().len()]
            )));
        }
    }
    let meta = c.groups().get(id);
    let version = meta
        .map(|m| m.version)
        .into_iter()
        .chain(
            c.apps()
                .filter(|a| a.def.id.is_under(id))
                .filter_map(|a| a.def.version),
        )
        .max()
        .unwrap_or_default();
    json!({
        "id": id, "apps": apps, "groups": children.iter().map(|g| group_json(c, g)).collect::<Vec<_>>(),
        "dependencies": meta.map(|m| m.dependencies.clone()).unwrap_or_default(),
        "version": version, "pods": [],
    })
}

/// The fields of a group body (Marathon's `GroupUpdate`).
const GROUP_FIELDS: [&str; 8] = [
    "id",
    "apps",
    "groups",
    "dependencies",
    "version",
    "pods",
    "enforceRole",
    "scaleBy",
];

/// A field, the check of its JSON type, and the error if that fails.
type FieldType = (&'static str, fn(&Value) -> bool, &'static str);

/// What is wrong with the shape of a group body at `path` (`""` for the top level, then
/// `/groups(0)` ...): not an object, unknown fields, fields of the wrong JSON type.
fn group_problems(v: &Value, path: &str) -> Vec<Violation> {
    let at = |field: &str| format!("{path}/{field}");
    let Some(o) = v.as_object() else {
        let whole = if path.is_empty() { "/" } else { path };
        return vec![Violation::new(whole, "error.expected.jsobject")];
    };
    let mut problems = Vec::new();
    for k in o.keys() {
        if !GROUP_FIELDS.contains(&k.as_str()) {
            problems.push(Violation::new(
                at(k),
                format!(
                    "error.unknown.field: expected one of {}",
                    GROUP_FIELDS.join(", ")
                ),
            ));
        }
    }
    let string_list = |d: &Value| d.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    let types: [FieldType; 7] = [
        ("id", Value::is_string, "error.expected.jsstring"),
        ("apps", Value::is_array, "error.expected.jsarray"),
        ("groups", Value::is_array, "error.expected.jsarray"),
        ("pods", Value::is_array, "error.expected.jsarray"),
        ("scaleBy", Value::is_number, "error.expected.jsnumber"),
        ("enforceRole", Value::is_boolean, "error.expected.jsboolean"),
        (
            "dependencies",
            string_list,
            "error.expected.jsarray of strings",
        ),
    ];
    for (field, ok, error) in types {
        if let Some(x) = o.get(field)
            && !x.is_null()
            && !ok(x)
        {
            problems.push(Violation::new(at(field), error));
        }
    }
    if let Some(f) = o.get("scaleBy").and_then(Value::as_f64)
        && f <= 0.0
    {
        problems.push(Violation::new(at("scaleBy"), "must be greater than 0"));
    }
    for (i, g) in o
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        problems.extend(group_problems(g, &format!("{path}/groups({i})")));
    }
    problems
}

/// Collects every app and group of a group body, ids made absolute.
fn collect_group(
    v: &Value,
    id: &PathId,
    apps: &mut Vec<AppDefinition>,
    groups: &mut Vec<(PathId, Vec<String>)>,
    problems: &mut Vec<Violation>,
) {
    let deps: Vec<String> = v["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|d| PathId::parse_relative(d, &id.parent()).to_string())
        .collect();
    for e in id.problems(false) {
        problems.push(Violation::new("/id", format!("{e} (group {id})")));
    }
    groups.push((id.clone(), deps));
    for a in v["apps"].as_array().into_iter().flatten() {
        let mut a = a.clone();
        if let Some(raw) = a.get("id").and_then(Value::as_str) {
            let abs = PathId::parse_relative(raw, id);
            a["id"] = json!(abs.to_string());
        }
        match parse_app(a, None, id) {
            Ok(def) => apps.push(def),
            Err(e) => problems.extend(
                e.body["details"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| {
                        serde_json::from_value::<(String, Vec<String>)>(json!([
                            d["path"],
                            d["errors"]
                        ]))
                        .ok()
                    })
                    .map(|(path, errors)| Violation {
                        path: format!("/apps{path}"),
                        errors,
                    }),
            ),
        }
    }
    for g in v["groups"].as_array().into_iter().flatten() {
        let Some(raw) = g.get("id").and_then(Value::as_str) else {
            problems.push(Violation::new("/groups/id", "error.path.missing"));
            continue;
        };
        collect_group(g, &PathId::parse_relative(raw, id), apps, groups, problems);
    }
}

/// Whether a group update body `v` for group `gid` speaks for app `app` (under `gid`): it lists
/// the apps of the app's own group, or it lists the subgroups of an enclosing group and leaves
/// the app's branch out.
fn body_covers(v: &Value, gid: &PathId, app: &PathId) -> bool {
    let parent = app.parent();
    let mut group = v;
    let mut at = gid.clone();
    loop {
        if at == parent {
            return group.get("apps").is_some_and(Value::is_array);
        }
        let Some(children) = group.get("groups").and_then(Value::as_array) else {
            return false;
        };
        let next = children.iter().find_map(|g| {
            let raw = g.get("id").and_then(Value::as_str)?;
            let id = PathId::parse_relative(raw, &at);
            (parent == id || parent.is_under(&id)).then_some((g, id))
        });
        match next {
            Some((g, id)) => {
                group = g;
                at = id;
            }
            None => return true,
        }
    }
}

async fn group_routes(ctx: &Ctx, method: &Method, rest: &str, q: &Query, body: &Bytes) -> Reply {
    let force = q.flag("force", false);
    if let Some(id) = rest.strip_suffix("/versions") {
        if method != Method::GET {
            return Err(method_not_allowed(method, &format!("/v2/groups{rest}")));
        }
        let id = PathId::parse(id);
        let v = ctx
            .core
            .call(move |c, _| group_json(c, &id)["version"].clone())
            .await?;
        return Ok(json_response(200, &json!([v])));
    }
    let id = PathId::parse(rest);
    match *method {
        Method::GET => {
            let idc = id.clone();
            let v = ctx
                .core
                .call(move |c, _| c.group_exists(&idc).then(|| group_json(c, &idc)))
                .await?;
            v.map(|g| json_response(200, &g))
                .ok_or_else(|| ApiError::not_found(format!("Group '{id}' does not exist")))
        }
        Method::DELETE => {
            let d = ctx
                .core
                .call(move |c, now| {
                    if !c.group_exists(&id) {
                        return Err(ApiError::not_found(format!("Group '{id}' does not exist")));
                    }
                    let changes: BTreeMap<PathId, Option<AppDefinition>> = c
                        .apps()
                        .filter(|a| a.def.id.is_under(&id))
                        .map(|a| (a.def.id.clone(), None))
                        .collect();
                    let d = c.deploy(changes, BTreeSet::new(), force, now)?;
                    c.remove_groups_under(&id);
                    Ok(d)
                })
                .await??;
            Ok(deployment_response(200, &d))
        }
        Method::POST | Method::PUT | Method::PATCH => {
            // Unlike the app endpoints, an empty body is no group (`{}` is).
            let v = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                parse_body(body)?
            };
            let problems = group_problems(&v, "");
            if !problems.is_empty() {
                return Err(ApiError::invalid(problems));
            }
            let create = method == Method::POST;
            let dry_run = q.flag("dryRun", false);
            let gid = if create {
                let raw = v.get("id").and_then(Value::as_str).unwrap_or_default();
                PathId::parse_relative(raw, &id)
            } else {
                id.clone()
            };
            if let Some(factor) = v.get("scaleBy").and_then(Value::as_f64) {
                let d = ctx
                    .core
                    .call(move |c, now| {
                        if !c.group_exists(&gid) {
                            return Err(ApiError::not_found(format!(
                                "Group '{gid}' does not exist"
                            )));
                        }
                        let mut changes: BTreeMap<PathId, Option<AppDefinition>> =
                            BTreeMap::new();
                        for a in c.apps().filter(|a| a.def.id.is_under(&gid)) {
                            let scaled = (a.def.instances as f64 * factor).ceil();
                            if !(0.0..=MAX_INSTANCES as f64).contains(&scaled) {
                                return Err(ApiError::invalid(vec![Violation::new(
                                    "/scaleBy",
                                    format!(
                                        "scales {} to {scaled} instances, expected at most {MAX_INSTANCES}",
                                        a.def.id
                                    ),
                                )]));
                            }
                            let mut def = a.def.clone();
                            def.instances = scaled as i64;
                            def.version = None;
                            def.version_info = None;
                            changes.insert(a.def.id.clone(), Some(def));
                        }
                        c.deploy(changes, BTreeSet::new(), force, now)
                    })
                    .await??;
                return Ok(deployment_response(200, &d));
            }
            let mut apps = Vec::new();
            let mut groups = Vec::new();
            let mut problems = Vec::new();
            collect_group(&v, &gid, &mut apps, &mut groups, &mut problems);
            for a in &apps {
                problems.extend(
                    a.policy_violations(&ctx.info.container_policy)
                        .into_iter()
                        .map(|mut p| {
                            p.path = format!("{}{}", a.id, p.path);
                            p
                        }),
                );
            }
            if !problems.is_empty() {
                return Err(ApiError::invalid(problems));
            }
            let out = ctx
                .core
                .call(move |c, now| {
                    if create && c.group_exists(&gid) {
                        return Err(ApiError::new(
                            409,
                            format!(
                                "Group {gid} is already created. Use PUT to change this group."
                            ),
                        ));
                    }
                    let mut changes: BTreeMap<PathId, Option<AppDefinition>> = BTreeMap::new();
                    let listed: BTreeSet<PathId> = apps.iter().map(|d| d.id.clone()).collect();
                    for mut def in apps {
                        if let Some(a) = c.app(&def.id) {
                            for (slot, cur) in
                                def.service_ports_mut().into_iter().zip(a.def.port_specs())
                            {
                                if *slot == 0 {
                                    *slot = cur.service_port;
                                }
                            }
                            if a.def.config_key() == def.config_key()
                                && a.def.instances == def.instances
                            {
                                continue;
                            }
                        }
                        changes.insert(def.id.clone(), Some(def));
                    }
                    // An update replaces what the body names, as Marathon's GroupUpdate: a
                    // group's `apps` list (or its `groups` list, for the subgroups it drops)
                    // removes the apps left out; a body without them keeps them (`{}`
                    // changes nothing).
                    if !create {
                        for a in c.apps().filter(|a| a.def.id.is_under(&gid)) {
                            if !listed.contains(&a.def.id) && body_covers(&v, &gid, &a.def.id) {
                                changes.insert(a.def.id.clone(), None);
                            }
                        }
                    }
                    c.check_dependency_cycles(&changes, &groups)?;
                    if dry_run {
                        return Ok(Err(json!({"steps": []})));
                    }
                    for (g, deps) in groups {
                        c.set_group(&g, deps, now);
                    }
                    c.deploy(changes, BTreeSet::new(), force, now).map(Ok)
                })
                .await??;
            match out {
                Ok(d) => Ok(deployment_response(if create { 201 } else { 200 }, &d)),
                Err(steps) => Ok(json_response(200, &steps)),
            }
        }
        _ => Err(method_not_allowed(method, &format!("/v2/groups{rest}"))),
    }
}

// ------------------------------------------------------------------------------------ v1

/// HTTPie sends every value as a string: turn numeric strings of numeric fields into numbers.
fn coerce_v1(v: &mut Value) {
    let Some(o) = v.as_object_mut() else { return };
    for key in [
        "instances",
        "mem",
        "cpus",
        "disk",
        "gpus",
        "backoffSeconds",
        "backoffFactor",
    ] {
        if let Some(Value::String(s)) = o.get(key) {
            let s = s.trim().to_string();
            if let Ok(i) = s.parse::<i64>() {
                o.insert(key.into(), json!(i));
            } else if let Ok(f) = s.parse::<f64>() {
                o.insert(key.into(), json!(f));
            }
        }
    }
    if let Some(Value::Array(ports)) = o.get_mut("ports") {
        for p in ports.iter_mut() {
            if let Value::String(s) = p
                && let Ok(n) = s.trim().parse::<u32>()
            {
                *p = json!(n);
            }
        }
    }
}

/// The Docker executor of seed 001: its tasks are Docker containers whose image is the first
/// word of `cmd`.
const DOCKER_EXECUTOR: &str = "/var/lib/mesos/executors/docker";

async fn v1_start(ctx: &Ctx, body: &Bytes) -> Reply {
    let mut v = parse_body(body)?;
    coerce_v1(&mut v);
    if let Some(o) = v.as_object_mut()
        && o.get("executor").and_then(Value::as_str) == Some(DOCKER_EXECUTOR)
    {
        o.remove("executor");
        let cmd = o
            .get("cmd")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        let (image, rest) = cmd
            .split_once(char::is_whitespace)
            .map(|(a, b)| (a.to_string(), b.trim().to_string()))
            .unwrap_or((cmd, String::new()));
        if rest.is_empty() {
            o.remove("cmd");
        } else {
            o.insert("cmd".into(), json!(rest));
        }
        o.insert(
            "container".into(),
            json!({"type": "DOCKER", "docker": {"image": image}}),
        );
    }
    let def = parse_app(v, None, &PathId::root())?;
    check_policy(&def, &ctx.info.container_policy, "")?;
    ctx.core
        .call(move |c, now| create_app_in(c, def, false, now))
        .await??;
    let mut r = empty(204);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

async fn v1_stop(ctx: &Ctx, body: &Bytes) -> Reply {
    let v = parse_body(body)?;
    let id = PathId::parse(v["id"].as_str().unwrap_or_default());
    ctx.core
        .call(move |c, now| {
            if c.app(&id).is_none() {
                return Err(ApiError::not_found(format!("App '{id}' does not exist")));
            }
            c.deploy(BTreeMap::from([(id, None)]), BTreeSet::new(), true, now)
        })
        .await??;
    Ok(empty(204))
}

async fn v1_scale(ctx: &Ctx, body: &Bytes) -> Reply {
    let mut v = parse_body(body)?;
    coerce_v1(&mut v);
    let id = PathId::parse(v["id"].as_str().unwrap_or_default());
    let instances = v["instances"].as_i64().ok_or_else(|| {
        ApiError::invalid(vec![Violation::new(
            "/instances",
            "error.expected.jsnumber",
        )])
    })?;
    ctx.core
        .call(move |c, now| {
            let (def, _) = update_app_in(c, &id, &json!({ "instances": instances }), true, true)?;
            c.deploy(
                BTreeMap::from([(id, Some(def))]),
                BTreeSet::new(),
                true,
                now,
            )
        })
        .await??;
    Ok(empty(204))
}

/// `GET /v1/endpoints`: per app port `<appId> <servicePort> <host>:<port> … `, the 2013 text
/// form of seed 001 (`multidis 10445 host:31001 host:31000`). Later Marathons wrote
/// `<appId>_<servicePort>` as the first field; the seed's clients read the app id alone.
async fn v1_endpoints(ctx: &Ctx, headers: &HeaderMap) -> Reply {
    let json_only = accepts(headers, "application/json") && !accepts(headers, "text/plain");
    ctx.core
        .call(move |c, _| {
            if json_only {
                let v: Vec<Value> = c
                    .apps()
                    .map(|a| {
                        json!({
                            "id": a.def.id.safe_id(),
                            "ports": a.def.port_specs().iter().map(|s| s.service_port).collect::<Vec<_>>(),
                            "instances": c.tasks_of(&a.def.id).filter(|t| t.is_running()).map(|t| json!({"host": t.host, "id": t.id, "ports": t.ports})).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                return json_response(200, &json!(v));
            }
            let mut out = String::new();
            for a in c.apps() {
                let safe = a.def.id.safe_id();
                let running: Vec<_> = c.tasks_of(&a.def.id).filter(|t| t.is_running()).collect();
                for (i, s) in a.def.port_specs().iter().enumerate() {
                    out.push_str(&format!("{safe} {sp} ", sp = s.service_port));
                    for t in &running {
                        if let Some(p) = t.ports.get(i) {
                            out.push_str(&format!("{}:{p} ", t.host));
                        }
                    }
                    out.push('\n');
                }
            }
            text_response(200, out)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_update_removes_only_the_apps_its_body_speaks_for() {
        let g = PathId::parse("/g");
        let covers = |v: Value, app: &str| body_covers(&v, &g, &PathId::parse(app));
        assert!(!covers(json!({}), "/g/a"), "{{}} keeps every app");
        assert!(covers(json!({"apps": []}), "/g/a"));
        assert!(
            !covers(json!({"apps": []}), "/g/sub/a"),
            "subgroups untouched without groups"
        );
        assert!(
            covers(json!({"groups": []}), "/g/sub/a"),
            "a dropped subgroup goes"
        );
        assert!(!covers(json!({"groups": [{"id": "sub"}]}), "/g/sub/a"));
        assert!(covers(
            json!({"groups": [{"id": "sub", "apps": []}]}),
            "/g/sub/a"
        ));
        assert!(covers(
            json!({"groups": [{"id": "/g/sub", "apps": []}]}),
            "/g/sub/a"
        ));
        assert!(!covers(
            json!({"groups": [{"id": "sub", "groups": [{"id": "deep"}]}]}),
            "/g/sub/deep/a"
        ));
        assert!(covers(
            json!({"groups": [{"id": "sub", "groups": []}]}),
            "/g/sub/deep/a"
        ));
    }

    #[test]
    fn label_selectors_follow_marathon() {
        let labels = BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("tier".to_string(), "web".to_string()),
        ]);
        assert!(label_matches("env", &labels));
        assert!(label_matches("env==prod,tier", &labels));
        assert!(!label_matches("env!=prod", &labels));
        assert!(label_matches("env in (dev, prod)", &labels));
        assert!(!label_matches("env notin (dev,prod)", &labels));
        assert!(!label_matches("missing", &labels));
    }

    #[test]
    fn queries_decode_and_booleans_are_case_insensitive() {
        let q = Query::parse(Some(
            "force=True&embed=app.tasks&embed=app.counts&id=%2Fa%2Fb&scale=False",
        ));
        assert!(q.flag("force", false));
        assert!(!q.flag("scale", true));
        assert_eq!(q.all("embed"), ["app.tasks", "app.counts"]);
        assert_eq!(q.get("id"), Some("/a/b"));
        assert_eq!(normalize_path("/v2/apps//grp/app/"), "/v2/apps/grp/app");
    }
}
