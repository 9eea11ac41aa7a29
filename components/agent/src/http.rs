//! The agent's HTTP API: `/state` (Mesos agent format), `/health`, `/metrics/snapshot`,
//! `/containers`, and the sandbox file endpoints `/files/read`, `/files/browse`,
//! `/files/download`.
//!
//! Who may call what ([`access`], the policy of the guard in front in strict mode): health and
//! version are public; reads (`GET`) need a viewer (or any node certificate of the cluster);
//! everything else — exec, attach, whatever changes a task — a master node's certificate or
//! an administrator. The executor API is public: executors run on this node and bring no
//! credential (as Mesos without `--authenticate_http_executors`); its calls name a framework
//! and executor the agent launched, and nothing else is accepted.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use capstan_proto::ContentType;
use capstan_proto::mesos::v1::{Attribute, TaskState};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::manager::executor::ExecutorMessage;
use crate::manager::{TaskManagerHandle, TaskView, is_terminal};
use crate::resources::{AgentResources, TaskResources, attribute_json, flatten, ports_to_ranges};

/// What the handlers read.
pub struct HttpState {
    pub tasks: TaskManagerHandle,
    pub resources: AgentResources,
    pub attributes: Vec<Attribute>,
    pub hostname: String,
    pub advertise: std::net::SocketAddr,
    pub work_dir: PathBuf,
    pub docker_up: watch::Receiver<bool>,
    pub master_connected: watch::Receiver<bool>,
    pub started: Instant,
    pub start_time: f64,
    pub flags: BTreeMap<String, String>,
    /// The engine, for exec, top and stats on task containers ([`crate::task_docker`]).
    pub docker: Option<bollard::Docker>,
    /// The container policy's `allow_privileged` (a privileged exec needs it).
    pub allow_privileged: bool,
}

type Shared = Arc<HttpState>;

/// An executor's live tasks, completed tasks, and one of its tasks for the shared fields.
type ExecutorGroup<'a> = (Vec<Value>, Vec<Value>, &'a TaskView);

/// What a call to the agent's API needs (see the module's documentation).
pub fn access(method: &Method, path: &str) -> capstan_runtime::auth::Access {
    use capstan_runtime::auth::{Access, Role};
    match path {
        "/health" | "/version" => Access::Public,
        "/api/v1/executor" => Access::Public,
        _ if capstan_runtime::auth::is_read(method.as_str()) => Access::Role(Role::Viewer),
        _ => Access::Role(Role::Admin),
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/state", get(agent_state))
        .route("/state.json", get(agent_state))
        .route("/slave(1)/state", get(agent_state))
        .route("/slave(1)/state.json", get(agent_state))
        .route("/metrics/snapshot", get(metrics))
        .route("/containers", get(containers))
        .route("/files/read", get(files_read))
        .route("/files/read.json", get(files_read))
        .route("/files/browse", get(files_browse))
        .route("/files/browse.json", get(files_browse))
        .route("/files/download", get(files_download))
        .route("/api/v1/executor", post(executor_api))
        .merge(crate::task_docker::routes())
        .fallback(not_found)
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "No such endpoint")
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

/// Mesos executor API v1: SUBSCRIBE answers a RecordIO event stream; UPDATE, MESSAGE and
/// HEARTBEAT answer 202. Errors are plain text with Mesos' status codes.
async fn executor_api(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    use capstan_proto::mesos::v1::executor::{Call, call};
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "Expecting 'Content-Type' to be present",
        );
    };
    let Some(content_type) = ContentType::from_header(content_type.to_str().unwrap_or_default())
    else {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expecting 'Content-Type' of application/json or application/x-protobuf",
        );
    };
    let call: Call = match content_type.decode(&body) {
        Ok(c) => c,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse body into Call: {e}"),
            );
        }
    };
    let (fid, eid) = (
        call.framework_id.value.as_str(),
        call.executor_id.value.as_str(),
    );
    match call.r#type() {
        call::Type::Subscribe => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("*/*");
            let encoding = if accept.contains("application/json") || accept.contains("*/*") {
                ContentType::Json
            } else if accept.contains("application/x-protobuf") {
                ContentType::Protobuf
            } else {
                return plain(
                    StatusCode::NOT_ACCEPTABLE,
                    "Expecting 'Accept' to allow application/json or application/x-protobuf",
                );
            };
            let subscribe = call.subscribe.clone().unwrap_or_default();
            match s.tasks.executor_subscribe_with(fid, eid, subscribe).await {
                Ok(mut rx) => {
                    let stream = futures::stream::poll_fn(move |cx| {
                        rx.poll_recv(cx).map(|ev| {
                            ev.map(|ev| {
                                Ok::<_, std::io::Error>(Bytes::from(
                                    capstan_proto::recordio::encode_to_vec(&encoding.encode(&ev)),
                                ))
                            })
                        })
                    });
                    (
                        [(header::CONTENT_TYPE, encoding.as_str())],
                        Body::from_stream(stream),
                    )
                        .into_response()
                }
                Err(e) => plain(status_of(e.http_status()), e.to_string()),
            }
        }
        call::Type::Update => {
            let Some(update) = call.update else {
                return plain(StatusCode::BAD_REQUEST, "Expecting 'update' to be present");
            };
            match s.tasks.executor_update(fid, eid, update.status).await {
                Ok(()) => StatusCode::ACCEPTED.into_response(),
                Err(e) => plain(status_of(e.http_status()), e.to_string()),
            }
        }
        call::Type::Message => {
            let Some(message) = call.message else {
                return plain(StatusCode::BAD_REQUEST, "Expecting 'message' to be present");
            };
            s.tasks.executor_message(ExecutorMessage {
                framework_id: fid.to_owned(),
                executor_id: eid.to_owned(),
                data: message.data,
            });
            StatusCode::ACCEPTED.into_response()
        }
        call::Type::Heartbeat => StatusCode::ACCEPTED.into_response(),
        call::Type::Unknown => plain(StatusCode::BAD_REQUEST, "Expecting 'type' to be present"),
    }
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

async fn health(State(s): State<Shared>) -> Response {
    if !*s.docker_up.borrow() {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "docker_unavailable",
            "The Docker engine is not reachable",
        )
    } else if s.tasks.snapshot().checkpoint_failing {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "checkpoint_failing",
            "The agent cannot write its checkpoint; status updates are held",
        )
    } else {
        StatusCode::OK.into_response()
    }
}

fn pid(s: &HttpState) -> String {
    format!("slave(1)@{}", s.advertise)
}

fn task_json(t: &TaskView, agent_id: &str) -> Value {
    let res = TaskResources::from_proto(&t.info.resources);
    let statuses: Vec<Value> = t
        .statuses
        .iter()
        .map(|st| {
            let mut v = json!({
                "state": TaskState::try_from(st.state).map(|s| s.as_str_name()).unwrap_or("TASK_UNKNOWN"),
                "timestamp": st.timestamp.unwrap_or(0.0),
            });
            if let Some(cs) = &st.container_status {
                v["container_status"] = capstan_proto::to_json(cs);
            }
            if let Some(h) = st.healthy {
                v["healthy"] = json!(h);
            }
            v
        })
        .collect();
    let mut v = json!({
        "id": t.info.task_id.value,
        "name": t.info.name,
        "framework_id": t.framework_id,
        // Mesos reports "" for command tasks, the executor id for custom executors.
        "executor_id": if t.custom_executor { t.executor_id.as_str() } else { "" },
        "slave_id": agent_id,
        "state": t.state.as_str_name(),
        "resources": flatten(res.cpus, res.mem, res.disk, &ports_to_ranges(&res.ports)),
        "statuses": statuses,
    });
    if let Some(labels) = &t.info.labels {
        v["labels"] = capstan_proto::to_json(labels)["labels"].clone();
    }
    if let Some(d) = &t.info.discovery {
        v["discovery"] = capstan_proto::to_json(d);
    }
    if let Some(c) = &t.info.container {
        v["container"] = capstan_proto::to_json(c);
    }
    if let Some(hc) = &t.info.health_check {
        v["health_check"] = capstan_proto::to_json(hc);
    }
    v
}

async fn agent_state(State(s): State<Shared>) -> Response {
    let snap = s.tasks.snapshot();
    let agent_id = snap.agent_id.as_str();
    // framework -> executor -> (tasks, completed)
    let mut frameworks: BTreeMap<&str, BTreeMap<&str, ExecutorGroup<'_>>> = BTreeMap::new();
    for t in snap.tasks.values().chain(snap.completed.iter()) {
        let e = frameworks
            .entry(t.framework_id.as_str())
            .or_default()
            .entry(t.executor_id.as_str())
            .or_insert_with(|| (Vec::new(), Vec::new(), t));
        if is_terminal(t.state) {
            e.1.push(task_json(t, agent_id));
        } else {
            e.0.push(task_json(t, agent_id));
        }
    }
    let frameworks: Vec<Value> = frameworks
        .into_iter()
        .map(|(fid, execs)| {
            let (mut executors, mut completed_executors) = (Vec::new(), Vec::new());
            for (eid, (tasks, completed, t)) in execs {
                let res = TaskResources::from_proto(&t.info.resources);
                let exec = json!({
                    "id": eid,
                    "name": format!("Command Executor (Task: {eid})"),
                    "source": eid,
                    "container": t.container.container_id,
                    "directory": t.container.sandbox.display().to_string(),
                    "resources": flatten(res.cpus, res.mem, res.disk, &ports_to_ranges(&res.ports)),
                    "tasks": tasks,
                    "queued_tasks": [],
                    "completed_tasks": completed,
                });
                if exec["tasks"].as_array().is_some_and(Vec::is_empty) {
                    completed_executors.push(exec);
                } else {
                    executors.push(exec);
                }
            }
            json!({"id": fid, "executors": executors, "completed_executors": completed_executors})
        })
        .collect();
    let attributes: serde_json::Map<String, Value> = s
        .attributes
        .iter()
        .map(|a| (a.name.clone(), attribute_json(a)))
        .collect();
    let r = &s.resources;
    let body = json!({
        "version": capstan_types::MESOS_VERSION,
        "id": agent_id,
        "pid": pid(&s),
        "hostname": s.hostname,
        "port": s.advertise.port(),
        "start_time": s.start_time,
        "resources": flatten(r.cpus, r.mem, r.disk, &r.ports),
        "reserved_resources": {},
        "unreserved_resources": flatten(r.cpus, r.mem, r.disk, &r.ports),
        "attributes": attributes,
        "flags": s.flags,
        "capabilities": ["MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT"],
        "frameworks": frameworks,
        "completed_frameworks": [],
    });
    axum::Json(body).into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    let snap = s.tasks.snapshot();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut cpus, mut mem, mut disk) = (0.0, 0.0, 0.0);
    for t in snap.tasks.values().chain(snap.completed.iter()) {
        let key = match t.state {
            TaskState::TaskStaging => "slave/tasks_staging",
            TaskState::TaskStarting => "slave/tasks_starting",
            TaskState::TaskRunning => "slave/tasks_running",
            TaskState::TaskKilling => "slave/tasks_killing",
            TaskState::TaskFinished => "slave/tasks_finished",
            TaskState::TaskFailed => "slave/tasks_failed",
            TaskState::TaskKilled => "slave/tasks_killed",
            TaskState::TaskLost => "slave/tasks_lost",
            _ => "slave/tasks_other",
        };
        *counts.entry(key).or_default() += 1;
        if !is_terminal(t.state) {
            let r = TaskResources::from_proto(&t.info.resources);
            cpus += r.cpus;
            mem += r.mem;
            disk += r.disk;
        }
    }
    let r = &s.resources;
    let mut m = json!({
        "slave/uptime_secs": s.started.elapsed().as_secs_f64(),
        "slave/registered": if *s.master_connected.borrow() { 1 } else { 0 },
        "slave/cpus_total": r.cpus, "slave/cpus_used": cpus,
        "slave/mem_total": r.mem, "slave/mem_used": mem,
        "slave/disk_total": r.disk, "slave/disk_used": disk,
        "slave/tasks_staging": 0, "slave/tasks_starting": 0, "slave/tasks_running": 0,
        "slave/tasks_killing": 0, "slave/tasks_finished": 0, "slave/tasks_failed": 0,
        "slave/tasks_killed": 0, "slave/tasks_lost": 0,
        "containerizer/docker/up": if *s.docker_up.borrow() { 1 } else { 0 },
        "capstan/checkpoint/failing": if snap.checkpoint_failing { 1 } else { 0 },
        "slave/unacknowledged_updates": snap.tasks.values().map(|t| t.unacknowledged).sum::<usize>(),
    });
    for (k, v) in counts {
        m[k] = json!(v);
    }
    axum::Json(m).into_response()
}

/// Limits of a container as Mesos reports them (usage needs the cgroup, not sampled here).
fn statistics(t: &TaskView) -> Value {
    let r = TaskResources::from_proto(&t.info.resources);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    json!({
        "timestamp": now,
        "cpus_limit": r.cpus,
        "mem_limit_bytes": (r.mem * 1024.0 * 1024.0) as u64,
    })
}

async fn version() -> Response {
    axum::Json(
        json!({"version": capstan_types::MESOS_VERSION, "build_user": "capstan", "git_tag": env!("CARGO_PKG_VERSION")}),
    )
    .into_response()
}

async fn containers(State(s): State<Shared>) -> Response {
    let snap = s.tasks.snapshot();
    // The tasks of a custom executor share its container: it is listed once.
    let mut seen = std::collections::BTreeSet::new();
    let list: Vec<Value> = snap
        .tasks
        .values()
        .filter(|t| !is_terminal(t.state))
        .filter(|t| seen.insert(t.container.container_id.clone()))
        .map(|t| {
            let mut status = json!({"container_id": {"value": t.container.container_id}});
            if let Some(l) = &t.launched {
                status["network_infos"] =
                    Value::Array(l.network_infos.iter().map(capstan_proto::to_json).collect());
            }
            if let Some(pid) = t.container.pid {
                status["executor_pid"] = json!(pid);
            }
            json!({
                "container_id": t.container.container_id,
                "container_name": t.container.name,
                "executor_id": t.executor_id,
                "executor_name": if t.custom_executor {
                    t.info.executor.as_ref().and_then(|e| e.name.clone()).unwrap_or_default()
                } else {
                    format!("Command Executor (Task: {})", t.executor_id)
                },
                "framework_id": t.framework_id,
                "source": t.executor_id,
                "status": status,
                "statistics": statistics(t),
            })
        })
        .collect();
    axum::Json(list).into_response()
}

#[derive(Deserialize)]
struct FileQuery {
    path: Option<String>,
    offset: Option<i64>,
    length: Option<i64>,
}

/// Resolves a requested path; only paths inside the agent's work dir are served.
fn resolve(work_dir: &Path, requested: Option<&str>) -> Result<PathBuf, Box<Response>> {
    let Some(p) = requested.filter(|p| !p.is_empty()) else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Expecting 'path=value' in query",
        )));
    };
    let canonical = std::fs::canonicalize(p).map_err(|_| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{p} does not exist"),
        ))
    })?;
    let root = std::fs::canonicalize(work_dir).unwrap_or_else(|_| work_dir.to_path_buf());
    if !canonical.starts_with(root.join("slaves")) {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{p} is not a sandbox path"),
        )));
    }
    Ok(canonical)
}

const MAX_READ: i64 = 16 * 1024 * 1024;

async fn files_read(State(s): State<Shared>, Query(q): Query<FileQuery>) -> Response {
    let path = match resolve(&s.work_dir, q.path.as_deref()) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let offset = q.offset.unwrap_or(0);
    let length = q.length.unwrap_or(MAX_READ);
    if offset < -1 || length < -1 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "offset and length must be >= -1",
        );
    }
    let read = tokio::task::spawn_blocking(
        move || -> std::io::Result<Result<(String, u64), Response>> {
            let mut f = std::fs::File::open(&path)?;
            let meta = f.metadata()?;
            if meta.is_dir() {
                return Ok(Err(error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Cannot read a directory",
                )));
            }
            let size = meta.len();
            // Mesos: offset -1 asks for the size only.
            if offset == -1 {
                return Ok(Ok((String::new(), size)));
            }
            let offset = (offset as u64).min(size);
            let length = if length == -1 {
                MAX_READ
            } else {
                length.min(MAX_READ)
            } as u64;
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            f.take(length).read_to_end(&mut buf)?;
            Ok(Ok((String::from_utf8_lossy(&buf).into_owned(), offset)))
        },
    )
    .await;
    match read {
        Ok(Ok(Ok((data, offset)))) => {
            axum::Json(json!({"data": data, "offset": offset})).into_response()
        }
        Ok(Ok(Err(r))) => r,
        Ok(Err(e)) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "read failed"),
    }
}

async fn files_browse(State(s): State<Shared>, Query(q): Query<FileQuery>) -> Response {
    let path = match resolve(&s.work_dir, q.path.as_deref()) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let entries = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<Value>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let mode = if meta.is_dir() { "d" } else { "-" };
            out.push(json!({
                "path": entry.path().display().to_string(),
                "nlink": meta.nlink(),
                "size": meta.len(),
                "mtime": meta.mtime(),
                "mode": format!("{mode}{}", perms(meta.mode())),
                "uid": meta.uid().to_string(),
                "gid": meta.gid().to_string(),
            }));
        }
        out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        Ok(out)
    })
    .await;
    match entries {
        Ok(Ok(list)) => axum::Json(list).into_response(),
        Ok(Err(e)) => error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("Cannot browse: {e}"),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "browse failed",
        ),
    }
}

fn perms(mode: u32) -> String {
    let bits = ['r', 'w', 'x'];
    (0..9)
        .map(|i| {
            if mode & (1 << (8 - i)) != 0 {
                bits[i % 3]
            } else {
                '-'
            }
        })
        .collect()
}

async fn files_download(State(s): State<Shared>, Query(q): Query<FileQuery>) -> Response {
    let path = match resolve(&s.work_dir, q.path.as_deref()) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
    }
}

#[cfg(test)]
mod policy_tests {
    use axum::http::Method;
    use capstan_runtime::auth::{Access, NodeRole, Principal, Role};

    use super::access;

    #[test]
    fn masters_and_admins_do_everything_viewers_read_and_nobody_else_gets_in() {
        let admin = Principal::Account {
            uid: "root".into(),
            role: Role::Admin,
        };
        let operator = Principal::Account {
            uid: "fw".into(),
            role: Role::Operator,
        };
        let viewer = Principal::Account {
            uid: "vera".into(),
            role: Role::Viewer,
        };
        let master = Principal::Node {
            name: "m1".into(),
            role: NodeRole::Master,
        };
        let agent = Principal::Node {
            name: "a2".into(),
            role: NodeRole::Agent,
        };
        let nobody = Principal::Anonymous;
        let exec = "/capstan/v1/tasks/t/exec";
        // (method, path, who may: admin, operator, viewer, master, agent, anonymous)
        let table = [
            (Method::GET, "/health", [true; 6]),
            (Method::GET, "/version", [true; 6]),
            (Method::POST, "/api/v1/executor", [true; 6]),
            (Method::GET, "/state", [true, true, true, true, true, false]),
            (
                Method::GET,
                "/files/read",
                [true, true, true, true, true, false],
            ),
            (Method::POST, exec, [true, false, false, true, false, false]),
            (
                Method::POST,
                "/capstan/v1/tasks/t/pause",
                [true, false, false, true, false, false],
            ),
            (
                Method::DELETE,
                "/capstan/v1/docker-volumes/v",
                [true, false, false, true, false, false],
            ),
        ];
        for (method, path, want) in table {
            let need = access(&method, path);
            let got = [&admin, &operator, &viewer, &master, &agent, &nobody].map(|p| p.may(need));
            assert_eq!(got, want, "{method} {path}");
        }
        assert_eq!(access(&Method::GET, "/state"), Access::Role(Role::Viewer));
    }
}
