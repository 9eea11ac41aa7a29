//! Regressions for the reliability probe's F1 and F11 on coord: raft RPCs and membership
//! changes from anyone but a member (no peer token, or a wrong one) are refused and change
//! nothing — a forged committed entry, a forged membership change, a storm of fake votes, a
//! member removal; a huge `/raft/*` body is refused before it is read; idle, slow and
//! surplus connections are closed. That members with the token still replicate is what every
//! other test of this binary shows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use capstan_coord::raft::TypeConfig;
use capstan_coord::sm::Command;
use capstan_coord::{Config, MemberConfig, Server, StartError};
use capstan_coord_client::{ClientError, GetRequest, PEER_TOKEN_HEADER, PeerToken, PutRequest};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::harness::{Cluster, peer_token, wait_until};

const FORGED_TERM: u64 = 1000;
const WAIT: Duration = Duration::from_secs(20);

/// How a request presents itself.
#[derive(Clone, Copy, Debug)]
enum As {
    Anonymous,
    WrongToken,
}

async fn post_as(who: As, addr: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let mut req = capstan_http_client::client()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body);
    if let As::WrongToken = who {
        let other = PeerToken::derive(b"not the cluster's secret at all").unwrap();
        req = req.header(PEER_TOKEN_HEADER, other.as_str());
    }
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn assert_refused(who: As, (status, body): (u16, Value), what: &str) {
    let want = match who {
        As::Anonymous => (401, "unauthorized"),
        As::WrongToken => (403, "forbidden"),
    };
    assert_eq!(
        (status, body["code"].as_str().unwrap_or_default()),
        want,
        "{what} as {who:?}: {body}"
    );
}

fn forged_log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(FORGED_TERM, 99), index)
}

/// The probe's forged AppendEntries: a committed vote of a leader that is not a member, one
/// entry after the follower's last, and a commit index that covers it.
fn forged_append(last_index: u64, payload: EntryPayload<TypeConfig>) -> Vec<u8> {
    let req = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(FORGED_TERM, 99),
        prev_log_id: Some(forged_log_id(last_index)),
        leader_commit: Some(forged_log_id(last_index + 1)),
        entries: vec![Entry {
            log_id: forged_log_id(last_index + 1),
            payload,
        }],
    };
    serde_json::to_vec(&req).unwrap()
}

fn forged_vote() -> Vec<u8> {
    let req = VoteRequest::new(Vote::new(FORGED_TERM, 99), Some(forged_log_id(1_000_000)));
    serde_json::to_vec(&req).unwrap()
}

/// Every member has applied a write made after the forged requests, and none holds `key`.
async fn no_member_holds(c: &Cluster, key: &str) {
    c.client().put("/after", "written").await.unwrap();
    for id in c.handles.keys() {
        let local = c.client_for(&[*id], Default::default());
        let serializable = |key: &str| {
            local.get_with(GetRequest {
                key: key.into(),
                serializable: true,
            })
        };
        wait_until(
            &format!("member {id} applied the later write"),
            WAIT,
            || async { serializable("/after").await.ok()?.kv.map(|_| ()) },
        )
        .await;
        let found = serializable(key).await.unwrap().kv;
        assert!(found.is_none(), "member {id} holds the forged {key}");
    }
    assert!(c.client().get(key).await.unwrap().is_none());
}

fn max_term(c: &Cluster) -> u64 {
    c.handles
        .values()
        .map(|h| h.status().term)
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_appends_are_refused_without_the_peer_token_and_change_nothing() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    c.client().put("/before", "x").await.unwrap();
    let follower = *c.handles.keys().find(|id| **id != leader).unwrap();
    let addr = c.endpoint(follower);
    let last = c.handles[&follower].status().applied_index;

    let put = EntryPayload::Normal(Command::Put(PutRequest {
        key: "/t/INJECTED".into(),
        value: b"forged".to_vec(),
        ..Default::default()
    }));
    let nodes: BTreeMap<u64, BasicNode> = [1, 2]
        .iter()
        .map(|id| (*id, BasicNode::new(c.endpoint(*id))))
        .collect();
    let remove_3 = EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2])], nodes));
    for who in [As::Anonymous, As::WrongToken] {
        for (what, payload) in [("put", put.clone()), ("membership", remove_3.clone())] {
            let answer = post_as(who, &addr, "/raft/append", forged_append(last, payload)).await;
            assert_refused(who, answer, what);
        }
    }

    no_member_holds(&c, "/t/INJECTED").await;
    assert!(max_term(&c) < FORGED_TERM, "a forged term was adopted");
    let members = c.client().members().await.unwrap().members;
    assert_eq!(members.len(), 3, "{members:?}");
    assert_eq!(c.wait_leader().await, leader, "no election was forced");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_votes_are_refused_and_writes_keep_succeeding() {
    let c = Cluster::start(3).await;
    c.wait_leader().await;
    let addrs: Vec<String> = c.addrs.keys().map(|id| c.endpoint(*id)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let storm = tokio::spawn({
        let (stop, refused) = (stop.clone(), refused.clone());
        async move {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let who = if n.is_multiple_of(2) {
                    As::Anonymous
                } else {
                    As::WrongToken
                };
                let answer =
                    post_as(who, &addrs[n % addrs.len()], "/raft/vote", forged_vote()).await;
                assert_refused(who, answer, "vote");
                refused.fetch_add(1, Ordering::SeqCst);
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let client = c.client();
    for i in 0..60 {
        client
            .put(&format!("/votes/{i}"), "v")
            .await
            .unwrap_or_else(|e| panic!("write {i} during the vote storm: {e}"));
    }
    // At least some votes were sent while writes ran.
    wait_until("fake votes sent", WAIT, || async {
        (refused.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    storm.await.expect("every fake vote was refused");
    assert!(max_term(&c) < FORGED_TERM, "a fake vote was granted");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_and_forwarded_writes_need_the_peer_token() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = *c.handles.keys().find(|id| **id != leader).unwrap();
    for who in [As::Anonymous, As::WrongToken] {
        for id in [leader, follower] {
            let addr = c.endpoint(id);
            let remove = post_as(who, &addr, "/v1/members/remove", br#"{"id":3}"#.to_vec()).await;
            assert_refused(who, remove, "members/remove");
            let add = br#"{"id":9,"addr":"127.0.0.1:9"}"#.to_vec();
            assert_refused(
                who,
                post_as(who, &addr, "/v1/members/add", add).await,
                "add",
            );
            let write = br#"{"put":{"key":"/t/w","value":""}}"#.to_vec();
            assert_refused(
                who,
                post_as(who, &addr, "/raft/write", write).await,
                "write",
            );
            let read = post_as(who, &addr, "/raft/read-index", b"garbage".to_vec()).await;
            assert_refused(who, read, "read-index");
        }
    }
    // The client without the token is told why.
    let anonymous = capstan_coord_client::Client::new([c.endpoint(leader)]).unwrap();
    match anonymous.member_remove(3).await {
        Err(ClientError::Api { status: 401, error }) => {
            assert_eq!(error.code, "unauthorized");
            assert!(
                error.message.contains(PEER_TOKEN_HEADER),
                "{}",
                error.message
            );
        }
        other => panic!("an anonymous member removal answered {other:?}"),
    }
    assert_eq!(c.client().members().await.unwrap().members.len(), 3);
    assert!(c.client().get("/t/w").await.unwrap().is_none());
    // Reading stays open to anyone.
    assert_eq!(anonymous.members().await.unwrap().members.len(), 3);
    c.stop().await;
}

/// Sends a chunked POST of up to 500 MB as a member, reading the answer meanwhile; returns
/// the bytes written before the server answered or closed, and the status if one was read.
async fn stream_huge_body(addr: &str, path: &str) -> (u64, Option<u16>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let answered = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let answered = answered.clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            answered.store(true, Ordering::SeqCst);
            String::from_utf8_lossy(&buf)
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
        }
    });
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n{PEER_TOKEN_HEADER}: {}\r\n\r\n",
        peer_token().as_str()
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    const CHUNK: usize = 1 << 16;
    let mut frame = format!("{CHUNK:x}\r\n").into_bytes();
    frame.extend(std::iter::repeat_n(b' ', CHUNK));
    frame.extend_from_slice(b"\r\n");
    let mut written = 0u64;
    while written < 500_000_000 && !answered.load(Ordering::SeqCst) {
        if wr.write_all(&frame).await.is_err() {
            break;
        }
        written += CHUNK as u64;
    }
    drop(wr);
    let status = tokio::time::timeout(WAIT, reader)
        .await
        .expect("the reader ends")
        .expect("reader task");
    (written, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_raft_body_is_refused_early_without_being_buffered() {
    let c = Cluster::start(1).await;
    c.wait_leader().await;
    let addr = c.endpoint(1);
    // Anonymous: refused on its head alone.
    for path in ["/raft/append", "/raft/snapshot"] {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 500000000\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
            .await
            .expect("answered without the body")
            .ok();
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 401"), "{path}: {text}");
    }
    // A member's 500 MB announced: 413 on the head (`post_head_only` sends the token).
    let (status, body) = super::limits::post_head_only(&addr, "/raft/append", 500_000_000).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")));
    // A member's body streamed without a length: cut off at the limit (32 MiB), not read to
    // the end. Kernel socket buffers on both sides hold a few MiB more than was read.
    for path in ["/raft/append", "/raft/snapshot"] {
        let (written, status) = stream_huge_body(&addr, path).await;
        assert!(
            written < 64 << 20,
            "{path}: {written} bytes were taken before the refusal"
        );
        assert!(
            status.is_none_or(|s| s == 413),
            "{path}: answered {status:?}"
        );
    }
    c.client().put("/still", "serving").await.unwrap();
    c.stop().await;
}

fn single_member(dir: &std::path::Path, listen: SocketAddr) -> Config {
    Config {
        id: 1,
        listen,
        data_dir: dir.join("coord"),
        members: vec![MemberConfig {
            id: 1,
            addr: listen.to_string(),
        }],
        ..Config::default()
    }
}

/// True once the server closed `s` (EOF or reset) without answering anything.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_slow_headers_and_slow_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        header_read_timeout_ms: 300,
        body_read_timeout_ms: 300,
        ..single_member(dir.path(), addr)
    };
    let token = tokio_util::sync::CancellationToken::new();
    let handle = Server::start_on(config, listener, token).await.unwrap();

    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_by_server(&mut idle).await,
        "an idle connection stays"
    );
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-a: ")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut partial).await,
        "a partial header stays"
    );

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        b"POST /v1/kv/put HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"key\":",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, slow.read_to_end(&mut buf))
        .await
        .expect("answered")
        .ok();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"timeout""#), "{text}");

    // A client that keeps its connection busy is not cut off.
    let client = capstan_coord_client::Client::new([addr.to_string()]).unwrap();
    for i in 0..3 {
        client.put(&format!("/k{i}"), "v").await.unwrap();
    }
    handle.shutdown().await.unwrap();
}

/// A connection from `source` (any 127/8 address) that has had `GET /health` answered, so the
/// server admitted it; kept open.
async fn admitted_from(source: &str, addr: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&buf[..n])
        .starts_with("HTTP/1.1 200")
        .then_some(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_closed_and_others_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        max_connections: 6,
        max_connections_per_ip: 3,
        ..single_member(dir.path(), addr)
    };
    let token = tokio_util::sync::CancellationToken::new();
    let handle = Server::start_on(config, listener, token).await.unwrap();
    wait_until("a leader", WAIT, || async {
        handle.status().is_leader.then_some(())
    })
    .await;

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            admitted_from("127.0.0.2", addr)
                .await
                .expect("under the caps"),
        );
    }
    assert!(
        admitted_from("127.0.0.2", addr).await.is_none(),
        "a fourth connection from one address is served"
    );
    for _ in 0..3 {
        held.push(
            admitted_from("127.0.0.3", addr)
                .await
                .expect("another address"),
        );
    }
    assert!(
        admitted_from("127.0.0.4", addr).await.is_none(),
        "a seventh connection is served"
    );
    // Places free up as connections close.
    held.truncate(2);
    wait_until("a freed place", WAIT, || async {
        admitted_from("127.0.0.2", addr).await.map(drop)
    })
    .await;
    drop(held);
    let client = capstan_coord_client::Client::new([addr.to_string()]).unwrap();
    client.put("/capped", "ok").await.unwrap();
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_secret_file_must_be_private_and_its_token_is_accepted() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("ca.key");
    std::fs::write(&secret, "-----BEGIN PRIVATE KEY-----\nnot really a key\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        peer_secret_file: Some(secret.clone()),
        ..single_member(dir.path(), addr)
    };
    let token = tokio_util::sync::CancellationToken::new();
    match Server::start_on(config.clone(), listener, token.clone()).await {
        Err(StartError::PeerSecret(e)) => assert!(e.to_string().contains("0600"), "{e}"),
        Err(e) => panic!("expected a peer secret error, got {e}"),
        Ok(_) => panic!("a world-readable peer secret was accepted"),
    }
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let handle = Server::start_on(config, listener, token).await.unwrap();
    wait_until("a leader", WAIT, || async {
        handle.status().is_leader.then_some(())
    })
    .await;
    let member = PeerToken::from_file(&secret).unwrap();
    let r = capstan_http_client::client()
        .post(format!("http://{addr}/raft/read-index"))
        .header(PEER_TOKEN_HEADER, member.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_refused(
        As::WrongToken,
        post_as(
            As::WrongToken,
            &addr.to_string(),
            "/raft/read-index",
            Vec::new(),
        )
        .await,
        "read-index",
    );
    handle.shutdown().await.unwrap();
}

/// Secrets at rest (issue #19): coord's data directory holds apps' environment secrets. A
/// fresh one is made 0700 (an empty one narrowed); once it holds the database, a directory that
/// others can reach is refused with its path and mode.
#[tokio::test]
async fn a_data_directory_open_to_others_is_refused_once_it_holds_the_database() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = single_member(dir.path(), addr);
    let data = config.data_dir.clone();
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let handle = Server::start_on(config.clone(), listener, token.clone())
        .await
        .unwrap();
    assert_eq!(mode(&data), 0o700, "an empty directory is narrowed");
    handle.shutdown().await.unwrap();

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    match Server::start_on(config, listener, tokio_util::sync::CancellationToken::new()).await {
        Err(StartError::StateDir(e)) => {
            let text = e.to_string();
            assert!(text.contains(&data.display().to_string()), "{text}");
            assert!(text.contains("0755"), "{text}");
        }
        Err(e) => panic!("expected a state dir error, got {e}"),
        Ok(_) => panic!("a world-readable data directory was accepted"),
    }
}
