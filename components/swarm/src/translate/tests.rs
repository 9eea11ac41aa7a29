//! Table tests of the Docker → Mesos translation.

use serde_json::{Value, json};

use super::*;
use crate::model::CreateBody;

const DEFAULTS: Defaults = Defaults {
    cpus: 0.1,
    mem_mib: 128.0,
};

fn body(v: Value) -> CreateBody {
    serde_json::from_value(v).unwrap()
}

fn offer() -> Value {
    json!({
        "id": {"value": "O-1"}, "agent_id": {"value": "A-1"}, "hostname": "127.0.2.1",
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "allocation_info": {"role": "*"}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 1024.0}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 4096.0}, "reservations": [{"role": "db"}]},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31002}]}},
        ],
    })
}

#[test]
fn create_bodies_become_specs_with_resources_ports_env_and_labels() {
    struct Case {
        what: &'static str,
        body: Value,
        check: fn(&Spec),
    }
    let cases = [
        Case {
            what: "no limits: the defaults",
            body: json!({"Image": "capstan/http"}),
            check: |s| {
                assert_eq!((s.cpus, s.mem_mib), (0.1, 128.0));
                assert_eq!(s.network, Network::Bridge);
                assert!(s.ports.is_empty() && s.env.is_empty() && s.cmd.is_empty());
            },
        },
        Case {
            what: "--cpus 1.5 -m 512m",
            body: json!({"Image": "x", "HostConfig": {"NanoCpus": 1_500_000_000i64, "Memory": 536_870_912i64, "CpuShares": 1024}}),
            check: |s| assert_eq!((s.cpus, s.mem_mib), (1.5, 512.0)),
        },
        Case {
            what: "-p 8080:80 -p 53/udp",
            body: json!({"Image": "x", "HostConfig": {"PortBindings": {
                "80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "", "HostPort": ""}]}}}),
            check: |s| {
                assert_eq!(s.ports.len(), 2);
                assert!(s.ports.contains(&PortRequest {
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_port: Some(8080)
                }));
                assert!(s.ports.contains(&PortRequest {
                    container_port: 53,
                    protocol: "udp".into(),
                    host_port: None
                }));
            },
        },
        Case {
            what: "-e and labels, a bare -e dropped",
            body: json!({"Image": "x", "Env": ["A=1", "B=x=y", "C"], "Labels": {"k": "v"}, "Cmd": ["sh", "-c", "exit 3"]}),
            check: |s| {
                assert_eq!(
                    s.env,
                    vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
                );
                assert_eq!(s.labels.get("k").map(String::as_str), Some("v"));
                assert_eq!(s.cmd, ["sh", "-c", "exit 3"]);
            },
        },
        Case {
            what: "--network host",
            body: json!({"Image": "x", "HostConfig": {"NetworkMode": "host"}}),
            check: |s| assert_eq!(s.network, Network::Host),
        },
    ];
    for c in cases {
        let s = spec(&body(c.body), DEFAULTS).unwrap_or_else(|e| panic!("{}: {e}", c.what));
        (c.check)(&s);
    }
}

#[test]
fn user_networks_and_restart_policies_are_recorded() {
    let s = spec(
        &body(json!({"Image": "x",
            "HostConfig": {"NetworkMode": "p_default", "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}},
            "NetworkingConfig": {"EndpointsConfig": {"p_default": {"Aliases": ["web"]}}}})),
        DEFAULTS,
    )
    .unwrap();
    assert_eq!(s.network, Network::Bridge);
    assert_eq!(s.networks["p_default"].aliases, vec!["web".to_owned()]);
    assert_eq!(s.restart, Restart::OnFailure { max_retries: 2 });
    assert!(s.restart.restarts(1, 1) && !s.restart.restarts(1, 2) && !s.restart.restarts(0, 0));
    assert!(Restart::Always.restarts(0, 99) && !Restart::No.restarts(1, 0));
    let plain = spec(&body(json!({"Image": "x"})), DEFAULTS).unwrap();
    assert!(plain.networks.is_empty() && plain.restart == Restart::No);
}

#[test]
fn constraints_leave_the_environment_and_decide_the_fit() {
    let s = spec(
        &body(json!({"Image": "x", "Env": ["A=1", "constraint:node==other-host"]})),
        DEFAULTS,
    )
    .unwrap();
    assert_eq!(s.env, vec![("A".to_owned(), "1".to_owned())]);
    assert_eq!(
        s.labels[crate::constraints::LABEL],
        r#"["node==other-host"]"#
    );
    let e = fit(&s, &offer()).unwrap_err();
    assert!(e.to_string().contains("node==other-host"), "{e}");
    let here = spec(
        &body(json!({"Image": "x", "Labels": {"com.docker.swarm.constraints": "[\"node==127.0.2.1\"]"}})),
        DEFAULTS,
    )
    .unwrap();
    assert!(fit(&here, &offer()).is_ok());
}

#[test]
fn create_bodies_swarm_cannot_run_are_refused_naming_the_field() {
    let cases = [
        (json!({}), "Image"),
        (
            json!({"Image": "x", "HostConfig": {"Memory": 1000}}),
            "Memory",
        ),
        (
            json!({"Image": "x", "HostConfig": {"NetworkMode": "container:web"}}),
            "NetworkMode",
        ),
        (
            json!({"Image": "x", "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}),
            "RestartPolicy",
        ),
        (
            json!({"Image": "x", "HostConfig": {"AutoRemove": true, "RestartPolicy": {"Name": "always"}}}),
            "AutoRemove",
        ),
        (
            json!({"Image": "x", "HostConfig": {"PortBindings": {"http/tcp": []}}}),
            "PortBindings",
        ),
        (
            json!({"Image": "x", "HostConfig": {"PortBindings": {"80/sctp": []}}}),
            "protocol",
        ),
        (
            json!({"Image": "x", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "1-9"}]}}}),
            "ranges",
        ),
        (
            json!({"Image": "x", "HostConfig": {"NetworkMode": "host", "PortBindings": {"80/tcp": []}}}),
            "bridge",
        ),
        (
            json!({"Image": "x", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "9"}], "81/tcp": [{"HostPort": "9"}]}}}),
            "twice",
        ),
        (
            json!({"Image": "x", "HostConfig": {"PublishAllPorts": true}}),
            "-P",
        ),
        (json!({"Image": "x", "Env": ["=1"]}), "Env[0]"),
    ];
    for (b, needle) in cases {
        let err = spec(&body(b.clone()), DEFAULTS).expect_err(&b.to_string());
        assert!(err.0.contains(needle), "{b}: {err}");
    }
}

fn spec_of(v: Value) -> Spec {
    spec(&body(v), DEFAULTS).unwrap()
}

#[test]
fn offers_fit_by_unreserved_cpus_mem_and_port_ranges() {
    let cases: [(Value, Result<Vec<u32>, NoFit>); 6] = [
        (json!({"Image": "x"}), Ok(vec![])),
        (
            json!({"Image": "x", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "31001"}]}}}),
            Ok(vec![31001]),
        ),
        (
            json!({"Image": "x", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": ""}], "81/tcp": [{"HostPort": "31000"}]}}}),
            Ok(vec![31000, 31001]),
        ),
        (
            json!({"Image": "x", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}}),
            Err(NoFit::Port(8080)),
        ),
        // The reserved 4096 MiB are not ours.
        (
            json!({"Image": "x", "HostConfig": {"Memory": 2_147_483_648i64}}),
            Err(NoFit::Mem {
                need: "2048".into(),
                have: "1024".into(),
            }),
        ),
        (
            json!({"Image": "x", "HostConfig": {"NanoCpus": 3_000_000_000i64}}),
            Err(NoFit::Cpus {
                need: "3".into(),
                have: "2".into(),
            }),
        ),
    ];
    for (b, want) in cases {
        let got = fit(&spec_of(b.clone()), &offer()).map(|m| {
            let mut hp: Vec<u32> = m.ports.iter().map(|p| p.host_port).collect();
            hp.sort_unstable();
            hp
        });
        assert_eq!(got, want, "{b}");
    }
}

#[test]
fn one_offer_carries_every_start_it_fits() {
    // 0.5 cpus, 256 MiB and one host port each: the offer's three ports are the limit.
    let s = spec_of(json!({
        "Image": "x",
        "HostConfig": {"NanoCpus": 500_000_000, "Memory": 268_435_456,
                       "PortBindings": {"80/tcp": [{"HostPort": ""}]}},
    }));
    let mut o = offer();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let m = fit(&s, &o).expect("fits");
        ports.extend(m.ports.iter().map(|p| p.host_port));
        take(&mut o, &m);
    }
    assert_eq!(
        ports,
        [31000, 31001, 31002],
        "each start gets a port of its own"
    );
    assert_eq!(fit(&s, &o), Err(NoFit::Ports));
    assert_eq!(scalar(&o, "cpus"), 0.5);
    assert_eq!(scalar(&o, "mem"), 256.0);
    assert_eq!(
        o["resources"][2]["scalar"]["value"], 4096.0,
        "the reservation is not ours"
    );
    // Tenths add up in milli-units: ten of 0.1 cpus fit in 1.0, the eleventh does not.
    let tenth = spec_of(
        json!({"Image": "x", "HostConfig": {"NanoCpus": 100_000_000, "Memory": 8_388_608}}),
    );
    let mut o = offer();
    o["resources"][0]["scalar"]["value"] = json!(1.0);
    for i in 0..10 {
        let m = fit(&tenth, &o).unwrap_or_else(|e| panic!("start {i}: {e}"));
        take(&mut o, &m);
    }
    assert!(matches!(fit(&tenth, &o), Err(NoFit::Cpus { .. })));
}

#[test]
fn the_task_info_is_a_valid_mesos_task_for_the_docker_containerizer() {
    let s = spec_of(json!({
        "Image": "capstan/http", "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"],
        "Env": ["A=1"], "Labels": {"com.example": "yes"}, "WorkingDir": "/tmp",
        "HostConfig": {"NanoCpus": 500_000_000, "PortBindings": {"80/tcp": [{"HostPort": "31002"}]}},
    }));
    let m = fit(&s, &offer()).unwrap();
    let id = "a".repeat(64);
    let t = task_info(&id, "web", &s, &task_id(&id, 1), &offer(), &m);
    let info: capstan_proto::mesos::v1::TaskInfo = capstan_proto::from_json(&t).unwrap();
    assert_eq!(info.task_id.value, "swarm.aaaaaaaaaaaa.1");
    assert_eq!(info.agent_id.value, "A-1");
    let docker = info.container.as_ref().unwrap().docker.as_ref().unwrap();
    assert_eq!(docker.image, "capstan/http");
    assert_eq!(docker.port_mappings[0].host_port, 31002);
    assert_eq!(docker.port_mappings[0].container_port, 80);
    let params: Vec<(String, String)> = docker
        .parameters
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    assert!(params.contains(&("label".into(), "com.example=yes".into())));
    assert!(params.contains(&("entrypoint".into(), "/bin/sh".into())));
    assert!(params.contains(&("workdir".into(), "/tmp".into())));
    let cmd = info.command.as_ref().unwrap();
    assert_eq!(cmd.arguments, ["-c", "echo hi"]);
    assert_eq!(cmd.environment.as_ref().unwrap().variables[0].name, "A");
    // cpus, mem and one port, the role details copied from the offer.
    assert_eq!(info.resources.len(), 3);
    assert_eq!(t["resources"][0]["allocation_info"]["role"], "*");
    assert_eq!(short_id_of_task(&info.task_id.value), Some("aaaaaaaaaaaa"));
}

#[test]
fn run_i_opens_the_tasks_stdin_through_vetted_parameters() {
    let cases = [
        (json!({"Image": "x"}), vec![]),
        (
            json!({"Image": "x", "OpenStdin": true}),
            vec!["interactive"],
        ),
        (
            json!({"Image": "x", "OpenStdin": true, "AttachStdin": true, "StdinOnce": true}),
            vec!["interactive", "stdin-once"],
        ),
        // StdinOnce means nothing without an open stdin.
        (json!({"Image": "x", "StdinOnce": true}), vec![]),
    ];
    for (b, want) in cases {
        let s = spec_of(b.clone());
        let m = fit(&s, &offer()).unwrap();
        let id = "b".repeat(64);
        let t = task_info(&id, "i", &s, &task_id(&id, 1), &offer(), &m);
        let keys: Vec<&str> = t["container"]["docker"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["value"] == "true")
            .map(|p| p["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, want, "{b}");
    }
}

#[test]
fn terminal_statuses_give_dockers_exit_codes() {
    let cases = [
        ("TASK_FINISHED", "Command exited with status 0", 0),
        ("TASK_FAILED", "Command exited with status 3", 3),
        (
            "TASK_KILLED",
            "Task killed: Command exited with status 143",
            143,
        ),
        (
            "TASK_KILLED",
            "Task killed: Command terminated by signal 9",
            137,
        ),
        ("TASK_KILLED", "", 137),
        ("TASK_LOST", "agent gone", 128),
    ];
    for (state, msg, code) in cases {
        assert_eq!(exit_code(state, msg), code, "{state} {msg}");
    }
    assert!(launch_failed("REASON_CONTAINER_LAUNCH_FAILED", ""));
    assert!(!launch_failed(
        "REASON_COMMAND_EXECUTOR_FAILED",
        "Command exited with status 1"
    ));
}

#[test]
fn volumes_are_binds_of_host_paths_or_anonymous_sandbox_directories() {
    let ok: [(Value, Vec<VolumeSpec>); 4] = [
        (
            json!({"Image": "x", "HostConfig": {"Binds": ["/srv/data:/data:ro", "/srv/logs:/logs"]}}),
            vec![
                VolumeSpec {
                    host_path: "/srv/data".into(),
                    container_path: "/data".into(),
                    read_only: true,
                    anonymous: false,
                    name: String::new(),
                },
                VolumeSpec {
                    host_path: "/srv/logs".into(),
                    container_path: "/logs".into(),
                    read_only: false,
                    anonymous: false,
                    name: String::new(),
                },
            ],
        ),
        (
            json!({"Image": "x", "Volumes": {"/cache": {}}}),
            vec![VolumeSpec {
                host_path: "volumes/0".into(),
                container_path: "/cache".into(),
                read_only: false,
                anonymous: true,
                name: String::new(),
            }],
        ),
        (json!({"Image": "x", "HostConfig": {"Binds": []}}), vec![]),
        (
            json!({"Image": "x", "HostConfig": {"Binds": ["data:/data:ro"]}}),
            vec![VolumeSpec {
                name: "data".into(),
                container_path: "/data".into(),
                read_only: true,
                ..VolumeSpec::default()
            }],
        ),
    ];
    for (b, want) in ok {
        assert_eq!(spec_of(b.clone()).volumes, want, "{b}");
    }
    let refused: [(Value, &str); 7] = [
        (
            json!({"Image": "x", "HostConfig": {"Binds": ["d/x:/data"]}}),
            "a volume name must match",
        ),
        (
            json!({"Image": "x", "HostConfig": {"Binds": ["/srv:data"]}}),
            "destination must be an absolute path",
        ),
        (
            json!({"Image": "x", "HostConfig": {"Binds": ["/srv/../etc:/x"]}}),
            "may not contain '..'",
        ),
        (
            json!({"Image": "x", "HostConfig": {"Binds": ["/srv:/x:z"]}}),
            "mount option \"z\"",
        ),
        (
            json!({"Image": "x", "HostConfig": {"Binds": ["/a:/x", "/b:/x"]}}),
            "Duplicate mount point: /x",
        ),
        (
            json!({"Image": "x", "HostConfig": {"Binds": ["/a"]}}),
            "expected source:destination",
        ),
        (
            json!({"Image": "x", "HostConfig": {"Mounts": [{"Type": "bind"}]}}),
            "--mount",
        ),
    ];
    for (b, needle) in refused {
        let err = spec(&body(b.clone()), DEFAULTS).expect_err(&b.to_string());
        assert!(err.0.contains(needle), "{b}: {err}");
    }
}

#[test]
fn host_paths_are_judged_by_the_container_policy_and_reach_the_task() {
    let s = spec_of(json!({"Image": "x", "Volumes": {"/cache": {}},
        "HostConfig": {"Binds": ["/srv/data/app:/data:ro", "db:/db"]}}));
    let none = capstan_types::ContainerPolicy::default();
    let err = check_volumes(&s, &none).unwrap_err();
    assert!(
        err.0.contains("/srv/data/app:/data") && err.0.contains("allowed_host_paths"),
        "{err}"
    );
    let allowed = capstan_types::ContainerPolicy {
        allow_privileged: false,
        allowed_host_paths: vec!["/srv/data".into()],
    };
    assert!(check_volumes(&s, &allowed).is_ok());
    // Anonymous volumes are sandbox directories: always allowed.
    assert!(
        check_volumes(
            &spec_of(json!({"Image": "x", "Volumes": {"/c": {}}})),
            &none
        )
        .is_ok()
    );

    let m = fit(&s, &offer()).unwrap();
    let id = "a".repeat(64);
    let t = task_info(&id, "web", &s, &task_id(&id, 1), &offer(), &m);
    let info: capstan_proto::mesos::v1::TaskInfo = capstan_proto::from_json(&t).unwrap();
    let vols = &info.container.as_ref().unwrap().volumes;
    let got: Vec<(String, Option<String>, i32)> = vols
        .iter()
        .map(|v| (v.container_path.clone(), v.host_path.clone(), v.mode))
        .collect();
    assert_eq!(
        got,
        [
            ("/data".to_owned(), Some("/srv/data/app".to_owned()), 2),
            ("/db".to_owned(), None, 1),
            ("/cache".to_owned(), Some("volumes/0".to_owned()), 1),
        ]
    );
    // A named volume: the agent engine's `swarm.<name>`, local driver; no policy check.
    let source = vols[1].source.as_ref().unwrap();
    let dv = source.docker_volume.as_ref().unwrap();
    assert_eq!(
        (dv.name.as_str(), dv.driver.as_deref()),
        ("swarm.db", Some("local"))
    );
}
