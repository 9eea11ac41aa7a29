//! The router benchmark's backend: a minimal HTTP/1.1 server (child process
//! `capstan-bench --serve router-backend`) answering every `GET /bench/...` with the same
//! fixed 256-byte JSON body and anything else with 404, on keep-alive connections. Both proxies
//! and the direct run talk to this one process, so it is the same backend for all; it is
//! written on raw sockets so that it costs as little as possible of the core it shares with the
//! load generator. The 404 for other paths checks that each proxy stripped its `/mesos_dns`
//! prefix.

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The body of a good answer.
pub const BODY_LEN: usize = 256;

/// The path prefix the backend serves.
pub const PREFIX: &str = "/bench/";

fn body() -> Vec<u8> {
    let head = br#"{"backend":"capstan-bench","pad":""#;
    let tail = br#""}"#;
    let mut b = head.to_vec();
    b.resize(BODY_LEN - tail.len(), b'x');
    b.extend_from_slice(tail);
    b
}

fn response(status: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Child side: serves until `token` is cancelled; returns the address.
pub async fn serve(token: CancellationToken) -> anyhow::Result<String> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding the backend")?;
    let addr = listener.local_addr()?.to_string();
    let ok: std::sync::Arc<[u8]> = response("200 OK", &body()).into();
    let missing: std::sync::Arc<[u8]> =
        response("404 Not Found", br#"{"error":"not found"}"#).into();
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                () = token.cancelled() => return,
            };
            let Ok((s, _)) = conn else { continue };
            let _ = s.set_nodelay(true);
            let (ok, missing) = (ok.clone(), missing.clone());
            tokio::spawn(async move {
                let _ = handle(s, &ok, &missing).await;
            });
        }
    });
    Ok(addr)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn handle(mut s: TcpStream, ok: &[u8], missing: &[u8]) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            if buf.len() > 64 * 1024 {
                return Ok(());
            }
            buf.reserve(4096);
            if s.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let path = request_line.split(' ').nth(1).unwrap_or("");
        let mut length = 0usize;
        let mut close = request_line.ends_with("HTTP/1.0");
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.to_ascii_lowercase().contains("close");
                }
            }
        }
        // Skip a request body, if any (the benchmark sends none).
        let end = head_end + 4 + length;
        while buf.len() < end {
            buf.reserve(4096);
            if s.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.drain(..end);
        let answer = if path.starts_with(PREFIX) {
            ok
        } else {
            missing
        };
        s.write_all(answer).await?;
        if close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_backend_answers_its_prefix_with_the_fixed_body_on_one_connection() {
        let token = CancellationToken::new();
        let addr = serve(token.clone()).await.unwrap();
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let mut buf = Vec::new();
        for (path, status, len) in [("/bench/x", 200, BODY_LEN), ("/mesos_dns/bench/x", 404, 21)] {
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let r = super::super::load::read_response(&mut s, &mut buf)
                .await
                .unwrap();
            assert_eq!((r.status, r.body_len, r.close), (status, len, false));
        }
        assert_eq!(body().len(), BODY_LEN);
        token.cancel();
    }
}
