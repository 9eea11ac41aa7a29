//! Mesos messages in and out: offers into [`OfferView`]s, an app + matched resources into a
//! `TaskInfo` (command, container, environment, health check, discovery), status fields out
//! of `TaskStatus`, and the scheduler calls apps sends. Everything here is a typed
//! `mesos.v1` message (prost types from `capstan_proto`): the driver decodes the master's
//! events once at the edge and turns outgoing calls into Mesos JSON only when they are sent.

use std::collections::BTreeMap;

use capstan_proto::mesos::v1 as pb;
use capstan_proto::mesos::v1::scheduler::Call;
use capstan_types::{AgentId, OfferId, TaskId};
use serde_json::Value;

use crate::model::{AppDefinition, NetMode, PathId, Timestamp};
use crate::placement::{Consumed, OfferResource, OfferView};

#[allow(deprecated)] // `role` is what pre-reservation-refinement masters send.
fn reservation_role(r: &pb::Resource) -> String {
    if let Some(role) = r.reservations.last().and_then(|l| l.role.as_deref()) {
        return role.to_string();
    }
    match r.role.as_deref() {
        Some(role) if !role.is_empty() => role.to_string(),
        _ => "*".to_string(),
    }
}

fn format_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        v.to_string()
    }
}

fn value_text(a: &pb::Attribute) -> String {
    use pb::value::Type;
    match Type::try_from(a.r#type) {
        Ok(Type::Scalar) => format_num(a.scalar.as_ref().map_or(0.0, |s| s.value)),
        Ok(Type::Ranges) => {
            let parts: Vec<String> = a
                .ranges
                .iter()
                .flat_map(|r| &r.range)
                .map(|r| format!("{}-{}", r.begin, r.end))
                .collect();
            format!("[{}]", parts.join(","))
        }
        Ok(Type::Set) => {
            let parts: Vec<&str> = a
                .set
                .iter()
                .flat_map(|s| &s.item)
                .map(String::as_str)
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        _ => a.text.as_ref().map(|t| t.value.clone()).unwrap_or_default(),
    }
}

/// The parts of a Mesos `Offer` placement needs.
pub fn offer_view(offer: &pb::Offer) -> OfferView {
    let resources = offer
        .resources
        .iter()
        .map(|r| OfferResource {
            name: r.name.clone(),
            role: reservation_role(r),
            scalar: r.scalar.as_ref().map_or(0.0, |s| s.value),
            ranges: r
                .ranges
                .iter()
                .flat_map(|x| &x.range)
                .map(|x| (x.begin, x.end))
                .collect(),
        })
        .collect();
    let mut attributes: BTreeMap<String, String> = offer
        .attributes
        .iter()
        .map(|a| (a.name.clone(), value_text(a)))
        .collect();
    // The agent's fault domain: Marathon's `@region` and `@zone` constraint fields.
    if let Some(fd) = offer.domain.as_ref().and_then(|d| d.fault_domain.as_ref()) {
        attributes.insert("@region".into(), fd.region.name.clone());
        attributes.insert("@zone".into(), fd.zone.name.clone());
    }
    OfferView {
        id: OfferId::from(offer.id.value.as_str()),
        agent_id: AgentId::from(offer.agent_id.value.as_str()),
        hostname: offer.hostname.clone(),
        attributes,
        resources,
    }
}

/// The offer as `/v2/queue` shows it (`lastUnusedOffers[].offer`): id, agent, host and the
/// offer's resources and attributes in Mesos JSON (`null` when it had none).
pub fn offer_json(offer: &pb::Offer) -> Value {
    fn list<M: capstan_proto::Message + capstan_proto::prost::Name>(items: &[M]) -> Value {
        if items.is_empty() {
            Value::Null
        } else {
            Value::Array(items.iter().map(capstan_proto::to_json).collect())
        }
    }
    serde_json::json!({
        "id": offer.id.value, "agentId": offer.agent_id.value, "hostname": offer.hostname,
        "resources": list(&offer.resources), "attributes": list(&offer.attributes),
    })
}

/// The resources of `consumed` in Mesos form, copying role and reservation details from the
/// offer's resources they came from.
pub fn task_resources(offer: &pb::Offer, consumed: &Consumed) -> Vec<pb::Resource> {
    let template = |name: &str, role: &str| -> pb::Resource {
        offer
            .resources
            .iter()
            .find(|r| r.name == name && reservation_role(r) == role)
            .cloned()
            .unwrap_or_else(|| pb::Resource {
                name: name.to_string(),
                ..Default::default()
            })
    };
    let mut out = Vec::new();
    for (name, role, amount) in &consumed.scalars {
        let mut r = template(name, role);
        r.r#type = pb::value::Type::Scalar as i32;
        r.scalar = Some(pb::value::Scalar { value: *amount });
        r.ranges = None;
        out.push(r);
    }
    let mut by_role: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (role, port) in &consumed.ports {
        by_role.entry(role).or_default().push(*port);
    }
    for (role, mut ports) in by_role {
        ports.sort_unstable();
        let mut r = template("ports", role);
        r.r#type = pb::value::Type::Ranges as i32;
        r.ranges = Some(pb::value::Ranges {
            range: ports
                .iter()
                .map(|p| pb::value::Range {
                    begin: u64::from(*p),
                    end: u64::from(*p),
                })
                .collect(),
        });
        r.scalar = None;
        out.push(r);
    }
    out
}

fn labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> pb::Labels {
    pb::Labels {
        labels: labels
            .into_iter()
            .map(|(k, v)| pb::Label {
                key: k.clone(),
                value: Some(v.clone()),
            })
            .collect(),
    }
}

/// The ports a launched task ended up with.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskPorts {
    /// Host ports (the v2 `ports` of a task).
    pub host_ports: Vec<u32>,
    /// Per port spec: the port the process binds (container port, else host port).
    pub effective: Vec<u32>,
}

/// Marathon's environment for a task (`PORT0`, `PORTS`, `HOST`, `MARATHON_APP_*`, ...).
pub fn task_env(
    app: &AppDefinition,
    task_id: &str,
    host: &str,
    ports: &TaskPorts,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let specs = app.port_specs();
    if !ports.effective.is_empty() {
        env.push(("PORT".into(), ports.effective[0].to_string()));
        env.push((
            "PORTS".into(),
            ports
                .effective
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    for (i, p) in ports.effective.iter().enumerate() {
        env.push((format!("PORT{i}"), p.to_string()));
        if let Some(spec) = specs.get(i) {
            let declared = spec
                .container_port
                .filter(|c| *c != 0)
                .unwrap_or(spec.service_port);
            if declared != 0 {
                env.push((format!("PORT_{declared}"), p.to_string()));
            }
            if let Some(name) = &spec.name {
                let key: String = name
                    .to_uppercase()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                env.push((format!("PORT_{key}"), p.to_string()));
            }
        }
    }
    env.push(("HOST".into(), host.to_string()));
    env.push(("MARATHON_APP_ID".into(), app.id.to_string()));
    if let Some(v) = app.version {
        env.push(("MARATHON_APP_VERSION".into(), v.to_string()));
    }
    if let Some(image) = app.docker_image() {
        env.push(("MARATHON_APP_DOCKER_IMAGE".into(), image.to_string()));
    }
    env.push(("MARATHON_APP_RESOURCE_CPUS".into(), app.cpus.to_string()));
    env.push(("MARATHON_APP_RESOURCE_MEM".into(), app.mem.to_string()));
    env.push(("MARATHON_APP_RESOURCE_DISK".into(), app.disk.to_string()));
    env.push(("MARATHON_APP_RESOURCE_GPUS".into(), app.gpus.to_string()));
    let label_key = |k: &str| -> String {
        k.to_uppercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    let keys: Vec<String> = app.labels.keys().map(|k| label_key(k)).collect();
    if !keys.is_empty() {
        env.push(("MARATHON_APP_LABELS".into(), keys.join(" ")));
    }
    for (k, v) in &app.labels {
        env.push((format!("MARATHON_APP_LABEL_{}", label_key(k)), v.clone()));
    }
    env.push(("MESOS_TASK_ID".into(), task_id.to_string()));
    for (k, v) in &app.env {
        if let Some(s) = v.as_str() {
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), s.to_string()));
        }
    }
    env
}

/// Builds the task's ports from the matched host ports (container port 0 = same as host).
pub fn task_ports(app: &AppDefinition, consumed: &Consumed) -> TaskPorts {
    let specs = app.port_specs();
    let mut host_ports = Vec::new();
    let mut effective = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let host = consumed.host_ports.get(i).copied().flatten();
        if let Some(h) = host {
            host_ports.push(h);
        }
        let eff = match (spec.container_port, host) {
            (Some(c), _) if c != 0 => c,
            (_, Some(h)) => h,
            _ => 0,
        };
        effective.push(eff);
    }
    TaskPorts {
        host_ports,
        effective,
    }
}

/// New Marathon-style task id: `<safeAppId>.instance-<uuid>._app.1`.
pub fn new_task_id(app: &PathId) -> TaskId {
    TaskId::from(format!(
        "{}.instance-{}._app.1",
        app.safe_id(),
        uuid::Uuid::new_v4()
    ))
}

/// The `TaskInfo` for one task of `app` on `offer`.
pub fn task_info(
    app: &AppDefinition,
    task_id: &TaskId,
    offer: &pb::Offer,
    consumed: &Consumed,
    ports: &TaskPorts,
) -> pb::TaskInfo {
    use pb::container_info::{DockerInfo, MesosInfo, docker_info};
    let host = offer.hostname.as_str();
    let name = app.id.reversed_dotted();
    let env = task_env(app, task_id.as_str(), host, ports);
    let mut command = pb::CommandInfo {
        environment: Some(pb::Environment {
            variables: env
                .into_iter()
                .map(|(k, v)| pb::environment::Variable {
                    name: k,
                    value: Some(v),
                    ..Default::default()
                })
                .collect(),
        }),
        ..Default::default()
    };
    let docker = app.docker_image().is_some();
    if let Some(cmd) = &app.cmd {
        command.shell = Some(true);
        command.value = Some(cmd.clone());
    } else {
        command.shell = Some(false);
        if !app.args.is_empty() {
            if !docker {
                command.value = Some(app.args[0].clone());
            }
            command.arguments = app.args.clone();
        }
    }
    command.uris = app
        .fetch
        .iter()
        .map(|f| pb::command_info::Uri {
            value: f.uri.clone(),
            extract: Some(f.extract),
            executable: Some(f.executable),
            cache: Some(f.cache),
            output_file: f.dest_path.clone(),
        })
        .collect();
    command.user = app.user.clone();
    let mut task = pb::TaskInfo {
        name,
        task_id: pb::TaskId {
            value: task_id.as_str().to_string(),
        },
        agent_id: offer.agent_id.clone(),
        resources: task_resources(offer, consumed),
        command: Some(command),
        ..Default::default()
    };
    if !app.labels.is_empty() {
        task.labels = Some(labels(&app.labels));
    }
    let specs = app.port_specs();
    let mode = app.net_mode();
    if let Some(c) = &app.container {
        let volumes: Vec<pb::Volume> = c
            .volumes
            .iter()
            .filter(|v| v.persistent.is_none() && v.external.is_none())
            .map(|v| pb::Volume {
                mode: pb::volume::Mode::from_str_name(&v.mode).unwrap_or(pb::volume::Mode::Rw)
                    as i32,
                container_path: v.container_path.clone(),
                host_path: v.host_path.clone(),
                ..Default::default()
            })
            .collect();
        let network_infos: Vec<pb::NetworkInfo> = app
            .networks
            .iter()
            .filter(|n| n.mode == "container")
            .map(|n| pb::NetworkInfo {
                name: n.name.clone(),
                ..Default::default()
            })
            .collect();
        let mut container = if c.kind == "DOCKER" {
            let d = c.docker.as_ref();
            let port_mappings: Vec<docker_info::PortMapping> = specs
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let host = ports.host_ports.get(host_index(&specs, i)?).copied()?;
                    Some(
                        s.protocol
                            .split(',')
                            .map(move |proto| docker_info::PortMapping {
                                host_port: host,
                                container_port: ports.effective[i],
                                protocol: Some(proto.to_string()),
                            }),
                    )
                })
                .flatten()
                .collect();
            let network = match mode {
                NetMode::Host => docker_info::Network::Host,
                NetMode::Bridge => docker_info::Network::Bridge,
                NetMode::Container => docker_info::Network::User,
            };
            let mut docker = DockerInfo {
                image: d.map(|d| d.image.clone()).unwrap_or_default(),
                network: Some(network as i32),
                privileged: Some(d.is_some_and(|d| d.privileged)),
                force_pull_image: Some(d.is_some_and(|d| d.force_pull_image)),
                ..Default::default()
            };
            if mode != NetMode::Host {
                docker.port_mappings = port_mappings;
            }
            if let Some(d) = d {
                docker.parameters = d
                    .parameters
                    .iter()
                    .map(|p| pb::Parameter {
                        key: p.key.clone(),
                        value: p.value.clone(),
                    })
                    .collect();
            }
            pb::ContainerInfo {
                r#type: pb::container_info::Type::Docker as i32,
                docker: Some(docker),
                ..Default::default()
            }
        } else {
            let mut m = pb::ContainerInfo {
                r#type: pb::container_info::Type::Mesos as i32,
                ..Default::default()
            };
            if let Some(d) = &c.docker
                && !d.image.is_empty()
            {
                m.mesos = Some(MesosInfo {
                    image: Some(pb::Image {
                        r#type: pb::image::Type::Docker as i32,
                        docker: Some(pb::image::Docker {
                            name: d.image.clone(),
                        }),
                        ..Default::default()
                    }),
                });
            }
            m
        };
        container.volumes = volumes;
        container.network_infos = network_infos;
        task.container = Some(container);
    }
    if let Some(hc) = app.health_checks.iter().find(|h| h.runs_on_agent()) {
        use pb::health_check::{HttpCheckInfo, TcpCheckInfo, Type};
        let port = hc.port.or_else(|| {
            let i = hc.port_index? as usize;
            match mode {
                NetMode::Host => ports.host_ports.get(host_index(&specs, i)?).copied(),
                _ => ports.effective.get(i).copied(),
            }
        });
        let mut check = pb::HealthCheck {
            delay_seconds: Some(hc.delay_seconds as f64),
            interval_seconds: Some(hc.interval_seconds as f64),
            timeout_seconds: Some(hc.timeout_seconds as f64),
            consecutive_failures: Some(hc.max_consecutive_failures),
            grace_period_seconds: Some(hc.grace_period_seconds as f64),
            ..Default::default()
        };
        match hc.protocol.as_str() {
            "COMMAND" => {
                check.r#type = Some(Type::Command as i32);
                check.command = Some(pb::CommandInfo {
                    value: Some(hc.command_value().unwrap_or_default()),
                    shell: Some(true),
                    ..Default::default()
                });
            }
            "MESOS_TCP" => {
                check.r#type = Some(Type::Tcp as i32);
                check.tcp = Some(TcpCheckInfo {
                    port: port.unwrap_or(0),
                    ..Default::default()
                });
            }
            proto => {
                check.r#type = Some(Type::Http as i32);
                check.http = Some(HttpCheckInfo {
                    port: port.unwrap_or(0),
                    path: Some(hc.path.clone().unwrap_or_else(|| "/".into())),
                    scheme: Some(
                        if proto == "MESOS_HTTPS" {
                            "https"
                        } else {
                            "http"
                        }
                        .into(),
                    ),
                    ..Default::default()
                });
            }
        }
        task.health_check = Some(check);
    }
    if let Some(g) = app.task_kill_grace_period_seconds {
        // Validation bounds `g`; saturating all the same, never wrapping.
        let nanos = i64::try_from(g).map_or(i64::MAX, |g| g.saturating_mul(1_000_000_000));
        task.kill_policy = Some(pb::KillPolicy {
            grace_period: Some(pb::DurationInfo { nanoseconds: nanos }),
        });
    }
    // Discovery: VIP labels of ports and DCOS_SERVICE_* app labels (dcos-net, Mesos-DNS SRV).
    let mut disc_ports = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let host_port = host_index(&specs, i).and_then(|hi| ports.host_ports.get(hi).copied());
        let (number, scope) = match (mode, host_port) {
            (NetMode::Host, Some(h)) | (NetMode::Bridge, Some(h)) => (h, "host"),
            _ => (ports.effective[i], "container"),
        };
        if number == 0 {
            continue;
        }
        let mut port_labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        port_labels.push(("network-scope".into(), scope.into()));
        if scope == "container"
            && let Some(n) = app.networks.first().and_then(|n| n.name.clone())
        {
            port_labels.push(("network-name".into(), n));
        }
        for proto in s.protocol.split(',') {
            disc_ports.push(pb::Port {
                number,
                protocol: Some(proto.to_string()),
                labels: Some(labels(port_labels.iter().map(|(k, v)| (k, v)))),
                name: s.name.clone(),
                ..Default::default()
            });
        }
    }
    let mut discovery = pb::DiscoveryInfo {
        visibility: pb::discovery_info::Visibility::Framework as i32,
        name: Some(app.id.reversed_dotted()),
        ..Default::default()
    };
    if !disc_ports.is_empty() {
        discovery.ports = Some(pb::Ports { ports: disc_ports });
    }
    let dcos: Vec<(&String, &String)> = app
        .labels
        .iter()
        .filter(|(k, _)| k.starts_with("DCOS_SERVICE_"))
        .collect();
    if !dcos.is_empty() {
        discovery.labels = Some(labels(dcos));
    }
    task.discovery = Some(discovery);
    task
}

/// Index into the host-port list of port spec `i` (specs without host port have none).
fn host_index(specs: &[crate::model::PortSpec], i: usize) -> Option<usize> {
    specs.get(i)?.host_port?;
    Some(specs[..i].iter().filter(|s| s.host_port.is_some()).count())
}

/// IP addresses reported in a status (`container_status.network_infos[].ip_addresses[]`).
pub fn status_ips(status: &pb::TaskStatus) -> Vec<String> {
    status
        .container_status
        .iter()
        .flat_map(|c| &c.network_infos)
        .flat_map(|n| &n.ip_addresses)
        .filter_map(|ip| ip.ip_address.clone())
        .collect()
}

/// A scheduler call on its way to the master: its type name and the typed call without the
/// framework id (added when it is sent, where it becomes Mesos JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct OutCall {
    pub kind: &'static str,
    pub call: Call,
}

impl OutCall {
    pub fn new(call: Call) -> OutCall {
        let kind = call
            .r#type
            .and_then(|t| capstan_proto::mesos::v1::scheduler::call::Type::try_from(t).ok())
            .map_or("", |t| t.as_str_name());
        OutCall { kind, call }
    }

    /// The call with `framework_id` set, as Mesos JSON text.
    pub fn body(&self, framework_id: &str) -> String {
        self.clone().into_body(framework_id)
    }

    /// [`OutCall::body`] without copying the call (an ACCEPT can carry thousands of tasks).
    pub fn into_body(mut self, framework_id: &str) -> String {
        self.call.framework_id = Some(pb::FrameworkId {
            value: framework_id.to_string(),
        });
        capstan_proto::to_json_string(&self.call)
    }

    /// The call as Mesos JSON (for tests and logs).
    pub fn value(&self) -> Value {
        capstan_proto::to_json(&self.call)
    }
}

pub mod calls {
    use super::*;
    use capstan_proto::mesos::v1::scheduler::call::{self, Type};

    fn call(kind: Type) -> Call {
        Call {
            r#type: Some(kind as i32),
            ..Default::default()
        }
    }

    fn offer_ids(ids: &[OfferId]) -> Vec<pb::OfferId> {
        ids.iter()
            .map(|o| pb::OfferId {
                value: o.as_str().to_string(),
            })
            .collect()
    }

    fn task_id(id: &TaskId) -> pb::TaskId {
        pb::TaskId {
            value: id.as_str().to_string(),
        }
    }

    /// The agent id, unless it is empty (unknown).
    fn agent_id(id: Option<&AgentId>) -> Option<pb::AgentId> {
        id.filter(|a| !a.as_str().is_empty()).map(|a| pb::AgentId {
            value: a.as_str().to_string(),
        })
    }

    pub fn accept(
        offer_ids: &[OfferId],
        task_infos: Vec<pb::TaskInfo>,
        refuse_seconds: f64,
    ) -> Call {
        Call {
            accept: Some(call::Accept {
                offer_ids: self::offer_ids(offer_ids),
                operations: vec![pb::offer::Operation {
                    r#type: Some(pb::offer::operation::Type::Launch as i32),
                    launch: Some(pb::offer::operation::Launch { task_infos }),
                    ..Default::default()
                }],
                filters: Some(pb::Filters {
                    refuse_seconds: Some(refuse_seconds),
                }),
            }),
            ..call(Type::Accept)
        }
    }

    pub fn decline(offer_ids: &[OfferId], refuse_seconds: f64) -> Call {
        Call {
            decline: Some(call::Decline {
                offer_ids: self::offer_ids(offer_ids),
                filters: Some(pb::Filters {
                    refuse_seconds: Some(refuse_seconds),
                }),
            }),
            ..call(Type::Decline)
        }
    }

    pub fn kill(task_id: &TaskId, agent_id: Option<&AgentId>) -> Call {
        Call {
            kill: Some(call::Kill {
                task_id: self::task_id(task_id),
                agent_id: self::agent_id(agent_id),
                kill_policy: None,
            }),
            ..call(Type::Kill)
        }
    }

    pub fn acknowledge(agent_id: &AgentId, task_id: &TaskId, uuid: Vec<u8>) -> Call {
        Call {
            acknowledge: Some(call::Acknowledge {
                agent_id: pb::AgentId {
                    value: agent_id.as_str().to_string(),
                },
                task_id: self::task_id(task_id),
                uuid,
            }),
            ..call(Type::Acknowledge)
        }
    }

    /// `tasks` = (task id, agent id); empty = implicit reconciliation.
    pub fn reconcile(tasks: &[(TaskId, AgentId)]) -> Call {
        Call {
            reconcile: Some(call::Reconcile {
                tasks: tasks
                    .iter()
                    .map(|(t, a)| call::reconcile::Task {
                        task_id: self::task_id(t),
                        agent_id: self::agent_id(Some(a)),
                    })
                    .collect(),
            }),
            ..call(Type::Reconcile)
        }
    }

    pub fn revive() -> Call {
        call(Type::Revive)
    }

    pub fn suppress() -> Call {
        call(Type::Suppress)
    }
}

/// Seconds since the epoch of a Mesos status timestamp, as a [`Timestamp`].
pub fn status_time(status: &pb::TaskStatus, fallback: Timestamp) -> Timestamp {
    status
        .timestamp
        .map(|t| Timestamp((t * 1000.0) as i64))
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn offer_of(v: Value) -> pb::Offer {
        let raw = json!({"type": "OFFERS", "offers": {"offers": [v]}});
        let event: capstan_proto::mesos::v1::scheduler::Event =
            capstan_proto::from_json(&raw).unwrap();
        event.offers.unwrap().offers.remove(0)
    }

    #[test]
    fn offers_are_viewed_from_typed_messages_with_their_fault_domain() {
        let o = offer_of(json!({
            "id": {"value": "O1"}, "framework_id": {"value": "F"}, "agent_id": {"value": "S1"},
            "hostname": "h1",
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "role": "*"},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 512.0},
                 "reservations": [{"type": "STATIC", "role": "web"}]},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31009}]}}
            ],
            "attributes": [
                {"name": "rack", "type": "TEXT", "text": {"value": "r1"}},
                {"name": "cores", "type": "SCALAR", "scalar": {"value": 8}},
                {"name": "span", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 3}]}},
                {"name": "tags", "type": "SET", "set": {"item": ["a", "b"]}}
            ],
            "domain": {"fault_domain": {"region": {"name": "eu"}, "zone": {"name": "eu-1"}}}
        }));
        let v = offer_view(&o);
        assert_eq!(v.id, "O1");
        assert_eq!(v.agent_id, "S1");
        assert_eq!(v.hostname, "h1");
        let attr = |k: &str| v.attributes.get(k).map(String::as_str);
        assert_eq!(attr("rack"), Some("r1"));
        assert_eq!(attr("cores"), Some("8.0"));
        assert_eq!(attr("span"), Some("[1-3]"));
        assert_eq!(attr("tags"), Some("{a,b}"));
        assert_eq!(attr("@region"), Some("eu"));
        assert_eq!(attr("@zone"), Some("eu-1"));
        let roles: Vec<(&str, &str)> = v
            .resources
            .iter()
            .map(|r| (r.name.as_str(), r.role.as_str()))
            .collect();
        assert_eq!(roles, [("cpus", "*"), ("mem", "web"), ("ports", "*")]);
        assert_eq!(v.resources[2].ranges, [(31000, 31009)]);
        let shown = offer_json(&o);
        assert_eq!(shown["agentId"], "S1");
        assert_eq!(shown["resources"][1]["reservations"][0]["role"], "web");
        assert_eq!(shown["attributes"][0]["text"]["value"], "r1");
    }

    #[test]
    fn calls_keep_their_wire_shape() {
        let accept = OutCall::new(calls::accept(&["O1".into()], Vec::new(), 7.5)).value();
        assert_eq!(accept["type"], "ACCEPT");
        assert_eq!(accept["accept"]["offer_ids"], json!([{"value": "O1"}]));
        assert_eq!(accept["accept"]["filters"], json!({"refuse_seconds": 7.5}));
        assert_eq!(accept["accept"]["operations"][0]["type"], "LAUNCH");
        let decline = OutCall::new(calls::decline(&["O1".into(), "O2".into()], 5.0));
        assert_eq!(decline.kind, "DECLINE");
        assert_eq!(
            decline.value()["decline"],
            json!({"offer_ids": [{"value": "O1"}, {"value": "O2"}], "filters": {"refuse_seconds": 5.0}})
        );
        let kill = OutCall::new(calls::kill(&"T".into(), Some(&"".into()))).value();
        assert_eq!(
            kill,
            json!({"type": "KILL", "kill": {"task_id": {"value": "T"}}})
        );
        let kill = OutCall::new(calls::kill(&"T".into(), Some(&"S".into()))).value();
        assert_eq!(kill["kill"]["agent_id"], json!({"value": "S"}));
        let ack = OutCall::new(calls::acknowledge(&"S".into(), &"T".into(), vec![1, 2, 3]));
        assert_eq!(ack.value()["acknowledge"]["uuid"], "AQID");
        let rec = OutCall::new(calls::reconcile(&[("T".into(), "".into())])).value();
        assert_eq!(
            rec["reconcile"]["tasks"],
            json!([{"task_id": {"value": "T"}}])
        );
        assert_eq!(
            OutCall::new(calls::revive()).value(),
            json!({"type": "REVIVE"})
        );
        assert_eq!(OutCall::new(calls::suppress()).kind, "SUPPRESS");
    }

    #[test]
    fn status_fields_come_from_the_typed_status() {
        let status: pb::TaskStatus = capstan_proto::from_json(&json!({
            "task_id": {"value": "T"}, "state": "TASK_RUNNING", "timestamp": 1.5,
            "container_status": {"network_infos": [
                {"ip_addresses": [{"ip_address": "10.0.0.1"}, {"ip_address": "fd00::1"}]},
                {"ip_addresses": [{"ip_address": "10.0.1.1"}]}
            ]}
        }))
        .unwrap();
        assert_eq!(status_ips(&status), ["10.0.0.1", "fd00::1", "10.0.1.1"]);
        assert_eq!(status_time(&status, Timestamp(7)), Timestamp(1_500));
        let bare: pb::TaskStatus =
            capstan_proto::from_json(&json!({"task_id": {"value": "T"}, "state": "TASK_LOST"}))
                .unwrap();
        assert!(status_ips(&bare).is_empty());
        assert_eq!(status_time(&bare, Timestamp(7)), Timestamp(7));
    }
}
