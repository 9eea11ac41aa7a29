//! Regressions for the reliability probe's master findings: malformed calls are 400 (not
//! 501), oversized bodies 413 (not 400), and a method an endpoint does not serve is 405 with
//! `Allow` (not 200).

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const V1_APIS: [&str; 3] = ["/api/v1/scheduler", "/api/v1", "/api/capstan/agent/v1"];

#[tokio::test]
async fn malformed_calls_are_answered_400_naming_the_problem_on_every_v1_api() -> anyhow::Result<()>
{
    let m = Master::start().await;
    let cases = [
        (json!({}), "Expecting 'type' to be present"),
        (json!({"type": null}), "Expecting 'type' to be present"),
        (json!({"type": 7}), "'type' must be a string"),
        (json!({"type": ["SUBSCRIBE"]}), "'type' must be a string"),
        (json!({"type": {"x": 1}}), "'type' must be a string"),
        (
            json!({"type": "NO_SUCH_CALL"}),
            "unknown call type 'NO_SUCH_CALL'",
        ),
    ];
    for path in V1_APIS {
        for (body, want) in &cases {
            let r = m.post_json(path, body).await;
            assert_eq!(r.status(), 400, "{path} {body}");
            let text = r.text().await?;
            assert!(text.contains(want), "{path} {body}: {text}");
        }
        for body in ["[]", "\"SUBSCRIBE\"", "{\"type\":"] {
            let r = m
                .client
                .post(format!("{}{path}", m.base))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await?;
            assert_eq!(r.status(), 400, "{path} {body}");
        }
        let r = m
            .client
            .post(format!("{}{path}", m.base))
            .header("Content-Type", "application/x-protobuf")
            .body(&b"\xff\xff\xff"[..])
            .send()
            .await?;
        assert_eq!(r.status(), 400, "{path}: undecodable protobuf");
    }
    // A type of one API is unknown to another.
    let r = m
        .post_json("/api/v1/scheduler", &json!({"type":"GET_STATE"}))
        .await;
    assert_eq!(r.status(), 400);
    let r = m
        .post_json("/api/capstan/agent/v1", &json!({"type":"ACCEPT"}))
        .await;
    assert_eq!(r.status(), 400);
    // Well-formed calls Mesos itself answers 501 keep their 501.
    let r = m.post_json("/api/v1", &json!({"type":"UNKNOWN"})).await;
    assert_eq!(r.status(), 501);
    let r = m.post_json("/api/v1", &json!({"type":"GET_FLAGS"})).await;
    assert_eq!(r.status(), 501);
    Ok(())
}

/// Sends only the head of a POST announcing `len` body bytes and returns the answer's head.
async fn post_head_only(base: &str, path: &str, len: u64) -> anyhow::Result<String> {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await??;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test]
async fn bodies_over_the_limit_are_answered_413_on_every_v1_api() -> anyhow::Result<()> {
    let m = Master::start().await;
    for path in V1_APIS {
        let head = post_head_only(&m.base, path, 16 * 1024 * 1024 + 1).await?;
        assert!(head.starts_with("HTTP/1.1 413"), "{path}: {head}");
        let head = post_head_only(&m.base, path, 1 << 40).await?;
        assert!(head.starts_with("HTTP/1.1 413"), "{path}: {head}");
    }
    // A body just under the limit is read (and then judged on its content).
    let body = format!(
        "{{\"type\":\"SUBSCRIBE\",\"pad\":\"{}\"}}",
        "x".repeat(1 << 20)
    );
    let r = m
        .client
        .post(format!("{}/api/v1", m.base))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    assert_eq!(r.status(), 200, "a 1 MiB operator SUBSCRIBE is served");
    Ok(())
}

#[tokio::test]
async fn read_endpoints_answer_405_with_allow_to_methods_other_than_get_and_head()
-> anyhow::Result<()> {
    let m = Master::start().await;
    let no_redirect = capstan_http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let reads = [
        "/master/state",
        "/master/state.json",
        "/state.json",
        "/state",
        "/master/slaves",
        "/master/frameworks",
        "/master/tasks",
        "/master/tasks.json",
        "/master/redirect",
        "/master/health",
        "/health",
        "/version",
        "/metrics/snapshot",
    ];
    let others = [
        "FOO", "PROPFIND", "TRACE", "DELETE", "POST", "PUT", "OPTIONS",
    ];
    for path in reads {
        let url = format!("{}{path}", m.base);
        for method in others {
            let r = no_redirect
                .request(Method::from_bytes(method.as_bytes())?, &url)
                .send()
                .await?;
            assert_eq!(r.status(), 405, "{method} {path}");
            assert_eq!(r.headers()["allow"], "GET, HEAD", "{method} {path}");
        }
        let r = no_redirect.get(&url).send().await?;
        assert!(
            r.status() == 200 || r.status() == 307,
            "GET {path}: {}",
            r.status()
        );
        let r = no_redirect.head(&url).send().await?;
        assert!(
            r.status() == 200 || r.status() == 307,
            "HEAD {path}: {}",
            r.status()
        );
    }
    for path in V1_APIS {
        let url = format!("{}{path}", m.base);
        for method in ["GET", "HEAD", "PUT", "DELETE", "FOO"] {
            let r = no_redirect
                .request(Method::from_bytes(method.as_bytes())?, &url)
                .send()
                .await?;
            assert_eq!(r.status(), 405, "{method} {path}");
            assert_eq!(r.headers()["allow"], "POST", "{method} {path}");
        }
    }
    // Unknown paths stay 404 whatever the method.
    let r = no_redirect
        .request(Method::from_bytes(b"FOO")?, format!("{}/no/such", m.base))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    Ok(())
}
