//! Loopback addresses and ports for tests. Prefer binding port 0 and passing the bound
//! listener or address on; [`free_port`] can race with other processes.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};

/// `127.0.0.1:<port>`.
pub fn loopback_addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A TCP listener on `127.0.0.1:0` and the address it got.
pub async fn bind_loopback() -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(loopback_addr(0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// A port that was free on 127.0.0.1 a moment ago (for configs of spawned processes, which
/// must be written before they bind). Another process may take it; use [`free_ports`] for
/// several at once so they are at least distinct.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct ports that were free on 127.0.0.1 a moment ago.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| StdTcpListener::bind(loopback_addr(0)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
        StdTcpListener::bind(loopback_addr(ports[0])).unwrap();
    }
}
