//! Regressions for the reliability probe's coord findings: `/raft/write` and the client API
//! enforce the same key, value and lease limits; non-object bodies, watches from revisions
//! that do not exist yet and huge `/raft/*` bodies are refused; snapshots of several chunks
//! still install under the new body limits (appends too big for one request are split by
//! the sender: a unit test in `raft.rs`).

use std::time::Duration;

use base64::Engine;
use capstan_coord_client::{
    ClientError, ClientOptions, GetRequest, MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::harness::{Cluster, peer_token, wait_until};

/// Heartbeat (and so AppendEntries timeout) of the cluster that replicates megabyte values:
/// a debug build takes up to a second for one.
const SLOW_HEARTBEAT_MS: u64 = 3000;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// POSTs `body`; `/raft/*` requests as a member (with the peer token).
async fn post(base: &str, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut req = capstan_http_client::client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json");
    if path.starts_with("/raft/") {
        req = req.header(
            capstan_coord_client::PEER_TOKEN_HEADER,
            peer_token().as_str(),
        );
    }
    let r = req.body(body).send().await.expect("request sent");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or(Value::Null);
    (status, v)
}

async fn revision(base: &str) -> u64 {
    let (s, v) = post(base, "/v1/kv/get", r#"{"key":"/nothing"}"#).await;
    assert_eq!(s, 200, "{v}");
    v["revision"].as_u64().expect("revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_write_enforces_the_client_api_limits_and_stores_nothing_it_rejects() {
    let c = Cluster::start(1).await;
    c.wait_leader().await;
    let base = format!("http://{}", c.endpoint(1));
    let before = revision(&base).await;

    // The probe's 2,000,000-byte value.
    let put = json!({"put": {"key": "/big", "value": b64(&vec![1u8; 2_000_000])}});
    let (s, v) = post(&base, "/raft/write", put.to_string()).await;
    assert_eq!((s, v["code"].as_str()), (413, Some("too_large")), "{v}");
    let just_over = json!({"put": {"key": "/big", "value": b64(&vec![1u8; MAX_VALUE_BYTES + 1])}});
    let (s, v) = post(&base, "/raft/write", just_over.to_string()).await;
    assert_eq!(s, 413, "{v}");
    let long_key = format!("/{}", "k".repeat(MAX_KEY_BYTES));
    let (s, v) = post(
        &base,
        "/raft/write",
        json!({"put": {"key": long_key, "value": ""}}).to_string(),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_request")), "{v}");
    let txn = json!({"txn": {"success": [{"op": "put", "key": "/t", "value": b64(&vec![0u8; MAX_VALUE_BYTES + 1])}]}});
    let (s, v) = post(&base, "/raft/write", txn.to_string()).await;
    assert_eq!(s, 413, "{v}");
    let (s, v) = post(
        &base,
        "/raft/write",
        json!({"lease_grant": {"ttl_ms": u64::MAX}}).to_string(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("ttl_ms"), "{v}");
    let (s, v) = post(
        &base,
        "/raft/write",
        json!({"batch": [{"put": {"key": "/b", "value": ""}}]}).to_string(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(revision(&base).await, before, "nothing rejected was stored");

    // A write within the limits is still served (as a member's forwarded write).
    let ok = json!({"put": {"key": "/ok", "value": b64(&vec![2u8; MAX_VALUE_BYTES])}});
    let (s, v) = post(&base, "/raft/write", ok.to_string()).await;
    assert_eq!(s, 200, "{v}");
    assert!(c.client().get("/ok").await.unwrap().is_some());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_refuses_a_ttl_of_zero_or_over_an_hour_naming_the_field() {
    let c = Cluster::start(1).await;
    c.wait_leader().await;
    let base = format!("http://{}", c.endpoint(1));
    for ttl in [0, 3_600_001, u64::MAX] {
        let (s, v) = post(&base, "/v1/lease/grant", json!({"ttl_ms": ttl}).to_string()).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("bad_request")),
            "{ttl}: {v}"
        );
        assert!(v["message"].as_str().unwrap().contains("ttl_ms"), "{v}");
    }
    let (s, v) = post(&base, "/v1/lease/grant", r#"{"ttl_ms": 3600000}"#).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ttl_ms"], 3_600_000);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_beyond_the_next_revision_is_refused() {
    let c = Cluster::start(1).await;
    c.wait_leader().await;
    let base = format!("http://{}", c.endpoint(1));
    c.client().put("/w", "1").await.unwrap();
    let current = revision(&base).await;
    for start in [current + 2, current + 1000, u64::MAX - 1, u64::MAX] {
        let (s, v) = post(
            &base,
            "/v1/watch",
            json!({"key": "/w", "start_revision": start}).to_string(),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("bad_request")),
            "{start}: {v}"
        );
        assert!(
            v["message"].as_str().unwrap().contains("start_revision"),
            "{v}"
        );
    }
    // The next revision is a valid start: the first line is progress at the current one.
    let r = capstan_http_client::client()
        .post(format!("{base}/v1/watch"))
        .body(json!({"key": "/w", "start_revision": current + 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut r = r;
    let first = r.chunk().await.unwrap().expect("a first line");
    let line: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(line["revision"], current);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_json_objects_are_400_and_change_nothing() {
    let c = Cluster::start(1).await;
    c.wait_leader().await;
    let base = format!("http://{}", c.endpoint(1));
    let before = revision(&base).await;
    for path in ["/v1/kv/txn", "/v1/kv/put", "/v1/lease/grant", "/raft/write"] {
        for body in ["[]", " [ ]", "null", "\"s\"", "123", ""] {
            let (s, v) = post(&base, path, body).await;
            assert_eq!(
                (s, v["code"].as_str()),
                (400, Some("bad_request")),
                "{path} {body:?}: {v}"
            );
        }
    }
    assert_eq!(revision(&base).await, before);
    // An empty transaction written as an object is still fine.
    let (s, v) = post(&base, "/v1/kv/txn", "{}").await;
    assert_eq!((s, v["succeeded"].as_bool()), (200, Some(true)), "{v}");
    c.stop().await;
}

/// Sends only the head of a POST announcing `len` body bytes (as a member: with the peer
/// token); returns the answer's status and body.
pub async fn post_head_only(addr: &str, path: &str, len: u64) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\n{}: {}\r\nConnection: close\r\n\r\n",
        capstan_coord_client::PEER_TOKEN_HEADER,
        peer_token().as_str()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answered in time")
        .ok();
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_endpoints_refuse_bodies_over_their_limits_before_reading_them() {
    let c = Cluster::start(1).await;
    c.wait_leader().await;
    let addr = c.endpoint(1);
    const MIB: u64 = 1 << 20;
    for (path, len) in [
        ("/raft/append", 32 * MIB + 1),
        ("/raft/snapshot", 32 * MIB + 1),
        ("/raft/write", 16 * MIB + 1),
        ("/raft/vote", 64 * 1024 + 1),
        ("/raft/append", 512 * MIB),
        ("/v1/kv/put", 8 * MIB + 1),
    ] {
        let (s, v) = post_head_only(&addr, path, len).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (413, Some("too_large")),
            "{path} {len}: {v}"
        );
    }
    // The member is unharmed.
    c.client().put("/after", "ok").await.unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_several_chunks_installs_under_the_snapshot_body_limit() {
    // Snapshot every 10 entries; 4 values of 1 MiB (over 5 MiB as JSON) make a snapshot of
    // more than one 3 MiB chunk. A slow heartbeat: the AppendEntries timeout must carry
    // megabyte entries in a debug build.
    let mut c = Cluster::build_with(3, false, 10, SLOW_HEARTBEAT_MS).await;
    let leader = c.wait_leader().await;
    // Patient: a megabyte put of a debug build on a busy machine takes seconds.
    let patient = ClientOptions {
        request_timeout: Duration::from_secs(30),
        retry_deadline: Duration::from_secs(60),
        ..ClientOptions::default()
    };
    let client = c.client_for(&c.addrs.keys().copied().collect::<Vec<_>>(), patient);
    // Putting the same value twice is harmless: retried when its outcome is unknown.
    let put = async |key: String, value: Vec<u8>| {
        for _ in 0..5 {
            match client.put(&key, value.clone()).await {
                Ok(_) => return,
                Err(ClientError::OutcomeUnknown(_)) => continue,
                Err(e) => panic!("put {key}: {e}"),
            }
        }
        panic!("put {key}: outcome unknown five times");
    };
    for i in 0..4u8 {
        put(format!("/s/{i}"), vec![b'a' + i; MAX_VALUE_BYTES]).await;
    }
    for i in 0..12 {
        put(format!("/s/small/{i}"), b"v".to_vec()).await;
    }
    // A follower's machine dies; a new member replaces it and catches up by snapshot.
    let victim = c.addrs.keys().copied().find(|id| *id != leader).unwrap();
    c.kill(victim).await;
    client.member_remove(victim).await.unwrap();
    let addr = c.start_joiner(4).await;
    client.member_add(4, &addr.to_string()).await.unwrap();
    let local = c.client_for(&[4], ClientOptions::default());
    wait_until(
        "the new member has every key",
        Duration::from_secs(60),
        || async {
            let get = |key: &str| {
                local.get_with(GetRequest {
                    key: key.into(),
                    serializable: true,
                })
            };
            let big = get("/s/3").await.ok()?.kv?.value;
            get("/s/small/11").await.ok()?.kv?;
            (big == vec![b'd'; MAX_VALUE_BYTES]).then_some(())
        },
    )
    .await;
    c.stop().await;
}
