//! Agents: registration order, re-registration, pings, and an agent lost by timeout.

use super::*;

#[test]
fn an_agent_that_stops_answering_loses_its_tasks_by_partition_awareness() {
    for (caps, state) in [
        (&[][..], "TASK_LOST"),
        (&["PARTITION_AWARE"][..], "TASK_UNREACHABLE"),
    ] {
        let mut h = Harness::new();
        let (mut s, mut agent) = running_task(&mut h, framework_info("f", caps, 0.0), "t1");
        let fid = s.id.clone();
        let mut ops = h.operator_stream();
        ops.take("SUBSCRIBED");
        // Pinged every 5 s; unreachable once silent for more than agent_timeout (15 s).
        h.advance(Duration::from_secs(5));
        assert_eq!(agent.events.take("PING").len(), 1);
        h.advance(Duration::from_secs(10));
        assert!(
            updates(&mut s).is_empty(),
            "{state}: exactly the timeout is not past it"
        );
        h.advance(Duration::from_millis(1));
        let ev = s.events.drain();
        let st: Vec<&Value> = ev
            .iter()
            .filter(|e| e["type"] == "UPDATE")
            .map(|e| &e["update"]["status"])
            .collect();
        assert_eq!(st.len(), 1, "{state}");
        assert_eq!(st[0]["task_id"]["value"], "t1");
        assert_eq!(st[0]["state"], state);
        assert_eq!(st[0]["reason"], "REASON_AGENT_DISCONNECTED");
        let failures: Vec<&Value> = ev.iter().filter(|e| e["type"] == "FAILURE").collect();
        assert_eq!(failures.len(), 1, "{state}");
        assert_eq!(failures[0]["failure"]["agent_id"]["value"], agent.id);
        // The master's own record keeps TASK_UNREACHABLE whatever the framework saw.
        assert_eq!(
            h.task_state(&fid, "t1"),
            Some(("TASK_UNREACHABLE".into(), "unreachable_tasks"))
        );
        assert_eq!(h.core.metrics()["master/slaves_unreachable"], 1.0);
        assert_eq!(h.core.metrics()["master/cpus_used"], 0.0);
        assert_eq!(ops.take("AGENT_REMOVED").len(), 1);
        // An unreachable agent must subscribe again.
        let now = h.now();
        let e = h
            .core
            .agent_call(
                &agent_call(&json!({"type": "PONG", "agent_id": {"value": agent.id}})),
                now,
            )
            .expect_err("refused");
        assert_eq!(e.status, 403);
    }
}

#[test]
fn frameworks_hear_of_a_lost_agent_through_a_failure_event() {
    let mut h = Harness::new();
    let agent = h.add_agent("a1", 4.0, 1024.0);
    let mut s = h.subscribe(framework_info("f", &[], 0.0));
    let offer = h.offer(&mut s);
    h.advance(Duration::from_millis(15_001));
    let ev = s.events.drain();
    let types: Vec<&str> = ev
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| *t != "HEARTBEAT")
        .collect();
    let ev: Vec<&Value> = ev.iter().filter(|e| e["type"] != "HEARTBEAT").collect();
    assert_eq!(types, vec!["RESCIND", "FAILURE"], "{ev:?}");
    assert_eq!(ev[0]["rescind"]["offer_id"], offer["id"]);
    assert_eq!(ev[1]["failure"]["agent_id"]["value"], agent.id);
}

#[test]
fn an_agent_that_keeps_answering_pings_stays_reachable() {
    let mut h = Harness::new();
    let (mut s, mut agent) = running_task(&mut h, framework_info("f", &[], 0.0), "t1");
    for _ in 0..12 {
        h.advance(Duration::from_secs(5));
        for _ in agent.events.take("PING") {
            h.pong(&agent);
        }
    }
    assert!(updates(&mut s).is_empty());
    assert_eq!(h.core.metrics()["master/slaves_active"], 1.0);
}

#[test]
fn agents_are_numbered_in_registration_order_and_reregister_with_their_id() {
    let mut h = Harness::new();
    let a = h.add_agent("a1", 1.0, 128.0);
    let b = h.add_agent("a2", 1.0, 128.0);
    assert_eq!(
        (a.id.as_str(), b.id.as_str()),
        (agent_id(0).as_str(), agent_id(1).as_str())
    );
    let call = json!({"type": "SUBSCRIBE", "agent_id": {"value": a.id}, "subscribe": {
        "agent_info": {"hostname": "a1", "resources": [scalar("cpus", 1.0)]}}});
    let now = h.now();
    let mut again = Stream::new(
        h.core
            .agent_subscribe(&agent_call(&call), Encoding::Json, now)
            .expect("re-registered"),
    );
    let sub = again.take("SUBSCRIBED");
    assert_eq!(sub[0]["subscribed"]["agent_id"]["value"], a.id);
    assert_eq!(
        h.core.slaves_json()["slaves"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn a_drained_agent_is_offered_again_once_reactivated() {
    let mut h = Harness::new();
    let agent = h.add_agent("a1", 4.0, 1024.0);
    let mut s = h.subscribe(framework_info("f", &[], 0.0));
    h.offer(&mut s);
    let op = |h: &mut Harness, call: Value| {
        let now = h.now();
        operator_call(&call).and_then(|c| h.core.operator_call(&c, Encoding::Json, now))
    };
    let reactivate = json!({"type": "REACTIVATE_AGENT",
        "reactivate_agent": {"agent_id": {"value": agent.id}}});
    // Only a drained (deactivated) agent can be reactivated.
    let err = op(&mut h, reactivate.clone()).expect_err("an active agent");
    assert_eq!(err.status, 400);
    assert!(
        err.message.contains("is not deactivated"),
        "{}",
        err.message
    );
    let drain = json!({"type": "DRAIN_AGENT", "drain_agent": {"agent_id": {"value": agent.id}}});
    op(&mut h, drain).expect("DRAIN_AGENT");
    assert_eq!(s.events.take("RESCIND").len(), 1);
    h.advance(Duration::from_secs(10));
    assert!(
        s.events.take("OFFERS").is_empty(),
        "a draining agent is not offered"
    );
    op(&mut h, reactivate).expect("REACTIVATE_AGENT");
    h.advance(Duration::from_secs(1));
    let offer = h.offer(&mut s);
    assert_eq!(offer["agent_id"]["value"], agent.id);
    let state = h.core.state_json();
    assert_eq!(state["slaves"][0]["active"], true);
    assert_eq!(state["activated_slaves"], 1);
    // An unknown agent and a call without its agent id are refused.
    let unknown = json!({"type": "REACTIVATE_AGENT",
        "reactivate_agent": {"agent_id": {"value": "nope"}}});
    assert_eq!(op(&mut h, unknown).map(|_| ()).unwrap_err().status, 400);
    let bare = json!({"type": "REACTIVATE_AGENT", "reactivate_agent": {}});
    assert_eq!(op(&mut h, bare).map(|_| ()).unwrap_err().status, 400);
}

#[test]
fn a_drain_survives_a_leader_change_until_it_is_undone() {
    let drain_call = |id: &str| json!({"type": "DRAIN_AGENT", "drain_agent": {"agent_id": {"value": id}, "mark_gone": false}});
    let mut h = Harness::new();
    let a = h.add_agent("a1", 1.0, 128.0);
    let now = h.now();
    h.core
        .operator_call(
            &operator_call(&drain_call(&a.id)).expect("a DRAIN_AGENT"),
            Encoding::Json,
            now,
        )
        .expect("DRAIN_AGENT");
    // The next leader loads what this one recorded; the agent re-registers there.
    let registry = |h: &Harness| {
        let mut snap = RegistrySnapshot::default();
        h.ops().into_iter().for_each(|op| snap.apply(op));
        snap
    };
    let snap = registry(&h);
    assert_eq!(snap.draining.get(a.id.as_str()), Some(&false));
    let mut next = Harness::new();
    let now = next.now();
    next.core.recover(snap, now);
    let call = json!({"type": "SUBSCRIBE", "agent_id": {"value": a.id}, "subscribe": {
        "agent_info": {"hostname": "a1", "resources": [scalar("cpus", 1.0)]}}});
    next.core
        .agent_subscribe(&agent_call(&call), Encoding::Json, now)
        .expect("re-registered");
    let slave = &next.core.slaves_json()["slaves"][0];
    assert_eq!(
        (slave["active"].clone(), slave["deactivated"].clone()),
        (json!(false), json!(true))
    );
    // Undone on the old leader: the registry forgets the drain.
    let reactivate = json!({"type": "REACTIVATE_AGENT",
        "reactivate_agent": {"agent_id": {"value": a.id}}});
    h.core
        .operator_call(
            &operator_call(&reactivate).expect("a REACTIVATE_AGENT"),
            Encoding::Json,
            now,
        )
        .expect("REACTIVATE_AGENT");
    assert!(registry(&h).draining.is_empty());
}

#[test]
fn typed_agent_calls_forward_messages_and_refuse_missing_payloads() {
    let mut h = Harness::new();
    let agent = h.add_agent("a1", 1.0, 128.0);
    let mut s = h.subscribe(framework_info("f", &[], 0.0));
    let now = h.now();
    let message = json!({"type": "MESSAGE", "agent_id": {"value": agent.id}, "message": {
        "framework_id": {"value": s.id}, "executor_id": {"value": "e1"}, "data": "aGk="}});
    h.core
        .agent_call(&agent_call(&message), now)
        .expect("MESSAGE accepted");
    let ev = s.events.take("MESSAGE");
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0]["message"],
        json!({"agent_id": {"value": agent.id}, "executor_id": {"value": "e1"}, "data": "aGk="})
    );
    // What the edge cannot check (a protobuf call has no required fields) the core does.
    let bare = json!({"type": "UPDATE", "agent_id": {"value": agent.id}});
    let e = h
        .core
        .agent_call(&agent_call(&bare), now)
        .expect_err("refused");
    assert_eq!(
        (e.status, e.message.as_str()),
        (400, "Expecting 'update' to be present")
    );
    let no_uuid = json!({"type": "UPDATE", "agent_id": {"value": agent.id}, "update": {
        "framework_id": {"value": s.id},
        "status": {"task_id": {"value": "t1"}, "state": "TASK_RUNNING"}}});
    let e = h
        .core
        .agent_call(&agent_call(&no_uuid), now)
        .expect_err("refused");
    assert_eq!(
        (e.status, e.message.as_str()),
        (400, "Expecting 'update.status.uuid' to be present")
    );
    let e = h
        .core
        .agent_call(&agent_call(&json!({"type": "PONG"})), now)
        .expect_err("refused");
    assert_eq!(
        (e.status, e.message.as_str()),
        (400, "Expecting 'agent_id' to be present")
    );
}

#[test]
fn a_reregistering_agent_reports_its_tasks_as_typed_running_tasks() {
    let mut h = Harness::new();
    let (mut s, agent) = running_task(&mut h, framework_info("f", &[], 0.0), "t1");
    let fid = s.id.clone();
    let task = task_info("t1", &agent.id, 1.0, 128.0);
    let call = json!({"type": "SUBSCRIBE", "agent_id": {"value": agent.id}, "subscribe": {
        "agent_info": {"id": {"value": agent.id}, "hostname": "a1",
            "resources": [scalar("cpus", 4.0), scalar("mem", 1024.0)]},
        "tasks": [{"framework_id": {"value": fid}, "task": task,
            "status": {"task_id": {"value": "t1"}, "state": "TASK_RUNNING",
                "uuid": update_uuid(3)}}]}});
    let now = h.now();
    let mut again = Stream::new(
        h.core
            .agent_subscribe(&agent_call(&call), Encoding::Json, now)
            .expect("re-registered"),
    );
    assert_eq!(again.take("SUBSCRIBED").len(), 1);
    h.settle();
    // The state changed (TASK_STAGING → TASK_RUNNING): the framework hears of it, without
    // the agent's uuid (the master's own update is not acknowledged).
    let st = updates(&mut s);
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0]["state"], "TASK_RUNNING");
    assert_eq!(st[0]["reason"], "REASON_AGENT_REREGISTERED");
    assert!(st[0].get("uuid").is_none(), "{}", st[0]);
    assert_eq!(
        h.task_state(&fid, "t1"),
        Some(("TASK_RUNNING".into(), "tasks"))
    );
    assert_eq!(h.core.metrics()["master/cpus_used"], 1.0);
    let slave = &h.core.slaves_json()["slaves"][0];
    assert_eq!(slave["port"], 5051, "{slave}");
}
