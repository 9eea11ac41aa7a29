//! Three- and five-member scenarios: failures, restarts, partitions, membership, snapshots.

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_coord::cli::{CliArgs, CliCommand, SnapshotCommand};
use capstan_coord_client::{
    Client, ClientError, ClientOptions, Election, EventKind, GetRequest, PutRequest, WatchRequest,
};
use clap::Parser as _;

use super::harness::{Cluster, wait_until};

fn quick() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(2),
        retry_deadline: Duration::from_secs(3),
        ..ClientOptions::default()
    }
}

/// A put whose double application is harmless in the test: retried when a member died
/// with the request in flight (the client then cannot know whether it applied).
async fn put_settled(client: &Client, key: &str, value: &str) {
    for _ in 0..10 {
        match client.put(key, value).await {
            Ok(_) => return,
            Err(ClientError::OutcomeUnknown(_)) => continue,
            Err(e) => panic!("put {key}: {e}"),
        }
    }
    panic!("put {key}: outcome unknown ten times");
}

async fn local_value(c: &Cluster, id: u64, key: &str) -> Option<Vec<u8>> {
    let client = c.client_for(&[id], quick());
    let r = client
        .get_with(GetRequest {
            key: key.into(),
            serializable: true,
        })
        .await
        .ok()?;
    r.kv.map(|kv| kv.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_elects_new_leader_without_losing_writes() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let client = c.client();
    for i in 0..20 {
        client
            .put(&format!("/k/{i}"), format!("v{i}"))
            .await
            .unwrap();
    }
    c.kill(leader).await;
    let new_leader = c.wait_leader().await;
    assert_ne!(new_leader, leader);
    for i in 0..20 {
        let kv = client
            .get(&format!("/k/{i}"))
            .await
            .unwrap()
            .expect("acknowledged write survives");
        assert_eq!(kv.value, format!("v{i}").into_bytes());
    }
    put_settled(&client, "/k/after", "x").await;
    c.restart(leader).await;
    wait_until("old leader catches up", Duration::from_secs(10), || async {
        (local_value(&c, leader, "/k/after").await.as_deref() == Some(&b"x"[..])).then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_all_members_brings_all_data_back() {
    // Snapshot every 25 entries so the restart goes through snapshot + log replay.
    let mut c = Cluster::build(3, false, 25).await;
    c.wait_leader().await;
    let client = c.client();
    for i in 0..60 {
        client
            .put(&format!("/r/{i}"), format!("{i}"))
            .await
            .unwrap();
    }
    let lease = client.lease_grant(Duration::from_secs(60)).await.unwrap();
    client
        .put_with(PutRequest {
            key: "/r/leased".into(),
            value: b"l".to_vec(),
            lease: Some(lease.id),
            if_version: None,
        })
        .await
        .unwrap();
    let before = client.list_all("/r/").await.unwrap();
    for id in [1, 2, 3] {
        c.kill(id).await;
    }
    for id in [1, 2, 3] {
        c.restart(id).await;
    }
    c.wait_leader().await;
    let after = client.list_all("/r/").await.unwrap();
    assert_eq!(after.kvs, before.kvs);
    assert!(after.revision >= before.revision);
    client
        .lease_keep_alive(lease.id)
        .await
        .expect("lease survives the restart");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_minority_cannot_write_and_catches_up_after_healing() {
    let c = Cluster::start_with_proxies(3).await;
    let old_leader = c.wait_leader().await;
    c.client().put("/p/before", "1").await.unwrap();
    // Cut the leader off: it is the minority.
    c.partition(old_leader);
    let minority = c.client_for(&[old_leader], quick());
    let err = minority.put("/p/minority", "lost").await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Unavailable(_) | ClientError::OutcomeUnknown(_)
        ),
        "minority write must fail, got {err:?}"
    );
    assert!(
        minority.get("/p/before").await.is_err(),
        "minority cannot serve linearizable reads"
    );

    let majority_ids: Vec<u64> = c
        .addrs
        .keys()
        .copied()
        .filter(|id| *id != old_leader)
        .collect();
    let majority = c.client_for(&majority_ids, ClientOptions::default());
    for i in 0..10 {
        majority.put(&format!("/p/{i}"), "m").await.unwrap();
    }
    assert_eq!(majority.get("/p/minority").await.unwrap(), None);

    c.heal();
    wait_until("minority catches up", Duration::from_secs(15), || async {
        (local_value(&c, old_leader, "/p/9").await.is_some()).then_some(())
    })
    .await;
    assert_eq!(
        local_value(&c, old_leader, "/p/minority").await,
        None,
        "the minority's write never applies"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_every_change_in_order_across_a_leader_change() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let client = c.client();
    let start = client.put("/w/start", "0").await.unwrap().revision;
    let mut watcher = client.watch(WatchRequest {
        key: "/w/".into(),
        prefix: true,
        start_revision: Some(start + 1),
    });

    let mut acknowledged = Vec::new();
    for i in 0..15 {
        acknowledged.push((
            client.put("/w/k", format!("{i}")).await.unwrap().revision,
            format!("{i}"),
        ));
    }
    c.kill(leader).await;
    c.wait_leader().await;
    // A write caught by the leader's death has an unknown outcome: it may or may not appear.
    let mut unknown = std::collections::HashSet::new();
    for i in 15..30 {
        match client.put("/w/k", format!("{i}")).await {
            Ok(r) => acknowledged.push((r.revision, format!("{i}"))),
            Err(ClientError::OutcomeUnknown(_)) => {
                unknown.insert(format!("{i}"));
            }
            Err(e) => panic!("put: {e}"),
        }
    }
    let last = acknowledged.last().unwrap().0;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|(r, _)| *r < last) {
        let batch = tokio::time::timeout(Duration::from_secs(20), watcher.next())
            .await
            .expect("watch delivers")
            .expect("watch ok");
        for e in batch.events {
            assert_eq!(e.kind, EventKind::Put);
            seen.push((e.revision(), String::from_utf8(e.kv.value).unwrap()));
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions strictly increase: {seen:?}"
    );
    let known: Vec<(u64, String)> = seen
        .iter()
        .filter(|(_, v)| !unknown.contains(v))
        .cloned()
        .collect();
    assert_eq!(
        known, acknowledged,
        "every change, in order, none missed or repeated"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_deletes_its_keys() {
    let c = Cluster::start(3).await;
    c.wait_leader().await;
    let client = c.client();
    let ttl = Duration::from_millis(1200);
    let lease = client.lease_grant(ttl).await.unwrap();
    client
        .put_with(PutRequest {
            key: "/e/node".into(),
            value: b"me".to_vec(),
            lease: Some(lease.id),
            if_version: None,
        })
        .await
        .unwrap();
    client.put("/e/plain", "stays").await.unwrap();
    {
        let keep = client.spawn_keep_alive(lease.id, ttl);
        // Kept alive well past its TTL.
        let deadline = tokio::time::Instant::now() + ttl * 2;
        while tokio::time::Instant::now() < deadline {
            assert!(
                client.get("/e/node").await.unwrap().is_some(),
                "kept-alive lease expired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(keep.is_alive());
    }
    wait_until("ephemeral key deleted", Duration::from_secs(10), || async {
        client.get("/e/node").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(client.get("/e/plain").await.unwrap().is_some());
    assert!(matches!(
        client.lease_keep_alive(lease.id).await,
        Err(ClientError::LeaseNotFound(_))
    ));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_campaign_observe_and_resign() {
    let c = Cluster::start(3).await;
    c.wait_leader().await;
    let client = c.client();
    let election = Election::new(client.clone(), "/election/master");
    let mut observer = election.observe().await.unwrap();
    assert_eq!(observer.next().await.unwrap(), None);

    let l1 = client.lease_grant(Duration::from_secs(30)).await.unwrap();
    let l2 = client
        .lease_grant(Duration::from_millis(1500))
        .await
        .unwrap();
    let first = election.campaign(l1.id, "10.0.0.1:5050").await.unwrap();
    assert_eq!(
        observer.next().await.unwrap().unwrap().value,
        b"10.0.0.1:5050"
    );

    let e2 = election.clone();
    let second = tokio::spawn(async move { e2.campaign(l2.id, "10.0.0.2:5050").await });
    let keep2 = client.spawn_keep_alive(l2.id, Duration::from_millis(1500));
    wait_until(
        "second candidate registered",
        Duration::from_secs(5),
        || async {
            (client.list_all("/election/master/").await.ok()?.kvs.len() == 2).then_some(())
        },
    )
    .await;
    assert!(!second.is_finished());
    assert!(first.is_leader().await.unwrap());
    first.resign().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(second.is_leader().await.unwrap());
    assert_eq!(
        observer.next().await.unwrap().unwrap().value,
        b"10.0.0.2:5050"
    );
    assert_eq!(
        election.leader().await.unwrap().unwrap().value,
        b"10.0.0.2:5050"
    );

    // The leader's lease expires: leadership ends.
    drop(keep2);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), observer.next())
            .await
            .unwrap()
            .unwrap(),
        None
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_deposes_a_leader_whose_process_is_gone_without_waiting_for_its_lease() {
    let c = Cluster::start(1).await;
    c.wait_leader().await;
    let client = c.client();
    let election = Election::new(client.clone(), "/election/probed").with_liveness_probe();
    // The leader "process": a listener that never accepts (a slow leader: the kernel still
    // completes connections), with a lease far longer than the test.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let l1 = client.lease_grant(Duration::from_secs(600)).await.unwrap();
    let _keep1 = client.spawn_keep_alive(l1.id, Duration::from_secs(600));
    election.campaign(l1.id, addr.clone()).await.unwrap();
    let l2 = client.lease_grant(Duration::from_secs(600)).await.unwrap();
    let _keep2 = client.spawn_keep_alive(l2.id, Duration::from_secs(600));
    let e2 = election.clone();
    let mut standby = tokio::spawn(async move { e2.campaign(l2.id, "127.0.0.1:1").await });
    // Slow but alive: many probes pass, no takeover.
    assert!(
        tokio::time::timeout(
            capstan_coord_client::election_probe::PROBE_INTERVAL * 10,
            &mut standby
        )
        .await
        .is_err(),
        "a leader that accepts connections is left alone"
    );
    // The process dies: its port refuses connections, and the standby takes over long
    // before the 600 s lease would have expired.
    drop(listener);
    let leadership = tokio::time::timeout(Duration::from_secs(20), standby)
        .await
        .expect("the standby took over")
        .unwrap()
        .unwrap();
    assert!(leadership.is_leader().await.unwrap());
    assert!(matches!(
        client.lease_keep_alive(l1.id).await,
        Err(ClientError::LeaseNotFound(_))
    ));
    c.stop().await;
}

/// Waits until the members answering agree that the voters are `want` (`/v1/members` is a
/// local read, so a member may briefly lag).
async fn wait_voters(c: &Cluster, want: &[u64]) {
    wait_until("voters", Duration::from_secs(10), || async {
        (voters(c).await == want).then_some(())
    })
    .await;
}

async fn voters(c: &Cluster) -> Vec<u64> {
    // Ask a member that leads right now (a removed member keeps its last view).
    let Some(leader) = c
        .handles
        .values()
        .find(|h| h.status().is_leader)
        .map(|h| h.id())
    else {
        return Vec::new();
    };
    let Ok(m) = c.client_for(&[leader], quick()).members().await else {
        return Vec::new();
    };
    m.members.iter().filter(|m| m.voter).map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_from_3_to_5_and_shrinks_back_to_3() {
    let mut c = Cluster::start(3).await;
    c.wait_leader().await;
    let client = c.client();
    client.put("/m/a", "1").await.unwrap();
    for id in [4, 5] {
        let addr = c.start_joiner(id).await;
        client.member_add(id, &addr.to_string()).await.unwrap();
    }
    wait_voters(&c, &[1, 2, 3, 4, 5]).await;
    client.put("/m/b", "2").await.unwrap();
    for id in [4, 5] {
        wait_until(
            "new member has the data",
            Duration::from_secs(10),
            || async { local_value(&c, id, "/m/b").await.map(|_| ()) },
        )
        .await;
    }
    // Two members of five can fail.
    c.kill(1).await;
    c.kill(2).await;
    put_settled(&client, "/m/c", "3").await;
    c.restart(1).await;
    c.restart(2).await;
    // A fresh client: the old one's pooled connections died with members 1 and 2.
    let client = c.client();
    for id in [4, 5] {
        client.member_remove(id).await.unwrap();
    }
    for id in [4, 5] {
        c.kill(id).await;
    }
    wait_voters(&c, &[1, 2, 3]).await;
    put_settled(&client, "/m/d", "4").await;
    assert_eq!(client.list_all("/m/").await.unwrap().kvs.len(), 4);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_member_on_a_new_address_catches_up_by_snapshot_and_votes() {
    let mut c = Cluster::build(3, false, 10).await;
    c.wait_leader().await;
    let client = c.client();
    for i in 0..40 {
        client.put(&format!("/x/{i}"), "v").await.unwrap();
    }
    // Member 3's machine dies; it is replaced by member 4 on a new address.
    c.kill(3).await;
    client.member_remove(3).await.unwrap();
    let addr = c.start_joiner(4).await;
    client.member_add(4, &addr.to_string()).await.unwrap();
    wait_voters(&c, &[1, 2, 4]).await;
    wait_until(
        "replacement has every key",
        Duration::from_secs(10),
        || async { local_value(&c, 4, "/x/39").await.map(|_| ()) },
    )
    .await;
    // It votes: the cluster survives losing one of the original members.
    let leader = c.wait_leader().await;
    let victim = if leader == 1 { 2 } else { 1 };
    c.kill(victim).await;
    c.client().put("/x/after", "ok").await.unwrap();
    assert_eq!(c.client().list_all("/x/").await.unwrap().kvs.len(), 41);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_restores_into_a_fresh_cluster() {
    let c = Cluster::start(3).await;
    c.wait_leader().await;
    let client = c.client();
    let mut want = BTreeMap::new();
    for i in 0..25 {
        let key = format!("/s/{i}");
        client.put(&key, format!("value {i}")).await.unwrap();
        want.insert(key, format!("value {i}"));
    }
    let backup_dir = tempfile::tempdir().unwrap();
    let file = backup_dir.path().join("backup.json");
    let endpoints: Vec<String> = c.addrs.values().map(|a| a.to_string()).collect();
    let mut out = Vec::new();
    capstan_coord::cli::run_cli(
        &endpoints.clone(),
        None,
        CliCommand::Snapshot(SnapshotCommand::Save { file: file.clone() }),
        &mut out,
    )
    .await
    .unwrap();
    let revision = client.get("/s/24").await.unwrap().unwrap().version;
    c.stop().await;

    // Restore into the data dirs of a brand-new cluster, then start it.
    let mut fresh = Cluster::build(3, false, 10_000).await;
    for id in [1, 2, 3] {
        fresh.kill(id).await;
    }
    let new_root = tempfile::tempdir().unwrap();
    fresh.root = new_root;
    for id in [1, 2, 3] {
        let dir = fresh.config(id).data_dir;
        let mut out = Vec::new();
        capstan_coord::cli::run_cli(
            &[],
            None,
            CliCommand::Snapshot(SnapshotCommand::Restore {
                file: file.clone(),
                data_dir: dir,
            }),
            &mut out,
        )
        .await
        .unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("Restored 25 keys")
        );
    }
    for id in [1, 2, 3] {
        fresh.restart(id).await;
    }
    fresh.wait_leader().await;
    let got: BTreeMap<String, String> = fresh
        .client()
        .list_all("/s/")
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, String::from_utf8(kv.value).unwrap()))
        .collect();
    assert_eq!(got, want);
    let next = fresh.client().put("/s/new", "n").await.unwrap();
    assert!(
        next.revision > revision,
        "revisions continue after a restore"
    );
    // `get` prints the value alone.
    let mut out = Vec::new();
    let endpoints: Vec<String> = fresh.addrs.values().map(|a| a.to_string()).collect();
    capstan_coord::cli::run_cli(
        &endpoints,
        None,
        CliCommand::Get {
            key: "/s/3".into(),
            serializable: false,
        },
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(out, b"value 3\n");
    fresh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_endpoints_may_include_members_that_are_down() {
    let c = Cluster::start(1).await;
    c.wait_leader().await;
    let endpoints = vec!["127.0.0.1:1".to_string(), c.endpoint(1)];
    // The arguments as the binary parses them.
    #[derive(clap::Parser)]
    struct Coord {
        #[command(flatten)]
        args: CliArgs,
    }
    let joined = endpoints.join(",");
    let parsed = Coord::try_parse_from(["coord", "--endpoints", joined.as_str(), "get", "/cli"])
        .unwrap()
        .args;
    assert_eq!(parsed.endpoints, endpoints);
    assert!(matches!(parsed.command, Some(CliCommand::Get { .. })));
    assert!(
        Coord::try_parse_from(["coord"])
            .unwrap()
            .args
            .command
            .is_none(),
        "no command runs the daemon"
    );
    let mut out = Vec::new();
    capstan_coord::cli::run_cli(
        &endpoints.clone(),
        None,
        CliCommand::Put {
            key: "/cli".into(),
            value: "hello".into(),
        },
        &mut out,
    )
    .await
    .unwrap();
    for cmd in [
        CliCommand::Get {
            key: "/cli".into(),
            serializable: false,
        },
        CliCommand::List {
            prefix: "/".into(),
            keys_only: false,
        },
        CliCommand::Members,
        CliCommand::Status,
        CliCommand::Del { key: "/cli".into() },
    ] {
        let mut out = Vec::new();
        capstan_coord::cli::run_cli(&endpoints.clone(), None, cmd.clone(), &mut out)
            .await
            .unwrap_or_else(|e| panic!("{cmd:?}: {e:#}"));
        let text = String::from_utf8(out).unwrap();
        match cmd {
            CliCommand::Get { .. } => assert_eq!(text, "hello\n"),
            CliCommand::List { .. } => assert_eq!(text, "/cli hello\n"),
            CliCommand::Members => assert!(
                text.contains("1 127.0.0.1:") && text.contains("leader"),
                "{text}"
            ),
            CliCommand::Status => assert!(
                text.contains("leader: 1") && text.contains("healthy"),
                "{text}"
            ),
            _ => {}
        }
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_itself_hands_leadership_over() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let client = c.client();
    client.put("/l/a", "1").await.unwrap();
    client.member_remove(leader).await.unwrap();
    // The operator shuts the removed member down.
    c.kill(leader).await;
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    // The next membership change waits for a leader that is still a member.
    let addr = c.start_joiner(4).await;
    client.member_add(4, &addr.to_string()).await.unwrap();
    let mut want = rest.clone();
    want.push(4);
    wait_voters(&c, &want).await;
    let new_leader = c.wait_leader().await;
    assert!(want.contains(&new_leader));
    put_settled(&c.client(), "/l/b", "2").await;
    assert_eq!(c.client().list_all("/l/").await.unwrap().kvs.len(), 2);
    c.stop().await;
}
