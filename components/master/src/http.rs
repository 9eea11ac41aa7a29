//! HTTP front end: one fallback handler doing Mesos-style longest-path-prefix routing
//! (`/api/v1/operator` reaches `/api/v1`), content-type rules of the v1 APIs, the
//! read-only endpoints and the old form-encoded `POST /master/teardown` (the dcos CLI's
//! `service shutdown`). Every handler talks to the core task through [`CoreHandle`].

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use capstan_runtime::auth::{Access, Principal, Role};
use futures::StreamExt;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::core::{ApiError, Frame, OperatorReply, version_info};
use crate::registry::Durability;
use crate::server::CoreHandle;
use crate::wire::{
    AgentCall, Api, Encoding, OperatorCall, SchedulerCall, decode_agent_json,
    decode_agent_protobuf, decode_operator_json, decode_operator_protobuf, decode_scheduler_json,
    decode_scheduler_protobuf, encode_message,
};

/// Largest call body accepted on the v1 APIs; a larger one is answered `413`.
const MAX_BODY: usize = 16 * 1024 * 1024;
const STREAM_ID: &str = "Mesos-Stream-Id";

/// Leadership as seen by the HTTP layer.
#[derive(Clone, Debug, PartialEq)]
pub enum Leadership {
    Leader,
    /// Another master leads; `host:port` for redirects.
    Follower(String),
    NoLeader,
}

#[derive(Clone)]
pub(crate) struct App {
    pub core: CoreHandle,
    pub leadership: tokio::sync::watch::Receiver<Leadership>,
    pub advertised: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    Scheduler,
    Operator,
    Agent,
    State,
    StateSummary,
    Teardown,
    Slaves,
    Frameworks,
    Tasks,
    Redirect,
    Health,
    Version,
    Metrics,
}

const ROUTES: &[(&str, Route)] = &[
    ("/api/v1/scheduler", Route::Scheduler),
    ("/master/api/v1/scheduler", Route::Scheduler),
    ("/api/v1", Route::Operator),
    ("/master/api/v1", Route::Operator),
    ("/api/capstan/agent/v1", Route::Agent),
    ("/master/state", Route::State),
    ("/master/state.json", Route::State),
    ("/state.json", Route::State),
    ("/state", Route::State),
    ("/master/state-summary", Route::StateSummary),
    ("/state-summary", Route::StateSummary),
    ("/master/teardown", Route::Teardown),
    ("/teardown", Route::Teardown),
    // The endpoint's name before Mesos 0.25; the dcos CLI falls back to it on a 404.
    ("/master/shutdown", Route::Teardown),
    ("/master/slaves", Route::Slaves),
    ("/master/frameworks", Route::Frameworks),
    ("/master/tasks", Route::Tasks),
    ("/master/tasks.json", Route::Tasks),
    ("/master/redirect", Route::Redirect),
    ("/master/health", Route::Health),
    ("/health", Route::Health),
    ("/version", Route::Version),
    ("/metrics/snapshot", Route::Metrics),
];

impl Route {
    /// The only methods the route serves: the v1 APIs take calls as `POST`, the other
    /// endpoints are reads (`GET`, and `HEAD` for the headers alone).
    fn posts_only(self) -> bool {
        matches!(
            self,
            Route::Scheduler | Route::Operator | Route::Agent | Route::Teardown
        )
    }
}

/// What a call needs in strict mode: health, version and the leader redirect are open (pymesos
/// asks `/version` before it subscribes); the state endpoints need `viewer`; frameworks and the
/// operator API (`operator`, which covers its reads: they are `POST`s too); the agent protocol
/// a node certificate; teardown an administrator. Unknown paths (a 404) are by method.
pub(crate) fn access(method: &Method, path: &str) -> Access {
    match route(path) {
        Some(Route::Redirect | Route::Health | Route::Version) => Access::Public,
        Some(
            Route::State
            | Route::StateSummary
            | Route::Slaves
            | Route::Frameworks
            | Route::Tasks
            | Route::Metrics,
        ) => Access::Role(Role::Viewer),
        // The operator API's reads are POSTs too: the guard lets viewers in, and each call
        // that changes something is judged by its type (`operator_access`).
        Some(Route::Operator) => Access::Role(Role::Viewer),
        Some(Route::Scheduler) => Access::Role(Role::Operator),
        Some(Route::Agent) => Access::AgentProtocol,
        Some(Route::Teardown) => Access::Role(Role::Admin),
        None => Access::by_method(method.as_str()),
    }
}

/// `405` with `Allow` unless `method` is one the route serves.
fn method_not_allowed(r: Route, method: &Method) -> Option<Response> {
    let (ok, allow, msg) = if r.posts_only() {
        (
            *method == Method::POST,
            "POST",
            "Expecting a 'POST' request",
        )
    } else {
        (
            *method == Method::GET || *method == Method::HEAD,
            "GET, HEAD",
            "Expecting a 'GET' or 'HEAD' request",
        )
    };
    if ok {
        return None;
    }
    Some(
        Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, allow)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(msg))
            .expect("valid response"),
    )
}

/// Longest matching path prefix on component boundaries.
fn route(path: &str) -> Option<Route> {
    let mut p = path.trim_end_matches('/').to_string();
    if p.is_empty() {
        return None;
    }
    loop {
        if let Some((_, r)) = ROUTES.iter().find(|(k, _)| *k == p) {
            // `/master/redirect/...` is not routed (loop guard, as in Mesos).
            if *r == Route::Redirect && p != path.trim_end_matches('/') {
                return None;
            }
            return Some(*r);
        }
        let cut = p.rfind('/')?;
        if cut == 0 {
            return None;
        }
        p.truncate(cut);
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

fn api_error(e: ApiError) -> Response {
    text(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        e.message,
    )
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).expect("JSON values serialize"),
    )
        .into_response()
}

/// A streamed response; each event is written once the registry changes it follows are
/// durable (the stream ends if they never will be: the master is stopping).
fn stream_response(
    rx: mpsc::Receiver<Frame>,
    durability: &Durability,
    enc: Encoding,
    stream_id: Option<String>,
) -> Response {
    let durability = durability.clone();
    let frames = ReceiverStream::new(rx)
        .then(move |frame| {
            let durability = durability.clone();
            async move { durability.wait(frame.after).await.then_some(frame.bytes) }
        })
        .take_while(|b| std::future::ready(b.is_some()))
        .filter_map(|b| std::future::ready(b.map(Ok::<Bytes, Infallible>)));
    let body = Body::from_stream(frames);
    let ct = match enc {
        Encoding::Json => "application/json",
        Encoding::Protobuf => "application/x-protobuf",
    };
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ct);
    if let Some(id) = stream_id {
        r = r.header(STREAM_ID, id);
    }
    r.body(body).expect("valid response")
}

fn query(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) async fn dispatch(State(app): State<App>, req: Request) -> Response {
    let Some(r) = route(req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "Not found");
    };
    // The method is checked first: a standby redirects only requests the leader would serve.
    if let Some(resp) = method_not_allowed(r, req.method()) {
        return resp;
    }
    // Leader-only endpoints redirect on a standby.
    let needs_leader = !matches!(r, Route::Health | Route::Version | Route::Metrics);
    if needs_leader {
        let l = app.leadership.borrow().clone();
        match l {
            Leadership::Leader => {}
            Leadership::Follower(leader) => {
                let path = if r == Route::Redirect {
                    String::new()
                } else {
                    req.uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default()
                };
                return Response::builder()
                    .status(StatusCode::TEMPORARY_REDIRECT)
                    .header(header::LOCATION, format!("//{leader}{path}"))
                    .body(Body::empty())
                    .expect("valid response");
            }
            Leadership::NoLeader => {
                return text(StatusCode::SERVICE_UNAVAILABLE, "No leader elected");
            }
        }
    }
    let jsonp = query(&req).remove("jsonp");
    match r {
        Route::Scheduler => scheduler(app, req).await,
        Route::Operator => operator(app, req).await,
        Route::Agent => agent(app, req).await,
        Route::Redirect => Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, format!("//{}", app.advertised))
            .body(Body::empty())
            .expect("valid response"),
        Route::Health => StatusCode::OK.into_response(),
        Route::Version => json_response(StatusCode::OK, &version_info()),
        Route::State => read(app, jsonp, |c| c.state_json()).await,
        Route::StateSummary => read(app, jsonp, |c| c.state_summary_json()).await,
        Route::Teardown => teardown(app, req).await,
        Route::Slaves => read(app, jsonp, |c| c.slaves_json()).await,
        Route::Metrics => {
            // Standbys answer too (for monitoring), and say they are not elected.
            let elected = *app.leadership.borrow() == Leadership::Leader;
            read(app, jsonp, move |c| {
                let mut m = c.metrics();
                m["master/elected"] = serde_json::json!(if elected { 1.0 } else { 0.0 });
                m
            })
            .await
        }
        Route::Frameworks => {
            let fid = query(&req).get("framework_id").cloned();
            read(app, jsonp, move |c| c.frameworks_json(fid.as_deref())).await
        }
        Route::Tasks => {
            let q = query(&req);
            let limit = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(100);
            let offset = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
            let asc = q.get("order").is_some_and(|o| o == "asc");
            let fid = q.get("framework_id").cloned();
            let tid = q.get("task_id").cloned();
            read(app, jsonp, move |c| {
                c.tasks_json(limit, offset, asc, fid.as_deref(), tid.as_deref())
            })
            .await
        }
    }
}

/// Read-only endpoints; `?jsonp=cb` wraps the JSON as `cb(...);` like Mesos.
async fn read(
    app: App,
    jsonp: Option<String>,
    f: impl FnOnce(&crate::core::Core) -> Value + Send + 'static,
) -> Response {
    let jsonp = jsonp.filter(|cb| {
        !cb.is_empty()
            && cb
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.$".contains(c))
    });
    match app.core.read(f).await {
        Ok(v) => match jsonp {
            None => json_response(StatusCode::OK, &v),
            Some(cb) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/javascript")],
                format!("{cb}({v});"),
            )
                .into_response(),
        },
        Err(e) => api_error(e),
    }
}

/// `POST /master/teardown` (and `/master/shutdown`): the body is a form, `frameworkId=<id>`,
/// read whatever the Content-Type (the dcos CLI sends none), as Mesos does. 200 with an
/// empty body once the framework is torn down; 400 for an undecodable body, a missing
/// `frameworkId` or an unknown framework.
async fn teardown(app: App, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, MAX_BODY).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let form = match decode_form(&body) {
        Ok(f) => f,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Unable to decode query string: {e}"),
            );
        }
    };
    let Some(fid) = form.get("frameworkId").cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "Missing 'frameworkId' query parameter in the request body",
        );
    };
    match app
        .core
        .call(move |c, _| c.teardown_framework(&fid.into()))
        .await
    {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) | Err(e) => api_error(e),
    }
}

/// Decodes an `application/x-www-form-urlencoded` body (pairs split on `&` or `;`, `+` is
/// a space, `%XX` escapes; a later key wins) the way Mesos decodes query strings.
fn decode_form(body: &[u8]) -> Result<HashMap<String, String>, String> {
    let s = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let mut out = HashMap::new();
    for pair in s.split(['&', ';']).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("Malformed % escape in '{s}'"))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' does not decode to UTF-8"))
}

/// Reads the whole body, at most `limit` bytes: a larger one (by `Content-Length`, or as it
/// streams in) is `413 Payload Too Large`, a broken one `400`.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Response> {
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| usize::try_from(n).map_or(true, |n| n > limit)) {
        return Err(too_large());
    }
    // Sized by the announced length (within the limit) so the buffer never doubles past it.
    let mut buf =
        bytes::BytesMut::with_capacity(declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|e| text(StatusCode::BAD_REQUEST, format!("Failed to read body: {e}")))?;
        if buf.len().checked_add(chunk.len()).is_none_or(|n| n > limit) {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Content-Type and body checks shared by the v1 APIs (the method is checked by
/// [`dispatch`]): the headers, the body and whether it is JSON (else protobuf).
async fn read_call_body(req: Request) -> Result<(HeaderMap, Bytes, bool), Response> {
    let headers = req.headers().clone();
    let ct = match headers.get(header::CONTENT_TYPE) {
        None => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Expecting 'Content-Type' to be present",
            ));
        }
        Some(v) => v.to_str().unwrap_or("").to_string(),
    };
    if !matches!(ct.as_str(), "application/json" | "application/x-protobuf") {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Expecting 'Content-Type' of application/json or application/x-protobuf, got '{ct}'"
            ),
        ));
    }
    let body = read_body(&headers, req.into_body(), MAX_BODY).await?;
    Ok((headers, body, ct == "application/json"))
}

fn parse_json_body(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Value>(body)
        .map_err(|e| format!("Failed to parse body into JSON: {e}"))
}

/// A v1 API call decoded into its protobuf type: JSON by `json` (with its required fields
/// checked), protobuf by `protobuf`; their errors are the `400` messages.
async fn read_typed_call<C>(
    req: Request,
    json: fn(&Value) -> Result<C, String>,
    protobuf: fn(&[u8]) -> Result<C, String>,
) -> Result<(HeaderMap, C), Response> {
    let (headers, body, is_json) = read_call_body(req).await?;
    let call = if is_json {
        parse_json_body(&body).and_then(|v| json(&v))
    } else {
        protobuf(&body)
    };
    let call = call.map_err(|e| text(StatusCode::BAD_REQUEST, e))?;
    Ok((headers, call))
}

/// The scheduler API: the call decoded into `scheduler::Call` (JSON with its required
/// fields checked, see [`decode_scheduler_json`]).
async fn read_scheduler_call(req: Request) -> Result<(HeaderMap, SchedulerCall), Response> {
    read_typed_call(req, decode_scheduler_json, decode_scheduler_protobuf).await
}

/// The operator API: the call decoded into `master::Call`.
async fn read_operator_call(req: Request) -> Result<(HeaderMap, OperatorCall), Response> {
    read_typed_call(req, decode_operator_json, decode_operator_protobuf).await
}

/// The agent protocol: the call decoded into `capstan.agent.v1.Call`.
async fn read_agent_call(req: Request) -> Result<(HeaderMap, AgentCall), Response> {
    read_typed_call(req, decode_agent_json, decode_agent_protobuf).await
}

/// Response encoding from `Accept`: JSON preferred, then protobuf; a missing header
/// accepts anything (JSON). `None` → 406.
fn negotiate(headers: &HeaderMap) -> Option<Encoding> {
    let Some(a) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(Encoding::Json);
    };
    let types: Vec<&str> = a
        .split(',')
        .map(|m| m.split(';').next().unwrap_or("").trim())
        .collect();
    if types
        .iter()
        .any(|m| matches!(*m, "application/json" | "application/*" | "*/*" | ""))
    {
        Some(Encoding::Json)
    } else if types.contains(&"application/x-protobuf") {
        Some(Encoding::Protobuf)
    } else {
        None
    }
}

fn not_acceptable() -> Response {
    text(
        StatusCode::NOT_ACCEPTABLE,
        "Expecting 'Accept' to allow application/json or application/x-protobuf",
    )
}

fn encoded_response(api: Api, enc: Encoding, v: &Value) -> Response {
    match enc {
        Encoding::Json => json_response(StatusCode::OK, v),
        Encoding::Protobuf => match encode_message(api, enc, v, true) {
            Some(b) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                b,
            )
                .into_response(),
            None => text(
                StatusCode::NOT_ACCEPTABLE,
                "This response cannot be encoded as protobuf",
            ),
        },
    }
}

async fn scheduler(app: App, req: Request) -> Response {
    // Strict mode: the account that authenticated the call (nodes and permissive mode: none).
    let caller = match req.extensions().get::<Principal>() {
        Some(Principal::Account { uid, .. }) => Some(uid.clone()),
        _ => None,
    };
    let (headers, mut call) = match read_scheduler_call(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let stream_id = headers
        .get(STREAM_ID)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    if call.is_subscribe() {
        if stream_id.is_some() {
            return text(
                StatusCode::BAD_REQUEST,
                "Expecting 'Mesos-Stream-Id' header to be absent for SUBSCRIBE calls",
            );
        }
        let Some(enc) = negotiate(&headers) else {
            return not_acceptable();
        };
        return match app
            .core
            .call(move |c, now| {
                if let Some(uid) = &caller {
                    c.authorize_scheduler_call(&mut call.call, uid)?;
                }
                c.scheduler_subscribe(&call.call, enc, now)
            })
            .await
        {
            Ok(Ok((sid, rx))) => stream_response(rx, app.core.durability(), enc, Some(sid)),
            Ok(Err(e)) | Err(e) => api_error(e),
        };
    }
    match app
        .core
        .call(move |c, now| {
            if let Some(uid) = &caller {
                c.authorize_scheduler_call(&mut call.call, uid)?;
            }
            c.scheduler_call(&call, stream_id.as_deref(), now)
        })
        .await
    {
        Ok(Ok(None)) => StatusCode::ACCEPTED.into_response(),
        Ok(Ok(Some(Value::Null))) => StatusCode::OK.into_response(),
        Ok(Ok(Some(v))) => encoded_response(
            Api::Scheduler,
            negotiate(&headers).unwrap_or(Encoding::Json),
            &v,
        ),
        Ok(Err(e)) | Err(e) => api_error(e),
    }
}

/// What an operator API call needs: reads (`GET_*`) and SUBSCRIBE a viewer, draining or
/// reactivating an agent an operator, tearing down a framework or marking an agent gone an administrator.
fn operator_access(call: &OperatorCall) -> Access {
    use capstan_proto::mesos::v1::master::call::Type;
    match call.r#type() {
        Type::Subscribe => Access::Role(Role::Viewer),
        t if t.as_str_name().starts_with("GET_") => Access::Role(Role::Viewer),
        Type::Teardown | Type::MarkAgentGone => Access::Role(Role::Admin),
        _ => Access::Role(Role::Operator),
    }
}

async fn operator(app: App, req: Request) -> Response {
    let extensions = req.extensions().clone();
    let (headers, call) = match read_operator_call(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let what = format!("call {} on the operator API", call.r#type().as_str_name());
    if let Some(refusal) =
        capstan_runtime::auth::refusal(&extensions, operator_access(&call), &what)
        && !drains_itself(&app, &extensions, &call).await
    {
        return refusal;
    }
    let Some(enc) = negotiate(&headers) else {
        return not_acceptable();
    };
    match app
        .core
        .call(move |c, now| c.operator_call(&call, enc, now))
        .await
    {
        Ok(Ok(OperatorReply::Json(v))) => encoded_response(Api::Operator, enc, &v),
        Ok(Ok(OperatorReply::Empty)) => StatusCode::OK.into_response(),
        Ok(Ok(OperatorReply::Stream(rx))) => stream_response(rx, app.core.durability(), enc, None),
        Ok(Err(e)) | Err(e) => api_error(e),
    }
}

/// Whether `call` is an agent node draining itself (`capstan cluster leave` and
/// `capstan-uninstall` on the agent): its certificate (named for its hostname) is otherwise
/// only a viewer's, so that one agent cannot drain the others.
async fn drains_itself(app: &App, extensions: &http::Extensions, call: &OperatorCall) -> bool {
    use capstan_proto::mesos::v1::master::call::Type;
    use capstan_types::access::{NodeRole, Principal};
    let Some(Principal::Node {
        name,
        role: NodeRole::Agent,
    }) = extensions.get::<Principal>()
    else {
        return false;
    };
    let Some(id) = (call.r#type() == Type::DrainAgent)
        .then_some(call.drain_agent.as_ref())
        .flatten()
        .map(|d| capstan_types::AgentId::from(d.agent_id.value.clone()))
    else {
        return false;
    };
    let name = name.clone();
    app.core
        .read(move |c| c.agent_hostname(&id) == Some(name.as_str()))
        .await
        .unwrap_or(false)
}

async fn agent(app: App, req: Request) -> Response {
    use capstan_proto::capstan::agent::v1::call::Type;
    let (headers, call) = match read_agent_call(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if call.r#type == Some(Type::Subscribe as i32) {
        let Some(enc) = negotiate(&headers) else {
            return not_acceptable();
        };
        let sid = uuid::Uuid::new_v4().to_string();
        return match app
            .core
            .call(move |c, now| c.agent_subscribe(&call, enc, now))
            .await
        {
            Ok(Ok(rx)) => stream_response(rx, app.core.durability(), enc, Some(sid)),
            Ok(Err(e)) | Err(e) => api_error(e),
        };
    }
    match app.core.call(move |c, now| c.agent_call(&call, now)).await {
        Ok(Ok(())) => StatusCode::ACCEPTED.into_response(),
        Ok(Err(e)) | Err(e) => api_error(e),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn routing_is_longest_prefix_on_path_components() {
        assert_eq!(route("/api/v1/scheduler"), Some(Route::Scheduler));
        assert_eq!(route("/api/v1/operator"), Some(Route::Operator));
        assert_eq!(route("/api/v1"), Some(Route::Operator));
        assert_eq!(route("/api/v1x"), None);
        assert_eq!(route("/master/state.json"), Some(Route::State));
        assert_eq!(route("/master/redirect"), Some(Route::Redirect));
        assert_eq!(route("/master/redirect/x"), None);
        assert_eq!(route("/version"), Some(Route::Version));
        assert_eq!(route("/master/state-summary"), Some(Route::StateSummary));
        assert_eq!(route("/state-summary"), Some(Route::StateSummary));
        assert_eq!(route("/master/teardown"), Some(Route::Teardown));
        assert_eq!(route("/master/shutdown"), Some(Route::Teardown));
        assert_eq!(route("/master/state-summaryx"), None);
        assert_eq!(route("/"), None);
        assert_eq!(route("/nothing/here"), None);
    }

    fn body_of(chunks: usize, size: usize) -> Body {
        let stream = futures::stream::iter(
            (0..chunks).map(move |_| Ok::<_, Infallible>(Bytes::from(vec![b' '; size]))),
        );
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_is_413_and_one_at_the_limit_is_read() {
        let h = HeaderMap::new();
        let r = read_body(&h, body_of(5, 1000), 4999)
            .await
            .expect_err("over the limit");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let b = read_body(&h, body_of(5, 1000), 5000)
            .await
            .expect("at the limit");
        assert_eq!(b.len(), 5000);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5001"));
        let r = read_body(&h, Body::empty(), 5000)
            .await
            .expect_err("announced over the limit");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn methods_other_than_the_routes_own_are_405_with_allow() {
        let allow =
            |r, m: Method| method_not_allowed(r, &m).map(|r| r.headers()[header::ALLOW].clone());
        assert_eq!(allow(Route::State, Method::GET), None);
        assert_eq!(allow(Route::State, Method::HEAD), None);
        assert_eq!(allow(Route::State, Method::DELETE).unwrap(), "GET, HEAD");
        assert_eq!(allow(Route::Version, Method::TRACE).unwrap(), "GET, HEAD");
        assert_eq!(allow(Route::Scheduler, Method::POST), None);
        assert_eq!(allow(Route::Agent, Method::GET).unwrap(), "POST");
        assert_eq!(allow(Route::Teardown, Method::GET).unwrap(), "POST");
        assert_eq!(
            allow(Route::StateSummary, Method::POST).unwrap(),
            "GET, HEAD"
        );
    }

    #[test]
    fn accept_header_rules() {
        let mut h = HeaderMap::new();
        assert_eq!(negotiate(&h), Some(Encoding::Json));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-protobuf"),
        );
        assert_eq!(negotiate(&h), Some(Encoding::Protobuf));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert_eq!(negotiate(&h), None);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html, application/json;q=0.9"),
        );
        assert_eq!(negotiate(&h), Some(Encoding::Json));
    }

    fn scheduler_request(content_type: &str, body: Vec<u8>) -> Request {
        http::Request::builder()
            .method(Method::POST)
            .uri("/api/v1/scheduler")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("a request")
    }

    #[tokio::test]
    async fn a_json_subscribe_missing_a_required_field_is_400_naming_it() {
        let call = serde_json::json!({"type": "SUBSCRIBE",
            "subscribe": {"framework_info": {"name": "n"}}});
        let req = scheduler_request("application/json", call.to_string().into_bytes());
        let r = read_scheduler_call(req).await.expect_err("refused");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("a body");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.starts_with("Failed to validate scheduler::Call"),
            "{text}"
        );
        assert!(text.contains("framework_info.user"), "{text}");
    }

    #[tokio::test]
    async fn a_protobuf_and_a_json_accept_read_as_the_same_typed_call() {
        use capstan_proto::Message;
        let call = serde_json::json!({"type": "ACCEPT", "framework_id": {"value": "f"},
            "accept": {"offer_ids": [{"value": "o"}], "operations": [{"type": "LAUNCH",
                "launch": {"task_infos": [{"name": "t", "task_id": {"value": "t"},
                    "agent_id": {"value": "a"}, "command": {"value": "true"},
                    "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}]}]}}],
                "filters": {"refuse_seconds": 0}}});
        let typed: capstan_proto::mesos::v1::scheduler::Call =
            capstan_proto::from_json(&call).expect("a Call");
        let (_, json) = read_scheduler_call(scheduler_request(
            "application/json",
            call.to_string().into_bytes(),
        ))
        .await
        .expect("JSON read");
        let (_, pb) = read_scheduler_call(scheduler_request(
            "application/x-protobuf",
            typed.encode_to_vec(),
        ))
        .await
        .expect("protobuf read");
        assert_eq!(json, pb);
        assert_eq!(json.call, typed);
        assert!(!json.is_subscribe());
    }

    fn post(path: &str, content_type: &str, body: Vec<u8>) -> Request {
        http::Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("a request")
    }

    async fn text_of(r: Response) -> String {
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("a body");
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn a_malformed_agent_call_is_400_naming_the_problem() {
        let json = |v: serde_json::Value| {
            post(
                "/api/capstan/agent/v1",
                "application/json",
                v.to_string().into_bytes(),
            )
        };
        // A SUBSCRIBE without the agent's hostname: named from its message, as before.
        let r = read_agent_call(json(serde_json::json!({"type": "SUBSCRIBE",
            "subscribe": {"agent_info": {"resources": []}}})))
        .await
        .expect_err("refused");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let text = text_of(r).await;
        assert!(text.starts_with("Failed to validate agent::Call"), "{text}");
        assert!(
            text.contains("Missing required fields: agent_info.hostname"),
            "{text}"
        );
        // An UPDATE whose status misses its task id.
        let r = read_agent_call(json(serde_json::json!({"type": "UPDATE",
            "agent_id": {"value": "a"}, "update": {"framework_id": {"value": "f"},
                "status": {"state": "TASK_RUNNING", "uuid": "AAAAAAAAAAAAAAAAAAAAAA=="}}})))
        .await
        .expect_err("refused");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let text = text_of(r).await;
        assert!(
            text.contains("Expecting 'update.status.task_id' to be present"),
            "{text}"
        );
        // A field of the wrong type, and a uuid that is not base64.
        let r = read_agent_call(json(serde_json::json!({"type": "PONG",
            "agent_id": {"value": 7}})))
        .await
        .expect_err("refused");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let text = text_of(r).await;
        assert!(
            text.starts_with("Failed to convert JSON into Call protobuf: agent_id.value"),
            "{text}"
        );
        let r = read_agent_call(json(serde_json::json!({"type": "UPDATE",
            "agent_id": {"value": "a"}, "update": {"framework_id": {"value": "f"},
                "status": {"task_id": {"value": "t"}, "state": "TASK_RUNNING", "uuid": "***"}}})))
        .await
        .expect_err("refused");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let text = text_of(r).await;
        assert!(
            text.contains("'update.status.uuid' is not valid base64"),
            "{text}"
        );
        // Undecodable protobuf, and protobuf without a type.
        let r = read_agent_call(post(
            "/api/capstan/agent/v1",
            "application/x-protobuf",
            b"\xff\xff\xff".to_vec(),
        ))
        .await
        .expect_err("refused");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(
            text_of(r)
                .await
                .starts_with("Failed to parse body into Call protobuf"),
        );
        let r = read_agent_call(post(
            "/api/capstan/agent/v1",
            "application/x-protobuf",
            Vec::new(),
        ))
        .await
        .expect_err("refused");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(text_of(r).await, "Expecting 'type' to be present");
    }

    #[tokio::test]
    async fn a_malformed_operator_call_is_400_naming_the_problem() {
        let json =
            |v: serde_json::Value| post("/api/v1", "application/json", v.to_string().into_bytes());
        let r = read_operator_call(json(serde_json::json!({"type": "TEARDOWN",
            "teardown": {}})))
        .await
        .expect_err("refused");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let text = text_of(r).await;
        assert!(
            text.starts_with("Failed to validate master::Call"),
            "{text}"
        );
        assert!(
            text.contains("Expecting 'teardown.framework_id' to be present"),
            "{text}"
        );
        let r = read_operator_call(json(serde_json::json!({"type": "DRAIN_AGENT",
            "drain_agent": {"agent_id": {"value": "a"}, "mark_gone": [1]}})))
        .await
        .expect_err("refused");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let text = text_of(r).await;
        assert!(
            text.starts_with("Failed to convert JSON into Call protobuf: drain_agent.mark_gone"),
            "{text}"
        );
        let r = read_operator_call(json(serde_json::json!({"type": "GET_STATE!"})))
            .await
            .expect_err("refused");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(text_of(r).await.contains("unknown call type 'GET_STATE!'"));
    }

    /// `call` read from `path` as JSON and as protobuf, by `read`: both must be `typed`.
    async fn reads_the_same<C, F>(
        path: &str,
        call: &serde_json::Value,
        read: impl Fn(Request) -> F,
    ) -> C
    where
        C: capstan_proto::Message
            + capstan_proto::prost::Name
            + Default
            + PartialEq
            + std::fmt::Debug,
        F: std::future::Future<Output = Result<(HeaderMap, C), Response>>,
    {
        let typed: C = capstan_proto::from_json(call).expect("a Call");
        let json = read(post(
            path,
            "application/json",
            call.to_string().into_bytes(),
        ));
        let (_, json) = json.await.expect("JSON read");
        let pb = read(post(path, "application/x-protobuf", typed.encode_to_vec()));
        let (_, pb) = pb.await.expect("protobuf read");
        assert_eq!(json, pb);
        assert_eq!(json, typed);
        json
    }

    #[tokio::test]
    async fn protobuf_and_json_operator_and_agent_calls_read_as_the_same_typed_call() {
        let drain = serde_json::json!({"type": "DRAIN_AGENT",
            "drain_agent": {"agent_id": {"value": "a"}, "mark_gone": true}});
        let json: OperatorCall = reads_the_same("/api/v1", &drain, read_operator_call).await;
        assert!(json.drain_agent.as_ref().is_some_and(|d| d.mark_gone()));
        let pong = serde_json::json!({"type": "PONG", "agent_id": {"value": "a"}});
        let _: AgentCall = reads_the_same("/api/capstan/agent/v1", &pong, read_agent_call).await;
    }

    #[test]
    fn operator_calls_need_the_role_of_their_type() {
        let access = |v: serde_json::Value| {
            operator_access(&capstan_proto::from_json::<OperatorCall>(&v).expect("a Call"))
        };
        let t = |ty: &str| serde_json::json!({"type": ty});
        assert_eq!(access(t("GET_STATE")), Access::Role(Role::Viewer));
        assert_eq!(access(t("SUBSCRIBE")), Access::Role(Role::Viewer));
        assert_eq!(access(t("DRAIN_AGENT")), Access::Role(Role::Operator));
        assert_eq!(access(t("REACTIVATE_AGENT")), Access::Role(Role::Operator));
        assert_eq!(access(t("UNKNOWN")), Access::Role(Role::Operator));
        assert_eq!(access(t("TEARDOWN")), Access::Role(Role::Admin));
        assert_eq!(access(t("MARK_AGENT_GONE")), Access::Role(Role::Admin));
    }

    #[test]
    fn form_bodies_decode_like_mesos_query_strings() {
        let f = decode_form(b"frameworkId=abc-0001").expect("decodes");
        assert_eq!(f["frameworkId"], "abc-0001");
        let f = decode_form(b"a=1&frameworkId=x%2Dy+z;b&frameworkId=last").expect("decodes");
        assert_eq!(f["frameworkId"], "last");
        assert_eq!(f["a"], "1");
        assert_eq!(f["b"], "");
        assert_eq!(
            decode_form(b"frameworkId=x%2Dy+z").expect("decodes")["frameworkId"],
            "x-y z"
        );
        assert!(decode_form(b"").expect("empty").is_empty());
        assert!(decode_form(b"frameworkId=%zz").is_err());
        assert!(decode_form(b"frameworkId=%4").is_err());
        assert!(decode_form(b"frameworkId=%ff").is_err());
        assert!(decode_form(&[0xff, b'=', b'1']).is_err());
    }
}
