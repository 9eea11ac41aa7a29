//! The accept loop of coord's one port, in place of `axum::serve`, for what that lacks
//! (reliability probe F11): a header-read timeout that also closes idle kept-alive
//! connections, a cap on open connections overall and per source address (a connection over
//! either cap is closed as soon as it is accepted), the peer address on every request (for
//! logs), and a graceful stop that waits a bounded time for requests in flight.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a stop waits for requests in flight before it drops their connections.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// Counts open connections, overall and per source address.
#[derive(Default)]
struct Counter {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    counter: Arc<Mutex<Counter>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counter.lock() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.per_ip.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.per_ip.remove(&self.ip);
                }
            }
        }
    }
}

fn admit(counter: &Arc<Mutex<Counter>>, ip: IpAddr, limits: &ConnLimits) -> Option<Slot> {
    let mut c = counter.lock().ok()?;
    let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
    if c.total >= limits.max_connections || from_ip >= limits.max_connections_per_ip {
        return None;
    }
    c.total += 1;
    c.per_ip.insert(ip, from_ip + 1);
    Some(Slot {
        counter: counter.clone(),
        ip,
    })
}

/// Serves `router` on `listener` until `stop` fires, then waits (at most [`STOP_GRACE`]) for
/// requests in flight. Accept errors (out of file descriptors, a connection reset before it
/// was accepted) are logged and never end the loop.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let counter: Arc<Mutex<Counter>> = Arc::default();
    let tracker = TaskTracker::new();
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot accept a connection; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = admit(&counter, peer.ip(), &limits) else {
            let due = last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10));
            if due {
                last_refusal_log = Some(Instant::now());
                tracing::warn!(
                    peer = %peer,
                    max = limits.max_connections,
                    max_per_ip = limits.max_connections_per_ip,
                    "Too many open connections; closing new ones"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _slot = slot;
            serve_connection(stream, peer, router, limits, stop).await;
        });
    }
    tracker.close();
    if tokio::time::timeout(STOP_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::info!("Requests still in flight after the stop grace; dropping them");
    }
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    stop: CancellationToken,
) {
    let inner = TowerToHyperService::new(router);
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            inner.call(req)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "Connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_overall_and_per_address() {
        let limits = ConnLimits {
            header_read_timeout: Duration::from_secs(1),
            max_connections: 3,
            max_connections_per_ip: 2,
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
}
