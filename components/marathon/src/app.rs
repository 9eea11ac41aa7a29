//! The Marathon app definition: every field of the v2 API with Marathon's defaults, the
//! legacy spellings it still accepts (`ports`, `uris`, `container.docker.network`,
//! `container.docker.portMappings`, `ipAddress`), normalisation into the canonical form and
//! validation into Marathon's `{path, errors}` details.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::image;
use crate::limits;
use crate::path::PathId;
use crate::time::Timestamp;

/// Writes whole numbers without a fraction (`128`, not `128.0`), as Marathon does.
pub(crate) fn num<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A complete, normalised app definition (also the body of `GET …/versions/{v}`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AppDefinition {
    pub id: PathId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Value>,
    pub instances: i64,
    #[serde(serialize_with = "num")]
    pub cpus: f64,
    #[serde(serialize_with = "num")]
    pub mem: f64,
    #[serde(serialize_with = "num")]
    pub disk: f64,
    pub gpus: u32,
    pub executor: String,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "constraints_de"
    )]
    pub constraints: Vec<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<FetchUri>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    pub require_ports: bool,
    pub backoff_seconds: u64,
    #[serde(serialize_with = "num")]
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub readiness_checks: Vec<ReadinessCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    pub upgrade_strategy: UpgradeStrategy,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residency: Option<Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<u64>,
    pub unreachable_strategy: UnreachableStrategy,
    pub kill_selection: KillSelection,
    pub networks: Vec<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_resources: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_info: Option<VersionInfo>,
    // Legacy input spellings, folded in by `normalize` and never written.
    #[serde(skip_serializing)]
    pub ports: Option<Vec<u32>>,
    #[serde(skip_serializing)]
    pub uris: Option<Vec<String>>,
    #[serde(skip_serializing)]
    pub ip_address: Option<Value>,
}

impl Default for AppDefinition {
    fn default() -> Self {
        AppDefinition {
            id: PathId::root(),
            cmd: None,
            args: Vec::new(),
            user: None,
            env: BTreeMap::new(),
            instances: 1,
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
            gpus: 0,
            executor: String::new(),
            constraints: Vec::new(),
            fetch: Vec::new(),
            port_definitions: None,
            require_ports: false,
            backoff_seconds: 1,
            backoff_factor: 1.15,
            max_launch_delay_seconds: 300,
            container: None,
            health_checks: Vec::new(),
            readiness_checks: Vec::new(),
            dependencies: Vec::new(),
            upgrade_strategy: UpgradeStrategy::default(),
            labels: BTreeMap::new(),
            accepted_resource_roles: None,
            residency: None,
            secrets: BTreeMap::new(),
            task_kill_grace_period_seconds: None,
            unreachable_strategy: UnreachableStrategy::default(),
            kill_selection: KillSelection::YoungestFirst,
            networks: Vec::new(),
            role: None,
            tty: None,
            check: None,
            executor_resources: None,
            resource_limits: None,
            version: None,
            version_info: None,
            ports: None,
            uris: None,
            ip_address: None,
        }
    }
}

fn constraints_de<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<String>>, D::Error> {
    let raw: Vec<Vec<Value>> = Vec::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|c| {
            c.into_iter()
                .map(|v| match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect()
        })
        .collect())
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FetchUri {
    pub uri: String,
    #[serde(default = "yes")]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: u32,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u32>,
    #[serde(default)]
    pub service_port: u32,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    // Accepted but not written: marathon-python's PortMapping has no such field.
    #[serde(default, skip_serializing)]
    pub network_names: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type", default = "docker_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Docker>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
}

fn docker_type() -> String {
    "DOCKER".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing)]
    pub network: Option<String>,
    #[serde(default, skip_serializing)]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Parameter {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default)]
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default = "rw")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Value>,
}

fn rw() -> String {
    "RW".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default = "container_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn container_mode() -> String {
    "container".into()
}

/// The health check protocols Marathon knows.
pub const HEALTH_PROTOCOLS: [&str; 7] = [
    "HTTP",
    "HTTPS",
    "TCP",
    "COMMAND",
    "MESOS_HTTP",
    "MESOS_HTTPS",
    "MESOS_TCP",
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthCheck {
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Value>,
    pub grace_period_seconds: u64,
    pub interval_seconds: u64,
    pub timeout_seconds: u64,
    pub max_consecutive_failures: u32,
    pub delay_seconds: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub ignore_http1xx: bool,
    pub ip_protocol: String,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            protocol: "HTTP".into(),
            path: None,
            port_index: None,
            port: None,
            command: None,
            grace_period_seconds: 300,
            interval_seconds: 60,
            timeout_seconds: 20,
            max_consecutive_failures: 3,
            delay_seconds: 15,
            ignore_http1xx: false,
            ip_protocol: "IPv4".into(),
        }
    }
}

impl HealthCheck {
    /// Checks run by Mesos on the agent (handed over in `TaskInfo.health_check`).
    pub fn runs_on_agent(&self) -> bool {
        self.protocol == "COMMAND" || self.protocol.starts_with("MESOS_")
    }

    /// The command of a COMMAND check (`"cmd"` or `{"value":"cmd"}`).
    pub fn command_value(&self) -> Option<String> {
        match &self.command {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o.get("value").and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
    }
}

/// A readiness check (`readinessChecks[]`): during deployments a new task only counts once
/// `GET <protocol>://<task>:<port named portName><path>` answered one of
/// `httpStatusCodesForReady`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ReadinessCheck {
    pub name: String,
    pub protocol: String,
    pub path: String,
    pub port_name: String,
    pub interval_seconds: u64,
    pub timeout_seconds: u64,
    pub http_status_codes_for_ready: Vec<u16>,
    pub preserve_last_response: bool,
}

impl Default for ReadinessCheck {
    fn default() -> Self {
        ReadinessCheck {
            name: "readinessCheck".into(),
            protocol: "HTTP".into(),
            path: "/".into(),
            port_name: "http-api".into(),
            interval_seconds: 30,
            timeout_seconds: 10,
            http_status_codes_for_ready: vec![200],
            preserve_last_response: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct UpgradeStrategy {
    #[serde(serialize_with = "num")]
    pub minimum_health_capacity: f64,
    #[serde(serialize_with = "num")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// When an unreachable task is replaced and when it is forgotten.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnreachableStrategy {
    Disabled,
    Enabled {
        inactive_after_seconds: u64,
        expunge_after_seconds: u64,
    },
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled {
            inactive_after_seconds: 0,
            expunge_after_seconds: 0,
        }
    }
}

impl Serialize for UnreachableStrategy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UnreachableStrategy::Disabled => s.serialize_str("disabled"),
            UnreachableStrategy::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } => serde_json::json!({
                "inactiveAfterSeconds": inactive_after_seconds,
                "expungeAfterSeconds": expunge_after_seconds,
            })
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for UnreachableStrategy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Enabled {
            #[serde(default)]
            inactive_after_seconds: u64,
            #[serde(default)]
            expunge_after_seconds: u64,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Obj(Enabled),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) if t == "disabled" => Ok(UnreachableStrategy::Disabled),
            Raw::Text(_) => Err(serde::de::Error::custom("error.expected.disabled")),
            Raw::Obj(e) => Ok(UnreachableStrategy::Enabled {
                inactive_after_seconds: e.inactive_after_seconds,
                expunge_after_seconds: e.expunge_after_seconds,
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: Timestamp,
    pub last_config_change_at: Timestamp,
}

/// How the app's tasks are networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    Host,
    Bridge,
    Container,
}

/// One port of a task, whatever networking mode produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct PortSpec {
    pub name: Option<String>,
    pub protocol: String,
    /// `None` = no host port; `Some(0)` = any host port; else that exact port.
    pub host_port: Option<u32>,
    pub container_port: Option<u32>,
    pub service_port: u32,
    pub labels: BTreeMap<String, String>,
}

/// One validation problem, as Marathon reports it (an entry of a 422's `details`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub path: String,
    #[serde(default)]
    pub errors: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.errors.join("; "))
    }
}

impl Violation {
    pub fn new(path: impl Into<String>, error: impl Into<String>) -> Violation {
        Violation {
            path: path.into(),
            errors: vec![error.into()],
        }
    }
}

/// The constraint operators Marathon knows.
pub const OPERATORS: [&str; 7] = [
    "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS",
];

impl AppDefinition {
    /// Folds legacy spellings into the canonical fields, resolves ids against `base` (the
    /// group the definition was posted to) and fills networking defaults.
    pub fn normalize(&mut self, base: &PathId) {
        if let Some(ports) = self.ports.take()
            && self.port_definitions.is_none()
        {
            self.port_definitions = Some(
                ports
                    .into_iter()
                    .map(|port| PortDefinition {
                        port,
                        protocol: tcp(),
                        name: None,
                        labels: BTreeMap::new(),
                    })
                    .collect(),
            );
        }
        if let Some(uris) = self.uris.take()
            && self.fetch.is_empty()
        {
            self.fetch = uris
                .into_iter()
                .map(|uri| {
                    let extract = [
                        ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip",
                    ]
                    .iter()
                    .any(|s| uri.ends_with(s));
                    FetchUri {
                        uri,
                        extract,
                        executable: false,
                        cache: false,
                        dest_path: None,
                    }
                })
                .collect();
        }
        if let Some(c) = &mut self.container
            && let Some(d) = &mut c.docker
        {
            if let Some(pm) = d.port_mappings.take()
                && c.port_mappings.is_none()
            {
                c.port_mappings = Some(pm);
            }
            if let Some(net) = d.network.take() {
                let mode = match net.as_str() {
                    "HOST" => Some(None),
                    "BRIDGE" => Some(Some("container/bridge")),
                    "USER" => Some(Some("container")),
                    // Kept, so that `validate` names it.
                    _ => None,
                };
                match mode {
                    None => d.network = Some(net),
                    Some(mode) if self.networks.is_empty() => {
                        self.networks = mode
                            .map(|mode| Network {
                                mode: mode.into(),
                                name: None,
                                labels: BTreeMap::new(),
                            })
                            .into_iter()
                            .collect();
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(ip) = self.ip_address.take()
            && self.networks.is_empty()
        {
            let name = ip
                .get("networkName")
                .and_then(Value::as_str)
                .map(str::to_string);
            self.networks = vec![Network {
                mode: "container".into(),
                name,
                labels: BTreeMap::new(),
            }];
        }
        if self.networks.is_empty() {
            self.networks = vec![Network {
                mode: "host".into(),
                name: None,
                labels: BTreeMap::new(),
            }];
        }
        match self.net_mode() {
            NetMode::Host => {
                if self.port_definitions.is_none() {
                    self.port_definitions = Some(vec![PortDefinition {
                        port: 0,
                        protocol: tcp(),
                        name: Some("default".into()),
                        labels: BTreeMap::new(),
                    }]);
                }
            }
            NetMode::Bridge => {
                self.port_definitions = None;
                if let Some(c) = &mut self.container
                    && let Some(pms) = &mut c.port_mappings
                {
                    for pm in pms {
                        pm.host_port.get_or_insert(0);
                    }
                }
            }
            NetMode::Container => self.port_definitions = None,
        }
        if let Some(c) = &mut self.container {
            c.kind = c.kind.to_uppercase();
        }
        for hc in &mut self.health_checks {
            hc.protocol = hc.protocol.to_uppercase();
            if let Some(Value::String(s)) = &hc.command {
                hc.command = Some(serde_json::json!({ "value": s }));
            }
            if hc.port_index.is_none() && hc.port.is_none() && hc.protocol != "COMMAND" {
                hc.port_index = Some(0);
            }
            if hc.protocol.contains("HTTP") && hc.path.is_none() {
                hc.path = Some("/".into());
            }
        }
        for rc in &mut self.readiness_checks {
            rc.protocol = rc.protocol.to_uppercase();
        }
        let parent = base.clone();
        self.dependencies = self
            .dependencies
            .iter()
            .map(|d| PathId::parse_relative(d, &parent).to_string())
            .collect();
        if self.role.is_none() {
            self.role = Some("*".into());
        }
    }

    pub fn net_mode(&self) -> NetMode {
        match self.networks.first().map(|n| n.mode.as_str()) {
            Some("container/bridge") => NetMode::Bridge,
            Some("container") => NetMode::Container,
            _ => NetMode::Host,
        }
    }

    /// The ports every task of this app gets, in index order.
    pub fn port_specs(&self) -> Vec<PortSpec> {
        match self.net_mode() {
            NetMode::Host => self
                .port_definitions
                .iter()
                .flatten()
                .map(|pd| PortSpec {
                    name: pd.name.clone(),
                    protocol: pd.protocol.clone(),
                    host_port: Some(if self.require_ports { pd.port } else { 0 }),
                    container_port: None,
                    service_port: pd.port,
                    labels: pd.labels.clone(),
                })
                .collect(),
            NetMode::Bridge | NetMode::Container => self
                .container
                .as_ref()
                .and_then(|c| c.port_mappings.as_ref())
                .into_iter()
                .flatten()
                .map(|pm| PortSpec {
                    name: pm.name.clone(),
                    protocol: pm.protocol.clone(),
                    host_port: pm.host_port,
                    container_port: Some(pm.container_port),
                    service_port: pm.service_port,
                    labels: pm.labels.clone(),
                })
                .collect(),
        }
    }

    /// Mutable access to every service port slot (for allocation).
    pub fn service_ports_mut(&mut self) -> Vec<&mut u32> {
        match self.net_mode() {
            NetMode::Host => self
                .port_definitions
                .iter_mut()
                .flatten()
                .map(|pd| &mut pd.port)
                .collect(),
            _ => self
                .container
                .iter_mut()
                .filter_map(|c| c.port_mappings.as_mut())
                .flatten()
                .map(|pm| &mut pm.service_port)
                .collect(),
        }
    }

    pub fn docker_image(&self) -> Option<&str> {
        self.container
            .as_ref()
            .filter(|c| c.kind == "DOCKER")
            .and_then(|c| c.docker.as_ref())
            .map(|d| d.image.as_str())
            .filter(|i| !i.is_empty())
    }

    /// Everything that does not change the tasks themselves (`instances`, versions) blanked,
    /// so two definitions compare equal iff a restart is not needed.
    pub fn config_key(&self) -> AppDefinition {
        let mut c = self.clone();
        c.instances = 0;
        c.version = None;
        c.version_info = None;
        c
    }

    /// `instances` as the planner counts them. Validation bounds `instances` to
    /// `0..=MAX_INSTANCES`; a definition that bypassed it is clamped, never wrapped.
    pub fn instance_count(&self) -> u32 {
        u32::try_from(self.instances.clamp(0, limits::MAX_INSTANCES)).unwrap_or(u32::MAX)
    }

    /// What this (normalised) definition asks of the host that the cluster's container
    /// policy refuses, as Marathon-style violations naming the field: a privileged container,
    /// added capabilities or host namespaces through `docker.parameters`, a host path volume
    /// or a local file fetch outside the allowed host paths. The agent enforces the same
    /// policy on the task; this answers the client with a 422 up front.
    pub fn policy_violations(&self, policy: &capstan_types::ContainerPolicy) -> Vec<Violation> {
        let mut v = Vec::new();
        if let Some(c) = &self.container {
            if let Some(d) = &c.docker {
                if d.privileged
                    && let Err(e) = policy.check_privileged()
                {
                    v.push(Violation::new("/container/docker/privileged", e));
                }
                for (i, p) in d.parameters.iter().enumerate() {
                    let path = format!("/container/docker/parameters({i})");
                    let key = p.key.trim_start_matches('-');
                    let refused = match key {
                        "privileged" => policy.check_privileged().err(),
                        "cap-add" => policy.check_added_capabilities().err(),
                        "device" | "pid" | "ipc" | "uts" | "userns" | "cgroupns"
                        | "security-opt" => Some(format!(
                            "docker parameter `{key}` gives the container the host's                              devices, namespaces or security settings; refused by the                              cluster's container policy"
                        )),
                        "volume" | "v" | "mount" => Some(format!(
                            "docker parameter `{key}` is not allowed: use container.volumes"
                        )),
                        _ => None,
                    };
                    if let Some(e) = refused {
                        v.push(Violation::new(path, e));
                    }
                }
            }
            for (i, vol) in c.volumes.iter().enumerate() {
                if let Some(host) = vol.host_path.as_deref()
                    && let Err(e) = policy.check_host_path(host)
                {
                    v.push(Violation::new(
                        format!("/container/volumes({i})/hostPath"),
                        e,
                    ));
                }
            }
        }
        for (i, f) in self.fetch.iter().enumerate() {
            let local = f
                .uri
                .strip_prefix("file://")
                .or(f.uri.starts_with('/').then_some(f.uri.as_str()));
            if let Some(path) = local
                && let Err(e) = policy.check_host_path(path)
            {
                v.push(Violation::new(format!("/fetch({i})/uri"), e));
            }
        }
        v
    }

    /// Every problem with this (normalised) definition; empty = valid.
    pub fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        for e in self.id.problems(true) {
            v.push(Violation::new("/id", e));
        }
        if self.cmd.is_some() && !self.args.is_empty() {
            v.push(Violation::new(
                "/",
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
            ));
        }
        if self.cmd.is_none() && self.args.is_empty() && self.container.is_none() {
            v.push(Violation::new(
                "/",
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
            ));
        }
        if self.cmd.as_deref() == Some("") {
            v.push(Violation::new("/cmd", "error.minLength"));
        }
        if self.instances < 0 {
            v.push(Violation::new(
                "/instances",
                format!("got {}, expected 0 or more", self.instances),
            ));
        }
        if self.cpus.is_nan() || self.cpus < 0.001 {
            v.push(Violation::new(
                "/cpus",
                format!("got {}, expected 0.001 or more", self.cpus),
            ));
        }
        if self.mem.is_nan() || self.mem < 0.0 {
            v.push(Violation::new(
                "/mem",
                format!("got {}, expected 0.0 or more", self.mem),
            ));
        }
        if self.disk.is_nan() || self.disk < 0.0 {
            v.push(Violation::new(
                "/disk",
                format!("got {}, expected 0.0 or more", self.disk),
            ));
        }
        if self.backoff_factor.is_nan() || self.backoff_factor < 1.0 {
            v.push(Violation::new(
                "/backoffFactor",
                format!("got {}, expected 1.0 or more", self.backoff_factor),
            ));
        }
        for (name, val) in [
            (
                "minimumHealthCapacity",
                self.upgrade_strategy.minimum_health_capacity,
            ),
            (
                "maximumOverCapacity",
                self.upgrade_strategy.maximum_over_capacity,
            ),
        ] {
            let path = format!("/upgradeStrategy/{name}");
            if val.is_nan() || val > 1.0 {
                v.push(Violation::new(path, "is greater than 1"));
            } else if val < 0.0 {
                v.push(Violation::new(path, "is less than 0"));
            }
        }
        if let UnreachableStrategy::Enabled {
            inactive_after_seconds,
            expunge_after_seconds,
        } = self.unreachable_strategy
            && inactive_after_seconds > expunge_after_seconds
        {
            v.push(Violation::new(
                "/unreachableStrategy/inactiveAfterSeconds",
                "inactiveAfterSeconds must be less or equal to expungeAfterSeconds",
            ));
        }
        for (k, val) in &self.env {
            let ok = val.is_string()
                || val
                    .as_object()
                    .is_some_and(|o| o.len() == 1 && o.get("secret").is_some_and(Value::is_string));
            if !ok {
                v.push(Violation::new(
                    format!("/env/{k}"),
                    "must be a string or {\"secret\": name}",
                ));
            }
        }
        for (i, c) in self.constraints.iter().enumerate() {
            let path = format!("/constraints({i})");
            if !(2..=3).contains(&c.len()) {
                v.push(Violation::new(
                    path,
                    "Each constraint must have either 2 or 3 fields",
                ));
                continue;
            }
            let op = c[1].as_str();
            let value = c.get(2);
            if !OPERATORS.contains(&op) {
                v.push(Violation::new(
                    path,
                    format!(
                        "Constraint operator must be one of {}",
                        OPERATORS.join(", ")
                    ),
                ));
                continue;
            }
            match op {
                "LIKE" | "UNLIKE" => match value {
                    None => v.push(Violation::new(
                        path,
                        "A regular expression value must be provided",
                    )),
                    Some(re) => {
                        if Regex::new(&format!("^(?:{re})$")).is_err() {
                            v.push(Violation::new(path, "is not a valid regular expression"));
                        }
                    }
                },
                "MAX_PER" if value.and_then(|x| x.parse::<u32>().ok()).is_none() => {
                    v.push(Violation::new(path, "Value was not a positive integer"));
                }
                "GROUP_BY" if value.is_some_and(|x| x.parse::<u32>().is_err()) => {
                    v.push(Violation::new(path, "Value was not a positive integer"));
                }
                "IS" if value.is_none() => {
                    v.push(Violation::new(path, "A value must be provided"));
                }
                "UNIQUE" if value.is_some() => {
                    v.push(Violation::new(path, "Value specified but not used"));
                }
                _ => {}
            }
        }
        let specs = self.port_specs();
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, s) in specs.iter().enumerate() {
            if let Some(n) = &s.name
                && !names.insert(n.clone())
            {
                v.push(Violation::new(
                    format!("/portDefinitions({i})/name"),
                    "Port names must be unique.",
                ));
            }
            if s.service_port != 0 && !numbers.insert(s.service_port) {
                v.push(Violation::new(
                    format!("/portDefinitions({i})/port"),
                    "Ports must be unique.",
                ));
            }
            for p in s.protocol.split(',') {
                if p != "tcp" && p != "udp" {
                    v.push(Violation::new(
                        format!("/portDefinitions({i})/protocol"),
                        "Invalid protocol",
                    ));
                }
            }
        }
        let modes: Vec<&str> = self.networks.iter().map(|n| n.mode.as_str()).collect();
        for (i, m) in modes.iter().enumerate() {
            if !["host", "container", "container/bridge"].contains(m) {
                v.push(Violation::new(
                    format!("/networks({i})/mode"),
                    "error.unknown.enum.literal",
                ));
            }
        }
        if modes.len() > 1 && modes.iter().any(|m| *m != "container") {
            v.push(Violation::new(
                "/networks",
                "host and bridge networks must be the only network",
            ));
        }
        if let Some(c) = &self.container {
            if c.kind != "DOCKER" && c.kind != "MESOS" {
                v.push(Violation::new(
                    "/container/type",
                    "error.unknown.enum.literal",
                ));
            }
            if c.kind == "DOCKER" && c.docker.as_ref().is_none_or(|d| d.image.is_empty()) {
                v.push(Violation::new(
                    "/container/docker/image",
                    "must not be empty",
                ));
            }
            if let Some(d) = &c.docker {
                if !d.image.is_empty()
                    && let Err(e) = image::check_reference(&d.image)
                {
                    v.push(Violation::new("/container/docker/image", e));
                }
                // `normalize` folds the known legacy networks into `networks`.
                if let Some(net) = &d.network {
                    v.push(Violation::new(
                        "/container/docker/network",
                        format!(
                            "error.unknown.enum.literal: '{net}', expected HOST, BRIDGE or USER"
                        ),
                    ));
                }
            }
            if self.net_mode() == NetMode::Host
                && c.port_mappings.as_ref().is_some_and(|p| !p.is_empty())
            {
                v.push(Violation::new(
                    "/container/portMappings",
                    "port mappings are not allowed with host networking",
                ));
            }
            for (i, vol) in c.volumes.iter().enumerate() {
                if vol.container_path.is_empty() {
                    v.push(Violation::new(
                        format!("/container/volumes({i})/containerPath"),
                        "must not be empty",
                    ));
                }
                if vol.mode != "RW" && vol.mode != "RO" {
                    v.push(Violation::new(
                        format!("/container/volumes({i})/mode"),
                        "error.unknown.enum.literal",
                    ));
                }
            }
        }
        let mut mesos_checks = 0;
        for (i, hc) in self.health_checks.iter().enumerate() {
            let path = format!("/healthChecks({i})");
            if !HEALTH_PROTOCOLS.contains(&hc.protocol.as_str()) {
                v.push(Violation::new(
                    format!("{path}/protocol"),
                    "error.unknown.enum.literal",
                ));
                continue;
            }
            if hc.runs_on_agent() {
                mesos_checks += 1;
            }
            if hc.protocol == "COMMAND" && hc.command_value().is_none() {
                v.push(Violation::new(
                    format!("{path}/command"),
                    "A command health check must have a command",
                ));
            }
            if let Some(pi) = hc.port_index
                && hc.protocol != "COMMAND"
                && pi as usize >= specs.len()
            {
                v.push(Violation::new(
                    format!("{path}/portIndex"),
                    "Health check port indices must address an element of the ports array or container port mappings.",
                ));
            }
            if hc.max_consecutive_failures == 0 && hc.interval_seconds == 0 {
                v.push(Violation::new(
                    format!("{path}/intervalSeconds"),
                    "must be at least 1",
                ));
            }
        }
        if mesos_checks > 1 {
            v.push(Violation::new(
                "/healthChecks",
                "AppDefinition can contain at most one Mesos health check.",
            ));
        }
        for (i, rc) in self.readiness_checks.iter().enumerate() {
            let path = format!("/readinessChecks({i})");
            if rc.protocol != "HTTP" && rc.protocol != "HTTPS" {
                v.push(Violation::new(
                    format!("{path}/protocol"),
                    "error.unknown.enum.literal",
                ));
            }
            if rc.name.is_empty() {
                v.push(Violation::new(format!("{path}/name"), "error.minLength"));
            }
            if !specs
                .iter()
                .any(|s| s.name.as_deref() == Some(rc.port_name.as_str()))
            {
                v.push(Violation::new(
                    format!("{path}/portName"),
                    format!("No port named '{}' is defined", rc.port_name),
                ));
            }
            if rc.interval_seconds == 0 {
                v.push(Violation::new(
                    format!("{path}/intervalSeconds"),
                    "must be at least 1",
                ));
            }
            if rc.timeout_seconds == 0 || rc.timeout_seconds >= rc.interval_seconds {
                v.push(Violation::new(
                    format!("{path}/timeoutSeconds"),
                    "must be at least 1 and less than intervalSeconds",
                ));
            }
            if rc.http_status_codes_for_ready.is_empty()
                || rc
                    .http_status_codes_for_ready
                    .iter()
                    .any(|c| !(100..=999).contains(c))
            {
                v.push(Violation::new(
                    format!("{path}/httpStatusCodesForReady"),
                    "must name at least one HTTP status code (100-999)",
                ));
            }
        }
        for (i, d) in self.dependencies.iter().enumerate() {
            let dep = PathId::parse(d);
            if !dep.problems(true).is_empty() {
                v.push(Violation::new(
                    format!("/dependencies({i})"),
                    "is not a valid path",
                ));
            } else if dep == self.id {
                v.push(Violation::new(
                    format!("/dependencies({i})"),
                    "An app must not depend on itself",
                ));
            }
        }
        if let Some(roles) = &self.accepted_resource_roles
            && roles.is_empty()
        {
            v.push(Violation::new(
                "/acceptedResourceRoles",
                "must not be empty",
            ));
        }
        v.extend(limits::violations(self));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> AppDefinition {
        let mut a: AppDefinition = serde_json::from_value(v).unwrap();
        a.normalize(&PathId::root());
        a
    }

    #[test]
    fn minimal_app_gets_marathon_defaults() {
        let a = parse(json!({"id": "web", "cmd": "sleep 100"}));
        assert!(a.validate().is_empty(), "{:?}", a.validate());
        let out = serde_json::to_value(&a).unwrap();
        assert_eq!(out["id"], "/web");
        assert_eq!(out["instances"], 1);
        assert_eq!(out["cpus"], 1);
        assert_eq!(out["mem"], 128);
        assert_eq!(out["disk"], 0);
        assert_eq!(out["executor"], "");
        assert_eq!(out["backoffSeconds"], 1);
        assert_eq!(out["backoffFactor"], 1.15);
        assert_eq!(out["maxLaunchDelaySeconds"], 300);
        assert_eq!(out["networks"], json!([{"mode": "host"}]));
        assert_eq!(
            out["portDefinitions"],
            json!([{"port": 0, "name": "default", "protocol": "tcp"}])
        );
        assert_eq!(
            out["upgradeStrategy"],
            json!({"minimumHealthCapacity": 1, "maximumOverCapacity": 1})
        );
        assert_eq!(
            out["unreachableStrategy"],
            json!({"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0})
        );
        assert_eq!(out["killSelection"], "YOUNGEST_FIRST");
        assert_eq!(out["labels"], json!({}));
        assert_eq!(out["requirePorts"], false);
        for absent in [
            "args",
            "constraints",
            "env",
            "fetch",
            "healthChecks",
            "dependencies",
            "tty",
            "ports",
            "uris",
        ] {
            assert!(out.get(absent).is_none(), "{absent} should be omitted");
        }
    }

    #[test]
    fn the_container_policy_names_each_field_it_refuses() {
        let hostile = parse(json!({
            "id": "/root", "cmd": "cat /host/etc/shadow",
            "uris": ["file:///etc/shadow", "http://x/ok.tgz"],
            "container": {"type": "DOCKER",
                "docker": {"image": "capstan/busybox", "privileged": true, "parameters": [
                    {"key": "cap-add", "value": "SYS_ADMIN"}, {"key": "pid", "value": "host"},
                    {"key": "v", "value": "/:/host"}, {"key": "label", "value": "a=b"}]},
                "volumes": [{"containerPath": "/host", "hostPath": "/", "mode": "RW"},
                            {"containerPath": "/data", "hostPath": "data", "mode": "RW"},
                            {"containerPath": "/srv", "hostPath": "/srv/app", "mode": "RO"}]}
        }));
        let strict = capstan_types::ContainerPolicy::default();
        let paths: Vec<String> = hostile
            .policy_violations(&strict)
            .into_iter()
            .map(|v| v.path)
            .collect();
        assert_eq!(
            paths,
            [
                "/container/docker/privileged",
                "/container/docker/parameters(0)",
                "/container/docker/parameters(1)",
                "/container/docker/parameters(2)",
                "/container/volumes(0)/hostPath",
                "/container/volumes(2)/hostPath",
                "/fetch(0)/uri",
            ]
        );
        // Allowing /srv lets that volume through; privileged lets almost everything through,
        // but never namespaces or -v (use volumes).
        let srv = capstan_types::ContainerPolicy {
            allowed_host_paths: vec!["/srv".into()],
            ..Default::default()
        };
        let paths: Vec<String> = hostile
            .policy_violations(&srv)
            .into_iter()
            .map(|v| v.path)
            .collect();
        assert!(!paths.contains(&"/container/volumes(2)/hostPath".to_owned()));
        let privileged = capstan_types::ContainerPolicy {
            allow_privileged: true,
            ..Default::default()
        };
        let paths: Vec<String> = hostile
            .policy_violations(&privileged)
            .into_iter()
            .map(|v| v.path)
            .collect();
        assert_eq!(
            paths,
            [
                "/container/docker/parameters(1)",
                "/container/docker/parameters(2)"
            ]
        );
        assert!(
            parse(json!({"id": "/ok", "cmd": "sleep 1"}))
                .policy_violations(&strict)
                .is_empty()
        );
    }

    #[test]
    fn legacy_docker_bridge_format_is_migrated() {
        let a = parse(json!({
            "id": "/grp/redis", "uris": ["http://x/a.tgz"],
            "container": {"type": "DOCKER", "docker": {"image": "redis", "network": "BRIDGE",
                "portMappings": [{"containerPort": 6379, "labels": {"VIP_0": "/redis:6379"}}]}},
            "healthChecks": [{"protocol": "TCP", "portIndex": 0}]
        }));
        assert!(a.validate().is_empty(), "{:?}", a.validate());
        assert_eq!(a.net_mode(), NetMode::Bridge);
        assert!(a.port_definitions.is_none());
        let specs = a.port_specs();
        assert_eq!(specs[0].host_port, Some(0));
        assert_eq!(specs[0].container_port, Some(6379));
        assert!(a.fetch[0].extract);
        let out = serde_json::to_value(&a).unwrap();
        assert!(out["container"]["docker"].get("network").is_none());
        assert_eq!(out["container"]["portMappings"][0]["containerPort"], 6379);
    }

    #[test]
    fn invalid_fields_are_all_reported_with_paths() {
        let a = parse(json!({
            "id": "/Bad", "cmd": "x", "args": ["y"], "cpus": 0, "instances": -1,
            "upgradeStrategy": {"minimumHealthCapacity": 1.5},
            "constraints": [["hostname", "NOPE"], ["rack", "LIKE", "("], ["hostname", "MAX_PER"]],
            "healthChecks": [{"protocol": "HTTP", "portIndex": 3}, {"protocol": "COMMAND"}]
        }));
        let paths: Vec<String> = a.validate().into_iter().map(|v| v.path).collect();
        for p in [
            "/id",
            "/",
            "/cpus",
            "/instances",
            "/upgradeStrategy/minimumHealthCapacity",
            "/constraints(0)",
            "/constraints(1)",
            "/constraints(2)",
            "/healthChecks(0)/portIndex",
            "/healthChecks(1)/command",
        ] {
            assert!(paths.contains(&p.to_string()), "{p} missing in {paths:?}");
        }
    }

    #[test]
    fn readiness_checks_need_a_named_port_a_short_timeout_and_status_codes() {
        let table = [
            (json!({"portName": "http-api"}), vec![]),
            (
                json!({"portName": "nope"}),
                vec!["/readinessChecks(0)/portName"],
            ),
            (
                json!({"portName": "http-api", "protocol": "tcp"}),
                vec!["/readinessChecks(0)/protocol"],
            ),
            (
                json!({"portName": "http-api", "intervalSeconds": 5, "timeoutSeconds": 5}),
                vec!["/readinessChecks(0)/timeoutSeconds"],
            ),
            (
                json!({"portName": "http-api", "httpStatusCodesForReady": []}),
                vec!["/readinessChecks(0)/httpStatusCodesForReady"],
            ),
        ];
        for (rc, want) in table {
            let a = parse(json!({"id": "r", "cmd": "x",
                "portDefinitions": [{"port": 0, "name": "http-api"}], "readinessChecks": [rc]}));
            let paths: Vec<String> = a.validate().into_iter().map(|v| v.path).collect();
            assert_eq!(paths, want, "{rc}");
        }
        let a = parse(json!({"id": "r", "cmd": "x",
            "portDefinitions": [{"port": 0, "name": "http-api"}], "readinessChecks": [{}]}));
        let rc = &a.readiness_checks[0];
        assert_eq!(
            (
                rc.name.as_str(),
                rc.path.as_str(),
                rc.interval_seconds,
                rc.timeout_seconds
            ),
            ("readinessCheck", "/", 30, 10)
        );
        assert_eq!(rc.http_status_codes_for_ready, [200]);
    }

    #[test]
    fn legacy_docker_networks_are_mapped_and_unknown_ones_are_violations() {
        let table = [
            ("HOST", Some("host"), vec![]),
            ("BRIDGE", Some("container/bridge"), vec![]),
            ("USER", Some("container"), vec![]),
            ("WORMHOLE", Some("host"), vec!["/container/docker/network"]),
            ("NONE", Some("host"), vec!["/container/docker/network"]),
            ("bridge", Some("host"), vec!["/container/docker/network"]),
        ];
        for (net, mode, want) in table {
            let a = parse(json!({"id": "n", "container": {"type": "DOCKER",
                "docker": {"image": "capstan/busybox", "network": net}}}));
            let paths: Vec<String> = a.validate().into_iter().map(|v| v.path).collect();
            assert_eq!(paths, want, "{net}");
            assert_eq!(a.networks.first().map(|n| n.mode.as_str()), mode, "{net}");
        }
    }

    #[test]
    fn self_dependencies_and_bad_images_are_violations() {
        // Relative dependencies resolve against the app's group, as in `parse_app`.
        let mut a: AppDefinition = serde_json::from_value(
            json!({"id": "/g/a", "cmd": "x", "dependencies": ["/g/b", "a"]}),
        )
        .unwrap();
        a.normalize(&a.id.parent());
        let paths: Vec<String> = a.validate().into_iter().map(|v| v.path).collect();
        assert_eq!(paths, ["/dependencies(1)"]);
        let a = parse(json!({"id": "i", "container": {"type": "DOCKER",
            "docker": {"image": "../../x; rm -rf /"}}}));
        let paths: Vec<String> = a.validate().into_iter().map(|v| v.path).collect();
        assert_eq!(paths, ["/container/docker/image"]);
        assert_eq!(
            parse(json!({"id": "n", "instances": -3, "cmd": "x"})).instance_count(),
            0
        );
        assert_eq!(
            parse(json!({"id": "n", "instances": i64::MAX, "cmd": "x"})).instance_count(),
            1_000_000
        );
    }

    #[test]
    fn ports_and_constraints_accept_legacy_shapes() {
        let a = parse(
            json!({"id": "a", "cmd": "x", "ports": [0, 0], "requirePorts": false,
            "constraints": [["hostname", "MAX_PER", 2]], "unreachableStrategy": "disabled"}),
        );
        assert_eq!(a.port_definitions.as_ref().unwrap().len(), 2);
        assert_eq!(a.constraints[0][2], "2");
        assert_eq!(a.unreachable_strategy, UnreachableStrategy::Disabled);
        assert!(a.validate().is_empty());
    }
}
