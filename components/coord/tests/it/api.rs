//! The client API on one member and on followers: KV operations, bad input, status endpoints.

use std::time::Duration;

use capstan_coord_client::{
    ClientError, ClientOptions, Compare, EventKind, ListRequest, PutRequest, TxnOp, TxnRequest,
    WatchRequest,
};

use super::harness::{Cluster, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_serves_kv_operations() {
    let c = Cluster::start(1).await;
    c.wait_leader().await;
    let client = c.client();

    let r1 = client.put("/a/x", "1").await.unwrap();
    let kv = client.get("/a/x").await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.version), (&b"1"[..], r1.revision));

    // create-if-absent
    assert!(
        matches!(client.create("/a/x", "2", None).await, Err(ClientError::Conflict { current_version }) if current_version == r1.revision)
    );
    client.create("/a/y", "y", None).await.unwrap();

    // compare-and-swap
    assert!(matches!(
        client
            .compare_and_swap("/a/x", r1.revision + 100, "3")
            .await,
        Err(ClientError::Conflict { .. })
    ));
    let r3 = client
        .compare_and_swap("/a/x", r1.revision, "3")
        .await
        .unwrap();
    assert_eq!(r3.prev.unwrap().value, b"1");

    // list with continuation
    for i in 0..5 {
        client.put(&format!("/l/{i}"), vec![i]).await.unwrap();
    }
    let page = client
        .list(ListRequest {
            prefix: "/l/".into(),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.kvs.len(), 2);
    assert!(page.more);
    assert_eq!(client.list_all("/l/").await.unwrap().kvs.len(), 5);

    // conditional delete
    assert!(matches!(
        client.delete_if("/a/x", 1).await,
        Err(ClientError::Conflict { .. })
    ));
    assert!(
        client
            .delete_if("/a/x", r3.revision)
            .await
            .unwrap()
            .prev
            .is_some()
    );
    assert_eq!(client.get("/a/x").await.unwrap(), None);

    // transaction
    let y = client.get("/a/y").await.unwrap().unwrap();
    let t = client
        .txn(TxnRequest {
            compares: vec![
                Compare {
                    key: "/a/y".into(),
                    version: y.version,
                },
                Compare {
                    key: "/a/z".into(),
                    version: 0,
                },
            ],
            success: vec![
                TxnOp::Put {
                    key: "/a/z".into(),
                    value: b"z".to_vec(),
                    lease: None,
                },
                TxnOp::Delete { key: "/a/y".into() },
            ],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(client.get("/a/y").await.unwrap(), None);
    assert_eq!(
        client.get("/a/z").await.unwrap().unwrap().version,
        t.revision
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_clear_errors_and_changes_nothing() {
    let mut c = Cluster::build(1, false, 10_000).await;
    c.watch_history = 3;
    c.kill(1).await;
    c.restart(1).await;
    c.wait_leader().await;
    let base = format!("http://{}", c.endpoint(1));
    let http = capstan_http_client::client();

    let r = http
        .post(format!("{base}/v1/kv/put"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "bad_request");
    assert!(
        body["message"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );

    let r = http
        .post(format!("{base}/v1/kv/put"))
        .body(r#"{"value":"aGk="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("missing field `key`"),
        "{body}"
    );

    let r = http
        .post(format!("{base}/v1/kv/put"))
        .body(r#"{"key":"no-slash","value":""}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let client = c.client();
    let big = vec![7u8; capstan_coord_client::MAX_VALUE_BYTES + 1];
    match client.put("/big", big).await {
        Err(ClientError::Api { status: 413, error }) => assert_eq!(error.code, "too_large"),
        other => panic!("expected 413, got {other:?}"),
    }

    // A rejected transaction changes nothing.
    client.put("/t/a", "a").await.unwrap();
    let before = client.list_all("/t/").await.unwrap();
    let err = client
        .txn(TxnRequest {
            compares: vec![],
            success: vec![
                TxnOp::Put {
                    key: "/t/b".into(),
                    value: b"b".to_vec(),
                    lease: None,
                },
                TxnOp::Put {
                    key: "/t/c".into(),
                    value: b"c".to_vec(),
                    lease: Some(999),
                },
            ],
            failure: vec![],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Api { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(client.list_all("/t/").await.unwrap(), before);

    // A watch from a compacted revision gets a clear error.
    for i in 0..10 {
        client.put("/w", format!("{i}")).await.unwrap();
    }
    let mut w = client.watch(WatchRequest {
        key: "/w".into(),
        prefix: false,
        start_revision: Some(1),
    });
    assert!(matches!(w.next().await, Err(ClientError::Compacted { .. })));
    let r = http
        .post(format!("{base}/v1/watch"))
        .body(r#"{"key":"/w","start_revision":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_follower_are_forwarded_and_reads_are_linearizable() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = c.addrs.keys().copied().find(|id| *id != leader).unwrap();
    let via_follower = c.client_for(&[follower], ClientOptions::default());
    let r = via_follower.put("/f", "from follower").await.unwrap();
    // Linearizable read from another follower sees it immediately.
    let other = c
        .addrs
        .keys()
        .copied()
        .find(|id| *id != leader && *id != follower)
        .unwrap();
    let kv = c
        .client_for(&[other], ClientOptions::default())
        .get("/f")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kv.version, r.revision);
    // Leases are kept alive through followers too.
    let lease = via_follower
        .lease_grant(Duration::from_secs(5))
        .await
        .unwrap();
    via_follower.lease_keep_alive(lease.id).await.unwrap();
    assert!(matches!(
        via_follower.lease_keep_alive(4242).await,
        Err(ClientError::LeaseNotFound(4242))
    ));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_metrics_and_exhibitor_report_the_cluster() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let client = c.client();
    c.client_for(&[leader], ClientOptions::default())
        .put("/s", "1")
        .await
        .unwrap();
    let status = wait_until("all members healthy", Duration::from_secs(10), || async {
        let s = client.status().await.ok()?;
        s.members.iter().all(|m| m.healthy).then_some(s)
    })
    .await;
    assert_eq!(status.leader, Some(leader));
    assert_eq!(status.members.len(), 3);
    assert!(status.commit_index >= 1 && status.term >= 1);

    let http = capstan_http_client::client();
    let base = format!("http://{}", c.endpoint(leader));
    let ex: serde_json::Value = http
        .get(format!("{base}/exhibitor/v1/cluster/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ex = ex.as_array().unwrap();
    assert_eq!(ex.len(), 3);
    assert_eq!(ex.iter().filter(|m| m["isLeader"] == true).count(), 1);
    assert!(
        ex.iter()
            .all(|m| m["description"] == "serving" && m["code"] == 3)
    );

    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "capstan_coord_term ",
        "capstan_coord_commit_index ",
        "capstan_coord_applied_index ",
        "capstan_coord_leader_changes_total ",
        "capstan_coord_request_duration_seconds_count{op=\"put\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} missing in\n{metrics}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_unknown_lease_is_rejected() {
    let c = Cluster::start(1).await;
    c.wait_leader().await;
    let err = c
        .client()
        .put_with(PutRequest {
            key: "/x".into(),
            value: vec![],
            lease: Some(77),
            if_version: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Api { status: 404, ref error } if error.code == "lease_not_found"),
        "{err:?}"
    );
    let _ = EventKind::Put;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_start_binds_port_zero_and_shuts_down_cleanly() {
    super::harness::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let config = capstan_coord::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("coord"),
        // A single member never dials itself, so its advertised address is not used here.
        members: vec![capstan_coord::MemberConfig {
            id: 1,
            addr: "127.0.0.1:1".into(),
        }],
        ..Default::default()
    };
    let token = tokio_util::sync::CancellationToken::new();
    let handle = capstan_coord::Server::start(config.clone(), token.clone())
        .await
        .unwrap();
    let addr = handle.local_addr();
    assert_ne!(addr.port(), 0);
    let client = capstan_coord_client::Client::new([addr.to_string()]).unwrap();
    client.put("/hello", "world").await.unwrap();
    token.cancel();
    handle.wait().await.unwrap();
    // The data survives a restart on another port.
    let handle = capstan_coord::Server::start(config, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    let client = capstan_coord_client::Client::new([handle.local_addr().to_string()]).unwrap();
    assert_eq!(client.get("/hello").await.unwrap().unwrap().value, b"world");
    handle.shutdown().await.unwrap();
}
