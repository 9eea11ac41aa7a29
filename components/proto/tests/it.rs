//! Integration tests: Mesos wire examples through JSON, protobuf and RecordIO.

use bytes::Bytes;
use capstan_proto::mesos::v1::{
    self, Filters, TaskInfo, TaskState, container_info, health_check, offer, task_status,
};
use capstan_proto::mesos::v1::{executor, master, scheduler};
use capstan_proto::recordio::{self, RecordIoDecoder};
use capstan_proto::{ContentType, JsonError, from_json, from_json_slice, to_json};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Asserts that every key of `expected` is in `actual` with an equal value (numbers compared
/// numerically, arrays element by element), so Mesos-added defaults in `actual` are allowed.
/// An empty array in `expected` must be absent from `actual` (empty repeated fields are omitted).
fn assert_subset(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                if value.as_array().is_some_and(Vec::is_empty) {
                    assert!(a.get(key).is_none(), "{path}.{key}: empty list emitted");
                    continue;
                }
                let Some(got) = a.get(key) else {
                    panic!("{path}.{key} missing in {actual}");
                };
                assert_subset(value, got, &format!("{path}.{key}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{path}: array length of {actual}");
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                assert_subset(ev, av, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(e), Value::Number(a)) => {
            assert_eq!(e.as_f64(), a.as_f64(), "{path}");
        }
        _ => assert_eq!(expected, actual, "{path}"),
    }
}

/// JSON -> message -> protobuf -> message -> JSON, asserting nothing is lost on the way.
fn round_trip<M>(input: &Value) -> (M, Value)
where
    M: prost::Message + prost::Name + Default + PartialEq + std::fmt::Debug,
{
    let msg: M = from_json(input).unwrap_or_else(|e| panic!("parse {input}: {e}"));
    let bytes = capstan_proto::encode(&msg);
    let back: M = capstan_proto::decode(&bytes).expect("protobuf decode");
    assert_eq!(back, msg);
    let output = to_json(&back);
    assert_subset(input, &output, "$");
    // Re-parsing our own output makes defaults explicit, so compare as JSON.
    let again: M = from_json(&output).expect("re-parse own output");
    assert_eq!(to_json(&again), output);
    (msg, output)
}

fn master_info_json() -> Value {
    json!({
        "id": "M", "ip": 16_777_343, "port": 5050, "pid": "master@127.0.0.1:5050",
        "hostname": "m1", "version": "1.11.0",
        "address": {"hostname": "m1", "ip": "127.0.0.1", "port": 5050},
        "capabilities": [{"type": "AGENT_UPDATE"}]
    })
}

fn offer_json() -> Value {
    json!({
        "id": {"value": "M-O7"}, "framework_id": {"value": "M-0000"},
        "agent_id": {"value": "M-S0"}, "hostname": "a1",
        "url": {"scheme": "http", "address": {"hostname": "a1", "ip": "10.0.0.2", "port": 5051},
                "path": "/slave(1)"},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}, "role": "*",
             "allocation_info": {"role": "*"}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 32000}]},
             "allocation_info": {"role": "*"}},
            {"name": "x", "type": "SET", "set": {"item": ["a", "b"]}}
        ],
        "attributes": [{"name": "rack", "type": "TEXT", "text": {"value": "r1"}}],
        "allocation_info": {"role": "*"}
    })
}

fn task_status_json() -> Value {
    json!({
        "task_id": {"value": "t1"}, "state": "TASK_RUNNING", "agent_id": {"value": "M-S0"},
        "executor_id": {"value": "t1"}, "timestamp": 1_700_000_000.25,
        "source": "SOURCE_EXECUTOR", "reason": "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
        "uuid": "ASNFZ4mrze8BI0VniavN7w==", "healthy": true, "message": "ok",
        "container_status": {"container_id": {"value": "c1"},
            "network_infos": [{"ip_addresses": [{"protocol": "IPv4", "ip_address": "10.0.0.5"}]}]},
        "labels": {"labels": [{"key": "k", "value": "v"}]}
    })
}

fn task_info_json() -> Value {
    json!({
        "name": "t1", "task_id": {"value": "t1"}, "agent_id": {"value": "M-S0"},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
        "command": {"value": "sleep 10", "shell": true,
                    "environment": {"variables": [{"name": "A", "value": "1"}]},
                    "uris": [{"value": "http://x/y.tgz", "extract": true}]},
        "container": {"type": "DOCKER", "docker": {"image": "nginx", "network": "BRIDGE",
                      "port_mappings": [{"host_port": 31000, "container_port": 80, "protocol": "tcp"}],
                      "privileged": false, "force_pull_image": false,
                      "parameters": [{"key": "label", "value": "x=y"}]},
                      "volumes": [{"container_path": "/data", "host_path": "/srv", "mode": "RW"}]},
        "health_check": {"type": "HTTP", "http": {"port": 80, "path": "/"}, "interval_seconds": 10},
        "discovery": {"visibility": "FRAMEWORK", "name": "web",
                      "ports": {"ports": [{"number": 31000, "name": "http", "protocol": "tcp"}]}},
        "labels": {"labels": [{"key": "k", "value": "v"}]}
    })
}

fn accept_json() -> Value {
    json!({
        "framework_id": {"value": "M-0000"}, "type": "ACCEPT",
        "accept": {"offer_ids": [{"value": "M-O7"}],
                   "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task_info_json()]}}],
                   "filters": {"refuse_seconds": 5}}
    })
}

#[test]
fn scheduler_event_wire_examples_parse_and_reserialise() {
    let examples = [
        json!({"type": "SUBSCRIBED", "subscribed": {"framework_id": {"value": "M-0000"},
               "heartbeat_interval_seconds": 15, "master_info": master_info_json()}}),
        json!({"type": "OFFERS", "offers": {"offers": [offer_json()]}}),
        json!({"type": "RESCIND", "rescind": {"offer_id": {"value": "M-O7"}}}),
        json!({"type": "UPDATE", "update": {"status": task_status_json()}}),
        json!({"type": "MESSAGE", "message": {"agent_id": {"value": "M-S1"},
               "executor_id": {"value": "e"}, "data": "aGVsbG8="}}),
        json!({"type": "FAILURE", "failure": {"agent_id": {"value": "M-S1"},
               "executor_id": {"value": "e"}, "status": 1}}),
        json!({"type": "ERROR", "error": {"message": "Framework has been removed"}}),
        json!({"type": "HEARTBEAT"}),
    ];
    for example in &examples {
        round_trip::<scheduler::Event>(example);
    }

    let (event, out) = round_trip::<scheduler::Event>(&examples[0]);
    assert_eq!(event.r#type(), scheduler::event::Type::Subscribed);
    let subscribed = event.subscribed.expect("subscribed payload");
    assert_eq!(subscribed.framework_id.value, "M-0000");
    assert_eq!(subscribed.master_info.as_ref().map(|m| m.port), Some(5050));
    assert_eq!(out["subscribed"]["heartbeat_interval_seconds"], json!(15.0));

    let (event, _) = round_trip::<scheduler::Event>(&examples[3]);
    let status = event.update.expect("update payload").status;
    assert_eq!(status.state(), TaskState::TaskRunning);
    assert_eq!(status.source(), task_status::Source::Executor);
    assert_eq!(
        status.uuid.as_deref(),
        Some(
            &[
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ][..]
        )
    );
}

#[test]
fn required_field_with_default_must_still_be_present_in_json() {
    // As in Mesos (protobuf IsInitialized), a default does not satisfy `required`.
    let input = json!({"type": "SUBSCRIBED", "subscribed": {"framework_id": {"value": "F"},
                       "master_info": {"id": "M", "ip": 1}}});
    let err = from_json::<scheduler::Event>(&input).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Missing required fields: subscribed.master_info.port"
    );
}

#[test]
fn task_info_example_parses_with_mesos_defaults() {
    let (task, out) = round_trip::<TaskInfo>(&task_info_json());
    assert_eq!(task.name, "t1");
    assert_eq!(task.task_id.value, "t1");
    let command = task.command.as_ref().expect("command");
    assert!(command.shell());
    assert_eq!(command.value.as_deref(), Some("sleep 10"));
    let container = task.container.as_ref().expect("container");
    assert_eq!(container.r#type(), container_info::Type::Docker);
    let docker = container.docker.as_ref().expect("docker");
    assert_eq!(
        docker.network(),
        container_info::docker_info::Network::Bridge
    );
    assert_eq!(docker.port_mappings[0].host_port, 31000);
    let health = task.health_check.as_ref().expect("health check");
    assert_eq!(health.r#type(), health_check::Type::Http);

    // Defaults Mesos adds when it renders the task back.
    assert_eq!(out["command"]["uris"][0]["extract"], json!(true));
    assert_eq!(out["container"]["volumes"][0]["mode"], json!("RW"));
    assert_eq!(out["health_check"]["delay_seconds"], json!(15.0));
    assert_eq!(out["health_check"]["timeout_seconds"], json!(20.0));
    assert_eq!(out["health_check"]["grace_period_seconds"], json!(10.0));
    assert_eq!(out["health_check"]["consecutive_failures"], json!(3));
    assert_eq!(out["health_check"]["http"]["protocol"], json!("IPv4"));
    assert_eq!(
        out["command"]["environment"]["variables"][0]["type"],
        json!("VALUE")
    );
    // Empty repeated fields stay out; unset fields without defaults stay out.
    assert!(out["command"].get("arguments").is_none());
    assert!(out.get("executor").is_none());
    assert!(out.get("data").is_none());
}

#[test]
fn accept_call_example_parses_and_keeps_shell_default() {
    let (call, out) = round_trip::<scheduler::Call>(&accept_json());
    assert_eq!(call.r#type(), scheduler::call::Type::Accept);
    let accept = call.accept.as_ref().expect("accept");
    assert_eq!(accept.offer_ids[0].value, "M-O7");
    assert_eq!(
        accept.operations[0].r#type(),
        offer::operation::Type::Launch
    );
    assert_eq!(
        accept.filters.as_ref().and_then(|f| f.refuse_seconds),
        Some(5.0)
    );
    let launch = accept.operations[0].launch.as_ref().expect("launch");
    assert_eq!(launch.task_infos.len(), 1);
    assert_eq!(
        out["accept"]["operations"][0]["launch"]["task_infos"][0]["command"]["shell"],
        json!(true)
    );
}

#[test]
fn command_shell_default_is_emitted_when_the_client_omits_it() {
    let mut task = task_info_json();
    task["command"].as_object_mut().map(|c| c.remove("shell"));
    let parsed: TaskInfo = from_json(&task).expect("parse");
    assert_eq!(parsed.command.as_ref().and_then(|c| c.shell), None);
    assert_eq!(to_json(&parsed)["command"]["shell"], json!(true));
}

#[test]
fn empty_filters_serialise_with_the_default_refusal() {
    assert_eq!(to_json(&Filters::default()), json!({"refuse_seconds": 5.0}));
    assert_eq!(
        capstan_proto::to_json_string(&Filters::default()),
        r#"{"refuse_seconds":5.0}"#
    );
}

#[test]
fn missing_required_field_deep_in_an_accept_names_its_path() {
    let mut call = accept_json();
    let second = json!({"name": "t2", "agent_id": {"value": "M-S0"}});
    call["accept"]["operations"][0]["launch"]["task_infos"]
        .as_array_mut()
        .expect("task_infos array")
        .push(second);
    let err = from_json::<scheduler::Call>(&call).unwrap_err();
    let JsonError::MissingRequired { fields } = &err else {
        panic!("unexpected error {err}");
    };
    assert_eq!(
        fields,
        &["accept.operations[0].launch.task_infos[1].task_id"]
    );
    assert_eq!(
        err.to_string(),
        "Missing required fields: accept.operations[0].launch.task_infos[1].task_id"
    );
}

#[test]
fn unknown_keys_are_ignored_and_numeric_strings_accepted() {
    let call = json!({
        "type": "DECLINE", "framework_id": {"value": "F", "extra": 1}, "future_field": [1, 2],
        "decline": {"offer_ids": [{"value": "O1"}], "filters": {"refuse_seconds": "30"}}
    });
    let parsed: scheduler::Call = from_json(&call).expect("parse");
    assert_eq!(
        parsed.framework_id.as_ref().map(|f| f.value.as_str()),
        Some("F")
    );
    assert_eq!(
        parsed
            .decline
            .and_then(|d| d.filters)
            .and_then(|f| f.refuse_seconds),
        Some(30.0)
    );
}

#[test]
fn invalid_values_report_the_field_path() {
    let mut call = accept_json();
    call["accept"]["operations"][0]["launch"]["task_infos"][0]["resources"][1]["scalar"]["value"] =
        json!("lots");
    let err = from_json::<scheduler::Call>(&call).unwrap_err();
    assert_eq!(
        err.to_string(),
        "accept.operations[0].launch.task_infos[0].resources[1].scalar.value: \
         expected a number, got string \"lots\""
    );
    let err = from_json_slice::<scheduler::Call>(b"{not json").unwrap_err();
    assert!(matches!(err, JsonError::Syntax(_)));
}

#[test]
fn acknowledge_uuid_is_base64_in_json_and_raw_in_protobuf() {
    let call = json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "F"},
        "acknowledge": {"agent_id": {"value": "A"}, "task_id": {"value": "t"},
                        "uuid": "ASNFZ4mrze8BI0VniavN7w=="}});
    let (parsed, out) = round_trip::<scheduler::Call>(&call);
    let ack = parsed.acknowledge.expect("acknowledge");
    assert_eq!(ack.uuid.len(), 16);
    assert_eq!(
        out["acknowledge"]["uuid"],
        json!("ASNFZ4mrze8BI0VniavN7w==")
    );
}

#[test]
fn scheduler_call_and_event_survive_protobuf_round_trips() {
    let call = scheduler::Call {
        framework_id: Some(v1::FrameworkId { value: "F".into() }),
        r#type: Some(scheduler::call::Type::Subscribe as i32),
        subscribe: Some(scheduler::call::Subscribe {
            framework_info: v1::FrameworkInfo {
                user: "root".into(),
                name: "fw".into(),
                failover_timeout: Some(100.0),
                roles: vec!["*".into()],
                capabilities: vec![v1::framework_info::Capability {
                    r#type: Some(v1::framework_info::capability::Type::MultiRole as i32),
                }],
                ..Default::default()
            },
            suppressed_roles: vec![],
        }),
        ..Default::default()
    };
    let bytes = ContentType::Protobuf.encode(&call);
    let back: scheduler::Call = ContentType::Protobuf.decode(&bytes).expect("decode");
    assert_eq!(back, call);
    let bytes = ContentType::Json.encode(&call);
    let back: scheduler::Call = ContentType::Json.decode(&bytes).expect("decode");
    assert_eq!(to_json(&back), to_json(&call));
    let json = to_json(&call);
    assert_eq!(
        json["subscribe"]["framework_info"]["checkpoint"],
        json!(false)
    );
    assert!(json["subscribe"]["framework_info"].get("role").is_none());

    let event: scheduler::Event = from_json(&json!({"type": "OFFERS",
        "offers": {"offers": [offer_json()]}}))
    .expect("parse");
    let bytes = capstan_proto::encode(&event);
    let back: scheduler::Event = capstan_proto::decode(&bytes).expect("decode");
    assert_eq!(back, event);
    assert_eq!(back.offers.expect("offers").offers[0].resources.len(), 3);
}

#[test]
fn content_type_matching_is_exact() {
    assert_eq!(
        ContentType::from_header("application/json"),
        Some(ContentType::Json)
    );
    assert_eq!(
        ContentType::from_header("application/x-protobuf"),
        Some(ContentType::Protobuf)
    );
    assert_eq!(
        ContentType::from_header("application/json; charset=utf-8"),
        None
    );
    assert_eq!(ContentType::from_header("Application/JSON"), None);
}

#[test]
fn executor_wire_examples_round_trip() {
    let examples = [
        json!({"type": "SUBSCRIBED", "subscribed": {
            "executor_info": {"executor_id": {"value": "e1"}, "framework_id": {"value": "F"},
                              "command": {"value": "python exec.py", "shell": true}},
            "framework_info": {"id": {"value": "F"}, "user": "root", "name": "fw"},
            "agent_info": {"hostname": "a1", "port": 5051, "id": {"value": "M-S0"}},
            "container_id": {"value": "c1"}}}),
        json!({"type": "LAUNCH", "launch": {"task": task_info_json()}}),
        json!({"type": "LAUNCH_GROUP", "launch_group": {"task_group": {"tasks": [task_info_json()]}}}),
        json!({"type": "KILL", "kill": {"task_id": {"value": "t"},
               "kill_policy": {"grace_period": {"nanoseconds": 3_000_000_000_i64}}}}),
        json!({"type": "ACKNOWLEDGED", "acknowledged": {"task_id": {"value": "t"},
               "uuid": "ASNFZ4mrze8BI0VniavN7w=="}}),
        json!({"type": "MESSAGE", "message": {"data": "aGk="}}),
        json!({"type": "ERROR", "error": {"message": "boom"}}),
        json!({"type": "SHUTDOWN"}),
        json!({"type": "HEARTBEAT"}),
    ];
    for example in &examples {
        round_trip::<executor::Event>(example);
    }
    let (event, out) = round_trip::<executor::Event>(&examples[0]);
    let subscribed = event.subscribed.expect("subscribed");
    assert_eq!(subscribed.agent_info.port(), 5051);
    // Exact ID objects matter to pymesos' executor, which compares them as dicts.
    assert_eq!(
        out["subscribed"]["executor_info"]["executor_id"],
        json!({"value": "e1"})
    );
    assert_eq!(
        out["subscribed"]["framework_info"]["failover_timeout"],
        json!(0.0)
    );

    let update = json!({"type": "UPDATE", "executor_id": {"value": "e1"},
        "framework_id": {"value": "F"}, "update": {"status": {"task_id": {"value": "t"},
        "state": "TASK_FINISHED", "timestamp": 1_700_000_000, "uuid": "ASNFZ4mrze8BI0VniavN7w==",
        "source": "SOURCE_EXECUTOR"}}});
    round_trip::<executor::Call>(&update);
    let err = from_json::<executor::Call>(&json!({"type": "HEARTBEAT"})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Missing required fields: executor_id, framework_id"
    );
}

#[test]
fn operator_calls_responses_and_events_round_trip() {
    let drain = json!({"type": "DRAIN_AGENT", "drain_agent": {"agent_id": {"value": "M-S0"},
                       "max_grace_period": {"seconds": 10, "nanos": 5}}});
    let (call, out) = round_trip::<master::Call>(&drain);
    let drain_agent = call.drain_agent.expect("drain_agent");
    assert_eq!(drain_agent.max_grace_period.map(|d| d.seconds), Some(10));
    assert_eq!(out["drain_agent"]["mark_gone"], json!(false));
    round_trip::<master::Call>(&json!({"type": "GET_STATE"}));
    round_trip::<master::Call>(
        &json!({"type": "TEARDOWN", "teardown": {"framework_id": {"value": "F"}}}),
    );
    round_trip::<master::Call>(
        &json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "S"}}}),
    );

    let task = json!({"name": "web", "task_id": {"value": "t1"}, "framework_id": {"value": "F"},
        "agent_id": {"value": "M-S0"}, "state": "TASK_RUNNING",
        "resources": [{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31005, "end": 31005}]}}],
        "statuses": [task_status_json()], "discovery": {"visibility": "FRAMEWORK", "name": "web"},
        "container": {"type": "DOCKER", "docker": {"image": "nginx", "network": "BRIDGE",
            "port_mappings": [{"host_port": 31005, "container_port": 80, "protocol": "tcp"}]}},
        "limits": {"cpus": {"value": 1.0}}});
    let agent = json!({"agent_info": {"hostname": "a1", "id": {"value": "M-S0"}, "port": 5051},
        "active": true, "version": "1.11.0", "pid": "slave(1)@10.0.0.2:5051",
        "registered_time": {"nanoseconds": 1_600_000_000_000_000_000_i64},
        "capabilities": [{"type": "MULTI_ROLE"}]});
    let framework = json!({"framework_info": {"user": "root", "name": "marathon", "id": {"value": "F"}},
        "active": true, "connected": true, "recovered": false});
    let state = json!({
        "get_tasks": {"tasks": [task.clone()]},
        "get_executors": {"executors": [{"executor_info": {"executor_id": {"value": "e"}},
                                         "agent_id": {"value": "M-S0"}}]},
        "get_frameworks": {"frameworks": [framework.clone()]},
        "get_agents": {"agents": [agent.clone()], "recovered_agents": []},
    });
    let responses = [
        json!({"type": "GET_HEALTH", "get_health": {"healthy": true}}),
        json!({"type": "GET_VERSION", "get_version": {"version_info": {"version": "1.11.0",
               "build_time": 1_600_000_000.0, "git_sha": "abc"}}}),
        json!({"type": "GET_STATE", "get_state": state}),
        json!({"type": "GET_MASTER", "get_master": {"master_info": master_info_json(),
               "start_time": 1.5, "elected_time": 2.5}}),
    ];
    for response in &responses {
        round_trip::<master::Response>(response);
    }
    let (response, out) = round_trip::<master::Response>(&responses[2]);
    assert_eq!(response.r#type(), master::response::Type::GetState);
    assert!(
        out["get_state"]["get_agents"]
            .get("recovered_agents")
            .is_none()
    );

    let events = [
        json!({"type": "SUBSCRIBED", "subscribed": {"get_state": state,
               "heartbeat_interval_seconds": 15}}),
        json!({"type": "TASK_ADDED", "task_added": {"task": task}}),
        json!({"type": "TASK_UPDATED", "task_updated": {"framework_id": {"value": "F"},
               "status": task_status_json(), "state": "TASK_RUNNING"}}),
        json!({"type": "AGENT_ADDED", "agent_added": {"agent": agent}}),
        json!({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": "M-S0"}}}),
        json!({"type": "FRAMEWORK_ADDED", "framework_added": {"framework": framework.clone()}}),
        json!({"type": "FRAMEWORK_UPDATED", "framework_updated": {"framework": framework}}),
        json!({"type": "FRAMEWORK_REMOVED", "framework_removed": {"framework_info":
               {"user": "root", "name": "marathon", "id": {"value": "F"}}}}),
        json!({"type": "HEARTBEAT"}),
    ];
    for event in &events {
        round_trip::<master::Event>(event);
    }
}

#[test]
fn descriptor_pool_describes_every_generated_package() {
    let pool = capstan_proto::descriptor_pool();
    for name in [
        "mesos.v1.TaskInfo",
        "mesos.v1.scheduler.Call",
        "mesos.v1.scheduler.Event",
        "mesos.v1.executor.Call",
        "mesos.v1.executor.Event",
        "mesos.v1.master.Call",
        "mesos.v1.master.Response",
        "mesos.v1.master.Event",
        "google.protobuf.Duration",
    ] {
        assert!(pool.get_message_by_name(name).is_some(), "{name} missing");
    }
}

#[test]
fn event_stream_of_json_records_decodes_in_order() {
    let events = [
        json!({"type": "SUBSCRIBED", "subscribed": {"framework_id": {"value": "F"},
               "heartbeat_interval_seconds": 15}}),
        json!({"type": "HEARTBEAT"}),
        json!({"type": "RESCIND", "rescind": {"offer_id": {"value": "O"}}}),
    ];
    let mut wire = Vec::new();
    for event in &events {
        let msg: scheduler::Event = from_json(event).expect("parse");
        recordio::encode(&capstan_proto::to_json_vec(&msg), &mut wire);
    }
    assert!(String::from_utf8_lossy(&wire).contains("20\n{\"type\":\"HEARTBEAT\"}"));
    let mut decoder = RecordIoDecoder::new(1 << 20);
    let mut got = Vec::new();
    for byte in &wire {
        decoder.push(std::slice::from_ref(byte));
        while let Some(record) = decoder.next_record().expect("valid stream") {
            got.push(from_json_slice::<scheduler::Event>(&record).expect("record parses"));
        }
    }
    let types: Vec<_> = got.iter().map(scheduler::Event::r#type).collect();
    assert_eq!(
        types,
        [
            scheduler::event::Type::Subscribed,
            scheduler::event::Type::Heartbeat,
            scheduler::event::Type::Rescind
        ]
    );
}

fn decode_chunked(
    wire: &[u8],
    cuts: &[usize],
    max: usize,
) -> Result<Vec<Bytes>, recordio::RecordIoError> {
    let mut decoder = RecordIoDecoder::new(max);
    let mut out = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.sort_unstable();
    points.push(wire.len());
    for end in points {
        decoder.push(&wire[start..end]);
        start = end;
        while let Some(record) = decoder.next_record()? {
            out.push(record);
        }
    }
    Ok(out)
}

proptest! {
    #[test]
    fn recordio_decoding_is_independent_of_chunking(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut wire = Vec::new();
        for record in &records {
            recordio::encode(record, &mut wire);
        }
        let decoded = decode_chunked(&wire, &cuts, 300).expect("valid stream");
        let decoded: Vec<Vec<u8>> = decoded.iter().map(|b| b.to_vec()).collect();
        prop_assert_eq!(decoded, records);
    }

    #[test]
    fn recordio_decoder_never_panics_on_garbage(
        wire in prop::collection::vec(any::<u8>(), 0..200),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        // Either records or an error; bounded by the maximum, never a panic.
        if let Ok(records) = decode_chunked(&wire, &cuts, 64) {
            prop_assert!(records.iter().all(|r| !r.is_empty() && r.len() <= 64));
        }
    }

    #[test]
    fn json_parser_never_panics_on_odd_shapes(
        key in prop::sample::select(vec!["type", "accept", "decline", "framework_id", "kill", "subscribe"]),
        value in prop_oneof![
            Just(json!(null)), Just(json!(1.5)), Just(json!(-1)), Just(json!("x")),
            Just(json!([])), Just(json!({})), Just(json!([{"value": 1}])), Just(json!({"offer_ids": {}})),
            Just(json!(18_446_744_073_709_551_615_u64)), Just(json!("1e400")),
        ],
    ) {
        let _ = from_json::<scheduler::Call>(&json!({ key: value }));
    }
}
