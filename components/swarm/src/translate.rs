//! Docker ↔ Mesos, pure: a create body becomes a [`Spec`] (resources with defaults, ports,
//! environment, labels), a spec and an offer become the resources to take and a `TaskInfo`
//! for the agent's Docker containerizer, and a task's status becomes a Docker state and exit
//! code.
//!
//! Key decisions: `--cpus`/`NanoCpus` and `-m` are the task's `cpus` and `mem` (never
//! classic Swarm's "`-c N` means N CPUs"); a container without them gets the configured
//! defaults instead of a refusal. `-p H:C` needs host port H inside the agent's `ports`
//! ranges, `-p C` takes any port of them. Everything in Mesos JSON (`serde_json::Value`),
//! which is what travels to the master.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::model::{CreateBody, Network, PortRequest, PublishedPort, Restart, Spec, VolumeSpec};

/// A create body swarm cannot run; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadCreate(pub String);

/// Defaults for what a create body leaves out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    pub cpus: f64,
    pub mem_mib: f64,
}

/// The [`Spec`] of a create body.
pub fn spec(body: &CreateBody, defaults: Defaults) -> Result<Spec, BadCreate> {
    if body.image.trim().is_empty() {
        return Err(BadCreate("Image is required".into()));
    }
    let hc = &body.host_config;
    if hc.memory < 0 || hc.nano_cpus < 0 {
        return Err(BadCreate(
            "HostConfig.Memory and HostConfig.NanoCpus may not be negative".into(),
        ));
    }
    let cpus = if hc.nano_cpus > 0 {
        hc.nano_cpus as f64 / 1e9
    } else {
        defaults.cpus
    };
    let mem_mib = if hc.memory > 0 {
        let mib = hc.memory as f64 / (1024.0 * 1024.0);
        if mib < 6.0 {
            return Err(BadCreate(
                "HostConfig.Memory: the minimum memory limit is 6MB".into(),
            ));
        }
        mib
    } else {
        defaults.mem_mib
    };
    let mut networks = BTreeMap::new();
    let endpoints = body
        .networking_config
        .endpoints_config
        .clone()
        .unwrap_or_default();
    let network = match hc.network_mode.as_str() {
        "" | "default" | "bridge" => Network::Bridge,
        "host" => Network::Host,
        "none" => Network::None,
        other if other.starts_with("container:") => {
            return Err(BadCreate(format!(
                "HostConfig.NetworkMode {other:?} is not supported by capstan (bridge, host, none and user networks are)"
            )));
        }
        // A user network: the task runs with bridge networking; the attachment is recorded
        // (the HTTP layer checks that the network exists).
        user => {
            networks.insert(user.to_owned(), crate::model::Attachment::default());
            Network::Bridge
        }
    };
    for (name, ep) in &endpoints {
        if matches!(name.as_str(), "bridge" | "host" | "none" | "default") {
            continue;
        }
        let aliases = ep
            .as_ref()
            .and_then(|e| e.aliases.clone())
            .unwrap_or_default();
        networks.entry(name.clone()).or_default().aliases = aliases;
    }
    let restart = match hc.restart_policy.as_ref() {
        None => Restart::No,
        Some(r) => match r.name.as_str() {
            "" | "no" => Restart::No,
            "always" => Restart::Always,
            "unless-stopped" => Restart::UnlessStopped,
            "on-failure" => Restart::OnFailure {
                max_retries: r.maximum_retry_count.max(0) as u64,
            },
            other => {
                return Err(BadCreate(format!(
                    "HostConfig.RestartPolicy: invalid restart policy {other:?}"
                )));
            }
        },
    };
    if restart != Restart::No && hc.auto_remove {
        return Err(BadCreate(
            "conflicting options: RestartPolicy and AutoRemove (--rm) cannot be used together"
                .into(),
        ));
    }
    if hc.publish_all_ports {
        return Err(BadCreate(
            "HostConfig.PublishAllPorts (-P) is not supported by capstan; publish ports with -p"
                .into(),
        ));
    }
    if hc.mounts.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(BadCreate(
            "HostConfig.Mounts (--mount) is not supported by capstan; use -v /host/path:/path or -v /path".into(),
        ));
    }
    let volumes = volumes(body)?;
    let mut ports = Vec::new();
    for (key, bindings) in hc.port_bindings.iter().flatten() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let container_port: u32 = port
            .parse()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| BadCreate(format!("HostConfig.PortBindings: {key:?} is not a port")))?;
        if proto != "tcp" && proto != "udp" {
            return Err(BadCreate(format!(
                "HostConfig.PortBindings: protocol {proto:?} of {key:?} is not tcp or udp"
            )));
        }
        let list = bindings.clone().unwrap_or_default();
        let list = if list.is_empty() {
            vec![Default::default()]
        } else {
            list
        };
        for b in list {
            let host_port = match b.host_port.trim() {
                "" | "0" => None,
                p => Some(
                    p.parse::<u32>()
                        .ok()
                        .filter(|p| (1..=65535).contains(p))
                        .ok_or_else(|| {
                            BadCreate(format!(
                                "HostConfig.PortBindings: host port {p:?} of {key:?} is not a port (ranges are not supported)"
                            ))
                        })?,
                ),
            };
            ports.push(PortRequest {
                container_port,
                protocol: proto.to_owned(),
                host_port,
            });
        }
    }
    if network != Network::Bridge && !ports.is_empty() {
        return Err(BadCreate(format!(
            "HostConfig.PortBindings: ports are published only with bridge networking, not {}",
            network.docker_name()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &ports {
        if let Some(h) = p.host_port
            && !seen.insert((h, p.protocol.clone()))
        {
            return Err(BadCreate(format!(
                "HostConfig.PortBindings: host port {h}/{} is bound twice",
                p.protocol
            )));
        }
    }
    let (constraints, plain_env) = crate::constraints::extract(
        body.env.as_deref().unwrap_or_default(),
        body.labels.as_ref(),
    )
    .map_err(BadCreate)?;
    let mut labels = body.labels.clone().unwrap_or_default();
    if !constraints.is_empty() && !labels.contains_key(crate::constraints::LABEL) {
        let exprs: Vec<String> = body
            .env
            .iter()
            .flatten()
            .filter_map(|e| e.strip_prefix("constraint:").map(str::to_owned))
            .collect();
        labels.insert(
            crate::constraints::LABEL.to_owned(),
            serde_json::to_string(&exprs).unwrap_or_default(),
        );
    }
    let mut env = Vec::new();
    for (i, e) in plain_env.iter().enumerate() {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_owned(), v.to_owned())),
            // `-e NAME` without a value passes the client's own variable, which the CLI
            // resolves itself; one still without `=` is dropped, as Docker does.
            None if !e.is_empty() => {}
            _ => return Err(BadCreate(format!("Env[{i}]: {e:?} has no variable name"))),
        }
    }
    Ok(Spec {
        image: body.image.clone(),
        cmd: body.cmd.clone().unwrap_or_default(),
        entrypoint: body.entrypoint.clone().unwrap_or_default(),
        env,
        labels,
        cpus,
        mem_mib,
        network,
        ports,
        tty: body.tty,
        open_stdin: body.open_stdin,
        stdin_once: body.open_stdin && body.stdin_once,
        working_dir: body.working_dir.clone(),
        user: body.user.clone(),
        hostname: body.hostname.clone(),
        privileged: body.host_config.privileged,
        auto_remove: body.host_config.auto_remove,
        networks,
        restart,
        constraints,
        volumes,
    })
}

/// `HostConfig.Binds` (`-v src:dst[:ro|rw]`) and `Config.Volumes` (`-v /dst`) → volumes.
/// Only the syntax is judged here; whether a host path is allowed is [`check_volumes`]'s.
pub fn volumes(body: &CreateBody) -> Result<Vec<VolumeSpec>, BadCreate> {
    let mut out: Vec<VolumeSpec> = Vec::new();
    let bad =
        |i: usize, b: &str, why: &str| BadCreate(format!("HostConfig.Binds[{i}] {b:?}: {why}"));
    let clean = |p: &str| {
        !p.contains(',')
            && !std::path::Path::new(p)
                .components()
                .any(|c| c == std::path::Component::ParentDir)
    };
    for (i, b) in body.host_config.binds.iter().flatten().enumerate() {
        let parts: Vec<&str> = b.split(':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            [src, dst] => (*src, *dst, ""),
            [src, dst, opts] => (*src, *dst, *opts),
            _ => return Err(bad(i, b, "expected source:destination[:ro|rw]")),
        };
        let mut read_only = false;
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => read_only = true,
                "rw" => read_only = false,
                other => {
                    return Err(bad(
                        i,
                        b,
                        &format!(
                            "the mount option {other:?} is not supported by capstan (ro and rw are)"
                        ),
                    ));
                }
            }
        }
        if !dst.starts_with('/') || !clean(dst) {
            return Err(bad(
                i,
                b,
                "the destination must be an absolute path without '..' or ','",
            ));
        }
        if !src.starts_with('/') {
            let valid = src.len() >= 2
                && src.starts_with(|c: char| c.is_ascii_alphanumeric())
                && src
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(bad(
                    i,
                    b,
                    "a volume name must match [a-zA-Z0-9][a-zA-Z0-9_.-]+ (a host path must be absolute)",
                ));
            }
            out.push(VolumeSpec {
                name: src.to_owned(),
                container_path: dst.to_owned(),
                read_only,
                ..VolumeSpec::default()
            });
            continue;
        }
        if !clean(src) {
            return Err(bad(i, b, "the source may not contain '..' or ','"));
        }
        out.push(VolumeSpec {
            host_path: src.to_owned(),
            container_path: dst.to_owned(),
            read_only,
            ..VolumeSpec::default()
        });
    }
    for (n, dst) in body.volumes.iter().flatten().map(|(k, _)| k).enumerate() {
        if !dst.starts_with('/') || !clean(dst) || dst.contains(':') {
            return Err(BadCreate(format!(
                "Volumes: {dst:?} must be an absolute path without '..', ',' or ':'"
            )));
        }
        if out.iter().any(|v| v.container_path == *dst) {
            continue;
        }
        out.push(VolumeSpec {
            host_path: format!("volumes/{n}"),
            container_path: dst.clone(),
            anonymous: true,
            ..VolumeSpec::default()
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for v in &out {
        if !seen.insert(v.container_path.as_str()) {
            return Err(BadCreate(format!(
                "Duplicate mount point: {}",
                v.container_path
            )));
        }
    }
    Ok(out)
}

/// Whether the cluster's container policy allows the volumes' host paths; the message
/// names the path and the setting that would allow it.
pub fn check_volumes(
    spec: &Spec,
    policy: &capstan_types::ContainerPolicy,
) -> Result<(), BadCreate> {
    for v in spec
        .volumes
        .iter()
        .filter(|v| !v.anonymous && v.name.is_empty())
    {
        policy.check_host_path(&v.host_path).map_err(|why| {
            BadCreate(format!(
                "invalid volume {}:{}: {why}",
                v.host_path, v.container_path
            ))
        })?;
    }
    Ok(())
}

/// The role of an offered resource (the last reservation's, else its `role`, else `*`).
fn role_of(r: &Value) -> &str {
    if let Some(role) = r["reservations"]
        .as_array()
        .and_then(|v| v.last())
        .and_then(|l| l["role"].as_str())
    {
        return role;
    }
    r["role"].as_str().filter(|r| !r.is_empty()).unwrap_or("*")
}

/// Unreserved resources named `name` in an offer.
fn unreserved<'a>(offer: &'a Value, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    offer["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |r| r["name"] == name && role_of(r) == "*")
}

/// The port ranges an offer has.
pub fn offered_ranges(offer: &Value) -> Vec<(u64, u64)> {
    unreserved(offer, "ports")
        .flat_map(|r| r["ranges"]["range"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| Some((x["begin"].as_u64()?, x["end"].as_u64()?)))
        .collect()
}

fn scalar(offer: &Value, name: &str) -> f64 {
    unreserved(offer, name)
        .filter_map(|r| r["scalar"]["value"].as_f64())
        .sum()
}

/// What a spec takes of an offer.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Mesos resources (JSON) for the TaskInfo.
    pub resources: Vec<Value>,
    pub ports: Vec<PublishedPort>,
}

/// Why an offer does not fit (for `start`'s error when nothing fits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoFit {
    #[error("needs {need} cpus, the offer has {have}")]
    Cpus { need: String, have: String },
    #[error("needs {need} MiB of memory, the offer has {have}")]
    Mem { need: String, have: String },
    #[error("host port {0} is not free in the agent's port ranges")]
    Port(u32),
    #[error("not enough free ports")]
    Ports,
    #[error("{0}")]
    Constraint(String),
}

/// The resources `spec` takes of `offer`, if it fits.
pub fn fit(spec: &Spec, offer: &Value) -> Result<Match, NoFit> {
    crate::constraints::hard_hold(&spec.constraints, offer).map_err(NoFit::Constraint)?;
    let (cpus, mem) = (scalar(offer, "cpus"), scalar(offer, "mem"));
    // A little slack for float sums.
    if cpus + 1e-9 < spec.cpus {
        return Err(NoFit::Cpus {
            need: spec.cpus.to_string(),
            have: cpus.to_string(),
        });
    }
    if mem + 1e-9 < spec.mem_mib {
        return Err(NoFit::Mem {
            need: spec.mem_mib.to_string(),
            have: mem.to_string(),
        });
    }
    let ranges = offered_ranges(offer);
    let in_ranges = |p: u64| ranges.iter().any(|(b, e)| *b <= p && p <= *e);
    let mut taken: Vec<u64> = Vec::new();
    let mut published = Vec::new();
    // Fixed host ports first, then any free port for the others.
    for p in spec.ports.iter().filter(|p| p.host_port.is_some()) {
        let h = u64::from(p.host_port.unwrap_or_default());
        if !in_ranges(h) || taken.contains(&h) {
            return Err(NoFit::Port(h as u32));
        }
        taken.push(h);
        published.push(PublishedPort {
            container_port: p.container_port,
            protocol: p.protocol.clone(),
            host_port: h as u32,
        });
    }
    for p in spec.ports.iter().filter(|p| p.host_port.is_none()) {
        let free = ranges
            .iter()
            .flat_map(|(b, e)| *b..=*e)
            .find(|h| !taken.contains(h))
            .ok_or(NoFit::Ports)?;
        taken.push(free);
        published.push(PublishedPort {
            container_port: p.container_port,
            protocol: p.protocol.clone(),
            host_port: free as u32,
        });
    }
    let template = |name: &str| -> Value {
        unreserved(offer, name)
            .next()
            .cloned()
            .unwrap_or_else(|| json!({"name": name}))
    };
    let mut resources = Vec::new();
    for (name, amount) in [("cpus", spec.cpus), ("mem", spec.mem_mib)] {
        let mut r = template(name);
        r["type"] = json!("SCALAR");
        r["scalar"] = json!({ "value": amount });
        resources.push(r);
    }
    if !taken.is_empty() {
        taken.sort_unstable();
        let mut r = template("ports");
        r["type"] = json!("RANGES");
        r["ranges"] = json!({"range": taken.iter().map(|p| json!({"begin": p, "end": p})).collect::<Vec<_>>()});
        resources.push(r);
    }
    Ok(Match {
        resources,
        ports: published,
    })
}

/// Takes what `m` uses out of `offer` (its unreserved scalars, in the master's milli-units,
/// and its ports), so that the next start placed on the same offer sees only what is left:
/// one ACCEPT then launches every start the offer fits.
pub fn take(offer: &mut Value, m: &Match) {
    use capstan_types::resources::{RangeSet, from_milli, to_milli};
    let Some(offered) = offer["resources"].as_array_mut() else {
        return;
    };
    for used in &m.resources {
        let name = used["name"].as_str().unwrap_or_default();
        if let Some(amount) = used["scalar"]["value"].as_f64() {
            let mut left = to_milli(amount);
            for r in offered
                .iter_mut()
                .filter(|r| r["name"] == name && role_of(r) == "*")
            {
                let have = to_milli(r["scalar"]["value"].as_f64().unwrap_or(0.0));
                let took = have.min(left);
                r["scalar"]["value"] = json!(from_milli(have - took));
                left -= took;
            }
        }
        if let Some(ranges) = used["ranges"]["range"].as_array() {
            let taken = RangeSet::new(
                ranges
                    .iter()
                    .filter_map(|x| Some((x["begin"].as_u64()?, x["end"].as_u64()?))),
            );
            for r in offered
                .iter_mut()
                .filter(|r| r["name"] == name && role_of(r) == "*")
            {
                let have = RangeSet::new(
                    r["ranges"]["range"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| Some((x["begin"].as_u64()?, x["end"].as_u64()?))),
                );
                let left: Vec<Value> = have
                    .subtract(&taken)
                    .ranges()
                    .iter()
                    .map(|(b, e)| json!({"begin": b, "end": e}))
                    .collect();
                r["ranges"] = json!({ "range": left });
            }
        }
    }
}

/// Mesos task label naming the container a task runs (so a reconciled task finds its record).
pub const TASK_LABEL_CONTAINER: &str = "capstan.swarm.container";

/// The `TaskInfo` (Mesos JSON) that runs `spec` as container `id` named `name`.
pub fn task_info(
    id: &str,
    name: &str,
    spec: &Spec,
    task_id: &str,
    offer: &Value,
    matched: &Match,
) -> Value {
    let mut params: Vec<Value> = Vec::new();
    let mut param = |k: &str, v: String| params.push(json!({"key": k, "value": v}));
    for (k, v) in &spec.labels {
        param("label", format!("{k}={v}"));
    }
    param("label", format!("com.docker.swarm.id={id}"));
    param("label", format!("com.docker.swarm.name={name}"));
    // The agent takes one entrypoint word; the rest of a longer entrypoint leads the command.
    let mut argv: Vec<String> = Vec::new();
    if let Some((first, rest)) = spec.entrypoint.split_first() {
        param("entrypoint", first.clone());
        argv.extend(rest.iter().cloned());
    }
    argv.extend(spec.cmd.iter().cloned());
    if !spec.working_dir.is_empty() {
        param("workdir", spec.working_dir.clone());
    }
    if !spec.user.is_empty() {
        param("user", spec.user.clone());
    }
    if !spec.hostname.is_empty() {
        param("hostname", spec.hostname.clone());
    }
    if spec.open_stdin {
        param("interactive", "true".into());
    }
    if spec.stdin_once {
        param("stdin-once", "true".into());
    }
    let mut command = json!({
        "shell": false,
        "environment": {"variables": spec.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()},
    });
    if !argv.is_empty() {
        command["arguments"] = json!(argv);
    }
    let mut docker = json!({
        "image": spec.image,
        "network": match spec.network { Network::Bridge => "BRIDGE", Network::Host => "HOST", Network::None => "NONE" },
        "privileged": spec.privileged,
        "parameters": params,
    });
    if !matched.ports.is_empty() {
        docker["port_mappings"] = json!(matched.ports.iter().map(|p| json!({
            "host_port": p.host_port, "container_port": p.container_port, "protocol": p.protocol,
        })).collect::<Vec<_>>());
    }
    let labels: BTreeMap<&str, &str> = [(TASK_LABEL_CONTAINER, id)].into_iter().collect();
    json!({
        "name": name,
        "task_id": {"value": task_id},
        "agent_id": offer["agent_id"].clone(),
        "resources": matched.resources,
        "command": command,
        "container": {"type": "DOCKER", "docker": docker, "volumes": spec.volumes.iter().map(mesos_volume).collect::<Vec<_>>()},
        "labels": {"labels": labels.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()},
    })
}

/// A volume as the task's Mesos volume: a host path, or a `DOCKER_VOLUME` source.
fn mesos_volume(v: &VolumeSpec) -> Value {
    let mode = if v.read_only { "RO" } else { "RW" };
    if v.name.is_empty() {
        json!({"container_path": v.container_path, "host_path": v.host_path, "mode": mode})
    } else {
        json!({"container_path": v.container_path, "mode": mode, "source": {
            "type": "DOCKER_VOLUME",
            "docker_volume": {"driver": "local", "name": engine_volume(&v.name)},
        }})
    }
}

/// The agent engine's name of swarm's named volume `name` (swarm's volumes stay apart from
/// whatever else uses that engine).
pub fn engine_volume(name: &str) -> String {
    format!("swarm.{name}")
}

/// `<id12>.<run>`: a new task per start, so a restarted container never reuses a task id.
pub fn task_id(id: &str, run: u64) -> String {
    format!("swarm.{}.{run}", &id[..12.min(id.len())])
}

/// The container id named by a task id from [`task_id`] (its 12-digit prefix).
pub fn short_id_of_task(task_id: &str) -> Option<&str> {
    task_id.strip_prefix("swarm.")?.split('.').next()
}

/// What a task's terminal status means for its container: the exit code Docker would show.
/// `TASK_FINISHED` is 0; a failure's message carries the status ("… exited with status 3");
/// a signal is 128 + its number; a kill without a status is 137 (SIGKILL).
pub fn exit_code(state: &str, message: &str) -> i64 {
    if state == "TASK_FINISHED" {
        return 0;
    }
    let number_after = |word: &str| -> Option<i64> {
        let at = message.find(word)? + word.len();
        let digits: String = message[at..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        digits.parse().ok()
    };
    if let Some(code) = number_after("exited with status") {
        return code;
    }
    if let Some(sig) = number_after("terminated by signal") {
        return 128 + sig;
    }
    match state {
        "TASK_KILLED" => 137,
        _ => 128,
    }
}

/// Whether a terminal status means the container never ran (a launch failure: bad image,
/// refused spec), which `start` reports as its error.
pub fn launch_failed(reason: &str, message: &str) -> bool {
    matches!(
        reason,
        "REASON_CONTAINER_LAUNCH_FAILED" | "REASON_TASK_INVALID" | "REASON_INVALID_OFFERS"
    ) || message.contains("Failed to launch")
}

#[cfg(test)]
mod tests;
