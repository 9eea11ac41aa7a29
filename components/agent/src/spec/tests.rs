use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use capstan_proto::mesos::v1::TaskInfo;
use serde_json::{Value, json};

use super::*;

fn task(container: Value, command: Option<Value>) -> TaskInfo {
    let mut t = json!({
        "name": "t", "task_id": {"value": "t1"}, "agent_id": {"value": "A-S0"},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}}
        ],
        "container": container,
        "discovery": {"visibility": "FRAMEWORK", "ports": {"ports": [{"number": 31000, "name": "http-api"}]}}
    });
    if let Some(c) = command {
        t["command"] = c;
    }
    capstan_proto::from_json(&t).expect("valid TaskInfo")
}

fn docker(extra: Value) -> Value {
    let mut d = json!({"image": "capstan/busybox"});
    for (k, v) in extra.as_object().unwrap() {
        d[k] = v.clone();
    }
    json!({"type": "DOCKER", "docker": d})
}

fn build(t: &TaskInfo, allow_privileged: bool) -> Result<ContainerSpec, SpecError> {
    let labels = BTreeMap::from([("capstan.test".to_owned(), "r1".to_owned())]);
    let policy = capstan_types::ContainerPolicy {
        allow_privileged,
        allowed_host_paths: vec!["/srv".to_owned()],
    };
    let ctx = SpecContext {
        agent_id: "A-S0",
        framework_id: "F-0000",
        executor_id: "t1",
        container_id: "c1",
        hostname: "agent1",
        advertise_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        sandbox: Path::new("/w/sandbox"),
        sandbox_mount: "/mnt/mesos/sandbox",
        policy: &policy,
        pids_limit: 4096,
        cpu_quota: true,
        extra_labels: &labels,
    };
    build_spec(t, &ctx)
}

fn env_of<'a>(spec: &'a ContainerSpec, name: &str) -> Option<&'a str> {
    spec.env
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn container_is_named_for_agent_and_container_and_labelled_for_recovery() {
    let spec = build(&task(docker(json!({})), None), false).unwrap();
    assert_eq!(spec.name, "mesos-A-S0.c1");
    assert_eq!(spec.labels[LABEL_AGENT], "A-S0");
    assert_eq!(spec.labels[LABEL_TASK], "t1");
    assert_eq!(spec.labels[LABEL_FRAMEWORK], "F-0000");
    assert_eq!(spec.labels[LABEL_CONTAINER], "c1");
    assert_eq!(spec.labels["capstan.test"], "r1");
    assert_eq!(spec.network, NetworkMode::Host);
    assert_eq!(spec.binds, vec!["/w/sandbox:/mnt/mesos/sandbox"]);
}

#[test]
fn command_semantics_follow_the_docker_containerizer() {
    type Case = (
        Option<Value>,
        Option<Vec<&'static str>>,
        Option<Vec<&'static str>>,
    );
    let cases: Vec<Case> = vec![
        (None, None, None),
        (Some(json!({"shell": true})), None, None),
        (
            Some(json!({"value": "echo hi | tr a-z A-Z"})),
            Some(vec!["/bin/sh", "-c"]),
            Some(vec!["echo hi | tr a-z A-Z"]),
        ),
        (
            Some(json!({"shell": false, "value": "echo", "arguments": ["a", "b c"]})),
            None,
            Some(vec!["echo", "a", "b c"]),
        ),
        (
            Some(json!({"shell": false, "arguments": ["--port", "1"]})),
            None,
            Some(vec!["--port", "1"]),
        ),
        (Some(json!({"shell": false})), None, None),
    ];
    for (command, entrypoint, cmd) in cases {
        let spec = build(&task(docker(json!({})), command.clone()), false).unwrap();
        let own =
            |v: Option<Vec<&str>>| v.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(spec.entrypoint, own(entrypoint), "{command:?}");
        assert_eq!(spec.cmd, own(cmd), "{command:?}");
    }
}

#[test]
fn environment_has_mesos_variables_ports_and_the_tasks_own_last() {
    let cmd = json!({"value": "true", "environment": {"variables": [{"name": "A", "value": "1"}, {"name": "PORT0", "value": "9"}]}});
    let spec = build(&task(docker(json!({})), Some(cmd)), false).unwrap();
    assert_eq!(env_of(&spec, "MESOS_TASK_ID"), Some("t1"));
    assert_eq!(env_of(&spec, "MESOS_SANDBOX"), Some("/mnt/mesos/sandbox"));
    assert_eq!(env_of(&spec, "HOST"), Some("agent1"));
    assert_eq!(env_of(&spec, "PORT1"), Some("31001"));
    assert_eq!(env_of(&spec, "PORTS"), Some("31000,31001"));
    assert_eq!(env_of(&spec, "PORT_HTTP_API"), Some("31000"));
    assert_eq!(env_of(&spec, "A"), Some("1"));
    // The task's own variables override ours.
    assert_eq!(env_of(&spec, "PORT0"), Some("9"));
}

#[test]
fn bridge_publishes_offered_host_ports_on_the_agent_ip() {
    let d = docker(json!({"network": "BRIDGE", "port_mappings": [
        {"host_port": 31000, "container_port": 80},
        {"host_port": 31001, "container_port": 0, "protocol": "udp,tcp"}
    ]}));
    let spec = build(&task(d, None), false).unwrap();
    assert_eq!(spec.network, NetworkMode::Bridge);
    let b: Vec<(u32, u32, &str, &str)> = spec
        .port_bindings
        .iter()
        .map(|b| {
            (
                b.host_port,
                b.container_port,
                b.protocol.as_str(),
                b.host_ip.as_str(),
            )
        })
        .collect();
    assert_eq!(
        b,
        vec![
            (31000, 80, "tcp", "10.0.0.2"),
            (31001, 31001, "udp", "10.0.0.2"),
            (31001, 31001, "tcp", "10.0.0.2")
        ]
    );
    // The task listens on the container ports.
    assert_eq!(env_of(&spec, "PORT0"), Some("80"));
    assert_eq!(env_of(&spec, "PORT1"), Some("31001"));
}

#[test]
fn limits_come_from_cpus_and_mem() {
    let spec = build(&task(docker(json!({})), None), false).unwrap();
    assert_eq!(spec.cpu_shares, 512);
    assert_eq!(spec.cpu_quota, Some((100_000, 50_000)));
    assert_eq!(spec.memory_bytes, Some(64 * 1024 * 1024));
}

#[test]
fn user_networks_use_the_named_network() {
    let mut c = docker(json!({"network": "USER"}));
    c["network_infos"] = json!([{"name": "overlay1"}]);
    let spec = build(&task(c, None), false).unwrap();
    assert_eq!(spec.network, NetworkMode::User("overlay1".into()));
    assert_eq!(
        build(&task(docker(json!({"network": "USER"})), None), false),
        Err(SpecError::UserNetworkWithoutName)
    );
}

#[test]
fn volumes_map_to_binds_and_bad_paths_are_refused() {
    let mut c = docker(json!({}));
    c["volumes"] = json!([
        {"container_path": "/data", "host_path": "/srv/data", "mode": "RW"},
        {"container_path": "/etc/x", "host_path": "conf", "mode": "RO"},
        {"container_path": "/cache", "mode": "RW",
         "source": {"type": "DOCKER_VOLUME", "docker_volume": {"name": "swarm.cache", "driver": "local"}}}
    ]);
    let spec = build(&task(c, None), false).unwrap();
    assert_eq!(
        spec.binds[1..],
        [
            "/srv/data:/data:rw",
            "/w/sandbox/conf:/etc/x:ro",
            "swarm.cache:/cache:rw"
        ]
    );
    let bad = [
        json!({"container_path": "/x", "host_path": "/a/../etc", "mode": "RW"}),
        json!({"container_path": "rel", "host_path": "/a", "mode": "RW"}),
        json!({"container_path": "/x", "mode": "RW"}),
        json!({"container_path": "/x:y", "host_path": "/a", "mode": "RW"}),
        // Outside the policy's allowed host paths (`/srv` in these tests), or the host itself.
        json!({"container_path": "/x", "host_path": "/etc", "mode": "RO"}),
        json!({"container_path": "/x", "host_path": "/", "mode": "RO"}),
        json!({"container_path": "/x", "host_path": "/var/run/docker.sock", "mode": "RW"}),
        json!({"container_path": "/x", "host_path": "/srvx", "mode": "RW"}),
        // Named volumes: the local driver, no options, a Docker volume name.
        json!({"container_path": "/x", "mode": "RW", "source": {"type": "DOCKER_VOLUME",
               "docker_volume": {"name": "v", "driver": "nfs"}}}),
        json!({"container_path": "/x", "mode": "RW", "source": {"type": "DOCKER_VOLUME",
               "docker_volume": {"name": "data", "driver_options": {"parameter": [
                   {"key": "device", "value": "/etc"}]}}}}),
        json!({"container_path": "/x", "mode": "RW", "source": {"type": "DOCKER_VOLUME",
               "docker_volume": {"name": "../etc"}}}),
        json!({"container_path": "/x", "mode": "RW", "source": {"type": "SECRET"}}),
    ];
    for v in bad {
        let mut c = docker(json!({}));
        c["volumes"] = json!([v.clone()]);
        let err = build(&task(c, None), false).unwrap_err();
        assert!(
            matches!(err, SpecError::BadVolume { index: 0, .. }),
            "{v}: {err}"
        );
    }
}

#[test]
fn privileged_needs_the_agents_permission() {
    let d = docker(json!({"privileged": true}));
    let err = build(&task(d.clone(), None), false).unwrap_err();
    assert!(matches!(err, SpecError::PrivilegedForbidden(_)), "{err}");
    assert!(err.to_string().contains("allow_privileged"), "{err}");
    assert!(build(&task(d, None), true).unwrap().privileged);
    let d = docker(json!({"parameters": [{"key": "cap-add", "value": "NET_ADMIN"}]}));
    assert!(build(&task(d.clone(), None), false).is_err());
    assert_eq!(
        build(&task(d, None), true).unwrap().extra.cap_add,
        ["NET_ADMIN"]
    );
}

#[test]
fn only_vetted_parameters_are_accepted() {
    let d = docker(json!({"parameters": [
        {"key": "label", "value": "a=b"}, {"key": "env", "value": "X=1"},
        {"key": "user", "value": "nobody"}, {"key": "ulimit", "value": "nofile=100:200"},
        {"key": "shm-size", "value": "64m"}
    ]}));
    let spec = build(&task(d, None), false).unwrap();
    assert_eq!(spec.labels["a"], "b");
    assert_eq!(env_of(&spec, "X"), Some("1"));
    assert_eq!(spec.extra.user.as_deref(), Some("nobody"));
    assert_eq!(spec.extra.ulimits, vec![("nofile".to_owned(), 100, 200)]);
    assert_eq!(spec.extra.shm_size, Some(64 * 1024 * 1024));
    for key in ["privileged", "net", "volume", "cap-add", "pid", "device"] {
        let d = docker(json!({"parameters": [{"key": key, "value": "x"}]}));
        let err = build(&task(d, None), false).unwrap_err();
        assert!(
            matches!(err, SpecError::BadParameter { .. }),
            "{key}: {err}"
        );
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn interactive_parameters_open_stdin() {
    let cases = [
        (json!([]), None, None),
        (
            json!([{"key": "interactive", "value": "true"}]),
            Some(true),
            None,
        ),
        (
            json!([{"key": "i", "value": ""}, {"key": "stdin-once", "value": "true"}]),
            Some(true),
            Some(true),
        ),
        (
            json!([{"key": "interactive", "value": "false"}, {"key": "stdin-once", "value": "0"}]),
            Some(false),
            Some(false),
        ),
    ];
    for (params, open, once) in cases {
        let spec = build(&task(docker(json!({"parameters": params})), None), false).unwrap();
        assert_eq!(
            (spec.extra.open_stdin, spec.extra.stdin_once),
            (open, once),
            "{params}"
        );
    }
    let d = docker(json!({"parameters": [{"key": "interactive", "value": "maybe"}]}));
    let err = build(&task(d, None), false).unwrap_err().to_string();
    assert!(
        err.contains("interactive") && err.contains("boolean"),
        "{err}"
    );
}

#[test]
fn bad_port_mappings_are_refused() {
    let cases = [
        (
            json!({"network": "HOST", "port_mappings": [{"host_port": 31000, "container_port": 80}]}),
            "BRIDGE",
        ),
        (
            json!({"network": "BRIDGE", "port_mappings": [{"host_port": 30000, "container_port": 80}]}),
            "not among",
        ),
        (
            json!({"network": "BRIDGE", "port_mappings": [{"host_port": 31000, "container_port": 80, "protocol": "sctp"}]}),
            "sctp",
        ),
    ];
    for (d, needle) in cases {
        let err = build(&task(docker(d.clone()), None), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{d}: {err}");
    }
}

#[test]
fn non_docker_containers_are_refused() {
    let err = build(&task(json!({"type": "MESOS"}), None), false).unwrap_err();
    assert_eq!(err, SpecError::UnsupportedContainerType("MESOS".into()));
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(parse_bytes("1024"), Some(1024));
    assert_eq!(parse_bytes("2k"), Some(2048));
    assert_eq!(parse_bytes("1g"), Some(1 << 30));
    assert_eq!(parse_bytes("64MB"), Some(64 << 20));
    assert_eq!(parse_bytes("x"), None);
}

proptest::proptest! {
    #[test]
    fn any_shell_command_runs_under_sh_c_verbatim(value in "[ -~]{1,40}") {
        let spec = build(&task(docker(json!({})), Some(json!({"value": value.clone()}))), false).unwrap();
        proptest::prop_assert_eq!(spec.cmd, Some(vec![value]));
        proptest::prop_assert_eq!(spec.entrypoint, Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]));
    }
}

#[test]
fn executor_containers_get_the_executor_environment_and_no_task_label() {
    let exec: ExecutorInfo = capstan_proto::from_json(&json!({
        "executor_id": {"value": "E1"}, "framework_id": {"value": "F-0000"},
        "command": {"value": "exec ./my-executor", "environment": {"variables": [
            {"name": "MESOS_AGENT_ENDPOINT", "value": "override:1"}, {"name": "OWN", "value": "1"}]}},
        "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox", "network": "BRIDGE"}}
    }))
    .unwrap();
    let labels = BTreeMap::new();
    let ctx = SpecContext {
        agent_id: "A-S0",
        framework_id: "F-0000",
        executor_id: "E1",
        container_id: "c9",
        hostname: "agent1",
        advertise_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        sandbox: Path::new("/w/sandbox"),
        sandbox_mount: "/mnt/mesos/sandbox",
        policy: &Default::default(),
        pids_limit: 4096,
        cpu_quota: false,
        extra_labels: &labels,
    };
    let resources = task(docker(json!({})), None).resources;
    let env = vec![
        ("MESOS_EXECUTOR_ID".to_owned(), "E1".to_owned()),
        ("MESOS_SANDBOX".to_owned(), "/mnt/mesos/sandbox".to_owned()),
        (
            "MESOS_AGENT_ENDPOINT".to_owned(),
            "10.0.0.2:5051".to_owned(),
        ),
    ];
    let spec = build_executor_spec(&exec, resources, env, &ctx).unwrap();
    assert_eq!(spec.name, "mesos-A-S0.c9");
    assert_eq!(spec.network, NetworkMode::Bridge);
    assert_eq!(spec.binds, vec!["/w/sandbox:/mnt/mesos/sandbox"]);
    assert_eq!(spec.labels[LABEL_EXECUTOR], "E1");
    assert_eq!(spec.labels[LABEL_CONTAINER], "c9");
    assert!(!spec.labels.contains_key(LABEL_TASK));
    assert_eq!(
        spec.entrypoint,
        Some(vec!["/bin/sh".to_owned(), "-c".to_owned()])
    );
    assert_eq!(spec.cmd, Some(vec!["exec ./my-executor".to_owned()]));
    assert_eq!(spec.memory_bytes, Some(64 << 20));
    assert_eq!(env_of(&spec, "MESOS_TASK_ID"), None);
    assert_eq!(env_of(&spec, "MESOS_SANDBOX"), Some("/mnt/mesos/sandbox"));
    assert_eq!(env_of(&spec, "MESOS_AGENT_ENDPOINT"), Some("override:1"));
    assert_eq!(env_of(&spec, "OWN"), Some("1"));
    assert_eq!(env_of(&spec, "MESOS_CONTAINER_NAME"), Some("mesos-A-S0.c9"));
    let names: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(names.len(), unique.len(), "one entry per name: {names:?}");
}
