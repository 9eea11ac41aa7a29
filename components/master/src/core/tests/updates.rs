//! Status updates from agents to frameworks (forwarded, retried until ACKNOWLEDGE, in
//! order) and reconciliation, explicit and implicit.

use super::*;

#[test]
fn an_agents_status_update_is_forwarded_and_retried_until_acknowledged() {
    let mut h = Harness::new();
    let (mut s, mut agent) = running_task(&mut h, framework_info("f", &[], 0.0), "t1");
    let fid = s.id.clone();
    let uuid = update_uuid(100);
    h.agent_update(&agent, &fid, "t1", "TASK_RUNNING", &uuid);
    let st = updates(&mut s);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["state"], "TASK_RUNNING");
    assert_eq!(st[0]["uuid"], uuid);
    assert_eq!(st[0]["agent_id"]["value"], agent.id);
    assert_eq!(
        h.task_state(&fid, "t1"),
        Some(("TASK_RUNNING".into(), "tasks"))
    );
    // Resent every status_update_retry_interval (10 s) until acknowledged.
    h.pong(&agent);
    h.advance(Duration::from_millis(9999));
    assert!(updates(&mut s).is_empty(), "not yet due");
    h.pong(&agent);
    h.advance(Duration::from_millis(1));
    let again = updates(&mut s);
    assert_eq!(again.len(), 1, "resent after the retry interval");
    assert_eq!(again[0]["uuid"], uuid);
    // A duplicate from the agent is not queued twice.
    h.agent_update(&agent, &fid, "t1", "TASK_RUNNING", &uuid);
    assert!(updates(&mut s).is_empty());

    agent.events.drain();
    h.call_ok(
        &s,
        json!({"type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": {"value": agent.id}, "task_id": {"value": "t1"}, "uuid": uuid}}),
    );
    let acked = agent.events.take("ACKNOWLEDGED");
    assert_eq!(acked.len(), 1, "the acknowledgement goes to the agent");
    assert_eq!(acked[0]["acknowledged"]["uuid"], uuid);
    assert_eq!(acked[0]["acknowledged"]["task_id"]["value"], "t1");
    h.pong(&agent);
    h.advance(Duration::from_secs(10));
    h.pong(&agent);
    h.advance(Duration::from_secs(10));
    assert!(updates(&mut s).is_empty(), "no retries once acknowledged");
    // The agent retrying an acknowledged update is acknowledged again, not forwarded.
    h.agent_update(&agent, &fid, "t1", "TASK_RUNNING", &uuid);
    assert!(updates(&mut s).is_empty());
    assert_eq!(agent.events.take("ACKNOWLEDGED").len(), 1);
}

#[test]
fn updates_of_one_task_are_delivered_in_order_one_at_a_time() {
    let mut h = Harness::new();
    let (mut s, agent) = running_task(&mut h, framework_info("f", &[], 0.0), "t1");
    let fid = s.id.clone();
    let (u1, u2) = (update_uuid(1), update_uuid(2));
    h.agent_update(&agent, &fid, "t1", "TASK_RUNNING", &u1);
    h.agent_update(&agent, &fid, "t1", "TASK_FINISHED", &u2);
    let st = updates(&mut s);
    assert_eq!(st.len(), 1, "the second waits for the first's ack");
    assert_eq!(st[0]["uuid"], u1);
    // The second update's state is already the task's state.
    assert_eq!(
        h.task_state(&fid, "t1"),
        Some(("TASK_FINISHED".into(), "tasks"))
    );
    h.call_ok(
        &s,
        json!({"type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": {"value": agent.id}, "task_id": {"value": "t1"}, "uuid": u1}}),
    );
    let st = updates(&mut s);
    assert_eq!(st.len(), 1);
    assert_eq!(
        (st[0]["state"].as_str(), st[0]["uuid"].as_str()),
        (Some("TASK_FINISHED"), Some(u2.as_str()))
    );
    h.call_ok(
        &s,
        json!({"type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": {"value": agent.id}, "task_id": {"value": "t1"}, "uuid": u2}}),
    );
    // Terminal and fully acknowledged: completed, and its resources are free.
    assert_eq!(
        h.task_state(&fid, "t1"),
        Some(("TASK_FINISHED".into(), "completed_tasks"))
    );
    assert_eq!(h.core.metrics()["master/cpus_used"], 0.0);
}

#[test]
fn acknowledgements_with_a_malformed_uuid_are_rejected() {
    let mut h = Harness::new();
    let (s, agent) = running_task(&mut h, framework_info("f", &[], 0.0), "t1");
    for (uuid, why) in [
        (json!("***"), "not valid base64"),
        (json!("AAAA"), "not a valid UUID"),
        (json!(null), "Expecting 'acknowledge.uuid' to be present"),
    ] {
        let e = h
            .call(
                &s,
                json!({"type": "ACKNOWLEDGE", "acknowledge": {
                    "agent_id": {"value": agent.id}, "task_id": {"value": "t1"}, "uuid": uuid}}),
            )
            .expect_err("rejected");
        assert_eq!(e.status, 400);
        assert!(e.message.contains(why), "{uuid}: {}", e.message);
    }
}

#[test]
fn explicit_reconciliation_reports_known_tasks_and_unknown_ones_by_partition_awareness() {
    for (caps, unknown_state) in [
        (&[][..], "TASK_LOST"),
        (&["PARTITION_AWARE"][..], "TASK_UNKNOWN"),
    ] {
        let mut h = Harness::new();
        let (mut s, agent) = running_task(&mut h, framework_info("f", caps, 0.0), "t1");
        let fid = s.id.clone();
        h.agent_update(&agent, &fid, "t1", "TASK_RUNNING", &update_uuid(7));
        updates(&mut s);
        h.call_ok(
            &s,
            json!({"type": "RECONCILE", "reconcile": {"tasks": [
                {"task_id": {"value": "t1"}},
                {"task_id": {"value": "ghost"}, "agent_id": {"value": "A"}},
            ]}}),
        );
        let st = updates(&mut s);
        assert_eq!(st.len(), 2);
        assert_eq!(st[0]["task_id"]["value"], "t1");
        assert_eq!(st[0]["state"], "TASK_RUNNING");
        assert_eq!(st[0]["reason"], "REASON_RECONCILIATION");
        assert_eq!(st[0]["source"], "SOURCE_MASTER");
        assert_eq!(st[0]["agent_id"]["value"], agent.id);
        assert!(st[0].get("uuid").is_none(), "reconciliation needs no ack");
        assert_eq!(st[1]["task_id"]["value"], "ghost");
        assert_eq!(st[1]["state"], unknown_state);
        assert_eq!(st[1]["agent_id"]["value"], "A");
        assert_eq!(st[1]["timestamp"], WALL0, "stamped by the injected clock");
    }
}

#[test]
fn implicit_reconciliation_reports_every_task_of_the_framework() {
    let mut h = Harness::new();
    let mut agent = h.add_agent("a1", 4.0, 1024.0);
    let mut s = h.subscribe(framework_info("f", &[], 0.0));
    let offer = h.offer(&mut s);
    h.launch(
        &s,
        &offer,
        vec![
            task_info("t1", &agent.id, 1.0, 128.0),
            task_info("t2", &agent.id, 1.0, 128.0),
        ],
    );
    assert_eq!(agent.events.take("LAUNCH").len(), 2);
    let fid = s.id.clone();
    h.agent_update(&agent, &fid, "t2", "TASK_RUNNING", &update_uuid(9));
    updates(&mut s);
    h.call_ok(&s, json!({"type": "RECONCILE", "reconcile": {}}));
    let st = updates(&mut s);
    let got: Vec<(&str, &str)> = st
        .iter()
        .map(|u| {
            (
                u["task_id"]["value"].as_str().unwrap_or(""),
                u["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(got, vec![("t1", "TASK_STAGING"), ("t2", "TASK_RUNNING")]);
}
