//! The Docker containerizer: a [`ContainerSpec`] becomes an Engine API create body; the
//! container's stdout and stderr are copied into the sandbox by a log follower; waits, kills
//! and removals go through the Engine API.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerUpdateBody, HostConfig, PortBinding,
    ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use capstan_proto::mesos::v1::{NetworkInfo, network_info};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{
    ContainerError, ContainerRef, Containerizer, LaunchError, LaunchSpec, Launched,
    ListedContainer, Reattached, Termination,
};
use crate::spec::{ContainerSpec, LABEL_AGENT, NetworkMode};

/// How long `wait` lets the log follower drain after the container exited.
const LOG_DRAIN: Duration = Duration::from_secs(10);

/// The port of the masters' catalog, whose image store (`GET /package/images/<name>`) serves
/// `docker save` archives of imported images to agents of clusters with no registry.
pub const IMAGE_STORE_PORT: u16 = 7070;

/// The image stores of the cluster's own masters (`host:port` of their Mesos API): the
/// catalog on each master's host, `<scheme>://<host>:<port>`, once each, in order. Only these:
/// an agent never loads an image from anywhere else. Pure.
pub fn image_store_urls(masters: &[String], port: u16, scheme: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in masters {
        let hostport = m
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let host = if let Some(rest) = hostport.strip_prefix('[') {
            match rest.split_once(']') {
                Some((h, _)) => format!("[{h}]"),
                None => continue,
            }
        } else {
            hostport
                .rsplit_once(':')
                .map_or(hostport, |(h, _)| h)
                .to_owned()
        };
        if host.is_empty() {
            continue;
        }
        let url = format!("{scheme}://{host}:{port}");
        if !out.contains(&url) {
            out.push(url);
        }
    }
    out
}

/// The name the image store files an image under: `name:tag` (`:latest` when untagged), or
/// `name@digest`. Pure.
pub fn store_name(image: &str) -> String {
    match split_image(image) {
        (name, "") => name.to_owned(),
        (name, tag) => format!("{name}:{tag}"),
    }
}

/// Translates a spec into the Engine API's create body. Pure.
pub fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut port_map: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for b in &spec.port_bindings {
        port_map
            .entry(format!("{}/{}", b.container_port, b.protocol))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(b.host_ip.clone()),
                host_port: Some(b.host_port.to_string()),
            });
    }
    let mut exposed: Vec<String> = port_map.keys().cloned().collect();
    exposed.sort();
    let extra = &spec.extra;
    let host_config = HostConfig {
        binds: Some(spec.binds.clone()),
        network_mode: Some(spec.network.docker_name().to_owned()),
        port_bindings: (!port_map.is_empty()).then_some(port_map),
        cpu_shares: Some(spec.cpu_shares),
        cpu_period: spec.cpu_quota.map(|(p, _)| p),
        cpu_quota: spec.cpu_quota.map(|(_, q)| q),
        memory: spec.memory_bytes,
        // No swap beyond the limit, so exceeding it really OOMs.
        memory_swap: extra.memory_swap.or(spec.memory_bytes),
        privileged: Some(spec.privileged),
        // Least privilege: no setuid escalation inside the container (Docker's default
        // seccomp profile applies as no parameter may change it), and a process cap.
        security_opt: (!spec.privileged).then(|| vec!["no-new-privileges:true".to_owned()]),
        pids_limit: Some(spec.pids_limit),
        extra_hosts: (!extra.add_hosts.is_empty()).then(|| extra.add_hosts.clone()),
        cap_add: (!extra.cap_add.is_empty()).then(|| extra.cap_add.clone()),
        cap_drop: (!extra.cap_drop.is_empty()).then(|| extra.cap_drop.clone()),
        dns: (!extra.dns.is_empty()).then(|| extra.dns.clone()),
        dns_search: (!extra.dns_search.is_empty()).then(|| extra.dns_search.clone()),
        shm_size: extra.shm_size,
        init: extra.init,
        readonly_rootfs: extra.read_only,
        tmpfs: (!extra.tmpfs.is_empty()).then(|| {
            extra
                .tmpfs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        ulimits: (!extra.ulimits.is_empty()).then(|| {
            extra
                .ulimits
                .iter()
                .map(|(name, soft, hard)| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(*soft),
                    hard: Some(*hard),
                })
                .collect()
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: extra.hostname.clone(),
        user: extra.user.clone(),
        working_dir: extra.workdir.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        open_stdin: extra.open_stdin,
        stdin_once: extra.stdin_once,
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Classifies an Engine API error.
fn classify(name: &str, e: DockerError) -> ContainerError {
    match e {
        DockerError::DockerResponseServerError {
            status_code: 404, ..
        } => ContainerError::NotFound(name.to_owned()),
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => ContainerError::Other(format!("Docker engine answered {status_code}: {message}")),
        other => ContainerError::Unavailable(other.to_string()),
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn server_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Containers of one agent, driven through the Docker Engine API.
pub struct DockerContainerizer {
    docker: Docker,
    pull_timeout: Duration,
    /// The masters' image stores ([`image_store_urls`]), tried when an image is missing.
    image_stores: Vec<String>,
    http: reqwest::Client,
    /// Log followers by container name. Never held across an await.
    logs: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl DockerContainerizer {
    /// Connects to `host` (or `DOCKER_HOST` / the local socket) and negotiates the API version.
    /// An engine that is down at start-up is fine: requests fail until it is back.
    pub async fn connect(host: Option<&str>, pull_timeout: Duration) -> Result<Self, DockerError> {
        let docker = match host {
            Some(h) => Docker::connect_with_socket(h, 120, bollard::API_DEFAULT_VERSION)?,
            None => Docker::connect_with_local_defaults()?,
        };
        let docker = match docker.clone().negotiate_version().await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %capstan_runtime::Chain(&e), "Cannot negotiate the Docker API version; assuming 1.41");
                let pinned = bollard::ClientVersion {
                    major_version: 1,
                    minor_version: 41,
                };
                match host {
                    Some(h) => Docker::connect_with_socket(h, 120, &pinned)?,
                    None => Docker::connect_with_socket(
                        &std::env::var("DOCKER_HOST")
                            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned()),
                        120,
                        &pinned,
                    )?,
                }
            }
        };
        Ok(DockerContainerizer {
            docker,
            pull_timeout,
            image_stores: Vec::new(),
            http: capstan_http_client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            logs: Mutex::new(HashMap::new()),
        })
    }

    /// Missing images are first looked for in these image stores (the cluster's masters,
    /// [`image_store_urls`]) and `docker load`ed from there, before a registry pull. With
    /// `tls` (strict mode) the fetches present the node's certificate and trust only the CA.
    pub fn with_image_stores(
        mut self,
        stores: Vec<String>,
        tls: Option<&rustls::ClientConfig>,
    ) -> Self {
        self.image_stores = stores;
        if let Some(tls) = tls {
            let builder = capstan_http_client::builder().connect_timeout(Duration::from_secs(5));
            if let Ok(http) = capstan_http_client::with_tls(builder, tls).build() {
                self.http = http;
            }
        }
        self
    }

    /// Fetches `image`'s archive from the first image store that has it and loads it into
    /// the engine. `Ok(store)` once the engine has the image; `Err` says why not (no store
    /// has it, or the load failed).
    async fn load_from_store(&self, image: &str) -> Result<String, String> {
        let name = store_name(image);
        let mut reasons = Vec::new();
        for store in &self.image_stores {
            let url = format!("{store}/package/images/{name}");
            let resp = match self.http.get(&url).send().await {
                Ok(r) => r,
                Err(e) => {
                    reasons.push(format!("{store}: {e}"));
                    continue;
                }
            };
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                reasons.push(format!("{store}: not in its store"));
                continue;
            }
            if !resp.status().is_success() {
                reasons.push(format!("{store}: HTTP {}", resp.status()));
                continue;
            }
            info!(image, store = %store, "Loading the image from the cluster's image store");
            let mut load = self.docker.import_image_stream(
                bollard::query_parameters::ImportImageOptions {
                    quiet: true,
                    ..Default::default()
                },
                resp.bytes_stream(),
                None,
            );
            let mut failed = None;
            while let Some(item) = load.next().await {
                match item {
                    Ok(info) => {
                        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                            failed = Some(detail);
                        }
                    }
                    Err(e) => failed = Some(server_message(&e)),
                }
            }
            if let Some(reason) = failed {
                reasons.push(format!("{store}: docker load: {reason}"));
                continue;
            }
            match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(store.clone()),
                Err(e) => reasons.push(format!(
                    "{store}: the loaded archive did not hold {image}: {}",
                    server_message(&e)
                )),
            }
        }
        Err(reasons.join("; "))
    }

    /// The underlying client.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// True when the engine answers.
    pub async fn ping(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.docker.ping()).await,
            Ok(Ok(_))
        )
    }

    /// Containers carrying this agent's id label and name prefix, running or not.
    pub async fn list(
        &self,
        agent_id: &str,
        prefix: &str,
    ) -> Result<Vec<ListedContainer>, ContainerError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_AGENT}={agent_id}")],
        )]);
        let mut named = HashMap::from([("name".to_owned(), vec![prefix.to_owned()])]);
        let mut out = Vec::new();
        // Both the label and the name prefix identify our containers; take the union.
        for f in [filters, std::mem::take(&mut named)] {
            let listed = self
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(f),
                    ..Default::default()
                }))
                .await
                .map_err(|e| classify("(list)", e))?;
            for c in listed {
                let Some(name) = c
                    .names
                    .iter()
                    .flatten()
                    .map(|n| n.trim_start_matches('/'))
                    .find(|n| n.starts_with(prefix))
                else {
                    continue;
                };
                if out.iter().any(|l: &ListedContainer| l.name == name) {
                    continue;
                }
                let running = matches!(
                    c.state,
                    Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
                        | Some(bollard::models::ContainerSummaryStateEnum::RESTARTING)
                        | Some(bollard::models::ContainerSummaryStateEnum::PAUSED)
                );
                out.push(ListedContainer {
                    name: name.to_owned(),
                    running,
                    run: c
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(crate::spec::LABEL_RUN))
                        .cloned(),
                });
            }
        }
        Ok(out)
    }

    async fn ensure_image(&self, image: &str, force_pull: bool) -> Result<(), LaunchError> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(LaunchError::EngineUnavailable(e.to_string())),
        };
        if present && !force_pull {
            return Ok(());
        }
        // A missing image is looked for in the cluster's own image store first: an air-gapped
        // cluster has no registry to pull from, and a pull there would only time out.
        let mut from_store = None;
        if !present && !self.image_stores.is_empty() {
            match tokio::time::timeout(self.pull_timeout, self.load_from_store(image)).await {
                Ok(Ok(store)) => {
                    info!(image, store = %store, "Loaded the image from the cluster's image store");
                    return Ok(());
                }
                Ok(Err(reason)) => {
                    info!(image, %reason, "The image is not in the cluster's image store; pulling it");
                    from_store = Some(reason);
                }
                Err(_) => {
                    warn!(
                        image,
                        "Loading the image from the cluster's image store timed out; pulling it"
                    );
                    from_store = Some(format!("timed out after {:?}", self.pull_timeout));
                }
            }
        }
        info!(image, "Pulling image");
        let (name, tag) = split_image(image);
        let options = CreateImageOptions {
            from_image: Some(name.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let pull = async {
            let mut stream = self.docker.create_image(Some(options), None, None);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                            return Err(detail);
                        }
                    }
                    Err(e) => return Err(server_message(&e)),
                }
            }
            Ok(())
        };
        let result = match tokio::time::timeout(self.pull_timeout, pull).await {
            Ok(r) => r,
            Err(_) => Err(format!("pull timed out after {:?}", self.pull_timeout)),
        };
        match result {
            Ok(()) => Ok(()),
            Err(reason) if present => {
                warn!(image, %reason, "Forced pull failed; using the local image");
                Ok(())
            }
            Err(reason) => Err(LaunchError::Image {
                image: image.to_owned(),
                reason: match from_store {
                    Some(store) => format!("{reason} (image store: {store})"),
                    None => reason,
                },
            }),
        }
    }

    fn start_log_follower(&self, name: &str, sandbox: &Path) {
        let docker = self.docker.clone();
        let container = name.to_owned();
        let stdout_path = sandbox.join("stdout");
        let stderr_path = sandbox.join("stderr");
        let handle = tokio::spawn(async move {
            // The whole log is copied again from the start (truncating), so a follower
            // restarted after an agent or engine restart neither loses nor repeats lines.
            let open = |p: std::path::PathBuf| async move { tokio::fs::File::create(p).await };
            let (mut out, mut err) = match (open(stdout_path).await, open(stderr_path).await) {
                (Ok(o), Ok(e)) => (o, e),
                (Err(e), _) | (_, Err(e)) => {
                    warn!(container, error = %capstan_runtime::Chain(&e), "Cannot open sandbox log files");
                    return;
                }
            };
            let mut stream = docker.logs(
                &container,
                Some(LogsOptions {
                    follow: true,
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                }),
            );
            while let Some(item) = stream.next().await {
                let res = match item {
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        err.write_all(&message).await
                    }
                    Ok(bollard::container::LogOutput::StdOut { message })
                    | Ok(bollard::container::LogOutput::Console { message }) => {
                        out.write_all(&message).await
                    }
                    Ok(bollard::container::LogOutput::StdIn { .. }) => Ok(()),
                    Err(e) => {
                        debug!(container, error = %capstan_runtime::Chain(&e), "Log stream ended");
                        break;
                    }
                };
                if let Err(e) = res {
                    warn!(container, error = %capstan_runtime::Chain(&e), "Cannot write sandbox log");
                    break;
                }
            }
            let _ = out.flush().await;
            let _ = err.flush().await;
        });
        let previous = lock(&self.logs).insert(name.to_owned(), handle);
        if let Some(p) = previous {
            p.abort();
        }
    }

    async fn inspect(&self, name: &str) -> Result<ContainerInspectResponse, ContainerError> {
        self.docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| classify(name, e))
    }

    async fn remove(&self, name: &str) -> Result<(), ContainerError> {
        if let Some(h) = lock(&self.logs).remove(name) {
            h.abort();
        }
        match self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // "removal already in progress"
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(classify(name, e)),
        }
    }

    /// Removes a container by name (orphan clean-up).
    pub async fn remove_by_name(&self, name: &str) -> Result<(), ContainerError> {
        self.remove(name).await
    }

    async fn signal(&self, name: &str, signal: &str) -> Result<(), ContainerError> {
        match self
            .docker
            .kill_container(
                name,
                Some(KillContainerOptions {
                    signal: signal.to_owned(),
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            // Not running any more: nothing to signal.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(classify(name, e)),
        }
    }

    fn termination(inspect: &ContainerInspectResponse) -> Option<Termination> {
        let state = inspect.state.as_ref()?;
        if state.running == Some(true) {
            return None;
        }
        let exit_code = state.exit_code.unwrap_or(-1);
        let oom_killed = state.oom_killed == Some(true);
        let note = state.error.clone().filter(|e| !e.is_empty());
        Some(Termination {
            exit_code: Some(exit_code),
            signal: (exit_code > 128 && exit_code < 160).then(|| (exit_code - 128) as i32),
            oom_killed,
            note,
        })
    }

    fn launched(
        inspect: &ContainerInspectResponse,
        spec_network: Option<&NetworkMode>,
    ) -> Launched {
        let pid = inspect
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        let mut network_infos = Vec::new();
        let mut ip = None;
        let networks = inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref());
        let mut names: Vec<&String> = networks.map(|n| n.keys().collect()).unwrap_or_default();
        names.sort();
        for name in names {
            let ep = &networks.expect("names come from networks")[name];
            let Some(addr) = ep.ip_address.as_deref().filter(|a| !a.is_empty()) else {
                continue;
            };
            if ip.is_none() {
                ip = Some(addr.to_owned());
            }
            network_infos.push(NetworkInfo {
                ip_addresses: vec![network_info::IpAddress {
                    protocol: Some(network_info::Protocol::IPv4 as i32),
                    ip_address: Some(addr.to_owned()),
                }],
                name: matches!(spec_network, Some(NetworkMode::User(_))).then(|| name.clone()),
                ..Default::default()
            });
        }
        Launched {
            network_infos,
            pid,
            ip,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `repo/name:tag` → (`repo/name`, `tag`), defaulting to `latest`; digests stay whole.
pub fn split_image(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

impl Containerizer for DockerContainerizer {
    fn launch<'a>(
        &'a self,
        container: &'a ContainerRef,
        spec: &'a LaunchSpec,
    ) -> BoxFuture<'a, Result<Launched, LaunchError>> {
        Box::pin(async move {
            let LaunchSpec::Docker(spec) = spec else {
                return Err(LaunchError::Unsupported(
                    "the Docker containerizer only runs Docker tasks".into(),
                ));
            };
            self.ensure_image(&spec.image, spec.force_pull).await?;
            if let NetworkMode::User(net) = &spec.network {
                match self.docker.inspect_network(net, None).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {
                        return Err(LaunchError::UnknownNetwork(net.clone()));
                    }
                    Err(e) => return Err(LaunchError::EngineUnavailable(e.to_string())),
                }
            }
            let body = create_body(spec);
            if let Err(e) = self
                .docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(spec.name.clone()),
                        ..Default::default()
                    }),
                    body,
                )
                .await
            {
                // A failed create can still leave a container behind (e.g. a timeout).
                let _ = self.remove(&spec.name).await;
                return Err(LaunchError::Create(server_message(&e)));
            }
            if let Err(e) = self.docker.start_container(&spec.name, None).await {
                let _ = self.remove(&spec.name).await;
                return Err(LaunchError::Start(server_message(&e)));
            }
            self.start_log_follower(&spec.name, &container.sandbox);
            let inspect = match self.inspect(&spec.name).await {
                Ok(i) => i,
                Err(ContainerError::Unavailable(e)) => {
                    return Err(LaunchError::EngineUnavailable(e));
                }
                Err(_) => ContainerInspectResponse::default(),
            };
            Ok(Self::launched(&inspect, Some(&spec.network)))
        })
    }

    fn reattach<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<Reattached, ContainerError>> {
        Box::pin(async move {
            let inspect = match self.inspect(&container.name).await {
                Ok(i) => i,
                Err(ContainerError::NotFound(_)) => return Ok(Reattached::Missing),
                Err(e) => return Err(e),
            };
            // Re-copy the logs (also for an exited container: its last lines).
            self.start_log_follower(&container.name, &container.sandbox);
            match Self::termination(&inspect) {
                Some(t) => {
                    self.drain_logs(&container.name).await;
                    Ok(Reattached::Exited(t))
                }
                None => {
                    let user = inspect
                        .host_config
                        .as_ref()
                        .and_then(|h| h.network_mode.as_deref())
                        .filter(|m| !matches!(*m, "host" | "bridge" | "none" | "default"))
                        .map(|m| NetworkMode::User(m.to_owned()));
                    Ok(Reattached::Running(Self::launched(&inspect, user.as_ref())))
                }
            }
        })
    }

    fn wait<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
        Box::pin(async move {
            let name = container.name.as_str();
            let mut stream = self.docker.wait_container(
                name,
                Some(WaitContainerOptions {
                    condition: "not-running".to_owned(),
                }),
            );
            match stream.next().await {
                Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => {}
                Some(Err(e)) => return Err(classify(name, e)),
                None => return Err(ContainerError::Unavailable("wait stream ended".into())),
            }
            let inspect = self.inspect(name).await?;
            let term = Self::termination(&inspect).ok_or_else(|| {
                ContainerError::Unavailable("container still running after wait".into())
            })?;
            self.drain_logs(name).await;
            Ok(term)
        })
    }

    fn kill<'a>(
        &'a self,
        container: &'a ContainerRef,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        Box::pin(async move {
            let name = container.name.as_str();
            self.signal(name, "SIGTERM").await?;
            let ended = async {
                let mut s = self.docker.wait_container(
                    name,
                    Some(WaitContainerOptions {
                        condition: "not-running".to_owned(),
                    }),
                );
                s.next().await
            };
            if tokio::time::timeout(grace, ended).await.is_err() {
                debug!(container = name, "Grace period over; sending SIGKILL");
                self.signal(name, "SIGKILL").await?;
            }
            Ok(())
        })
    }

    fn destroy<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        Box::pin(async move { self.remove(&container.name).await })
    }

    fn update<'a>(
        &'a self,
        container: &'a ContainerRef,
        cpus: f64,
        mem_mb: f64,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        Box::pin(async move {
            let memory = ((mem_mb * 1024.0 * 1024.0) as i64).max(6 * 1024 * 1024);
            let body = ContainerUpdateBody {
                cpu_shares: Some(((cpus * 1024.0).round() as i64).max(2)),
                memory: Some(memory),
                memory_swap: Some(memory),
                ..Default::default()
            };
            self.docker
                .update_container(&container.name, body)
                .await
                .map_err(|e| classify(&container.name, e))
        })
    }

    fn exec<'a>(
        &'a self,
        container: &'a ContainerRef,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<i64, ContainerError>> {
        Box::pin(async move {
            let name = container.name.as_str();
            let run = async {
                let exec = self
                    .docker
                    .create_exec(
                        name,
                        CreateExecOptions {
                            cmd: Some(argv),
                            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                            attach_stdout: Some(true),
                            attach_stderr: Some(true),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| classify(name, e))?;
                if let StartExecResults::Attached { mut output, .. } = self
                    .docker
                    .start_exec(&exec.id, None)
                    .await
                    .map_err(|e| classify(name, e))?
                {
                    while output.next().await.is_some() {}
                }
                let info = self
                    .docker
                    .inspect_exec(&exec.id)
                    .await
                    .map_err(|e| classify(name, e))?;
                Ok(info.exit_code.unwrap_or(-1))
            };
            match tokio::time::timeout(timeout, run).await {
                Ok(r) => r,
                Err(_) => Err(ContainerError::Other(format!(
                    "command timed out after {timeout:?}"
                ))),
            }
        })
    }
}

impl DockerContainerizer {
    /// Stops every log follower (agent shutdown; a restarted agent copies the logs again).
    pub fn stop_log_followers(&self) {
        for (_, h) in lock(&self.logs).drain() {
            h.abort();
        }
    }

    async fn drain_logs(&self, name: &str) {
        let handle = lock(&self.logs).remove(name);
        if let Some(mut h) = handle
            && tokio::time::timeout(LOG_DRAIN, &mut h).await.is_err()
        {
            warn!(container = name, "Log follower did not finish; stopping it");
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_into_repository_and_tag() {
        assert_eq!(
            split_image("capstan/busybox"),
            ("capstan/busybox", "latest")
        );
        assert_eq!(split_image("redis:7"), ("redis", "7"));
        assert_eq!(split_image("reg:5000/x"), ("reg:5000/x", "latest"));
        assert_eq!(split_image("reg:5000/x:1"), ("reg:5000/x", "1"));
    }

    #[test]
    fn images_are_fetched_only_from_the_clusters_own_masters() {
        let masters = |m: &[&str]| m.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            image_store_urls(
                &masters(&["127.0.1.1:5050", "127.0.1.2:5050", "127.0.1.1:5051"]),
                7070,
                "http"
            ),
            ["http://127.0.1.1:7070", "http://127.0.1.2:7070"]
        );
        assert_eq!(
            image_store_urls(
                &masters(&["http://m1:5050/", "[::1]:5050", "m2", ":5050", "[bad"]),
                7070,
                "https"
            ),
            ["https://m1:7070", "https://[::1]:7070", "https://m2:7070"]
        );
        assert!(image_store_urls(&[], 7070, "http").is_empty());
        assert_eq!(store_name("capstan/busybox"), "capstan/busybox:latest");
        assert_eq!(store_name("capstan/bundle-test:1"), "capstan/bundle-test:1");
        assert_eq!(store_name("reg:5000/x"), "reg:5000/x:latest");
        assert_eq!(store_name("a/b@sha256:00ff"), "a/b@sha256:00ff");
    }

    #[test]
    fn create_body_publishes_ports_and_sets_limits() {
        let spec = ContainerSpec {
            name: "mesos-a.c".into(),
            image: "capstan/http".into(),
            force_pull: false,
            labels: [("k".to_owned(), "v".to_owned())].into(),
            env: vec![("A".into(), "1".into())],
            entrypoint: None,
            cmd: Some(vec!["x".into()]),
            network: NetworkMode::Bridge,
            port_bindings: vec![crate::spec::PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: 31000,
                container_port: 80,
                protocol: "tcp".into(),
            }],
            binds: vec!["/s:/mnt/mesos/sandbox".into()],
            cpu_shares: 256,
            cpu_quota: None,
            memory_bytes: Some(32 << 20),
            privileged: false,
            pids_limit: 4096,
            extra: Default::default(),
        };
        let body = create_body(&spec);
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("bridge"));
        assert_eq!(hc.memory, Some(32 << 20));
        assert_eq!(hc.memory_swap, Some(32 << 20));
        assert_eq!(hc.cpu_shares, Some(256));
        let binding = &hc.port_bindings.unwrap()["80/tcp"];
        assert_eq!(
            binding.as_ref().unwrap()[0].host_port.as_deref(),
            Some("31000")
        );
        assert_eq!(body.exposed_ports, Some(vec!["80/tcp".to_owned()]));
        assert_eq!(body.env, Some(vec!["A=1".to_owned()]));
        assert_eq!(body.entrypoint, None);
    }
}
