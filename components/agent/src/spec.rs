//! TaskInfo + agent settings → the container to create. Pure: no Docker, no I/O, so every
//! rule (naming, labels, environment, command semantics, networking, volumes, parameters,
//! limits) is table-tested here.
//!
//! Command semantics follow the Mesos Docker containerizer: `shell=true` runs the value with
//! `/bin/sh -c` as the entrypoint; `shell=false` keeps the image's entrypoint and passes
//! `value` followed by `arguments` as the command; no value and no arguments keep the image's
//! own entrypoint and command.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use capstan_proto::mesos::v1::{
    CommandInfo, ContainerInfo, ExecutorInfo, Resource, TaskId, TaskInfo, container_info,
    container_info::docker_info, volume,
};

use crate::resources::TaskResources;

/// Label keys every agent container carries, so recovery can find its tasks.
pub const LABEL_AGENT: &str = "capstan.agent_id";
pub const LABEL_TASK: &str = "capstan.task_id";
pub const LABEL_FRAMEWORK: &str = "capstan.framework_id";
pub const LABEL_EXECUTOR: &str = "capstan.executor_id";
pub const LABEL_CONTAINER: &str = "capstan.container_id";
/// Which agent process created the container (a fresh id per start): recovery never
/// mistakes a container launched by the running agent for an orphan.
pub const LABEL_RUN: &str = "capstan.agent_run";

/// Docker rejects memory limits under 6 MB.
const MIN_MEMORY_BYTES: i64 = 6 * 1024 * 1024;
/// CPU shares floor (the kernel minimum is 2).
const MIN_CPU_SHARES: i64 = 2;
const CPU_PERIOD_US: i64 = 100_000;

/// Everything about the agent and the launch the spec depends on besides the TaskInfo.
#[derive(Debug, Clone)]
pub struct SpecContext<'a> {
    pub agent_id: &'a str,
    pub framework_id: &'a str,
    pub executor_id: &'a str,
    pub container_id: &'a str,
    pub hostname: &'a str,
    /// The agent's IP: host ports are published on it.
    pub advertise_ip: IpAddr,
    /// The task's sandbox on the host.
    pub sandbox: &'a Path,
    /// Where the sandbox is mounted in the container.
    pub sandbox_mount: &'a str,
    /// What the container may ask of the host (privileges, host paths).
    pub policy: &'a capstan_types::ContainerPolicy,
    /// Docker's `PidsLimit`.
    pub pids_limit: i64,
    pub cpu_quota: bool,
    pub extra_labels: &'a BTreeMap<String, String>,
}

/// Container networking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    Host,
    Bridge,
    None,
    /// A named, user-defined Docker network.
    User(String),
}

impl NetworkMode {
    /// Docker's `HostConfig.NetworkMode`.
    pub fn docker_name(&self) -> &str {
        match self {
            NetworkMode::Host => "host",
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
            NetworkMode::User(name) => name,
        }
    }
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: u32,
    pub container_port: u32,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Settings that come from vetted `docker.parameters`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtraSettings {
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub add_hosts: Vec<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub shm_size: Option<i64>,
    pub init: Option<bool>,
    pub read_only: Option<bool>,
    pub tmpfs: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub memory_swap: Option<i64>,
    pub ulimits: Vec<(String, i64, i64)>,
    /// `interactive` (`docker run -i`): the container's stdin stays open for an attach.
    pub open_stdin: Option<bool>,
    /// `stdin-once`: the container's stdin closes when its first attached client detaches.
    pub stdin_once: Option<bool>,
}

/// The container to create for a task.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub force_pull: bool,
    pub labels: BTreeMap<String, String>,
    /// `NAME=value`, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// `None` keeps the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// `None` keeps the image's command.
    pub cmd: Option<Vec<String>>,
    pub network: NetworkMode,
    pub port_bindings: Vec<PortBinding>,
    /// `host:container[:ro]`.
    pub binds: Vec<String>,
    pub cpu_shares: i64,
    /// `(period, quota)` in microseconds when a hard CPU cap is set.
    pub cpu_quota: Option<(i64, i64)>,
    pub memory_bytes: Option<i64>,
    pub privileged: bool,
    /// The most processes the container may run.
    pub pids_limit: i64,
    pub extra: ExtraSettings,
}

/// Why a TaskInfo cannot become a container. Each message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("task has no container.docker.image")]
    NoImage,
    #[error("container type {0} is not supported by the Docker containerizer")]
    UnsupportedContainerType(String),
    #[error("network USER needs container.network_infos[0].name")]
    UserNetworkWithoutName,
    #[error("port mappings are only allowed with BRIDGE or USER networking")]
    PortMappingsNeedBridge,
    #[error("port mapping {index}: {reason}")]
    BadPortMapping { index: usize, reason: String },
    #[error("volume {index}: {reason}")]
    BadVolume { index: usize, reason: String },
    #[error("{0}")]
    PrivilegedForbidden(String),
    #[error("docker parameter `{key}`: {reason}")]
    BadParameter { key: String, reason: String },
    #[error("environment variable {index}: {reason}")]
    BadEnvironment { index: usize, reason: String },
}

/// `mesos-<agent-id>.<container-id>`: the prefix lets recovery find every container of an agent.
pub fn container_name(agent_id: &str, container_id: &str) -> String {
    format!("{}{container_id}", container_name_prefix(agent_id))
}

/// `mesos-<agent-id>.`
pub fn container_name_prefix(agent_id: &str) -> String {
    format!("mesos-{agent_id}.")
}

/// The environment common to Docker and process tasks: Mesos variables, ports, then the
/// task's own variables (which win).
pub fn task_environment(
    task: &TaskInfo,
    command: Option<&CommandInfo>,
    hostname: &str,
    sandbox: &str,
    listen_ports: &[u64],
) -> Result<Vec<(String, String)>, SpecError> {
    let mut env = vec![
        ("MESOS_TASK_ID".to_owned(), task.task_id.value.clone()),
        ("MESOS_SANDBOX".to_owned(), sandbox.to_owned()),
        ("HOST".to_owned(), hostname.to_owned()),
    ];
    for (i, p) in listen_ports.iter().enumerate() {
        env.push((format!("PORT{i}"), p.to_string()));
    }
    if let Some(first) = listen_ports.first() {
        env.push(("PORT".to_owned(), first.to_string()));
    }
    if !listen_ports.is_empty() {
        let all: Vec<String> = listen_ports.iter().map(u64::to_string).collect();
        env.push(("PORTS".to_owned(), all.join(",")));
    }
    let named = task
        .discovery
        .as_ref()
        .and_then(|d| d.ports.as_ref())
        .map(|p| p.ports.as_slice())
        .unwrap_or_default();
    for port in named {
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let key: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            env.push((format!("PORT_{key}"), port.number.to_string()));
        }
    }
    if let Some(vars) = command.and_then(|c| c.environment.as_ref()) {
        for (index, var) in vars.variables.iter().enumerate() {
            if var.name.is_empty() || var.name.contains('=') {
                return Err(SpecError::BadEnvironment {
                    index,
                    reason: format!("invalid name `{}`", var.name),
                });
            }
            env.push((var.name.clone(), var.value.clone().unwrap_or_default()));
        }
    }
    Ok(env)
}

/// Builds the container spec for a Docker task.
pub fn build_spec(task: &TaskInfo, ctx: &SpecContext<'_>) -> Result<ContainerSpec, SpecError> {
    let container = task.container.as_ref();
    let docker = docker_info(container)?;
    if docker.image.trim().is_empty() {
        return Err(SpecError::NoImage);
    }
    let resources = TaskResources::from_proto(&task.resources);

    let network = match docker.network() {
        docker_info::Network::Host => NetworkMode::Host,
        docker_info::Network::Bridge => NetworkMode::Bridge,
        docker_info::Network::None => NetworkMode::None,
        docker_info::Network::User => {
            let name = container
                .and_then(|c| c.network_infos.first())
                .and_then(|n| n.name.clone())
                .filter(|n| !n.is_empty())
                .ok_or(SpecError::UserNetworkWithoutName)?;
            NetworkMode::User(name)
        }
    };

    // Port mappings: from DockerInfo, else (USER networks) from NetworkInfo.
    let mut mappings: Vec<(u32, u32, String)> = docker
        .port_mappings
        .iter()
        .map(|m| {
            (
                m.host_port,
                m.container_port,
                m.protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    if mappings.is_empty()
        && let Some(net) = container.and_then(|c| c.network_infos.first())
    {
        mappings = net
            .port_mappings
            .iter()
            .map(|m| {
                (
                    m.host_port,
                    m.container_port,
                    m.protocol.clone().unwrap_or_default(),
                )
            })
            .collect();
    }
    if !mappings.is_empty() && matches!(network, NetworkMode::Host | NetworkMode::None) {
        return Err(SpecError::PortMappingsNeedBridge);
    }
    let mut port_bindings = Vec::new();
    for (index, (host_port, container_port, protocol)) in mappings.iter().enumerate() {
        let bad = |reason: String| SpecError::BadPortMapping { index, reason };
        if *host_port == 0 || *host_port > 65535 {
            return Err(bad(format!("host_port {host_port} is not a port")));
        }
        if *container_port > 65535 {
            return Err(bad(format!(
                "container_port {container_port} is not a port"
            )));
        }
        if !resources.ports.contains(&u64::from(*host_port)) {
            return Err(bad(format!(
                "host_port {host_port} is not among the task's ports resources"
            )));
        }
        // Marathon writes 0 for "same as the host port".
        let container_port = if *container_port == 0 {
            *host_port
        } else {
            *container_port
        };
        let protocols: Vec<&str> = if protocol.is_empty() {
            vec!["tcp"]
        } else {
            protocol.split(',').map(str::trim).collect()
        };
        for proto in protocols {
            if proto != "tcp" && proto != "udp" {
                return Err(bad(format!("protocol `{proto}` is not tcp or udp")));
            }
            port_bindings.push(PortBinding {
                host_ip: ctx.advertise_ip.to_string(),
                host_port: *host_port,
                container_port,
                protocol: proto.to_owned(),
            });
        }
    }

    // The ports the task listens on in its own network namespace.
    let listen_ports: Vec<u64> = if mappings.is_empty() {
        if matches!(network, NetworkMode::Host) {
            resources.ports.clone()
        } else {
            Vec::new()
        }
    } else {
        let mut seen = Vec::new();
        for b in &port_bindings {
            if !seen.contains(&u64::from(b.container_port)) {
                seen.push(u64::from(b.container_port));
            }
        }
        seen
    };

    let command = task.command.as_ref();
    let mut env = task_environment(
        task,
        command,
        ctx.hostname,
        ctx.sandbox_mount,
        &listen_ports,
    )?;
    env.push((
        "MESOS_CONTAINER_NAME".to_owned(),
        container_name(ctx.agent_id, ctx.container_id),
    ));

    let (entrypoint, cmd) = command_line(command);

    let mut binds = vec![format!("{}:{}", ctx.sandbox.display(), ctx.sandbox_mount)];
    for (index, vol) in container
        .map(|c| c.volumes.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        binds.push(volume_bind(index, vol, ctx.sandbox, ctx.policy)?);
    }

    if docker.privileged()
        && let Err(reason) = ctx.policy.check_privileged()
    {
        return Err(SpecError::PrivilegedForbidden(reason));
    }
    let (extra, extra_labels, extra_env) = parameters(docker, ctx.policy)?;
    env.extend(extra_env);

    let mut labels: BTreeMap<String, String> = ctx.extra_labels.clone();
    for (k, v) in extra_labels {
        labels.insert(k, v);
    }
    labels.insert(LABEL_AGENT.to_owned(), ctx.agent_id.to_owned());
    labels.insert(LABEL_TASK.to_owned(), task.task_id.value.clone());
    labels.insert(LABEL_FRAMEWORK.to_owned(), ctx.framework_id.to_owned());
    labels.insert(LABEL_EXECUTOR.to_owned(), ctx.executor_id.to_owned());
    labels.insert(LABEL_CONTAINER.to_owned(), ctx.container_id.to_owned());

    let cpu_shares = ((resources.cpus * 1024.0).round() as i64).max(MIN_CPU_SHARES);
    let cpu_quota = (ctx.cpu_quota && resources.cpus > 0.0).then(|| {
        let quota = ((resources.cpus * CPU_PERIOD_US as f64).round() as i64).max(1000);
        (CPU_PERIOD_US, quota)
    });
    let memory_bytes = (resources.mem > 0.0)
        .then(|| ((resources.mem * 1024.0 * 1024.0) as i64).max(MIN_MEMORY_BYTES));

    Ok(ContainerSpec {
        name: container_name(ctx.agent_id, ctx.container_id),
        image: docker.image.clone(),
        force_pull: docker.force_pull_image(),
        labels,
        env,
        entrypoint: extra.entrypoint.clone().or(entrypoint),
        cmd,
        network,
        port_bindings,
        binds,
        cpu_shares,
        cpu_quota,
        memory_bytes,
        privileged: docker.privileged(),
        pids_limit: ctx.pids_limit,
        extra,
    })
}

/// Builds the container spec for a custom executor that asks for a Docker container.
///
/// The executor's image, network, volumes, parameters and command follow the same rules as
/// a task's (see the module doc); `resources` (the executor's plus its tasks') set the
/// limits, since the tasks run inside the executor's container. The environment is
/// `executor_env` (the Mesos executor variables), then the container name and the variables
/// of `docker.parameters` and of the executor's command, which win. The container carries
/// the agent, framework, executor and container labels (no task label).
pub fn build_executor_spec(
    exec: &ExecutorInfo,
    resources: Vec<Resource>,
    executor_env: Vec<(String, String)>,
    ctx: &SpecContext<'_>,
) -> Result<ContainerSpec, SpecError> {
    let as_task = TaskInfo {
        name: exec.name.clone().unwrap_or_default(),
        task_id: TaskId {
            value: exec.executor_id.value.clone(),
        },
        resources,
        command: exec.command.clone(),
        container: exec.container.clone(),
        ..Default::default()
    };
    let mut spec = build_spec(&as_task, ctx)?;
    // The task-only variables go; the executor's replace them.
    let task_only = task_environment(&as_task, None, ctx.hostname, ctx.sandbox_mount, &[])?;
    let mut env = executor_env;
    env.extend(
        spec.env
            .drain(..)
            .filter(|(k, _)| !task_only.iter().any(|(t, _)| t == k) || k == "HOST"),
    );
    spec.env = dedup_env(env);
    spec.labels.remove(LABEL_TASK);
    Ok(spec)
}

/// Keeps one entry per name: the last value, at the place of the first.
fn dedup_env(env: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        match out.iter_mut().find(|(o, _)| *o == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out
}

fn docker_info(
    container: Option<&ContainerInfo>,
) -> Result<&container_info::DockerInfo, SpecError> {
    let container = container.ok_or(SpecError::NoImage)?;
    if container.r#type() != container_info::Type::Docker {
        return Err(SpecError::UnsupportedContainerType(
            container.r#type().as_str_name().to_owned(),
        ));
    }
    container.docker.as_ref().ok_or(SpecError::NoImage)
}

/// `(entrypoint, cmd)` per the module's command semantics.
pub fn command_line(command: Option<&CommandInfo>) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let Some(command) = command else {
        return (None, None);
    };
    if command.shell() {
        match command.value.as_deref() {
            Some(v) if !v.is_empty() => (
                Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]),
                Some(vec![v.to_owned()]),
            ),
            _ => (None, None),
        }
    } else {
        let mut argv: Vec<String> = command
            .value
            .iter()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect();
        argv.extend(command.arguments.iter().cloned());
        if argv.is_empty() {
            (None, None)
        } else {
            (None, Some(argv))
        }
    }
}

fn volume_bind(
    index: usize,
    vol: &capstan_proto::mesos::v1::Volume,
    sandbox: &Path,
    policy: &capstan_types::ContainerPolicy,
) -> Result<String, SpecError> {
    let bad = |reason: &str| SpecError::BadVolume {
        index,
        reason: reason.to_owned(),
    };
    let cpath = vol.container_path.as_str();
    if cpath.is_empty() {
        return Err(bad("container_path is empty"));
    }
    if let Some(source) = &vol.source {
        return docker_volume_bind(source, cpath, vol.mode()).map_err(|r| bad(&r));
    }
    let host = vol.host_path.as_deref().unwrap_or_default();
    if host.is_empty() {
        return Err(bad(
            "host_path or a DOCKER_VOLUME source is required (image volumes are not supported)",
        ));
    }
    for p in [host, cpath] {
        if p.contains(':') || p.contains(',') {
            return Err(bad(&format!("path `{p}` may not contain ':' or ','")));
        }
        if Path::new(p).components().any(|c| c == Component::ParentDir) {
            return Err(bad(&format!("path `{p}` may not contain '..'")));
        }
    }
    policy
        .check_host_path(host)
        .map_err(|reason| bad(&reason))?;
    let host_path: PathBuf = if Path::new(host).is_absolute() {
        PathBuf::from(host)
    } else {
        // Mesos: a relative host path lies inside the sandbox.
        sandbox.join(host)
    };
    // A relative container path lies inside the sandbox mount (Mesos does the same).
    let container_path = if cpath.starts_with('/') {
        cpath.to_owned()
    } else {
        return Err(bad(&format!("container_path `{cpath}` must be absolute")));
    };
    let mode = match vol.mode() {
        volume::Mode::Rw => "rw",
        volume::Mode::Ro => "ro",
    };
    Ok(format!("{}:{container_path}:{mode}", host_path.display()))
}

/// A named volume of the agent's engine (`source.type: DOCKER_VOLUME`): the local driver
/// only and no driver options (those can bind any host path), so it never reaches the host's
/// files; Docker creates it on first use.
fn docker_volume_bind(
    source: &capstan_proto::mesos::v1::volume::Source,
    container_path: &str,
    mode: volume::Mode,
) -> Result<String, String> {
    use capstan_proto::mesos::v1::volume::source::Type;
    if source.r#type() != Type::DockerVolume {
        return Err(format!(
            "source type {} is not supported (DOCKER_VOLUME is)",
            source.r#type().as_str_name()
        ));
    }
    let dv = source
        .docker_volume
        .as_ref()
        .ok_or("a DOCKER_VOLUME source needs docker_volume")?;
    if !matches!(dv.driver.as_deref(), None | Some("" | "local")) {
        return Err(format!(
            "volume driver {:?} is not allowed (only the local driver is)",
            dv.driver.as_deref().unwrap_or_default()
        ));
    }
    if dv
        .driver_options
        .as_ref()
        .is_some_and(|o| !o.parameter.is_empty())
    {
        return Err("driver_options are not allowed (they can bind host paths)".into());
    }
    let name = dv.name.as_str();
    let valid = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(format!(
            "volume name {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]+"
        ));
    }
    if !container_path.starts_with('/') {
        return Err(format!(
            "container_path `{container_path}` must be absolute"
        ));
    }
    let mode = match mode {
        volume::Mode::Rw => "rw",
        volume::Mode::Ro => "ro",
    };
    Ok(format!("{name}:{container_path}:{mode}"))
}

type ParamOutput = (ExtraSettings, Vec<(String, String)>, Vec<(String, String)>);

/// Applies the vetted `docker.parameters`; anything else is refused with a clear message.
fn parameters(
    docker: &container_info::DockerInfo,
    policy: &capstan_types::ContainerPolicy,
) -> Result<ParamOutput, SpecError> {
    let mut extra = ExtraSettings::default();
    let mut labels = Vec::new();
    let mut env = Vec::new();
    for p in &docker.parameters {
        let key = p.key.trim_start_matches('-');
        let v = p.value.as_str();
        let bad = |reason: &str| SpecError::BadParameter {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let pair = |sep: char| -> Result<(String, String), SpecError> {
            v.split_once(sep)
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| bad(&format!("`{v}` is not key{sep}value")))
        };
        match key {
            "label" | "l" => labels.push(pair('=')?),
            "env" | "e" => env.push(pair('=')?),
            "user" | "u" => extra.user = Some(v.to_owned()),
            "workdir" | "w" => extra.workdir = Some(v.to_owned()),
            "hostname" | "h" => extra.hostname = Some(v.to_owned()),
            "add-host" => extra.add_hosts.push(v.to_owned()),
            "dns" => extra.dns.push(v.to_owned()),
            "dns-search" => extra.dns_search.push(v.to_owned()),
            "cap-drop" => extra.cap_drop.push(v.to_owned()),
            "cap-add" => {
                policy
                    .check_added_capabilities()
                    .map_err(|reason| bad(&reason))?;
                extra.cap_add.push(v.to_owned())
            }
            "shm-size" => extra.shm_size = Some(parse_bytes(v).ok_or_else(|| bad("not a size"))?),
            "memory-swap" => {
                extra.memory_swap = Some(if v == "-1" {
                    -1
                } else {
                    parse_bytes(v).ok_or_else(|| bad("not a size"))?
                })
            }
            "init" => extra.init = Some(parse_bool(v).ok_or_else(|| bad("not a boolean"))?),
            "read-only" => {
                extra.read_only = Some(parse_bool(v).ok_or_else(|| bad("not a boolean"))?)
            }
            "tmpfs" => {
                let (path, opts) = v.split_once(':').unwrap_or((v, ""));
                extra.tmpfs.insert(path.to_owned(), opts.to_owned());
            }
            "entrypoint" => extra.entrypoint = Some(vec![v.to_owned()]),
            "interactive" | "i" => {
                extra.open_stdin = Some(parse_bool(v).ok_or_else(|| bad("not a boolean"))?)
            }
            "stdin-once" => {
                extra.stdin_once = Some(parse_bool(v).ok_or_else(|| bad("not a boolean"))?)
            }
            "ulimit" => {
                let (name, limits) = pair('=')?;
                let (soft, hard) = limits.split_once(':').unwrap_or((&limits, &limits));
                let parse = |s: &str| {
                    s.parse::<i64>()
                        .map_err(|_| bad("ulimit values must be integers"))
                };
                extra.ulimits.push((name, parse(soft)?, parse(hard)?));
            }
            "privileged" => return Err(bad("use docker.privileged instead")),
            "net" | "network" | "publish" | "p" | "volume" | "v" | "name" | "memory" | "m"
            | "cpu-shares" | "cpus" => {
                return Err(bad(
                    "set by the agent from the task; not allowed as a parameter",
                ));
            }
            _ => return Err(bad("is not supported by this agent")),
        }
    }
    Ok((extra, labels, env))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "1" | "" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// `64m`, `1g`, `512k`, `1024` → bytes.
pub fn parse_bytes(v: &str) -> Option<i64> {
    let v = v.trim().to_ascii_lowercase();
    let v = v.trim_end_matches('b');
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1024),
        'm' => (&v[..v.len() - 1], 1024 * 1024),
        'g' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    num.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(|n| n * mult)
}

#[cfg(test)]
mod tests;
