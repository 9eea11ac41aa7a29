//! The userspace data plane: one tokio TCP listener per VIP address, round robin over the
//! VIP's current backends, bytes copied both ways.
//!
//! [`Proxy::apply`] makes the listeners match a table: new VIP addresses are bound, gone ones
//! stop accepting (a client then gets "connection refused"), and changed backend sets take
//! effect for the next connection. Connections already open are never cut by a table change:
//! a backend that became unhealthy or was removed drains. A VIP without a serving backend
//! accepts and closes at once, so clients fail fast instead of hanging. UDP VIPs are not
//! served in this mode. The VIP addresses must be local (made so by the operator or the later
//! nftables/dummy-interface step); tests use 127.0.0.0/8. With [`Proxy::with_reuse_port`]
//! the listeners are bound with `SO_REUSEPORT`, so several l4lb processes sharing one network
//! namespace (the nodes of a `capstan dev` cluster) serve the same VIPs together, the kernel
//! spreading new connections over them, and any one of them going away leaves the VIP served.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use capstan_types::Chain;
use capstan_types::vip::{Backend, Protocol};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Counters of the proxy, for metrics and tests.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections forwarded to a backend.
    pub forwarded: AtomicU64,
    /// Connections closed because no backend took them.
    pub refused: AtomicU64,
    /// Connections open right now.
    pub open: AtomicU64,
}

struct Listener {
    backends: watch::Sender<Arc<Vec<SocketAddr>>>,
    stop: CancellationToken,
}

/// The set of VIP listeners.
pub struct Proxy {
    listeners: HashMap<SocketAddr, Listener>,
    connect_timeout: Duration,
    reuse_port: bool,
    shutdown: CancellationToken,
    stats: Arc<ProxyStats>,
}

/// A VIP address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on VIP {addr}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

impl Proxy {
    /// An empty proxy; everything it starts stops when `shutdown` is cancelled.
    pub fn new(connect_timeout: Duration, shutdown: CancellationToken) -> Proxy {
        Proxy {
            listeners: HashMap::new(),
            connect_timeout,
            reuse_port: false,
            shutdown,
            stats: Arc::default(),
        }
    }

    /// Binds VIP listeners with `SO_REUSEPORT` (see the module docs).
    pub fn with_reuse_port(mut self, reuse_port: bool) -> Proxy {
        self.reuse_port = reuse_port;
        self
    }

    pub fn stats(&self) -> Arc<ProxyStats> {
        self.stats.clone()
    }

    /// The addresses listened on.
    pub fn addresses(&self) -> BTreeSet<SocketAddr> {
        self.listeners.keys().copied().collect()
    }

    /// Makes the listeners match `want` (the table's [`listeners`] view); returns the VIPs
    /// that could not be bound (retried on the next apply).
    ///
    /// [`listeners`]: capstan_types::vip::VipTable::listeners
    pub async fn apply(
        &mut self,
        want: &BTreeMap<(SocketAddr, Protocol), BTreeSet<Backend>>,
    ) -> Vec<BindError> {
        let tcp: HashMap<SocketAddr, Vec<SocketAddr>> = want
            .iter()
            .filter(|((_, proto), _)| *proto == Protocol::Tcp)
            .map(|((addr, _), b)| (*addr, b.iter().map(|b| b.addr()).collect()))
            .collect();
        self.listeners.retain(|addr, l| {
            let keep = tcp.contains_key(addr);
            if !keep {
                info!(vip = %addr, "VIP removed; no longer accepting");
                l.stop.cancel();
            }
            keep
        });
        let mut errors = Vec::new();
        for (addr, backends) in tcp {
            let backends = Arc::new(backends);
            if let Some(l) = self.listeners.get(&addr) {
                l.backends.send_if_modified(|b| {
                    if *b == backends {
                        false
                    } else {
                        *b = backends.clone();
                        true
                    }
                });
                continue;
            }
            match bind(addr, self.reuse_port) {
                Ok(listener) => {
                    info!(vip = %addr, backends = backends.len(), "Listening on VIP");
                    let (tx, rx) = watch::channel(backends);
                    let stop = self.shutdown.child_token();
                    tokio::spawn(accept_loop(
                        listener,
                        rx,
                        stop.clone(),
                        self.shutdown.clone(),
                        self.connect_timeout,
                        self.stats.clone(),
                    ));
                    self.listeners.insert(addr, Listener { backends: tx, stop });
                }
                Err(source) => errors.push(BindError { addr, source }),
            }
        }
        errors
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            l.stop.cancel();
        }
    }
}

/// Binds a VIP listener (address reuse as `TcpListener::bind`, plus `SO_REUSEPORT` on request).
fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: TcpListener,
    backends: watch::Receiver<Arc<Vec<SocketAddr>>>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    connect_timeout: Duration,
    stats: Arc<ProxyStats>,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let (client, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %Chain(&e), "Accept failed");
                continue;
            }
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        // The backends as of this connection: later changes do not touch it (it drains).
        let current = backends.borrow().clone();
        let start = next.fetch_add(1, Ordering::Relaxed);
        let (stats, shutdown) = (stats.clone(), shutdown.clone());
        tokio::spawn(async move {
            let Some(upstream) = connect_any(&current, start, connect_timeout).await else {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                debug!(client = %peer, "No backend took the connection; closing it");
                return;
            };
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
            stats.open.fetch_add(1, Ordering::Relaxed);
            forward(client, upstream, &shutdown).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Connects to the backends in round-robin order from `start`, trying the next on failure.
async fn connect_any(
    backends: &[SocketAddr],
    start: usize,
    timeout: Duration,
) -> Option<TcpStream> {
    let n = backends.len();
    for i in 0..n {
        let addr = backends[(start + i) % n];
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Some(s);
            }
            Ok(Err(e)) => {
                warn!(backend = %addr, error = %Chain(&e), "Backend refused; trying the next")
            }
            Err(_) => {
                warn!(backend = %addr, ?timeout, "Backend connect timed out; trying the next")
            }
        }
    }
    None
}

async fn forward(mut client: TcpStream, mut upstream: TcpStream, shutdown: &CancellationToken) {
    let _ = client.set_nodelay(true);
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                debug!(error = %Chain(&e), "Proxied connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {}
    }
}
