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
                &json!({"type": "PONG", "agent_id": {"value": agent.id}}),
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
            .agent_subscribe(&call, Encoding::Json, now)
            .expect("re-registered"),
    );
    let sub = again.take("SUBSCRIBED");
    assert_eq!(sub[0]["subscribed"]["agent_id"]["value"], a.id);
    assert_eq!(
        h.core.slaves_json()["slaves"].as_array().map(Vec::len),
        Some(2)
    );
}
