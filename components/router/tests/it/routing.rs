//! Proxying: prefixes stripped as Admin Router does, forwarded headers, SSE unbuffered,
//! `/service/<app>` with `Location` rewriting and WebSockets, leaders followed through coord,
//! guardrails, and JSON errors.

use std::time::Duration;

use capstan_coord_client::keyspace;
use capstan_testkit::wait_until;
use futures::StreamExt as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesos_and_agents_are_stripped_with_forwarded_headers() {
    let cluster = Cluster::start().await;
    let router = RouterHandle::start(cluster.config()).await.unwrap();
    let token = login(&router).await.unwrap();
    let http = http();

    let v: Value = http
        .get(router.url("/mesos/master/state.json?jsonp=x"))
        .header("authorization", format!("token={token}"))
        .header("x-forwarded-for", "10.1.1.1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["server"], "master-a");
    assert_eq!(v["path"], "/master/state.json?jsonp=x");
    assert_eq!(v["headers"]["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert_eq!(v["headers"]["x-real-ip"], "127.0.0.1");
    assert_eq!(v["headers"]["x-forwarded-proto"], "http");
    assert_eq!(v["headers"]["host"], router.http.to_string());

    let resp = http.get(router.url("/mesos")).send().await.unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "/mesos/");

    let v: Value = http
        .get(router.url("/agent/agent-1/files/browse.json?path=/tmp"))
        .header("authorization", format!("token={token}"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["server"], "agent-1");
    assert_eq!(v["path"], "/files/browse.json?path=/tmp");
    assert!(v["headers"].get("accept-encoding").is_none(), "{v}");

    let (status, v) = get_json(&router, "/slave/agent-1/state.json", &token)
        .await
        .unwrap();
    assert_eq!((status, v["path"].as_str()), (200, Some("/state.json")));

    let (status, v) = get_json(&router, "/agent/agent-9/state.json", &token)
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert!(v["message"].as_str().unwrap().contains("agent-9"), "{v}");

    // A framework's web UI through /service/<framework name>/.
    let (status, v) = get_json(&router, "/service/fwui/index", &token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["server"], "fwui");
    assert_eq!(v["path"], "/index");
    // ... and through its SRV record when its webui_url is "".
    let (status, v) = get_json(&router, "/service/srvfw/ui/x", &token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["server"], "web-task");
    assert_eq!(v["path"], "/ui/x");

    // /mesos_dns/ is stripped and never sees the token.
    let (status, v) = get_json(&router, "/mesos_dns/v1/hosts/master.mesos", &token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["server"], "dns");
    assert_eq!(v["path"], "/v1/hosts/master.mesos");
    assert!(v["headers"].get("authorization").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_http_sends_plain_requests_to_https() {
    let cluster = Cluster::start().await;
    let mut config = cluster.config();
    config.redirect_http = true;
    let https = config.https_listen.unwrap();
    let router = RouterHandle::start(config).await.unwrap();
    let resp = http()
        .get(router.url("/metadata?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(
        resp.headers()["location"],
        format!("https://127.0.0.1:{}/metadata?x=1", https.port())
    );
    // What a node fetches before it trusts the cluster, and the version, stay plain; a login
    // (a write) and the console do not.
    for (path, plain) in [
        ("/ca/dcos-ca.crt", true),
        ("/dcos-metadata/dcos-version.json", true),
        ("/dcos-metadata/dcos-version.json?probe=1", true),
        ("/", false),
        ("/acs/api/v1/users", false),
        ("/ca/dcos-ca.crt/", false),
    ] {
        let resp = http().get(router.url(path)).send().await.unwrap();
        assert_eq!(resp.status() != 301, plain, "{path}: {}", resp.status());
    }
    let login = http()
        .post(router.url("/acs/api/v1/auth/login"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_events_stream_through_unbuffered_within_the_route_limit() {
    let cluster = Cluster::start().await;
    let mut config = cluster.config();
    config.limits.max_requests_per_route = 1;
    let router = RouterHandle::start(config).await.unwrap();
    let token = login(&router).await.unwrap();
    let resp = http()
        .get(router.url("/service/marathon/v2/events"))
        .header("authorization", format!("token={token}"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    // The second event is only sent once the first arrived here: a buffering proxy hangs.
    for n in 1..=3 {
        let want = format!("\"n\":{n}");
        tokio::time::timeout(WAIT, async {
            while !seen.contains(&want) {
                let chunk = body.next().await.expect("stream open").unwrap();
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("event {n} did not arrive; got {seen:?}"));
        cluster.sse_next.notify_one();
    }

    // The stream holds the apps route's only slot.
    let (status, v) = get_json(&router, "/marathon/v2/info", &token)
        .await
        .unwrap();
    assert_eq!(status, 503, "{v}");
    assert!(v["message"].is_string());
    drop(body);
    // (A request's slot is given back once pingora is done with it, just after the answer.)
    let v = wait_until("the slot is free again", WAIT, async || {
        match get_json(&router, "/marathon/v2/info", &token).await {
            Ok((200, v)) => Ok(v),
            Ok((status, v)) => Err(anyhow::anyhow!("{status} {v}")),
            Err(e) => Err(e),
        }
    })
    .await
    .unwrap();
    assert_eq!(v["server"], "apps-a");
    assert_eq!(v["path"], "/v2/info");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_app_is_served_under_service_with_locations_and_websockets() {
    let cluster = Cluster::start().await;
    let router = RouterHandle::start(cluster.config()).await.unwrap();
    let token = login(&router).await.unwrap();
    let http = http();
    let auth = format!("token={token}");

    let v: Value = http
        .get(router.url("/service/web/hello?a=b"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["server"], "web-task");
    assert_eq!(v["path"], "/hello?a=b");

    let resp = http.get(router.url("/service/web")).send().await.unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "/service/web/");

    let resp = http
        .get(router.url("/service/web/redirect"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/service/web/next");
    let resp = http
        .get(router.url("/service/web/absolute"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/service/web/abs?x=1");

    let (status, v) = get_json(&router, "/service/nope/x", &token).await.unwrap();
    assert_eq!(status, 404);
    assert!(v["message"].is_string());

    // WebSocket echo through /service/ws/.
    let mut conn = tokio::net::TcpStream::connect(router.http).await.unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let upgrade = format!(
        "GET /service/ws/socket HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        router.http
    );
    conn.write_all(upgrade.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(WAIT, read_head(&mut conn))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&websocket_accept(key).to_ascii_lowercase()),
        "{head}"
    );
    for message in [&b"\x81\x05hello"[..], &b"\x81\x05again"[..]] {
        conn.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(WAIT, conn.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_master_and_apps_leaders_through_coord() {
    let cluster = Cluster::start().await;
    let router = RouterHandle::start(cluster.config()).await.unwrap();
    let token = login(&router).await.unwrap();
    let server_of = async |path: &str| -> anyhow::Result<String> {
        let (status, v) = get_json(&router, path, &token).await?;
        anyhow::ensure!(status == 200, "{path}: {status} {v}");
        Ok(v["server"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(server_of("/mesos/master/state").await.unwrap(), "master-a");

    let master_b = fake_master_without_summary("master-b", cluster.agent).await;
    let lease = cluster.lead(keyspace::MASTER, &master_b.to_string()).await;
    wait_until("the route moved to master-b", WAIT, async || {
        server_of("/mesos/master/state")
            .await
            .map(|s| s == "master-b")
    })
    .await
    .unwrap();
    // The new leader has no state summary: its /master/state names the agents.
    let (status, v) = get_json(&router, "/agent/agent-2/state.json", &token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["server"], "agent-1");
    assert_eq!(v["path"], "/state.json");

    let apps_b = echo_server("apps-b", axum::Router::new()).await;
    let apps_lease = cluster.lead(keyspace::APPS, &apps_b.to_string()).await;
    wait_until("the route moved to apps-b", WAIT, async || {
        server_of("/service/marathon/v2/info")
            .await
            .map(|s| s == "apps-b")
    })
    .await
    .unwrap();

    // The leader goes away: back to the only configured master.
    cluster.client.lease_revoke(lease).await.unwrap();
    cluster.client.lease_revoke(apps_lease).await.unwrap();
    wait_until("the route fell back to master-a", WAIT, async || {
        server_of("/mesos/master/state")
            .await
            .map(|s| s == "master-a")
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrails_refuse_large_requests_and_escapes() {
    let cluster = Cluster::start().await;
    let mut config = cluster.config();
    config.jobs = Some("127.0.0.1:1".into());
    let router = RouterHandle::start(config).await.unwrap();
    let token = login(&router).await.unwrap();
    let http = http();
    let auth = format!("token={token}");

    let resp = http
        .get(router.url("/mesos/master/state"))
        .header("authorization", &auth)
        .header("x-big", "x".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);

    let resp = http
        .post(router.url("/mesos/api/v1"))
        .header("authorization", &auth)
        .body(vec![b'x'; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert!(v["message"].is_string());

    // A chunked body has no Content-Length: it is counted as it streams.
    let chunks = futures::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 8 * 1024]))),
    );
    let resp = http
        .post(router.url("/mesos/api/v1"))
        .header("authorization", &auth)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Below the limit it passes.
    let v: Value = http
        .post(router.url("/mesos/api/v1"))
        .header("authorization", &auth)
        .body(vec![b'z'; 1024])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["body_bytes"], 1024);

    for target in [
        "/mesos/../../etc/passwd",
        "/service/../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/mesos/%2e%2e/%2e%2e/x",
    ] {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        );
        let (code, text) = raw(router.http, &req).await.unwrap();
        assert_eq!(code, 400, "{target}: {text}");
    }
    // Not an open proxy: an absolute-form target is routed by its path (or refused), never
    // sent to the host it names.
    let (code, text) = raw(
        router.http,
        "GET http://127.0.0.1:1/metadata HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(code == 401 || code == 400, "{text}");

    // Unconfigured and dead upstreams answer JSON.
    let resp = http
        .post(router.url("/package/search"))
        .header("authorization", &auth)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("not configured"),
        "{v}"
    );
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        http.get(router.url("/service/metronome/v1/jobs"))
            .header("authorization", &auth)
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert!(v["message"].is_string(), "{v}");
}
