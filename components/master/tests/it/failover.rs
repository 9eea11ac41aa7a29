use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn framework_resubscribing_within_failover_timeout_keeps_its_tasks() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 60.0)).await?;
    let fid = s.framework_id.clone();
    let offer = s.offer().await?;
    s.launch(&offer, "t", "serve").await;
    s.expect_update("t", "TASK_RUNNING").await?;
    drop(s); // connection gone
    capstan_testkit::wait_until("framework disconnected", WAIT, async || {
        m.get("/master/state")
            .await
            .map(|st| st["frameworks"][0]["connected"] == false)
            .unwrap_or(false)
    })
    .await?;
    // Calls on the old stream are refused with 403 while disconnected.
    let mut info = framework_info("fw", &[], 60.0);
    info["id"] = json!({"value": fid});
    let mut s = Sched::subscribe(&m, info).await?;
    assert_eq!(s.framework_id, fid);
    s.call_ok(json!({"type":"RECONCILE","reconcile":{"tasks":[]}}))
        .await;
    s.events
        .expect("task survived", is_update("t", "TASK_RUNNING"))
        .await?;
    assert_eq!(
        agent.tasks().get("t").map(String::as_str),
        Some("TASK_RUNNING")
    );
    Ok(())
}

#[tokio::test]
async fn framework_gone_past_failover_timeout_is_removed_and_its_tasks_killed() -> anyhow::Result<()>
{
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.3)).await?;
    let fid = s.framework_id.clone();
    let offer = s.offer().await?;
    s.launch(&offer, "t", "serve").await;
    s.expect_update("t", "TASK_RUNNING").await?;
    let stream_id = s.stream_id.clone();
    drop(s);
    capstan_testkit::wait_until("framework removed", WAIT, async || {
        m.get("/master/state")
            .await
            .map(|st| st["completed_frameworks"][0]["id"] == fid.as_str())
            .unwrap_or(false)
    })
    .await?;
    capstan_testkit::wait_until("task killed on the agent", WAIT, async || {
        agent.tasks().is_empty()
    })
    .await?;
    // Calls for the removed framework fail; re-subscribing gets an ERROR event.
    let r = m
        .client
        .post(format!("{}/api/v1/scheduler", m.base))
        .header("Content-Type", "application/json")
        .header("Mesos-Stream-Id", stream_id)
        .body(json!({"type":"REVIVE","framework_id":{"value": fid}}).to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let mut info = framework_info("fw", &[], 0.3);
    info["id"] = json!({"value": fid});
    let call = json!({"type":"SUBSCRIBE","framework_id":{"value": fid},"subscribe":{"framework_info": info}});
    let r = m.post_json("/api/v1/scheduler", &call).await;
    assert_eq!(r.status(), 200);
    let mut ev = EventStream::new(r);
    let e = ev.expect("ERROR", is_type("ERROR")).await?;
    assert_eq!(e["error"]["message"], "Framework has been removed");
    Ok(())
}

#[tokio::test]
async fn teardown_removes_the_framework_and_kills_its_tasks() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 100.0)).await?;
    let offer = s.offer().await?;
    s.launch(&offer, "t", "serve").await;
    s.expect_update("t", "TASK_RUNNING").await?;
    s.call_ok(json!({"type":"TEARDOWN"})).await;
    capstan_testkit::wait_until("task killed on the agent", WAIT, async || {
        agent.tasks().is_empty()
    })
    .await?;
    let st = m.get("/master/state").await?;
    assert_eq!(st["frameworks"], json!([]));
    assert_eq!(
        st["completed_frameworks"][0]["completed_tasks"][0]["state"],
        "TASK_KILLED"
    );
    Ok(())
}
