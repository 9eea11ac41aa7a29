use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn framework_launches_a_task_and_gets_running_then_finished() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let offer = s.offer().await?;
    assert_eq!(offer["hostname"], "a1");
    assert_eq!(offer["allocation_info"]["role"], "*");
    s.launch(&offer, "t1", "sleep 0.2").await;
    let running = s.expect_update("t1", "TASK_RUNNING").await?;
    assert_eq!(running["update"]["status"]["agent_id"], offer["agent_id"]);
    s.expect_update("t1", "TASK_FINISHED").await?;
    capstan_testkit::wait_until("agent has no unacknowledged updates", WAIT, async || {
        agent.unacknowledged() == 0 && agent.tasks().is_empty()
    })
    .await?;
    let state = m.get("/master/state").await?;
    let fw = &state["frameworks"][0];
    assert_eq!(fw["completed_tasks"][0]["id"], "t1");
    assert_eq!(fw["completed_tasks"][0]["state"], "TASK_FINISHED");
    assert!(fw.get("pid").is_none(), "HTTP frameworks have no pid");
    Ok(())
}

#[tokio::test]
async fn kill_and_reconcile_report_task_states() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let offer = s.offer().await?;
    s.launch(&offer, "long", "serve forever").await;
    s.expect_update("long", "TASK_RUNNING").await?;

    // Implicit reconciliation: the master answers with the latest state, without uuid.
    s.call_ok(json!({"type":"RECONCILE","reconcile":{"tasks":[]}}))
        .await;
    let r = s
        .events
        .expect(
            "reconcile answer",
            is_update_with_reason("long", "TASK_RUNNING", "REASON_RECONCILIATION"),
        )
        .await?;
    assert_eq!(r["update"]["status"]["reason"], "REASON_RECONCILIATION");
    assert!(r["update"]["status"].get("uuid").is_none());

    // Explicit reconciliation of an unknown task: TASK_LOST (not partition aware).
    s.call_ok(json!({"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"nope"}}]}}))
        .await;
    s.events
        .expect("unknown task lost", is_update("nope", "TASK_LOST"))
        .await?;

    // KILL without agent_id (as pymesos sends it).
    s.call_ok(json!({"type":"KILL","kill":{"task_id":{"value":"long"}}}))
        .await;
    s.expect_update("long", "TASK_KILLED").await?;
    // KILL of an unknown task.
    s.call_ok(json!({"type":"KILL","kill":{"task_id":{"value":"ghost"}}}))
        .await;
    s.events
        .expect("ghost lost", is_update("ghost", "TASK_LOST"))
        .await?;

    s.call_ok(json!({"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"long"}}]}}))
        .await;
    s.events
        .expect("killed task reconciled", is_update("long", "TASK_KILLED"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn status_updates_are_resent_until_acknowledged_and_stay_in_order() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let offer = s.offer().await?;
    s.launch(&offer, "t", "exit 0").await;
    let first = s
        .events
        .expect("RUNNING", is_update("t", "TASK_RUNNING"))
        .await?;
    // Not acknowledged: the same update (same uuid) comes again, and FINISHED waits.
    let again = s
        .events
        .expect("RUNNING again", |v| {
            is_update("t", "TASK_RUNNING")(v) || is_update("t", "TASK_FINISHED")(v)
        })
        .await?;
    assert_eq!(
        again["update"]["status"]["state"], "TASK_RUNNING",
        "FINISHED must wait for the RUNNING ack"
    );
    assert_eq!(
        again["update"]["status"]["uuid"],
        first["update"]["status"]["uuid"]
    );
    s.ack(&first).await;
    s.events.clear();
    s.expect_update("t", "TASK_FINISHED").await?;
    capstan_testkit::wait_until("all acknowledged", WAIT, async || {
        agent.unacknowledged() == 0
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn invalid_launches_produce_task_error_or_lost_with_a_reason() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;

    // Unknown offer.
    let fake = json!({"id": {"value": "bogus"}, "agent_id": {"value": "x"}});
    s.launch(&fake, "t-bad-offer", "sleep 1").await;
    let u = s
        .events
        .expect("invalid offer", is_update("t-bad-offer", "TASK_LOST"))
        .await?;
    assert_eq!(u["update"]["status"]["reason"], "REASON_INVALID_OFFERS");

    // More resources than offered.
    let offer = s.offer().await?;
    let huge = task_info(&offer, "t-huge", "sleep 1", 1000.0, 32.0);
    s.call_ok(json!({"type":"ACCEPT","accept":{"offer_ids":[offer["id"]],
        "operations":[{"type":"LAUNCH","launch":{"task_infos":[huge]}}],"filters":{"refuse_seconds":0}}})).await;
    let u = s
        .events
        .expect("too big", is_update("t-huge", "TASK_ERROR"))
        .await?;
    assert_eq!(u["update"]["status"]["reason"], "REASON_TASK_INVALID");

    // Duplicate task id within one ACCEPT; the offer cannot be used twice either.
    let offer = s.offer().await?;
    let a = task_info(&offer, "dup", "serve", 0.1, 16.0);
    s.call_ok(json!({"type":"ACCEPT","accept":{"offer_ids":[offer["id"]],
        "operations":[{"type":"LAUNCH","launch":{"task_infos":[a.clone(), a]}}],"filters":{"refuse_seconds":0}}})).await;
    s.expect_update("dup", "TASK_RUNNING").await?;
    let u = s
        .events
        .expect("duplicate", is_update("dup", "TASK_ERROR"))
        .await?;
    assert!(
        u["update"]["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("duplicate")
    );
    s.launch(&offer, "reuse", "serve").await;
    s.events
        .expect("offer reused", is_update("reuse", "TASK_LOST"))
        .await?;

    // The master is still fine.
    let r = m
        .client
        .get(format!("{}/master/health", m.base))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

#[tokio::test]
async fn bad_scheduler_calls_get_the_documented_4xx() -> anyhow::Result<()> {
    let m = Master::start().await;
    let url = format!("{}/api/v1/scheduler", m.base);
    let c = &m.client;
    let r = c.get(&url).send().await?;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = c.post(&url).body("{}").send().await?;
    assert_eq!(r.status(), 400);
    assert!(r.text().await?.contains("Content-Type"));
    let r = c
        .post(&url)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await?;
    assert_eq!(r.status(), 415);
    let r = c
        .post(&url)
        .header("Content-Type", "application/json; charset=utf-8")
        .body("{}")
        .send()
        .await?;
    assert_eq!(r.status(), 415, "parameters are not allowed");
    let r = c
        .post(&url)
        .header("Content-Type", "application/json")
        .body("{nope")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await?
            .starts_with("Failed to parse body into JSON")
    );

    let sub = json!({"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n"}}});
    let r = c
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Mesos-Stream-Id", "x")
        .body(sub.to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = c
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Accept", "text/html")
        .body(sub.to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 406);
    let r = c
        .post(&url)
        .header("Content-Type", "application/x-protobuf")
        .body(&b"\xffgarbage"[..])
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = c
        .post(&url)
        .header("Content-Type", "application/json")
        .body(json!({"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u"}}}).to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await?
            .starts_with("Failed to validate scheduler::Call")
    );
    let r = c
        .post(&url)
        .header("Content-Type", "application/json")
        .body(json!({"type":"SUBSCRIBE"}).to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 400);

    let r = c
        .post(&url)
        .header("Content-Type", "application/json")
        .body(json!({"type":"REVIVE","framework_id":{"value":"nope"}}).to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await?, "Framework cannot be found");
    let r = c
        .post(&url)
        .header("Content-Type", "application/json")
        .body(json!({"type":"UNKNOWN"}).to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 501);

    let s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let call = json!({"type":"REVIVE","framework_id":{"value": s.framework_id}});
    let r = c
        .post(&url)
        .header("Content-Type", "application/json")
        .body(call.to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert!(r.text().await?.contains("Mesos-Stream-Id"));
    let r = c
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Mesos-Stream-Id", "wrong")
        .body(call.to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = s.call(json!({"type":"REVIVE"})).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.headers()["content-length"],
        "0",
        "pymesos reuses the connection"
    );
    let r = s.call(json!({"type":"ACCEPT"})).await;
    assert_eq!(r.status(), 400);
    let r = s.call(json!({"type":"ACKNOWLEDGE","acknowledge":{"agent_id":{"value":"a"},"task_id":{"value":"t"},"uuid":"not-base64!"}})).await;
    assert_eq!(r.status(), 400);
    Ok(())
}

#[tokio::test]
async fn declined_offers_come_back_after_revive_and_suppress_stops_them() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let offer = s.offer().await?;
    s.call_ok(json!({"type":"DECLINE","decline":{"offer_ids":[offer["id"]],"filters":{"refuse_seconds": 3600}}})).await;
    s.call_ok(json!({"type":"REVIVE"})).await;
    let again = s.offer().await?;
    assert_ne!(again["id"], offer["id"]);
    // Accepting the already declined offer fails cleanly.
    s.launch(&offer, "late", "serve").await;
    s.events
        .expect("stale offer", is_update("late", "TASK_LOST"))
        .await?;
    s.call_ok(json!({"type":"SUPPRESS"})).await;
    s.call_ok(json!({"type":"DECLINE","decline":{"offer_ids":[again["id"]],"filters":{"refuse_seconds": 0}}})).await;
    let st = m.get("/master/state").await?;
    assert_eq!(st["frameworks"][0]["offers"], json!([]));
    s.call_ok(json!({"type":"REVIVE","revive":{"roles":["*"]}}))
        .await;
    s.offer().await?;
    Ok(())
}

#[tokio::test]
async fn offers_from_several_agents_arrive_and_resources_are_not_offered_twice()
-> anyhow::Result<()> {
    let m = Master::start().await;
    let agents: Vec<_> = (0..5).map(|i| m.agent(&format!("a{i}"))).collect();
    for a in &agents {
        a.wait_subscribed(WAIT).await?;
    }
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < 5 {
        let ev = s.events.expect("OFFERS", is_type("OFFERS")).await?;
        seen.extend(
            ev["offers"]["offers"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    let mut agents_offered: Vec<&str> = seen
        .iter()
        .filter_map(|o| o["agent_id"]["value"].as_str())
        .collect();
    agents_offered.sort();
    agents_offered.dedup();
    assert_eq!(agents_offered.len(), 5, "one offer per agent: {seen:?}");
    let metrics = m.get("/metrics/snapshot").await?;
    assert_eq!(metrics["master/outstanding_offers"], 5.0);
    assert_eq!(metrics["master/cpus_total"], 20.0);
    Ok(())
}

#[tokio::test]
async fn launch_group_runs_every_task_of_the_group() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let offer = s.offer().await?;
    let mut t1 = task_info(&offer, "g1", "serve", 0.1, 16.0);
    let mut t2 = task_info(&offer, "g2", "serve", 0.1, 16.0);
    for t in [&mut t1, &mut t2] {
        t.as_object_mut().map(|o| o.remove("command"));
    }
    s.call_ok(json!({"type":"ACCEPT","accept":{"offer_ids":[offer["id"]],"operations":[{"type":"LAUNCH_GROUP","launch_group":{
        "executor": {"executor_id":{"value":"e1"},"type":"DEFAULT","resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}}]},
        "task_group": {"tasks": [t1, t2]}}}]}})).await;
    s.expect_update("g1", "TASK_RUNNING").await?;
    s.expect_update("g2", "TASK_RUNNING").await?;
    let ex = m.operator(json!({"type":"GET_EXECUTORS"})).await;
    assert_eq!(
        ex["get_executors"]["executors"][0]["executor_info"]["executor_id"]["value"],
        "e1"
    );
    // Framework messages reach the executor (the simulated one echoes them).
    s.call_ok(json!({"type":"MESSAGE","message":{
        "agent_id": offer["agent_id"], "executor_id": {"value": "e1"}, "data": "aGVsbG8="}}))
        .await;
    let echo = s.events.expect("MESSAGE echo", is_type("MESSAGE")).await?;
    assert_eq!(echo["message"]["data"], "aGVsbG8=");
    assert_eq!(echo["message"]["executor_id"]["value"], "e1");
    assert_eq!(echo["message"]["agent_id"], offer["agent_id"]);
    Ok(())
}

#[tokio::test]
async fn protobuf_clients_subscribe_receive_offers_and_call() -> anyhow::Result<()> {
    use capstan_proto::mesos::v1::{master, scheduler};
    use capstan_proto::recordio::RecordIoDecoder;
    use capstan_proto::{Message, from_json, to_json};
    use futures::StreamExt;

    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let call: scheduler::Call = from_json(
        &json!({"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"pb"}}}),
    )?;
    let r = m
        .client
        .post(format!("{}/api/v1/scheduler", m.base))
        .header("Content-Type", "application/x-protobuf")
        .header("Accept", "application/x-protobuf")
        .body(call.encode_to_vec())
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let sid = r.headers()["mesos-stream-id"].to_str()?.to_string();
    let mut body = r.bytes_stream();
    let mut dec = RecordIoDecoder::default();
    let mut events: Vec<Value> = Vec::new();
    let end = tokio::time::Instant::now() + WAIT;
    while !events.iter().any(|e| e["type"] == "OFFERS") {
        let chunk = tokio::time::timeout_at(end, body.next())
            .await?
            .expect("stream open")?;
        dec.push(&chunk);
        while let Some(rec) = dec.next_record().map_err(anyhow::Error::msg)? {
            events.push(to_json(&scheduler::Event::decode(rec.as_ref())?));
        }
    }
    assert_eq!(events[0]["type"], "SUBSCRIBED");
    let fid = events[0]["subscribed"]["framework_id"].clone();
    let revive: scheduler::Call = from_json(&json!({"type":"REVIVE","framework_id": fid}))?;
    let r = m
        .client
        .post(format!("{}/api/v1/scheduler", m.base))
        .header("Content-Type", "application/x-protobuf")
        .header("Mesos-Stream-Id", sid)
        .body(revive.encode_to_vec())
        .send()
        .await?;
    assert_eq!(r.status(), 202);

    let health: master::Call = from_json(&json!({"type":"GET_HEALTH"}))?;
    let r = m
        .client
        .post(format!("{}/api/v1", m.base))
        .header("Content-Type", "application/x-protobuf")
        .header("Accept", "application/x-protobuf")
        .body(health.encode_to_vec())
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let resp = to_json(&master::Response::decode(r.bytes().await?)?);
    assert_eq!(resp["get_health"]["healthy"], true);
    Ok(())
}

#[tokio::test]
async fn offers_past_offer_timeout_are_rescinded_and_heartbeats_flow() -> anyhow::Result<()> {
    let mut cfg = capstan_master::Config::for_tests();
    cfg.offer_timeout = std::time::Duration::from_millis(300);
    let m = Master::start_with(cfg).await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let offer = s.offer().await?;
    let r = s.events.expect("RESCIND", is_type("RESCIND")).await?;
    assert_eq!(r["rescind"]["offer_id"], offer["id"]);
    s.events.expect("HEARTBEAT", is_type("HEARTBEAT")).await?;
    // The rescinded resources are offered again.
    let again = s.offer().await?;
    assert_ne!(again["id"], offer["id"]);
    Ok(())
}

#[tokio::test]
async fn a_second_subscribe_replaces_the_first_stream() -> anyhow::Result<()> {
    let m = Master::start().await;
    let s1 = Sched::subscribe(&m, framework_info("fw", &[], 10.0)).await?;
    let mut info = framework_info("fw", &[], 10.0);
    info["id"] = json!({"value": s1.framework_id});
    let s2 = Sched::subscribe(&m, info).await?;
    assert_eq!(s2.framework_id, s1.framework_id);
    assert_ne!(s2.stream_id, s1.stream_id);
    // The old stream id no longer works; the new one does.
    assert_eq!(s1.call(json!({"type":"REVIVE"})).await.status(), 400);
    assert_eq!(s2.call(json!({"type":"REVIVE"})).await.status(), 202);
    let mut s1 = s1;
    let end = s1.events.expect("old stream closed", |_| false).await;
    assert!(end.is_err_and(|e| e.to_string().contains("stream ended")));
    Ok(())
}
