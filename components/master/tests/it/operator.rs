use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn state_endpoints_and_version_follow_mesos_shapes() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    let aid = agent.wait_subscribed(WAIT).await?;
    let v = m.get("/version").await?;
    let version = v["version"].as_str().unwrap_or_default();
    assert!(
        version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "{version}"
    );
    assert!(
        version
            .split('.')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            >= Some(1)
    );

    let addr = m.handle.as_ref().map(|h| h.local_addr()).expect("running");
    for path in ["/master/state", "/master/state.json", "/state.json"] {
        let st = m.get(path).await?;
        assert_eq!(
            st["leader"],
            format!("master@127.0.0.1:{}", addr.port()),
            "{path}"
        );
        assert_eq!(st["activated_slaves"], 1);
        let s = &st["slaves"][0];
        assert_eq!(s["id"], aid.as_str());
        assert_eq!(s["pid"], "slave(1)@127.0.0.1:5051");
        assert_eq!(s["resources"]["cpus"], 4.0);
        assert_eq!(s["resources"]["ports"], "[31000-32000]");
        assert_eq!(st["orphan_tasks"], json!([]));
    }
    assert_eq!(
        m.get("/master/slaves").await?["slaves"][0]["hostname"],
        "a1"
    );
    assert!(m.get("/master/frameworks").await?["frameworks"].is_array());
    assert!(m.get("/master/tasks").await?["tasks"].is_array());
    assert_eq!(m.get("/metrics/snapshot").await?["master/elected"], 1.0);
    let r = m
        .client
        .get(format!("{}/master/health", m.base))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    let r = m
        .client
        .get(format!("{}/master/slaves?jsonp=cb", m.base))
        .send()
        .await?;
    assert_eq!(r.headers()["content-type"], "text/javascript");
    let body = r.text().await?;
    assert!(body.starts_with("cb({") && body.ends_with("});"), "{body}");

    let no_redirect = capstan_http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = no_redirect
        .get(format!("{}/master/redirect", m.base))
        .send()
        .await?;
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"],
        format!("//127.0.0.1:{}", addr.port())
    );
    let r = m
        .client
        .get(format!("{}/no/such/thing", m.base))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    Ok(())
}

#[tokio::test]
async fn operator_calls_answer_and_longest_prefix_routing_reaches_them() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    let aid = agent.wait_subscribed(WAIT).await?;
    let h = m.operator(json!({"type":"GET_HEALTH"})).await;
    assert_eq!(
        h,
        json!({"type":"GET_HEALTH","get_health":{"healthy":true}})
    );
    let r = m
        .post_json("/api/v1/operator", &json!({"type":"GET_VERSION"}))
        .await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await?;
    assert_eq!(v["get_version"]["version_info"]["version"], "1.11.0");
    let a = m.operator(json!({"type":"GET_AGENTS"})).await;
    assert_eq!(
        a["get_agents"]["agents"][0]["agent_info"]["id"]["value"],
        aid.as_str()
    );
    let st = m.operator(json!({"type":"GET_STATE"})).await;
    assert!(st["get_state"]["get_tasks"]["tasks"].is_array());
    let fw = m.operator(json!({"type":"GET_FRAMEWORKS"})).await;
    assert!(fw["get_frameworks"]["frameworks"].is_array());
    let ms = m.operator(json!({"type":"GET_MASTER"})).await;
    assert_eq!(
        ms["get_master"]["master_info"]["port"],
        m.handle
            .as_ref()
            .map(|h| h.local_addr().port())
            .expect("port")
    );
    let r = m
        .post_json(
            "/api/v1",
            &json!({"type":"MARK_AGENT_GONE","mark_agent_gone":{"agent_id":{"value":"nope"}}}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = m.post_json("/api/v1", &json!({"type":"GET_QUOTA"})).await;
    assert_eq!(r.status(), 501);
    Ok(())
}

#[tokio::test]
async fn operator_subscribe_streams_cluster_events() -> anyhow::Result<()> {
    let m = Master::start().await;
    let r = m.post_json("/api/v1", &json!({"type":"SUBSCRIBE"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let mut ops = EventStream::new(r);
    let sub = ops.expect("SUBSCRIBED", is_type("SUBSCRIBED")).await?;
    assert!(sub["subscribed"]["get_state"]["get_agents"]["agents"].is_array());

    let agent = m.agent("a1");
    let aid = agent.wait_subscribed(WAIT).await?;
    let added = ops.expect("AGENT_ADDED", is_type("AGENT_ADDED")).await?;
    assert_eq!(
        added["agent_added"]["agent"]["agent_info"]["hostname"],
        "a1"
    );

    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let fa = ops
        .expect("FRAMEWORK_ADDED", is_type("FRAMEWORK_ADDED"))
        .await?;
    assert_eq!(
        fa["framework_added"]["framework"]["framework_info"]["name"],
        "fw"
    );
    let offer = s.offer().await?;
    s.launch(&offer, "t", "serve").await;
    let ta = ops.expect("TASK_ADDED", is_type("TASK_ADDED")).await?;
    assert_eq!(ta["task_added"]["task"]["task_id"]["value"], "t");
    let tu = ops
        .expect("TASK_UPDATED running", |v| {
            v["type"] == "TASK_UPDATED" && v["task_updated"]["state"] == "TASK_RUNNING"
        })
        .await?;
    assert_eq!(
        tu["task_updated"]["framework_id"]["value"],
        s.framework_id.as_str()
    );
    s.expect_update("t", "TASK_RUNNING").await?;

    m.operator(json!({"type":"DRAIN_AGENT","drain_agent":{"agent_id":{"value": aid}}}))
        .await;
    s.expect_update("t", "TASK_KILLED").await?;
    m.operator(json!({"type":"MARK_AGENT_GONE","mark_agent_gone":{"agent_id":{"value": aid}}}))
        .await;
    let rm = ops
        .expect("AGENT_REMOVED", is_type("AGENT_REMOVED"))
        .await?;
    assert_eq!(rm["agent_removed"]["agent_id"]["value"], aid.as_str());
    s.call_ok(json!({"type":"TEARDOWN"})).await;
    ops.expect("FRAMEWORK_REMOVED", is_type("FRAMEWORK_REMOVED"))
        .await?;
    ops.expect("HEARTBEAT", is_type("HEARTBEAT")).await?;
    Ok(())
}

#[tokio::test]
async fn draining_with_mark_gone_removes_the_agent_once_its_tasks_ended() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    let aid = agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let offer = s.offer().await?;
    s.launch(&offer, "t", "serve").await;
    s.expect_update("t", "TASK_RUNNING").await?;

    m.operator(
        json!({"type":"DRAIN_AGENT","drain_agent":{"agent_id":{"value": aid},"mark_gone": true}}),
    )
    .await;
    // The agent stays (draining) until its task has been killed, then it is gone.
    s.expect_update("t", "TASK_KILLED").await?;
    capstan_testkit::wait_until("the drained agent is gone", WAIT, async || {
        m.get("/master/state")
            .await
            .is_ok_and(|st| st["slaves"].as_array().is_some_and(Vec::is_empty))
    })
    .await?;
    Ok(())
}
