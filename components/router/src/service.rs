//! `/service/<path>` resolution (§7.2) against a snapshot of apps and frameworks.
//!
//! Pure (no I/O): the caller keeps the snapshot fresh and does the proxying.

use serde_json::Value;

use crate::routes::{Proxy, Scheme, Upstream};

/// What `/service/` can resolve against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// From apps `GET /v2/apps?embed=apps.tasks&label=DCOS_SERVICE_NAME`.
    pub apps: Vec<ServiceApp>,
    /// From master state-summary.
    pub frameworks: Vec<Framework>,
    /// From master state-summary (id, pid "slave(1)@ip:port").
    pub agents: Vec<AgentEntry>,
}

/// An app labelled `DCOS_SERVICE_NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceApp {
    pub service_name: String,
    pub scheme: Scheme,
    pub port_index: usize,
    /// Running tasks only.
    pub tasks: Vec<TaskAddr>,
}

/// Where one running task listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskAddr {
    pub host: String,
    pub ports: Vec<u16>,
    pub ip_addresses: Vec<String>,
    pub container_ports: Vec<u16>,
    pub container_networking: bool,
}

/// A framework from the state summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framework {
    pub id: String,
    pub name: String,
    pub webui_url: Option<String>,
}

/// An agent from the state summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntry {
    pub id: String,
    /// ip:port from pid.
    pub authority: String,
}

impl Snapshot {
    /// Builds a snapshot from apps' `GET /v2/apps?embed=apps.tasks&label=DCOS_SERVICE_NAME`
    /// (`apps`) and the master's `state-summary` (`summary`). Tolerant: entries missing what
    /// they need are skipped, unknown fields ignored.
    pub fn from_json(apps: &Value, summary: &Value) -> Snapshot {
        let app_list = apps
            .get("apps")
            .and_then(Value::as_array)
            .or_else(|| apps.as_array());
        Snapshot {
            apps: app_list
                .into_iter()
                .flatten()
                .filter_map(service_app)
                .collect(),
            frameworks: array(summary, "frameworks")
                .filter_map(|f| {
                    let id = string(f, "id").unwrap_or_default().to_string();
                    let name = string(f, "name").unwrap_or_default().to_string();
                    if id.is_empty() && name.is_empty() {
                        return None;
                    }
                    let webui_url = string(f, "webui_url").map(str::to_string);
                    Some(Framework {
                        id,
                        name,
                        webui_url,
                    })
                })
                .collect(),
            agents: array(summary, "slaves")
                .filter_map(|a| {
                    let id = string(a, "id")?;
                    let (_, authority) = string(a, "pid")?.rsplit_once('@')?;
                    (!id.is_empty() && plausible_authority(authority)).then(|| AgentEntry {
                        id: id.to_string(),
                        authority: authority.to_string(),
                    })
                })
                .collect(),
        }
    }

    /// The authority (ip:port) of agent `id`.
    pub fn agent(&self, id: &str) -> Option<&str> {
        self.agents
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.authority.as_str())
    }
}

fn array<'v>(v: &'v Value, key: &str) -> impl Iterator<Item = &'v Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn string<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn port(v: &Value) -> Option<u16> {
    v.as_u64().and_then(|p| u16::try_from(p).ok())
}

/// One app with all three `DCOS_SERVICE_*` labels valid, with its running tasks.
fn service_app(app: &Value) -> Option<ServiceApp> {
    let labels = app.get("labels")?;
    let service_name = string(labels, "DCOS_SERVICE_NAME")?.trim();
    if service_name.is_empty() {
        return None;
    }
    let scheme = match string(labels, "DCOS_SERVICE_SCHEME")?
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return None,
    };
    let index = labels.get("DCOS_SERVICE_PORT_INDEX")?;
    let port_index = match index {
        Value::String(s) => s.trim().parse().ok()?,
        v => usize::try_from(v.as_u64()?).ok()?,
    };
    // Container networking: the first network is `container` mode, or the legacy
    // IP-per-task `ipAddress` is set. Bridge networking goes through host ports.
    let container_networking = array(app, "networks")
        .next()
        .and_then(|n| string(n, "mode"))
        == Some("container")
        || app.get("ipAddress").is_some_and(Value::is_object);
    let container = app.get("container");
    let mappings = container
        .and_then(|c| c.get("portMappings"))
        .filter(|m| m.is_array())
        .or_else(|| container.and_then(|c| c.get("docker")?.get("portMappings")));
    let mut container_ports: Vec<u16> = mappings
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| m.get("containerPort").and_then(port).unwrap_or(0))
        .collect();
    if container_ports.is_empty() {
        container_ports = app
            .get("ipAddress")
            .and_then(|ip| ip.get("discovery"))
            .map(|d| {
                array(d, "ports")
                    .map(|p| p.get("number").and_then(port).unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
    }
    let tasks = array(app, "tasks")
        .filter(|t| {
            let state = string(t, "state").or_else(|| string(t, "taskState"));
            state.is_none_or(|s| s == "TASK_RUNNING")
        })
        .map(|t| TaskAddr {
            host: string(t, "host").unwrap_or_default().to_string(),
            ports: array(t, "ports").filter_map(port).collect(),
            ip_addresses: array(t, "ipAddresses")
                .filter_map(|ip| string(ip, "ipAddress"))
                .map(str::to_string)
                .collect(),
            container_ports: container_ports.clone(),
            container_networking,
        })
        .collect();
    Some(ServiceApp {
        service_name: service_name.to_string(),
        scheme,
        port_index,
        tasks,
    })
}

/// A host or `host:port` (IPv6 in brackets) without userinfo, path or whitespace.
fn plausible_authority(a: &str) -> bool {
    !a.is_empty()
        && a.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

/// `host` joined with `port` as an authority.
fn authority(host: &str, port: u16) -> Option<String> {
    if host.is_empty() || port == 0 || !plausible_authority(host) {
        return None;
    }
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

impl ServiceApp {
    /// Where the first running task with a usable address listens.
    fn target(&self) -> Option<String> {
        self.tasks.iter().find_map(|t| {
            if t.container_networking {
                authority(
                    t.ip_addresses.first()?,
                    *t.container_ports.get(self.port_index)?,
                )
            } else {
                authority(&t.host, *t.ports.get(self.port_index)?)
            }
        })
    }
}

/// The outcome of resolving `/service/<rest>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Upstream `Direct`, path stripped, `location_prefix` `Some("/service/<matched>")`.
    Proxy(Proxy),
    /// The framework's `webui_url` is `""`: the caller looks up `_<service>._tcp.marathon.mesos`
    /// and proxies (http) to the first record, with `path` (already stripped, query appended)
    /// and `prefix` (`/service/<matched>`) as the `location_prefix`.
    Srv {
        service: String,
        prefix: String,
        path: String,
    },
    NotFound,
}

/// Most leading segments tried as a service id.
pub const MAX_SERVICE_SEGMENTS: usize = 10;

/// `rest` is what followed "/service/" in the path normalised by [`crate::routes::route`]
/// (`Route::Service`); tries 1..=10 leading segments, §7.2 order: for each candidate, apps by
/// `DCOS_SERVICE_NAME` (with a running task and a valid port), then frameworks by id, then by
/// name. Candidates are matched in Mesos-DNS order (`a/b/c` → `c.b.a`) and literally. The
/// first match wins; `marathon` and `metronome` are routed by routes.rs and never reach here.
/// Only addresses from `snapshot` are ever returned.
pub fn resolve(rest: &str, query: Option<&str>, snapshot: &Snapshot) -> Resolved {
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| *s == "." || *s == "..") {
        return Resolved::NotFound;
    }
    let leading = segs.iter().take_while(|s| !s.is_empty()).count();
    for n in 1..=leading.min(MAX_SERVICE_SEGMENTS) {
        let literal = segs[..n].join("/");
        let dns = segs[..n]
            .iter()
            .rev()
            .copied()
            .collect::<Vec<_>>()
            .join(".");
        let names: Vec<&str> = if dns == literal {
            vec![literal.as_str()]
        } else {
            vec![dns.as_str(), literal.as_str()]
        };
        let prefix = format!("/service/{literal}");
        let remaining = if segs.len() > n {
            format!("/{}", segs[n..].join("/"))
        } else {
            "/".to_string()
        };
        let with_query = |path: String| match query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };

        // Step 1: apps labelled DCOS_SERVICE_NAME with a running task.
        let app = names.iter().find_map(|name| {
            snapshot
                .apps
                .iter()
                .filter(|a| a.service_name == *name)
                .find_map(|a| Some((a.scheme, a.target()?)))
        });
        if let Some((scheme, authority)) = app {
            return Resolved::Proxy(direct(scheme, authority, with_query(remaining), prefix));
        }

        // Step 2: frameworks by id, then by name; a null webui_url is no match.
        let by = |key: fn(&Framework) -> &str| {
            names.iter().find_map(|name| {
                snapshot
                    .frameworks
                    .iter()
                    .filter(|f| !key(f).is_empty() && key(f) == *name)
                    .find_map(|f| Some((f, f.webui_url.as_deref()?)))
            })
        };
        let framework = by(|f| f.id.as_str()).or_else(|| by(|f| f.name.as_str()));
        if let Some((f, url)) = framework {
            if url.trim().is_empty() {
                return Resolved::Srv {
                    service: f.name.clone(),
                    prefix,
                    path: with_query(remaining),
                };
            }
            if let Some((scheme, authority, base)) = parse_webui_url(url) {
                let path = if base.is_empty() || base == "/" {
                    remaining
                } else {
                    format!("{}{remaining}", base.trim_end_matches('/'))
                };
                return Resolved::Proxy(direct(scheme, authority, with_query(path), prefix));
            }
            tracing::debug!(framework = %f.id, url, "Ignoring unusable webui_url");
        }
    }
    Resolved::NotFound
}

fn direct(scheme: Scheme, authority: String, path: String, prefix: String) -> Proxy {
    Proxy {
        upstream: Upstream::Direct { scheme, authority },
        path,
        auth: true,
        streaming: true,
        websocket: true,
        strip_accept_encoding: true,
        clear_authorization: false,
        location_prefix: Some(prefix),
    }
}

/// `http[s]://host[:port][/path]` → (scheme, `host:port` with the default port filled in,
/// path without query or fragment). Userinfo or any other scheme is refused.
fn parse_webui_url(url: &str) -> Option<(Scheme, String, String)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (Scheme::Http, 80),
        "https" => (Scheme::Https, 443),
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    if !plausible_authority(authority) {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else if authority.matches(':').count() > 1 {
        return None; // IPv6 needs brackets in a URL
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok()?,
        None => default_port,
    };
    let authority = self::authority(host, port)?;
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    Some((scheme, authority, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(name: &str, scheme: &str, index: &str, tasks: Value) -> Value {
        json!({
            "id": format!("/{name}"),
            "labels": {
                "DCOS_SERVICE_NAME": name,
                "DCOS_SERVICE_SCHEME": scheme,
                "DCOS_SERVICE_PORT_INDEX": index,
            },
            "tasks": tasks,
        })
    }

    fn task(host: &str, ports: &[u16]) -> Value {
        json!({
            "id": "t1", "host": host, "ports": ports, "state": "TASK_RUNNING",
            "ipAddresses": [{"ipAddress": "172.17.0.2", "protocol": "IPv4"}],
        })
    }

    fn summary(frameworks: Value) -> Value {
        json!({
            "frameworks": frameworks,
            "slaves": [
                {"id": "a1-S0", "pid": "slave(1)@10.0.0.5:5051", "hostname": "n1"},
                {"id": "a1-S1", "pid": "garbage"},
            ],
        })
    }

    fn snap(apps: Value, frameworks: Value) -> Snapshot {
        Snapshot::from_json(&json!({ "apps": apps }), &summary(frameworks))
    }

    fn to(scheme: Scheme, authority: &str, path: &str, prefix: &str) -> Resolved {
        Resolved::Proxy(Proxy {
            upstream: Upstream::Direct {
                scheme,
                authority: authority.to_string(),
            },
            path: path.to_string(),
            auth: true,
            streaming: true,
            websocket: true,
            strip_accept_encoding: true,
            clear_authorization: false,
            location_prefix: Some(prefix.to_string()),
        })
    }

    #[test]
    fn parses_apps_tasks_and_agents_tolerantly() {
        let apps = json!({"apps": [
            app("web", "HTTPS", "1", json!([
                task("10.0.0.5", &[31000, 31001]),
                {"host": "10.0.0.6", "ports": [31002, 31003], "state": "TASK_STAGING"},
                {"host": "10.0.0.7", "ports": [31004, 31005]},
                {"host": "10.0.0.8", "ports": [31006, 31007], "taskState": "TASK_KILLED"},
            ])),
            {"id": "/nolabels", "tasks": []},
            {"id": "/badscheme", "labels": {"DCOS_SERVICE_NAME": "x", "DCOS_SERVICE_SCHEME": "ftp", "DCOS_SERVICE_PORT_INDEX": "0"}},
            {"id": "/noindex", "labels": {"DCOS_SERVICE_NAME": "x", "DCOS_SERVICE_SCHEME": "http"}},
            {"id": "/badindex", "labels": {"DCOS_SERVICE_NAME": "x", "DCOS_SERVICE_SCHEME": "http", "DCOS_SERVICE_PORT_INDEX": "-1"}},
            {"id": "/numindex", "labels": {"DCOS_SERVICE_NAME": "n", "DCOS_SERVICE_SCHEME": "http", "DCOS_SERVICE_PORT_INDEX": 2}},
            {"id": "/c", "labels": {"DCOS_SERVICE_NAME": "c", "DCOS_SERVICE_SCHEME": "http", "DCOS_SERVICE_PORT_INDEX": "0"},
             "networks": [{"mode": "container", "name": "dcos"}],
             "container": {"docker": {"portMappings": [{"containerPort": 8080, "hostPort": 0}]}},
             "tasks": [task("10.0.0.9", &[])]},
            "not an object",
        ]});
        let s = Snapshot::from_json(
            &apps,
            &summary(json!([
                {"id": "f1", "name": "spark", "webui_url": "http://10.0.0.5:4040"},
                {"id": "f2", "name": "kafka", "webui_url": ""},
                {"id": "f3", "name": "nothing", "webui_url": null},
                {"id": "f4", "name": "missing"},
                {"active": true},
            ])),
        );
        assert_eq!(s.apps.len(), 3);
        let web = &s.apps[0];
        assert_eq!(
            (web.service_name.as_str(), web.scheme, web.port_index),
            ("web", Scheme::Https, 1)
        );
        assert_eq!(
            web.tasks
                .iter()
                .map(|t| t.host.as_str())
                .collect::<Vec<_>>(),
            ["10.0.0.5", "10.0.0.7"]
        );
        assert_eq!(web.tasks[0].ip_addresses, ["172.17.0.2"]);
        assert!(!web.tasks[0].container_networking);
        assert_eq!(s.apps[1].port_index, 2);
        assert!(s.apps[2].tasks[0].container_networking);
        assert_eq!(s.apps[2].tasks[0].container_ports, [8080]);
        assert_eq!(s.frameworks.len(), 4);
        assert_eq!(s.frameworks[1].webui_url.as_deref(), Some(""));
        assert_eq!(s.frameworks[2].webui_url, None);
        assert_eq!(s.frameworks[3].webui_url, None);
        assert_eq!(s.agent("a1-S0"), Some("10.0.0.5:5051"));
        assert_eq!(s.agent("a1-S1"), None);
        assert_eq!(s.agent("nope"), None);

        let empty = Snapshot::from_json(&json!(null), &json!({"frameworks": "x"}));
        assert_eq!(empty, Snapshot::default());
        let bare = Snapshot::from_json(
            &json!([app("w", "http", "0", json!([task("h", &[1])]))]),
            &json!({}),
        );
        assert_eq!(bare.apps.len(), 1);
    }

    #[test]
    fn what_the_apps_daemon_returns_is_understood() {
        // The shape components/apps serialises for embed=apps.tasks.
        let apps = json!({"apps": [{
            "id": "/group/web",
            "labels": {"DCOS_SERVICE_NAME": "web.group", "DCOS_SERVICE_SCHEME": "http", "DCOS_SERVICE_PORT_INDEX": "0"},
            "networks": [{"mode": "host"}],
            "container": {"type": "MESOS", "portMappings": []},
            "tasks": [{
                "id": "group_web.instance-1._app.1", "appId": "/group/web", "host": "127.0.0.1",
                "slaveId": "a1-S0", "state": "TASK_RUNNING", "stagedAt": "2024-01-01T00:00:00.000Z",
                "version": "2024-01-01T00:00:00.000Z", "ports": [31500], "servicePorts": [10000],
                "ipAddresses": [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
                "localVolumes": [], "role": "*", "healthCheckResults": []
            }]
        }]});
        let s = Snapshot::from_json(&apps, &json!({}));
        assert_eq!(
            resolve("group/web/ping", None, &s),
            to(
                Scheme::Http,
                "127.0.0.1:31500",
                "/ping",
                "/service/group/web"
            )
        );
    }

    #[test]
    fn apps_resolve_to_their_first_running_task() {
        let s = snap(
            json!([app(
                "web",
                "https",
                "1",
                json!([
                    {"host": "10.0.0.4", "ports": [1, 2], "state": "TASK_STAGING"},
                    task("10.0.0.5", &[31000, 31001]),
                    task("10.0.0.6", &[31002, 31003]),
                ])
            )]),
            json!([]),
        );
        let rows = [
            ("web/", None, "/"),
            ("web", None, "/"),
            ("web/api/v1/x", Some("a=1&b=%2e"), "/api/v1/x?a=1&b=%2e"),
            ("web/dir/", None, "/dir/"),
            ("web/", Some(""), "/?"),
        ];
        for (rest, query, path) in rows {
            assert_eq!(
                resolve(rest, query, &s),
                to(Scheme::Https, "10.0.0.5:31001", path, "/service/web"),
                "{rest}"
            );
        }
    }

    #[test]
    fn container_networking_uses_the_task_ip_and_container_port() {
        let mut a = app("c", "http", "1", json!([task("10.0.0.5", &[])]));
        a["networks"] = json!([{"mode": "container", "name": "dcos"}]);
        a["container"] = json!({"portMappings": [{"containerPort": 80}, {"containerPort": 8080}]});
        let mut zero = app("z", "http", "0", json!([task("10.0.0.5", &[31000])]));
        zero["networks"] = json!([{"mode": "container"}]);
        zero["container"] = json!({"portMappings": [{"containerPort": 0}]});
        let mut bridge = app("b", "http", "0", json!([task("10.0.0.5", &[31000])]));
        bridge["networks"] = json!([{"mode": "container/bridge"}]);
        bridge["container"] = json!({"portMappings": [{"containerPort": 80, "hostPort": 0}]});
        let mut legacy = app("l", "http", "0", json!([task("10.0.0.5", &[])]));
        legacy["ipAddress"] =
            json!({"networkName": "dcos", "discovery": {"ports": [{"number": 9000}]}});
        let mut v6 = app(
            "v6",
            "http",
            "0",
            json!([{"host": "h", "ipAddresses": [{"ipAddress": "fd00::2"}]}]),
        );
        v6["networks"] = json!([{"mode": "container"}]);
        v6["container"] = json!({"portMappings": [{"containerPort": 80}]});
        let s = snap(json!([a, zero, bridge, legacy, v6]), json!([]));
        assert_eq!(
            resolve("c/", None, &s),
            to(Scheme::Http, "172.17.0.2:8080", "/", "/service/c")
        );
        assert_eq!(resolve("z/", None, &s), Resolved::NotFound);
        assert_eq!(
            resolve("b/", None, &s),
            to(Scheme::Http, "10.0.0.5:31000", "/", "/service/b")
        );
        assert_eq!(
            resolve("l/", None, &s),
            to(Scheme::Http, "172.17.0.2:9000", "/", "/service/l")
        );
        assert_eq!(
            resolve("v6/", None, &s),
            to(Scheme::Http, "[fd00::2]:80", "/", "/service/v6")
        );
    }

    #[test]
    fn multi_segment_ids_match_in_mesos_dns_order_and_literally() {
        let s = snap(
            json!([
                app(
                    "web.group",
                    "http",
                    "0",
                    json!([task("10.0.0.5", &[31000])])
                ),
                app("x/y", "http", "0", json!([task("10.0.0.6", &[31001])])),
            ]),
            json!([{"id": "f1", "name": "inner.outer", "webui_url": "http://10.0.0.7:4040"}]),
        );
        assert_eq!(
            resolve("group/web/status", None, &s),
            to(
                Scheme::Http,
                "10.0.0.5:31000",
                "/status",
                "/service/group/web"
            )
        );
        assert_eq!(
            resolve("x/y/", None, &s),
            to(Scheme::Http, "10.0.0.6:31001", "/", "/service/x/y")
        );
        assert_eq!(
            resolve("outer/inner/a/b", None, &s),
            to(
                Scheme::Http,
                "10.0.0.7:4040",
                "/a/b",
                "/service/outer/inner"
            )
        );
        // The shortest matching candidate wins.
        let s = snap(
            json!([
                app("a", "http", "0", json!([task("10.0.0.1", &[1])])),
                app("b.a", "http", "0", json!([task("10.0.0.2", &[2])])),
            ]),
            json!([]),
        );
        assert_eq!(
            resolve("a/b/", None, &s),
            to(Scheme::Http, "10.0.0.1:1", "/b/", "/service/a")
        );
        // Up to 10 segments, not 11.
        let ten = (1..=10)
            .rev()
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(".");
        let eleven = (1..=11)
            .rev()
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(".");
        let s = snap(
            json!([
                app(&ten, "http", "0", json!([task("10.0.0.1", &[1])])),
                app(&eleven, "http", "0", json!([task("10.0.0.2", &[2])])),
            ]),
            json!([]),
        );
        let path = |c: char, n: usize| {
            (1..=n)
                .map(|i| format!("{c}{i}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        assert_eq!(
            resolve(&format!("{}/x", path('s', 10)), None, &s),
            to(
                Scheme::Http,
                "10.0.0.1:1",
                "/x",
                &format!("/service/{}", path('s', 10))
            )
        );
        assert_eq!(
            resolve(&format!("{}/x", path('t', 11)), None, &s),
            Resolved::NotFound
        );
    }

    #[test]
    fn labels_beat_framework_ids_which_beat_framework_names() {
        let frameworks = json!([
            {"id": "svc", "name": "other", "webui_url": "http://10.0.0.8:1000"},
            {"id": "f9", "name": "svc", "webui_url": "http://10.0.0.9:2000"},
        ]);
        let with_app = snap(
            json!([app("svc", "http", "0", json!([task("10.0.0.5", &[31000])]))]),
            frameworks.clone(),
        );
        assert_eq!(
            resolve("svc/", None, &with_app),
            to(Scheme::Http, "10.0.0.5:31000", "/", "/service/svc")
        );
        let no_app = snap(json!([]), frameworks);
        assert_eq!(
            resolve("svc/", None, &no_app),
            to(Scheme::Http, "10.0.0.8:1000", "/", "/service/svc")
        );
        assert_eq!(
            resolve("other/", None, &no_app),
            to(Scheme::Http, "10.0.0.8:1000", "/", "/service/other")
        );
        assert_eq!(
            resolve("f9/x", None, &no_app),
            to(Scheme::Http, "10.0.0.9:2000", "/x", "/service/f9")
        );
    }

    #[test]
    fn apps_without_a_usable_task_fall_through() {
        let fw = json!([{"id": "f1", "name": "svc", "webui_url": "http://10.0.0.9:2000"}]);
        let no_running = snap(
            json!([app(
                "svc",
                "http",
                "0",
                json!([{"host": "h", "ports": [1], "state": "TASK_STAGING"}])
            )]),
            fw.clone(),
        );
        assert_eq!(
            resolve("svc/", None, &no_running),
            to(Scheme::Http, "10.0.0.9:2000", "/", "/service/svc")
        );
        let no_tasks = snap(json!([app("svc", "http", "0", json!([]))]), json!([]));
        assert_eq!(resolve("svc/", None, &no_tasks), Resolved::NotFound);
        // Port index out of range: not a target.
        let out_of_range = snap(
            json!([app(
                "svc",
                "http",
                "2",
                json!([task("10.0.0.5", &[31000, 31001])])
            )]),
            json!([]),
        );
        assert_eq!(resolve("svc/", None, &out_of_range), Resolved::NotFound);
        let fallback = snap(
            json!([app("svc", "http", "2", json!([task("10.0.0.5", &[31000])]))]),
            fw,
        );
        assert_eq!(
            resolve("svc/", None, &fallback),
            to(Scheme::Http, "10.0.0.9:2000", "/", "/service/svc")
        );
        // A second app with the same name and a running task is used.
        let second = snap(
            json!([
                app("svc", "http", "0", json!([])),
                app("svc", "https", "0", json!([task("10.0.0.6", &[443])])),
            ]),
            json!([]),
        );
        assert_eq!(
            resolve("svc/", None, &second),
            to(Scheme::Https, "10.0.0.6:443", "/", "/service/svc")
        );
    }

    #[test]
    fn framework_webui_urls() {
        let s = snap(
            json!([]),
            json!([
                {"id": "f1", "name": "path", "webui_url": "https://10.0.0.7:4040/ui/"},
                {"id": "f2", "name": "bare", "webui_url": "http://10.0.0.7:4041/"},
                {"id": "f3", "name": "noport", "webui_url": "http://master.mesos"},
                {"id": "f4", "name": "srv", "webui_url": ""},
                {"id": "f5", "name": "null", "webui_url": null},
                {"id": "f6", "name": "ftp", "webui_url": "ftp://10.0.0.7/"},
                {"id": "f7", "name": "userinfo", "webui_url": "http://u:p@10.0.0.7:80/"},
                {"id": "f8", "name": "query", "webui_url": "http://10.0.0.7:80/app?x=1#frag"},
                {"id": "f9", "name": "badport", "webui_url": "http://10.0.0.7:99999/"},
                {"id": "fa", "name": "relative", "webui_url": "/ui"},
                {"id": "fb", "name": "v6", "webui_url": "http://[fd00::1]:8080"},
            ]),
        );
        let rows = [
            (
                "path/a/b?q",
                to(Scheme::Https, "10.0.0.7:4040", "/ui/a/b?q", "/service/path"),
            ),
            (
                "path/",
                to(Scheme::Https, "10.0.0.7:4040", "/ui/", "/service/path"),
            ),
            (
                "bare/x/",
                to(Scheme::Http, "10.0.0.7:4041", "/x/", "/service/bare"),
            ),
            (
                "noport/",
                to(Scheme::Http, "master.mesos:80", "/", "/service/noport"),
            ),
            (
                "query/y",
                to(Scheme::Http, "10.0.0.7:80", "/app/y", "/service/query"),
            ),
            (
                "v6/",
                to(Scheme::Http, "[fd00::1]:8080", "/", "/service/v6"),
            ),
            (
                "srv/a?b=c",
                Resolved::Srv {
                    service: "srv".into(),
                    prefix: "/service/srv".into(),
                    path: "/a?b=c".into(),
                },
            ),
            (
                "f4/",
                Resolved::Srv {
                    service: "srv".into(),
                    prefix: "/service/f4".into(),
                    path: "/".into(),
                },
            ),
            ("null/", Resolved::NotFound),
            ("f5/", Resolved::NotFound),
            ("ftp/", Resolved::NotFound),
            ("userinfo/", Resolved::NotFound),
            ("badport/", Resolved::NotFound),
            ("relative/", Resolved::NotFound),
        ];
        for (rest, want) in rows {
            let (rest, query) = match rest.split_once('?') {
                Some((r, q)) => (r, Some(q)),
                None => (rest, None),
            };
            assert_eq!(resolve(rest, query, &s), want, "{rest}");
        }
    }

    #[test]
    fn nothing_outside_the_snapshot_is_a_target() {
        let s = snap(
            json!([app("web", "http", "0", json!([task("10.0.0.5", &[31000])]))]),
            json!([{"id": "f1", "name": "spark", "webui_url": "http://10.0.0.7:4040"}]),
        );
        for rest in [
            "",
            "/",
            "evil.com/",
            "10.0.0.5:31000/",
            "http:/evil/",
            "../web/",
            "web/../../x",
            "./web/",
            "marathon/",
            "Web/",
        ] {
            assert_eq!(resolve(rest, None, &s), Resolved::NotFound, "{rest}");
        }
        let hostile = snap(
            json!([app("h", "http", "0", json!([task("evil.com/x@y", &[80])]))]),
            json!([]),
        );
        assert_eq!(resolve("h/", None, &hostile), Resolved::NotFound);
    }

    #[test]
    fn routed_service_paths_resolve() {
        use crate::routes::{Route, route};
        let s = snap(
            json!([app("web", "http", "0", json!([task("10.0.0.5", &[31000])]))]),
            json!([]),
        );
        let Route::Service { rest, query } =
            route(&http::Method::GET, "/service/w%65b//x/./y/?z=1")
        else {
            panic!("not a service route");
        };
        assert_eq!(
            resolve(&rest, query.as_deref(), &s),
            to(Scheme::Http, "10.0.0.5:31000", "/x/y/?z=1", "/service/web")
        );
    }
}
