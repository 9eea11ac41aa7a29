use serde_json::json;

use crate::common::*;

async fn lost_agent_scenario(partition_aware: bool) -> anyhow::Result<()> {
    let m = Master::start().await;
    let mut agent = m.agent("a1");
    let id = agent.wait_subscribed(WAIT).await?;
    let caps: &[&str] = if partition_aware {
        &["PARTITION_AWARE"]
    } else {
        &[]
    };
    let mut s = Sched::subscribe(&m, framework_info("fw", caps, 0.0)).await?;
    let offer = s.offer().await?;
    s.launch(&offer, "t", "serve").await;
    s.expect_update("t", "TASK_RUNNING").await?;

    agent.stop(); // silent from now on
    let expected = if partition_aware {
        "TASK_UNREACHABLE"
    } else {
        "TASK_LOST"
    };
    let u = s
        .events
        .expect("task unreachable", is_update("t", expected))
        .await?;
    assert_eq!(u["update"]["status"]["reason"], "REASON_AGENT_DISCONNECTED");
    s.events
        .expect("agent lost FAILURE", |v| {
            v["type"] == "FAILURE" && v["failure"]["agent_id"]["value"] == id.as_str()
        })
        .await?;
    let st = m.get("/master/state").await?;
    assert_eq!(st["unreachable_slaves"], 1);
    assert_eq!(st["slaves"], json!([]));

    agent.start(); // comes back with the same ID and reports the task
    let again = agent.wait_subscribed(WAIT).await?;
    assert_eq!(again, id, "the agent keeps its ID across restarts");
    let u = s
        .events
        .expect(
            "task back",
            is_update_with_reason("t", "TASK_RUNNING", "REASON_AGENT_REREGISTERED"),
        )
        .await?;
    assert_eq!(u["update"]["status"]["reason"], "REASON_AGENT_REREGISTERED");
    let st = m.get("/master/state").await?;
    assert_eq!(st["slaves"][0]["id"], id.as_str());
    assert_eq!(st["frameworks"][0]["tasks"][0]["state"], "TASK_RUNNING");
    // And it still works: kill goes through.
    s.call_ok(json!({"type":"KILL","kill":{"task_id":{"value":"t"}}}))
        .await;
    s.expect_update("t", "TASK_KILLED").await?;
    Ok(())
}

#[tokio::test]
async fn silent_agent_makes_tasks_unreachable_for_partition_aware_frameworks_and_reconciles_on_return()
-> anyhow::Result<()> {
    lost_agent_scenario(true).await
}

#[tokio::test]
async fn silent_agent_makes_tasks_lost_for_other_frameworks_and_reconciles_on_return()
-> anyhow::Result<()> {
    lost_agent_scenario(false).await
}

#[tokio::test]
async fn restarted_agent_keeps_its_id_and_unacknowledged_updates_are_delivered_once()
-> anyhow::Result<()> {
    let m = Master::start().await;
    let mut agent = m.agent("a1");
    let id = agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let offer = s.offer().await?;
    s.launch(&offer, "t", "serve").await;
    s.expect_update("t", "TASK_RUNNING").await?;
    // Restart the agent quickly (well within the agent timeout).
    agent.stop();
    agent.start();
    assert_eq!(agent.wait_subscribed(WAIT).await?, id);
    agent.finish_task("t", 0);
    s.expect_update("t", "TASK_FINISHED").await?;
    capstan_testkit::wait_until("acknowledged", WAIT, async || agent.unacknowledged() == 0).await?;
    let st = m.get("/master/state").await?;
    assert_eq!(st["slaves"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        st["frameworks"][0]["completed_tasks"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    Ok(())
}

#[tokio::test]
async fn scripted_tasks_fail_to_start_or_exit_non_zero() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let offer = s.offer().await?;
    let a = task_info(&offer, "boom", "fail", 0.1, 16.0);
    let b = task_info(&offer, "exit3", "exit 3", 0.1, 16.0);
    let c = task_info(&offer, "stuck", "hang", 0.1, 16.0);
    s.call_ok(json!({"type":"ACCEPT","accept":{"offer_ids":[offer["id"]],
        "operations":[{"type":"LAUNCH","launch":{"task_infos":[a, b, c]}}]}}))
        .await;
    let u = s.expect_update("boom", "TASK_FAILED").await?;
    assert_eq!(
        u["update"]["status"]["reason"],
        "REASON_CONTAINER_LAUNCH_FAILED"
    );
    s.expect_update("exit3", "TASK_RUNNING").await?;
    s.expect_update("exit3", "TASK_FAILED").await?;
    s.expect_update("stuck", "TASK_RUNNING").await?;
    s.call_ok(json!({"type":"KILL","kill":{"task_id":{"value":"stuck"}}}))
        .await;
    // A hung task ignores the kill: still running when reconciled.
    s.call_ok(json!({"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"stuck"}}]}}))
        .await;
    s.events
        .expect("still running", is_update("stuck", "TASK_RUNNING"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn public_agents_are_offered_to_the_slave_public_role_only() -> anyhow::Result<()> {
    let m = Master::start().await;
    let mut cfg = capstan_testkit::sim_agent::SimAgentConfig::new(m.base.clone(), "pub1");
    cfg.public = true;
    let agent = capstan_testkit::sim_agent::SimAgent::start_new(cfg);
    agent.wait_subscribed(WAIT).await?;
    let mut info = framework_info("fw", &["MULTI_ROLE"], 0.0);
    info["roles"] = json!(["slave_public"]);
    let mut s = Sched::subscribe(&m, info).await?;
    let offer = s.offer().await?;
    assert_eq!(offer["allocation_info"]["role"], "slave_public");
    assert_eq!(offer["resources"][0]["role"], "slave_public");
    let st = m.get("/master/state").await?;
    assert!(st["slaves"][0]["reserved_resources"]["slave_public"]["cpus"].as_f64() == Some(4.0));
    Ok(())
}

#[tokio::test]
async fn fifty_simulated_agents_register_and_all_get_offered() -> anyhow::Result<()> {
    let m = Master::start().await;
    let agents: Vec<_> = (0..50).map(|i| m.agent(&format!("agent-{i}"))).collect();
    for a in &agents {
        a.wait_subscribed(WAIT).await?;
    }
    let mut s = Sched::subscribe(&m, framework_info("fw", &[], 0.0)).await?;
    let mut offered = std::collections::BTreeSet::new();
    while offered.len() < 50 {
        let ev = s.events.expect("OFFERS", is_type("OFFERS")).await?;
        for o in ev["offers"]["offers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            assert!(
                offered.insert(
                    o["agent_id"]["value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                ),
                "agent offered twice: {o}"
            );
        }
    }
    let st = m.get("/master/state").await?;
    assert_eq!(st["activated_slaves"], 50);
    Ok(())
}
