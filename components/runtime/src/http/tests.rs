use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::*;

/// A server whose one route echoes the body's length; `limits` as given.
async fn start(limits: HttpLimits) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let router = Router::new()
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/json",
            post(|axum::Json(v): axum::Json<serde_json::Value>| async move { v.to_string() }),
        );
    tokio::spawn(serve(listener, router, limits, stop.clone()));
    (addr, stop)
}

fn small() -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        max_body_bytes: 1024,
        max_json_depth: 16,
        ..HttpLimits::default()
    }
}

/// Sends `request` and reads until the server closes: (status, whole response).
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    // A failed test must not hang: the server closes (Connection: close) well before this.
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .ok();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn post_req(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Waits for the server to close `s` (a read of 0 bytes or a reset), after reading anything
/// it sent first.
async fn closed_by_server(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_normal_request_passes_through() {
    let (addr, stop) = start(small()).await;
    let (status, text) = exchange(addr, &post_req("/echo", "text/plain", b"hello")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("\r\n\r\n5"), "{text}");
    let (status, text) = exchange(
        addr,
        &post_req("/json", "application/json", br#"{"a":[1,{"b":2}]}"#),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with(r#"{"a":[1,{"b":2}]}"#), "{text}");
    stop.cancel();
}

#[tokio::test]
async fn a_huge_declared_body_gets_413_before_it_is_sent() {
    let (addr, stop) = start(small()).await;
    let req = "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000000000\r\n\r\n";
    let (status, text) = exchange(addr, req.as_bytes()).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains(r#""code":"payload_too_large""#), "{text}");
    stop.cancel();
}

#[tokio::test]
async fn a_huge_chunked_body_gets_413() {
    let (addr, stop) = start(small()).await;
    for (path, ct) in [("/echo", "text/plain"), ("/json", "application/json")] {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for _ in 0..4 {
            req.extend_from_slice(format!("400\r\n{}\r\n", "x".repeat(0x400)).as_bytes());
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let (status, text) = exchange(addr, &req).await;
        assert_eq!(status, 413, "{path}: {text}");
    }
    stop.cancel();
}

#[tokio::test]
async fn a_deeply_nested_json_body_gets_400() {
    let limits = HttpLimits {
        max_body_bytes: 1024 * 1024,
        ..small()
    };
    let (addr, stop) = start(limits).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, text) = exchange(
        addr,
        &post_req("/json", "application/json", deep.as_bytes()),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("deeper than 16 levels"), "{text}");
    // At the limit it still parses.
    let ok = format!("{}{}", "[".repeat(16), "]".repeat(16));
    let (status, text) = exchange(
        addr,
        &post_req("/json", "application/json; charset=utf-8", ok.as_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    stop.cancel();
}

#[tokio::test]
async fn a_slowloris_header_is_closed() {
    let (addr, stop) = start(small()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-a: ")
        .await
        .unwrap();
    assert!(closed_by_server(s).await, "a partial head is closed");
    stop.cancel();
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let (addr, stop) = start(small()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .unwrap();
    // The answer comes, then the connection idles until the server closes it.
    assert!(closed_by_server(s).await, "an idle connection is closed");
    stop.cancel();
}

#[tokio::test]
async fn a_stalled_body_is_refused() {
    let (addr, stop) = start(small()).await;
    for (path, ct) in [("/echo", "text/plain"), ("/json", "application/json")] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: 100\r\n\r\n["
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out)).await;
        assert!(
            ended.is_ok(),
            "{path}: the server neither answered nor closed"
        );
        let text = String::from_utf8_lossy(&out);
        // A 4xx answer, or a closed connection; never a handler run on a partial body.
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 4"),
            "{path}: {text}"
        );
    }
    stop.cancel();
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let (addr, stop) = start(small()).await;
    let mut req = String::from(
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n",
    );
    for i in 0..200 {
        req.push_str(&format!("X-{i}: y\r\n"));
    }
    req.push_str("\r\n");
    let (status, text) = exchange(addr, req.as_bytes()).await;
    assert_eq!(status, 431, "{text}");
    stop.cancel();
}

#[test]
fn connections_are_capped_overall_and_per_address() {
    let limits = HttpLimits {
        max_connections: 3,
        max_connections_per_ip: 2,
        ..HttpLimits::default()
    };
    let counter: Arc<Mutex<Counter>> = Arc::default();
    let a: IpAddr = "10.0.0.1".parse().unwrap();
    let b: IpAddr = "10.0.0.2".parse().unwrap();
    let a1 = admit(&counter, a, &limits).expect("first from a");
    let a2 = admit(&counter, a, &limits).expect("second from a");
    assert!(admit(&counter, a, &limits).is_none(), "third from a");
    let b1 = admit(&counter, b, &limits).expect("first from b");
    assert!(admit(&counter, b, &limits).is_none(), "over the total");
    drop(a1);
    let b2 = admit(&counter, b, &limits).expect("a freed place is reused");
    drop((a2, b1, b2));
    let c = counter.lock().unwrap();
    assert_eq!((c.total, c.per_ip.len()), (0, 0));
}

#[tokio::test]
async fn a_deep_json_body_is_refused_as_it_streams_in_not_after() {
    let limits = HttpLimits {
        max_body_bytes: 1024 * 1024,
        ..small()
    };
    let (addr, stop) = start(limits).await;
    // The head announces far more than is sent: the answer comes without the rest.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = "POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500000\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all("[".repeat(100).as_bytes()).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
        .await
        .expect("an answer before the body is complete")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    stop.cancel();
}

#[test]
fn the_depth_scan_carries_across_pieces() {
    let mut scanner = DepthScanner::new(2);
    assert!(!scanner.feed(br#"[{"a":"[[[\"#));
    assert!(!scanner.feed(br#""]"}"#));
    assert!(!scanner.feed(b"[]"), "back to two levels");
    assert!(scanner.feed(b"[["), "a third level");
}

#[test]
fn json_depth_ignores_brackets_in_strings() {
    assert!(!json_depth_exceeds(
        br#"{"a":"[[[[[[[[[[[[","b":"\"[[[["}"#,
        1
    ));
    assert!(json_depth_exceeds(br#"{"a":[1]}"#, 1));
    assert!(!json_depth_exceeds(br#"{"a":[1]}"#, 2));
    assert!(!json_depth_exceeds(b"", 0));
}

/// The depth of a parsed document, counted the way the scanner counts.
fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn doc() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        "[\\[\\]{}\"\\\\a-z]{0,6}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(12, 64, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z\\[{\"]{0,3}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("CAPSTAN_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn the_depth_scan_agrees_with_the_parser(v in doc(), max in 0usize..14) {
        let text = serde_json::to_vec(&v).unwrap();
        prop_assert_eq!(json_depth_exceeds(&text, max), depth(&v) > max);
    }

    #[test]
    fn the_depth_scan_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..8) {
        let _ = json_depth_exceeds(&bytes, max);
    }
}
