//! Offers and what frameworks do with them: allocation, DECLINE with filters, REVIVE,
//! ACCEPT with LAUNCH (valid, invalid, on a stale offer) and KILL.

use super::*;

#[test]
fn an_allocation_offers_an_agents_resources_to_a_subscribed_framework() {
    let mut h = Harness::new();
    let agent = h.add_agent("a1", 4.0, 1024.0);
    assert_eq!(agent.id, agent_id(0));
    assert!(h.ops().iter().any(
        |op| matches!(op, RegistryOp::AgentAdmitted { id, .. } if *id == agent_id(0).as_str())
    ));
    let mut s = h.subscribe(framework_info("f", &[], 0.0));
    let offer = h.offer(&mut s);
    assert_eq!(offer["id"]["value"], offer_id(0));
    assert_eq!(offer["framework_id"]["value"], framework_id(0));
    assert_eq!(offer["agent_id"]["value"], agent_id(0));
    assert_eq!(offer["hostname"], "a1");
    assert_eq!(amount(&offer["resources"], "cpus"), 4.0);
    assert_eq!(amount(&offer["resources"], "mem"), 1024.0);
    // Offered resources are not offered again.
    h.advance(Duration::from_secs(1));
    assert!(s.events.take("OFFERS").is_empty());
    assert_eq!(h.core.metrics()["master/outstanding_offers"], 1.0);
}

#[test]
fn offers_carry_the_agents_attributes_and_fault_domain() {
    let mut h = Harness::new();
    let domain = json!({"fault_domain": {"region": {"name": "eu"}, "zone": {"name": "eu-1"}}});
    let rack = json!({"name": "rack", "type": "TEXT", "text": {"value": "r1"}});
    h.add_agent_with(json!({"hostname": "a1", "port": 5051,
        "resources": [scalar("cpus", 1.0)], "attributes": [rack], "domain": domain}));
    let mut s = h.subscribe(framework_info("f", &[], 0.0));
    let offer = h.offer(&mut s);
    assert_eq!(offer["domain"], domain);
    assert_eq!(offer["attributes"], json!([rack]));
}

#[test]
fn declined_offers_come_back_once_their_filter_expires() {
    // refuse_seconds → when the resources are offered again (ms after the decline).
    let table: [(Value, u64); 4] = [
        (json!({"refuse_seconds": 0}), 0),
        (json!({"refuse_seconds": 2}), 2000),
        (json!({"refuse_seconds": 0.25}), 250),
        (json!({}), 5000), // Mesos' default filter
    ];
    for (filters, back_after_ms) in table {
        let mut h = Harness::new();
        h.add_agent("a1", 4.0, 1024.0);
        let mut s = h.subscribe(framework_info("f", &[], 0.0));
        let offer = h.offer(&mut s);
        h.call_ok(
            &s,
            json!({"type": "DECLINE", "decline": {"offer_ids": [offer["id"]], "filters": filters}}),
        );
        assert_eq!(h.core.metrics()["master/outstanding_offers"], 0.0);
        if back_after_ms > 0 {
            h.advance(Duration::from_millis(back_after_ms - 1));
            assert!(
                s.events.take("OFFERS").is_empty(),
                "{filters}: still filtered"
            );
            h.advance(Duration::from_millis(1));
        } else {
            h.advance(Duration::ZERO);
        }
        let again = h.offer(&mut s);
        assert_eq!(amount(&again["resources"], "cpus"), 4.0, "{filters}");
        assert_eq!(again["id"]["value"], offer_id(1), "{filters}");
    }
}

#[test]
fn a_revive_clears_decline_filters() {
    let mut h = Harness::new();
    h.add_agent("a1", 4.0, 1024.0);
    let mut s = h.subscribe(framework_info("f", &[], 0.0));
    let offer = h.offer(&mut s);
    h.call_ok(
        &s,
        json!({"type": "DECLINE", "decline": {"offer_ids": [offer["id"]],
            "filters": {"refuse_seconds": 3600}}}),
    );
    h.call_ok(&s, json!({"type": "REVIVE"}));
    let again = h.offer(&mut s);
    assert_eq!(again["id"]["value"], offer_id(1));
}

#[test]
fn accepting_an_offer_with_launch_stages_the_task_and_sends_it_to_the_agent() {
    let mut h = Harness::new();
    let mut agent = h.add_agent("a1", 4.0, 1024.0);
    let mut s = h.subscribe(framework_info("f", &[], 0.0));
    let mut ops = h.operator_stream();
    ops.take("SUBSCRIBED");
    let offer = h.offer(&mut s);
    h.launch(&s, &offer, vec![task_info("t1", &agent.id, 1.0, 128.0)]);

    let launch = agent.events.take("LAUNCH");
    assert_eq!(launch.len(), 1);
    assert_eq!(launch[0]["launch"]["task"]["task_id"]["value"], "t1");
    assert_eq!(
        launch[0]["launch"]["framework_info"]["id"]["value"],
        framework_id(0)
    );
    assert_eq!(
        h.task_state(&s.id, "t1"),
        Some(("TASK_STAGING".into(), "tasks"))
    );
    let added = ops.take("TASK_ADDED");
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["task_added"]["task"]["state"], "TASK_STAGING");
    let m = h.core.metrics();
    assert_eq!(
        (
            m["master/cpus_used"].as_f64(),
            m["master/mem_used"].as_f64()
        ),
        (Some(1.0), Some(128.0))
    );
    assert_eq!(m["master/tasks_staging"], 1.0);
    // What the task did not use is offered again (refuse_seconds 0).
    h.advance(Duration::ZERO);
    let rest = h.offer(&mut s);
    assert_eq!(amount(&rest["resources"], "cpus"), 3.0);
    assert_eq!(amount(&rest["resources"], "mem"), 896.0);
    assert!(updates(&mut s).is_empty(), "no error updates");
}

#[test]
fn invalid_launches_are_answered_with_a_status_update_and_launch_nothing() {
    // (how the TaskInfo is spoiled, expected state, reason, message part)
    type Spoil = fn(&mut Value);
    let table: [(Spoil, &str, &str, &str); 4] = [
        (
            |t| t["resources"][0]["scalar"]["value"] = json!(8.0),
            "TASK_ERROR",
            "REASON_TASK_INVALID",
            "more resources than available",
        ),
        (
            |t| {
                if let Some(o) = t.as_object_mut() {
                    o.remove("name");
                }
            },
            "TASK_ERROR",
            "REASON_TASK_INVALID",
            "Missing required fields: name",
        ),
        (
            |t| t["agent_id"] = json!({"value": "elsewhere"}),
            "TASK_ERROR",
            "REASON_TASK_INVALID",
            "Task uses agent elsewhere",
        ),
        (
            |t| {
                if let Some(o) = t.as_object_mut() {
                    o.remove("command");
                }
            },
            "TASK_ERROR",
            "REASON_TASK_INVALID",
            "CommandInfo or ExecutorInfo",
        ),
    ];
    for (spoil, state, reason, why) in table {
        let mut h = Harness::new();
        let mut agent = h.add_agent("a1", 4.0, 1024.0);
        let mut s = h.subscribe(framework_info("f", &[], 0.0));
        let offer = h.offer(&mut s);
        let mut t = task_info("t1", &agent.id, 1.0, 128.0);
        spoil(&mut t);
        h.launch(&s, &offer, vec![t]);
        let st = updates(&mut s);
        assert_eq!(st.len(), 1, "{why}");
        assert_eq!(
            (st[0]["state"].as_str(), st[0]["reason"].as_str()),
            (Some(state), Some(reason)),
            "{why}"
        );
        assert!(
            st[0]["message"].as_str().is_some_and(|m| m.contains(why)),
            "{why}: {}",
            st[0]["message"]
        );
        assert!(st[0].get("uuid").is_none(), "master updates need no ack");
        assert!(agent.events.take("LAUNCH").is_empty(), "{why}");
        assert_eq!(h.core.metrics()["master/cpus_used"], 0.0, "{why}");
    }
}

#[test]
fn accepting_an_offer_that_is_gone_loses_the_tasks() {
    for (caps, state) in [
        (&[][..], "TASK_LOST"),
        (&["PARTITION_AWARE"][..], "TASK_DROPPED"),
    ] {
        let mut h = Harness::new();
        let mut agent = h.add_agent("a1", 4.0, 1024.0);
        let mut s = h.subscribe(framework_info("f", caps, 0.0));
        let offer = h.offer(&mut s);
        h.call_ok(
            &s,
            json!({"type": "DECLINE", "decline": {"offer_ids": [offer["id"]]}}),
        );
        h.launch(&s, &offer, vec![task_info("t1", &agent.id, 1.0, 128.0)]);
        let st = updates(&mut s);
        assert_eq!(st.len(), 1);
        assert_eq!(st[0]["state"], state);
        assert_eq!(st[0]["reason"], "REASON_INVALID_OFFERS");
        assert!(agent.events.take("LAUNCH").is_empty());
    }
}

#[test]
fn kill_sends_the_kill_to_the_agent_and_answers_unknown_tasks_itself() {
    for (caps, unknown_state) in [
        (&[][..], "TASK_LOST"),
        (&["PARTITION_AWARE"][..], "TASK_UNKNOWN"),
    ] {
        let mut h = Harness::new();
        let (mut s, mut agent) = running_task(&mut h, framework_info("f", caps, 0.0), "t1");
        let policy = json!({"grace_period": {"nanoseconds": 1_000_000_000}});
        h.call_ok(
            &s,
            json!({"type": "KILL", "kill": {"task_id": {"value": "t1"}, "kill_policy": policy}}),
        );
        let kill = agent.events.take("KILL");
        assert_eq!(kill.len(), 1);
        assert_eq!(kill[0]["kill"]["task_id"]["value"], "t1");
        assert_eq!(kill[0]["kill"]["framework_id"]["value"], s.id);
        assert_eq!(kill[0]["kill"]["kill_policy"], policy);
        assert!(updates(&mut s).is_empty(), "the agent reports the kill");

        h.call_ok(
            &s,
            json!({"type": "KILL", "kill": {"task_id": {"value": "ghost"}}}),
        );
        assert!(agent.events.take("KILL").is_empty());
        let st = updates(&mut s);
        assert_eq!(st.len(), 1);
        assert_eq!(st[0]["task_id"]["value"], "ghost");
        assert_eq!(st[0]["state"], unknown_state);
        assert_eq!(st[0]["reason"], "REASON_RECONCILIATION");
    }
}
