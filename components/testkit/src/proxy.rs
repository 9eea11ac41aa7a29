//! [`FaultProxy`]: a TCP forwarder tests put between nodes so they can partition them.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::net::loopback_addr;

/// Forwards every connection made to [`local_addr`](FaultProxy::local_addr) to a target.
/// [`block`](FaultProxy::block) cuts the live connections (with a reset) and resets new ones
/// until [`unblock`](FaultProxy::unblock). Dropping the proxy closes everything.
pub struct FaultProxy {
    local: SocketAddr,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

struct State {
    blocked: bool,
    /// Cancelled by `block()`: cuts the connections accepted since the last block.
    cut: CancellationToken,
}

impl FaultProxy {
    /// Starts forwarding from a fresh `127.0.0.1:0` port to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(loopback_addr(0)).await?;
        let local = listener.local_addr()?;
        let stop = CancellationToken::new();
        let state = Arc::new(Mutex::new(State {
            blocked: false,
            cut: stop.child_token(),
        }));
        tokio::spawn(accept_loop(listener, target, state.clone(), stop.clone()));
        Ok(FaultProxy {
            local,
            target,
            state,
            stop,
        })
    }

    /// Where clients connect instead of the target.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Cuts every live connection and resets new ones until [`unblock`](Self::unblock).
    pub fn block(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.blocked = true;
        state.cut.cancel();
        state.cut = self.stop.child_token();
        debug!(proxy = %self.local, target = %self.target, "Proxy blocked");
    }

    /// Lets new connections through again.
    pub fn unblock(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocked = false;
        debug!(proxy = %self.local, target = %self.target, "Proxy unblocked");
    }

    pub fn is_blocked(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocked
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(e) => {
                    debug!(error = %e, "Proxy accept failed");
                    continue;
                }
            },
        };
        let cut = {
            let state = state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.blocked {
                None
            } else {
                Some(state.cut.clone())
            }
        };
        match cut {
            None => reset(client),
            Some(cut) => {
                tokio::spawn(forward(client, target, cut));
            }
        }
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, cut: CancellationToken) {
    let mut upstream = tokio::select! {
        _ = cut.cancelled() => return reset(client),
        connected = TcpStream::connect(target) => match connected {
            Ok(upstream) => upstream,
            Err(e) => {
                debug!(%target, error = %e, "Proxy cannot reach target");
                return reset(client);
            }
        },
    };
    tokio::select! {
        _ = cut.cancelled() => {
            reset(client);
            reset(upstream);
        }
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
    }
}

/// Closes with RST rather than FIN, so the peer sees a broken connection, not a clean end.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::wait::wait_until;

    /// An echo server on 127.0.0.1:0.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(loopback_addr(0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn echo_once(stream: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(msg).await?;
        let mut buf = vec![0; msg.len()];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn can_echo_through(addr: SocketAddr) -> io::Result<()> {
        let mut s = TcpStream::connect(addr).await?;
        let got = echo_once(&mut s, b"ping").await?;
        if got == b"ping" {
            Ok(())
        } else {
            Err(io::Error::other("wrong echo"))
        }
    }

    #[tokio::test]
    async fn proxy_forwards_both_ways() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert_eq!(echo_once(&mut s, b"hello").await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn block_cuts_a_live_connection_and_refuses_new_ones() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut live = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert_eq!(echo_once(&mut live, b"a").await.unwrap(), b"a");

        proxy.block();
        assert!(proxy.is_blocked());
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), live.read(&mut buf))
            .await
            .expect("the cut connection must end, not hang");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "live connection still open: {read:?}"
        );

        let fresh = match TcpStream::connect(proxy.local_addr()).await {
            Ok(mut s) => echo_once(&mut s, b"b").await,
            Err(e) => Err(e),
        };
        assert!(
            fresh.is_err(),
            "a new connection got through a blocked proxy"
        );
    }

    #[tokio::test]
    async fn unblock_lets_new_connections_through() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.block();
        proxy.unblock();
        assert!(!proxy.is_blocked());
        wait_until(
            "echo through the proxy",
            Duration::from_secs(10),
            async || can_echo_through(proxy.local_addr()).await,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_port() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let addr = proxy.local_addr();
        drop(proxy);
        wait_until(
            "the proxy port to close",
            Duration::from_secs(10),
            async || TcpStream::connect(addr).await.is_err(),
        )
        .await
        .unwrap();
    }
}
