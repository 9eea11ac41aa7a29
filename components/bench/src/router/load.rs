//! The router benchmark's load generator: a minimal HTTP/1.1 client over raw sockets (one
//! request in flight per connection, `Content-Length` and chunked bodies), run on a
//! single-threaded runtime on its own thread pinned to one core, so that the client costs as
//! little CPU as possible and the proxy under test, not the client, is the bottleneck.
//!
//! Three shapes of load: closed-loop keep-alive throughput, fixed-rate latency, and one new
//! TLS connection (full handshake) per request. Every loop is bounded in time and in count;
//! a response counts only if it is a 200 with the backend's body length (a 401 or 502 from
//! a proxy is an error, never throughput).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most requests one connection sends in one run (far above what a run reaches).
const MAX_PER_CONN: u64 = 50_000_000;

/// What the client asks for, and what a good answer looks like.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The request path, e.g. `/mesos_dns/bench/hosts`.
    pub path: String,
    /// `Authorization` header value sent on every request (the same for every target).
    pub authorization: Option<String>,
    /// The body length of a good answer.
    pub body_len: usize,
}

impl Target {
    /// The request's bytes; `close` adds `Connection: close`.
    pub fn request(&self, close: bool) -> Vec<u8> {
        let mut r = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: capstan-bench\r\nAccept: */*\r\n",
            self.path, self.addr
        );
        if let Some(a) = &self.authorization {
            r.push_str("Authorization: ");
            r.push_str(a);
            r.push_str("\r\n");
        }
        if close {
            r.push_str("Connection: close\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// One parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body_len: usize,
    /// The server will close the connection after this response.
    pub close: bool,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Reads more into `buf`; an error at EOF.
async fn more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.reserve(4096);
    let n = s.read_buf(buf).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Parses the head in `head` (status line and headers, without the blank line).
fn parse_head(head: &[u8]) -> std::io::Result<(u16, Option<usize>, bool, bool)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let text = std::str::from_utf8(head).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| bad("bad content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    Ok((status, length, chunked, close))
}

/// Reads one response from `s`; `buf` keeps bytes read past it.
pub async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Response> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n", 0) {
            break p;
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "response head over 64 KiB",
            ));
        }
        more(s, buf).await?;
    };
    let (status, length, chunked, close) = parse_head(&buf[..head_end])?;
    let body_start = head_end + 4;
    let (body_len, end) = if chunked {
        let mut at = body_start;
        let mut total = 0usize;
        loop {
            let line_end = loop {
                if let Some(p) = find(buf, b"\r\n", at) {
                    break p;
                }
                more(s, buf).await?;
            };
            let size_text = std::str::from_utf8(&buf[at..line_end]).unwrap_or("");
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
            })?;
            at = line_end + 2;
            if size == 0 {
                // Trailers (none expected) end with an empty line.
                let trailer_end = loop {
                    if buf.get(at..at + 2) == Some(b"\r\n") {
                        break at + 2;
                    }
                    if let Some(p) = find(buf, b"\r\n\r\n", at) {
                        break p + 4;
                    }
                    more(s, buf).await?;
                };
                break (total, trailer_end);
            }
            while buf.len() < at + size + 2 {
                more(s, buf).await?;
            }
            total += size;
            at += size + 2;
        }
    } else if let Some(n) = length {
        while buf.len() < body_start + n {
            more(s, buf).await?;
        }
        (n, body_start + n)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        (0, body_start)
    } else {
        // Delimited by the end of the connection.
        loop {
            buf.reserve(4096);
            if s.read_buf(buf).await? == 0 {
                break;
            }
        }
        (buf.len() - body_start, buf.len())
    };
    buf.drain(..end);
    Ok(Response {
        status,
        body_len,
        close: close || (length.is_none() && !chunked && body_len > 0),
    })
}

/// Sends `req` and reads the answer; whether it is a good one, and whether to reconnect.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    req: &[u8],
    body_len: usize,
) -> anyhow::Result<bool> {
    s.write_all(req).await?;
    let r = read_response(s, buf).await?;
    if r.status != 200 || r.body_len != body_len {
        bail!(
            "answered {} with {} body bytes (expected 200 with {body_len})",
            r.status,
            r.body_len
        );
    }
    Ok(r.close)
}

/// Counts of one run.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Per-request latencies (only for the latency shape).
    pub samples: Vec<Duration>,
}

impl Counts {
    pub fn per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, o: Counts) {
        self.ok += o.ok;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.samples.extend(o.samples);
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Closed loop: `conns` keep-alive connections, each sending its next request as soon as the
/// previous answer arrived, for `dur`.
pub async fn keepalive(target: &Target, conns: usize, dur: Duration) -> Counts {
    let req: Arc<[u8]> = target.request(false).into();
    let start = Instant::now();
    let until = start + dur;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (req, addr, body_len) = (req.clone(), target.addr, target.body_len);
        set.spawn_local(async move {
            let mut c = Counts::default();
            let mut buf = Vec::with_capacity(8192);
            let mut sent = 0u64;
            'outer: while Instant::now() < until && sent < MAX_PER_CONN {
                let mut s = match connect(addr).await {
                    Ok(s) => s,
                    Err(e) => {
                        c.error(format!("connect: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                buf.clear();
                while Instant::now() < until && sent < MAX_PER_CONN {
                    sent += 1;
                    match exchange(&mut s, &mut buf, &req, body_len).await {
                        Ok(close) => {
                            c.ok += 1;
                            if close {
                                continue 'outer;
                            }
                        }
                        Err(e) => {
                            c.error(format!("{e:#}"));
                            continue 'outer;
                        }
                    }
                }
            }
            c
        });
    }
    let mut all = Counts::default();
    while let Some(r) = set.join_next().await {
        if let Ok(c) = r {
            all.merge(c);
        }
    }
    all.elapsed = start.elapsed();
    all
}

/// Open loop at a fixed rate: `conns` keep-alive connections, each sending `rate / conns`
/// requests per second on a fixed schedule for `dur`; records each request's latency (from
/// the moment it was written to the end of the answer).
pub async fn fixed_rate(target: &Target, conns: usize, rate: f64, dur: Duration) -> Counts {
    let req: Arc<[u8]> = target.request(false).into();
    let start = Instant::now();
    let until = start + dur;
    let period = Duration::from_secs_f64(conns as f64 / rate.max(1.0));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..conns {
        let (req, addr, body_len) = (req.clone(), target.addr, target.body_len);
        // Spread the connections' schedules evenly over one period.
        let offset = period.mul_f64(i as f64 / conns as f64);
        set.spawn_local(async move {
            let mut c = Counts::default();
            let mut buf = Vec::with_capacity(8192);
            let mut s = None;
            let mut next = tokio::time::Instant::from_std(start) + offset;
            for _ in 0..MAX_PER_CONN {
                if next.into_std() >= until {
                    break;
                }
                tokio::time::sleep_until(next).await;
                next += period;
                if s.is_none() {
                    match connect(addr).await {
                        Ok(conn) => {
                            buf.clear();
                            s = Some(conn);
                        }
                        Err(e) => {
                            c.error(format!("connect: {e}"));
                            continue;
                        }
                    }
                }
                let Some(conn) = s.as_mut() else { continue };
                let t0 = Instant::now();
                match exchange(conn, &mut buf, &req, body_len).await {
                    Ok(close) => {
                        c.samples.push(t0.elapsed());
                        c.ok += 1;
                        if close {
                            s = None;
                        }
                    }
                    Err(e) => {
                        c.error(format!("{e:#}"));
                        s = None;
                    }
                }
            }
            c
        });
    }
    let mut all = Counts::default();
    while let Some(r) = set.join_next().await {
        if let Ok(c) = r {
            all.merge(c);
        }
    }
    all.elapsed = start.elapsed();
    all
}

/// `conns` loops, each: connect, full TLS handshake, one request with `Connection: close`,
/// read the answer, drop the connection; for `dur`.
pub async fn tls_handshakes(
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    conns: usize,
    dur: Duration,
) -> Counts {
    let req: Arc<[u8]> = target.request(true).into();
    let connector = tokio_rustls::TlsConnector::from(tls);
    let start = Instant::now();
    let until = start + dur;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (req, addr, body_len) = (req.clone(), target.addr, target.body_len);
        let (connector, name) = (connector.clone(), server_name.clone());
        set.spawn_local(async move {
            let mut c = Counts::default();
            let mut buf = Vec::with_capacity(8192);
            for _ in 0..MAX_PER_CONN {
                if Instant::now() >= until {
                    break;
                }
                let one = async {
                    let tcp = connect(addr).await.context("connect")?;
                    let mut s = connector
                        .connect(name.clone(), tcp)
                        .await
                        .context("TLS handshake")?;
                    buf.clear();
                    exchange(&mut s, &mut buf, &req, body_len).await?;
                    anyhow::Ok(())
                };
                match one.await {
                    Ok(()) => c.ok += 1,
                    Err(e) => {
                        c.error(format!("{e:#}"));
                        if c.errors > c.ok + 100 {
                            // Failing fast: do not spin for the whole run.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            c
        });
    }
    let mut all = Counts::default();
    while let Some(r) = set.join_next().await {
        if let Ok(c) = r {
            all.merge(c);
        }
    }
    all.elapsed = start.elapsed();
    all
}

/// Pins the calling thread to `core` with `taskset` (on its thread id); why not, if it failed.
fn pin_this_thread(core: usize) -> Result<(), String> {
    let link = std::fs::read_link("/proc/thread-self").map_err(|e| e.to_string())?;
    let tid = link
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("no thread id")?
        .to_owned();
    let out = std::process::Command::new("taskset")
        .arg("-cp")
        .arg(core.to_string())
        .arg(&tid)
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Runs `f` on a new thread pinned to `core`, on a single-threaded runtime with a local task
/// set (the load loops use `spawn_local`); also the CPU time the thread used.
pub async fn on_core<T, F, Fut>(core: usize, f: F) -> anyhow::Result<(T, Duration)>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            let out = (|| {
                pin_this_thread(core)
                    .map_err(|e| anyhow::anyhow!("cannot pin the load thread: {e}"))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let local = tokio::task::LocalSet::new();
                let cpu0 = crate::stats::thread_cpu_time().unwrap_or_default();
                let out = local.block_on(&rt, f());
                let cpu = crate::stats::thread_cpu_time()
                    .unwrap_or_default()
                    .saturating_sub(cpu0);
                anyhow::Ok((out, cpu))
            })();
            let _ = tx.send(out);
        })
        .context("spawning the load thread")?;
    rx.await.context("the load thread died")?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse_all(bytes: &[u8]) -> Vec<Response> {
        let mut src = bytes;
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Ok(r) = read_response(&mut src, &mut buf).await {
            out.push(r);
            if buf.is_empty() && src.is_empty() {
                break;
            }
        }
        out
    }

    #[tokio::test]
    async fn responses_with_length_chunks_and_close_are_read_one_by_one() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3;x=1\r\ncde\r\n0\r\n\r\n\
HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let got = parse_all(wire).await;
        assert_eq!(
            got,
            vec![
                Response {
                    status: 200,
                    body_len: 3,
                    close: false
                },
                Response {
                    status: 200,
                    body_len: 5,
                    close: false
                },
                Response {
                    status: 401,
                    body_len: 0,
                    close: true
                },
            ]
        );
        let eof_body = parse_all(b"HTTP/1.0 200 OK\r\n\r\nhello").await;
        assert_eq!(eof_body[0].body_len, 5);
        assert!(eof_body[0].close);
        assert!(parse_all(b"garbage\r\n\r\n").await.is_empty());
        assert!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab")
                .await
                .is_empty()
        );
    }

    #[test]
    fn requests_carry_host_authorization_and_close() {
        let t = Target {
            addr: "127.0.0.1:8080".parse().unwrap(),
            path: "/mesos_dns/x".into(),
            authorization: Some("token=abc".into()),
            body_len: 1,
        };
        let r = String::from_utf8(t.request(true)).unwrap();
        assert!(r.starts_with("GET /mesos_dns/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(r.contains("\r\nAuthorization: token=abc\r\n"));
        assert!(r.ends_with("Connection: close\r\n\r\n"));
        assert!(
            !String::from_utf8(t.request(false))
                .unwrap()
                .contains("close")
        );
    }
}
