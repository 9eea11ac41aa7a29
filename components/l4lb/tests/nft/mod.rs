//! Integration tests of the kernel data plane (nftables + the VIP device), run as root and
//! ONLY inside network namespaces each test creates (`capstan-test-<random>`, deleted by a
//! drop guard): every `nft` and `ip` command goes through `ip netns exec`/`ip -n`, and sockets
//! are created by threads that `setns` into the namespace first. The host's own namespace is
//! never changed.
//!
//! Topology per test: a "node" namespace (where the plane is programmed and the backends
//! listen on 10.251.0.x) and a "container" namespace joined to it by a veth pair
//! (10.250.0.2 → gateway 10.250.0.1), like a container on Docker's bridge. The node's default
//! route points at the container namespace, so a packet the node routed out would arrive
//! there: the "outside world" of the blackhole test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use capstan_l4lb::netdev::{Namespace, VipDevice};
use capstan_l4lb::nft::{Guard, KernelPlane, Listeners, NftPlane, Update};
use capstan_l4lb::{Config, DataPlane, Server};
use capstan_testkit::wait_until;
use capstan_types::TaskState;
use capstan_types::vip::{
    AddrRange, Backend, DiscoveredPort, Protocol, VipConfig, VipTable, VipTask,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const CONNECT: Duration = Duration::from_secs(5);
const CTR_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);

/// A network namespace of this test run, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Result<Netns> {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "capstan-test-{:x}-{nanos:x}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        sh("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn ns(&self) -> Namespace {
        Namespace::Named(self.name.clone())
    }

    /// `ip -n <ns> args`.
    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// `ip netns exec <ns> program args`.
    fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Runs `f` on a new thread that has entered this namespace (sockets it creates live
    /// there), without blocking the async runtime.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let entered = std::fs::File::open(&path)
                .context("open the namespace")
                .and_then(|f| {
                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")
                });
            let _ = tx.send(entered.map(|()| f()));
        });
        rx.await.context("namespace thread died")?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The two namespaces and the plane programming the node.
struct Topo {
    kernel: KernelPlane,
    // Dropped (deleted) after the plane's users are done; container first.
    ctr: Netns,
    node: Netns,
}

fn guard() -> Result<Guard> {
    Ok(Guard {
        ipv4: vec![AddrRange::parse("11.0.0.0/8").context("range")?],
        ipv6: vec![AddrRange::parse("fd01:c::/64").context("range")?],
    })
}

fn plane_for(node: &Netns) -> Result<KernelPlane> {
    Ok(KernelPlane::new(
        NftPlane::new("capstan")?.in_namespace(node.ns()),
        VipDevice::new("capstan-vip0")?.in_namespace(node.ns()),
        guard()?,
    ))
}

impl Topo {
    /// The namespaces, links and backend addresses; the plane is not started yet.
    fn new() -> Result<Topo> {
        which_nft()?;
        let node = Netns::create()?;
        let ctr = Netns::create()?;
        node.ip(&[
            "link", "add", "vh", "type", "veth", "peer", "name", "vc", "netns", &ctr.name,
        ])?;
        node.ip(&["addr", "add", "10.250.0.1/24", "dev", "vh"])?;
        node.ip(&["link", "set", "vh", "up"])?;
        ctr.ip(&["addr", "add", "10.250.0.2/24", "dev", "vc"])?;
        ctr.ip(&["link", "set", "vc", "up"])?;
        ctr.ip(&["route", "add", "default", "via", "10.250.0.1"])?;
        node.ip(&["route", "add", "default", "via", "10.250.0.2"])?;
        for i in 1..=3 {
            node.ip(&["addr", "add", &format!("10.251.0.{i}/32"), "dev", "lo"])?;
        }
        // The same in IPv6 (ULA fd00:250::/64 and fd00:251::x, no duplicate detection).
        node.ip(&["addr", "add", "fd00:250::1/64", "dev", "vh", "nodad"])?;
        ctr.ip(&["addr", "add", "fd00:250::2/64", "dev", "vc", "nodad"])?;
        ctr.ip(&["-6", "route", "add", "default", "via", "fd00:250::1"])?;
        node.ip(&["-6", "route", "add", "default", "via", "fd00:250::2"])?;
        for i in 1..=3 {
            node.ip(&[
                "addr",
                "add",
                &format!("fd00:251::{i}/128"),
                "dev",
                "lo",
                "nodad",
            ])?;
        }
        // A Docker host forwards; so does the node (inside its namespace only).
        node.exec("sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        node.exec(
            "sh",
            &["-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"],
        )?;
        Ok(Topo {
            kernel: plane_for(&node)?,
            ctr,
            node,
        })
    }

    /// Starts a backend listening on `addr` inside `ns`: it sends `<id> <peer>\n`, then
    /// echoes until EOF.
    async fn backend(ns: &Netns, addr: SocketAddr, id: u8) -> Result<()> {
        let std_listener = ns
            .run(move || std::net::TcpListener::bind(addr))
            .await?
            .with_context(|| format!("bind {addr}"))?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        tokio::spawn(async move {
            while let Ok((mut s, peer)) = listener.accept().await {
                tokio::spawn(async move {
                    if s.write_all(format!("{id} {peer}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut buf = [0u8; 256];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(())
    }

    async fn backends(&self) -> Result<Vec<Backend>> {
        self.backends_at(|i| IpAddr::V4(Ipv4Addr::new(10, 251, 0, i)))
            .await
    }

    /// Backends 1 to 3 on `fd00:251::<id>`, port 8080.
    async fn backends6(&self) -> Result<Vec<Backend>> {
        self.backends_at(|i| {
            IpAddr::V6(std::net::Ipv6Addr::new(
                0xfd00,
                0x251,
                0,
                0,
                0,
                0,
                0,
                u16::from(i),
            ))
        })
        .await
    }

    async fn backends_at(&self, ip: impl Fn(u8) -> IpAddr) -> Result<Vec<Backend>> {
        let mut out = Vec::new();
        for i in 1..=3u8 {
            let addr = SocketAddr::new(ip(i), 8080);
            Topo::backend(&self.node, addr, i).await?;
            out.push(Backend {
                ip: addr.ip(),
                port: addr.port(),
            });
        }
        Ok(out)
    }
}

fn which_nft() -> Result<()> {
    sh("nft", &["--version"])
        .context("the nft command is needed (Debian package nftables; .ci/run installs it)")?;
    Ok(())
}

/// An open connection through a VIP: which backend took it and the client address it saw.
struct Conn {
    stream: TcpStream,
    id: u8,
    peer: SocketAddr,
}

impl Conn {
    /// Sends a line and reads its echo: the connection still works.
    fn echo(&mut self, text: &str) -> Result<()> {
        self.stream.write_all(text.as_bytes())?;
        let mut buf = vec![0u8; text.len()];
        self.stream.read_exact(&mut buf)?;
        ensure!(buf == text.as_bytes(), "echo mismatch");
        Ok(())
    }
}

/// Connects from inside `ns` to `target` (from `bind` if given) and reads the greeting.
async fn dial(
    ns: &Netns,
    target: SocketAddr,
    bind: Option<IpAddr>,
) -> Result<std::io::Result<Conn>> {
    ns.run(move || -> std::io::Result<Conn> {
        let stream = match bind {
            None => TcpStream::connect_timeout(&target, CONNECT)?,
            Some(ip) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let s = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    s.bind(SocketAddr::new(ip, 0))?;
                    tokio::time::timeout(CONNECT, s.connect(target))
                        .await
                        .map_err(|_| std::io::Error::from(ErrorKind::TimedOut))??
                        .into_std()
                })?
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(CONNECT))?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        let bad = || std::io::Error::new(ErrorKind::InvalidData, format!("greeting {line:?}"));
        let (id, peer) = line.trim().split_once(' ').ok_or_else(bad)?;
        Ok(Conn {
            id: id.parse().map_err(|_| bad())?,
            peer: peer.parse().map_err(|_| bad())?,
            stream,
        })
    })
    .await
}

fn vip(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
}

fn table(entries: &[(SocketAddr, &[Backend])]) -> Listeners {
    entries
        .iter()
        .map(|(a, bs)| ((*a, Protocol::Tcp), bs.iter().copied().collect()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_vip_spreads_over_backends_and_keeps_the_client_address() -> Result<()> {
    let mut t = Topo::new()?;
    t.kernel.start().await?;
    let backends = t.backends().await?;
    // A backend in the container namespace itself, for the hairpin case.
    let own = SocketAddr::new(IpAddr::V4(CTR_IP), 9090);
    Topo::backend(&t.ctr, own, 9).await?;
    let v = vip([11, 0, 0, 10], 80);
    let hairpin = vip([11, 0, 0, 20], 80);
    let own_backend = [Backend {
        ip: own.ip(),
        port: own.port(),
    }];
    t.kernel
        .apply(&table(&[(v, &backends), (hairpin, &own_backend)]))
        .await?;

    let mut seen = BTreeMap::new();
    for _ in 0..60 {
        let c = dial(&t.ctr, v, None)
            .await?
            .context("connect to the VIP from the container")?;
        ensure!(
            c.peer.ip() == IpAddr::V4(CTR_IP),
            "backend {} saw {} instead of the container's own address",
            c.id,
            c.peer
        );
        *seen.entry(c.id).or_insert(0u32) += 1;
    }
    ensure!(
        seen.keys().copied().collect::<Vec<_>>() == [1, 2, 3],
        "connections did not spread over the 3 backends: {seen:?}"
    );

    // From the host (node) itself: an explicit source address is kept as it is; without one
    // the kernel's pick (the VIP itself) is masqueraded to a real address of the node.
    let c = dial(&t.node, v, Some(IpAddr::V4(GW_IP))).await??;
    ensure!(
        c.peer.ip() == IpAddr::V4(GW_IP),
        "host client seen as {}",
        c.peer
    );
    let c = dial(&t.node, v, None).await??;
    ensure!(
        c.peer.ip() != v.ip(),
        "host client seen with the VIP as its source"
    );

    // Hairpin: the container reaches itself through a VIP.
    let c = dial(&t.ctr, hairpin, None)
        .await?
        .context("hairpin connection")?;
    ensure!(c.id == 9);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_removed_backend_gets_no_new_connection_and_drains() -> Result<()> {
    let mut t = Topo::new()?;
    t.kernel.start().await?;
    let backends = t.backends().await?;
    let v = vip([11, 0, 0, 10], 80);
    t.kernel.apply(&table(&[(v, &backends)])).await?;

    // Hold a connection that backend 3 took.
    let mut held = None;
    for _ in 0..200 {
        let c = dial(&t.ctr, v, None).await??;
        if c.id == 3 {
            held = Some(c);
            break;
        }
    }
    let mut held = held.context("backend 3 never chosen")?;

    t.kernel.apply(&table(&[(v, &backends[..2])])).await?;
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        seen.insert(dial(&t.ctr, v, None).await??.id);
    }
    ensure!(
        seen == BTreeSet::from([1, 2]),
        "after removing backend 3 new connections went to {seen:?}"
    );
    held.echo("still here\n")
        .context("the connection to the removed backend was cut instead of draining")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_zero_backends_refuse_at_once() -> Result<()> {
    let mut t = Topo::new()?;
    t.kernel.start().await?;
    let v = vip([11, 0, 0, 10], 80);
    t.kernel.apply(&table(&[(v, &[])])).await?;
    for (who, ns) in [("container", &t.ctr), ("host", &t.node)] {
        match dial(ns, v, None).await? {
            Ok(c) => bail!(
                "{who}: connected to backend {} of a VIP without backends",
                c.id
            ),
            Err(e) => ensure!(
                e.kind() == ErrorKind::ConnectionRefused,
                "{who}: expected a refusal, got {e}"
            ),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_unprogrammed_vip_fails_locally_and_is_never_routed_out() -> Result<()> {
    let mut t = Topo::new()?;
    // "Somewhere outside" (through the node's default route) a machine has 11.0.0.99.
    let outside = vip([11, 0, 0, 99], 80);
    t.ctr.ip(&["addr", "add", "11.0.0.99/32", "dev", "lo"])?;
    Topo::backend(&t.ctr, outside, 7).await?;
    // Without the plane, the node routes it out: the check below can see a leak.
    let leaked = dial(&t.node, outside, None).await??;
    ensure!(leaked.id == 7);

    t.kernel.start().await?;
    let backends = t.backends().await?;
    let v = vip([11, 0, 0, 10], 80);
    t.kernel.apply(&table(&[(v, &backends)])).await?;
    match dial(&t.node, outside, None).await? {
        Ok(_) => bail!("a connection to an unprogrammed VIP address was routed out"),
        Err(e) => ensure!(
            e.kind() != ErrorKind::TimedOut,
            "expected a local failure, got a timeout"
        ),
    }
    ensure!(
        t.node.ip(&["route", "get", "11.0.0.99"]).is_err(),
        "11.0.0.99 still has a usable route"
    );
    let routes = t.node.ip(&["route", "show", "type", "blackhole"])?;
    ensure!(routes.contains("11.0.0.0/8"), "blackhole routes: {routes}");
    // From the container the packet is forwarded to the node, which rejects it.
    match dial(&t.ctr, vip([11, 0, 0, 98], 80), None).await? {
        Ok(_) => bail!("the container reached an unprogrammed VIP"),
        Err(e) => ensure!(e.kind() == ErrorKind::ConnectionRefused, "container: {e}"),
    }
    // A programmed VIP address on a port without a rule never reaches a local process
    // listening on a wildcard address (DCOS_OSS-4939).
    Topo::backend(&t.node, "0.0.0.0:81".parse()?, 5).await?;
    for (who, ns) in [("host", &t.node), ("container", &t.ctr)] {
        match dial(ns, vip([11, 0, 0, 10], 81), None).await? {
            Ok(c) => bail!(
                "{who}: reached local listener {} through a VIP address",
                c.id
            ),
            Err(e) => ensure!(e.kind() == ErrorKind::ConnectionRefused, "{who}: {e}"),
        }
    }
    // The VIP itself works.
    ensure!(dial(&t.ctr, v, None).await?.is_ok());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_restart_rebuilds_from_scratch_without_stale_rules() -> Result<()> {
    let mut t = Topo::new()?;
    t.kernel.start().await?;
    let backends = t.backends().await?;
    let (a, b) = (vip([11, 0, 0, 10], 80), vip([11, 0, 0, 11], 80));
    t.kernel
        .apply(&table(&[(a, &backends[..1]), (b, &backends[1..])]))
        .await?;
    ensure!(dial(&t.ctr, b, None).await?.is_ok());
    // Leftovers of a crashed run: a stray chain in our table, an address on our device, a
    // blackhole route of ours for a range no longer configured.
    t.node
        .exec("nft", &["add", "chain", "inet", "capstan", "stale-chain"])?;
    t.node
        .ip(&["addr", "add", "11.0.0.77/32", "dev", "capstan-vip0"])?;
    t.node
        .ip(&["route", "add", "blackhole", "12.0.0.0/8", "proto", "241"])?;

    // "kill -9" and start again: a fresh plane with only VIP a.
    let mut restarted = plane_for(&t.node)?;
    restarted.start().await?;
    let only_a = table(&[(a, &backends[..1])]);
    restarted.apply(&only_a).await?;
    let listed = restarted.nft().list().await?;
    for stale in ["11.0.0.11", "stale-chain", "10.251.0.2", "10.251.0.3"] {
        ensure!(!listed.contains(stale), "stale {stale} left in\n{listed}");
    }
    ensure!(listed.contains("11.0.0.10 . tcp . 80"), "{listed}");
    let addrs = restarted.device().addresses().await?;
    ensure!(
        addrs == BTreeSet::from([a.ip()]),
        "device addresses after restart: {addrs:?}"
    );
    let routes = t.node.ip(&["route", "show", "proto", "241"])?;
    ensure!(
        !routes.contains("12.0.0.0") && routes.contains("11.0.0.0/8"),
        "routes after restart: {routes}"
    );
    ensure!(
        dial(&t.ctr, b, None).await?.is_err(),
        "removed VIP b still answers"
    );
    ensure!(dial(&t.ctr, a, None).await??.id == 1);
    // Applying the same table again changes nothing.
    restarted.apply(&only_a).await?;
    ensure!(
        restarted.nft().list().await? == listed,
        "re-apply changed the ruleset"
    );
    let tables = t.node.exec("nft", &["list", "tables"])?;
    ensure!(tables.trim() == "table inet capstan", "tables: {tables}");

    // Switching the plane off removes everything it made.
    restarted.stop().await?;
    let tables = t.node.exec("nft", &["list", "tables"])?;
    ensure!(tables.trim().is_empty(), "tables after stop: {tables}");
    ensure!(
        t.node
            .ip(&["route", "show", "proto", "241"])?
            .trim()
            .is_empty()
    );
    ensure!(t.node.ip(&["link", "show", "capstan-vip0"]).is_err());
    Ok(())
}

/// The rule handles of chain `chain` in the node's table (`# handle N` of `nft -a`).
fn handles(node: &Netns, chain: &str) -> Result<Vec<u64>> {
    let listed = node.exec("nft", &["-a", "list", "chain", "inet", "capstan", chain])?;
    Ok(listed
        .lines()
        .filter(|l| l.contains("dnat"))
        .filter_map(|l| l.rsplit_once("# handle ")?.1.trim().parse().ok())
        .collect())
}

/// A listing as its top-level blocks (sets, maps, chains), each as its sorted lines and
/// set elements: what `nft list` prints in creation order compares equal whatever the order.
fn normalized(listing: &str) -> BTreeSet<Vec<String>> {
    let mut blocks = BTreeSet::new();
    let mut block: Vec<String> = Vec::new();
    for line in listing.lines() {
        if line.starts_with("\t}") {
            block.sort();
            blocks.insert(std::mem::take(&mut block));
            continue;
        }
        let line = line.trim();
        let line = line.strip_prefix("elements = {").unwrap_or(line);
        for item in line.trim_end_matches('}').split(',') {
            let item = item.trim();
            if !item.is_empty() {
                block.push(item.to_owned());
            }
        }
    }
    blocks
}

fn table_handle(node: &Netns) -> Result<String> {
    let listed = node.exec("nft", &["-a", "list", "tables"])?;
    listed
        .lines()
        .find(|l| l.starts_with("table inet capstan"))
        .map(str::to_owned)
        .context("no table inet capstan")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_one_vip_change_updates_only_that_vip() -> Result<()> {
    let mut t = Topo::new()?;
    t.kernel.start().await?;
    let backends = t.backends().await?;
    let (a, b) = (vip([11, 0, 0, 10], 80), vip([11, 0, 0, 11], 80));
    let first = t
        .kernel
        .apply(&table(&[(a, &backends), (b, &backends[..1])]))
        .await?;
    ensure!(first.update == Update::Full, "first apply: {first:?}");
    // VIPs share one chain per backend count: a (3 backends) jumps to pick4-tcp-3, b (1) to
    // pick4-tcp-1; the backends are map elements.
    let (chain_a, chain_b) = ("pick4-tcp-3", "pick4-tcp-1");
    let (table_before, b_before) = (table_handle(&t.node)?, handles(&t.node, chain_b)?);
    ensure!(b_before.len() == 1, "chain b: {b_before:?}");
    ensure!(handles(&t.node, chain_a)?.len() == 1);
    let mut held = dial(&t.ctr, b, None).await??;

    // Backend 3 leaves VIP a: only a's elements change, the table and b's chain stay.
    let second = t
        .kernel
        .apply(&table(&[(a, &backends[..2]), (b, &backends[..1])]))
        .await?;
    ensure!(second.update == Update::Incremental, "{second:?}");
    ensure!(
        second.script_bytes < first.script_bytes,
        "the update ({} bytes) is not smaller than the whole table ({} bytes)",
        second.script_bytes,
        first.script_bytes
    );
    ensure!(
        table_handle(&t.node)? == table_before,
        "the table was recreated"
    );
    ensure!(
        handles(&t.node, chain_b)? == b_before,
        "VIP b's rule was rewritten"
    );
    ensure!(
        handles(&t.node, chain_a).is_err(),
        "no VIP has 3 backends, yet {chain_a} is still there"
    );

    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        seen.insert(dial(&t.ctr, a, None).await??.id);
    }
    ensure!(seen == BTreeSet::from([1, 2]), "VIP a went to {seen:?}");
    held.echo("b untouched\n")?;

    // A VIP appears, one goes to zero backends, one goes away; the same table again is a
    // no-op; the result equals a from-scratch render of the final table.
    let c = vip([11, 0, 0, 12], 80);
    let last = table(&[(b, &[]), (c, &backends[2..])]);
    ensure!(t.kernel.apply(&last).await?.update == Update::Incremental);
    ensure!(t.kernel.apply(&last).await?.update == Update::Unchanged);
    ensure!(dial(&t.ctr, c, None).await??.id == 3);
    match dial(&t.ctr, b, None).await? {
        Ok(c) => bail!("VIP b without backends reached backend {}", c.id),
        Err(e) => ensure!(e.kind() == ErrorKind::ConnectionRefused, "b: {e}"),
    }
    ensure!(
        dial(&t.ctr, a, None).await?.is_err(),
        "removed VIP a still answers"
    );
    ensure!(
        handles(&t.node, "pick4-tcp-2").is_err(),
        "the chain of removed VIP a is still there"
    );
    let incremental = t.kernel.nft().list().await?;
    let mut fresh = plane_for(&t.node)?;
    fresh.apply(&last).await?;
    let full = fresh.nft().list().await?;
    ensure!(
        normalized(&full) == normalized(&incremental),
        "incremental updates left a different ruleset than a full apply:\n{incremental}\nvs\n{full}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_ipv6_vip_spreads_keeps_the_client_address_and_drains() -> Result<()> {
    let mut t = Topo::new()?;
    t.kernel.start().await?;
    let backends = t.backends6().await?;
    // An IP VIP as the label `[fd01:c::10]:80` gives it.
    let v: SocketAddr = "[fd01:c::10]:80".parse()?;
    t.kernel.apply(&table(&[(v, &backends)])).await?;
    let ctr6: IpAddr = "fd00:250::2".parse()?;
    let mut seen = BTreeMap::new();
    let mut held = None;
    for _ in 0..60 {
        let c = dial(&t.ctr, v, None)
            .await?
            .context("connect to the IPv6 VIP from the container")?;
        ensure!(c.peer.ip() == ctr6, "backend {} saw {}", c.id, c.peer);
        *seen.entry(c.id).or_insert(0u32) += 1;
        if c.id == 3 {
            held = Some(c);
        }
    }
    ensure!(
        seen.keys().copied().collect::<Vec<_>>() == [1, 2, 3],
        "IPv6 connections did not spread over the 3 backends: {seen:?}"
    );
    // From the node itself (the kernel picks the VIP as source: masqueraded).
    let c = dial(&t.node, v, None).await??;
    ensure!(
        c.peer.ip() != v.ip(),
        "host client seen with the VIP as its source"
    );
    let mut held = held.context("backend 3 never chosen")?;
    t.kernel.apply(&table(&[(v, &backends[..2])])).await?;
    let mut after = BTreeSet::new();
    for _ in 0..40 {
        after.insert(dial(&t.ctr, v, None).await??.id);
    }
    ensure!(
        after == BTreeSet::from([1, 2]),
        "after removing backend 3: {after:?}"
    );
    held.echo("v6 drains\n")?;
    // An unprogrammed address of the IPv6 range is refused from the container and fails
    // locally on the node.
    let other: SocketAddr = "[fd01:c::99]:80".parse()?;
    match dial(&t.ctr, other, None).await? {
        Ok(_) => bail!("the container reached an unprogrammed IPv6 VIP"),
        Err(e) => ensure!(e.kind() == ErrorKind::ConnectionRefused, "container: {e}"),
    }
    match dial(&t.node, other, None).await? {
        Ok(_) => bail!("the node reached an unprogrammed IPv6 VIP"),
        Err(e) => ensure!(
            e.kind() != ErrorKind::TimedOut,
            "node: a timeout, not a local failure"
        ),
    }
    Ok(())
}

/// A Marathon task on host networking with the label `VIP_0=/web:80` on port 8080 of agent
/// 10.251.0.<id>, as the master reports it.
fn web_task(id: u8, healthy: Option<bool>, state: TaskState) -> VipTask {
    VipTask {
        framework: "marathon".into(),
        state,
        has_health_check: true,
        healthy,
        agent_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 251, 0, id))),
        ports: vec![8080],
        discovery_ports: vec![DiscoveredPort {
            number: 8080,
            protocol: "tcp".into(),
            labels: vec![("VIP_0".into(), "/web:80".into())],
        }],
        ..VipTask::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_unhealthy_or_killing_task_gets_no_new_connection() -> Result<()> {
    let mut t = Topo::new()?;
    t.kernel.start().await?;
    t.backends().await?;
    let cfg = VipConfig {
        ipv4: AddrRange::parse("11.0.0.0/8").context("range")?,
        ipv6: None,
    };
    let healthy = Some(true);
    let mut tasks = vec![
        web_task(1, healthy, TaskState::Running),
        web_task(2, healthy, TaskState::Running),
        web_task(3, healthy, TaskState::Running),
    ];
    let vip_table = VipTable::build(&tasks, &cfg);
    let listeners = vip_table.listeners();
    let (&(v, _), _) = listeners.iter().next().context("no VIP for /web:80")?;
    t.kernel.apply(&listeners).await?;
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        seen.insert(dial(&t.ctr, v, None).await??.id);
    }
    ensure!(seen == BTreeSet::from([1, 2, 3]), "{v}: {seen:?}");

    // Task 2 fails its health check, task 3 is being killed: only task 1 takes new ones.
    tasks[1].healthy = Some(false);
    tasks[2].state = TaskState::Killing;
    let listeners = VipTable::build(&tasks, &cfg).listeners();
    ensure!(
        listeners.keys().any(|(a, _)| *a == v),
        "the VIP moved: {listeners:?}"
    );
    t.kernel.apply(&listeners).await?;
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        seen.insert(dial(&t.ctr, v, None).await??.id);
    }
    ensure!(
        seen == BTreeSet::from([1]),
        "new connections went to {seen:?}"
    );

    // Task 1 fails too: the VIP has tasks but no serving one, so it refuses at once.
    tasks[0].healthy = Some(false);
    t.kernel
        .apply(&VipTable::build(&tasks, &cfg).listeners())
        .await?;
    match dial(&t.ctr, v, None).await? {
        Ok(c) => bail!("a VIP without a healthy task reached backend {}", c.id),
        Err(e) => ensure!(e.kind() == ErrorKind::ConnectionRefused, "{e}"),
    }
    Ok(())
}

/// A `Server` running on a thread of its own inside `ns` (its `nft` and `ip` commands, its
/// sockets and the fake master all live there), stopped and joined on drop.
struct NsDaemon {
    table: tokio::sync::watch::Receiver<std::sync::Arc<VipTable>>,
    metrics: std::sync::Arc<capstan_l4lb::metrics::Metrics>,
    master: std::sync::Arc<super::Master>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Started = (
    tokio::sync::watch::Receiver<std::sync::Arc<VipTable>>,
    std::sync::Arc<capstan_l4lb::metrics::Metrics>,
    std::sync::Arc<super::Master>,
);

impl NsDaemon {
    fn start(ns: &Netns, state: serde_json::Value) -> Result<NsDaemon> {
        let path = format!("/var/run/netns/{}", ns.name);
        let stop = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel::<Result<Started>>();
        let token = stop.clone();
        let thread = std::thread::spawn(move || {
            let run = || -> Result<()> {
                let f = std::fs::File::open(&path).context("open the namespace")?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let started = async {
                        let (master, m) = super::fake_master(state).await?;
                        let config = Config {
                            masters: vec![master.to_string()],
                            http_listen: "127.0.0.1:0".parse()?,
                            data_plane: DataPlane::Nftables,
                            named_ipv4: "11.0.0.0/8".into(),
                            named_ipv6: String::new(),
                            master_timeout: Duration::from_secs(2),
                            reconnect_backoff_max: Duration::from_millis(200),
                            ..Config::default()
                        };
                        let server = Server::start(config, token.clone()).await?;
                        Ok::<_, anyhow::Error>((server, m))
                    }
                    .await;
                    match started {
                        Ok((server, m)) => {
                            let _ = tx.send(Ok((server.table(), server.metrics(), m)));
                            token.cancelled().await;
                            server.shutdown().await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
                Ok(())
            };
            if let Err(e) = run() {
                let _ = tx.send(Err(e));
            }
        });
        let (table, metrics, master) = rx.recv().context("the daemon thread died")??;
        Ok(NsDaemon {
            table,
            metrics,
            master,
            stop,
            thread: Some(thread),
        })
    }

    fn send(&self, event: &serde_json::Value) {
        if let Ok(subs) = self.master.subscribers.lock() {
            for s in subs.iter() {
                let _ = s.send(super::frame(event));
            }
        }
    }

    /// Waits until the kernel holds a table whose only VIP has `n` backends; its address.
    async fn applied_with(&mut self, n: usize, after_updates: u64) -> Result<SocketAddr> {
        let (table, metrics) = (self.table.clone(), self.metrics.clone());
        wait_until(
            "the table is in the kernel",
            CONNECT,
            async || -> Result<SocketAddr> {
                let t = table.borrow().clone();
                let l = t.listeners();
                let ((addr, _), backends) = l.iter().next().context("no VIP yet")?;
                ensure!(backends.len() == n, "{} backends", backends.len());
                // The plane applies after the table is published.
                ensure!(metrics.rule_updates() > after_updates, "not applied yet");
                Ok(*addr)
            },
        )
        .await
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The fake master's state: tasks `web.<i>` of `marathon` on agents `S<i>` = 10.251.0.<i>,
/// each with `VIP_0=/web:80` on host port 8080.
fn three_agents_state() -> serde_json::Value {
    let agents: Vec<serde_json::Value> = (1..=3)
        .map(|i| {
            serde_json::json!({"agent_info": {"hostname": format!("10.251.0.{i}"),
                "id": {"value": format!("S{i}")}}, "active": true, "version": "1.11.0",
                "pid": format!("slave(1)@10.251.0.{i}:5051")})
        })
        .collect();
    let tasks: Vec<serde_json::Value> = (1..=3)
        .map(|i| {
            let mut t = super::vip_task(&format!("web.{i}"), 8080, Some(true));
            t["agent_id"]["value"] = serde_json::json!(format!("S{i}"));
            t["discovery"]["ports"]["ports"][0]["labels"]["labels"][0]["value"] =
                serde_json::json!("/web:80");
            t
        })
        .collect();
    serde_json::json!({
        "get_agents": {"agents": agents},
        "get_frameworks": {"frameworks": [{"framework_info": {"user": "root", "name": "marathon",
            "id": {"value": "F0"}}, "active": true, "connected": true, "recovered": false}]},
        "get_tasks": {"tasks": tasks}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_daemon_follows_the_master_into_the_kernel() -> Result<()> {
    let t = Topo::new()?;
    t.backends().await?;
    let mut d = NsDaemon::start(&t.node, three_agents_state())?;
    let v = d.applied_with(3, 0).await?;
    ensure!(
        v.port() == 80 && v.ip().to_string().starts_with("11."),
        "VIP at {v}"
    );
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        seen.insert(dial(&t.ctr, v, None).await??.id);
    }
    ensure!(seen == BTreeSet::from([1, 2, 3]), "{v}: {seen:?}");

    // Task 3 fails its health check: one event, and the kernel stops sending it new ones.
    let updates = d.metrics.rule_updates();
    d.send(
        &serde_json::json!({"type": "TASK_UPDATED", "task_updated": {
        "framework_id": {"value": "F0"}, "state": "TASK_RUNNING",
        "status": {"task_id": {"value": "web.3"}, "state": "TASK_RUNNING",
            "timestamp": 2.0, "healthy": false}}}),
    );
    ensure!(d.applied_with(2, updates).await? == v, "the VIP moved");
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        seen.insert(dial(&t.ctr, v, None).await??.id);
    }
    ensure!(
        seen == BTreeSet::from([1, 2]),
        "after task 3 turned unhealthy: {seen:?}"
    );
    let listed = t.node.exec("nft", &["list", "table", "inet", "capstan"])?;
    ensure!(!listed.contains("10.251.0.3"), "{listed}");

    // Stopped, the rules stay (connections keep working while l4lb restarts); a new l4lb
    // replaces them once it has the master's state.
    drop(d);
    ensure!(
        dial(&t.ctr, v, None).await?.is_ok(),
        "rules gone while l4lb was down"
    );
    let mut d = NsDaemon::start(&t.node, three_agents_state())?;
    ensure!(d.applied_with(3, 0).await? == v);
    let listed = t.node.exec("nft", &["list", "table", "inet", "capstan"])?;
    ensure!(listed.contains("10.251.0.3"), "{listed}");
    Ok(())
}

/// A pseudo-random table (a fixed LCG, so every run is the same sequence): up to 6 IPv4 and 3
/// IPv6 VIPs on TCP 80 or UDP 53, each with 0 to 4 backends of its family.
fn random_table(seed: &mut u64) -> Listeners {
    let mut next = |n: u64| {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*seed >> 33) % n
    };
    let mut t = Listeners::new();
    for i in 0..9u8 {
        if next(3) == 0 {
            continue;
        }
        let v4 = i < 6;
        let ip = if v4 {
            IpAddr::V4(Ipv4Addr::new(11, 0, 0, 20 + i))
        } else {
            IpAddr::V6(std::net::Ipv6Addr::new(
                0xfd01,
                0xc,
                0,
                0,
                0,
                0,
                0,
                u16::from(i),
            ))
        };
        let (port, proto) = if next(2) == 0 {
            (80, Protocol::Tcp)
        } else {
            (53, Protocol::Udp)
        };
        let mut backends = BTreeSet::new();
        for _ in 0..next(5) {
            let n = u8::try_from(next(5)).unwrap_or(0) + 1;
            let ip = if v4 {
                IpAddr::V4(Ipv4Addr::new(10, 251, 0, n))
            } else {
                IpAddr::V6(std::net::Ipv6Addr::new(
                    0xfd00,
                    0x251,
                    0,
                    0,
                    0,
                    0,
                    0,
                    u16::from(n),
                ))
            };
            let port = 8080 + u16::try_from(next(2)).unwrap_or(0);
            backends.insert(Backend { ip, port });
        }
        t.insert((SocketAddr::new(ip, port), proto), backends);
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_many_random_changes_stay_incremental_and_equal_a_full_apply() -> Result<()> {
    which_nft()?;
    let node = Netns::create()?;
    let mut plane = plane_for(&node)?;
    plane.start().await?;
    let mut seed = 14;
    let first = plane.apply(&random_table(&mut seed)).await?;
    ensure!(first.update == Update::Full, "{first:?}");
    let mut last = Listeners::new();
    for step in 0..40 {
        last = random_table(&mut seed);
        let applied = plane.apply(&last).await?;
        // Unchanged only when the draw repeated the table.
        ensure!(
            applied.update != Update::Full,
            "step {step}: the difference failed and fell back to a full apply ({applied:?}) for {last:?}"
        );
    }
    let incremental = plane.nft().list().await?;
    let mut fresh = plane_for(&node)?;
    fresh.apply(&last).await?;
    let full = fresh.nft().list().await?;
    ensure!(
        normalized(&full) == normalized(&incremental),
        "incremental updates left a different ruleset than a full apply:\n{incremental}\nvs\n{full}"
    );
    Ok(())
}
