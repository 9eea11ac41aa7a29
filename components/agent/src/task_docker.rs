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

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
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
        .route("/capstan/v1/tasks/{task}/top", get(top))
        .route("/capstan/v1/tasks/{task}/stats", get(stats))
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

async fn exec(State(s): State<Shared>, Path(task): Path<String>, body: Bytes) -> Response {
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
    let output = match started {
        Ok(StartExecResults::Attached { output, .. }) => output,
        Ok(StartExecResults::Detached) => {
            return (StatusCode::CREATED, axum::Json(json!({"id": id}))).into_response();
        }
        Err(e) => return engine_error(e),
    };
    let tty = req.tty;
    let stream = output.filter_map(move |item| async move {
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
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if tty {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(EXEC_ID_HEADER, v);
    }
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
    let of_task = match info.container_id.as_deref() {
        Some(cid) => docker
            .inspect_container(&name, None)
            .await
            .ok()
            .and_then(|c| c.id)
            .is_some_and(|id| id == cid),
        None => false,
    };
    if !of_task {
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
    }
}
