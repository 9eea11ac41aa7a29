//! A typed async client of the v2 API of `capstan apps` (and of Marathon): apps, tasks,
//! deployments, groups, `/v2/info`, `/v2/leader` and the event stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::app::AppDefinition;
use crate::error::ClientError;
use crate::path::PathId;
use crate::sse::{Event, SseDecoder};
use crate::time::Timestamp;
use crate::views::{App, Deployment, DeploymentResult, Group, Info, Task};

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request (not the event stream) may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What `GET /v2/apps` embeds in each app (`embed=apps.…`). Counts and deployments are always
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEmbed {
    Tasks,
    LastTaskFailure,
    Readiness,
}

impl AppEmbed {
    fn as_str(self) -> &'static str {
        match self {
            AppEmbed::Tasks => "apps.tasks",
            AppEmbed::LastTaskFailure => "apps.lastTaskFailure",
            AppEmbed::Readiness => "apps.readiness",
        }
    }
}

/// Which apps `GET /v2/apps` lists, and what it embeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListApps {
    pub embed: Vec<AppEmbed>,
    /// Apps whose id contains this.
    pub id: Option<String>,
    /// Apps whose command contains this.
    pub cmd: Option<String>,
    /// A label selector: `k`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, joined by `,`.
    pub label: Option<String>,
}

impl ListApps {
    /// Every app, with what `embed` names.
    pub fn embedding(embed: &[AppEmbed]) -> ListApps {
        ListApps {
            embed: embed.to_vec(),
            ..ListApps::default()
        }
    }
}

/// Options of a task kill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillTasks {
    /// Lower the apps' instances by the tasks killed (a deployment), instead of replacing them.
    pub scale: bool,
    /// Forget the tasks at once, as if they were expunged.
    pub wipe: bool,
    /// Override the lock of a deployment in progress (with `scale`).
    pub force: bool,
    /// Only the tasks on this agent host (for the kill of an app's tasks).
    pub host: Option<String>,
}

/// What a task kill did: the tasks being killed, or (with `scale`) the deployment that
/// lowers the instances.
#[derive(Debug, Clone, PartialEq)]
pub enum Killed {
    Tasks(Vec<Task>),
    Deployment(DeploymentResult),
}

/// A new app: what Marathon made of the definition, and the deployment that starts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub app: App,
    pub deployment_id: String,
}

/// A client of one Marathon (or apps) endpoint, such as `http://127.0.0.1:8080`. Cheap to
/// clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// Answers read fully: status, headers and body.
struct Answer {
    request: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|source| ClientError::Decode {
            request: self.request.clone(),
            status: self.status.as_u16(),
            source,
        })
    }
}

impl Client {
    /// A client of the API at `base_url` (`http://host:port`, a trailing `/` is dropped).
    pub fn new(base_url: impl Into<String>) -> Client {
        let http = capstan_http_client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_default();
        Client::with_http(base_url, http)
    }

    /// A client sending through `http` (its own timeouts, proxies and TLS).
    pub fn with_http(base_url: impl Into<String>, http: reqwest::Client) -> Client {
        let mut base = base_url.into();
        while base.ends_with('/') {
            base.pop();
        }
        Client { http, base }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    // ---------------------------------------------------------------------------- plumbing

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{path}{}", self.base, query_string(query));
        let request = format!("{method} {url}");
        let mut r = self
            .http
            .request(method, &url)
            .timeout(REQUEST_TIMEOUT)
            .header(ACCEPT, "application/json");
        if let Some(b) = body {
            r = r.header(CONTENT_TYPE, "application/json").body(b);
        }
        let transport = |source| ClientError::Transport {
            request: request.clone(),
            source,
        };
        let resp = r.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(ClientError::from_status(request, status.as_u16(), &body));
        }
        Ok(Answer {
            request,
            status,
            headers,
            body,
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        self.send(Method::GET, path, query, None).await?.json()
    }

    async fn send_json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: &impl Serialize,
    ) -> Result<Answer, ClientError> {
        let body = serde_json::to_vec(body).map_err(|source| ClientError::Encode {
            request: format!("{method} {}{path}", self.base),
            source,
        })?;
        self.send(method, path, query, Some(body)).await
    }

    // -------------------------------------------------------------------------------- apps

    /// `GET /v2/apps`: the apps `q` selects.
    pub async fn list_apps(&self, q: &ListApps) -> Result<Vec<App>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Apps {
            apps: Vec<App>,
        }
        let mut query: Vec<(&str, String)> = q
            .embed
            .iter()
            .map(|e| ("embed", e.as_str().to_string()))
            .collect();
        for (k, v) in [("id", &q.id), ("cmd", &q.cmd), ("label", &q.label)] {
            if let Some(v) = v {
                query.push((k, v.clone()));
            }
        }
        Ok(self.get::<Apps>("/v2/apps", &query).await?.apps)
    }

    /// `GET /v2/apps/{id}`: the app with its tasks.
    pub async fn get_app(&self, id: &PathId) -> Result<App, ClientError> {
        #[derive(serde::Deserialize)]
        struct One {
            app: App,
        }
        Ok(self.get::<One>(&app_path(id, ""), &[]).await?.app)
    }

    /// `GET /v2/apps/{id}/versions`: the app's versions, newest first.
    pub async fn app_versions(&self, id: &PathId) -> Result<Vec<Timestamp>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Versions {
            versions: Vec<Timestamp>,
        }
        let path = app_path(id, "/versions");
        Ok(self.get::<Versions>(&path, &[]).await?.versions)
    }

    /// `GET /v2/apps/{id}/versions/{version}`: the definition as it was in `version`.
    pub async fn app_version(
        &self,
        id: &PathId,
        version: Timestamp,
    ) -> Result<AppDefinition, ClientError> {
        let path = app_path(id, &format!("/versions/{}", encode(&version.to_string())));
        self.get(&path, &[]).await
    }

    /// `POST /v2/apps`: creates the app; answers once Marathon has stored it, with the
    /// deployment that starts it. A 409 if it exists, a 422 with violations if invalid.
    pub async fn create_app(&self, def: &AppDefinition) -> Result<Created, ClientError> {
        let a = self.send_json(Method::POST, "/v2/apps", &[], def).await?;
        let app: App = a.json()?;
        let header = a
            .headers
            .get("Marathon-Deployment-Id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let deployment_id = header
            .or_else(|| app.deployments.first().map(|d| d.id.clone()))
            .ok_or(ClientError::Incomplete {
                request: a.request,
                status: a.status.as_u16(),
                missing: "a deployment id",
            })?;
        Ok(Created { app, deployment_id })
    }

    /// `PUT /v2/apps/{id}?partialUpdate=false`: replaces the definition of `def.id` (creating
    /// the app if it does not exist). `force` overrides the lock of a deployment in progress,
    /// which is a 409 otherwise.
    pub async fn update_app(
        &self,
        def: &AppDefinition,
        force: bool,
    ) -> Result<DeploymentResult, ClientError> {
        let query = [
            ("force", force.to_string()),
            ("partialUpdate", "false".into()),
        ];
        self.send_json(Method::PUT, &app_path(&def.id, ""), &query, def)
            .await?
            .json()
    }

    /// `PUT /v2/apps/{id}` with only `fields` (such as `{"instances": 3}`): the fields named
    /// change, the others keep their values.
    pub async fn update_app_fields(
        &self,
        id: &PathId,
        fields: &Value,
        force: bool,
    ) -> Result<DeploymentResult, ClientError> {
        let query = [("force", force.to_string())];
        self.send_json(Method::PUT, &app_path(id, ""), &query, fields)
            .await?
            .json()
    }

    /// Scales the app to `instances`.
    pub async fn scale_app(
        &self,
        id: &PathId,
        instances: u32,
        force: bool,
    ) -> Result<DeploymentResult, ClientError> {
        self.update_app_fields(id, &json!({ "instances": instances }), force)
            .await
    }

    /// `POST /v2/apps/{id}/restart`: replaces every task (rolling, by the upgrade strategy).
    pub async fn restart_app(
        &self,
        id: &PathId,
        force: bool,
    ) -> Result<DeploymentResult, ClientError> {
        let query = [("force", force.to_string())];
        self.send(Method::POST, &app_path(id, "/restart"), &query, None)
            .await?
            .json()
    }

    /// `DELETE /v2/apps/{id}`: stops the app's tasks and forgets it. Without `force` a
    /// deployment in progress for the app is a 409.
    pub async fn delete_app(
        &self,
        id: &PathId,
        force: bool,
    ) -> Result<DeploymentResult, ClientError> {
        let query = [("force", force.to_string())];
        self.send(Method::DELETE, &app_path(id, ""), &query, None)
            .await?
            .json()
    }

    // ------------------------------------------------------------------------------- tasks

    /// `GET /v2/apps/{id}/tasks`.
    pub async fn app_tasks(&self, id: &PathId) -> Result<Vec<Task>, ClientError> {
        Ok(self.get::<Tasks>(&app_path(id, "/tasks"), &[]).await?.tasks)
    }

    /// `GET /v2/tasks`: the tasks of every app.
    pub async fn list_tasks(&self) -> Result<Vec<Task>, ClientError> {
        Ok(self.get::<Tasks>("/v2/tasks", &[]).await?.tasks)
    }

    /// `DELETE /v2/apps/{id}/tasks`: kills the app's tasks (those on `opts.host` if set).
    pub async fn kill_app_tasks(
        &self,
        id: &PathId,
        opts: &KillTasks,
    ) -> Result<Killed, ClientError> {
        let mut query = kill_query(opts);
        if let Some(h) = &opts.host {
            query.push(("host", h.clone()));
        }
        let a = self
            .send(Method::DELETE, &app_path(id, "/tasks"), &query, None)
            .await?;
        killed(&a)
    }

    /// `DELETE /v2/apps/{id}/tasks/{task}`: kills one task of the app.
    pub async fn kill_task(
        &self,
        id: &PathId,
        task_id: &str,
        opts: &KillTasks,
    ) -> Result<Killed, ClientError> {
        let path = app_path(id, &format!("/tasks/{}", encode(task_id)));
        let a = self
            .send(Method::DELETE, &path, &kill_query(opts), None)
            .await?;
        killed(&a)
    }

    /// `POST /v2/tasks/delete`: kills tasks of any apps by id.
    pub async fn kill_tasks(
        &self,
        ids: &[String],
        opts: &KillTasks,
    ) -> Result<Killed, ClientError> {
        let a = self
            .send_json(
                Method::POST,
                "/v2/tasks/delete",
                &kill_query(opts),
                &json!({ "ids": ids }),
            )
            .await?;
        killed(&a)
    }

    // ------------------------------------------------------------------------- deployments

    /// `GET /v2/deployments`: the deployments in progress.
    pub async fn list_deployments(&self) -> Result<Vec<Deployment>, ClientError> {
        self.get("/v2/deployments", &[]).await
    }

    /// `DELETE /v2/deployments/{id}`: without `force`, rolls back (the answer is the
    /// rollback's deployment); with `force`, stops where it is (`None`).
    pub async fn cancel_deployment(
        &self,
        id: &str,
        force: bool,
    ) -> Result<Option<DeploymentResult>, ClientError> {
        let path = format!("/v2/deployments/{}", encode(id));
        let a = self
            .send(Method::DELETE, &path, &[("force", force.to_string())], None)
            .await?;
        if a.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        a.json().map(Some)
    }

    // ------------------------------------------------------------------------------ groups

    /// `GET /v2/groups/{id}` (the root group for `/`), with its apps and groups.
    pub async fn get_group(&self, id: &PathId) -> Result<Group, ClientError> {
        self.get(&group_path(id), &[]).await
    }

    /// `POST /v2/groups`: creates `group` with its apps and groups (a 409 if it exists).
    pub async fn create_group(
        &self,
        group: &Group,
        force: bool,
    ) -> Result<DeploymentResult, ClientError> {
        let query = [("force", force.to_string())];
        self.send_json(Method::POST, "/v2/groups", &query, group)
            .await?
            .json()
    }

    /// `PUT /v2/groups/{id}`: makes the group what `group` says, creating it if needed; apps
    /// of the group missing from `group` are removed.
    pub async fn put_group(
        &self,
        group: &Group,
        force: bool,
    ) -> Result<DeploymentResult, ClientError> {
        let query = [("force", force.to_string())];
        self.send_json(Method::PUT, &group_path(&group.id), &query, group)
            .await?
            .json()
    }

    /// `DELETE /v2/groups/{id}`: removes the group and every app below it.
    pub async fn delete_group(
        &self,
        id: &PathId,
        force: bool,
    ) -> Result<DeploymentResult, ClientError> {
        let query = [("force", force.to_string())];
        self.send(Method::DELETE, &group_path(id), &query, None)
            .await?
            .json()
    }

    // ------------------------------------------------------------------------------ server

    /// `GET /v2/info`.
    pub async fn info(&self) -> Result<Info, ClientError> {
        self.get("/v2/info", &[]).await
    }

    /// `GET /v2/leader`: `host:port` of the leader.
    pub async fn leader(&self) -> Result<String, ClientError> {
        #[derive(serde::Deserialize)]
        struct Leader {
            leader: String,
        }
        Ok(self.get::<Leader>("/v2/leader", &[]).await?.leader)
    }

    /// `GET /v2/events`: the event stream, of the `event_types` named (every event if empty).
    /// Events published after the answer arrived are delivered; the first is
    /// `event_stream_attached` when it is not filtered out.
    pub async fn events(&self, event_types: &[&str]) -> Result<EventStream, ClientError> {
        let query: Vec<(&str, String)> = event_types
            .iter()
            .map(|t| ("event_type", (*t).to_string()))
            .collect();
        let url = format!("{}/v2/events{}", self.base, query_string(&query));
        let request = format!("GET {url}");
        let resp = self
            .http
            .get(&url)
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                request: request.clone(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(ClientError::from_status(request, status.as_u16(), &body));
        }
        Ok(EventStream {
            request,
            body: Box::pin(resp.bytes_stream()),
            decoder: SseDecoder::default(),
            ready: VecDeque::new(),
            done: false,
        })
    }
}

#[derive(serde::Deserialize)]
struct Tasks {
    tasks: Vec<Task>,
}

fn kill_query(opts: &KillTasks) -> Vec<(&'static str, String)> {
    vec![
        ("scale", opts.scale.to_string()),
        ("wipe", opts.wipe.to_string()),
        ("force", opts.force.to_string()),
    ]
}

/// The answer of a task kill: `{"tasks": [...]}`, `{"task": {...}}` or a deployment.
fn killed(a: &Answer) -> Result<Killed, ClientError> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Answer {
        Deployment(DeploymentResult),
        Tasks { tasks: Vec<Task> },
        Task { task: Option<Box<Task>> },
    }
    Ok(match a.json::<Answer>()? {
        Answer::Deployment(d) => Killed::Deployment(d),
        Answer::Tasks { tasks } => Killed::Tasks(tasks),
        Answer::Task { task } => Killed::Tasks(task.into_iter().map(|t| *t).collect()),
    })
}

/// The events of `GET /v2/events`, as they arrive.
pub struct EventStream {
    request: String,
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    decoder: SseDecoder,
    ready: VecDeque<Event>,
    done: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("request", &self.request)
            .field("buffered", &self.ready.len())
            .field("done", &self.done)
            .finish()
    }
}

impl EventStream {
    /// The next event; `None` once the server closed the stream. After an error the stream
    /// is over.
    pub async fn next_event(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            match self.body.next().await {
                None => self.done = true,
                Some(Err(source)) => {
                    self.done = true;
                    return Some(Err(ClientError::Transport {
                        request: self.request.clone(),
                        source,
                    }));
                }
                Some(Ok(chunk)) => match self.decoder.push(&chunk) {
                    Ok(events) => self.ready.extend(events),
                    Err(source) => {
                        self.done = true;
                        return Some(Err(ClientError::Events {
                            request: self.request.clone(),
                            source,
                        }));
                    }
                },
            }
        }
    }

    /// The events as a [`Stream`].
    pub fn into_stream(self) -> impl Stream<Item = Result<Event, ClientError>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            let e = s.next_event().await?;
            Some((e, s))
        })
    }
}

/// `/v2/apps/a/b{suffix}` for `/a/b`.
fn app_path(id: &PathId, suffix: &str) -> String {
    format!("/v2/apps{}{suffix}", encoded_path(id))
}

/// `/v2/groups/a/b` for `/a/b`, `/v2/groups` for the root group.
fn group_path(id: &PathId) -> String {
    format!("/v2/groups{}", encoded_path(id))
}

/// `/a/b` with every segment percent-encoded (valid ids need none; invalid ones must not
/// reach the query or another path).
fn encoded_path(id: &PathId) -> String {
    id.segments()
        .iter()
        .map(|s| format!("/{}", encode(s)))
        .collect()
}

/// `?k=v&…` with keys and values percent-encoded, or nothing.
fn query_string(query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("?{}", pairs.join("&"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_queries_are_percent_encoded() {
        assert_eq!(app_path(&PathId::parse("/grp/web"), ""), "/v2/apps/grp/web");
        assert_eq!(
            app_path(&PathId::parse("/a?b=c#d"), "/tasks"),
            "/v2/apps/a%3Fb%3Dc%23d/tasks"
        );
        assert_eq!(group_path(&PathId::root()), "/v2/groups");
        assert_eq!(
            query_string(&[
                ("label", "k in (a,b)".into()),
                ("embed", "apps.tasks".into())
            ]),
            "?label=k%20in%20%28a%2Cb%29&embed=apps.tasks"
        );
        assert_eq!(query_string(&[]), "");
        assert_eq!(Client::new("http://h:8080//").base_url(), "http://h:8080");
    }
}
