//! The sockets a node has bound, read from `/proc/net/{tcp,tcp6,udp,udp6}`.
//!
//! Each line of those tables is one socket: `sl local_address rem_address st ... inode`.
//! Addresses are hex: the port is a plain 16-bit number, the address is the kernel's in-memory
//! words printed as 32-bit hex numbers (so on a little-endian machine `0100007F` is
//! 127.0.0.1). Only sockets that hold a port matter to the ports check: TCP sockets in the
//! LISTEN state, and every UDP socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

/// A transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// TCP's LISTEN state in `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0A;

/// One socket that holds a local port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSocket {
    pub proto: Proto,
    pub local: SocketAddr,
    /// The socket's inode: `/proc/<pid>/fd/*` links to `socket:[inode]`.
    pub inode: u64,
}

/// The sockets in one `/proc/net/{tcp,tcp6,udp,udp6}` table that hold a port: LISTEN sockets
/// for TCP, every socket for UDP. Lines that do not parse are skipped (the header, and any
/// format a future kernel adds).
pub fn parse_table(proto: Proto, text: &str) -> Vec<BoundSocket> {
    text.lines()
        .filter_map(|line| parse_line(proto, line))
        .collect()
}

fn parse_line(proto: Proto, line: &str) -> Option<BoundSocket> {
    let mut fields = line.split_whitespace();
    let slot = fields.next()?;
    if !slot.ends_with(':') {
        return None;
    }
    let local = parse_socket_addr(fields.next()?)?;
    let _remote = fields.next()?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    // tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, then the inode.
    let inode = fields.nth(5)?.parse().ok()?;
    let holds_port = match proto {
        Proto::Tcp => state == TCP_LISTEN,
        Proto::Udp => true,
    };
    holds_port.then_some(BoundSocket {
        proto,
        local,
        inode,
    })
}

/// `0100007F:0035` → 127.0.0.1:53; 32 hex digits before the colon make an IPv6 address.
fn parse_socket_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?.to_ne_bytes())),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&addr[i * 8..i * 8 + 8])?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn word(hex: &str) -> Option<u32> {
    u32::from_str_radix(hex, 16).ok()
}

/// The inode of a `/proc/<pid>/fd/*` link target, if it is a socket: `socket:[30734]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured on the project's machine (x86_64, little-endian) with a Python process holding
    // [::]:18181/tcp, 127.0.0.53:15353/udp and [::1]:15354/udp, and connected to 127.0.0.1:2024.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 671 2 00000000c20b4663 100 0 0 10 0
   1: 0100007F:BB4E 0100007F:07E8 08 00000000:00000001 00:00000000 00000000     0        0 30738 3 0000000025d5d511 20 0 1 10 -1
   2: 0100007F:07E8 0100007F:BB4E 04 00000001:00000000 01:00000013 00000000     0        0 0 2 00000000cd6fb3d6 20 0 0 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:4705 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 30734 1 000000001d645324 100 0 0 10 0
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
11568: 3500007F:3BF9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 30735 2 00000000d0240581 0
";
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
11569: 00000000000000000000000001000000:3BFA 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 30736 2 0000000081ad340c 0
";

    fn sock(proto: Proto, addr: &str, inode: u64) -> BoundSocket {
        BoundSocket {
            proto,
            local: addr.parse().unwrap(),
            inode,
        }
    }

    #[test]
    fn tcp_keeps_only_listening_sockets() {
        assert_eq!(
            parse_table(Proto::Tcp, TCP),
            vec![sock(Proto::Tcp, "0.0.0.0:2024", 671)]
        );
    }

    #[test]
    fn tcp6_wildcard_listener_parses() {
        assert_eq!(
            parse_table(Proto::Tcp, TCP6),
            vec![sock(Proto::Tcp, "[::]:18181", 30734)]
        );
    }

    #[test]
    fn udp_sockets_hold_their_port_in_any_state() {
        assert_eq!(
            parse_table(Proto::Udp, UDP),
            vec![sock(Proto::Udp, "127.0.0.53:15353", 30735)]
        );
        assert_eq!(
            parse_table(Proto::Udp, UDP6),
            vec![sock(Proto::Udp, "[::1]:15354", 30736)]
        );
    }

    #[test]
    fn empty_and_garbled_tables_give_no_sockets() {
        assert!(parse_table(Proto::Tcp, "").is_empty());
        assert!(parse_table(Proto::Udp, "  sl  local_address\n").is_empty());
        assert!(parse_table(Proto::Tcp, "   0: 0100007F 00000000:0000 0A\n").is_empty());
        assert!(
            parse_table(Proto::Tcp, "   0: 0100:0035 00000000:0000 0A 0 0 0 0 0 9\n").is_empty()
        );
    }

    #[test]
    fn socket_links_name_their_inode() {
        assert_eq!(socket_inode("socket:[30734]"), Some(30734));
        assert_eq!(socket_inode("pipe:[30734]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }
}
