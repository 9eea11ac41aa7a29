//! Forwarding names outside our zones to upstream resolvers: each query goes to two upstreams
//! at once (chosen at random among the zone's or the default ones) and the first usable answer
//! wins; a truncated UDP answer is retried over TCP; answers are cached within their TTL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::select_ok;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use rand::seq::SliceRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

use crate::resolve::{ForwardRequest, ResponderConfig, encode};

/// Upstream resolvers and the answer cache.
#[derive(Debug)]
pub struct Forwarder {
    default: Vec<SocketAddr>,
    /// (lower-cased zone with trailing dot, upstreams), longest zone first.
    zones: Vec<(String, Vec<SocketAddr>)>,
    timeout: Duration,
    cache: Mutex<Cache>,
}

#[derive(Debug)]
struct Cache {
    max: usize,
    entries: HashMap<(String, u16, u16), Cached>,
}

#[derive(Debug, Clone)]
struct Cached {
    msg: Message,
    stored: Instant,
    ttl: u32,
}

/// Why an upstream exchange failed (logged, then SERVFAIL).
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("upstream {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("upstream {addr} failed")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {0} sent an unusable answer")]
    Bad(SocketAddr),
    #[error("upstream {addr} answered {rcode}")]
    Failed {
        addr: SocketAddr,
        rcode: ResponseCode,
    },
}

impl Forwarder {
    pub fn new(
        default: Vec<SocketAddr>,
        zones: Vec<(String, Vec<SocketAddr>)>,
        timeout: Duration,
        cache_entries: usize,
    ) -> Forwarder {
        let mut zones: Vec<(String, Vec<SocketAddr>)> = zones
            .into_iter()
            .map(|(z, u)| (crate::snapshot::fqdn(&z), u))
            .collect();
        zones.sort_by_key(|z| std::cmp::Reverse(z.0.len()));
        Forwarder {
            default,
            zones,
            timeout,
            cache: Mutex::new(Cache {
                max: cache_entries,
                entries: HashMap::new(),
            }),
        }
    }

    /// The upstreams responsible for `name` (lower case, trailing dot).
    pub fn upstreams_for(&self, name: &str) -> &[SocketAddr] {
        for (zone, ups) in &self.zones {
            if name == zone || name.ends_with(&format!(".{zone}")) {
                return ups;
            }
        }
        &self.default
    }

    /// Answers a forwarded request; always returns a response (SERVFAIL when upstreams fail),
    /// cut to the client's limit.
    pub async fn forward(&self, req: &ForwardRequest, cfg: &ResponderConfig) -> Vec<u8> {
        encode(self.answer(req).await, req.max_size, cfg)
    }

    /// The reply to a forwarded request (SERVFAIL when upstreams fail), addressed to the
    /// client but not yet cut to its limit.
    pub async fn answer(&self, req: &ForwardRequest) -> Message {
        let Some(query) = req.request.queries.first().cloned() else {
            return servfail(req);
        };
        let key = (
            req.name.clone(),
            u16::from(query.query_type()),
            u16::from(query.query_class()),
        );
        if let Some(hit) = self.cached(&key) {
            return self.reply_from(req, hit);
        }
        let upstreams = self.upstreams_for(&req.name);
        let mut chosen: Vec<SocketAddr> = upstreams.to_vec();
        chosen.shuffle(&mut rand::rng());
        chosen.truncate(2);
        if chosen.is_empty() {
            return servfail(req);
        }
        let attempts = chosen
            .iter()
            .map(|&up| Box::pin(self.exchange(up, query.clone())));
        match select_ok(attempts).await {
            Ok((answer, _)) => {
                self.store(key, &answer);
                self.reply_from(req, answer)
            }
            Err(e) => {
                debug!(name = %req.name, error = %capstan_runtime::Chain(&e), "Forwarding failed");
                servfail(req)
            }
        }
    }

    fn cached(&self, key: &(String, u16, u16)) -> Option<Message> {
        let cache = self.cache.lock().ok()?;
        let hit = cache.entries.get(key)?;
        let age = hit.stored.elapsed().as_secs();
        if age >= u64::from(hit.ttl) {
            return None;
        }
        let mut msg = hit.msg.clone();
        let age = age as u32;
        for r in msg
            .answers
            .iter_mut()
            .chain(msg.authorities.iter_mut())
            .chain(msg.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(msg)
    }

    fn store(&self, key: (String, u16, u16), msg: &Message) {
        let rcode = msg.metadata.response_code;
        if msg.metadata.truncation
            || !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain)
        {
            return;
        }
        let ttl = if msg.answers.is_empty() {
            // Negative answer: the SOA's TTL bounds it (RFC 2308).
            msg.authorities
                .iter()
                .map(|r| match &r.data {
                    hickory_proto::rr::RData::SOA(soa) => r.ttl.min(soa.minimum),
                    _ => r.ttl,
                })
                .min()
                .unwrap_or(0)
        } else {
            msg.answers.iter().map(|r| r.ttl).min().unwrap_or(0)
        };
        if ttl == 0 {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.entries.len() >= cache.max {
            let now = Instant::now();
            cache
                .entries
                .retain(|_, c| now.duration_since(c.stored).as_secs() < u64::from(c.ttl));
            if cache.entries.len() >= cache.max {
                // Still full of live entries: forget them all rather than track recency.
                cache.entries.clear();
            }
        }
        if cache.max > 0 {
            cache.entries.insert(
                key,
                Cached {
                    msg: msg.clone(),
                    stored: Instant::now(),
                    ttl,
                },
            );
        }
    }

    /// The upstream answer re-addressed to our client.
    fn reply_from(&self, req: &ForwardRequest, upstream: Message) -> Message {
        let mut m = upstream;
        m.metadata.id = req.request.metadata.id;
        m.metadata.message_type = MessageType::Response;
        m.metadata.recursion_desired = req.request.metadata.recursion_desired;
        m.metadata.authoritative = false;
        m.queries = req.request.queries.clone();
        m.signature = None;
        m.edns = req.request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            e
        });
        m
    }

    /// One question to one upstream: UDP, then TCP if the answer was truncated.
    async fn exchange(&self, upstream: SocketAddr, query: Query) -> Result<Message, UpstreamError> {
        let io = |source| UpstreamError::Io {
            addr: upstream,
            source,
        };
        let id: u16 = rand::random();
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        msg.set_edns(edns);
        let bytes = msg.to_vec().map_err(|_| UpstreamError::Bad(upstream))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let udp = async {
            let bind: SocketAddr = if upstream.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .map_err(|_| UpstreamError::Bad(upstream))?;
            let sock = UdpSocket::bind(bind).await.map_err(io)?;
            sock.connect(upstream).await.map_err(io)?;
            sock.send(&bytes).await.map_err(io)?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = sock.recv(&mut buf).await.map_err(io)?;
                match Message::from_vec(&buf[..n]) {
                    Ok(m) if m.metadata.id == id && m.queries.first() == Some(&query) => {
                        return Ok(m);
                    }
                    // A stray or spoofed packet: keep waiting for ours.
                    _ => continue,
                }
            }
        };
        let answer = tokio::time::timeout_at(deadline, udp)
            .await
            .map_err(|_| UpstreamError::Timeout(upstream))??;
        if !answer.metadata.truncation {
            return usable(upstream, answer);
        }
        let tcp = async {
            let mut s = TcpStream::connect(upstream).await.map_err(io)?;
            let len = u16::try_from(bytes.len()).map_err(|_| UpstreamError::Bad(upstream))?;
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            s.write_all(&framed).await.map_err(io)?;
            let n = s.read_u16().await.map_err(io)?;
            let mut buf = vec![0u8; usize::from(n)];
            s.read_exact(&mut buf).await.map_err(io)?;
            match Message::from_vec(&buf) {
                Ok(m) if m.metadata.id == id => Ok(m),
                _ => Err(UpstreamError::Bad(upstream)),
            }
        };
        let answer = tokio::time::timeout_at(deadline, tcp)
            .await
            .map_err(|_| UpstreamError::Timeout(upstream))??;
        usable(upstream, answer)
    }
}

/// A SERVFAIL or REFUSED from one upstream should not beat a real answer from the other.
fn usable(addr: SocketAddr, answer: Message) -> Result<Message, UpstreamError> {
    match answer.metadata.response_code {
        rcode @ (ResponseCode::ServFail | ResponseCode::Refused) => {
            Err(UpstreamError::Failed { addr, rcode })
        }
        _ => Ok(answer),
    }
}

fn servfail(req: &ForwardRequest) -> Message {
    let mut m = Message::error_msg(
        req.request.metadata.id,
        OpCode::Query,
        ResponseCode::ServFail,
    );
    m.metadata.recursion_desired = req.request.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.queries = req.request.queries.clone();
    m
}
