//! SUBSCRIBE: new frameworks, re-subscription with the same id, rejected calls, and
//! failover within and past `failover_timeout`.

use super::*;

#[test]
fn a_new_framework_gets_the_first_framework_id_and_is_registered() {
    let mut h = Harness::new();
    let mut ops = h.operator_stream();
    ops.take("SUBSCRIBED");
    let call = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info("f", &[], 0.0)}});
    let now = h.now();
    let (stream_id, rx) = h
        .core
        .scheduler_subscribe(
            &decode(&call).expect("well-formed").call,
            Encoding::Json,
            now,
        )
        .expect("accepted");
    // Uuid 1 is the master id, uuid 2 the first stream id.
    assert_eq!(stream_id, uuid_str(2));
    let mut events = Stream::new(rx);
    let ev = events.drain();
    assert_eq!(ev.len(), 1, "only SUBSCRIBED: {ev:?}");
    assert_eq!(ev[0]["type"], "SUBSCRIBED");
    assert_eq!(
        ev[0]["subscribed"]["framework_id"]["value"],
        framework_id(0)
    );
    assert_eq!(ev[0]["subscribed"]["heartbeat_interval_seconds"], 15.0);
    assert_eq!(ev[0]["subscribed"]["master_info"]["id"], MASTER);
    assert!(
        matches!(&h.ops()[..], [RegistryOp::FrameworkAdded { id, info }]
            if *id == framework_id(0).as_str() && info["id"]["value"] == framework_id(0)),
        "{:?}",
        h.ops()
    );
    let added = ops.take("FRAMEWORK_ADDED");
    assert_eq!(added.len(), 1);
    assert_eq!(
        added[0]["framework_added"]["framework"]["framework_info"]["id"]["value"],
        framework_id(0)
    );
    assert!(
        h.core.take_allocation_request(),
        "a subscription asks for offers"
    );
}

#[test]
fn frameworks_get_ids_in_subscription_order() {
    let mut h = Harness::new();
    let ids: Vec<String> = (0..3)
        .map(|i| h.subscribe(framework_info(&format!("f{i}"), &[], 0.0)).id)
        .collect();
    assert_eq!(ids, vec![framework_id(0), framework_id(1), framework_id(2)]);
}

#[test]
fn subscribe_calls_missing_required_fields_are_rejected_with_400() {
    let table = [
        (
            json!({"type": "SUBSCRIBE"}),
            "Expecting 'subscribe' to be present",
        ),
        (
            json!({"type": "SUBSCRIBE", "subscribe": {}}),
            "Expecting 'framework_info' to be present",
        ),
        (
            json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"name": "f"}}}),
            "Missing required fields: framework_info.user",
        ),
        (
            json!({"type": "SUBSCRIBE", "framework_id": {"value": "a"},
                "subscribe": {"framework_info": {"user": "u", "name": "f", "id": {"value": "b"}}}}),
            "'framework_id' differs from 'subscribe.framework_info.id'",
        ),
        (
            json!({"type": "SUBSCRIBE",
                "subscribe": {"framework_info": {"user": "u", "name": "f", "failover_timeout": -1}}}),
            "failover_timeout must be a non-negative number",
        ),
    ];
    for (call, why) in table {
        let mut h = Harness::new();
        let Err(e) = h.subscribe_call(&call) else {
            panic!("{call} was accepted");
        };
        assert_eq!(e.status, 400, "{call}");
        assert!(e.message.contains(why), "{call}: {}", e.message);
        assert!(h.ops().is_empty(), "a rejected call changes nothing stored");
    }
}

#[test]
fn resubscribing_with_the_same_id_keeps_the_id_and_replaces_the_stream() {
    let mut h = Harness::new();
    let mut first = h.subscribe(framework_info("f", &[], 60.0));
    let mut info = framework_info("f", &[], 60.0);
    info["id"] = json!({"value": first.id});
    let second = h.subscribe(info);
    assert_eq!(second.id, first.id);
    assert_eq!(first.stream_id, uuid_str(2));
    assert_eq!(second.stream_id, uuid_str(3));
    assert!(first.events.is_closed(), "the old stream is closed");
    // Calls on the old stream id are refused; the new one works.
    let old = Sched {
        id: first.id.clone(),
        stream_id: first.stream_id.clone(),
        events: Stream::new(mpsc::channel(1).1),
    };
    let e = h
        .call(&old, json!({"type": "REVIVE"}))
        .expect_err("old stream id refused");
    assert_eq!(e.status, 400);
    assert!(
        e.message.contains("didn't match the stream ID"),
        "{}",
        e.message
    );
    h.call_ok(&second, json!({"type": "REVIVE"}));
    assert_eq!(
        h.core.state_json()["frameworks"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn scheduler_calls_without_a_valid_subscription_are_rejected() {
    let mut h = Harness::new();
    let s = h.subscribe(framework_info("f", &[], 60.0));
    let now = h.now();
    let fid = json!({"value": s.id});
    let table: [(Value, Option<&str>, u16, &str); 4] = [
        (
            json!({"type": "REVIVE", "framework_id": {"value": "nope"}}),
            Some(&s.stream_id),
            400,
            "Framework cannot be found",
        ),
        (
            json!({"type": "REVIVE", "framework_id": fid}),
            None,
            400,
            "'Mesos-Stream-Id' header",
        ),
        (
            json!({"type": "REVIVE"}),
            Some(&s.stream_id),
            400,
            "Expecting 'framework_id' to be present",
        ),
        (
            json!({"type": "KILL", "framework_id": fid, "kill": {}}),
            Some(&s.stream_id),
            400,
            "Expecting 'kill.task_id' to be present",
        ),
    ];
    for (call, sid, status, why) in table {
        let e = decode(&call)
            .and_then(|c| h.core.scheduler_call(&c, sid, now))
            .expect_err("rejected");
        assert_eq!(
            (e.status, e.message.contains(why)),
            (status, true),
            "{call}: {e:?}"
        );
    }
}

#[test]
fn a_framework_that_fails_over_within_its_timeout_keeps_its_tasks() {
    // The agent never answers pings here: keep it reachable for the whole test.
    let mut h = Harness::with_config(Config {
        agent_timeout: Duration::from_secs(3600),
        ..config()
    });
    let (s, mut agent) = running_task(&mut h, framework_info("f", &[], 10.0), "t1");
    let fid = s.id.clone();
    drop(s); // the scheduler's connection breaks
    h.advance(Duration::from_secs(1)); // the tick that notices the broken stream
    h.advance(Duration::from_millis(9999)); // 9.999 s after the disconnect
    assert_eq!(
        h.task_state(&fid, "t1"),
        Some(("TASK_STAGING".into(), "tasks"))
    );
    let mut info = framework_info("f", &[], 10.0);
    info["id"] = json!({"value": fid});
    let mut s = h.subscribe(info);
    assert_eq!(s.id, fid);
    h.advance(Duration::from_secs(60));
    assert!(agent.events.take("SHUTDOWN_FRAMEWORK").is_empty());
    assert_eq!(
        h.task_state(&fid, "t1"),
        Some(("TASK_STAGING".into(), "tasks"))
    );
    h.call_ok(&s, json!({"type": "RECONCILE", "reconcile": {"tasks": []}}));
    let st = updates(&mut s);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["task_id"]["value"], "t1");
    assert_eq!(st[0]["state"], "TASK_STAGING");
}

#[test]
fn a_framework_not_back_within_its_failover_timeout_is_removed_and_its_tasks_killed() {
    // failover_timeout (s) → how long after the disconnect the framework is removed.
    for timeout in [0.0, 2.5, 10.0] {
        let mut h = Harness::new();
        let (s, mut agent) = running_task(&mut h, framework_info("f", &[], timeout), "t1");
        let fid = s.id.clone();
        let mut ops = h.operator_stream();
        drop(s);
        h.advance(Duration::from_millis(1)); // the tick that notices the broken stream
        let limit = Duration::from_secs_f64(timeout);
        if !limit.is_zero() {
            h.advance(limit - Duration::from_millis(1));
            assert!(
                agent.events.take("SHUTDOWN_FRAMEWORK").is_empty(),
                "timeout {timeout}: still within the failover timeout"
            );
            h.advance(Duration::from_millis(1));
        }
        let shutdown = agent.events.take("SHUTDOWN_FRAMEWORK");
        assert_eq!(shutdown.len(), 1, "timeout {timeout}");
        assert_eq!(
            shutdown[0]["shutdown_framework"]["framework_id"]["value"],
            fid
        );
        assert_eq!(
            h.task_state(&fid, "t1"),
            Some(("TASK_KILLED".into(), "completed_tasks")),
            "timeout {timeout}"
        );
        assert_eq!(
            h.ops().last(),
            Some(&RegistryOp::FrameworkRemoved {
                id: fid.as_str().into()
            })
        );
        assert_eq!(ops.take("FRAMEWORK_REMOVED").len(), 1);
        // A removed framework cannot come back.
        let mut info = framework_info("f", &[], timeout);
        info["id"] = json!({"value": fid});
        let call = json!({"type": "SUBSCRIBE", "framework_id": {"value": fid},
            "subscribe": {"framework_info": info}});
        let now = h.now();
        let (_, rx) = h
            .core
            .scheduler_subscribe(
                &decode(&call).expect("well-formed").call,
                Encoding::Json,
                now,
            )
            .expect("answered on the stream");
        let ev = Stream::new(rx).drain();
        assert_eq!(ev[0]["type"], "ERROR");
        assert_eq!(ev[0]["error"]["message"], "Framework has been removed");
    }
}

#[test]
fn an_authenticated_framework_belongs_to_its_principal() {
    let mut h = Harness::new();
    let now = h.now();
    let mut call = decode(&json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info("f", &[], 100.0)}}))
        .expect("a well-formed call")
        .call;
    h.core
        .authorize_scheduler_call(&mut call, "alice")
        .expect("a new framework");
    assert_eq!(
        call.subscribe
            .as_ref()
            .and_then(|s| s.framework_info.principal.as_deref()),
        Some("alice")
    );
    h.core
        .scheduler_subscribe(&call, Encoding::Json, now)
        .expect("accepted");
    let id = framework_id(0);
    let mut info = framework_info("f", &[], 100.0);
    info["id"] = json!({"value": id});
    let subscribe = |info: &Value| json!({"type": "SUBSCRIBE", "framework_id": {"value": id}, "subscribe": {"framework_info": info}});
    let kill =
        json!({"type": "KILL", "framework_id": {"value": id}, "kill": {"task_id": {"value": "t"}}});
    let mut naming_alice = info.clone();
    naming_alice["principal"] = json!("alice");
    // (call, caller, expected status: None = allowed)
    let table: Vec<(Value, &str, Option<u16>)> = vec![
        (subscribe(&info), "alice", None),
        (subscribe(&info), "mallory", Some(403)),
        (subscribe(&naming_alice), "mallory", Some(403)),
        (subscribe(&naming_alice), "alice", None),
        (kill.clone(), "alice", None),
        (kill.clone(), "mallory", Some(400)),
        // Another framework's calls are not alice's to judge here: unknown ids pass on to the
        // call, which answers "Framework cannot be found".
        (
            json!({"type": "KILL", "framework_id": {"value": "other"}}),
            "mallory",
            None,
        ),
    ];
    for (json, caller, want) in table {
        let mut call = decode(&json).expect("a well-formed call").call;
        let got = h.core.authorize_scheduler_call(&mut call, caller);
        assert_eq!(
            got.as_ref().err().map(|e| e.status),
            want,
            "{caller}: {json} → {got:?}"
        );
    }
}
