//! `exec`, `top` and `stats`: swarm does not reach any Docker engine itself; it asks the agent
//! that runs the container's task, whose API runs the call on that task's container only
//! (`capstan_agent::task_docker`: chosen by task id, privileged exec only where the container
//! policy allows it).
//!
//! - `POST /containers/{id}/exec` records the exec here (in memory: an exec lives no longer
//!   than the swarm process that made it) and answers `201 {"Id"}`.
//! - `POST /exec/{id}/start` runs it on the agent: detached, it answers at once; attached,
//!   the agent's streamed output (Docker's frames, or raw bytes with a TTY) is relayed over
//!   the hijacked connection (`101`, `Upgrade: tcp`) or as a `200` body. With
//!   `AttachStdin` (`docker exec -i`) the agent's exec is hijacked as well and the two
//!   connections are joined: the client's bytes are the command's stdin, its half-close
//!   (`CloseWrite`, as the CLI does at the end of its input) closes that stdin.
//! - `POST /exec/{id}/resize` passes the TTY size to the agent (the engine resizes it).
//! - `GET /exec/{id}/json` asks the agent for `Running` and `ExitCode` (the CLI's exit status).
//! - `GET /containers/{id}/top` and `/stats` (one sample with `stream=0`, a sample a second
//!   otherwise) pass the agent's answer through, with swarm's id and name in `stats`.
//!
//! - `POST /containers/{id}/attach?stdin=1` of a container created with `OpenStdin`
//!   (`docker run -i`, `docker attach`): once its task runs, [`feed_stdin`] hijacks the
//!   agent's `POST /capstan/v1/tasks/{task}/attach` and copies the client's bytes there (the
//!   client's half-close ends the container's stdin); the output still comes from the logs.
//!
//! The pure parts — the create body's translation and the inspect view — are tested below.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tracing::warn;

use crate::http::{Answer, ApiError, encode, read_body, state_summary};
use crate::model::Container;
use crate::state::Swarm;

/// The agent's header that names the exec it started.
const EXEC_ID_HEADER: &str = "capstan-exec-id";

/// An exec as swarm keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecRecord {
    /// 64 hex digits, swarm's own.
    pub id: String,
    pub container_id: String,
    /// The task it runs in (the container's task when the exec was created).
    pub task_id: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub tty: bool,
    pub user: String,
    pub working_dir: String,
    pub privileged: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    /// The agent that runs it and the agent's exec id, once started.
    pub started: Option<(String, String)>,
    pub running: bool,
    /// The relayed output ended (the command exited or the agent dropped it).
    pub output_done: bool,
    pub exit_code: Option<i64>,
    pub pid: i64,
}

/// `POST /containers/{id}/exec`'s body → a record. Pure.
pub fn exec_record(
    id: String,
    c: &Container,
    task_id: &str,
    body: &Value,
) -> Result<ExecRecord, String> {
    if !body.is_object() {
        return Err("the exec body must be a JSON object".into());
    }
    let strings = |k: &str| -> Result<Vec<String>, String> {
        match &body[k] {
            Value::Null => Ok(Vec::new()),
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(a) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{k} must be strings"))
                })
                .collect(),
            _ => Err(format!("{k} must be an array of strings")),
        }
    };
    let cmd = strings("Cmd")?;
    if cmd.is_empty() {
        return Err("No exec command specified".into());
    }
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    let on = |k: &str| body[k].as_bool().unwrap_or(false);
    Ok(ExecRecord {
        id,
        container_id: c.id.clone(),
        task_id: task_id.to_owned(),
        cmd,
        env: strings("Env")?,
        tty: on("Tty"),
        user: text("User"),
        working_dir: text("WorkingDir"),
        privileged: on("Privileged"),
        attach_stdin: on("AttachStdin"),
        attach_stdout: on("AttachStdout"),
        attach_stderr: on("AttachStderr"),
        started: None,
        running: false,
        output_done: false,
        exit_code: None,
        pid: 0,
    })
}

/// The agent's exec request for a record. Pure.
pub fn agent_request(e: &ExecRecord, detach: bool, tty: bool) -> Value {
    json!({
        "cmd": e.cmd, "env": e.env, "tty": tty || e.tty,
        "user": (!e.user.is_empty()).then_some(&e.user),
        "working_dir": (!e.working_dir.is_empty()).then_some(&e.working_dir),
        "privileged": e.privileged, "detach": detach,
    })
}

/// The response that hands the client's connection over (`101`, `Upgrade: tcp`).
fn switching(content_type: &'static str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    r
}

/// An exec with stdin: the agent's exec is hijacked too, and the two connections are joined.
/// The client's bytes go to the agent (the client's half-close closes the command's stdin);
/// the agent's output comes back, and its end ends the exec's output.
async fn start_with_stdin(
    sw: &Arc<Swarm>,
    id: &str,
    e: &ExecRecord,
    agent: &str,
    url: &str,
    tty: bool,
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Answer {
    let mut request = agent_request(e, false, tty);
    request["stdin"] = json!(true);
    let resp = sw
        .http
        .post(url)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .json(&request)
        .send()
        .await
        .map_err(|err| unreachable_agent(agent, err))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        if resp.status().is_success() {
            return Err(ApiError(
                StatusCode::BAD_GATEWAY,
                format!("the agent at {agent} did not hijack the exec's connection"),
            ));
        }
        return Err(agent_error(resp).await);
    }
    let agent_exec = resp
        .headers()
        .get(EXEC_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let agent_io = resp
        .upgrade()
        .await
        .map_err(|err| unreachable_agent(agent, err))?;
    sw.with(|s| {
        if let Some(x) = s.execs.get_mut(id) {
            x.started = Some((agent.to_owned(), agent_exec));
            x.running = true;
        }
    });
    let exec_id = id.to_owned();
    let sw = sw.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(err) => {
                warn!(exec = %exec_id, error = %err, "Exec upgrade failed");
                return;
            }
        };
        let client = hyper_util::rt::TokioIo::new(upgraded);
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let (mut agent_rd, mut agent_wr) = tokio::io::split(agent_io);
        let input = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_rd, &mut agent_wr).await;
            let _ = agent_wr.shutdown().await;
        });
        let _ = tokio::io::copy(&mut agent_rd, &mut client_wr).await;
        sw.with(|s| {
            if let Some(x) = s.execs.get_mut(&exec_id) {
                x.output_done = true;
            }
        });
        let _ = client_wr.shutdown().await;
        input.abort();
    });
    Ok(switching(if tty || e.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }))
}

/// The input side of a hijacked attach with stdin: waits for the first run of container `id`
/// after run `after`, then copies `input` (the client's half of the connection) to that
/// task's container stdin through the agent, and ends the stdin when `input` ends. Returns
/// when the agent's side ends; a container that never runs, or an agent that refuses, ends
/// it quietly (the attach's output tells the client what happened).
pub async fn feed_stdin(
    sw: Arc<Swarm>,
    id: String,
    after: u64,
    mut input: impl tokio::io::AsyncRead + Unpin,
) {
    use tokio::io::AsyncWriteExt;
    let Some(ran) = crate::http::wait_run(&sw, &id, after).await else {
        return;
    };
    let (agent, task) = match task_agent(&sw, &ran).await {
        Ok(a) => a,
        Err(e) => {
            warn!(container = %id, error = %e.1, "Attach stdin: no agent");
            return;
        }
    };
    let url = format!(
        "{}://{agent}/capstan/v1/tasks/{}/attach",
        sw.cfg.agent_scheme(),
        encode(&task)
    );
    let resp = sw
        .http
        .post(&url)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .timeout(Duration::from_secs(365 * 86400))
        .send()
        .await;
    let resp = match resp {
        Ok(r) if r.status() == StatusCode::SWITCHING_PROTOCOLS => r,
        Ok(r) => {
            let e = agent_error(r).await;
            warn!(container = %id, error = %e.1, "Attach stdin: the agent refused");
            return;
        }
        Err(e) => {
            warn!(container = %id, error = %e, "Attach stdin: cannot reach the agent");
            return;
        }
    };
    let agent_io = match resp.upgrade().await {
        Ok(io) => io,
        Err(e) => {
            warn!(container = %id, error = %e, "Attach stdin: upgrade failed");
            return;
        }
    };
    let (mut agent_rd, mut agent_wr) = tokio::io::split(agent_io);
    let _ = tokio::io::copy(&mut input, &mut agent_wr).await;
    let _ = agent_wr.shutdown().await;
    // The agent ends its side once the container's stdin is closed or the container ends.
    let _ = tokio::io::copy(&mut agent_rd, &mut tokio::io::sink()).await;
}

/// `POST /exec/{id}/resize?h=&w=`: passed to the agent once the exec runs (before that there
/// is no TTY to resize yet, and the call is a no-op).
pub async fn resize(sw: &Arc<Swarm>, id: &str, q: &HashMap<String, String>) -> Answer {
    let e = find_exec(sw, id)?;
    let dim = |k: &str| {
        q.get(k)
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|v| *v > 0)
    };
    let (Some(h), Some(w)) = (dim("h"), dim("w")) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "h and w must be positive integers".into(),
        ));
    };
    let Some((agent, agent_exec)) = e.started.clone().filter(|(_, a)| !a.is_empty()) else {
        return Ok(StatusCode::OK.into_response());
    };
    let url = format!(
        "{}://{agent}/capstan/v1/tasks/{}/exec/{}/resize?h={h}&w={w}",
        sw.cfg.agent_scheme(),
        encode(&e.task_id),
        encode(&agent_exec)
    );
    to_agent(&agent, sw.http.post(&url)).await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /exec/{id}/json`. Pure.
pub fn inspect_view(e: &ExecRecord) -> Value {
    json!({
        "ID": e.id, "Running": e.running, "ExitCode": e.exit_code,
        "ProcessConfig": {
            "tty": e.tty, "entrypoint": e.cmd[0], "arguments": e.cmd[1..],
            "privileged": e.privileged, "user": e.user,
        },
        "OpenStdin": e.attach_stdin, "OpenStderr": e.attach_stderr, "OpenStdout": e.attach_stdout,
        "CanRemove": false, "ContainerID": e.container_id, "DetachKeys": "", "Pid": e.pid,
    })
}

fn not_running(c: &Container) -> ApiError {
    ApiError(
        StatusCode::CONFLICT,
        format!("Container {} is not running", c.id),
    )
}

/// The HTTP address of the agent that runs the container's current task, and the task id.
async fn task_agent(sw: &Swarm, c: &Container) -> Result<(String, String), ApiError> {
    let t = c
        .task
        .as_ref()
        .filter(|_| c.running())
        .ok_or_else(|| not_running(c))?;
    if let Some(a) = &t.agent_http {
        return Ok((a.clone(), t.task_id.clone()));
    }
    let unknown = || {
        ApiError(
            StatusCode::BAD_GATEWAY,
            format!(
                "cannot find the agent {} of container {} in the master's state",
                t.agent_id, c.id
            ),
        )
    };
    let summary = state_summary(sw).await.ok_or_else(unknown)?;
    let agent = summary["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["id"] == t.agent_id.as_str())
        .and_then(|s| s["pid"].as_str())
        .and_then(crate::logs::agent_address)
        .ok_or_else(unknown)?
        .to_owned();
    let task_id = t.task_id.clone();
    sw.modify(&c.id, |c| {
        if let Some(t) = c.task.as_mut().filter(|t| t.task_id == task_id) {
            t.agent_http = Some(agent.clone());
        }
    });
    let _ = sw.persist(&c.id).await;
    Ok((agent, task_id))
}

/// The agent's error answer as a Docker error (its `message`, its 4xx status).
async fn agent_error(resp: reqwest::Response) -> ApiError {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let message = body["message"]
        .as_str()
        .unwrap_or("the agent refused the call")
        .to_owned();
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    ApiError(status, message)
}

/// Sends `req` to the agent at `agent`: its answer when it succeeded, else the error to give
/// the client (the agent's own, or that it cannot be reached).
async fn to_agent(
    agent: &str,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ApiError> {
    let resp = req
        .send()
        .await
        .map_err(|err| unreachable_agent(agent, err))?;
    if !resp.status().is_success() {
        return Err(agent_error(resp).await);
    }
    Ok(resp)
}

/// [`to_agent`], and the JSON it answered.
async fn agent_json(agent: &str, req: reqwest::RequestBuilder) -> Result<Value, ApiError> {
    to_agent(agent, req)
        .await?
        .json()
        .await
        .map_err(|err| unreachable_agent(agent, err))
}

fn unreachable_agent(agent: &str, e: reqwest::Error) -> ApiError {
    ApiError(
        StatusCode::BAD_GATEWAY,
        format!("cannot reach the agent at {agent}: {e}"),
    )
}

fn find_exec(sw: &Swarm, id: &str) -> Result<ExecRecord, ApiError> {
    sw.read(|s| s.execs.get(id).cloned()).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("No such exec instance: {id}"),
        )
    })
}

/// `POST /containers/{id}/exec`.
pub async fn create(sw: &Arc<Swarm>, reference: &str, body: &[u8]) -> Answer {
    let c = sw.find(reference)?;
    let task_id = match &c.task {
        Some(t) if c.running() => t.task_id.clone(),
        _ => return Err(not_running(&c)),
    };
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad exec body: {e}")))?;
    let record = exec_record(crate::model::new_id(), &c, &task_id, &body)
        .map_err(|m| ApiError(StatusCode::BAD_REQUEST, m))?;
    let id = record.id.clone();
    sw.with(|s| {
        // Bounded: the oldest finished execs go first.
        if s.execs.len() >= 1024 {
            let done: Vec<String> = s
                .execs
                .values()
                .filter(|e| !e.running)
                .take(256)
                .map(|e| e.id.clone())
                .collect();
            for d in done {
                s.execs.remove(&d);
            }
        }
        s.execs.insert(id.clone(), record);
    });
    Ok((StatusCode::CREATED, axum::Json(json!({"Id": id}))).into_response())
}

/// `POST /exec/{id}/start`.
pub async fn start(sw: &Arc<Swarm>, id: &str, mut req: Request) -> Answer {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let body = read_body(req).await?;
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad exec start body: {e}")))?
    };
    let detach = body["Detach"].as_bool().unwrap_or(false);
    let tty = body["Tty"].as_bool().unwrap_or(false);
    let e = find_exec(sw, id)?;
    if e.started.is_some() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("Error: Exec command {id} has already run"),
        ));
    }
    let c = sw.get(&e.container_id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("No such container: {}", e.container_id),
        )
    })?;
    let (agent, task_id) = task_agent(sw, &c).await?;
    if task_id != e.task_id {
        return Err(not_running(&c));
    }
    let url = format!(
        "{}://{agent}/capstan/v1/tasks/{}/exec",
        sw.cfg.agent_scheme(),
        encode(&task_id)
    );
    if e.attach_stdin && !detach {
        let Some(on_upgrade) = on_upgrade else {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "an exec with AttachStdin must be started on a hijacked connection (Connection: Upgrade, Upgrade: tcp)".into(),
            ));
        };
        return start_with_stdin(sw, id, &e, &agent, &url, tty, on_upgrade).await;
    }
    let call = sw.http.post(&url).json(&agent_request(&e, detach, tty));
    // An attached exec may run for as long as it likes: no overall timeout on its stream.
    let call = if detach {
        call
    } else {
        call.timeout(Duration::from_secs(365 * 86400))
    };
    let resp = to_agent(&agent, call).await?;
    if detach {
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let agent_id = v["id"].as_str().unwrap_or_default().to_owned();
        sw.with(|s| {
            if let Some(x) = s.execs.get_mut(id) {
                x.started = Some((agent.clone(), agent_id));
                x.running = true;
            }
        });
        return Ok(StatusCode::OK.into_response());
    }
    let agent_exec = resp
        .headers()
        .get(EXEC_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    sw.with(|s| {
        if let Some(x) = s.execs.get_mut(id) {
            x.started = Some((agent.clone(), agent_exec));
            x.running = true;
        }
    });
    let content_type = if tty || e.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let output = futures::StreamExt::map(resp.bytes_stream(), |r| {
        Ok::<Bytes, Infallible>(r.unwrap_or_default())
    });
    let Some(on_upgrade) = on_upgrade else {
        let mut r = Response::new(Body::from_stream(output));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        return Ok(r);
    };
    let exec_id = id.to_owned();
    let sw = sw.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(err) => {
                warn!(exec = %exec_id, error = %err, "Exec upgrade failed");
                return;
            }
        };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let mut output = std::pin::pin!(output);
        while let Some(Ok(chunk)) = output.next().await {
            if chunk.is_empty() {
                continue;
            }
            if io.write_all(&chunk).await.is_err() || io.flush().await.is_err() {
                break;
            }
        }
        sw.with(|s| {
            if let Some(x) = s.execs.get_mut(&exec_id) {
                x.output_done = true;
            }
        });
        let _ = io.shutdown().await;
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    Ok(r)
}

/// `GET /exec/{id}/json`.
pub async fn inspect(sw: &Arc<Swarm>, id: &str) -> Answer {
    let mut e = find_exec(sw, id)?;
    if let Some((agent, agent_exec)) = e.started.clone().filter(|(_, a)| !a.is_empty())
        && e.running
    {
        let url = format!(
            "{}://{agent}/capstan/v1/tasks/{}/exec/{}",
            sw.cfg.agent_scheme(),
            encode(&e.task_id),
            encode(&agent_exec)
        );
        // Once its output ended the exit code is due: the engine may record it a moment
        // after the stream closed, so a "still running" is asked again for a little while.
        let mut tries = if e.output_done { 20 } else { 1 };
        loop {
            tries -= 1;
            let resp = sw
                .http
                .get(&url)
                .send()
                .await
                .map_err(|err| unreachable_agent(&agent, err))?;
            if resp.status().is_success() {
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                e.running = v["running"].as_bool().unwrap_or(false);
                e.exit_code = v["exit_code"].as_i64();
                e.pid = v["pid"].as_i64().unwrap_or(0);
            } else if resp.status() == StatusCode::NOT_FOUND {
                // The task (and its container) is gone: the exec ended with it.
                e.running = false;
            } else {
                return Err(agent_error(resp).await);
            }
            if !e.running || tries == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sw.with(|s| {
            if let Some(x) = s.execs.get_mut(id) {
                (x.running, x.exit_code, x.pid) = (e.running, e.exit_code, e.pid);
            }
        });
    }
    Ok(axum::Json(inspect_view(&e)).into_response())
}

/// `POST /containers/{id}/pause` (`pause`) and `/unpause`: the agent freezes or thaws the
/// task's container in its engine. A paused container is still running for Mesos: a stop or
/// kill ends it as usual, and the next run starts thawed.
pub async fn pause(sw: &Arc<Swarm>, reference: &str, pause: bool) -> Answer {
    let c = sw.find(reference)?;
    if !c.running() {
        return Err(not_running(&c));
    }
    if c.paused == pause {
        let why = if pause {
            format!("Container {} is already paused", c.id)
        } else {
            format!("Container {} is not paused", c.id)
        };
        return Err(ApiError(StatusCode::CONFLICT, why));
    }
    let (agent, task_id) = task_agent(sw, &c).await?;
    let url = format!(
        "{}://{agent}/capstan/v1/tasks/{}/{}",
        sw.cfg.agent_scheme(),
        encode(&task_id),
        if pause { "pause" } else { "unpause" }
    );
    to_agent(&agent, sw.http.post(&url)).await?;
    sw.modify(&c.id, |c| c.paused = pause);
    sw.persist(&c.id).await.map_err(crate::http::internal)?;
    if let Some(now) = sw.get(&c.id) {
        sw.emit(crate::events::Event::container(
            &now,
            if pause { "pause" } else { "unpause" },
            &[],
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /containers/{id}/top`.
pub async fn top(sw: &Arc<Swarm>, reference: &str, q: &HashMap<String, String>) -> Answer {
    let c = sw.find(reference)?;
    let (agent, task_id) = task_agent(sw, &c).await?;
    let mut url = format!(
        "{}://{agent}/capstan/v1/tasks/{}/top",
        sw.cfg.agent_scheme(),
        encode(&task_id)
    );
    if let Some(a) = q.get("ps_args").filter(|a| !a.is_empty()) {
        url.push_str(&format!("?ps_args={}", encode(a)));
    }
    let v = agent_json(&agent, sw.http.get(&url)).await?;
    Ok(axum::Json(v).into_response())
}

/// A stats sample of a container that is not running (Docker answers zeros too).
fn idle_stats(c: &Container) -> Value {
    json!({
        "id": c.id, "name": format!("/{}", c.name), "read": "0001-01-01T00:00:00Z",
        "preread": "0001-01-01T00:00:00Z", "num_procs": 0, "pids_stats": {}, "blkio_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": {}, "networks": {},
    })
}

/// One sample from the agent, with swarm's id and name.
async fn sample(sw: &Swarm, c: &Container) -> Result<Value, ApiError> {
    if !c.running() {
        return Ok(idle_stats(c));
    }
    let (agent, task_id) = task_agent(sw, c).await?;
    let url = format!(
        "{}://{agent}/capstan/v1/tasks/{}/stats",
        sw.cfg.agent_scheme(),
        encode(&task_id)
    );
    let mut v = agent_json(&agent, sw.http.get(&url)).await?;
    v["id"] = json!(c.id);
    v["name"] = json!(format!("/{}", c.name));
    Ok(v)
}

/// `GET /containers/{id}/stats` (`stream` defaults to on, as Docker's).
pub async fn stats(sw: &Arc<Swarm>, reference: &str, q: &HashMap<String, String>) -> Answer {
    let c = sw.find(reference)?;
    let stream = q
        .get("stream")
        .is_none_or(|v| matches!(v.as_str(), "1" | "true" | "True"));
    let first = sample(sw, &c).await?;
    if !stream {
        return Ok(axum::Json(first).into_response());
    }
    let sw = sw.clone();
    let id = c.id.clone();
    let body = futures::stream::unfold((Some(first), sw, id), |(next, sw, id)| async move {
        let v = match next {
            Some(v) => v,
            None => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let c = sw.get(&id)?;
                if !c.running() {
                    return None;
                }
                sample(&sw, &c).await.ok()?
            }
        };
        Some((
            Ok::<Bytes, Infallible>(Bytes::from(v.to_string() + "\n")),
            (None, sw, id),
        ))
    });
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        crate::views::tests::container("web", &[], crate::model::Status::Running)
    }

    #[test]
    fn exec_bodies_become_records_or_clear_errors() {
        let c = container();
        let cases: [(Value, Result<Vec<&str>, &str>); 5] = [
            (
                json!({"Cmd": ["sh", "-c", "exit 3"], "AttachStdout": true}),
                Ok(vec!["sh", "-c", "exit 3"]),
            ),
            (json!({"Cmd": "id"}), Ok(vec!["id"])),
            (json!({"Cmd": []}), Err("No exec command specified")),
            (json!({"Cmd": [1]}), Err("Cmd must be strings")),
            (json!([]), Err("the exec body must be a JSON object")),
        ];
        for (body, want) in cases {
            let got = exec_record("e".into(), &c, "t.1", &body);
            match (got, want) {
                (Ok(r), Ok(cmd)) => assert_eq!(r.cmd, cmd, "{body}"),
                (Err(m), Err(w)) => assert_eq!(m, w, "{body}"),
                (got, want) => panic!("{body}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn records_translate_for_the_agent_and_inspect_like_docker() {
        let c = container();
        let body = json!({"Cmd": ["ls", "/"], "Tty": false, "User": "nobody", "Env": ["A=1"], "AttachStdout": true});
        let mut r = exec_record("e1".into(), &c, "t.1", &body).unwrap_or_else(|e| panic!("{e}"));
        let a = agent_request(&r, false, true);
        assert_eq!(
            a,
            json!({"cmd": ["ls", "/"], "env": ["A=1"], "tty": true, "user": "nobody",
                              "working_dir": null, "privileged": false, "detach": false})
        );
        r.exit_code = Some(3);
        let v = inspect_view(&r);
        assert_eq!(v["ExitCode"], 3);
        assert_eq!(v["Running"], false);
        assert_eq!(v["ProcessConfig"]["entrypoint"], "ls");
        assert_eq!(v["ProcessConfig"]["arguments"], json!(["/"]));
        assert_eq!(v["ContainerID"], c.id);
    }
}
