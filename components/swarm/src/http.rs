//! The Docker Engine API over HTTP: one dispatcher routes every request through the pure
//! route table ([`crate::routes`]), checks the cluster token when required, adds the headers
//! every Docker response carries (`Api-Version`, `Ostype`, `Docker-Experimental`, `Server`),
//! and answers errors as `{"message": …}` with `Content-Type: application/json` exactly, the
//! only form the Go client parses.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::events::Event;
use crate::leader::Front;
use crate::logs::{self, LogQuery};
use crate::model::{self, Container, CreateBody, Status};
use crate::routes::{self, API_VERSION, MIN_API_VERSION, Route, Unrouted};
use crate::state::{LookupError, Swarm};
use crate::translate::{self, Defaults};
use crate::views::{self, Filters};

/// A Docker API error: a status and `{"message"}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "message": self.1 }))).into_response()
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> ApiError {
        let status = match e {
            LookupError::NotFound(_) => StatusCode::NOT_FOUND,
            LookupError::Ambiguous(_) => StatusCode::BAD_REQUEST,
            LookupError::NameInUse { .. } => StatusCode::CONFLICT,
        };
        ApiError(status, e.to_string())
    }
}

pub(crate) type Answer = Result<Response, ApiError>;

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

pub fn router(swarm: Arc<Swarm>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(swarm)
}

/// The router of a swarm that campaigns for leadership ([`crate::leader`]): the full API once
/// this instance leads, the standby's answers until then.
/// What a call needs in strict mode (the guard in front of the port decides; permissive mode
/// lets everything through to swarm's own token check): `/_ping`, `/version` and health
/// nothing, so `docker version` and health checks work before a login; everything else an
/// operator's role — reads included, since inspect and logs show containers' environments and
/// output — or a master's certificate.
pub fn access(method: &Method, path: &str) -> capstan_runtime::auth::Access {
    use capstan_runtime::auth::{Access, Role};
    match routes::route(method, path) {
        Ok(Route::Ping | Route::Version | Route::Health) => Access::Public,
        _ => Access::Role(Role::Operator),
    }
}

pub(crate) fn front_router(front: Arc<Front>) -> axum::Router {
    axum::Router::new()
        .fallback(front_dispatch)
        .with_state(front)
}

async fn front_dispatch(State(front): State<Arc<Front>>, req: Request) -> Response {
    match front.swarm.get() {
        Some(sw) => dispatch(State(sw.clone()), req).await,
        None => {
            let leader = front.leader.borrow().clone();
            let resp = match standby(&front, leader.as_deref(), &req) {
                Ok(r) => r,
                Err(e) => e.into_response(),
            };
            with_docker_headers(resp)
        }
    }
}

/// A standby answers health, `/_ping` and `/version` (so health checks and `docker version`
/// work on every master) and everything else 503 naming the leader, in Docker's error form.
/// It does not proxy: hijacked attach/exec streams would need a relay of their own. Its
/// health is 200 once another swarm leads (the API works there), 503 until then — also
/// while this one was elected but has not loaded its records yet.
fn standby(front: &Front, leader: Option<&str>, req: &Request) -> Answer {
    let route = routes::route(req.method(), req.uri().path());
    if route != Ok(Route::Health) {
        authorised_with(front.iam.as_ref(), req.headers())?;
    }
    match route {
        Ok(Route::Health) => {
            let served = leader.is_some_and(|l| l != front.me);
            let status = if served {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = json!({"healthy": served, "leader": false, "subscribed": false,
                "message": crate::leader::standby_message(leader)});
            Ok((status, axum::Json(body)).into_response())
        }
        Ok(Route::Ping) => Ok(ping(req.method() == Method::HEAD)),
        Ok(Route::Version) => Ok(axum::Json(version()).into_response()),
        Err(Unrouted::BadVersion(m)) => Err(ApiError(StatusCode::BAD_REQUEST, m)),
        _ => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::leader::standby_message(leader),
        )),
    }
}

async fn dispatch(State(sw): State<Arc<Swarm>>, req: Request) -> Response {
    let resp = match handle(&sw, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    with_docker_headers(resp)
}

fn with_docker_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("api-version", HeaderValue::from_static(API_VERSION));
    h.insert("ostype", HeaderValue::from_static("linux"));
    h.insert("docker-experimental", HeaderValue::from_static("false"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static(concat!(
            "Capstan-Swarm/",
            env!("CARGO_PKG_VERSION"),
            " (linux)"
        )),
    );
    resp
}

fn authorised(sw: &Swarm, headers: &HeaderMap) -> Result<(), ApiError> {
    authorised_with(sw.iam.as_ref(), headers)
}

fn authorised_with(iam: Option<&capstan_iam::Iam>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(iam) = iam else { return Ok(()) };
    let token = capstan_iam::token_from_headers(headers).ok_or_else(|| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "authentication required: send a cluster token as `Authorization: token=<token>` (docker: HttpHeaders in config.json)".into(),
        )
    })?;
    iam.verify(&token).map(|_| ()).map_err(|e| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            format!("invalid cluster token: {e}"),
        )
    })
}

async fn handle(sw: &Arc<Swarm>, req: Request) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let route = routes::route(&method, &path);
    if route != Ok(Route::Health) {
        authorised(sw, req.headers())?;
    }
    let route = match route {
        Ok(r) => r,
        Err(Unrouted::BadVersion(m)) => return Err(ApiError(StatusCode::BAD_REQUEST, m)),
        Err(Unrouted::NotSupported) => {
            let (_, bare) = routes::split_version(&path);
            return Err(ApiError(
                StatusCode::NOT_IMPLEMENTED,
                format!("{method} {bare} is not supported by capstan"),
            ));
        }
    };
    match route {
        Route::Health => Ok(axum::Json(
            json!({"healthy": true, "leader": true, "subscribed": sw.conn.borrow().is_some()}),
        )
        .into_response()),
        Route::Ping => Ok(ping(method == Method::HEAD)),
        Route::Version => Ok(axum::Json(version()).into_response()),
        Route::Info => info_view(sw).await,
        Route::ContainersList => list(sw, &query),
        Route::ContainerCreate => create(sw, &query, &read_body(req).await?).await,
        Route::ContainerInspect(r) => {
            let c = sw.find(&r)?;
            Ok(axum::Json(views::inspect(&c)).into_response())
        }
        Route::ContainerStart(r) => start(sw, &r).await,
        Route::ContainerStop(r) => stop(sw, &r, &query).await,
        Route::ContainerKill(r) => kill(sw, &r, &query).await,
        Route::ContainerRestart(r) => {
            let c = sw.find(&r)?;
            if c.active() {
                stop(sw, &c.id, &query).await?;
            }
            let r = start(sw, &c.id).await?;
            if let Some(c) = sw.get(&c.id) {
                sw.emit(Event::container(&c, "restart", &[]));
            }
            Ok(r)
        }
        Route::ContainerRename(r) => rename(sw, &r, &query).await,
        Route::NetworksList => crate::netapi::list(sw, &query),
        Route::NetworkInspect(r) => crate::netapi::inspect(sw, &r),
        Route::NetworkCreate => crate::netapi::create(sw, &read_body(req).await?).await,
        Route::NetworkRemove(r) => crate::netapi::remove(sw, &r).await,
        Route::NetworkConnect(r) => crate::netapi::connect(sw, &r, &read_body(req).await?).await,
        Route::NetworkDisconnect(r) => {
            crate::netapi::disconnect(sw, &r, &read_body(req).await?).await
        }
        Route::NetworksPrune => crate::netapi::prune(sw).await,
        Route::VolumesList => crate::volapi::list(sw, &query),
        Route::VolumeInspect(n) => crate::volapi::inspect(sw, &n),
        Route::VolumeCreate => crate::volapi::create(sw, &read_body(req).await?).await,
        Route::VolumeRemove(n) => crate::volapi::remove(sw, &n, &query).await,
        Route::VolumesPrune => crate::volapi::prune(sw, &query).await,
        Route::Events => crate::netapi::events(sw, &query),
        Route::Unsupported(why) => Err(ApiError(StatusCode::NOT_IMPLEMENTED, why.to_owned())),
        Route::ContainerWait(r) => wait(sw, &r, &query),
        Route::ContainerLogs(r) => container_logs(sw, &r, &query).await,
        Route::ContainerAttach(r) => attach(sw, &r, &query, req),
        Route::ContainerRemove(r) => remove(sw, &r, &query).await,
        Route::ContainerExec(r) => crate::exec::create(sw, &r, &read_body(req).await?).await,
        Route::ExecStart(id) => crate::exec::start(sw, &id, req).await,
        Route::ExecResize(id) => crate::exec::resize(sw, &id, &query).await,
        Route::ContainerResize(r) => {
            // A container's task has no TTY (attach is its logs): nothing to resize.
            sw.find(&r)?;
            Ok(StatusCode::OK.into_response())
        }
        Route::ExecInspect(id) => crate::exec::inspect(sw, &id).await,
        Route::ContainerTop(r) => crate::exec::top(sw, &r, &query).await,
        Route::ContainerPause(r) => crate::exec::pause(sw, &r, true).await,
        Route::ContainerUnpause(r) => crate::exec::pause(sw, &r, false).await,
        Route::ContainerStats(r) => crate::exec::stats(sw, &r, &query).await,
        Route::ImagesList => Ok(axum::Json(images(sw)).into_response()),
        Route::ImageInspect(name) => image_inspect(sw, &name),
        Route::ImageCreate => Ok(image_create(sw, &query)),
        Route::NoSuchObject(kind) => {
            let (_, bare) = routes::split_version(&path);
            let name = bare.split('/').nth(2).unwrap_or_default();
            Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("No such {kind}: {name} ({kind}s are not supported by capstan yet)"),
            ))
        }
    }
}

pub(crate) async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), 4 << 20)
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        })
}

fn ping(head: bool) -> Response {
    let mut r = if head {
        (StatusCode::OK, Body::empty()).into_response()
    } else {
        (StatusCode::OK, "OK").into_response()
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("builder-version", HeaderValue::from_static("1"));
    h.insert("swarm", HeaderValue::from_static("inactive"));
    r
}

fn version() -> Value {
    let v = concat!(env!("CARGO_PKG_VERSION"), "-capstan");
    json!({
        "Platform": {"Name": "Capstan Swarm"},
        "Components": [{"Name": "Engine", "Version": v, "Details": {
            "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": std::env::consts::ARCH,
        }}],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "none (Rust)",
        "Os": "linux",
        "Arch": std::env::consts::ARCH,
        "KernelVersion": "",
        "BuildTime": "",
    })
}

/// The leading master's `/master/state-summary`.
pub(crate) async fn state_summary(sw: &Swarm) -> Option<Value> {
    let url = sw
        .conn
        .borrow()
        .as_ref()
        .map(|c| c.calls.leader().url("/master/state-summary"))?;
    let resp = sw.http.get(url).send().await.ok()?;
    resp.json().await.ok()
}

fn scalar(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

async fn info_view(sw: &Swarm) -> Answer {
    let summary = state_summary(sw).await.unwrap_or(Value::Null);
    let agents: Vec<&Value> = summary["slaves"].as_array().into_iter().flatten().collect();
    let mut driver_status: Vec<(String, String)> =
        vec![("Agents".into(), agents.len().to_string())];
    let (mut ncpu, mut mem) = (0.0, 0.0);
    for a in &agents {
        let r = &a["resources"];
        ncpu += scalar(r, "cpus");
        mem += scalar(r, "mem");
        driver_status.push((
            format!(" {}", a["hostname"].as_str().unwrap_or_default()),
            a["id"].as_str().unwrap_or_default().to_owned(),
        ));
        let used = &a["used_resources"];
        for (k, unit) in [("cpus", ""), ("mem", " MiB"), ("disk", " MiB")] {
            driver_status.push((
                format!("  └ {k}"),
                format!("{} of {}{unit} used", scalar(used, k), scalar(r, k)),
            ));
        }
        if let Some(p) = r["ports"].as_str() {
            driver_status.push(("  └ ports".into(), p.to_owned()));
        }
    }
    let offers = sw.read(|s| s.offers.clone());
    let mut system_status: Vec<(String, String)> =
        vec![("Offers".into(), offers.len().to_string())];
    for o in &offers {
        system_status.push((
            format!("  Offer: {}", o.id()),
            o.offer["hostname"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let all = sw.list();
    let count = |st: Status| all.iter().filter(|c| c.status == st).count();
    let images: std::collections::BTreeSet<String> = all
        .iter()
        .map(|c| model::normalise_image(&c.spec.image))
        .collect();
    Ok(axum::Json(json!({
        "ID": summary["cluster"].as_str().unwrap_or("capstan"),
        "Name": sw.cfg.hostname,
        "ServerVersion": concat!(env!("CARGO_PKG_VERSION"), "-capstan"),
        "Containers": all.len(),
        "ContainersRunning": count(Status::Running),
        "ContainersPaused": 0,
        "ContainersStopped": all.len() - count(Status::Running),
        "Images": images.len(),
        "Driver": "capstan",
        "DriverStatus": driver_status.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        "SystemStatus": system_status.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        "Plugins": {"Volume": [], "Network": ["bridge", "host", "null"], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": true, "SwapLimit": false, "CpuCfsPeriod": true, "CpuCfsQuota": true,
        "CPUShares": true, "CPUSet": false, "PidsLimit": false, "IPv4Forwarding": true,
        "Debug": false, "NFd": 0, "NGoroutines": 0, "SystemTime": crate::time::now_rfc3339(),
        "LoggingDriver": "json-file", "CgroupDriver": "", "CgroupVersion": "",
        "NEventsListener": 0, "KernelVersion": "", "OperatingSystem": "Capstan cluster",
        "OSVersion": "", "OSType": "linux", "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "", "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": []},
        "NCPU": ncpu.floor() as i64, "MemTotal": (mem * 1024.0 * 1024.0) as i64,
        "GenericResources": null, "DockerRootDir": "", "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
        "Labels": [], "ExperimentalBuild": false,
        "Runtimes": {"runc": {"path": "runc"}}, "DefaultRuntime": "runc",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": false, "Isolation": "", "InitBinary": "",
        "SecurityOptions": [], "Warnings": null,
    }))
    .into_response())
}

pub(crate) fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True"))
}

fn list(sw: &Swarm, q: &HashMap<String, String>) -> Answer {
    let filters = Filters::parse(q.get("filters").map(String::as_str).unwrap_or_default())
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let all = flag(q, "all") || filters.has_status();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let mut cs: Vec<Container> = sw
        .list()
        .into_iter()
        .filter(|c| (all || c.running()) && filters.matches(c))
        .collect();
    // Newest first, as Docker lists them.
    cs.sort_by(|a, b| b.created.cmp(&a.created));
    if let Some(l) = limit {
        cs.truncate(l);
    }
    let now = crate::time::now_secs();
    let items: Vec<Value> = cs.iter().map(|c| views::list_item(c, now)).collect();
    Ok(axum::Json(items).into_response())
}

async fn create(sw: &Swarm, q: &HashMap<String, String>, body: &[u8]) -> Answer {
    let cfg: CreateBody = serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid create body: {e}")))?;
    let spec = translate::spec(
        &cfg,
        Defaults {
            cpus: sw.cfg.default_cpus,
            mem_mib: sw.cfg.default_mem_mib,
        },
    )
    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.0))?;
    translate::check_volumes(&spec, &sw.cfg.container_policy)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.0))?;
    let mut spec = spec;
    let users = sw.networks();
    let mut attached = BTreeMap::new();
    for (name, mut a) in std::mem::take(&mut spec.networks) {
        match crate::networks::resolve(&users, &name) {
            Ok(crate::networks::Net::User(n)) => {
                a.network_id = n.id.clone();
                attached.insert(n.name.clone(), a);
            }
            Ok(crate::networks::Net::Predefined(_)) => {}
            Err(e) => return Err(ApiError(StatusCode::NOT_FOUND, e)),
        }
    }
    spec.networks = attached;
    let id = model::new_id();
    let name = match q.get("name").map(|n| n.trim_start_matches('/')) {
        Some(n) if !n.is_empty() => {
            if !model::valid_name(n) {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    ),
                ));
            }
            n.to_owned()
        }
        _ => format!("swarm_{}", &id[..8]),
    };
    let (secs, nanos) = crate::time::now();
    let c = Container {
        version: model::RECORD_VERSION,
        id: id.clone(),
        name: name.clone(),
        created: crate::time::format_rfc3339(secs, nanos),
        created_unix: secs,
        config: cfg,
        spec,
        status: Status::Created,
        pending_start: false,
        task: None,
        runs: 0,
        exits: 0,
        exit_code: 0,
        error: String::new(),
        started_at: String::new(),
        finished_at: String::new(),
        restart_count: 0,
        running_run: 0,
        failed_run: 0,
        stop_requested: false,
        paused: false,
    };
    crate::volapi::ensure_mounted(sw, &c).await?;
    sw.insert(c)?;
    if let Err(e) = sw.persist(&id).await {
        sw.with(|s| s.containers.remove(&id));
        return Err(internal(format!("cannot store the container: {e}")));
    }
    info!(container = %id, name = %name, "Container created");
    if let Some(c) = sw.get(&id) {
        sw.emit(Event::container(&c, "create", &[]));
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"Id": id, "Warnings": []})),
    )
        .into_response())
}

async fn start(sw: &Swarm, reference: &str) -> Answer {
    let c = sw.find(reference)?;
    if c.running() {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    if let Some(why) = unplaceable(sw, &c).await {
        return Err(internal(format!(
            "cannot start container {}: {why}",
            c.short_id()
        )));
    }
    let before = c.runs;
    sw.modify(&c.id, |c| {
        c.pending_start = true;
        c.stop_requested = false;
        c.error.clear();
    });
    sw.persist(&c.id).await.map_err(internal)?;
    sw.kick.notify_one();
    let limit = Duration::from_secs(sw.cfg.start_timeout_secs);
    let done = sw
        .wait_for(&c.id, limit, |c| match c {
            None => true,
            Some(c) => c.runs > before && (c.running_run == c.runs || c.failed_run == c.runs),
        })
        .await;
    match done {
        Some(Some(now)) if now.running_run == now.runs => {
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Some(Some(now)) => Err(internal(format!(
            "cannot start container {}: {}",
            now.short_id(),
            now.error
        ))),
        Some(None) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("No such container: {reference}"),
        )),
        None => {
            let why = sw
                .modify(&c.id, |c| {
                    c.pending_start = false;
                    c.error.clone()
                })
                .unwrap_or_default();
            let _ = sw.persist(&c.id).await;
            Err(internal(format!(
                "container {} did not start within {}s: {}",
                c.short_id(),
                limit.as_secs(),
                if why.is_empty() {
                    "no offer came".into()
                } else {
                    why
                }
            )))
        }
    }
}

/// Why no agent of the cluster can ever take container `c` (its hard constraints hold on
/// none), if the master's agent list says so; `None` when some agent may, or it is unknown.
async fn unplaceable(sw: &Swarm, c: &Container) -> Option<String> {
    if c.spec.constraints.iter().all(|k| k.soft) {
        return None;
    }
    let summary = state_summary(sw).await?;
    let agents = summary["slaves"].as_array().filter(|a| !a.is_empty())?;
    let mut why = None;
    for a in agents {
        let attributes: Vec<Value> = a["attributes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| match v {
                Value::Number(n) => json!({"name": k, "type": "SCALAR", "scalar": {"value": n}}),
                other => json!({"name": k, "type": "TEXT", "text": {"value": other.as_str().map(str::to_owned).unwrap_or_else(|| other.to_string())}}),
            })
            .collect();
        let as_offer = json!({"hostname": a["hostname"], "agent_id": {"value": a["id"]}, "attributes": attributes});
        match crate::constraints::hard_hold(&c.spec.constraints, &as_offer) {
            Ok(()) => return None,
            Err(e) => why = Some(e),
        }
    }
    Some(match why {
        Some(w) => format!("no agent meets its constraints ({w})"),
        None => "no agent meets its constraints".into(),
    })
}

/// Kills the container's task and waits until it ended.
async fn end_task(sw: &Swarm, c: &Container, grace: Option<u64>) -> Result<(), ApiError> {
    // Its restart policy must not bring it back.
    sw.modify(&c.id, |c| c.stop_requested = true);
    if c.pending_start
        && c.task
            .as_ref()
            .is_none_or(|t| capstan_types::TaskState::is_terminal_name(&t.state))
    {
        sw.modify(&c.id, |c| c.pending_start = false);
        sw.persist(&c.id).await.map_err(internal)?;
        return Ok(());
    }
    sw.kill_task(c, grace).await.map_err(internal)?;
    let task = c
        .task
        .as_ref()
        .map(|t| t.task_id.clone())
        .unwrap_or_default();
    let limit = Duration::from_secs(grace.unwrap_or(10) + 30);
    let ended = sw
        .wait_for(&c.id, limit, |now| {
            now.is_none_or(|n| {
                n.task.as_ref().is_none_or(|t| {
                    t.task_id != task || capstan_types::TaskState::is_terminal_name(&t.state)
                })
            })
        })
        .await;
    match ended {
        Some(_) => Ok(()),
        None => Err(internal(format!(
            "container {} did not stop within {}s",
            c.short_id(),
            limit.as_secs()
        ))),
    }
}

async fn stop(sw: &Swarm, reference: &str, q: &HashMap<String, String>) -> Answer {
    let c = sw.find(reference)?;
    if c.status == Status::Restarting && !c.pending_start {
        // Waiting to be restarted by its policy: it stays exited.
        sw.modify(&c.id, |c| {
            c.stop_requested = true;
            c.status = Status::Exited;
        });
        sw.persist(&c.id).await.map_err(internal)?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if !c.active()
        && c.task
            .as_ref()
            .is_none_or(|t| capstan_types::TaskState::is_terminal_name(&t.state))
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let grace = q
        .get("t")
        .and_then(|t| t.parse::<i64>().ok())
        .map(|t| t.max(0) as u64);
    end_task(sw, &c, grace.or(Some(10))).await?;
    sw.emit(Event::container(&c, "stop", &[]));
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn kill(sw: &Swarm, reference: &str, q: &HashMap<String, String>) -> Answer {
    let c = sw.find(reference)?;
    if !c.running() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("Container {} is not running", c.id),
        ));
    }
    let signal = q.get("signal").map(String::as_str).unwrap_or("SIGKILL");
    let sig = signal.trim_start_matches("SIG");
    if !matches!(sig, "KILL" | "9" | "TERM" | "15" | "INT" | "2") {
        return Err(ApiError(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "signal {signal} is not supported by capstan: Mesos kills tasks (SIGTERM, then SIGKILL after the grace period)"
            ),
        ));
    }
    let grace = if matches!(sig, "KILL" | "9") {
        Some(0)
    } else {
        None
    };
    sw.emit(Event::container(&c, "kill", &[("signal", sig.to_owned())]));
    end_task(sw, &c, grace).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/{id}/rename?name=`: the name is cluster-wide unique.
async fn rename(sw: &Swarm, reference: &str, q: &HashMap<String, String>) -> Answer {
    let c = sw.find(reference)?;
    let name = q
        .get("name")
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default();
    if !model::valid_name(&name) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ));
    }
    let taken = sw.with(|s| {
        if let Some(other) = s
            .containers
            .values()
            .find(|o| o.name == name && o.id != c.id)
        {
            return Some(other.id.clone());
        }
        if let Some(me) = s.containers.get_mut(&c.id) {
            me.name = name.clone();
        }
        None
    });
    if let Some(id) = taken {
        return Err(LookupError::NameInUse { name, id }.into());
    }
    sw.persist(&c.id).await.map_err(internal)?;
    if let Some(now) = sw.get(&c.id) {
        sw.emit(Event::container(
            &now,
            "rename",
            &[("oldName", format!("/{}", c.name))],
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove(sw: &Swarm, reference: &str, q: &HashMap<String, String>) -> Answer {
    let c = sw.find(reference)?;
    let live = c.active()
        || c.task
            .as_ref()
            .is_some_and(|t| !capstan_types::TaskState::is_terminal_name(&t.state));
    if live {
        if !flag(q, "force") {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    c.id
                ),
            ));
        }
        if let Err(e) = end_task(sw, &c, Some(0)).await {
            warn!(container = %c.id, error = %e.1, "Removing a container whose task did not confirm its end");
        }
    }
    sw.with(|s| s.containers.remove(&c.id));
    sw.persist(&c.id).await.map_err(internal)?;
    info!(container = %c.id, name = %c.name, "Container removed");
    sw.emit(Event::container(&c, "destroy", &[]));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/{id}/wait`: the headers go out at once (the CLI waits for them before it
/// sends `start`), the body once the condition holds.
fn wait(sw: &Arc<Swarm>, reference: &str, q: &HashMap<String, String>) -> Answer {
    let c = sw.find(reference)?;
    // The 20.10 CLI sends `condition=` for the default.
    let condition = q
        .get("condition")
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .unwrap_or("not-running");
    if !matches!(condition, "not-running" | "next-exit" | "removed") {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid condition: \"{condition}\""),
        ));
    }
    let condition = condition.to_owned();
    let sw = sw.clone();
    let body = futures::stream::once(async move {
        let before = c.exits;
        let mut last = c.clone();
        let mut rx = sw.changes();
        loop {
            rx.borrow_and_update();
            let now = sw.get(&c.id);
            if let Some(n) = &now {
                last = n.clone();
            }
            let done = match (condition.as_str(), &now) {
                (_, None) => true,
                ("removed", Some(_)) => false,
                ("next-exit", Some(n)) => n.exits > before,
                (_, Some(n)) => {
                    !n.active()
                        && n.task
                            .as_ref()
                            .is_none_or(|t| capstan_types::TaskState::is_terminal_name(&t.state))
                }
            };
            if done || rx.changed().await.is_err() {
                break;
            }
        }
        let error = if last.error.is_empty() {
            Value::Null
        } else {
            json!({"Message": last.error})
        };
        let body = json!({"StatusCode": last.exit_code, "Error": error}).to_string() + "\n";
        Ok::<Bytes, Infallible>(Bytes::from(body))
    });
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// Learns (once) where the container's task logs live: the agent's address and the sandbox.
async fn log_source(sw: &Swarm, c: &Container) -> Option<(String, String)> {
    let t = c.task.as_ref()?;
    if let (Some(a), Some(s)) = (&t.agent_http, &t.sandbox) {
        return Some((a.clone(), s.clone()));
    }
    let agent = match &t.agent_http {
        Some(a) => a.clone(),
        None => {
            let summary = state_summary(sw).await?;
            let slave = summary["slaves"]
                .as_array()?
                .iter()
                .find(|s| s["id"] == t.agent_id.as_str())?;
            logs::agent_address(slave["pid"].as_str()?)?.to_owned()
        }
    };
    let state: Value = sw
        .http
        .get(format!("{}://{agent}/state", sw.cfg.agent_scheme()))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let sandbox = logs::sandbox_of(&state, &t.task_id)?;
    let task_id = t.task_id.clone();
    sw.modify(&c.id, |c| {
        if let Some(t) = c.task.as_mut().filter(|t| t.task_id == task_id) {
            t.agent_http = Some(agent.clone());
            t.sandbox = Some(sandbox.clone());
        }
    });
    let _ = sw.persist(&c.id).await;
    Some((agent, sandbox))
}

/// Reads `<sandbox>/<file>` from `offset` on; the data and the next offset.
async fn read_file(sw: &Swarm, agent: &str, path: &str, offset: u64) -> Option<(String, u64)> {
    let v: Value = sw
        .http
        .get(format!(
            "{}://{agent}/files/read?path={}&offset={offset}&length=-1",
            sw.cfg.agent_scheme(),
            encode(path)
        ))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let data = v["data"].as_str()?.to_owned();
    let start = v["offset"].as_u64().unwrap_or(offset);
    let next = start + data.len() as u64;
    Some((data, next))
}

/// Percent-encodes a query value.
pub(crate) fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct LogCursor {
    sw: Arc<Swarm>,
    id: String,
    agent: String,
    sandbox: String,
    q: LogQuery,
    tty: bool,
    offsets: [u64; 2],
    first: bool,
    done: bool,
}

impl LogCursor {
    /// The next chunk of output, `None` at the end.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            // Whether it still ran before this read: if not, the read gets all there is.
            let running = self.sw.get(&self.id).is_some_and(|c| c.running());
            let mut out = Vec::new();
            let mut any = false;
            for (i, (file, stream, on)) in [
                ("stdout", 1u8, self.q.stdout),
                ("stderr", 2u8, self.q.stderr),
            ]
            .into_iter()
            .enumerate()
            {
                if !on {
                    continue;
                }
                let path = format!("{}/{file}", self.sandbox);
                let Some((data, next)) =
                    read_file(&self.sw, &self.agent, &path, self.offsets[i]).await
                else {
                    continue;
                };
                self.offsets[i] = next;
                let mut text: &str = &data;
                if self.first {
                    text = logs::tail(text, self.q.tail);
                }
                if text.is_empty() {
                    continue;
                }
                any = true;
                let text = if self.q.timestamps {
                    logs::stamp_lines(text, &crate::time::now_rfc3339())
                } else {
                    text.to_owned()
                };
                if self.tty {
                    out.extend_from_slice(text.as_bytes());
                } else {
                    out.extend_from_slice(&logs::frame(stream, text.as_bytes()));
                }
            }
            self.first = false;
            if any {
                return Some(Bytes::from(out));
            }
            if !self.q.follow || !running {
                // The read above began after the end: nothing more will come.
                self.done = true;
                return None;
            }
            // Following: the agent's files are polled (it has no change stream).
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn container_logs(sw: &Arc<Swarm>, reference: &str, q: &HashMap<String, String>) -> Answer {
    let c = sw.find(reference)?;
    let lq = LogQuery::parse(q).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let content_type = if c.spec.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let source = log_source(sw, &c).await;
    let body = match source {
        None => Body::empty(),
        Some((agent, sandbox)) => {
            let cursor = LogCursor {
                sw: sw.clone(),
                id: c.id.clone(),
                agent,
                sandbox,
                q: lq,
                tty: c.spec.tty,
                offsets: [0, 0],
                first: true,
                done: false,
            };
            Body::from_stream(futures::stream::unfold(cursor, |mut cur| async move {
                cur.next().await.map(|b| (Ok::<Bytes, Infallible>(b), cur))
            }))
        }
    };
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

/// `POST /containers/{id}/attach`: the container's output from its next run (the CLI attaches
/// before `start`, so nothing is lost) until it ends — over the hijacked connection (`101`,
/// `Upgrade: tcp`) when the client asks for one, else as a streamed `200` body. A running
/// container's output is followed from its start. With `stdin=1` on the hijacked connection
/// and a container created with `OpenStdin`, the client's bytes become the stdin of that run
/// ([`crate::exec::feed_stdin`]).
fn attach(sw: &Arc<Swarm>, reference: &str, q: &HashMap<String, String>, req: Request) -> Answer {
    let c = sw.find(reference)?;
    if !flag(q, "stream") {
        return Err(ApiError(
            StatusCode::NOT_IMPLEMENTED,
            "attach without stream=1 is not supported by capstan; use logs".into(),
        ));
    }
    let lq = LogQuery {
        stdout: flag(q, "stdout"),
        stderr: flag(q, "stderr"),
        follow: true,
        timestamps: false,
        tail: None,
    };
    let content_type = if c.spec.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    // The run to follow: the current one if it is running, else the next.
    let after = if c.running() {
        c.runs.saturating_sub(1)
    } else {
        c.runs
    };
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    let output = attach_output(sw.clone(), c.id.clone(), after, lq, c.spec.tty);
    if !upgrade {
        let mut r = Response::new(Body::from_stream(output));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        return Ok(r);
    }
    let on_upgrade = hyper::upgrade::on(req);
    let id = c.id.clone();
    // Input reaches the container only if it was created with an open stdin (`-i`).
    let stdin = flag(q, "stdin") && c.spec.open_stdin;
    let sw = sw.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                warn!(container = %id, error = %e, "Attach upgrade failed");
                return;
            }
        };
        let (input, mut io) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let feeder =
            stdin.then(|| tokio::spawn(crate::exec::feed_stdin(sw, id.clone(), after, input)));
        let mut output = std::pin::pin!(output);
        while let Some(Ok(chunk)) = output.next().await {
            if io.write_all(&chunk).await.is_err() || io.flush().await.is_err() {
                break;
            }
        }
        let _ = io.shutdown().await;
        if let Some(f) = feeder {
            f.abort();
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    Ok(r)
}

/// Container `id` once its first run after run `after` is running; `None` when that run
/// failed to start or the container is gone.
pub(crate) async fn wait_run(sw: &Swarm, id: &str, after: u64) -> Option<Container> {
    let ran = sw
        .wait_for(id, Duration::from_secs(365 * 86400), |c| {
            c.is_none_or(|c| c.runs > after && (c.running_run == c.runs || c.failed_run == c.runs))
        })
        .await
        .flatten()?;
    (ran.running_run == ran.runs).then_some(ran)
}

/// The output of container `id`'s first run after run `after`, until it ends.
fn attach_output(
    sw: Arc<Swarm>,
    id: String,
    after: u64,
    q: LogQuery,
    tty: bool,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    use futures::StreamExt;
    let start = async move {
        let ran = wait_run(&sw, &id, after).await?;
        let (agent, sandbox) = log_source(&sw, &ran).await?;
        Some(LogCursor {
            sw: sw.clone(),
            id: id.clone(),
            agent,
            sandbox,
            q,
            tty,
            offsets: [0, 0],
            first: true,
            done: false,
        })
    };
    futures::stream::once(start).flat_map(|cursor| {
        futures::stream::unfold(cursor, |cur| async move {
            let mut cur = cur?;
            let chunk = cur.next().await?;
            Some((Ok::<Bytes, Infallible>(chunk), Some(cur)))
        })
    })
}

/// The images swarm knows: those of its containers and those clients "pulled" (synthetic
/// ids; the agents' engines are not asked).
fn known_images(sw: &Swarm) -> BTreeMap<String, usize> {
    let mut by: BTreeMap<String, usize> =
        sw.read(|s| s.pulled.iter().map(|i| (i.clone(), 0)).collect());
    for c in sw.list() {
        *by.entry(model::normalise_image(&c.spec.image)).or_default() += 1;
    }
    by
}

fn images(sw: &Swarm) -> Vec<Value> {
    known_images(sw)
        .into_iter()
        .map(|(img, n)| {
            json!({"Id": model::image_id(&img), "ParentId": "", "RepoTags": [img], "RepoDigests": [],
                   "Created": 0, "Size": 0, "SharedSize": -1, "VirtualSize": 0, "Labels": {}, "Containers": n})
        })
        .collect()
}

/// `GET /images/{name}/json` by name, `sha256:<id>`, bare id or id prefix.
fn image_inspect(sw: &Swarm, name: &str) -> Answer {
    let want = model::normalise_image(name);
    let bare = name.strip_prefix("sha256:").unwrap_or(name);
    let found = known_images(sw).into_keys().find(|img| {
        *img == want || {
            let id = model::image_id(img);
            let hex = &id[7..];
            bare.len() >= 12 && bare.chars().all(|c| c.is_ascii_hexdigit()) && hex.starts_with(bare)
        }
    });
    let Some(img) = found else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("No such image: {name}"),
        ));
    };
    let config = json!({"Env": null, "Cmd": null, "Entrypoint": null, "Labels": null, "ExposedPorts": null, "Volumes": null});
    Ok(axum::Json(json!({
        "Id": model::image_id(&img), "RepoTags": [img], "RepoDigests": [], "Parent": "", "Comment": "",
        "Created": crate::time::format_rfc3339(0, 0), "Os": "linux", "Architecture": std::env::consts::ARCH,
        "Size": 0, "Config": config, "ContainerConfig": config,
        "RootFS": {"Type": "layers", "Layers": []}, "Metadata": {"LastTagTime": crate::time::format_rfc3339(0, 0)},
    }))
    .into_response())
}

/// `POST /images/create`: nothing is pulled (agents' engines hold the images; swarm never
/// reaches a registry), so it answers one progress line.
fn image_create(sw: &Swarm, q: &HashMap<String, String>) -> Response {
    let image = q.get("fromImage").cloned().unwrap_or_default();
    let tag = q
        .get("tag")
        .cloned()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "latest".into());
    if !image.is_empty() {
        let reference =
            if image.contains('@') || image.rsplit('/').next().is_some_and(|l| l.contains(':')) {
                image.clone()
            } else {
                format!("{image}:{tag}")
            };
        sw.with(|s| s.pulled.insert(model::normalise_image(&reference)));
    }
    let line = json!({"status": format!("capstan: {image}:{tag} is used from the agents' engines; nothing was pulled")}).to_string() + "\n";
    let mut r = Response::new(Body::from(line));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod access_tests {
    use super::*;
    use capstan_runtime::auth::{Access, Role};

    #[test]
    fn ping_version_and_health_are_open_the_rest_needs_an_operator() {
        for (m, p) in [
            (Method::GET, "/_ping"),
            (Method::HEAD, "/_ping"),
            (Method::GET, "/v1.44/_ping"),
            (Method::GET, "/version"),
            (Method::GET, "/v1.51/version"),
            (Method::GET, "/_capstan/health"),
        ] {
            assert_eq!(access(&m, p), Access::Public, "{m} {p}");
        }
        for (m, p) in [
            (Method::GET, "/containers/json"),
            (Method::GET, "/v1.44/info"),
            (Method::POST, "/v1.44/containers/create"),
            (Method::POST, "/containers/abc/start"),
            (Method::GET, "/containers/abc/logs"),
            (Method::POST, "/exec/abc/start"),
            (Method::POST, "/_ping"),
            (Method::GET, "/v0.1/_ping"),
            (Method::GET, "/nope"),
        ] {
            assert_eq!(access(&m, p), Access::Role(Role::Operator), "{m} {p}");
        }
    }
}
