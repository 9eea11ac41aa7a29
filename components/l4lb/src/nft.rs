//! The kernel data plane: the VIP table rendered as one nftables ruleset and applied with
//! `nft -f -`, as kube-proxy's nftables mode does (reference l4lb §1.12); this kernel has no
//! IPVS.
//!
//! Key decisions:
//! - **Pure rendering** ([`render`]): the whole ruleset is a function of the table's
//!   [`listeners`](capstan_types::vip::VipTable::listeners) view (and the guarded ranges). The
//!   script first creates and then deletes our own `inet` table and defines it anew, so a
//!   full apply is **one atomic transaction** (the kernel sees either the old or the new
//!   ruleset, never a half) and a restarted l4lb removes whatever stale chain, set or element
//!   it left. Nothing outside our table is touched.
//! - **Incremental updates** ([`render_changes`]): after the first apply, [`NftPlane`] sends
//!   only the difference from the table it last applied (per changed VIP: its map elements
//!   and set elements), still as one `nft -f` transaction, so one VIP's change does not
//!   rewrite the others. A failed difference falls back to a full apply.
//! - **Dispatch** is one verdict-map lookup per family, `ip daddr . meta l4proto . th dport
//!   vmap @vips4`, from both the `prerouting` hook (containers on Docker's bridge) and the
//!   `output` hook (host processes), at priority dstnat − 10, ahead of Docker's DNAT for local
//!   addresses. A VIP's element jumps to the chain shared by all VIPs with `N` backends, whose
//!   one rule picks a backend per new connection (`numgen random mod N` as the last part of a
//!   `backends4-tcp` map key) and DNATs to it. The ruleset does not grow with the VIPs: a VIP is
//!   map elements only (one chain and one anonymous map per VIP made 10,000 VIPs take
//!   20-30 s to load). Conntrack keeps an established connection on its backend, so a
//!   removed backend drains and gets no new connection.
//! - **Client source preserved**: no masquerade, except two cases where the reply could not
//!   come back otherwise: a host process whose source the kernel picked *as the VIP itself*
//!   (the VIP is local, so it is its own preferred source; on another node that address is a
//!   VIP too) and hairpin (a client reaching itself through the VIP: a packet from its own
//!   address would be dropped as martian). Both are matched exactly in `postrouting`.
//! - **Zero backends → refused at once**: the VIP maps to a chain that answers TCP with a reset
//!   and UDP with ICMP port-unreachable, so clients fail fast instead of hanging.
//! - **Guarded ranges**: packets to any other address:port in the VIP ranges are rejected the
//!   same way, so an unprogrammed VIP never reaches a local process listening on a wildcard
//!   address and never leaves the node (the blackhole route of [`crate::netdev`] covers the rest).
//!
//! Entry points: [`render`], [`NftPlane::apply`], and [`KernelPlane`], which also keeps the VIP
//! addresses on the dummy device in the order that never exposes a VIP without its rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use capstan_types::vip::{AddrRange, Backend, Protocol};
use tracing::{debug, info, warn};

use crate::netdev::{self, Namespace, NetdevError, VipDevice};

/// The table l4lb owns (family `inet`: one table for IPv4 and IPv6).
pub const DEFAULT_TABLE: &str = "capstan";

/// Priority of our DNAT chains: dstnat (−100) − 10, so a VIP is translated before Docker's
/// `DOCKER` chain (which matches every local destination address) can claim its port.
pub const DNAT_PRIORITY: i32 = -110;
/// Priority of our masquerade chain: srcnat (100) + 10.
pub const SNAT_PRIORITY: i32 = 110;

/// What the data plane programs: `(VIP address:port, protocol) → backends`, the table's
/// [`listeners`](capstan_types::vip::VipTable::listeners) view.
pub type Listeners = BTreeMap<(SocketAddr, Protocol), BTreeSet<Backend>>;

/// Address ranges whose unprogrammed addresses are rejected (the named-VIP ranges, and any
/// range IP VIPs are taken from).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    pub ipv4: Vec<AddrRange<Ipv4Addr>>,
    pub ipv6: Vec<AddrRange<Ipv6Addr>>,
}

/// Failures of programming nftables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(
        "invalid nftables table name {0:?} (letters, digits, '_' and '-', starting with a letter, at most 64)"
    )]
    InvalidTableName(String),
    #[error("cannot run nft")]
    Spawn(#[source] std::io::Error),
    #[error("nft failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error(transparent)]
    Netdev(#[from] NetdevError),
}

/// Whether `name` is a table name [`render`] can use unquoted.
pub fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The whole ruleset for `vips` as one `nft -f` script, with no guarded ranges.
pub fn render(table: &str, vips: &Listeners) -> String {
    render_guarded(table, vips, &Guard::default())
}

/// Chain answering connections to a VIP without backends (and to guarded addresses).
const NO_BACKEND: &str = "no-backend";

/// The shared chain that picks one of `n` backends for the VIPs of one family and protocol:
/// `pick4-tcp-3`, `pick6-udp-1`. Every VIP with `n` backends jumps to the same chain; the
/// backends themselves are elements of the [`backend_map`]s.
pub fn pick_chain(v4: bool, protocol: Protocol, n: usize) -> String {
    format!("pick{}-{protocol}-{n}", if v4 { "4" } else { "6" })
}

/// The backend map of one family and protocol: `backends4-tcp`. One per protocol, keyed by
/// `tcp dport` (`udp dport`), not `th dport`: nft 1.0.6 fails to read back a rule that looks
/// a `th dport` key up after `meta l4proto tcp` ("conflicting protocols") whenever a later
/// command makes it load the table's rules (`add chain` does).
pub fn backend_map(v4: bool, protocol: Protocol) -> String {
    format!("backends{}-{protocol}", if v4 { "4" } else { "6" })
}

/// The one rule of [`pick_chain`]: a random index below `n`, looked up with the connection's
/// VIP address and port in the backend map, gives the DNAT target.
fn pick_rule(v4: bool, protocol: Protocol, n: usize) -> String {
    let family = if v4 { "ip" } else { "ip6" };
    format!(
        "meta l4proto {protocol} dnat {family} to {family} daddr . {protocol} dport . numgen random mod {n} map @{}",
        backend_map(v4, protocol)
    )
}

/// A listener's key in the maps: `11.0.0.1 . tcp . 80`.
fn key_of(addr: SocketAddr, protocol: Protocol) -> String {
    format!("{} . {protocol} . {}", addr.ip(), addr.port())
}

/// Where a listener's map element points: its pick chain, or `no-backend`.
fn target_of(addr: SocketAddr, protocol: Protocol, backends: &[Backend]) -> String {
    if backends.is_empty() {
        NO_BACKEND.to_string()
    } else {
        pick_chain(addr.is_ipv4(), protocol, backends.len())
    }
}

/// The backend-map key of a listener's `i`-th backend: `11.0.0.1 . 80 . 0`.
fn backend_key(addr: SocketAddr, i: usize) -> String {
    format!("{} . {} . {i}", addr.ip(), addr.port())
}

/// The backend-map element of a listener's `i`-th backend: `11.0.0.1 . 80 . 0 : 10.0.0.1 .
/// 8080`.
fn backend_element(addr: SocketAddr, i: usize, b: &Backend) -> String {
    format!("{} : {} . {}", backend_key(addr, i), b.ip, b.port)
}

/// The pick chains a table needs: one per (family, protocol, backend count) in use.
fn picks(
    vips: &BTreeMap<(SocketAddr, Protocol), Vec<Backend>>,
) -> BTreeSet<(bool, Protocol, usize)> {
    vips.iter()
        .filter(|(_, bs)| !bs.is_empty())
        .map(|((a, p), bs)| (a.is_ipv4(), *p, bs.len()))
        .collect()
}

/// The whole ruleset: sets and maps, a few shared chains and the hook chains, in a fixed
/// order (the input is ordered), so the same table always gives the same script.
///
/// The size of the ruleset does not grow with the VIPs: they are map elements only. Per new
/// connection: `vips4` (address . protocol . port → `goto pick4-<proto>-<N>`), then that
/// chain's one rule draws `numgen random mod N` and looks up `backends4-<proto>` (address .
/// port . index → backend address . port) for the DNAT target. Ten thousand VIPs are thus ten
/// thousand plus (backends) map elements and a handful of chains, which `nft` loads in about
/// a second, where one chain and one anonymous map per VIP took 20-30 s. Backends of the
/// other address family than their VIP are left out (the table never produces them).
pub fn render_guarded(table: &str, vips: &Listeners, guard: &Guard) -> String {
    let vips = same_family(vips);
    let mut vip4: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut vip6: BTreeSet<Ipv6Addr> = BTreeSet::new();
    let mut back4: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut back6: BTreeSet<Ipv6Addr> = BTreeSet::new();
    let (mut map4, mut map6) = (Vec::new(), Vec::new());
    let mut members: BTreeMap<String, Vec<String>> = [true, false]
        .iter()
        .flat_map(|&v4| [Protocol::Tcp, Protocol::Udp].map(|p| (backend_map(v4, p), Vec::new())))
        .collect();
    for ((addr, protocol), backends) in &vips {
        let key = key_of(*addr, *protocol);
        let element = format!("{key} : goto {}", target_of(*addr, *protocol, backends));
        if let Some(m) = members.get_mut(&backend_map(addr.is_ipv4(), *protocol)) {
            m.extend(
                backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| backend_element(*addr, i, b)),
            );
        }
        match addr.ip() {
            IpAddr::V4(a) => {
                vip4.insert(a);
                map4.push(element);
            }
            IpAddr::V6(a) => {
                vip6.insert(a);
                map6.push(element);
            }
        }
        for b in backends {
            match b.ip {
                IpAddr::V4(a) => back4.insert(a),
                IpAddr::V6(a) => back6.insert(a),
            };
        }
    }

    let mut s = String::new();
    let _ = writeln!(
        s,
        "# capstan l4lb data plane: {} VIP listeners. Generated; applied as one transaction.",
        vips.len()
    );
    // Creating first makes the delete valid when the table does not exist yet.
    let _ = writeln!(s, "table inet {table}");
    let _ = writeln!(s, "delete table inet {table}");
    let _ = writeln!(s, "table inet {table} {{");
    set(&mut s, "vip-addrs4", "ipv4_addr", false, vip4.iter());
    set(&mut s, "vip-addrs6", "ipv6_addr", false, vip6.iter());
    set(
        &mut s,
        "hairpin4",
        "ipv4_addr . ipv4_addr",
        false,
        back4.iter().map(|a| format!("{a} . {a}")),
    );
    set(
        &mut s,
        "hairpin6",
        "ipv6_addr . ipv6_addr",
        false,
        back6.iter().map(|a| format!("{a} . {a}")),
    );
    let range = |f: &dyn std::fmt::Display, l: &dyn std::fmt::Display| format!("{f}-{l}");
    set(
        &mut s,
        "guard4",
        "ipv4_addr",
        true,
        guard.ipv4.iter().map(|r| range(&r.first, &r.last)),
    );
    set(
        &mut s,
        "guard6",
        "ipv6_addr",
        true,
        guard.ipv6.iter().map(|r| range(&r.first, &r.last)),
    );
    vmap(&mut s, "vips4", "ipv4_addr", &map4);
    vmap(&mut s, "vips6", "ipv6_addr", &map6);
    for v4 in [true, false] {
        let family = if v4 { "ip" } else { "ip6" };
        for p in [Protocol::Tcp, Protocol::Udp] {
            let name = backend_map(v4, p);
            let _ = writeln!(s, "\tmap {name} {{");
            // `typeof`: nft has no type name for numgen's value; `mod 1` only names its type.
            let _ = writeln!(
                s,
                "\t\ttypeof {family} daddr . {p} dport . numgen random mod 1 : {family} daddr . {p} dport"
            );
            elements_block(&mut s, members[&name].iter().cloned());
            let _ = writeln!(s, "\t}}");
        }
    }
    let _ = writeln!(s, "\tchain {NO_BACKEND} {{");
    let _ = writeln!(s, "\t\tmeta l4proto tcp reject with tcp reset");
    let _ = writeln!(s, "\t\treject");
    let _ = writeln!(s, "\t}}");
    for (v4, protocol, n) in picks(&vips) {
        let _ = writeln!(s, "\tchain {} {{", pick_chain(v4, protocol, n));
        let _ = writeln!(s, "\t\t{}", pick_rule(v4, protocol, n));
        let _ = writeln!(s, "\t}}");
    }
    for hook in ["prerouting", "output"] {
        let _ = writeln!(s, "\tchain {hook} {{");
        let _ = writeln!(
            s,
            "\t\ttype nat hook {hook} priority {DNAT_PRIORITY}; policy accept;"
        );
        // Only a connection's first packet: a reset or ICMP error the kernel sends on our
        // behalf (related to a rejected connection, looped back through `lo`) must pass.
        let _ = writeln!(s, "\t\tct state != new accept");
        let _ = writeln!(s, "\t\tip daddr . meta l4proto . th dport vmap @vips4");
        let _ = writeln!(s, "\t\tip6 daddr . meta l4proto . th dport vmap @vips6");
        let _ = writeln!(s, "\t\tip daddr @guard4 goto {NO_BACKEND}");
        let _ = writeln!(s, "\t\tip6 daddr @guard6 goto {NO_BACKEND}");
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(s, "\tchain postrouting {{");
    let _ = writeln!(
        s,
        "\t\ttype nat hook postrouting priority {SNAT_PRIORITY}; policy accept;"
    );
    for f in ["4", "6"] {
        let ip = if f == "4" { "ip" } else { "ip6" };
        // A host process that got the VIP itself as its source address.
        let _ = writeln!(
            s,
            "\t\tct status dnat ct original {ip} daddr @vip-addrs{f} {ip} saddr @vip-addrs{f} masquerade"
        );
        // Hairpin: the client is the backend it was sent to.
        let _ = writeln!(
            s,
            "\t\tct status dnat ct original {ip} daddr @vip-addrs{f} {ip} saddr . {ip} daddr @hairpin{f} masquerade"
        );
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// Each listener's backends of its own family (the only ones a rule can use), ordered.
fn same_family(vips: &Listeners) -> BTreeMap<(SocketAddr, Protocol), Vec<Backend>> {
    vips.iter()
        .map(|(key, backends)| {
            let v4 = key.0.is_ipv4();
            let same = backends
                .iter()
                .copied()
                .filter(|b| b.ip.is_ipv4() == v4)
                .collect();
            (*key, same)
        })
        .collect()
}

/// The sets derived from a table: VIP addresses and hairpin backend addresses, as
/// `(set, address)` (text only for the difference: this runs on every change of a table
/// that may hold 100,000 backends).
fn derived_sets(
    vips: &BTreeMap<(SocketAddr, Protocol), Vec<Backend>>,
) -> BTreeSet<(&'static str, IpAddr)> {
    let mut out = BTreeSet::new();
    for ((addr, _), backends) in vips {
        let v4 = addr.is_ipv4();
        out.insert((if v4 { "vip-addrs4" } else { "vip-addrs6" }, addr.ip()));
        for b in backends {
            out.insert((if v4 { "hairpin4" } else { "hairpin6" }, b.ip));
        }
    }
    out
}

/// The element text of a derived set's address.
fn derived_element(set: &str, ip: IpAddr) -> String {
    if set.starts_with("hairpin") {
        format!("{ip} . {ip}")
    } else {
        ip.to_string()
    }
}

/// The `nft -f` script that turns the ruleset of `old` into the ruleset of `new` by touching
/// only what differs, everything in one transaction (the kernel sees either ruleset, never a
/// mix): per changed VIP its `vips` element (only when its target chain changes) and the
/// `backends` elements whose index now holds another backend; the derived set elements; a
/// pick chain for a backend count newly in use, and the deletion of one no longer used.
/// `None` when nothing differs. It assumes the kernel holds exactly [`render_guarded`]`(old)`;
/// the guard is not part of it (it never changes while a plane runs).
///
/// Order: element deletions, then new chains, then element additions, then chain deletions
/// (a chain is created before an element points at it, deleted after none does). Elements
/// of one set go in one command.
pub fn render_changes(table: &str, old: &Listeners, new: &Listeners) -> Option<String> {
    let (old, new) = (same_family(old), same_family(new));
    let mut deletes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut adds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let keys: BTreeSet<&(SocketAddr, Protocol)> = old.keys().chain(new.keys()).collect();
    let mut changed = 0usize;
    for (addr, protocol) in keys {
        let k = (*addr, *protocol);
        let (before, after) = (old.get(&k), new.get(&k));
        if before == after {
            continue;
        }
        changed += 1;
        let v4 = addr.is_ipv4();
        let map = if v4 { "vips4" } else { "vips6" };
        let backends = backend_map(v4, *protocol);
        let key = key_of(*addr, *protocol);
        let target = |bs: Option<&Vec<Backend>>| bs.map(|bs| target_of(*addr, *protocol, bs));
        let (was, will) = (target(before), target(after));
        if was != will {
            if was.is_some() {
                deletes.entry(map.into()).or_default().push(key.clone());
            }
            if let Some(will) = will {
                adds.entry(map.into())
                    .or_default()
                    .push(format!("{key} : goto {will}"));
            }
        }
        let (b0, b1) = (
            before.map(Vec::as_slice).unwrap_or_default(),
            after.map(Vec::as_slice).unwrap_or_default(),
        );
        for i in 0..b0.len().max(b1.len()) {
            let (x, y) = (b0.get(i), b1.get(i));
            if x == y {
                continue;
            }
            if x.is_some() {
                deletes
                    .entry(backends.clone())
                    .or_default()
                    .push(backend_key(*addr, i));
            }
            if let Some(y) = y {
                adds.entry(backends.clone())
                    .or_default()
                    .push(backend_element(*addr, i, y));
            }
        }
    }
    let (sets_before, sets_after) = (derived_sets(&old), derived_sets(&new));
    for &(set, ip) in sets_before.difference(&sets_after) {
        deletes
            .entry(set.into())
            .or_default()
            .push(derived_element(set, ip));
    }
    for &(set, ip) in sets_after.difference(&sets_before) {
        adds.entry(set.into())
            .or_default()
            .push(derived_element(set, ip));
    }
    let (picks_before, picks_after) = (picks(&old), picks(&new));
    if changed == 0 && deletes.is_empty() && adds.is_empty() {
        return None;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# capstan l4lb data plane: {changed} VIP listeners changed. Generated; applied as one transaction."
    );
    let elements = |s: &mut String, verb: &str, set: &str, items: &[String]| {
        let _ = writeln!(
            s,
            "{verb} element inet {table} {set} {{ {} }}",
            items.join(", ")
        );
    };
    for (set, items) in &deletes {
        elements(&mut s, "delete", set, items);
    }
    for &(v4, protocol, n) in picks_after.difference(&picks_before) {
        let chain = pick_chain(v4, protocol, n);
        let _ = writeln!(s, "add chain inet {table} {chain}");
        let _ = writeln!(
            s,
            "add rule inet {table} {chain} {}",
            pick_rule(v4, protocol, n)
        );
    }
    for (set, items) in &adds {
        elements(&mut s, "add", set, items);
    }
    for &(v4, protocol, n) in picks_before.difference(&picks_after) {
        let chain = pick_chain(v4, protocol, n);
        // `delete chain` wants the chain empty.
        let _ = writeln!(s, "flush chain inet {table} {chain}");
        let _ = writeln!(s, "delete chain inet {table} {chain}");
    }
    Some(s)
}

fn set<T: std::fmt::Display>(
    s: &mut String,
    name: &str,
    ty: &str,
    interval: bool,
    elements: impl Iterator<Item = T>,
) {
    let _ = writeln!(s, "\tset {name} {{");
    let _ = writeln!(s, "\t\ttype {ty}");
    if interval {
        let _ = writeln!(s, "\t\tflags interval");
    }
    elements_block(s, elements.map(|e| e.to_string()));
    let _ = writeln!(s, "\t}}");
}

fn vmap(s: &mut String, name: &str, addr: &str, elements: &[String]) {
    let _ = writeln!(s, "\tmap {name} {{");
    let _ = writeln!(s, "\t\ttype {addr} . inet_proto . inet_service : verdict");
    elements_block(s, elements.iter().cloned());
    let _ = writeln!(s, "\t}}");
}

/// `elements = { a, b }` one per line; nothing for none (nft rejects an empty list).
fn elements_block(s: &mut String, elements: impl Iterator<Item = String>) {
    let mut first = true;
    for e in elements {
        s.push_str(if first {
            "\t\telements = {\n\t\t\t"
        } else {
            ",\n\t\t\t"
        });
        s.push_str(&e);
        first = false;
    }
    if !first {
        s.push_str("\n\t\t}\n");
    }
}

/// Applies rulesets with the `nft` command, in the current or a named network namespace.
///
/// The plane remembers the table it last applied: the first apply (and the one after
/// [`NftPlane::forget`] or a failed update) replaces the whole table, every later one sends
/// only the difference ([`render_changes`]), so one VIP's change costs one VIP's rules.
#[derive(Debug, Clone)]
pub struct NftPlane {
    table: String,
    ns: Namespace,
    guard: Guard,
    applied: Option<Listeners>,
}

/// How an apply changed the kernel's ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The whole table was replaced (first apply, or recovery).
    Full,
    /// Only the changed VIPs' elements and chains.
    Incremental,
    /// Nothing differed; nft was not run.
    Unchanged,
}

/// What one apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub listeners: usize,
    pub script_bytes: usize,
    pub update: Update,
    pub took: Duration,
}

impl NftPlane {
    /// A plane owning table `inet <table>` in the current namespace.
    pub fn new(table: &str) -> Result<NftPlane, NftError> {
        if !valid_table_name(table) {
            return Err(NftError::InvalidTableName(table.to_string()));
        }
        Ok(NftPlane {
            table: table.to_string(),
            ns: Namespace::Current,
            guard: Guard::default(),
            applied: None,
        })
    }

    /// The same plane, programming namespace `ns` instead (tests; container namespaces).
    pub fn in_namespace(mut self, ns: Namespace) -> NftPlane {
        self.ns = ns;
        self
    }

    /// The same plane, rejecting unprogrammed addresses in `guard`.
    pub fn with_guard(mut self, guard: Guard) -> NftPlane {
        self.guard = guard;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Makes the kernel's table the ruleset for `vips`, atomically: the difference from the
    /// last apply, or the whole table the first time. A failed difference (the table was
    /// changed behind our back) is retried once as a whole table.
    pub async fn apply(&mut self, vips: &Listeners) -> Result<Applied, NftError> {
        let started = Instant::now();
        let (script, update) = match &self.applied {
            None => (render_guarded(&self.table, vips, &self.guard), Update::Full),
            Some(old) => match render_changes(&self.table, old, vips) {
                Some(script) => (script, Update::Incremental),
                None => (String::new(), Update::Unchanged),
            },
        };
        let (script_bytes, update) = match update {
            Update::Unchanged => (0, Update::Unchanged),
            Update::Full => {
                self.applied = None;
                self.run(&["-f", "-"], Some(script.as_bytes())).await?;
                (script.len(), Update::Full)
            }
            Update::Incremental => match self.run(&["-f", "-"], Some(script.as_bytes())).await {
                Ok(_) => (script.len(), Update::Incremental),
                Err(e) => {
                    warn!(table = %self.table, error = %e, "Incremental nftables update failed; replacing the whole table");
                    self.applied = None;
                    let full = render_guarded(&self.table, vips, &self.guard);
                    self.run(&["-f", "-"], Some(full.as_bytes())).await?;
                    (full.len(), Update::Full)
                }
            },
        };
        self.applied = Some(vips.clone());
        let applied = Applied {
            listeners: vips.len(),
            script_bytes,
            update,
            took: started.elapsed(),
        };
        debug!(table = %self.table, listeners = applied.listeners, update = ?applied.update, took = ?applied.took, "nftables ruleset applied");
        Ok(applied)
    }

    /// Makes the next apply replace the whole table (a reconcile after a stream gap).
    pub fn forget(&mut self) {
        self.applied = None;
    }

    /// Deletes the table if it exists (data plane switched off).
    pub async fn remove(&mut self) -> Result<(), NftError> {
        self.applied = None;
        let script = format!("table inet {t}\ndelete table inet {t}\n", t = self.table);
        self.run(&["-f", "-"], Some(script.as_bytes())).await?;
        info!(table = %self.table, "nftables table removed");
        Ok(())
    }

    /// `nft list table inet <table>`: the ruleset as the kernel has it.
    pub async fn list(&self) -> Result<String, NftError> {
        let table = self.table.clone();
        self.run(&["list", "table", "inet", &table], None).await
    }

    async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, NftError> {
        let out = netdev::run(&self.ns, "nft", args, stdin)
            .await
            .map_err(NftError::Spawn)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NftError::Failed {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

/// The whole kernel data plane of one namespace: the nftables table, the VIP addresses on the
/// dummy device, and the blackhole routes of the guarded ranges.
///
/// Order matters (the DCOS_OSS-4939 race): routes first (at [`KernelPlane::start`]), then on
/// each apply addresses of VIPs that went are removed, the ruleset is replaced, and only then
/// are new VIP addresses made local, so an address is never local without its rules.
#[derive(Debug, Clone)]
pub struct KernelPlane {
    nft: NftPlane,
    device: VipDevice,
    guard: Guard,
    /// The device's addresses as we last left them; `None`: ask the kernel (first apply,
    /// after [`KernelPlane::forget`] or a failure), so a change does not list 10,000
    /// addresses.
    addresses: Option<BTreeSet<IpAddr>>,
}

impl KernelPlane {
    pub fn new(nft: NftPlane, device: VipDevice, guard: Guard) -> KernelPlane {
        KernelPlane {
            nft: nft.with_guard(guard.clone()),
            device,
            guard,
            addresses: None,
        }
    }

    pub fn nft(&self) -> &NftPlane {
        &self.nft
    }

    pub fn device(&self) -> &VipDevice {
        &self.device
    }

    /// Creates the device and the blackhole routes (idempotent; call once at start).
    pub async fn start(&self) -> Result<(), NftError> {
        self.device.ensure().await?;
        self.device.set_blackholes(&self.guard).await?;
        Ok(())
    }

    /// Makes the next apply replace the whole table.
    pub fn forget(&mut self) {
        self.nft.forget();
        self.addresses = None;
    }

    /// Makes the kernel serve exactly `vips`.
    pub async fn apply(&mut self, vips: &Listeners) -> Result<Applied, NftError> {
        let want: BTreeSet<IpAddr> = vips.keys().map(|(a, _)| a.ip()).collect();
        let have = match self.addresses.take() {
            Some(have) => have,
            None => self.device.addresses().await?,
        };
        let gone: BTreeSet<IpAddr> = have.difference(&want).copied().collect();
        let new: BTreeSet<IpAddr> = want.difference(&have).copied().collect();
        if !gone.is_empty() {
            self.device
                .change_addresses(&BTreeSet::new(), &gone)
                .await?;
        }
        let applied = self.nft.apply(vips).await?;
        if !new.is_empty() {
            self.device.change_addresses(&new, &BTreeSet::new()).await?;
        }
        self.addresses = Some(want);
        Ok(applied)
    }

    /// Removes the table, the device and our routes.
    pub async fn stop(&mut self) -> Result<(), NftError> {
        self.device.remove().await?;
        self.nft.remove().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
