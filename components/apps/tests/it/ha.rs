//! High availability through a real coord member: one leader, followers proxy, failover
//! keeps the framework and its tasks.

use std::time::Duration;

use capstan_apps::{Config, Server};
use capstan_testkit::wait_until;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::fake_master::FakeMaster;
use crate::support::{Apps, WAIT, task_ids};

async fn leader_of(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let v: Value = http
        .get(format!("{url}/v2/leader"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["leader"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_elect_one_leader_through_coord_and_fail_over_without_killing_tasks() {
    let dir = capstan_testkit::temp_dir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coord_addr = listener.local_addr().unwrap();
    let coord_cfg = capstan_coord::Config {
        id: 1,
        listen: coord_addr,
        data_dir: dir.path().join("coord"),
        members: vec![capstan_coord::MemberConfig {
            id: 1,
            addr: coord_addr.to_string(),
        }],
        ..capstan_coord::Config::default()
    };
    let coord = capstan_coord::Server::start_on(coord_cfg, listener, CancellationToken::new())
        .await
        .expect("coord starts");
    let master = FakeMaster::start(2).await;
    let config = || {
        let mut c = Config::for_tests(&master.url());
        c.store.coord_endpoints = vec![format!("http://{coord_addr}")];
        c.store.prefix = Some("/test/apps".into());
        c.leader_lease_ttl = Duration::from_secs(2);
        c
    };
    let http = reqwest::Client::new();
    let a = Server::start(config(), CancellationToken::new())
        .await
        .unwrap();
    let a_addr = a.local_addr().to_string();
    let a_url = format!("http://{a_addr}");
    wait_until("first instance elected", WAIT, async || {
        leader_of(&http, &a_url).await.map(|l| l == a_addr)
    })
    .await
    .unwrap();
    let b = Server::start(config(), CancellationToken::new())
        .await
        .unwrap();
    let b_addr = b.local_addr().to_string();
    let apps_b = Apps {
        url: format!("http://{b_addr}"),
        handle: Some(b),
        http: http.clone(),
    };
    // The follower proxies to the leader.
    wait_until("follower knows the leader", WAIT, async || {
        leader_of(&http, &apps_b.url).await.map(|l| l == a_addr)
    })
    .await
    .unwrap();
    let (s, v) = apps_b
        .post(
            "/v2/apps",
            json!({"id": "/ha", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let before = task_ids(&apps_b.wait_running("/ha", 2).await);
    assert_eq!(
        master.with(|s| s.subscribes),
        1,
        "only the leader subscribes"
    );
    let resp = http
        .get(format!("{}/v2/apps", apps_b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["X-Marathon-Leader"],
        format!("http://{a_addr}").as_str()
    );
    // The leader goes away: the follower takes over the same framework and tasks.
    a.shutdown().await;
    wait_until("second instance elected", WAIT, async || {
        leader_of(&http, &apps_b.url).await.map(|l| l == b_addr)
    })
    .await
    .unwrap();
    wait_until("resubscribed", WAIT, async || {
        master.with(|s| s.subscribes) == 2
    })
    .await
    .unwrap();
    let ids = master.with(|s| s.framework_ids.clone());
    assert_eq!(ids[0], ids[1], "same framework id, read from coord");
    assert_eq!(task_ids(&apps_b.wait_running("/ha", 2).await), before);
    assert!(master.calls_of("KILL").is_empty(), "no task killed");
    let mut apps_b = apps_b;
    apps_b.stop().await;
    let _ = coord.shutdown().await;
}
