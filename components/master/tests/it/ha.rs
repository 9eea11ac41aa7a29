//! High availability through a real (single-member) coord.

use std::time::Duration;

use capstan_master::Config;
use capstan_testkit::sim_agent::{SimAgent, SimAgentConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::*;

async fn start_coord(dir: &std::path::Path, token: CancellationToken) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let cfg = capstan_coord::Config {
        id: 1,
        data_dir: dir.to_path_buf(),
        members: vec![capstan_coord::config::MemberConfig {
            id: 1,
            addr: addr.clone(),
        }],
        ..capstan_coord::Config::default()
    };
    let handle = capstan_coord::Server::start_on(cfg, listener, token).await?;
    std::mem::forget(handle); // lives until the token is cancelled
    Ok(addr)
}

fn ha_config(coord: &str) -> Config {
    let mut c = Config::for_tests();
    c.coord.endpoints = vec![coord.to_string()];
    c.coord.lease_ttl = Duration::from_secs(1);
    c
}

async fn status(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn standby_redirects_to_the_leader_and_takes_over_with_the_registry() -> anyhow::Result<()> {
    let dir = capstan_testkit::temp_dir()?;
    let coord_token = CancellationToken::new();
    let coord = start_coord(dir.path(), coord_token.clone()).await?;
    let no_redirect = capstan_http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    let a = Master::start_with(ha_config(&coord)).await;
    capstan_testkit::wait_until("master A leads", WAIT, async || {
        status(&no_redirect, &format!("{}/master/state", a.base)).await == 200
    })
    .await?;
    let b = Master::start_with(ha_config(&coord)).await;
    let a_addr = a.base.trim_start_matches("http://").to_string();
    capstan_testkit::wait_until("master B follows A", WAIT, async || {
        status(&no_redirect, &format!("{}/master/state", b.base)).await == 307
    })
    .await?;
    let r = no_redirect
        .get(format!("{}/master/state?x=1", b.base))
        .send()
        .await?;
    assert_eq!(
        r.headers()["location"],
        format!("//{a_addr}/master/state?x=1")
    );
    let r = no_redirect
        .get(format!("{}/master/redirect", b.base))
        .send()
        .await?;
    assert_eq!(r.headers()["location"], format!("//{a_addr}"));
    let r = no_redirect
        .post(format!("{}/api/v1/scheduler", b.base))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(r.status(), 307);
    assert_eq!(
        status(&no_redirect, &format!("{}/version", b.base)).await,
        200
    );

    // An agent and a framework on A; the framework is torn down (registry: removed).
    let mut cfg = SimAgentConfig::new(b.base.clone(), "a1"); // via the standby's redirect
    cfg.other_masters = vec![a.base.clone()];
    let agent = SimAgent::start_new(cfg);
    let aid = agent.wait_subscribed(WAIT).await?;
    let s = Sched::subscribe(&a, framework_info("old", &[], 100.0)).await?;
    let old_id = s.framework_id.clone();
    s.call_ok(json!({"type":"TEARDOWN"})).await;
    drop(s);
    // Another framework keeps a task running across the leader change.
    let mut keep = Sched::subscribe(&a, framework_info("keep", &[], 100.0)).await?;
    let keep_id = keep.framework_id.clone();
    let offer = keep.offer().await?;
    keep.launch(&offer, "survivor", "serve").await;
    keep.expect_update("survivor", "TASK_RUNNING").await?;
    drop(keep);
    // A second agent is drained on A: it stays drained on B.
    let mut cfg = SimAgentConfig::new(a.base.clone(), "a2");
    cfg.other_masters = vec![b.base.clone()];
    let drained = SimAgent::start_new(cfg);
    let drained_id = drained.wait_subscribed(WAIT).await?;
    a.operator(json!({"type":"DRAIN_AGENT","drain_agent":{"agent_id":{"value": drained_id}}}))
        .await;

    // A goes away: B takes over, the agent re-registers there with its ID.
    let mut a = a;
    if let Some(h) = a.handle.take() {
        h.shutdown().await;
    }
    capstan_testkit::wait_until("master B leads", WAIT, async || {
        status(&no_redirect, &format!("{}/master/state", b.base)).await == 200
    })
    .await?;
    capstan_testkit::wait_until("agents re-registered on B", WAIT, async || {
        b.get("/master/slaves").await.is_ok_and(|s| {
            let slaves = s["slaves"].as_array().cloned().unwrap_or_default();
            let of = |id: &str| slaves.iter().find(|a| a["id"] == id).cloned();
            of(aid.as_str()).is_some_and(|a| a["active"] == true)
                && of(drained_id.as_str()).is_some_and(|a| a["deactivated"] == true)
        })
    })
    .await?;
    // The removed framework stays removed on the new leader.
    let mut info = framework_info("old", &[], 100.0);
    info["id"] = json!({"value": old_id});
    let call = json!({"type":"SUBSCRIBE","framework_id":{"value": old_id},"subscribe":{"framework_info": info}});
    let r = b.post_json("/api/v1/scheduler", &call).await;
    let mut ev = EventStream::new(r);
    ev.expect("ERROR", is_type("ERROR")).await?;
    // The surviving framework is recovered with its task and can re-subscribe.
    let st = b.get("/master/state").await?;
    let fw = st["frameworks"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["id"] == keep_id.as_str()).cloned());
    let fw = fw.expect("recovered framework in state");
    assert_eq!(fw["recovered"], true);
    assert_eq!(fw["tasks"][0]["state"], "TASK_RUNNING");
    let mut info = framework_info("keep", &[], 100.0);
    info["id"] = json!({"value": keep_id});
    let mut keep = Sched::subscribe(&b, info).await?;
    keep.call_ok(json!({"type":"RECONCILE","reconcile":{"tasks":[]}}))
        .await;
    keep.events
        .expect("survivor running", is_update("survivor", "TASK_RUNNING"))
        .await?;
    // The agent's remaining resources are offered again on the new leader.
    let offer = keep.offer().await?;
    assert_eq!(offer["agent_id"]["value"], aid.as_str());
    coord_token.cancel();
    Ok(())
}

#[tokio::test]
async fn leader_that_cannot_renew_its_lease_stops_serving() -> anyhow::Result<()> {
    let dir = capstan_testkit::temp_dir()?;
    let coord_token = CancellationToken::new();
    let coord = start_coord(dir.path(), coord_token.clone()).await?;
    let no_redirect = capstan_http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let m = Master::start_with(ha_config(&coord)).await;
    capstan_testkit::wait_until("master leads", WAIT, async || {
        status(&no_redirect, &format!("{}/master/state", m.base)).await == 200
    })
    .await?;
    coord_token.cancel(); // coord gone: the lease cannot be renewed
    let handle = m.handle.as_ref().expect("running");
    capstan_testkit::wait_until("master gave up leadership", WAIT, async || {
        handle.lost_leadership()
    })
    .await?;
    capstan_testkit::wait_until("master stopped serving", WAIT, async || {
        status(&no_redirect, &format!("{}/master/state", m.base)).await != 200
    })
    .await?;
    Ok(())
}

/// Mesos' registrar contract: a framework hears SUBSCRIBED only once its registration is in
/// coord, so a leader that crashes right after cannot have acknowledged a lost change.
#[tokio::test]
async fn a_subscription_is_acknowledged_only_once_coord_has_it() -> anyhow::Result<()> {
    let dir = capstan_testkit::temp_dir()?;
    let coord_token = CancellationToken::new();
    let coord = start_coord(dir.path(), coord_token.clone()).await?;
    let proxy = capstan_testkit::FaultProxy::start(coord.parse()?).await?;
    let mut cfg = ha_config(&proxy.local_addr().to_string());
    // Long enough that the blocked window below cannot cost the lease.
    cfg.coord.lease_ttl = Duration::from_secs(30);
    let m = Master::start_with(cfg).await;
    let client = capstan_http_client::client();
    capstan_testkit::wait_until("the master leads", WAIT, async || {
        status(&client, &format!("{}/master/state", m.base)).await == 200
    })
    .await?;

    proxy.block();
    let mut subscribing = tokio::spawn({
        let (base, client) = (m.base.clone(), m.client.clone());
        async move {
            let m = Master {
                handle: None,
                base,
                client,
            };
            Sched::subscribe(&m, framework_info("durable", &[], 100.0)).await
        }
    });
    // The core has registered the framework (it is in the state) ...
    capstan_testkit::wait_until("the framework is in the state", WAIT, async || {
        m.get("/master/state")
            .await
            .is_ok_and(|s| s["frameworks"].as_array().is_some_and(|f| !f.is_empty()))
    })
    .await?;
    // ... but while coord cannot take the write, the framework is not told.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut subscribing)
            .await
            .is_err(),
        "SUBSCRIBED was sent before the registry write was durable"
    );

    proxy.unblock();
    let sched = tokio::time::timeout(WAIT, subscribing).await???;
    let registry = capstan_coord_client::Client::new([coord.as_str()])?;
    let key = format!("/capstan/master/registry/frameworks/{}", sched.framework_id);
    assert!(
        registry.get(&key).await?.is_some(),
        "{key} is in coord once SUBSCRIBED arrived"
    );
    coord_token.cancel();
    Ok(())
}
