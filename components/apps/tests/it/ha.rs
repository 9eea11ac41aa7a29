//! High availability through a real coord member: one leader, followers proxy, failover
//! keeps the framework and its tasks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use capstan_apps::store::{Listing, StoreOp};
use capstan_apps::{Config, CoordStore, Server, Store, StoreError};
use capstan_testkit::wait_until;
use futures::future::BoxFuture;
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

/// A one-member coord in `dir`; returns it and its `http://` URL.
async fn start_coord(dir: &std::path::Path) -> (capstan_coord::ServerHandle, String) {
    let coord = capstan_coord::Server::start_single(dir.join("coord"), CancellationToken::new())
        .await
        .expect("coord starts");
    let url = format!("http://{}", coord.local_addr());
    (coord, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_elect_one_leader_through_coord_and_fail_over_without_killing_tasks() {
    let dir = capstan_testkit::temp_dir().unwrap();
    let (coord, coord_url) = start_coord(dir.path()).await;
    let master = FakeMaster::start(2).await;
    let config = || {
        let mut c = Config::for_tests(&master.url());
        c.store.coord_endpoints = vec![coord_url.clone()];
        c.store.prefix = Some("/test/apps".into());
        c.leader_lease_ttl = Duration::from_secs(2);
        c
    };
    let http = capstan_http_client::client();
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

/// An apps instance on its own runtime, so the test can kill it the hard way: dropping the
/// runtime stops every task at once, without resigning or revoking the leader lease.
struct Killable {
    addr: std::net::SocketAddr,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Killable {
    fn start(config: Config) -> Killable {
        Killable::start_inner(config, None)
    }

    fn start_with_store(config: Config, store: Arc<dyn Store>) -> Killable {
        Killable::start_inner(config, Some(store))
    }

    fn start_inner(config: Config, store: Option<Arc<dyn Store>>) -> Killable {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let token = CancellationToken::new();
            let handle = rt
                .block_on(async {
                    match store {
                        Some(store) => Server::start_with_store(config, store, token).await,
                        None => Server::start(config, token).await,
                    }
                })
                .expect("apps starts");
            addr_tx.send(handle.local_addr()).expect("test waits");
            let _ = rt.block_on(kill_rx);
            // No shutdown(): the handle and every task die with the runtime.
            std::mem::forget(handle);
            rt.shutdown_background();
        });
        let addr = addr_rx.recv().expect("apps started");
        Killable {
            addr,
            kill: Some(kill_tx),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("apps thread ends");
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Serves `/old` (always 200) and `/new` (503 until `ready` is set) on loopback.
async fn health_server(ready: Arc<AtomicBool>) -> u16 {
    let router = axum::Router::new()
        .route("/old", axum::routing::get(|| async { "ok" }))
        .route(
            "/new",
            axum::routing::get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::SeqCst) {
                        http::StatusCode::OK
                    } else {
                        http::StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_apps_leader_mid_deployment_lets_the_standby_finish_it_without_duplicate_tasks()
{
    let dir = capstan_testkit::temp_dir().unwrap();
    let (coord, coord_url) = start_coord(dir.path()).await;
    let master = FakeMaster::start(2).await;
    let ready = Arc::new(AtomicBool::new(false));
    let health_port = health_server(ready.clone()).await;
    let config = || {
        let mut c = Config::for_tests(&master.url());
        c.store.coord_endpoints = vec![coord_url.clone()];
        c.store.prefix = Some("/kill/apps".into());
        c.leader_lease_ttl = Duration::from_secs(2);
        c
    };
    let http = capstan_http_client::client();
    let mut a = Killable::start(config());
    let a_addr = a.addr.to_string();
    wait_until("first instance elected", WAIT, async || {
        leader_of(&http, &format!("http://{a_addr}"))
            .await
            .map(|l| l == a_addr)
    })
    .await
    .unwrap();
    let b = Server::start(config(), CancellationToken::new())
        .await
        .unwrap();
    let b_addr = b.local_addr().to_string();
    let mut apps = Apps {
        url: format!("http://{b_addr}"),
        handle: Some(b),
        http: http.clone(),
    };
    wait_until("follower knows the leader", WAIT, async || {
        leader_of(&http, &apps.url).await.map(|l| l == a_addr)
    })
    .await
    .unwrap();
    let check = |path: &str| {
        json!([{"protocol": "HTTP", "path": path, "port": health_port, "gracePeriodSeconds": 0,
            "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 0}])
    };
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": "/roll", "cmd": "serve", "cpus": 0.1, "mem": 16, "instances": 3,
                "healthChecks": check("/old")}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let old = task_ids(&apps.wait_running("/roll", 3).await);
    // A rolling upgrade whose new tasks stay unhealthy: it cannot finish while the leader lives.
    let (s, v) = apps
        .put("/v2/apps/roll", json!({"healthChecks": check("/new")}))
        .await;
    assert_eq!(s, 200, "{v}");
    let target_version = v["version"].as_str().unwrap().to_string();
    let store = capstan_coord_client::Client::new([coord_url.as_str()]).unwrap();
    wait_until(
        "three new tasks launched and stored, the old ones kept",
        WAIT,
        async || {
            let stored = store.list_all("/kill/apps/tasks/").await?.kvs.len();
            let deployments = apps.get("/v2/deployments").await;
            anyhow::ensure!(
                stored == 6 && master.live_tasks().len() == 6,
                "stored {stored}, live {}",
                master.live_tasks().len()
            );
            anyhow::ensure!(deployments.as_array().is_some_and(|d| d.len() == 1));
            Ok(())
        },
    )
    .await
    .unwrap();
    let launched_before_kill = launched(&master);
    assert_eq!(launched_before_kill, 6);
    a.kill();
    wait_until("the standby elected", WAIT, async || {
        leader_of(&http, &apps.url).await.map(|l| l == b_addr)
    })
    .await
    .unwrap();
    wait_until("the standby subscribed", WAIT, async || {
        master.with(|s| s.subscribes) == 2
    })
    .await
    .unwrap();
    let ids = master.with(|s| s.framework_ids.clone());
    assert_eq!(ids[0], ids[1], "same framework id, read from coord");
    // The deployment survived the failover and is still waiting for health.
    let deployments = apps.get("/v2/deployments").await;
    assert_eq!(deployments.as_array().unwrap().len(), 1, "{deployments}");
    assert_eq!(master.live_tasks().len(), 6);
    ready.store(true, Ordering::SeqCst);
    apps.wait_no_deployments().await;
    let app = apps.wait_running("/roll", 3).await;
    assert_eq!(app["instances"], 3);
    assert_eq!(app["version"], target_version.as_str());
    assert!(
        app["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["version"] == target_version.as_str()),
        "{app}"
    );
    let new = task_ids(&app);
    assert!(new.iter().all(|t| !old.contains(t)), "old tasks replaced");
    let mut live: Vec<String> = master.live_tasks().into_iter().map(|(id, _)| id).collect();
    live.sort();
    assert_eq!(live, new, "the master runs exactly the app's tasks");
    assert_eq!(launched(&master), 6, "no task launched twice");
    let killed: BTreeSet<String> = master
        .calls_of("KILL")
        .iter()
        .filter_map(|k| k["kill"]["task_id"]["value"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        killed,
        old.iter().cloned().collect::<BTreeSet<_>>(),
        "only old tasks killed"
    );
    apps.stop().await;
    let _ = coord.shutdown().await;
}

/// Tasks launched through ACCEPT calls so far.
fn launched(master: &FakeMaster) -> usize {
    master
        .calls_of("ACCEPT")
        .iter()
        .flat_map(|c| {
            c["accept"]["operations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|op| {
            op["launch"]["task_infos"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0)
        })
        .sum()
}

/// A store whose task writes never complete (a leader about to die), passing the rest on.
struct StuckTaskWrites {
    inner: CoordStore,
    stuck: Arc<AtomicBool>,
}

impl Store for StuckTaskWrites {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        self.inner.get(key)
    }

    fn put(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>> {
        if key.starts_with("/tasks/") {
            self.stuck.store(true, Ordering::SeqCst);
            return Box::pin(std::future::pending());
        }
        self.inner.put(key, value)
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.delete(key)
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Listing, StoreError>> {
        self.inner.list(prefix)
    }

    fn apply<'a>(&'a self, ops: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let (tasks, rest): (Vec<StoreOp>, Vec<StoreOp>) = ops
                .iter()
                .cloned()
                .partition(|op| matches!(op, StoreOp::Put(k, _) if k.starts_with("/tasks/")));
            self.inner.apply(&rest).await?;
            if !tasks.is_empty() {
                self.stuck.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_dying_before_its_tasks_are_stored_has_launched_none_of_them() {
    let dir = capstan_testkit::temp_dir().unwrap();
    let (coord, coord_url) = start_coord(dir.path()).await;
    let master = FakeMaster::start(2).await;
    let config = || {
        let mut c = Config::for_tests(&master.url());
        c.store.coord_endpoints = vec![coord_url.clone()];
        c.store.prefix = Some("/stuck/apps".into());
        c.leader_lease_ttl = Duration::from_secs(2);
        c
    };
    let stuck = Arc::new(AtomicBool::new(false));
    let store = StuckTaskWrites {
        inner: CoordStore::new(std::slice::from_ref(&coord_url), "/stuck/apps").unwrap(),
        stuck: stuck.clone(),
    };
    let mut a = Killable::start_with_store(config(), Arc::new(store));
    let a_url = format!("http://{}", a.addr);
    let http = capstan_http_client::client();
    wait_until("first instance elected", WAIT, async || {
        leader_of(&http, &a_url)
            .await
            .map(|l| l == a.addr.to_string())
    })
    .await
    .unwrap();
    let leader = Apps {
        url: a_url,
        handle: None,
        http: http.clone(),
    };
    let (s, v) = leader
        .post(
            "/v2/apps",
            json!({"id": "/early", "cmd": "serve", "cpus": 0.1, "mem": 16, "instances": 2}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    wait_until("the leader placed the tasks", WAIT, async || {
        stuck.load(Ordering::SeqCst)
    })
    .await
    .unwrap();
    a.kill();
    assert_eq!(
        launched(&master),
        0,
        "nothing launched before it was stored"
    );
    let b = Server::start(config(), CancellationToken::new())
        .await
        .unwrap();
    let mut apps = Apps {
        url: format!("http://{}", b.local_addr()),
        handle: Some(b),
        http,
    };
    let app = apps.wait_running("/early", 2).await;
    assert_eq!(launched(&master), 2, "each instance launched once");
    assert!(
        master.calls_of("KILL").is_empty(),
        "no unknown task to kill"
    );
    let mut live: Vec<String> = master.live_tasks().into_iter().map(|(id, _)| id).collect();
    live.sort();
    assert_eq!(live, task_ids(&app));
    apps.stop().await;
    let _ = coord.shutdown().await;
}

/// Reliability probe F2: an app acknowledged with 201 is in coord, so a leader killed right
/// after answering loses nothing; and the standby takes over as soon as the dead leader's
/// port refuses connections, long before its (here 60 s) lease would expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_app_survives_a_leader_killed_right_after_the_201() {
    let dir = capstan_testkit::temp_dir().unwrap();
    let (coord, coord_url) = start_coord(dir.path()).await;
    let master = FakeMaster::start(1).await;
    let config = || {
        let mut c = Config::for_tests(&master.url());
        c.store.coord_endpoints = vec![coord_url.clone()];
        c.store.prefix = Some("/acked/apps".into());
        c.leader_lease_ttl = Duration::from_secs(60);
        c
    };
    let http = capstan_http_client::client();
    let mut a = Killable::start(config());
    let a_url = format!("http://{}", a.addr);
    wait_until("first instance elected", WAIT, async || {
        leader_of(&http, &a_url)
            .await
            .map(|l| l == a.addr.to_string())
    })
    .await
    .unwrap();
    let b = Server::start(config(), CancellationToken::new())
        .await
        .unwrap();
    let b_addr = b.local_addr().to_string();
    let mut apps_b = Apps {
        url: format!("http://{b_addr}"),
        handle: Some(b),
        http: http.clone(),
    };
    let ids: Vec<String> = (0..20).map(|i| format!("/acked/a{i}")).collect();
    let posts = ids.iter().map(|id| {
        let (http, url) = (http.clone(), a_url.clone());
        let body = json!({"id": id, "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 0});
        async move {
            http.post(format!("{url}/v2/apps"))
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    });
    let statuses = futures::future::join_all(posts).await;
    a.kill();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    wait_until(
        "the standby took over before the lease expired",
        WAIT,
        async || leader_of(&http, &apps_b.url).await.map(|l| l == b_addr),
    )
    .await
    .unwrap();
    for id in &ids {
        let (s, _, v) = apps_b
            .req(reqwest::Method::GET, &format!("/v2/apps{id}"), None)
            .await;
        assert_eq!(s, 200, "{id} was acknowledged, so it must be there: {v}");
    }
    apps_b.stop().await;
    let _ = coord.shutdown().await;
}
