//! The container model: the Docker create body as the clients send it (decoded once, at the
//! edge), the container record swarm keeps in coord (its config, its Mesos task, its state),
//! and the states Docker shows. Pure: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the stored record format.
pub const RECORD_VERSION: u32 = 1;

/// `POST /containers/create`'s body (the parts swarm reads; the rest is ignored as Docker's
/// own daemon ignores what it does not know).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    pub image: String,
    #[serde(deserialize_with = "string_or_list")]
    pub cmd: Option<Vec<String>>,
    #[serde(deserialize_with = "string_or_list")]
    pub entrypoint: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Anonymous volumes (`-v /path`): their container paths.
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    pub host_config: HostConfig,
    pub networking_config: NetworkingConfig,
}

/// `NetworkingConfig` of a create body: the user networks' endpoint settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    pub endpoints_config: Option<BTreeMap<String, Option<EndpointConfig>>>,
}

/// One network endpoint's settings (create body, `networks/{id}/connect`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointConfig {
    pub aliases: Option<Vec<String>>,
}

/// `HostConfig` of a create body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// Bytes; 0 = unset.
    pub memory: i64,
    /// Billionths of a CPU; 0 = unset.
    pub nano_cpus: i64,
    pub cpu_shares: i64,
    pub network_mode: String,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBindingBody>>>>,
    pub publish_all_ports: bool,
    pub privileged: bool,
    pub auto_remove: bool,
    pub binds: Option<Vec<String>>,
    /// `--mount`: refused (with the reason), never dropped.
    pub mounts: Option<Vec<serde_json::Value>>,
    pub restart_policy: Option<RestartPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBindingBody {
    pub host_ip: String,
    pub host_port: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: i64,
}

/// Docker accepts `"Cmd": "ls -l"` from old clients as well as a list.
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        None => None,
        Some(Either::One(s)) => Some(vec![s]),
        Some(Either::Many(v)) => Some(v),
    })
}

/// A port the container publishes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRequest {
    pub container_port: u32,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host port asked for; `None` takes any port of the agent's ranges.
    pub host_port: Option<u32>,
}

/// Container networking, as Docker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Bridge,
    Host,
    None,
}

impl Network {
    pub fn docker_name(self) -> &'static str {
        match self {
            Network::Bridge => "bridge",
            Network::Host => "host",
            Network::None => "none",
        }
    }
}

/// What a container asks of the cluster, derived from its create body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub image: String,
    pub cmd: Vec<String>,
    /// Empty keeps the image's entrypoint.
    pub entrypoint: Vec<String>,
    /// `NAME=value`.
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub cpus: f64,
    pub mem_mib: f64,
    pub network: Network,
    pub ports: Vec<PortRequest>,
    pub tty: bool,
    /// `OpenStdin` (`run -i`): the task's container keeps stdin open for attach.
    #[serde(default)]
    pub open_stdin: bool,
    /// `StdinOnce`: its stdin closes when the first attached client ends its input.
    #[serde(default)]
    pub stdin_once: bool,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub privileged: bool,
    pub auto_remove: bool,
    /// User networks (`docker network create`) the container is attached to, by name, with
    /// its aliases there. The task itself runs with bridge networking.
    #[serde(default)]
    pub networks: BTreeMap<String, Attachment>,
    #[serde(default)]
    pub restart: Restart,
    /// Placement rules (classic Swarm's `constraint:` env and label).
    #[serde(default)]
    pub constraints: Vec<crate::constraints::Constraint>,
    /// Volumes (`-v`), as the task's Mesos volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
}

/// One volume of a container: a host path bound into it, a named volume of the agent's
/// engine (`name`), or an anonymous volume, which is a directory of the task's sandbox (it
/// lives as long as that run of the container).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// Absolute (a host path the container policy must allow), or relative: inside the
    /// task's sandbox; empty for a named volume.
    pub host_path: String,
    /// A named volume (`-v name:/path`): the engine's volume `swarm.<name>` on the agent
    /// that runs the task (local driver; its data stays on that agent).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub container_path: String,
    pub read_only: bool,
    /// `-v /path` (no source): the sandbox directory `volumes/<n>`.
    pub anonymous: bool,
}

/// A container's attachment to a user network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's id (filled in when the network is looked up).
    pub network_id: String,
    pub aliases: Vec<String>,
}

/// `HostConfig.RestartPolicy`, checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum Restart {
    #[default]
    No,
    Always,
    UnlessStopped,
    OnFailure {
        max_retries: u64,
    },
}

impl Restart {
    pub fn docker_name(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::Always => "always",
            Restart::UnlessStopped => "unless-stopped",
            Restart::OnFailure { .. } => "on-failure",
        }
    }

    /// Whether an exit with `code` after `restarts` restarts starts it again.
    pub fn restarts(self, code: i64, restarts: u64) -> bool {
        match self {
            Restart::No => false,
            Restart::Always | Restart::UnlessStopped => true,
            Restart::OnFailure { max_retries } => {
                code != 0 && (max_retries == 0 || restarts < max_retries)
            }
        }
    }
}

/// Docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Restarting,
    Exited,
    Dead,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// A host port a running container holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub container_port: u32,
    pub protocol: String,
    pub host_port: u32,
}

/// The container's current (or last) Mesos task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRef {
    pub task_id: String,
    pub agent_id: String,
    /// The agent's hostname as its offer named it (host ports are published there).
    pub agent_host: String,
    pub ports: Vec<PublishedPort>,
    /// The last Mesos state reported.
    pub state: String,
    /// The sandbox directory on the agent, once learned (for logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The agent's HTTP address (`ip:port`), once learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

/// One container as kept in coord at `<prefix>/containers/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub version: u32,
    /// 64 hex digits, stable for the container's life (restarts and failovers included).
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// RFC 3339 creation time.
    pub created: String,
    pub created_unix: i64,
    pub config: CreateBody,
    pub spec: Spec,
    pub status: Status,
    /// A `start` is waiting for an offer.
    #[serde(default)]
    pub pending_start: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    /// How many tasks this container has run (task ids are `<id12>.<n>`).
    #[serde(default)]
    pub runs: u64,
    /// How many times it exited (for `wait?condition=next-exit`).
    #[serde(default)]
    pub exits: u64,
    #[serde(default)]
    pub exit_code: i64,
    /// Why it failed to start or was lost.
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub finished_at: String,
    #[serde(default)]
    pub restart_count: u64,
    /// The last run that reached RUNNING.
    #[serde(default)]
    pub running_run: u64,
    /// The last run that failed to launch.
    #[serde(default)]
    pub failed_run: u64,
    /// A user stopped, killed or is removing it: its restart policy does not apply.
    #[serde(default)]
    pub stop_requested: bool,
    /// `docker pause`: the running task's container is frozen on its agent.
    #[serde(default)]
    pub paused: bool,
}

/// A task status as it bears on a container.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub task_id: String,
    pub state: String,
    pub reason: String,
    pub message: String,
    pub ip_address: Option<String>,
}

pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    pub fn running(&self) -> bool {
        self.status == Status::Running
    }

    /// Docker's state name: `paused` for a paused running container, else the status's.
    pub fn state_name(&self) -> &'static str {
        if self.paused && self.running() {
            "paused"
        } else {
            self.status.name()
        }
    }

    /// Applies a status of the container's current task (a stale task's status is ignored):
    /// RUNNING makes it running; a terminal state makes it exited with Docker's exit code, or
    /// — a launch that failed before it ran — leaves it created with the error. `now` is
    /// RFC 3339. Returns whether anything changed.
    pub fn apply(&mut self, u: &StatusUpdate, now: &str) -> bool {
        let run = self.runs;
        let Some(task) = self.task.as_mut().filter(|t| t.task_id == u.task_id) else {
            return false;
        };
        if capstan_types::TaskState::is_terminal_name(&task.state) {
            return false;
        }
        task.state = u.state.clone();
        if u.ip_address.is_some() {
            task.ip_address = u.ip_address.clone();
        }
        if u.state == "TASK_RUNNING" {
            if self.running_run != run {
                self.running_run = run;
                self.started_at = now.to_owned();
                self.error.clear();
            }
            self.status = Status::Running;
            return true;
        }
        if !capstan_types::TaskState::is_terminal_name(&u.state) {
            return true;
        }
        // A task that ended is paused no more (the next run starts thawed).
        self.paused = false;
        if self.running_run != run && crate::translate::launch_failed(&u.reason, &u.message) {
            self.failed_run = run;
            self.error = u.message.clone();
            self.exit_code = 128;
            self.status = if self.exits > 0 {
                Status::Exited
            } else {
                Status::Created
            };
            return true;
        }
        if self.running_run != run {
            // Ran and ended before its RUNNING arrived.
            self.running_run = run;
            self.started_at = now.to_owned();
        }
        self.exit_code = crate::translate::exit_code(&u.state, &u.message);
        self.finished_at = now.to_owned();
        self.exits += 1;
        self.status = match u.state.as_str() {
            "TASK_LOST" | "TASK_GONE" | "TASK_GONE_BY_OPERATOR" | "TASK_DROPPED" | "TASK_ERROR" => {
                self.error = u.message.clone();
                Status::Dead
            }
            _ => Status::Exited,
        };
        true
    }

    /// A task is launched or about to be: the container occupies (or will occupy) the cluster.
    pub fn active(&self) -> bool {
        self.pending_start || self.status == Status::Running
    }
}

/// A new container id: 64 hex digits.
pub fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The synthetic, stable image id of an image reference: `sha256:<hex of its name>`.
pub fn image_id(image: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, normalise_image(image).as_bytes());
    format!("sha256:{}", hex::encode(d.as_ref()))
}

/// `busybox` → `busybox:latest`; a digest or a tag is kept.
pub fn normalise_image(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// Whether `name` is a valid container name (Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies_decode_as_the_cli_sends_them() {
        let body: CreateBody = serde_json::from_value(serde_json::json!({
            "Image": "capstan/http", "Cmd": "ls -l", "Env": ["A=1"], "Tty": false,
            "HostConfig": {"Memory": 536870912, "NanoCpus": 1500000000,
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}},
            "Unknown": {"ignored": true},
        }))
        .unwrap();
        assert_eq!(body.cmd, Some(vec!["ls -l".to_owned()]));
        assert_eq!(body.host_config.memory, 536870912);
        assert_eq!(body.host_config.nano_cpus, 1500000000);
        let b: CreateBody = serde_json::from_str(r#"{"Image":"x","Cmd":null}"#).unwrap();
        assert_eq!(b.cmd, None);
    }

    #[test]
    fn image_ids_are_stable_and_tag_normalised() {
        assert_eq!(image_id("busybox"), image_id("busybox:latest"));
        assert_ne!(image_id("busybox"), image_id("busybox:1"));
        assert!(image_id("x").starts_with("sha256:"));
        assert_eq!(image_id("x").len(), 7 + 64);
        assert_eq!(normalise_image("reg:5000/a"), "reg:5000/a:latest");
    }

    fn record() -> Container {
        let config = CreateBody {
            image: "x".into(),
            ..CreateBody::default()
        };
        let spec = crate::translate::spec(
            &config,
            crate::translate::Defaults {
                cpus: 0.1,
                mem_mib: 32.0,
            },
        )
        .unwrap();
        Container {
            version: RECORD_VERSION,
            id: "0".repeat(64),
            name: "c".into(),
            created: String::new(),
            created_unix: 0,
            config,
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
        }
    }

    fn launched(c: &mut Container) -> String {
        c.runs += 1;
        let task_id = crate::translate::task_id(&c.id, c.runs);
        c.task = Some(TaskRef {
            task_id: task_id.clone(),
            agent_id: "A".into(),
            agent_host: "h".into(),
            ports: vec![],
            state: "TASK_STAGING".into(),
            sandbox: None,
            agent_http: None,
            ip_address: None,
        });
        task_id
    }

    fn update(task_id: &str, state: &str, reason: &str, message: &str) -> StatusUpdate {
        StatusUpdate {
            task_id: task_id.into(),
            state: state.into(),
            reason: reason.into(),
            message: message.into(),
            ip_address: None,
        }
    }

    #[test]
    fn statuses_move_a_container_through_dockers_states() {
        // Runs, then exits with 3.
        let mut c = record();
        let t = launched(&mut c);
        assert!(c.apply(&update(&t, "TASK_RUNNING", "", ""), "T1"));
        assert_eq!(
            (c.status, c.running_run, c.started_at.as_str()),
            (Status::Running, 1, "T1")
        );
        c.paused = true;
        assert_eq!(c.state_name(), "paused");
        c.apply(
            &update(
                &t,
                "TASK_FAILED",
                "REASON_COMMAND_EXECUTOR_FAILED",
                "Command exited with status 3",
            ),
            "T2",
        );
        assert_eq!(
            (c.status, c.exit_code, c.exits, c.finished_at.as_str()),
            (Status::Exited, 3, 1, "T2")
        );
        assert!(!c.paused, "an ended task is paused no more");
        // A late status of the finished task changes nothing.
        assert!(!c.apply(&update(&t, "TASK_RUNNING", "", ""), "T3"));
        // A second run whose image is missing stays exited, with the error.
        let t2 = launched(&mut c);
        c.apply(
            &update(
                &t2,
                "TASK_FAILED",
                "REASON_CONTAINER_LAUNCH_FAILED",
                "no such image",
            ),
            "T4",
        );
        assert_eq!(
            (c.status, c.failed_run, c.error.as_str()),
            (Status::Exited, 2, "no such image")
        );
        // A first run that never launches stays created.
        let mut d = record();
        let t = launched(&mut d);
        d.apply(
            &update(&t, "TASK_FAILED", "REASON_CONTAINER_LAUNCH_FAILED", "bad"),
            "T",
        );
        assert_eq!(d.status, Status::Created);
        // Statuses of other tasks are ignored; a lost task is dead.
        let mut e = record();
        let t = launched(&mut e);
        assert!(!e.apply(&update("other", "TASK_RUNNING", "", ""), "T"));
        e.apply(&update(&t, "TASK_LOST", "", "agent gone"), "T");
        assert_eq!((e.status, e.exit_code), (Status::Dead, 128));
    }

    #[test]
    fn names_follow_dockers_rule() {
        for (name, ok) in [
            ("web", true),
            ("a", false),
            ("_x", false),
            ("a.b-c_d", true),
            ("a/b", false),
        ] {
            assert_eq!(valid_name(name), ok, "{name}");
        }
        assert_eq!(new_id().len(), 64);
    }
}
