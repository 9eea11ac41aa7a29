//! Layer-4 virtual IPs (Minuteman / dcos-l4lb) as one pure function: from the tasks the master
//! reports to the VIP table `{(vip, protocol) → backends}`, including each named VIP's DNS name
//! and address.
//!
//! Both `dns` (which serves `l4lb.thisdcos.directory`) and `l4lb` (which programs the data
//! plane) call [`VipTable::build`] on the same task data, so neither has to publish to the other
//! and every node arrives at the same table. Key decisions:
//! - **Labels as DC/OS** (reference l4lb §1.1): a discovery-port label whose key starts with `VIP`
//!   or `vip`; the value is split at the last `:`; a left part that parses as an IP literal is an
//!   IP VIP, anything else a named VIP. The legacy task label `VIP_PORT<n>` =
//!   `tcp://<ip>:<port>` is an IP VIP whose backend is the agent and the task's `n`-th port.
//! - **Names as DC/OS** (`mesos_state:domain_frag`): `/mygroup/myapp` → `mygroupmyapp`; the
//!   name is `<label>.<framework>.l4lb.thisdcos.directory`. Named VIPs are keyed by that name,
//!   so `/myapp:80` and `myapp:80` are one VIP, as their DNS name is one.
//! - **Addresses** are a pure function of the *set* of names: each name has its own
//!   pseudo-random probe sequence in the configured range; contention for a free address in a
//!   round goes to the smallest name. The table therefore never depends on input order or on
//!   history, and a name moves only if a name whose probe hits its address appears or goes
//!   (DC/OS's winner depended on the order a node first saw the names).
//! - **Which tasks**: a VIP exists while it has a RUNNING or KILLING task (DC/OS publishes
//!   killing and unhealthy tasks with weight 0), so its name and address do not flap with
//!   health; only RUNNING tasks whose health check passed (or that have none) are backends.
//!   A task with a health check and no result yet is not a backend (DCOS_OSS-1954).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::TaskState;

/// The DNS zone of named VIPs.
pub const L4LB_ZONE: &str = "l4lb.thisdcos.directory";
/// TTL of named-VIP records (dcos-dns `?DCOS_DNS_TTL`).
pub const VIP_TTL: u32 = 5;
/// The discovery-port label Marathon sets to `host` or `container`.
pub const NETWORK_SCOPE_LABEL: &str = "network-scope";
/// Longest DNS label.
const MAX_LABEL: usize = 63;
/// Longest name without the trailing dot.
const MAX_NAME: usize = 253;

/// A VIP's transport protocol.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// `tcp`/`udp` in any case; anything else is `None`.
    pub fn parse(text: &str) -> Option<Protocol> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("tcp") {
            Some(Protocol::Tcp)
        } else if t.eq_ignore_ascii_case("udp") {
            Some(Protocol::Udp)
        } else {
            None
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend of a VIP.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
}

impl Backend {
    pub fn addr(self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// A discovery port of a task (`TaskInfo.discovery.ports.ports[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveredPort {
    /// The port number: host port for host scope, container port for container scope.
    pub number: u32,
    /// `tcp`, `udp`, `udp,tcp`, any case; empty means tcp.
    pub protocol: String,
    pub labels: Vec<(String, String)>,
}

/// A container port mapping (Docker bridge or CNI port mapper).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MappedPort {
    pub host_port: u32,
    pub container_port: u32,
    pub protocol: String,
}

/// What the VIP function needs to know about one task, as the master reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipTask {
    /// The framework's name (`marathon`), the second part of a VIP's name.
    pub framework: String,
    pub state: TaskState,
    /// The task has a Mesos-level health check.
    pub has_health_check: bool,
    /// `healthy` of the task's latest status.
    pub healthy: Option<bool>,
    /// The address of the task's agent; `None` when the agent is unknown or lost.
    pub agent_ip: Option<IpAddr>,
    /// Container network addresses of the latest status.
    pub container_ips: Vec<IpAddr>,
    /// Task labels (the legacy `VIP_PORT<n>` form).
    pub labels: Vec<(String, String)>,
    /// The task's `ports` resource, flattened in resource order (`VIP_PORT<n>` indexes it).
    pub ports: Vec<u16>,
    pub discovery_ports: Vec<DiscoveredPort>,
    pub port_mappings: Vec<MappedPort>,
}

impl Default for VipTask {
    fn default() -> Self {
        VipTask {
            framework: String::new(),
            state: TaskState::Running,
            has_health_check: false,
            healthy: None,
            agent_ip: None,
            container_ips: Vec::new(),
            labels: Vec::new(),
            ports: Vec::new(),
            discovery_ports: Vec::new(),
            port_mappings: Vec::new(),
        }
    }
}

impl VipTask {
    /// The task may receive new connections: RUNNING, and healthy if it has a health check.
    pub fn serving(&self) -> bool {
        self.state == TaskState::Running && (!self.has_health_check || self.healthy == Some(true))
    }

    /// The task keeps its VIPs alive (DC/OS publishes it, possibly with weight 0).
    fn published(&self) -> bool {
        matches!(self.state, TaskState::Running | TaskState::Killing)
    }

    /// The task's own addresses: container IPs, else the agent's.
    fn task_ips(&self) -> Vec<IpAddr> {
        if self.container_ips.is_empty() {
            self.agent_ip.into_iter().collect()
        } else {
            self.container_ips.clone()
        }
    }
}

/// What a VIP label's value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VipTarget {
    /// `198.51.100.7:80`.
    Ip(SocketAddr),
    /// `/myapp:5555`: the label as written (without the port) and the port.
    Named { label: String, port: u16 },
}

/// Why a VIP label was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipLabelError {
    #[error("VIP {0:?} has no `:port`")]
    NoPort(String),
    #[error("VIP {0:?} has an invalid port (1-65535)")]
    BadPort(String),
    #[error("VIP {0:?} has no name")]
    NoName(String),
    #[error("legacy VIP {0:?} is not `tcp://<ip>:<port>` or `udp://<ip>:<port>`")]
    BadLegacy(String),
}

/// Whether a port label's key declares a VIP (`VIP_0`, `vip-web`, ...).
pub fn is_vip_key(key: &str) -> bool {
    key.starts_with("VIP") || key.starts_with("vip")
}

/// Parses a VIP label value: split at the last `:`, an IP literal (IPv6 with or without
/// brackets) is an IP VIP, anything else a name.
pub fn parse_vip_value(value: &str) -> Result<VipTarget, VipLabelError> {
    let v = value.trim();
    let (left, port) = v
        .rsplit_once(':')
        .ok_or_else(|| VipLabelError::NoPort(v.to_owned()))?;
    let port: u16 = port
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| VipLabelError::BadPort(v.to_owned()))?;
    let bare = left
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or(left);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(VipTarget::Ip(SocketAddr::new(ip, port)));
    }
    if left.trim().trim_start_matches('/').is_empty() {
        return Err(VipLabelError::NoName(v.to_owned()));
    }
    Ok(VipTarget::Named {
        label: left.trim().to_owned(),
        port,
    })
}

/// Parses a legacy task label `VIP_PORT<n>` = `tcp://<ip>:<port>`: `None` if the key is not
/// one, else the port index, protocol and VIP address.
pub fn parse_legacy_vip(
    key: &str,
    value: &str,
) -> Option<Result<(usize, Protocol, SocketAddr), VipLabelError>> {
    let idx: usize = key.strip_prefix("VIP_PORT")?.parse().ok()?;
    let bad = || VipLabelError::BadLegacy(value.to_owned());
    let parsed = value
        .trim()
        .split_once("://")
        .and_then(|(scheme, rest)| {
            let proto = Protocol::parse(scheme)?;
            match parse_vip_value(rest).ok()? {
                VipTarget::Ip(addr) => Some((idx, proto, addr)),
                VipTarget::Named { .. } => None,
            }
        })
        .ok_or_else(bad);
    Some(parsed)
}

/// One DNS label as dcos-net's `mesos_state:domain_frag` makes it: lower case, `_` → `-`, every
/// other character outside `[a-z0-9-]` dropped, `-` trimmed at both ends, at most 63 long.
pub fn sanitize_label(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            '_' => Some('-'),
            _ => None,
        })
        .collect();
    let cut: String = mapped.trim_matches('-').chars().take(MAX_LABEL).collect();
    cut.trim_end_matches('-').to_owned()
}

/// Sanitises each `.`-separated part of `raw` and joins them again; empty parts are dropped.
pub fn domain_frag(raw: &str) -> String {
    raw.split('.')
        .map(sanitize_label)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// `<label>.<framework>.l4lb.thisdcos.directory` (no trailing dot), or `None` if either part
/// sanitises to nothing or the name is too long.
pub fn vip_name(label: &str, framework: &str) -> Option<String> {
    let (l, f) = (domain_frag(label), domain_frag(framework));
    if l.is_empty() || f.is_empty() {
        return None;
    }
    let name = format!("{l}.{f}.{L4LB_ZONE}");
    (name.len() <= MAX_NAME).then_some(name)
}

/// An inclusive range of addresses named VIPs are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange<A> {
    pub first: A,
    pub last: A,
}

/// Why an address range is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("address range {0:?} is not `first-last` or `addr/prefix`")]
    Syntax(String),
    #[error("address range {0:?} ends before it starts")]
    Reversed(String),
}

/// An address family's integer view.
pub trait RangeAddr: Copy + Ord + std::str::FromStr + fmt::Debug {
    const BITS: u32;
    fn to_u128(self) -> u128;
    fn from_u128(v: u128) -> Self;
}

impl RangeAddr for Ipv4Addr {
    const BITS: u32 = 32;
    fn to_u128(self) -> u128 {
        u128::from(u32::from(self))
    }
    fn from_u128(v: u128) -> Self {
        Ipv4Addr::from(v as u32)
    }
}

impl RangeAddr for Ipv6Addr {
    const BITS: u32 = 128;
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
    fn from_u128(v: u128) -> Self {
        Ipv6Addr::from(v)
    }
}

impl<A: RangeAddr> AddrRange<A> {
    /// `11.0.0.0/8`, `11.0.0.0-11.255.255.254` or `fd01:c::/64`.
    pub fn parse(text: &str) -> Result<Self, RangeError> {
        let t = text.trim();
        let syntax = || RangeError::Syntax(t.to_owned());
        let (first, last) = if let Some((addr, prefix)) = t.split_once('/') {
            let addr: A = addr.trim().parse().map_err(|_| syntax())?;
            let prefix: u32 = prefix.trim().parse().map_err(|_| syntax())?;
            if prefix > A::BITS {
                return Err(syntax());
            }
            let host_bits = A::BITS - prefix;
            let mask: u128 = if host_bits == 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let base = addr.to_u128() & !mask;
            (A::from_u128(base), A::from_u128(base | mask))
        } else if let Some((a, b)) = t.split_once('-') {
            (
                a.trim().parse().map_err(|_| syntax())?,
                b.trim().parse().map_err(|_| syntax())?,
            )
        } else {
            return Err(syntax());
        };
        if last < first {
            return Err(RangeError::Reversed(t.to_owned()));
        }
        Ok(AddrRange { first, last })
    }

    /// How many addresses the range holds (saturating at `u128::MAX`).
    pub fn size(&self) -> u128 {
        (self.last.to_u128() - self.first.to_u128()).saturating_add(1)
    }

    pub fn contains(&self, a: A) -> bool {
        self.first <= a && a <= self.last
    }
}

/// DC/OS's named-VIP IPv4 range in [`AddrRange::parse`]'s text form: the default of every
/// daemon's setting, equal to [`VipConfig::default`]'s.
pub const DEFAULT_NAMED_IPV4: &str = "11.0.0.0-11.255.255.254";
/// DC/OS's named-VIP IPv6 range (see [`DEFAULT_NAMED_IPV4`]).
pub const DEFAULT_NAMED_IPV6: &str = "fd01:c::/64";

/// Settings of the VIP function; every node must use the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    /// Addresses of named VIPs with IPv4 backends.
    pub ipv4: AddrRange<Ipv4Addr>,
    /// Addresses of named VIPs with IPv6 backends; `None` disables IPv6 named VIPs.
    pub ipv6: Option<AddrRange<Ipv6Addr>>,
}

impl Default for VipConfig {
    /// DC/OS's defaults: `11.0.0.0`–`11.255.255.254` and `fd01:c::/64`.
    fn default() -> Self {
        VipConfig {
            ipv4: AddrRange {
                first: Ipv4Addr::new(11, 0, 0, 0),
                last: Ipv4Addr::new(11, 255, 255, 254),
            },
            ipv6: Some(AddrRange {
                first: Ipv6Addr::new(0xfd01, 0xc, 0, 0, 0, 0, 0, 0),
                last: Ipv6Addr::new(0xfd01, 0xc, 0, 0, 0xffff, 0xffff, 0xffff, 0xffff),
            }),
        }
    }
}

/// How a VIP is addressed by clients.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum VipAddr {
    /// An IP VIP.
    Ip(SocketAddr),
    /// A named VIP: its full name (no trailing dot) and port.
    Named { name: String, port: u16 },
}

impl VipAddr {
    pub fn port(&self) -> u16 {
        match self {
            VipAddr::Ip(a) => a.port(),
            VipAddr::Named { port, .. } => *port,
        }
    }
}

impl fmt::Display for VipAddr {
    /// dcos-net's `/v1/vips` form: `name:port` or `ip:port` (`[v6]:port`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VipAddr::Ip(a) => write!(f, "{a}"),
            VipAddr::Named { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

/// A VIP's identity in the table.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct VipKey {
    pub vip: VipAddr,
    pub protocol: Protocol,
}

/// One VIP: the addresses it is reached at and the backends taking new connections.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Vip {
    /// The IPv4 address: the VIP's own for an IPv4 IP VIP, the allocated one for a named VIP
    /// with IPv4 tasks (`None` if the range is exhausted).
    pub ipv4: Option<Ipv4Addr>,
    /// Likewise for IPv6.
    pub ipv6: Option<Ipv6Addr>,
    /// Backends of serving tasks, both families for a named VIP. May be empty: the VIP still
    /// has tasks, none of which takes new connections (unhealthy, killing, no result yet).
    pub backends: BTreeSet<Backend>,
}

impl Vip {
    /// Backends of one family.
    pub fn backends_for(&self, v4: bool) -> impl Iterator<Item = Backend> + '_ {
        self.backends
            .iter()
            .copied()
            .filter(move |b| b.ip.is_ipv4() == v4)
    }
}

/// The whole VIP table, identical on every node for the same tasks and config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VipTable {
    pub vips: BTreeMap<VipKey, Vip>,
    /// Names of named VIPs that found no address in their family's range (it is full).
    pub unallocated: BTreeSet<String>,
}

/// A VIP reference found on a task, with the backends it contributes.
struct Found {
    key: VipKey,
    backends: Vec<Backend>,
}

/// Every VIP `task` declares (whatever its state), each with the task's backends for it.
fn task_vips(task: &VipTask) -> Vec<Found> {
    let mut out = Vec::new();
    for dp in &task.discovery_ports {
        let Ok(number) = u16::try_from(dp.number) else {
            continue;
        };
        if number == 0 {
            continue;
        }
        let protocols: Vec<Protocol> = if dp.protocol.trim().is_empty() {
            vec![Protocol::Tcp]
        } else {
            dp.protocol.split(',').filter_map(Protocol::parse).collect()
        };
        let scope = dp
            .labels
            .iter()
            .find(|(k, _)| k == NETWORK_SCOPE_LABEL)
            .map(|(_, v)| v.as_str());
        for proto in protocols {
            let host_scope = match scope {
                Some("host") => true,
                Some(_) => false,
                // No scope label (not from Marathon): a mapped host port is reached on the agent.
                None => task.port_mappings.iter().any(|m| {
                    m.host_port == u32::from(number)
                        && (m.protocol.trim().is_empty()
                            || Protocol::parse(&m.protocol) == Some(proto))
                }),
            };
            let ips = if host_scope {
                task.agent_ip.into_iter().collect()
            } else {
                task.task_ips()
            };
            for (_, value) in dp.labels.iter().filter(|(k, _)| is_vip_key(k)) {
                let Ok(target) = parse_vip_value(value) else {
                    continue;
                };
                let vip = match target {
                    VipTarget::Ip(addr) => VipAddr::Ip(addr),
                    VipTarget::Named { label, port } => {
                        let Some(name) = vip_name(&label, &task.framework) else {
                            continue;
                        };
                        VipAddr::Named { name, port }
                    }
                };
                let backends = ips
                    .iter()
                    .map(|ip| Backend {
                        ip: *ip,
                        port: number,
                    })
                    .filter(|b| match &vip {
                        VipAddr::Ip(a) => a.is_ipv4() == b.ip.is_ipv4(),
                        VipAddr::Named { .. } => true,
                    })
                    .collect();
                out.push(Found {
                    key: VipKey {
                        vip,
                        protocol: proto,
                    },
                    backends,
                });
            }
        }
    }
    for (key, value) in &task.labels {
        let Some(Ok((idx, proto, addr))) = parse_legacy_vip(key, value) else {
            continue;
        };
        let Some(&port) = task.ports.get(idx) else {
            continue;
        };
        let backends = task
            .agent_ip
            .filter(|ip| ip.is_ipv4() == addr.is_ipv4())
            .map(|ip| Backend { ip, port })
            .into_iter()
            .collect();
        out.push(Found {
            key: VipKey {
                vip: VipAddr::Ip(addr),
                protocol: proto,
            },
            backends,
        });
    }
    out
}

impl VipTable {
    /// The pure VIP function: the table of `tasks` (in any order) under `cfg`.
    pub fn build<'a>(tasks: impl IntoIterator<Item = &'a VipTask>, cfg: &VipConfig) -> VipTable {
        let mut vips: BTreeMap<VipKey, Vip> = BTreeMap::new();
        // Named VIPs that need an address, per family: those with a published task there.
        let mut want_v4: BTreeSet<String> = BTreeSet::new();
        let mut want_v6: BTreeSet<String> = BTreeSet::new();
        for task in tasks {
            if !task.published() {
                continue;
            }
            let serving = task.serving();
            for found in task_vips(task) {
                if let VipAddr::Named { name, .. } = &found.key.vip {
                    if found.backends.iter().any(|b| b.ip.is_ipv4()) {
                        want_v4.insert(name.clone());
                    }
                    if found.backends.iter().any(|b| b.ip.is_ipv6()) {
                        want_v6.insert(name.clone());
                    }
                } else if found.backends.is_empty() {
                    // An IP VIP without a backend address of its family: nothing to reach.
                    continue;
                }
                if matches!(found.key.vip, VipAddr::Named { .. }) && found.backends.is_empty() {
                    // No address at all (agent unknown): the task cannot keep the name alive.
                    continue;
                }
                let vip = vips.entry(found.key).or_default();
                if serving {
                    vip.backends.extend(found.backends);
                }
            }
        }
        let (v4, mut unallocated) = allocate(&want_v4, cfg.ipv4.first.to_u128(), cfg.ipv4.size());
        let v6 = match &cfg.ipv6 {
            Some(r) => {
                let (v6, u) = allocate(&want_v6, r.first.to_u128(), r.size());
                unallocated.extend(u);
                v6
            }
            None => {
                unallocated.extend(want_v6.iter().cloned());
                BTreeMap::new()
            }
        };
        for (key, vip) in vips.iter_mut() {
            match &key.vip {
                VipAddr::Ip(a) => match a.ip() {
                    IpAddr::V4(ip) => vip.ipv4 = Some(ip),
                    IpAddr::V6(ip) => vip.ipv6 = Some(ip),
                },
                VipAddr::Named { name, .. } => {
                    vip.ipv4 = v4.get(name).map(|&a| Ipv4Addr::from_u128(a));
                    vip.ipv6 = v6.get(name).map(|&a| Ipv6Addr::from_u128(a));
                }
            }
        }
        VipTable {
            vips,
            unallocated: unallocated.into_iter().collect(),
        }
    }

    /// Every named VIP's name with its addresses, for DNS A and AAAA records.
    pub fn named_addresses(&self) -> BTreeMap<&str, Vec<IpAddr>> {
        let mut out: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
        for (key, vip) in &self.vips {
            if let VipAddr::Named { name, .. } = &key.vip {
                let ips = out.entry(name.as_str()).or_default();
                ips.extend(vip.ipv4.map(IpAddr::V4));
                ips.extend(vip.ipv6.map(IpAddr::V6));
                ips.sort();
                ips.dedup();
            }
        }
        out
    }

    /// What the data plane programs: every `(address:port, protocol)` clients connect to, with
    /// the backends of that address's family.
    pub fn listeners(&self) -> BTreeMap<(SocketAddr, Protocol), BTreeSet<Backend>> {
        let mut out: BTreeMap<(SocketAddr, Protocol), BTreeSet<Backend>> = BTreeMap::new();
        for (key, vip) in &self.vips {
            let port = key.vip.port();
            let addrs = vip
                .ipv4
                .map(IpAddr::V4)
                .into_iter()
                .chain(vip.ipv6.map(IpAddr::V6));
            for ip in addrs {
                out.entry((SocketAddr::new(ip, port), key.protocol))
                    .or_default()
                    .extend(vip.backends_for(ip.is_ipv4()));
            }
        }
        out
    }
}

/// Probe rounds with each name's own sequence before falling back to a linear scan.
const PROBE_ROUNDS: u32 = 16;

/// FNV-1a over `name`, the round and a lane, finished with SplitMix64's mixer: a hash that is
/// the same on every platform and release (unlike `std`'s `DefaultHasher`).
fn hash64(name: &str, round: u32, lane: u8) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = name
        .as_bytes()
        .iter()
        .copied()
        .chain([0xff, lane])
        .chain(round.to_be_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The offset `name` tries in `round` within a range of `size` addresses.
pub fn probe(name: &str, round: u32, size: u128) -> u128 {
    let h = (u128::from(hash64(name, round, 0)) << 64) | u128::from(hash64(name, round, 1));
    if size == 0 { 0 } else { h % size }
}

/// Gives each name an address in `[first, first + size)`; returns the addresses and the names
/// left without one. Pure in the set of names.
fn allocate(
    names: &BTreeSet<String>,
    first: u128,
    size: u128,
) -> (BTreeMap<String, u128>, Vec<String>) {
    let mut taken: HashMap<u128, &str> = HashMap::new();
    let mut got: BTreeMap<String, u128> = BTreeMap::new();
    let mut pending: Vec<&str> = names.iter().map(String::as_str).collect();
    for round in 0..PROBE_ROUNDS {
        if pending.is_empty() {
            break;
        }
        // `pending` is in name order, so the first claimant of a free offset is the smallest.
        let mut claims: HashMap<u128, &str> = HashMap::new();
        for &name in &pending {
            let off = probe(name, round, size);
            if !taken.contains_key(&off) {
                claims.entry(off).or_insert(name);
            }
        }
        for (&off, &name) in &claims {
            taken.insert(off, name);
            got.insert(name.to_owned(), first + off);
        }
        pending.retain(|n| !got.contains_key(*n));
    }
    // Whoever is left (a crowded range) scans linearly from its first probe, in name order.
    let mut unallocated = Vec::new();
    for name in pending {
        let mut found = None;
        if (taken.len() as u128) < size {
            // Terminates: some offset is free.
            let mut off = probe(name, 0, size);
            while taken.contains_key(&off) {
                off = if off + 1 == size { 0 } else { off + 1 };
            }
            found = Some(off);
        }
        match found {
            Some(off) => {
                taken.insert(off, name);
                got.insert(name.to_owned(), first + off);
            }
            None => unallocated.push(name.to_owned()),
        }
    }
    (got, unallocated)
}

#[cfg(test)]
mod tests;
