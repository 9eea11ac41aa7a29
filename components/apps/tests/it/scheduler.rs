//! The Mesos side: reconciliation after restart, redirects, resubscription, unreachable
//! tasks, health checks, and the TaskInfo details agents and dcos-net read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::response::Response;
use capstan_apps::{Config, InMemoryStore, Server};
use capstan_testkit::wait_until;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::fake_master::{FakeAgent, FakeMaster};
use crate::support::{Apps, WAIT, task_ids};

#[tokio::test]
async fn a_restarted_apps_keeps_its_framework_id_and_tasks_without_killing_or_duplicating() {
    let master = FakeMaster::start(2).await;
    let store = Arc::new(InMemoryStore::new());
    let mut apps = Apps::start_with_store(&master, store.clone()).await;
    apps.post(
        "/v2/apps",
        json!({"id": "/keep", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 3}),
    )
    .await;
    let before = task_ids(&apps.wait_running("/keep", 3).await);
    apps.stop().await;
    let apps = Apps::start_with_store(&master, store).await;
    wait_until("second subscription", WAIT, async || {
        master.with(|s| s.subscribes) == 2
    })
    .await
    .unwrap();
    let ids = master.with(|s| s.framework_ids.clone());
    assert_eq!(ids[0], ids[1], "re-registered as the same framework");
    let resubscribe = &master.calls_of("SUBSCRIBE")[1];
    assert_eq!(
        resubscribe["subscribe"]["framework_info"]["id"]["value"],
        ids[0].as_str()
    );
    assert_eq!(
        resubscribe["subscribe"]["framework_info"]["failover_timeout"],
        604_800.0
    );
    wait_until(
        "explicit reconciliation of the stored tasks",
        WAIT,
        async || {
            master.calls_of("RECONCILE").iter().any(|c| {
                c["reconcile"]["tasks"]
                    .as_array()
                    .is_some_and(|t| t.len() == 3)
            })
        },
    )
    .await
    .unwrap();
    let after = task_ids(&apps.wait_running("/keep", 3).await);
    assert_eq!(before, after);
    assert!(master.calls_of("KILL").is_empty(), "no task killed");
    assert_eq!(master.live_tasks().len(), 3, "none duplicated");
}

#[tokio::test]
async fn the_driver_follows_a_307_to_the_leading_master_and_resubscribes_after_a_broken_stream() {
    let master = FakeMaster::start(1).await;
    let leader = master.addr;
    let redirector = axum::Router::new().fallback(move || async move {
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = http::StatusCode::TEMPORARY_REDIRECT;
        r.headers_mut().insert(
            "location",
            format!("//{leader}/api/v1/scheduler").parse().unwrap(),
        );
        r
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let follower = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, redirector).await });
    let mut config = Config::for_tests(&format!("http://{follower}"));
    config.masters.push(master.url());
    let handle = Server::start(config, CancellationToken::new())
        .await
        .unwrap();
    let apps = Apps {
        url: format!("http://{}", handle.local_addr()),
        handle: Some(handle),
        http: capstan_http_client::client(),
    };
    apps.post(
        "/v2/apps",
        json!({"id": "/r", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16}),
    )
    .await;
    let first = task_ids(&apps.wait_running("/r", 1).await);
    master.drop_stream();
    wait_until("resubscription", WAIT, async || {
        master.with(|s| s.subscribes) >= 2
    })
    .await
    .unwrap();
    let ids = master.with(|s| s.framework_ids.clone());
    assert!(ids.iter().all(|i| i == &ids[0]));
    assert_eq!(task_ids(&apps.wait_running("/r", 1).await), first);
    assert!(master.calls_of("KILL").is_empty());
}

#[tokio::test]
async fn unreachable_tasks_are_replaced_after_inactive_after_and_expunged_after_expunge_after() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    apps.post(
        "/v2/apps",
        json!({"id": "/u", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16,
        "unreachableStrategy": {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 1}}),
    )
    .await;
    let first = task_ids(&apps.wait_running("/u", 1).await).remove(0);
    master.with(|s| s.update(&first, "TASK_UNREACHABLE", true));
    wait_until(
        "a replacement next to the unreachable task",
        WAIT,
        async || {
            let app = apps.get("/v2/apps/u").await["app"].clone();
            let states: Vec<String> = app["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["state"].as_str().unwrap().to_string())
                .collect();
            states.contains(&"TASK_UNREACHABLE".to_string())
                && states.contains(&"TASK_RUNNING".to_string())
        },
    )
    .await
    .unwrap();
    wait_until("the unreachable task expunged", WAIT, async || {
        let app = apps.get("/v2/apps/u").await["app"].clone();
        !task_ids(&app).contains(&first)
    })
    .await
    .unwrap();
    assert!(
        master
            .calls_of("KILL")
            .iter()
            .any(|k| k["kill"]["task_id"]["value"] == first.as_str())
    );
    apps.wait_running("/u", 1).await;
}

#[tokio::test]
async fn unhealthy_tasks_are_killed_and_replaced_and_healthy_ones_finish_the_deployment() {
    // The only port the agent offers is one a test listener holds: TCP checks succeed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = u64::from(listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let mut agent = FakeAgent::new(0);
    agent.ports = (port, port);
    let mut dead = FakeAgent::new(1);
    dead.hostname = "127.0.0.1".into();
    let master = FakeMaster::start_with(vec![agent]).await;
    let apps = Apps::start(&master).await;
    apps.post("/v2/apps", json!({"id": "/ok", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16,
        "healthChecks": [{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 1}]})).await;
    let app = apps.wait_running("/ok", 1).await;
    assert_eq!(app["tasksHealthy"], 1, "{app}");
    assert_eq!(app["tasks"][0]["healthCheckResults"][0]["alive"], true);
    // An HTTP check against a port nobody listens on.
    let master2 = FakeMaster::start_with(vec![dead]).await;
    let apps2 = Apps::start(&master2).await;
    apps2.post("/v2/apps", json!({"id": "/sick", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16,
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 1}]})).await;
    wait_until("an unhealthy task killed and replaced", WAIT, async || {
        let kills = master2.calls_of("KILL").len();
        let launches: usize = master2.calls_of("ACCEPT").len();
        kills >= 1 && launches >= 2
    })
    .await
    .unwrap();
    let q = apps2.get("/v2/apps/sick").await;
    assert!(
        q["app"]["deployments"].as_array().unwrap().len() == 1,
        "never healthy: deployment stays"
    );
}

#[tokio::test]
async fn task_info_carries_docker_bridge_ports_vip_labels_and_the_mesos_health_check() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    let (s, v) = apps
        .post("/v2/apps", json!({
            "id": "/a/b", "cpus": 0.1, "mem": 16,
            "container": {"type": "DOCKER", "docker": {"image": "capstan/http", "network": "BRIDGE",
                "portMappings": [{"containerPort": 80, "name": "http", "labels": {"VIP_0": "/b:80"}}]}},
            "healthChecks": [{"protocol": "MESOS_HTTP", "portIndex": 0, "path": "/"}]
        }))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["networks"], json!([{"mode": "container/bridge"}]));
    wait_until("launch", WAIT, async || !master.live_tasks().is_empty())
        .await
        .unwrap();
    let (_, t) = master.live_tasks().remove(0);
    let info = t.info;
    assert_eq!(info["name"], "b.a");
    let host_port = info["container"]["docker"]["port_mappings"][0]["host_port"]
        .as_u64()
        .unwrap();
    assert_eq!(info["container"]["docker"]["network"], "BRIDGE");
    assert_eq!(
        info["container"]["docker"]["port_mappings"][0]["container_port"],
        80
    );
    assert_eq!(info["health_check"]["type"], "HTTP");
    assert_eq!(
        info["health_check"]["http"]["port"], 80,
        "Mesos checks run inside the container"
    );
    let port = &info["discovery"]["ports"]["ports"][0];
    assert_eq!(port["number"].as_u64(), Some(host_port));
    assert_eq!(port["name"], "http");
    let labels: Vec<(String, String)> = port["labels"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["key"].as_str().unwrap().to_string(),
                l["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(labels.contains(&("VIP_0".into(), "/b:80".into())));
    assert!(labels.contains(&("network-scope".into(), "host".into())));
    let env: Vec<String> = info["command"]["environment"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{}={}",
                v["name"].as_str().unwrap(),
                v["value"].as_str().unwrap()
            )
        })
        .collect();
    assert!(env.contains(&"PORT0=80".to_string()), "{env:?}");
    assert!(env.contains(&"MARATHON_APP_DOCKER_IMAGE=capstan/http".to_string()));
}

/// A readiness endpoint on loopback: `/ready` answers 503 while `ready` is false, then 200;
/// `hits` counts the requests.
async fn readiness_server(ready: Arc<AtomicBool>, hits: Arc<AtomicUsize>) -> u64 {
    let router = axum::Router::new().route(
        "/ready",
        axum::routing::get(move || {
            let (ready, hits) = (ready.clone(), hits.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                if ready.load(Ordering::SeqCst) {
                    (http::StatusCode::OK, "ready")
                } else {
                    (http::StatusCode::SERVICE_UNAVAILABLE, "warming up")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = u64::from(listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, router).await });
    port
}

#[tokio::test]
async fn an_upgrade_keeps_the_old_task_until_the_new_one_passes_its_readiness_check() {
    // Two agents, each offering exactly the port of one readiness endpoint.
    let ready = Arc::new(AtomicBool::new(true));
    let hits = Arc::new(AtomicUsize::new(0));
    let mut agents = Vec::new();
    for n in 0..2 {
        let port = readiness_server(ready.clone(), hits.clone()).await;
        let mut a = FakeAgent::new(n);
        a.ports = (port, port);
        agents.push(a);
    }
    let master = FakeMaster::start_with(agents).await;
    let apps = Apps::start(&master).await;
    let app = |version: &str| {
        json!({"id": "/rd", "cmd": "serve", "cpus": 0.1, "mem": 16, "instances": 1,
            "env": {"V": version},
            "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": [{"name": "warm", "path": "/ready", "portName": "http-api",
                "intervalSeconds": 2, "timeoutSeconds": 1, "preserveLastResponse": true}]})
    };
    let (s, v) = apps.post("/v2/apps", app("1")).await;
    assert_eq!(s, 201, "{v}");
    let old = task_ids(&apps.wait_running("/rd", 1).await);
    assert!(
        hits.load(Ordering::SeqCst) >= 1,
        "the start waited for readiness"
    );
    // The new task is not ready at first: the old one must stay.
    ready.store(false, Ordering::SeqCst);
    let hits_before = hits.load(Ordering::SeqCst);
    let (s, v) = apps.put("/v2/apps/rd", app("2")).await;
    assert_eq!(s, 200, "{v}");
    let (new_task, results) = wait_until("the new task answered 503", WAIT, async || {
        let d = apps.get("/v2/deployments").await;
        let results = d[0]["currentActions"][0]["readinessCheckResults"].clone();
        let r = &results[0];
        if r["lastResponse"]["status"] == 503 {
            Some((r["taskId"].as_str()?.to_string(), results.clone()))
        } else {
            None
        }
    })
    .await
    .unwrap();
    assert!(!old.contains(&new_task));
    assert_eq!(
        results,
        json!([{"name": "warm", "taskId": new_task, "ready": false,
            "lastResponse": {"status": 503, "contentType": "text/plain; charset=utf-8", "body": "warming up"}}])
    );
    assert_eq!(results[0]["ready"], false);
    assert!(hits.load(Ordering::SeqCst) > hits_before);
    assert!(master.calls_of("KILL").is_empty(), "old task kept");
    let app_v = apps.get("/v2/apps/rd").await;
    assert_eq!(app_v["app"]["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(app_v["app"]["deployments"].as_array().unwrap().len(), 1);
    // Ready now: the upgrade finishes and the old task goes.
    ready.store(true, Ordering::SeqCst);
    let app_v = apps.wait_running("/rd", 1).await;
    assert_eq!(task_ids(&app_v), vec![new_task]);
    let killed: Vec<Value> = master
        .calls_of("KILL")
        .iter()
        .map(|k| k["kill"]["task_id"]["value"].clone())
        .collect();
    assert_eq!(killed, vec![json!(old[0])]);
    let listed = apps.get("/v2/apps?embed=apps.readiness").await;
    assert_eq!(
        listed["apps"][0]["readinessCheckResults"][0]["ready"], true,
        "{listed}"
    );
    let plain = apps.get("/v2/apps").await;
    assert!(plain["apps"][0].get("readinessCheckResults").is_none());
}

/// An HTTPS server on loopback with a certificate made up now (self-signed, for a name
/// that is not the address it is reached at): `/health` and `/ready` answer 200.
async fn tls_server() -> u64 {
    let key = rcgen::generate_simple_self_signed(vec!["task.invalid".to_string()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], private)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = u64::from(listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                    let _: &hyper::body::Incoming = req.body();
                    let status = match req.uri().path() {
                        "/health" | "/ready" => http::StatusCode::OK,
                        _ => http::StatusCode::NOT_FOUND,
                    };
                    let mut resp = http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"secure"),
                    ));
                    *resp.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_health_and_readiness_checks_speak_tls_and_accept_self_signed_certificates() {
    let tls_port = tls_server().await;
    // A plain HTTP server: a TCP connect succeeds, an HTTPS check must not.
    let plain = axum::Router::new().fallback(|| async { "plain" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = u64::from(listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, plain).await });
    let mut secure = FakeAgent::new(0);
    secure.ports = (tls_port, tls_port);
    secure.attributes = vec![("kind".into(), "tls".into())];
    let mut insecure = FakeAgent::new(1);
    insecure.ports = (plain_port, plain_port);
    insecure.attributes = vec![("kind".into(), "plain".into())];
    let master = FakeMaster::start_with(vec![secure, insecure]).await;
    let apps = Apps::start(&master).await;
    let app = |id: &str, kind: &str| {
        json!({"id": id, "cmd": "serve", "cpus": 0.1, "mem": 16,
            "constraints": [["kind", "LIKE", kind]],
            "portDefinitions": [{"port": 0, "name": "https"}],
            "healthChecks": [{"protocol": "HTTPS", "path": "/health", "portIndex": 0,
                "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 1,
                "maxConsecutiveFailures": 0}],
            "readinessChecks": [{"protocol": "HTTPS", "path": "/ready", "portName": "https",
                "intervalSeconds": 2, "timeoutSeconds": 1, "preserveLastResponse": true}]})
    };
    let (s, v) = apps.post("/v2/apps", app("/tls", "tls")).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = apps.post("/v2/apps", app("/notls", "plain")).await;
    assert_eq!(s, 201, "{v}");
    let ok = apps.wait_running("/tls", 1).await;
    assert_eq!(ok["tasksHealthy"], 1, "{ok}");
    assert_eq!(
        ok["readinessCheckResults"][0]["lastResponse"]["body"], "secure",
        "{ok}"
    );
    let bad = wait_until(
        "the HTTPS check of the plain server failed",
        WAIT,
        async || {
            let app = apps.get("/v2/apps/notls").await["app"].clone();
            (app["tasks"][0]["healthCheckResults"][0]["alive"] == false).then_some(app)
        },
    )
    .await
    .unwrap();
    assert_eq!(bad["tasksHealthy"], 0, "{bad}");
    assert_eq!(bad["tasksUnhealthy"], 1, "{bad}");
    let cause = bad["tasks"][0]["healthCheckResults"][0]["lastFailureCause"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(cause.contains("https://"), "{cause}");
    assert_eq!(
        bad["deployments"].as_array().unwrap().len(),
        1,
        "never healthy nor ready: the deployment stays"
    );
}
