//! In-process coord clusters on loopback port 0, with fault-injection proxies between members.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_coord::{Config, MemberConfig, Server, ServerHandle};
use capstan_coord_client::{Client, ClientOptions, PeerToken};
use capstan_runtime::SecurityConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

/// The peer secret of every test cluster.
pub const PEER_SECRET: &str = "the coord test cluster's peer secret";

/// The token members of a test cluster send each other (and administrators send for
/// membership changes).
pub fn peer_token() -> PeerToken {
    PeerToken::derive(PEER_SECRET.as_bytes()).expect("a long enough secret")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COORD_TEST_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `f` until it returns `Some`, failing the test after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP forwarder that can drop all traffic (a network partition of one direction).
pub struct Proxy {
    pub addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let blocked = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (b, c) = (blocked.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if b.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut conns = c.lock().unwrap();
                conns.retain(|h| !h.is_finished());
                conns.push(h.abort_handle());
            }
        });
        Proxy {
            addr,
            blocked,
            conns,
            task,
        }
    }

    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.block();
    }
}

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub addrs: BTreeMap<u64, SocketAddr>,
    pub handles: BTreeMap<u64, ServerHandle>,
    /// (from, to) -> proxy carrying `from`'s raft traffic to `to`.
    pub proxies: BTreeMap<(u64, u64), Proxy>,
    pub initial: Vec<u64>,
    pub snapshot_every: u64,
    pub watch_history: usize,
    /// Raft heartbeat; also openraft's AppendEntries timeout. Elections time out after
    /// 240 ms more than a heartbeat, up to twice that.
    pub heartbeat_ms: u64,
    /// Each member's `security` section (permissive when absent).
    pub security: BTreeMap<u64, SecurityConfig>,
    token: CancellationToken,
}

impl Cluster {
    pub async fn start(n: u64) -> Cluster {
        Cluster::build(n, false, 10_000).await
    }

    pub async fn start_with_proxies(n: u64) -> Cluster {
        Cluster::build(n, true, 10_000).await
    }

    pub async fn build(n: u64, proxies: bool, snapshot_every: u64) -> Cluster {
        Cluster::build_with(n, proxies, snapshot_every, 60).await
    }

    /// Like [`Cluster::build`] with a slower heartbeat (for appends of megabytes, which a
    /// debug build does not send within 60 ms).
    pub async fn build_with(
        n: u64,
        proxies: bool,
        snapshot_every: u64,
        heartbeat_ms: u64,
    ) -> Cluster {
        Cluster::build_secured(n, proxies, snapshot_every, heartbeat_ms, BTreeMap::new()).await
    }

    /// Like [`Cluster::build_with`], each member with its `security` section.
    pub async fn build_secured(
        n: u64,
        proxies: bool,
        snapshot_every: u64,
        heartbeat_ms: u64,
        security: BTreeMap<u64, SecurityConfig>,
    ) -> Cluster {
        init_tracing();
        let mut c = Cluster {
            root: tempfile::tempdir().expect("temp dir"),
            addrs: BTreeMap::new(),
            handles: BTreeMap::new(),
            proxies: BTreeMap::new(),
            initial: (1..=n).collect(),
            snapshot_every,
            watch_history: 10_000,
            heartbeat_ms,
            security,
            token: CancellationToken::new(),
        };
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            c.addrs.insert(id, l.local_addr().unwrap());
            listeners.insert(id, l);
        }
        if proxies {
            for from in 1..=n {
                for to in 1..=n {
                    if from != to {
                        c.proxies
                            .insert((from, to), Proxy::start(c.addrs[&to]).await);
                    }
                }
            }
        }
        for (id, l) in listeners {
            let cfg = c.config(id);
            let h = Server::start_on(cfg, l, c.token.clone())
                .await
                .expect("start member");
            c.handles.insert(id, h);
        }
        c
    }

    pub fn config(&self, id: u64) -> Config {
        let members = self
            .initial
            .iter()
            .map(|m| MemberConfig {
                id: *m,
                addr: self.addrs[m].to_string(),
            })
            .collect();
        let dial_overrides = self
            .proxies
            .iter()
            .filter(|((from, _), _)| *from == id)
            .map(|((_, to), p)| (self.addrs[to].to_string(), p.addr.to_string()))
            .collect();
        Config {
            id,
            listen: self
                .addrs
                .get(&id)
                .copied()
                .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()),
            data_dir: self.root.path().join(format!("member-{id}")),
            members,
            // 300-600 ms for the usual 60 ms heartbeat; a slow heartbeat keeps elections
            // prompt (a lost first vote is retried within seconds).
            election_timeout_min_ms: self.heartbeat_ms + 240,
            election_timeout_max_ms: 2 * (self.heartbeat_ms + 240),
            heartbeat_interval_ms: self.heartbeat_ms,
            snapshot_every_entries: self.snapshot_every,
            log_entries_kept_after_snapshot: 5.min(self.snapshot_every),
            watch_history: self.watch_history,
            lease_check_interval_ms: 50,
            request_timeout_ms: 8_000,
            dial_overrides,
            peer_secret: Some(PEER_SECRET.to_owned()),
            security: self.security.get(&id).cloned().unwrap_or_default(),
            ..Config::default()
        }
    }

    /// Starts a member that is not part of the initial configuration (it waits to be added).
    pub async fn start_joiner(&mut self, id: u64) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().unwrap();
        self.addrs.insert(id, addr);
        let mut cfg = self.config(id);
        cfg.members = Vec::new();
        let h = Server::start_on(cfg, l, self.token.clone())
            .await
            .expect("start joiner");
        self.handles.insert(id, h);
        addr
    }

    pub async fn kill(&mut self, id: u64) {
        if let Some(h) = self.handles.remove(&id) {
            h.shutdown().await.expect("clean shutdown");
        }
    }

    pub async fn restart(&mut self, id: u64) {
        assert!(!self.handles.contains_key(&id), "member {id} is running");
        let addr = self.addrs[&id];
        let l = wait_until("port to be free", Duration::from_secs(10), || async move {
            TcpListener::bind(addr).await.ok()
        })
        .await;
        let mut cfg = self.config(id);
        if !self.initial.contains(&id) {
            cfg.members = Vec::new();
        }
        let h = Server::start_on(cfg, l, self.token.clone())
            .await
            .expect("restart member");
        self.handles.insert(id, h);
    }

    pub fn endpoint(&self, id: u64) -> String {
        self.addrs[&id].to_string()
    }

    /// A client of every member (running or not), with the peer token (for membership
    /// changes).
    pub fn client(&self) -> Client {
        Client::new(self.addrs.values().map(|a| a.to_string()))
            .unwrap()
            .with_peer_token(peer_token())
    }

    pub fn client_for(&self, ids: &[u64], opts: ClientOptions) -> Client {
        Client::with_options(ids.iter().map(|id| self.endpoint(*id)), opts)
            .unwrap()
            .with_peer_token(peer_token())
    }

    /// Waits until every running member agrees on a running leader.
    pub async fn wait_leader(&self) -> u64 {
        wait_until(
            "a leader agreed by all running members",
            Duration::from_secs(20),
            || async {
                let statuses: Vec<_> = self.handles.values().map(|h| h.status()).collect();
                let leader = statuses.iter().find(|s| s.is_leader)?.id;
                statuses
                    .iter()
                    .all(|s| s.leader == Some(leader))
                    .then_some(leader)
            },
        )
        .await
    }

    /// Cuts member `id` off from every other member (both directions).
    pub fn partition(&self, id: u64) {
        for ((from, to), p) in &self.proxies {
            if *from == id || *to == id {
                p.block();
            }
        }
    }

    pub fn heal(&self) {
        for p in self.proxies.values() {
            p.unblock();
        }
    }

    pub async fn stop(mut self) {
        let ids: Vec<u64> = self.handles.keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }
}
