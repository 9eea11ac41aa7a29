//! Mesos JSON in and out: offers into [`OfferView`]s, an app + matched resources into a
//! `TaskInfo` (command, container, environment, health check, discovery), status fields out
//! of `TaskStatus`, and the scheduler calls apps sends. Everything is Mesos JSON
//! (`serde_json::Value`) because that is what travels; tests parse it with `capstan_proto` to
//! prove it is a valid `mesos.v1` message.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::model::{AppDefinition, NetMode, PathId, Timestamp};
use crate::placement::{Consumed, OfferResource, OfferView};

fn reservation_role(r: &Value) -> String {
    if let Some(last) = r["reservations"].as_array().and_then(|v| v.last())
        && let Some(role) = last["role"].as_str()
    {
        return role.to_string();
    }
    match r["role"].as_str() {
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

fn value_text(a: &Value) -> String {
    match a["type"].as_str() {
        Some("SCALAR") => format_num(a["scalar"]["value"].as_f64().unwrap_or(0.0)),
        Some("RANGES") => {
            let parts: Vec<String> = a["ranges"]["range"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{}-{}", r["begin"], r["end"]))
                .collect();
            format!("[{}]", parts.join(","))
        }
        Some("SET") => {
            let parts: Vec<&str> = a["set"]["item"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        _ => a["text"]["value"].as_str().unwrap_or_default().to_string(),
    }
}

/// The parts of a Mesos `Offer` (JSON) placement needs.
pub fn offer_view(offer: &Value) -> OfferView {
    let resources = offer["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| OfferResource {
            name: r["name"].as_str().unwrap_or_default().to_string(),
            role: reservation_role(r),
            scalar: r["scalar"]["value"].as_f64().unwrap_or(0.0),
            ranges: r["ranges"]["range"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| Some((x["begin"].as_u64()?, x["end"].as_u64()?)))
                .collect(),
        })
        .collect();
    let mut attributes: BTreeMap<String, String> = offer["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["name"].as_str()?.to_string(), value_text(a))))
        .collect();
    if let Some(fd) = offer["domain"]["fault_domain"].as_object() {
        if let Some(r) = fd.get("region").and_then(|r| r["name"].as_str()) {
            attributes.insert("@region".into(), r.into());
        }
        if let Some(z) = fd.get("zone").and_then(|z| z["name"].as_str()) {
            attributes.insert("@zone".into(), z.into());
        }
    }
    OfferView {
        id: offer["id"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        agent_id: offer["agent_id"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        hostname: offer["hostname"].as_str().unwrap_or_default().to_string(),
        attributes,
        resources,
    }
}

/// The resources of `consumed` in Mesos form, copying role and reservation details from the
/// offer's resources they came from.
pub fn task_resources(offer: &Value, consumed: &Consumed) -> Vec<Value> {
    let template = |name: &str, role: &str| -> Value {
        offer["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name && reservation_role(r) == role)
            .cloned()
            .unwrap_or_else(|| json!({"name": name}))
    };
    let mut out = Vec::new();
    for (name, role, amount) in &consumed.scalars {
        let mut r = template(name, role);
        let obj = r.as_object_mut().expect("resource is an object");
        obj.insert("type".into(), json!("SCALAR"));
        obj.insert("scalar".into(), json!({ "value": amount }));
        obj.remove("ranges");
        out.push(r);
    }
    let mut by_role: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (role, port) in &consumed.ports {
        by_role.entry(role).or_default().push(*port);
    }
    for (role, mut ports) in by_role {
        ports.sort_unstable();
        let mut r = template("ports", role);
        let obj = r.as_object_mut().expect("resource is an object");
        obj.insert("type".into(), json!("RANGES"));
        obj.insert(
            "ranges".into(),
            json!({"range": ports.iter().map(|p| json!({"begin": p, "end": p})).collect::<Vec<_>>()}),
        );
        obj.remove("scalar");
        out.push(r);
    }
    out
}

fn labels_json<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    json!({"labels": labels.into_iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()})
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
pub fn new_task_id(app: &PathId) -> String {
    format!("{}.instance-{}._app.1", app.safe_id(), uuid::Uuid::new_v4())
}

/// The `TaskInfo` (Mesos JSON) for one task of `app` on `offer`.
pub fn task_info(
    app: &AppDefinition,
    task_id: &str,
    offer: &Value,
    consumed: &Consumed,
    ports: &TaskPorts,
) -> Value {
    let host = offer["hostname"].as_str().unwrap_or_default();
    let name = app.id.reversed_dotted();
    let env = task_env(app, task_id, host, ports);
    let mut command = json!({
        "environment": {"variables": env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()},
    });
    let docker = app.docker_image().is_some();
    if let Some(cmd) = &app.cmd {
        command["shell"] = json!(true);
        command["value"] = json!(cmd);
    } else {
        command["shell"] = json!(false);
        if !app.args.is_empty() {
            if !docker {
                command["value"] = json!(app.args[0]);
            }
            command["arguments"] = json!(app.args);
        }
    }
    if !app.fetch.is_empty() {
        command["uris"] = json!(app.fetch.iter().map(|f| {
            let mut u = json!({"value": f.uri, "extract": f.extract, "executable": f.executable, "cache": f.cache});
            if let Some(d) = &f.dest_path { u["output_file"] = json!(d); }
            u
        }).collect::<Vec<_>>());
    }
    if let Some(user) = &app.user {
        command["user"] = json!(user);
    }
    let mut task = json!({
        "name": name,
        "task_id": {"value": task_id},
        "agent_id": offer["agent_id"].clone(),
        "resources": task_resources(offer, consumed),
        "command": command,
    });
    if !app.labels.is_empty() {
        task["labels"] = labels_json(&app.labels);
    }
    let specs = app.port_specs();
    let mode = app.net_mode();
    if let Some(c) = &app.container {
        let volumes: Vec<Value> = c
            .volumes
            .iter()
            .filter(|v| v.persistent.is_none() && v.external.is_none())
            .map(|v| {
                let mut j = json!({"container_path": v.container_path, "mode": v.mode});
                if let Some(h) = &v.host_path {
                    j["host_path"] = json!(h);
                }
                j
            })
            .collect();
        let network_infos: Vec<Value> = app
            .networks
            .iter()
            .filter(|n| n.mode == "container")
            .map(|n| match &n.name {
                Some(name) => json!({"name": name}),
                None => json!({}),
            })
            .collect();
        let mut container = if c.kind == "DOCKER" {
            let d = c.docker.as_ref();
            let port_mappings: Vec<Value> = specs
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let host = ports.host_ports.get(host_index(&specs, i)?).copied()?;
                    Some(s.protocol.split(',').map(move |proto| json!({"host_port": host, "container_port": ports.effective[i], "protocol": proto})))
                })
                .flatten()
                .collect();
            let mut docker = json!({
                "image": d.map(|d| d.image.clone()).unwrap_or_default(),
                "network": match mode { NetMode::Host => "HOST", NetMode::Bridge => "BRIDGE", NetMode::Container => "USER" },
                "privileged": d.is_some_and(|d| d.privileged),
                "force_pull_image": d.is_some_and(|d| d.force_pull_image),
            });
            if mode != NetMode::Host && !port_mappings.is_empty() {
                docker["port_mappings"] = json!(port_mappings);
            }
            if let Some(d) = d
                && !d.parameters.is_empty()
            {
                docker["parameters"] = json!(
                    d.parameters
                        .iter()
                        .map(|p| json!({"key": p.key, "value": p.value}))
                        .collect::<Vec<_>>()
                );
            }
            json!({"type": "DOCKER", "docker": docker})
        } else {
            let mut m = json!({"type": "MESOS"});
            if let Some(d) = &c.docker
                && !d.image.is_empty()
            {
                m["mesos"] = json!({"image": {"type": "DOCKER", "docker": {"name": d.image}}});
            }
            m
        };
        if !volumes.is_empty() {
            container["volumes"] = json!(volumes);
        }
        if !network_infos.is_empty() {
            container["network_infos"] = json!(network_infos);
        }
        task["container"] = container;
    }
    if let Some(hc) = app.health_checks.iter().find(|h| h.runs_on_agent()) {
        let port = hc.port.or_else(|| {
            let i = hc.port_index? as usize;
            match mode {
                NetMode::Host => ports.host_ports.get(host_index(&specs, i)?).copied(),
                _ => ports.effective.get(i).copied(),
            }
        });
        let mut check = json!({
            "delay_seconds": hc.delay_seconds as f64,
            "interval_seconds": hc.interval_seconds as f64,
            "timeout_seconds": hc.timeout_seconds as f64,
            "consecutive_failures": hc.max_consecutive_failures,
            "grace_period_seconds": hc.grace_period_seconds as f64,
        });
        match hc.protocol.as_str() {
            "COMMAND" => {
                check["type"] = json!("COMMAND");
                check["command"] =
                    json!({"value": hc.command_value().unwrap_or_default(), "shell": true});
            }
            "MESOS_TCP" => {
                check["type"] = json!("TCP");
                check["tcp"] = json!({"port": port.unwrap_or(0)});
            }
            proto => {
                check["type"] = json!("HTTP");
                check["http"] = json!({
                    "port": port.unwrap_or(0),
                    "path": hc.path.clone().unwrap_or_else(|| "/".into()),
                    "scheme": if proto == "MESOS_HTTPS" { "https" } else { "http" },
                });
            }
        }
        task["health_check"] = check;
    }
    if let Some(g) = app.task_kill_grace_period_seconds {
        // Validation bounds `g`; saturating all the same, never wrapping.
        let nanos = i64::try_from(g).map_or(i64::MAX, |g| g.saturating_mul(1_000_000_000));
        task["kill_policy"] = json!({"grace_period": {"nanoseconds": nanos}});
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
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.push(("network-scope".into(), scope.into()));
        if scope == "container"
            && let Some(n) = app.networks.first().and_then(|n| n.name.clone())
        {
            labels.push(("network-name".into(), n));
        }
        for proto in s.protocol.split(',') {
            let mut p = json!({
                "number": number,
                "protocol": proto,
                "labels": {"labels": labels.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()},
            });
            if let Some(n) = &s.name {
                p["name"] = json!(n);
            }
            disc_ports.push(p);
        }
    }
    let mut discovery = json!({"visibility": "FRAMEWORK", "name": app.id.reversed_dotted()});
    if !disc_ports.is_empty() {
        discovery["ports"] = json!({"ports": disc_ports});
    }
    let dcos: Vec<(&String, &String)> = app
        .labels
        .iter()
        .filter(|(k, _)| k.starts_with("DCOS_SERVICE_"))
        .collect();
    if !dcos.is_empty() {
        discovery["labels"] = labels_json(dcos);
    }
    task["discovery"] = discovery;
    task
}

/// Index into the host-port list of port spec `i` (specs without host port have none).
fn host_index(specs: &[crate::model::PortSpec], i: usize) -> Option<usize> {
    specs.get(i)?.host_port?;
    Some(specs[..i].iter().filter(|s| s.host_port.is_some()).count())
}

/// IP addresses reported in a status (`container_status.network_infos[].ip_addresses[]`).
pub fn status_ips(status: &Value) -> Vec<String> {
    status["container_status"]["network_infos"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["ip_addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|ip| ip["ip_address"].as_str().map(str::to_string))
        .collect()
}

/// Scheduler calls apps sends (framework id is added by the driver).
/// A scheduler call on its way to the master: its type and its JSON text without the
/// framework id (added when it is sent).
#[derive(Debug, Clone, PartialEq)]
pub struct OutCall {
    pub kind: String,
    pub json: String,
}

impl OutCall {
    pub fn new(call: &Value) -> OutCall {
        OutCall {
            kind: call["type"].as_str().unwrap_or_default().to_string(),
            json: call.to_string(),
        }
    }

    /// The call with `framework_id` set.
    pub(crate) fn body(&self, framework_id: &str) -> String {
        let id = json!({ "value": framework_id }).to_string();
        match self.json.strip_prefix('{') {
            Some(rest) if rest.trim_start().starts_with('}') => {
                format!("{{\"framework_id\":{id}}}")
            }
            Some(rest) => format!("{{\"framework_id\":{id},{rest}"),
            None => self.json.clone(),
        }
    }
}

impl OutCall {
    /// The call as a value again (for tests and logs).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }
}

pub mod calls {
    use super::*;

    pub fn accept(offer_ids: &[String], task_infos: Vec<Value>, refuse_seconds: f64) -> Value {
        let mut call = json!({"type": "ACCEPT", "accept": {
            "offer_ids": offer_ids.iter().map(|o| json!({"value": o})).collect::<Vec<_>>(),
            "operations": [{"type": "LAUNCH", "launch": {}}],
            "filters": {"refuse_seconds": refuse_seconds},
        }});
        // Moved in rather than through `json!` (which would serialize a deep copy): a launch
        // burst builds thousands of task infos.
        call["accept"]["operations"][0]["launch"]["task_infos"] = Value::Array(task_infos);
        call
    }

    pub fn decline(offer_ids: &[String], refuse_seconds: f64) -> Value {
        json!({"type": "DECLINE", "decline": {
            "offer_ids": offer_ids.iter().map(|o| json!({"value": o})).collect::<Vec<_>>(),
            "filters": {"refuse_seconds": refuse_seconds},
        }})
    }

    pub fn kill(task_id: &str, agent_id: Option<&str>) -> Value {
        let mut k = json!({"task_id": {"value": task_id}});
        if let Some(a) = agent_id.filter(|a| !a.is_empty()) {
            k["agent_id"] = json!({ "value": a });
        }
        json!({"type": "KILL", "kill": k})
    }

    pub fn acknowledge(agent_id: &str, task_id: &str, uuid_b64: &str) -> Value {
        json!({"type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": {"value": agent_id}, "task_id": {"value": task_id}, "uuid": uuid_b64,
        }})
    }

    /// `tasks` = (task id, agent id); empty = implicit reconciliation.
    pub fn reconcile(tasks: &[(String, String)]) -> Value {
        json!({"type": "RECONCILE", "reconcile": {
            "tasks": tasks.iter().map(|(t, a)| {
                let mut j = json!({"task_id": {"value": t}});
                if !a.is_empty() { j["agent_id"] = json!({"value": a}); }
                j
            }).collect::<Vec<_>>(),
        }})
    }

    pub fn revive() -> Value {
        json!({"type": "REVIVE"})
    }

    pub fn suppress() -> Value {
        json!({"type": "SUPPRESS"})
    }
}

/// Seconds since the epoch of a Mesos status timestamp, as a [`Timestamp`].
pub fn status_time(status: &Value, fallback: Timestamp) -> Timestamp {
    status["timestamp"]
        .as_f64()
        .map(|t| Timestamp((t * 1000.0) as i64))
        .unwrap_or(fallback)
}
