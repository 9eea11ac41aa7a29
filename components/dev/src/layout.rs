//! The shape of a dev cluster, as pure data: which nodes exist, their loopback addresses, the
//! daemons each runs and where they listen. Every node gets its own loopback address so every
//! daemon keeps its standard port: masters at `127.0.1.<i>`, agents at `127.0.2.<i>`.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::{Deserialize, Serialize};

/// Masters a dev cluster may have: a Raft quorum needs an odd count.
pub const MASTER_COUNTS: [u8; 3] = [1, 3, 5];
/// At most this many agents (one loopback address each under `127.0.2.0/24`).
pub const MAX_AGENTS: u8 = 200;

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Agent,
}

/// A daemon a node runs; the name is also its `capstan` subcommand and config section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Daemon {
    Coord,
    Master,
    Apps,
    Dns,
    /// The router (Admin Router): the cluster's one way in, on 80 and 443.
    Router,
    /// The catalog (Cosmos): `/package/` behind the router.
    Catalog,
    Agent,
    /// The layer-4 load balancer (VIPs), on every node.
    L4lb,
    /// The Docker Engine API front end, on the first master only (port 2375).
    Swarm,
}

impl Daemon {
    /// Daemons of a master node, in start order (coord first: the others elect through it;
    /// the router last, once the cluster's identity is in coord).
    pub const ON_MASTERS: [Daemon; 7] = [
        Daemon::Coord,
        Daemon::Master,
        Daemon::Apps,
        Daemon::Dns,
        Daemon::L4lb,
        Daemon::Catalog,
        Daemon::Router,
    ];
    /// The first master's daemons: a master's, then swarm (one Docker API per dev cluster).
    pub const ON_FIRST_MASTER: [Daemon; 8] = [
        Daemon::Coord,
        Daemon::Master,
        Daemon::Apps,
        Daemon::Dns,
        Daemon::L4lb,
        Daemon::Catalog,
        Daemon::Router,
        Daemon::Swarm,
    ];
    /// A master's daemons when the `capstan` binary has no router (see [`Node::router`]).
    pub const ON_MASTERS_WITHOUT_ROUTER: [Daemon; 5] = [
        Daemon::Coord,
        Daemon::Master,
        Daemon::Apps,
        Daemon::Dns,
        Daemon::L4lb,
    ];
    /// Daemons of an agent node.
    pub const ON_AGENTS: [Daemon; 2] = [Daemon::Agent, Daemon::L4lb];

    pub fn name(self) -> &'static str {
        match self {
            Daemon::Coord => "coord",
            Daemon::Master => "master",
            Daemon::Apps => "apps",
            Daemon::Dns => "dns",
            Daemon::Router => "router",
            Daemon::Catalog => "catalog",
            Daemon::Agent => "agent",
            Daemon::L4lb => "l4lb",
            Daemon::Swarm => "swarm",
        }
    }

    /// The daemon's HTTP port (DC/OS-compatible defaults).
    pub fn http_port(self) -> u16 {
        match self {
            Daemon::Coord => 8181,
            Daemon::Master => 5050,
            Daemon::Apps => 8080,
            Daemon::Dns => 8123,
            Daemon::Router => ROUTER_HTTP_PORT,
            Daemon::Catalog => CATALOG_PORT,
            Daemon::Agent => 5051,
            Daemon::L4lb => L4LB_PORT,
            Daemon::Swarm => SWARM_PORT,
        }
    }

    /// Path answering 200 while the daemon is healthy.
    pub fn health_path(self) -> &'static str {
        match self {
            Daemon::Coord => "/health",
            Daemon::Master => "/master/health",
            Daemon::Apps => "/ping",
            Daemon::Dns => "/v1/version",
            // Open (no token) and answered by the router itself.
            Daemon::Router => "/dcos-metadata/dcos-version.json",
            Daemon::Catalog => "/capabilities",
            Daemon::Agent => "/health",
            Daemon::L4lb => "/health",
            // Open (no token), unlike every Docker API path.
            Daemon::Swarm => "/_capstan/health",
        }
    }
}

impl fmt::Display for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Port of the DNS server on each master (the Mesos-DNS standard).
pub const DNS_PORT: u16 = 53;
/// The router's plain HTTP port on each master.
pub const ROUTER_HTTP_PORT: u16 = 80;
/// The catalog's port on each master.
pub const CATALOG_PORT: u16 = 7070;
/// The load balancer's API and metrics port on every node (dcos-net's).
pub const L4LB_PORT: u16 = 62080;
/// The Docker API (swarm) on the first master: Docker's plain-TCP port.
pub const SWARM_PORT: u16 = 2375;
/// The router's HTTPS port on each master.
pub const ROUTER_HTTPS_PORT: u16 = 443;

/// One node of the dev cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `master-1`, `agent-2`, ...: what `capstan dev status` shows and `kill`/`restart` take.
    pub name: String,
    pub address: Ipv4Addr,
    pub role: Role,
    /// 1-based index within its role.
    pub index: u8,
    /// Whether a master runs the router: true unless the `capstan` binary has none
    /// ([`without_router`]). Always false for agents.
    #[serde(default = "yes")]
    pub router: bool,
}

fn yes() -> bool {
    true
}

impl Node {
    pub fn daemons(&self) -> &'static [Daemon] {
        match self.role {
            Role::Master if self.router && self.index == 1 => &Daemon::ON_FIRST_MASTER,
            Role::Master if self.router => &Daemon::ON_MASTERS,
            Role::Master => &Daemon::ON_MASTERS_WITHOUT_ROUTER,
            Role::Agent => &Daemon::ON_AGENTS,
        }
    }

    /// Where the router answers HTTPS on this node, if it runs one.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        (self.role == Role::Master && self.router)
            .then(|| SocketAddr::V4(SocketAddrV4::new(self.address, ROUTER_HTTPS_PORT)))
    }

    pub fn http_addr(&self, daemon: Daemon) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.address, daemon.http_port()))
    }

    /// Every TCP address the node's daemons bind, for the "address in use" check.
    pub fn bound_tcp_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> =
            self.daemons().iter().map(|d| self.http_addr(*d)).collect();
        if self.role == Role::Master {
            addrs.push(SocketAddr::V4(SocketAddrV4::new(self.address, DNS_PORT)));
        }
        addrs.extend(self.https_addr());
        addrs
    }
}

/// Why a requested cluster shape is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("--masters must be 1, 3 or 5 (a coord quorum needs an odd count), not {0}")]
    Masters(u8),
    #[error("--agents must be between 1 and {MAX_AGENTS}, not {0}")]
    Agents(u8),
}

/// The nodes of a cluster with `masters` masters and `agents` agents. `net` is the second
/// octet of every address (`127.<net>.1.<i>`): 0 normally; tests pick another to run
/// clusters side by side.
pub fn layout(masters: u8, agents: u8, net: u8) -> Result<Vec<Node>, LayoutError> {
    if !MASTER_COUNTS.contains(&masters) {
        return Err(LayoutError::Masters(masters));
    }
    if agents == 0 || agents > MAX_AGENTS {
        return Err(LayoutError::Agents(agents));
    }
    let masters = (1..=masters).map(|i| Node {
        name: format!("master-{i}"),
        address: Ipv4Addr::new(127, net, 1, i),
        role: Role::Master,
        index: i,
        router: true,
    });
    let agents = (1..=agents).map(|i| Node {
        name: format!("agent-{i}"),
        address: Ipv4Addr::new(127, net, 2, i),
        role: Role::Agent,
        index: i,
        router: false,
    });
    Ok(masters.chain(agents).collect())
}

/// The same nodes with no router on the masters: for a `capstan` binary built without one.
pub fn without_router(mut nodes: Vec<Node>) -> Vec<Node> {
    for n in &mut nodes {
        n.router = false;
    }
    nodes
}

/// The node whose address is `ip`, if any.
pub fn node_by_ip(nodes: &[Node], ip: Ipv4Addr) -> Option<&Node> {
    nodes.iter().find(|n| n.address == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cluster_has_one_master_and_two_agents_on_their_own_addresses() {
        let nodes = layout(1, 2, 0).unwrap();
        let names: Vec<_> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.address.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("master-1", "127.0.1.1".to_owned()),
                ("agent-1", "127.0.2.1".to_owned()),
                ("agent-2", "127.0.2.2".to_owned())
            ]
        );
        // The first master also runs swarm, after every other master daemon.
        assert_eq!(nodes[0].daemons(), Daemon::ON_FIRST_MASTER);
        assert_eq!(Daemon::ON_FIRST_MASTER[..7], Daemon::ON_MASTERS);
        assert_eq!(
            nodes[0].http_addr(Daemon::Swarm).to_string(),
            "127.0.1.1:2375"
        );
        assert_eq!(
            nodes[1].http_addr(Daemon::Agent).to_string(),
            "127.0.2.1:5051"
        );
    }

    #[test]
    fn even_master_counts_and_empty_agent_sets_are_refused() {
        assert_eq!(layout(2, 1, 0), Err(LayoutError::Masters(2)));
        assert_eq!(layout(0, 1, 0), Err(LayoutError::Masters(0)));
        assert_eq!(layout(3, 0, 0), Err(LayoutError::Agents(0)));
        assert!(layout(5, MAX_AGENTS, 0).is_ok());
    }

    #[test]
    fn no_two_daemons_share_an_address() {
        let nodes = layout(5, 20, 9).unwrap();
        let mut all: Vec<_> = nodes.iter().flat_map(|n| n.bound_tcp_addrs()).collect();
        let before = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), before);
    }
}
