//! Docker operations on one of this agent's own task containers, for the Docker API front
//! end (swarm): `exec` (attached or detached; its exit code through exec inspect), `top` and
//! one `stats` sample. The container is always chosen by **task id** among the Docker tasks
//! this agent runs — never by a container name, so these calls reach no container that is
//! not a task's — and exec refuses `privileged` unless the container policy allows it.
//!
//! - `POST /capstan/v1/tasks/{task}/exec` body [`ExecRequest`]: detached → `201 {"id"}`;
//!   attached → `200` whose body is the command's output as Docker writes it
//!   (multiplexed frames, or raw bytes with a TTY), the exec id in `Capstan-Exec-Id`.
//! - `GET /capstan/v1/tasks/{task}/exec/{exec}`: `{"id","running","exit_code","pid"}`.
//! - `GET /capstan/v1/tasks/{task}/top?ps_args=`: Docker's `{"Titles","Processes"}`.
//! - `GET /capstan/v1/tasks/{task}/stats`: one Docker stats object (`precpu_stats` filled).
//! - With `stdin: true` and `Connection: Upgrade`, `Upgrade: tcp`, an attached exec answers
//!   `101` and the connection is hijacked: the caller's bytes are the command's stdin (its
//!   half-close closes stdin), the output comes back as above.
//! - `POST /capstan/v1/tasks/{task}/exec/{exec}/resize?h=&w=`: an exec's TTY size.
//! - `POST /capstan/v1/tasks/{task}/attach` with `Connection: Upgrade`, `Upgrade: tcp`:
//!   answers `101` and the caller's bytes become the task container's stdin (its half-close
//!   ends that stdin; a container created with `stdin-once` then sees EOF). Only stdin: the
//!   output is the task's log. A container created without `interactive` ignores the bytes.
//! - `DELETE /capstan/v1/docker-volumes/swarm.<name>`: removes one of swarm's named volumes
//!   from this agent's engine (no other volume).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{StatsOptions, TopOptions};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::http::HttpState;

type Shared = Arc<HttpState>;

/// The header of an attached exec's response that names the exec.
pub const EXEC_ID_HEADER: &str = "capstan-exec-id";

/// What to run in the task's container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub tty: bool,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub privileged: bool,
    /// Start it and answer at once; the output is discarded.
    pub detach: bool,
    /// Attach the command's stdin: only on an upgraded connection, whose bytes become it.
    pub stdin: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResizeQuery {
    pub h: Option<i32>,
    pub w: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TopQuery {
    pub ps_args: Option<String>,
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/capstan/v1/tasks/{task}/exec", post(exec))
        .route("/capstan/v1/tasks/{task}/exec/{exec}", get(exec_inspect))
        .route("/capstan/v1/tasks/{task}/attach", post(attach_stdin))
        .route("/capstan/v1/tasks/{task}/top", get(top))
        .route("/capstan/v1/tasks/{task}/pause", post(pause))
        .route("/capstan/v1/tasks/{task}/unpause", post(unpause))
        .route("/capstan/v1/tasks/{task}/stats", get(stats))
        .route(
            "/capstan/v1/tasks/{task}/exec/{exec}/resize",
            post(exec_resize),
        )
        .route(
            "/capstan/v1/docker-volumes/{name}",
            axum::routing::delete(remove_volume),
        )
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

/// Why a request names no container this agent may touch.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NoTask,
    NotDocker,
    NotRunning,
}

/// The Docker container of task `task_id`, if it is one of this agent's running Docker
/// tasks. Pure over the snapshot.
pub fn task_container(
    snapshot: &crate::manager::AgentSnapshot,
    task_id: &str,
) -> Result<String, Refusal> {
    let t = snapshot.tasks.get(task_id).ok_or(Refusal::NoTask)?;
    if !t.docker || t.custom_executor || t.container.name.is_empty() {
        return Err(Refusal::NotDocker);
    }
    if crate::manager::is_terminal(t.state) {
        return Err(Refusal::NotRunning);
    }
    Ok(t.container.name.clone())
}

fn container_of(s: &HttpState, task_id: &str) -> Result<(Docker, String), Box<Response>> {
    let Some(docker) = s.docker.clone() else {
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_docker",
            "this agent has no Docker engine",
        )));
    };
    let refused = match task_container(&s.tasks.snapshot(), task_id) {
        Ok(name) => return Ok((docker, name)),
        Err(Refusal::NoTask) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no task {task_id} on this agent"),
        ),
        Err(Refusal::NotDocker) => error(
            StatusCode::CONFLICT,
            "not_docker",
            format!("task {task_id} does not run in a Docker container"),
        ),
        Err(Refusal::NotRunning) => error(
            StatusCode::CONFLICT,
            "not_running",
            format!("task {task_id} is not running"),
        ),
    };
    Err(Box::new(refused))
}

fn engine_error(e: bollard::errors::Error) -> Response {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => {
            let status = StatusCode::from_u16(status_code)
                .ok()
                .filter(|s| s.is_client_error())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            error(status, "engine", message)
        }
        e => error(StatusCode::BAD_GATEWAY, "engine", e.to_string()),
    }
}

/// One multiplexed frame (1 = stdout, 2 = stderr), as Docker frames non-TTY output.
fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(8 + data.len());
    b.push(stream);
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    Bytes::from(b)
}

/// Whether the request asks for the hijacked connection (`Connection: Upgrade`, `Upgrade: tcp`).
fn wants_upgrade(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"))
}

/// One item of an exec's output as the bytes a client reads: a frame without a TTY, raw
/// bytes with one.
fn output_bytes(
    item: Result<LogOutput, bollard::errors::Error>,
    tty: bool,
) -> Option<std::io::Result<Bytes>> {
    match item {
        Ok(LogOutput::StdOut { message }) if !tty => Some(Ok(frame(1, &message))),
        Ok(LogOutput::StdErr { message }) if !tty => Some(Ok(frame(2, &message))),
        Ok(
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message },
        ) => Some(Ok(message)),
        Ok(LogOutput::StdIn { .. }) => None,
        Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
    }
}

async fn exec(State(s): State<Shared>, Path(task): Path<String>, mut req: Request) -> Response {
    let on_upgrade = wants_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let body = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("cannot read the exec body: {e}"),
            );
        }
    };
    let req: ExecRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("bad exec body: {e}"),
            );
        }
    };
    if req.cmd.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_request", "cmd is empty");
    }
    if req.stdin && (req.detach || on_upgrade.is_none()) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "stdin needs an attached exec on an upgraded connection (Connection: Upgrade, Upgrade: tcp)",
        );
    }
    if req.privileged && !s.allow_privileged {
        return error(
            StatusCode::FORBIDDEN,
            "policy",
            "privileged exec is not allowed by the cluster's container policy (cluster.containers.allow_privileged)",
        );
    }
    let (docker, name) = match container_of(&s, &task) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let created = docker
        .create_exec(
            &name,
            CreateExecOptions {
                cmd: Some(req.cmd.clone()),
                env: (!req.env.is_empty()).then(|| req.env.clone()),
                attach_stdin: Some(req.stdin),
                attach_stdout: Some(!req.detach),
                attach_stderr: Some(!req.detach),
                tty: Some(req.tty),
                privileged: Some(req.privileged),
                user: req.user.clone().filter(|u| !u.is_empty()),
                working_dir: req.working_dir.clone().filter(|w| !w.is_empty()),
                ..Default::default()
            },
        )
        .await;
    let id = match created {
        Ok(c) => c.id,
        Err(e) => return engine_error(e),
    };
    let started = docker
        .start_exec(
            &id,
            Some(StartExecOptions {
                detach: req.detach,
                tty: req.tty,
                ..Default::default()
            }),
        )
        .await;
    let (output, input) = match started {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => {
            return (StatusCode::CREATED, axum::Json(json!({"id": id}))).into_response();
        }
        Err(e) => return engine_error(e),
    };
    let tty = req.tty;
    let content_type = HeaderValue::from_static(if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    });
    let stream = output.filter_map(move |item| async move { output_bytes(item, tty) });
    let Some(on_upgrade) = on_upgrade else {
        let mut r = Response::new(Body::from_stream(stream));
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, content_type);
        if let Ok(v) = HeaderValue::from_str(&id) {
            h.insert(EXEC_ID_HEADER, v);
        }
        return r;
    };
    let stdin = req.stdin;
    let exec_id = id.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => relay(upgraded, stream, input, stdin).await,
            Err(e) => tracing::warn!(exec = %exec_id, error = %e, "Exec upgrade failed"),
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(EXEC_ID_HEADER, v);
    }
    r
}

/// The hijacked connection of an exec: what the caller sends goes to the command's stdin
/// (its end closes stdin), the output goes back; the connection ends with the output.
async fn relay(
    upgraded: hyper::upgrade::Upgraded,
    output: impl futures::Stream<Item = std::io::Result<Bytes>>,
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    stdin: bool,
) {
    use tokio::io::AsyncWriteExt;
    let io = hyper_util::rt::TokioIo::new(upgraded);
    let (mut from_caller, mut to_caller) = tokio::io::split(io);
    let feed = tokio::spawn(async move {
        if stdin {
            let _ = tokio::io::copy(&mut from_caller, &mut input).await;
            let _ = input.shutdown().await;
        } else {
            // Nothing is forwarded; the engine's side stays open until the output ends.
            let _ = tokio::io::copy(&mut from_caller, &mut tokio::io::sink()).await;
            std::future::pending::<()>().await;
        }
    });
    let mut output = std::pin::pin!(output);
    while let Some(Ok(chunk)) = output.next().await {
        if chunk.is_empty() {
            continue;
        }
        if to_caller.write_all(&chunk).await.is_err() || to_caller.flush().await.is_err() {
            break;
        }
    }
    let _ = to_caller.shutdown().await;
    feed.abort();
}

/// `POST …/tasks/{task}/attach` on an upgraded connection: the caller's bytes go to the
/// task container's stdin until the caller half-closes or the container ends.
async fn attach_stdin(
    State(s): State<Shared>,
    Path(task): Path<String>,
    mut req: Request,
) -> Response {
    if !wants_upgrade(req.headers()) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "attach needs an upgraded connection (Connection: Upgrade, Upgrade: tcp)",
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (docker, name) = match container_of(&s, &task) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let attached = docker
        .attach_container(
            &name,
            Some(bollard::query_parameters::AttachContainerOptions {
                stdin: true,
                stream: true,
                ..Default::default()
            }),
        )
        .await;
    let (output, input) = match attached {
        Ok(a) => (a.output, a.input),
        Err(e) => return engine_error(e),
    };
    // Nothing comes back but the end of the attach (no stdout or stderr was asked for).
    let stream = output.filter_map(|item| async move { output_bytes(item, true) });
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => relay(upgraded, stream, input, true).await,
            Err(e) => tracing::warn!(task = %task, error = %e, "Attach upgrade failed"),
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    r
}

async fn exec_inspect(
    State(s): State<Shared>,
    Path((task, exec)): Path<(String, String)>,
) -> Response {
    let Some(docker) = s.docker.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_docker",
            "this agent has no Docker engine",
        );
    };
    // A task that ended still owns its execs; it must be (or have been) this agent's task.
    let snapshot = s.tasks.snapshot();
    let Some(t) = snapshot.task(&task).filter(|t| t.docker) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no Docker task {task} on this agent"),
        );
    };
    let name = t.container.name.clone();
    let info = match docker.inspect_exec(&exec).await {
        Ok(i) => i,
        Err(e) => return engine_error(e),
    };
    // Only an exec of this task's container is shown.
    if !of_container(&docker, &name, info.container_id.as_deref()).await {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no exec {exec} in task {task}"),
        );
    }
    axum::Json(json!({
        "id": exec,
        "running": info.running.unwrap_or(false),
        "exit_code": info.exit_code,
        "pid": info.pid.unwrap_or(0),
    }))
    .into_response()
}

/// Whether an exec's container (`container_id`) is the container `name`.
async fn of_container(docker: &Docker, name: &str, container_id: Option<&str>) -> bool {
    match container_id {
        Some(cid) => docker
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|c| c.id)
            .is_some_and(|id| id == cid),
        None => false,
    }
}

/// `POST …/exec/{exec}/resize?h=&w=`: the TTY size of an exec of this task's container.
async fn exec_resize(
    State(s): State<Shared>,
    Path((task, exec)): Path<(String, String)>,
    Query(q): Query<ResizeQuery>,
) -> Response {
    let (Some(h), Some(w)) = (q.h.filter(|h| *h > 0), q.w.filter(|w| *w > 0)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "h and w must be positive integers",
        );
    };
    let (docker, name) = match container_of(&s, &task) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let info = match docker.inspect_exec(&exec).await {
        Ok(i) => i,
        Err(e) => return engine_error(e),
    };
    if !of_container(&docker, &name, info.container_id.as_deref()).await {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no exec {exec} in task {task}"),
        );
    }
    match docker
        .resize_exec(&exec, bollard::query_parameters::ResizeExecOptions { h, w })
        .await
    {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => engine_error(e),
    }
}

/// Whether `name` is an engine volume of swarm's (`swarm.<docker volume name>`). Pure.
pub fn swarm_volume(name: &str) -> bool {
    name.strip_prefix("swarm.").is_some_and(|rest| {
        rest.len() >= 2
            && rest.starts_with(|c: char| c.is_ascii_alphanumeric())
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    })
}

/// `DELETE /capstan/v1/docker-volumes/{name}`: removes one of swarm's engine volumes
/// (`swarm.<name>` only; the engine refuses one a container still uses).
async fn remove_volume(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    if !swarm_volume(&name) {
        return error(
            StatusCode::FORBIDDEN,
            "not_swarm",
            format!("{name:?} is not a swarm volume (swarm.<name>); only those are removed here"),
        );
    }
    let Some(docker) = s.docker.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_docker",
            "this agent has no Docker engine",
        );
    };
    match docker
        .remove_volume(
            &name,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => engine_error(e),
    }
}

async fn top(
    State(s): State<Shared>,
    Path(task): Path<String>,
    Query(q): Query<TopQuery>,
) -> Response {
    let (docker, name) = match container_of(&s, &task) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let opts = q
        .ps_args
        .filter(|a| !a.is_empty())
        .map(|ps_args| TopOptions { ps_args });
    match docker.top_processes(&name, opts).await {
        Ok(t) => axum::Json(t).into_response(),
        Err(e) => engine_error(e),
    }
}

/// `POST …/pause`: freezes the task's container (the engine's cgroup freezer); a kill still
/// ends it.
async fn pause(State(s): State<Shared>, Path(task): Path<String>) -> Response {
    freeze(&s, &task, true).await
}

/// `POST …/unpause`: thaws it.
async fn unpause(State(s): State<Shared>, Path(task): Path<String>) -> Response {
    freeze(&s, &task, false).await
}

async fn freeze(s: &HttpState, task: &str, frozen: bool) -> Response {
    let (docker, name) = match container_of(s, task) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let done = if frozen {
        docker.pause_container(&name).await
    } else {
        docker.unpause_container(&name).await
    };
    match done {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => engine_error(e),
    }
}

async fn stats(State(s): State<Shared>, Path(task): Path<String>) -> Response {
    let (docker, name) = match container_of(&s, &task) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let mut samples = std::pin::pin!(docker.stats(
        &name,
        Some(StatsOptions {
            stream: false,
            one_shot: false,
        }),
    ));
    match samples.next().await {
        Some(Ok(sample)) => axum::Json(sample).into_response(),
        Some(Err(e)) => engine_error(e),
        None => error(
            StatusCode::BAD_GATEWAY,
            "engine",
            "the engine sent no stats",
        ),
    }
}

#[cfg(test)]
mod tests {
    use capstan_proto::mesos::v1::{TaskInfo, TaskState};

    use super::*;
    use crate::containerizer::ContainerRef;
    use crate::manager::{AgentSnapshot, TaskView};

    #[test]
    fn frames_carry_the_stream_and_length() {
        assert_eq!(&frame(2, b"hi")[..], &[2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
    }

    fn view(docker: bool, name: &str, state: TaskState) -> TaskView {
        TaskView {
            framework_id: "F".into(),
            info: TaskInfo::default(),
            executor_id: "E".into(),
            container: ContainerRef {
                container_id: "C".into(),
                name: name.into(),
                sandbox: "/sandbox".into(),
                pid: None,
            },
            docker,
            custom_executor: false,
            state,
            statuses: Vec::new(),
            unacknowledged: 0,
            healthy: None,
            launched: None,
        }
    }

    #[test]
    fn only_running_docker_tasks_of_this_agent_are_reached() {
        let mut snap = AgentSnapshot::default();
        for (id, t) in [
            ("web", view(true, "mesos-A.C1", TaskState::TaskRunning)),
            ("cmd", view(false, "", TaskState::TaskRunning)),
            ("done", view(true, "mesos-A.C2", TaskState::TaskFinished)),
        ] {
            snap.tasks.insert(id.into(), t);
        }
        let cases: [(&str, Result<&str, Refusal>); 4] = [
            ("web", Ok("mesos-A.C1")),
            ("cmd", Err(Refusal::NotDocker)),
            ("done", Err(Refusal::NotRunning)),
            // A container name is not a task id.
            ("mesos-A.C1", Err(Refusal::NoTask)),
        ];
        for (task, want) in cases {
            assert_eq!(
                task_container(&snap, task).as_deref(),
                want.as_deref(),
                "{task}"
            );
        }
    }

    #[test]
    fn exec_bodies_are_strict() {
        let ok: ExecRequest = serde_json::from_str(r#"{"cmd":["id"],"tty":true}"#).unwrap();
        assert!(ok.tty && !ok.detach && ok.cmd == ["id"]);
        assert!(serde_json::from_str::<ExecRequest>(r#"{"cmd":["id"],"name":"x"}"#).is_err());
        let i: ExecRequest = serde_json::from_str(r#"{"cmd":["cat"],"stdin":true}"#).unwrap();
        assert!(i.stdin);
    }

    #[test]
    fn only_swarms_engine_volumes_are_removed() {
        let cases = [
            ("swarm.data", true),
            ("swarm.p_db-1.x", true),
            ("data", false),
            ("swarm.", false),
            ("swarm.a", false),
            ("swarm../etc", false),
            ("swarm.-x", false),
            ("mesos-volume", false),
        ];
        for (name, want) in cases {
            assert_eq!(swarm_volume(name), want, "{name}");
        }
    }
}
