//! End to end with the real `capstan-master` and `testkit::sim_agent` agents: apps is a
//! framework on the master through the public scheduler API, like Marathon on Mesos.

use std::sync::Arc;
use std::time::Duration;

use capstan_apps::InMemoryStore;
use capstan_testkit::sim_agent::{SimAgent, SimAgentConfig};
use capstan_testkit::wait_until;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{Apps, WAIT, task_ids};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_runs_scales_survives_a_restart_and_deletes_on_the_real_master_with_sim_agents() {
    let master = capstan_master::Server::start(
        capstan_master::Config::for_tests(),
        CancellationToken::new(),
    )
    .await
    .expect("master starts");
    let murl = format!("http://{}", master.local_addr());
    let agents: Vec<SimAgent> = (0..2u64)
        .map(|i| {
            let mut cfg = SimAgentConfig::new(murl.clone(), format!("agent{i}"));
            cfg.ports = (31000 + i * 1000, 31999 + i * 1000);
            cfg.attributes = vec![("rack".into(), format!("r{i}"))];
            SimAgent::start_new(cfg)
        })
        .collect();
    for a in &agents {
        a.wait_subscribed(WAIT).await.expect("agent subscribed");
    }
    let store = Arc::new(InMemoryStore::new());
    let mut apps = Apps::start_on(&murl, store.clone()).await;
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": "/e2e/web", "cmd": "serve forever", "cpus": 0.1, "mem": 32, "instances": 2,
            "constraints": [["hostname", "UNIQUE"]]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let app = apps.wait_running("/e2e/web", 2).await;
    let hosts: std::collections::BTreeSet<String> = app["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hosts.len(), 2, "UNIQUE hostname spreads the tasks");
    let on_agents = || {
        agents
            .iter()
            .flat_map(|a| {
                a.tasks()
                    .into_iter()
                    .filter(|(_, s)| s == "TASK_RUNNING")
                    .map(|(t, _)| t)
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    wait_until("tasks running on the agents", WAIT, async || {
        on_agents().len() == 2
    })
    .await
    .unwrap();
    // Restart apps over the same store: same framework, same tasks.
    let before = task_ids(&app);
    apps.stop().await;
    let mut apps = Apps::start_on(&murl, store).await;
    let after = task_ids(&apps.wait_running("/e2e/web", 2).await);
    assert_eq!(before, after);
    assert_eq!(on_agents().len(), 2, "nothing killed or duplicated");
    // Scale down and delete.
    let (s, v) = apps.put("/v2/apps/e2e/web", json!({"instances": 1})).await;
    assert_eq!(s, 200, "{v}");
    apps.wait_running("/e2e/web", 1).await;
    wait_until("one task left on the agents", WAIT, async || {
        on_agents().len() == 1
    })
    .await
    .unwrap();
    let (s, _) = apps.delete("/v2/apps/e2e/web").await;
    assert_eq!(s, 200);
    wait_until("all tasks gone from the agents", WAIT, async || {
        on_agents().is_empty()
    })
    .await
    .unwrap();
    apps.stop().await;
    drop(agents);
    tokio::time::timeout(Duration::from_secs(10), master.shutdown())
        .await
        .expect("master stops");
}
