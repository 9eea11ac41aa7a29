//! The VIP addresses made local on a device of our own (`capstan-vip0`), and a `blackhole`
//! route for every guarded VIP range, so that a packet to a VIP is handled on this machine and
//! never routed out, programmed or not (reference l4lb §1.7: DC/OS's `minuteman` device).
//!
//! Key decisions:
//! - The `ip` command (iproute2, on every Linux machine) rather than a netlink crate: no new
//!   dependency, and its `-batch -` mode changes thousands of addresses in one process.
//! - The device is a `dummy`; kernels built without the dummy driver (this CI kernel) get a
//!   bridge with no ports instead, which behaves the same for this purpose: addresses on it are
//!   local, and nothing it would send goes anywhere. An existing device of another kind with
//!   our name is refused, never reused.
//! - A host process connecting to a VIP needs the address local (its route lookup happens
//!   before the `output` hook's DNAT); a connection to an address of the range that is not a
//!   VIP hits the blackhole route and fails at once (`EINVAL`), and a packet forwarded from a
//!   container is rejected by the nftables guard or dropped by the same route.
//! - Our routes carry protocol [`ROUTE_PROTO`], so a restart finds and removes the ones a
//!   changed configuration no longer wants, and touches no other route.
//! - IPv6 addresses are added with `nodad`: usable at once, no duplicate-address detection.
//!
//! Every command can run in a named network namespace ([`Namespace::Named`], through
//! `ip netns exec`): tests program only namespaces they created.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::{debug, info, warn};

use crate::nft::Guard;

/// The device VIP addresses live on.
pub const DEFAULT_DEVICE: &str = "capstan-vip0";
/// The route protocol number marking our blackhole routes (`ip route ... proto 241`).
pub const ROUTE_PROTO: u8 = 241;

/// Where a command runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Namespace {
    /// This process's network namespace.
    #[default]
    Current,
    /// A namespace under `/var/run/netns` (`ip netns add <name>`).
    Named(String),
}

/// Runs `program args` in `ns`, feeding it `stdin`, and collects its output.
pub async fn run(
    ns: &Namespace,
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> std::io::Result<Output> {
    let mut cmd = match ns {
        Namespace::Current => Command::new(program),
        Namespace::Named(name) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", name, program]);
            c
        }
    };
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).await?;
        pipe.shutdown().await?;
        drop(pipe);
    }
    child.wait_with_output().await
}

/// Failures of programming devices, addresses and routes.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("invalid device name {0:?} (1 to 15 letters, digits, '-', '_' or '.')")]
    InvalidName(String),
    #[error(
        "device {name} exists and is a {kind:?}, not a dummy or bridge of ours; refusing to use it"
    )]
    Foreign { name: String, kind: String },
    #[error("cannot run ip")]
    Spawn(#[source] std::io::Error),
    #[error("`ip {args}` failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("cannot parse the output of `ip {args}`: {detail}")]
    Parse { args: String, detail: String },
}

/// What kind of device holds the VIP addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Dummy,
    /// A bridge without ports, where the kernel has no dummy driver.
    Bridge,
}

/// The VIP device of one namespace.
#[derive(Debug, Clone)]
pub struct VipDevice {
    name: String,
    ns: Namespace,
}

impl VipDevice {
    pub fn new(name: &str) -> Result<VipDevice, NetdevError> {
        let ok = !name.is_empty()
            && name.len() <= 15
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(NetdevError::InvalidName(name.to_string()));
        }
        Ok(VipDevice {
            name: name.to_string(),
            ns: Namespace::Current,
        })
    }

    pub fn in_namespace(mut self, ns: Namespace) -> VipDevice {
        self.ns = ns;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn ip(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, NetdevError> {
        let out = run(&self.ns, "ip", args, stdin)
            .await
            .map_err(NetdevError::Spawn)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NetdevError::Failed {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    async fn json(&self, args: &[&str]) -> Result<serde_json::Value, NetdevError> {
        let text = self.ip(args, None).await?;
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Array(Vec::new()));
        }
        serde_json::from_str(&text).map_err(|e| NetdevError::Parse {
            args: args.join(" "),
            detail: e.to_string(),
        })
    }

    /// The kind of the existing device, `None` if there is none.
    async fn existing_kind(&self) -> Result<Option<String>, NetdevError> {
        match self
            .json(&["-j", "-d", "link", "show", "dev", &self.name])
            .await
        {
            Ok(v) => Ok(Some(
                v.get(0)
                    .and_then(|l| l.get("linkinfo"))
                    .and_then(|i| i.get("info_kind"))
                    .and_then(|k| k.as_str())
                    .unwrap_or("")
                    .to_string(),
            )),
            Err(NetdevError::Failed { stderr, .. }) if stderr.contains("does not exist") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the device if needed and sets it up.
    pub async fn ensure(&self) -> Result<DeviceKind, NetdevError> {
        let kind = match self.existing_kind().await?.as_deref() {
            Some("dummy") => DeviceKind::Dummy,
            Some("bridge") => DeviceKind::Bridge,
            Some(other) => {
                return Err(NetdevError::Foreign {
                    name: self.name.clone(),
                    kind: other.to_string(),
                });
            }
            None => {
                match self
                    .ip(&["link", "add", &self.name, "type", "dummy"], None)
                    .await
                {
                    Ok(_) => DeviceKind::Dummy,
                    Err(NetdevError::Failed { stderr, .. })
                        if stderr.contains("Unknown device type") =>
                    {
                        warn!(device = %self.name, "The kernel has no dummy driver; using a bridge without ports");
                        self.ip(&["link", "add", &self.name, "type", "bridge"], None)
                            .await?;
                        DeviceKind::Bridge
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        self.ip(&["link", "set", &self.name, "up"], None).await?;
        info!(device = %self.name, ?kind, "VIP device ready");
        Ok(kind)
    }

    /// The addresses on the device (the kernel's own IPv6 link-local one excluded).
    pub async fn addresses(&self) -> Result<BTreeSet<IpAddr>, NetdevError> {
        let v = self
            .json(&["-j", "addr", "show", "dev", &self.name])
            .await?;
        let mut out = BTreeSet::new();
        let infos = v
            .get(0)
            .and_then(|l| l.get("addr_info"))
            .and_then(|a| a.as_array());
        for info in infos.into_iter().flatten() {
            let Some(ip) = info
                .get("local")
                .and_then(|l| l.as_str())
                .and_then(|l| l.parse::<IpAddr>().ok())
            else {
                continue;
            };
            if let IpAddr::V6(a) = ip
                && a.segments()[0] & 0xffc0 == 0xfe80
            {
                continue;
            }
            out.insert(ip);
        }
        Ok(out)
    }

    /// Adds `add` and removes `remove` (host addresses: /32, /128), in one `ip -batch`.
    pub async fn change_addresses(
        &self,
        add: &BTreeSet<IpAddr>,
        remove: &BTreeSet<IpAddr>,
    ) -> Result<(), NetdevError> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let mut batch = String::new();
        for ip in remove {
            batch.push_str(&format!("addr del {} dev {}\n", host(*ip), self.name));
        }
        for ip in add {
            let extra = if ip.is_ipv6() { " nodad" } else { "" };
            batch.push_str(&format!(
                "addr replace {} dev {}{extra}\n",
                host(*ip),
                self.name
            ));
        }
        self.ip(&["-batch", "-"], Some(batch.as_bytes())).await?;
        debug!(device = %self.name, added = add.len(), removed = remove.len(), "VIP addresses changed");
        Ok(())
    }

    /// Makes the device hold exactly `want`.
    pub async fn sync_addresses(&self, want: &BTreeSet<IpAddr>) -> Result<(), NetdevError> {
        let have = self.addresses().await?;
        let add = want.difference(&have).copied().collect();
        let remove = have.difference(want).copied().collect();
        self.change_addresses(&add, &remove).await
    }

    /// Our blackhole routes now in the main table, as `prefix/len`.
    pub async fn blackholes(&self) -> Result<BTreeSet<String>, NetdevError> {
        let proto = ROUTE_PROTO.to_string();
        let mut out = BTreeSet::new();
        for family in ["-4", "-6"] {
            let v = self
                .json(&[
                    family,
                    "-j",
                    "route",
                    "show",
                    "table",
                    "main",
                    "proto",
                    &proto,
                    "type",
                    "blackhole",
                ])
                .await?;
            for r in v.as_array().into_iter().flatten() {
                if let Some(dst) = r.get("dst").and_then(|d| d.as_str()) {
                    // `ip` prints a host route without its length.
                    out.insert(if dst.contains('/') {
                        dst.to_string()
                    } else if family == "-4" {
                        format!("{dst}/32")
                    } else {
                        format!("{dst}/128")
                    });
                }
            }
        }
        Ok(out)
    }

    /// Makes our blackhole routes exactly those covering `guard`'s ranges.
    pub async fn set_blackholes(&self, guard: &Guard) -> Result<(), NetdevError> {
        let want: BTreeSet<String> = guard_prefixes(guard).into_iter().collect();
        let have = self.blackholes().await?;
        let proto = ROUTE_PROTO;
        let mut batch = String::new();
        for p in have.difference(&want) {
            batch.push_str(&format!(
                "route del blackhole {p} table main proto {proto}\n"
            ));
        }
        for p in &want {
            batch.push_str(&format!(
                "route replace blackhole {p} table main proto {proto}\n"
            ));
        }
        if !batch.is_empty() {
            self.ip(&["-batch", "-"], Some(batch.as_bytes())).await?;
        }
        info!(
            routes = want.len(),
            "Blackhole routes for the VIP ranges in place"
        );
        Ok(())
    }

    /// Deletes the device (and so its addresses) and our routes.
    pub async fn remove(&self) -> Result<(), NetdevError> {
        if self.existing_kind().await?.is_some() {
            self.ip(&["link", "del", &self.name], None).await?;
        }
        self.set_blackholes(&Guard::default()).await
    }
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// Every guarded range as the fewest CIDR prefixes, `addr/len`.
pub fn guard_prefixes(guard: &Guard) -> Vec<String> {
    let mut out = Vec::new();
    for r in &guard.ipv4 {
        for (a, len) in range_prefixes(
            u128::from(u32::from(r.first)),
            u128::from(u32::from(r.last)),
            32,
        ) {
            out.push(format!("{}/{len}", Ipv4Addr::from(a as u32)));
        }
    }
    for r in &guard.ipv6 {
        for (a, len) in range_prefixes(u128::from(r.first), u128::from(r.last), 128) {
            out.push(format!("{}/{len}", Ipv6Addr::from(a)));
        }
    }
    out
}

/// The fewest prefixes `(start, length)` covering `[first, last]` exactly, in an address space
/// of `bits` bits; empty if `first > last`.
pub fn range_prefixes(first: u128, last: u128, bits: u32) -> Vec<(u128, u32)> {
    let mut out = Vec::new();
    let mut start = first;
    while start <= last {
        // The largest aligned block at `start` that stays within `last`.
        let mut size_bits = if start == 0 {
            bits
        } else {
            start.trailing_zeros().min(bits)
        };
        while size_bits > 0 && block_end(start, size_bits) > last {
            size_bits -= 1;
        }
        out.push((start, bits - size_bits));
        let end = block_end(start, size_bits);
        match end.checked_add(1) {
            Some(next) if end < last => start = next,
            _ => break,
        }
    }
    out
}

/// The last address of the block of `2^size_bits` addresses starting at `start`.
fn block_end(start: u128, size_bits: u32) -> u128 {
    if size_bits >= 128 {
        u128::MAX
    } else {
        start.saturating_add((1u128 << size_bits) - 1)
    }
}

#[cfg(test)]
mod tests {
    use capstan_types::vip::AddrRange;

    use super::*;

    #[test]
    fn prefixes_of_ranges() {
        let v4 = |a: [u8; 4]| u128::from(u32::from(Ipv4Addr::from(a)));
        assert_eq!(
            range_prefixes(v4([11, 0, 0, 0]), v4([11, 255, 255, 255]), 32),
            vec![(v4([11, 0, 0, 0]), 8)]
        );
        // DC/OS's default stops one short of the end: 11.0.0.0-11.255.255.254.
        let p = range_prefixes(v4([11, 0, 0, 0]), v4([11, 255, 255, 254]), 32);
        assert_eq!(p.len(), 24);
        assert_eq!(p[0], (v4([11, 0, 0, 0]), 9));
        assert_eq!(p[23], (v4([11, 255, 255, 254]), 32));
        assert_eq!(range_prefixes(5, 5, 32), vec![(5, 32)]);
        assert_eq!(range_prefixes(6, 5, 32), vec![]);
        assert_eq!(range_prefixes(0, u128::from(u32::MAX), 32), vec![(0, 0)]);
        assert_eq!(range_prefixes(0, u128::MAX, 128), vec![(0, 0)]);
        assert_eq!(
            range_prefixes(1, 6, 32),
            vec![(1, 32), (2, 31), (4, 31), (6, 32)]
        );
    }

    #[test]
    fn prefixes_cover_exactly() {
        for (first, last) in [(3u128, 200u128), (0, 255), (17, 17), (1, 1000), (256, 511)] {
            let p = range_prefixes(first, last, 32);
            let mut covered = Vec::new();
            for (s, len) in p {
                let n = 1u128 << (32 - len);
                assert_eq!(s % n, 0, "aligned");
                covered.extend(s..s + n);
            }
            assert_eq!(covered, (first..=last).collect::<Vec<_>>());
        }
    }

    #[test]
    fn guard_prefix_text() {
        let g = Guard {
            ipv4: vec![AddrRange::parse("11.0.0.0/8").expect("range")],
            ipv6: vec![AddrRange::parse("fd01:c::/64").expect("range")],
        };
        assert_eq!(guard_prefixes(&g), vec!["11.0.0.0/8", "fd01:c::/64"]);
    }

    #[test]
    fn device_names() {
        assert!(VipDevice::new(DEFAULT_DEVICE).is_ok());
        assert!(VipDevice::new("").is_err());
        assert!(VipDevice::new("way-too-long-name0").is_err());
        assert!(VipDevice::new("bad name").is_err());
    }
}
