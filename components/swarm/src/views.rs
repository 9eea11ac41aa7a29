//! What the clients read, pure: `containers/json` items and filters, `containers/{id}/json`
//! with every field the reference marks as required (so the CLI, docker-py and compose never
//! crash on a missing one), name and id-prefix resolution, and `Status` texts.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::model::{Container, Status, ZERO_TIME, image_id};

/// `filters=` of `containers/json`: Docker's `{"key": ["v", …]}` or the older
/// `{"key": {"v": true}}`. Values of one key are ORed, keys are ANDed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// `filters=` of any endpoint, unchecked: key → values.
    pub fn parse_any(text: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
        let mut out = BTreeMap::new();
        if text.trim().is_empty() {
            return Ok(out);
        }
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("invalid filter {text:?}: {e}"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| format!("invalid filter {text:?}: not an object"))?;
        for (k, vals) in obj {
            let list: Vec<String> = match vals {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
                Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool() != Some(false))
                    .map(|(x, _)| x.clone())
                    .collect(),
                Value::String(s) => vec![s.clone()],
                _ => return Err(format!("invalid filter value for {k:?}")),
            };
            out.insert(k.clone(), list);
        }
        Ok(out)
    }

    pub fn parse(text: &str) -> Result<Filters, String> {
        let parsed = Filters::parse_any(text)?;
        let mut out = BTreeMap::new();
        for (k, list) in parsed {
            match k.as_str() {
                "label" | "name" | "status" | "id" | "ancestor" | "exited" | "network" => {}
                other => return Err(format!("invalid filter '{other}'")),
            }
            if k == "status" {
                for s in &list {
                    if ![
                        "created",
                        "restarting",
                        "running",
                        "removing",
                        "paused",
                        "exited",
                        "dead",
                    ]
                    .contains(&s.as_str())
                    {
                        return Err(format!("invalid filter 'status={s}'"));
                    }
                }
            }
            out.insert(k, list);
        }
        Ok(Filters(out))
    }

    /// Whether a filter names a status (then stopped containers are listed without `all`).
    pub fn has_status(&self) -> bool {
        self.0.contains_key("status") || self.0.contains_key("exited")
    }

    pub fn matches(&self, c: &Container) -> bool {
        self.0.iter().all(|(k, vals)| {
            vals.is_empty()
                || match k.as_str() {
                    // Every label filter must hold (Docker ANDs them).
                    "label" => vals.iter().all(|l| match l.split_once('=') {
                        Some((k, v)) => c.spec.labels.get(k).is_some_and(|x| x == v),
                        None => c.spec.labels.contains_key(l),
                    }),
                    "name" => vals.iter().any(|n| {
                        let n = n.trim_start_matches('/');
                        match (n.strip_prefix('^'), n.strip_suffix('$')) {
                            _ if n.starts_with('^') && n.ends_with('$') => {
                                c.name == n[1..n.len() - 1]
                            }
                            (Some(p), _) => c.name.starts_with(p),
                            (_, Some(s)) => c.name.ends_with(s),
                            _ => c.name.contains(n),
                        }
                    }),
                    "status" => vals.iter().any(|s| s == c.state_name()),
                    "id" => vals.iter().any(|p| c.id.starts_with(p.as_str())),
                    "ancestor" => vals.iter().any(|i| {
                        crate::model::normalise_image(i)
                            == crate::model::normalise_image(&c.spec.image)
                    }),
                    "network" => vals.iter().any(|n| {
                        c.spec.networks.contains_key(n)
                            || c.spec
                                .networks
                                .values()
                                .any(|a| a.network_id.starts_with(n.as_str()))
                            || (c.spec.networks.is_empty() && c.spec.network.docker_name() == n)
                    }),
                    "exited" => vals
                        .iter()
                        .any(|x| c.status == Status::Exited && x.parse() == Ok(c.exit_code)),
                    _ => true,
                }
        })
    }
}

/// Why a reference names no single container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolve {
    NotFound,
    Ambiguous,
}

/// The container a client's reference names: an exact id, a name (with or without `/`), or a
/// unique id prefix, in that order (as Docker resolves them).
pub fn resolve<'a>(all: &'a [Container], reference: &str) -> Result<&'a Container, Resolve> {
    let r = reference.trim_start_matches('/');
    if r.is_empty() {
        return Err(Resolve::NotFound);
    }
    if let Some(c) = all.iter().find(|c| c.id == r) {
        return Ok(c);
    }
    if let Some(c) = all.iter().find(|c| c.name == r) {
        return Ok(c);
    }
    let mut prefixed = all.iter().filter(|c| c.id.starts_with(r));
    match (prefixed.next(), prefixed.next()) {
        (Some(c), None) => Ok(c),
        (Some(_), Some(_)) => Err(Resolve::Ambiguous),
        _ => Err(Resolve::NotFound),
    }
}

/// Seconds → "5 seconds", "About a minute", "3 hours" (Docker's `HumanDuration`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..60 => format!("{s} seconds"),
        60..120 => "About a minute".into(),
        _ if s < 3600 => format!("{} minutes", s / 60),
        _ if s < 7200 => "About an hour".into(),
        _ if s < 48 * 3600 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

fn unix_of(rfc3339: &str) -> Option<i64> {
    crate::time::parse_rfc3339(rfc3339)
}

/// The `Status` column: "Up 5 seconds", "Exited (3) 2 minutes ago", "Created".
pub fn status_text(c: &Container, now: i64) -> String {
    match c.status {
        Status::Running => {
            let since = unix_of(&c.started_at).unwrap_or(now);
            let paused = if c.paused { " (Paused)" } else { "" };
            format!("Up {}{paused}", human_duration(now - since))
        }
        Status::Exited | Status::Dead => {
            let at = unix_of(&c.finished_at).unwrap_or(now);
            format!("Exited ({}) {} ago", c.exit_code, human_duration(now - at))
        }
        Status::Restarting => "Restarting".into(),
        Status::Created if c.pending_start => "Starting".into(),
        Status::Created => "Created".into(),
    }
}

fn command_text(c: &Container) -> String {
    let mut argv: Vec<&str> = c.spec.entrypoint.iter().map(String::as_str).collect();
    argv.extend(c.spec.cmd.iter().map(String::as_str));
    argv.join(" ")
}

/// The host IP published ports are reached on.
fn host_ip(c: &Container) -> String {
    c.task
        .as_ref()
        .map(|t| t.agent_host.clone())
        .unwrap_or_else(|| "0.0.0.0".into())
}

/// `HostConfig.NetworkMode`: a user network's name, else bridge, host or none.
pub fn network_mode(c: &Container) -> String {
    match c.spec.networks.keys().next() {
        Some(first)
            if !c
                .spec
                .networks
                .contains_key(&c.config.host_config.network_mode) =>
        {
            first.clone()
        }
        Some(_) => c.config.host_config.network_mode.clone(),
        None => c.spec.network.docker_name().to_owned(),
    }
}

fn endpoint(c: &Container, network_id: &str, aliases: &[String], ip: &str) -> Value {
    let mut all: Vec<&str> = aliases.iter().map(String::as_str).collect();
    if !all.contains(&c.short_id()) {
        all.push(c.short_id());
    }
    json!({
        "IPAMConfig": null, "Links": null,
        "Aliases": all,
        "NetworkID": network_id, "EndpointID": "", "Gateway": "", "IPAddress": ip,
        "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "MacAddress": "", "DriverOpts": null, "DNSNames": [c.name.clone(), c.short_id().to_owned()],
    })
}

fn network_settings(c: &Container, with_ports: bool) -> Value {
    let ip = c
        .task
        .as_ref()
        .filter(|_| c.running())
        .and_then(|t| t.ip_address.clone())
        .unwrap_or_default();
    let mut networks = serde_json::Map::new();
    if c.spec.networks.is_empty() {
        let net = c.spec.network.docker_name();
        networks.insert(
            net.to_owned(),
            endpoint(c, &crate::networks::predefined_id(net), &[], &ip),
        );
    }
    for (name, a) in &c.spec.networks {
        networks.insert(name.clone(), endpoint(c, &a.network_id, &a.aliases, &ip));
    }
    let mut v = json!({ "Networks": networks });
    if with_ports {
        v["Ports"] = ports_map(c);
        v["Bridge"] = json!("");
        v["SandboxID"] = json!("");
        v["SandboxKey"] = json!("");
        v["HairpinMode"] = json!(false);
        v["LinkLocalIPv6Address"] = json!("");
        v["LinkLocalIPv6PrefixLen"] = json!(0);
    }
    v
}

/// `NetworkSettings.Ports`: each exposed or published port, with its host bindings while
/// running.
fn ports_map(c: &Container) -> Value {
    let mut m = serde_json::Map::new();
    for p in &c.spec.ports {
        m.insert(format!("{}/{}", p.container_port, p.protocol), Value::Null);
    }
    for k in c.config.exposed_ports.iter().flat_map(|e| e.keys()) {
        m.entry(k.clone()).or_insert(Value::Null);
    }
    if c.running()
        && let Some(t) = &c.task
    {
        for p in &t.ports {
            m.insert(
                format!("{}/{}", p.container_port, p.protocol),
                json!([{"HostIp": t.agent_host, "HostPort": p.host_port.to_string()}]),
            );
        }
    }
    Value::Object(m)
}

/// One item of `GET /containers/json`.
pub fn list_item(c: &Container, now: i64) -> Value {
    let ports: Vec<Value> = match (&c.task, c.running()) {
        (Some(t), true) => t
            .ports
            .iter()
            .map(|p| json!({"IP": host_ip(c), "PrivatePort": p.container_port, "PublicPort": p.host_port, "Type": p.protocol}))
            .collect(),
        _ => Vec::new(),
    };
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": c.spec.image,
        "ImageID": image_id(&c.spec.image),
        "Command": command_text(c),
        "Created": c.created_unix,
        "Ports": ports,
        "Labels": c.spec.labels,
        "State": c.state_name(),
        "Status": status_text(c, now),
        "HostConfig": {"NetworkMode": network_mode(c)},
        "NetworkSettings": network_settings(c, false),
        "Mounts": mounts(c),
    })
}

/// `Mounts` of `ps` and `inspect`: binds as Docker shows them; an anonymous volume as a
/// `volume` whose source is its sandbox directory.
pub fn mounts(c: &Container) -> Vec<Value> {
    c.spec
        .volumes
        .iter()
        .map(|v| {
            let mode = if v.read_only { "ro" } else { "" };
            if !v.name.is_empty() {
                json!({"Type": "volume", "Name": v.name, "Source": "", "Destination": v.container_path,
                       "Driver": "local", "Mode": mode, "RW": !v.read_only, "Propagation": ""})
            } else if v.anonymous {
                json!({"Type": "volume", "Name": v.host_path, "Source": v.host_path, "Destination": v.container_path,
                       "Driver": "local", "Mode": mode, "RW": !v.read_only, "Propagation": ""})
            } else {
                json!({"Type": "bind", "Source": v.host_path, "Destination": v.container_path,
                       "Mode": mode, "RW": !v.read_only, "Propagation": "rprivate"})
            }
        })
        .collect()
}

/// `GET /containers/{id}/json`.
pub fn inspect(c: &Container) -> Value {
    let env: Vec<String> = c.spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let port_bindings: serde_json::Map<String, Value> = c
        .spec
        .ports
        .iter()
        .map(|p| {
            (
                format!("{}/{}", p.container_port, p.protocol),
                json!([{"HostIp": "", "HostPort": p.host_port.map(|h| h.to_string()).unwrap_or_default()}]),
            )
        })
        .collect();
    let exposed: serde_json::Map<String, Value> = c
        .spec
        .ports
        .iter()
        .map(|p| (format!("{}/{}", p.container_port, p.protocol), json!({})))
        .chain(
            c.config
                .exposed_ports
                .iter()
                .flat_map(|e| e.keys())
                .map(|k| (k.clone(), json!({}))),
        )
        .collect();
    let non_empty = |v: &[String]| if v.is_empty() { Value::Null } else { json!(v) };
    let time_or_zero = |t: &str| {
        if t.is_empty() {
            ZERO_TIME.to_owned()
        } else {
            t.to_owned()
        }
    };
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": c.spec.entrypoint.first().or(c.spec.cmd.first()).cloned().unwrap_or_default(),
        "Args": c.spec.entrypoint.iter().chain(c.spec.cmd.iter()).skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": c.state_name(),
            "Running": c.status == Status::Running,
            "Paused": c.paused && c.running(),
            "Restarting": c.status == Status::Restarting,
            "OOMKilled": c.error.contains("OOM"),
            "Dead": c.status == Status::Dead,
            "Pid": 0,
            "ExitCode": c.exit_code,
            "Error": c.error,
            "StartedAt": time_or_zero(&c.started_at),
            "FinishedAt": time_or_zero(&c.finished_at),
        },
        "Image": image_id(&c.spec.image),
        "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "", "LogPath": "",
        "Name": format!("/{}", c.name),
        "RestartCount": c.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": {
            "Binds": c.config.host_config.binds,
            "LogConfig": {"Type": "json-file", "Config": {}},
            "NetworkMode": network_mode(c),
            "PortBindings": port_bindings,
            "RestartPolicy": {"Name": c.spec.restart.docker_name(), "MaximumRetryCount": match c.spec.restart {
                crate::model::Restart::OnFailure { max_retries } => max_retries,
                _ => 0,
            }},
            "AutoRemove": c.spec.auto_remove,
            "Privileged": c.spec.privileged,
            "PublishAllPorts": false,
            "Memory": (c.spec.mem_mib * 1024.0 * 1024.0) as i64,
            "NanoCpus": (c.spec.cpus * 1e9) as i64,
            "CpuShares": 0,
        },
        "GraphDriver": {"Name": "overlay2", "Data": null},
        "Mounts": mounts(c),
        "Config": {
            "Hostname": if c.spec.hostname.is_empty() { c.short_id().to_owned() } else { c.spec.hostname.clone() },
            "Domainname": "",
            "User": c.spec.user,
            "AttachStdin": c.config.attach_stdin,
            "AttachStdout": c.config.attach_stdout,
            "AttachStderr": c.config.attach_stderr,
            "ExposedPorts": if exposed.is_empty() { Value::Null } else { Value::Object(exposed) },
            "Tty": c.spec.tty,
            "OpenStdin": c.config.open_stdin,
            "StdinOnce": c.config.stdin_once,
            "Env": env,
            "Cmd": non_empty(&c.spec.cmd),
            "Image": c.spec.image,
            "Volumes": null,
            "WorkingDir": c.spec.working_dir,
            "Entrypoint": non_empty(&c.spec.entrypoint),
            "OnBuild": null,
            "Labels": c.spec.labels,
        },
        "NetworkSettings": network_settings(c, true),
        "Capstan": {
            "TaskId": c.task.as_ref().map(|t| t.task_id.clone()),
            "AgentId": c.task.as_ref().map(|t| t.agent_id.clone()),
            "TaskState": c.task.as_ref().map(|t| t.state.clone()),
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{PublishedPort, TaskRef};
    use crate::translate::{Defaults, spec};

    pub(crate) fn container(name: &str, labels: &[(&str, &str)], status: Status) -> Container {
        let body: crate::model::CreateBody = serde_json::from_value(json!({
            "Image": "capstan/http",
            "Labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": ""}]}},
        }))
        .unwrap();
        let spec = spec(
            &body,
            Defaults {
                cpus: 0.1,
                mem_mib: 64.0,
            },
        )
        .unwrap();
        Container {
            version: 1,
            id: format!("{name:0<64}").replace(|c: char| !c.is_ascii_hexdigit(), "0"),
            name: name.into(),
            created: "2026-01-01T00:00:00Z".into(),
            created_unix: 1_767_225_600,
            config: body,
            spec,
            status,
            pending_start: false,
            task: Some(TaskRef {
                task_id: "swarm.x.1".into(),
                agent_id: "A".into(),
                agent_host: "127.0.2.1".into(),
                ports: vec![PublishedPort {
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_port: 31005,
                }],
                state: "TASK_RUNNING".into(),
                sandbox: None,
                agent_http: None,
                ip_address: Some("172.17.0.2".into()),
            }),
            runs: 1,
            exits: 0,
            exit_code: 0,
            error: String::new(),
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: String::new(),
            restart_count: 0,
            running_run: 1,
            failed_run: 0,
            stop_requested: false,
            paused: false,
        }
    }

    #[test]
    fn filters_match_labels_names_and_statuses_as_docker_does() {
        let web = container("web", &[("app", "a"), ("tier", "front")], Status::Running);
        let db = container("db1", &[("app", "a")], Status::Exited);
        let cases = [
            (r#"{"label":["app=a"]}"#, (true, true)),
            (r#"{"label":["app=a","tier=front"]}"#, (true, false)),
            (r#"{"label":{"tier":true}}"#, (true, false)),
            (r#"{"name":["we"]}"#, (true, false)),
            (r#"{"name":["^db1$"]}"#, (false, true)),
            (r#"{"status":["exited"]}"#, (false, true)),
            (r#"{"status":["running","exited"]}"#, (true, true)),
            (r#"{"ancestor":["capstan/http:latest"]}"#, (true, true)),
            ("", (true, true)),
        ];
        for (text, (w, d)) in cases {
            let f = Filters::parse(text).unwrap();
            assert_eq!((f.matches(&web), f.matches(&db)), (w, d), "{text}");
        }
        for bad in [
            r#"{"bogus":["x"]}"#,
            r#"{"status":["sleeping"]}"#,
            "[1]",
            "{",
        ] {
            assert!(Filters::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references_resolve_by_id_name_and_unique_prefix() {
        let a = container("aa", &[], Status::Running);
        let mut b = container("ab", &[], Status::Running);
        b.id = format!("aab{}", &b.id[3..]);
        let all = vec![a.clone(), b.clone()];
        assert_eq!(resolve(&all, &a.id).unwrap().name, "aa");
        assert_eq!(resolve(&all, "/ab").unwrap().name, "ab");
        assert_eq!(resolve(&all, "aab").unwrap().name, "ab");
        assert_eq!(resolve(&all, "aa0").unwrap().name, "aa");
        assert_eq!(resolve(&all, "a").unwrap_err(), Resolve::Ambiguous);
        assert_eq!(resolve(&all, "zz").unwrap_err(), Resolve::NotFound);
    }

    #[test]
    fn list_items_and_inspect_carry_the_fields_clients_need() {
        let c = container("web", &[("k", "v")], Status::Running);
        let item = list_item(&c, 1_767_225_605);
        assert_eq!(item["Names"][0], "/web");
        assert_eq!(item["Status"], "Up 5 seconds");
        assert_eq!(item["Ports"][0]["PublicPort"], 31005);
        assert_eq!(item["Ports"][0]["IP"], "127.0.2.1");
        assert!(item["ImageID"].as_str().unwrap().starts_with("sha256:"));
        let i = inspect(&c);
        for ptr in [
            "/Id",
            "/Name",
            "/Created",
            "/State/Status",
            "/State/Running",
            "/State/ExitCode",
            "/State/StartedAt",
            "/State/FinishedAt",
            "/Config/Tty",
            "/Config/Labels",
            "/Config/Env",
            "/Config/Image",
            "/HostConfig/LogConfig/Type",
            "/HostConfig/NetworkMode",
            "/HostConfig/PortBindings",
            "/NetworkSettings/Ports",
            "/NetworkSettings/Networks/bridge/Aliases",
            "/Mounts",
        ] {
            assert!(i.pointer(ptr).is_some(), "{ptr} missing");
        }
        assert_eq!(i["Name"], "/web");
        assert!(i["Image"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(
            i["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
            "31005"
        );
        assert_eq!(
            i["NetworkSettings"]["Networks"]["bridge"]["Aliases"][0],
            c.short_id()
        );
        assert_eq!(i["State"]["FinishedAt"], ZERO_TIME);
        let mut gone = c.clone();
        gone.status = Status::Exited;
        gone.exit_code = 3;
        gone.finished_at = "2026-01-01T00:02:00Z".into();
        assert_eq!(
            status_text(&gone, 1_767_225_600 + 240),
            "Exited (3) 2 minutes ago"
        );
        assert_eq!(list_item(&gone, 0)["Ports"], json!([]));
        // `docker pause`: still up, as Docker shows it; a filter on `paused` finds it.
        let mut frozen = c.clone();
        frozen.paused = true;
        assert_eq!(
            list_item(&frozen, 1_767_225_605)["Status"],
            "Up 5 seconds (Paused)"
        );
        assert_eq!(list_item(&frozen, 0)["State"], "paused");
        let i = inspect(&frozen);
        assert_eq!(
            (
                i["State"]["Status"].as_str(),
                i["State"]["Paused"].as_bool()
            ),
            (Some("paused"), Some(true))
        );
        assert_eq!(i["State"]["Running"], true);
        let f = Filters::parse(r#"{"status": ["paused"]}"#).unwrap();
        assert!(f.matches(&frozen) && !f.matches(&c));
    }
}
