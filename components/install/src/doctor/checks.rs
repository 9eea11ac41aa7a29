//! The checks: pure functions from [`Facts`](super::Facts) parts to a [`Check`].
//!
//! Each message says what was found; each warning or failure says how to fix it, as commands
//! for a Debian or Ubuntu machine where there is one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::procnet::Proto;
use super::{
    CgroupFacts, Check, ClockFact, DiskFact, DockerErrorKind, DockerFacts, HeldSocket,
    HostnameFacts, NfTablesKernel, NftFacts, Observed, PortFacts, Status, TimeSyncFacts,
};
use crate::Role;

/// The oldest kernel Capstan supports: 4.15 brought the cgroup v2 CPU controller, which the
/// agent needs to enforce task CPU shares on cgroup v2 hosts (Ubuntu 18.04 ships 4.15,
/// Debian 10 4.19).
pub const MIN_KERNEL: (u32, u32) = (4, 15);
/// The oldest Docker engine an agent accepts (Debian 12's `docker.io` is 20.10.24).
pub const MIN_DOCKER: (u32, u32) = (20, 10);
/// Clock skew to a master: above the first a warning, above the second a failure (coord
/// leases, certificates and task timestamps assume clocks within a second or two).
pub const SKEW_WARN_MS: i64 = 500;
pub const SKEW_FAIL_MS: i64 = 2_000;
/// Free disk below the first fails, below the second warns.
pub const DISK_FAIL_BYTES: u64 = 2 << 30;
pub const DISK_WARN_BYTES: u64 = 10 << 30;

/// `major.minor` at the start of a version string: `6.1.0-18-amd64` → (6, 1),
/// `20.10.24+dfsg1` → (20, 10), `v28.0.1` → (28, 0).
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let version = version.trim().trim_start_matches('v');
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

pub fn kernel(release: &Observed<String>) -> Check {
    const ID: &str = "kernel";
    let release = match release {
        Ok(r) => r.trim(),
        Err(e) => {
            return Check::warn(
                ID,
                format!("cannot read the kernel release: {e}"),
                "check that /proc is mounted; Capstan needs Linux 4.15 or newer",
            );
        }
    };
    let (want_major, want_minor) = MIN_KERNEL;
    match major_minor(release) {
        Some(v) if v >= MIN_KERNEL => Check::pass(
            ID,
            format!("Linux {release} ({want_major}.{want_minor} or newer is needed)"),
        ),
        Some(_) => Check::fail(
            ID,
            format!(
                "Linux {release} is older than {want_major}.{want_minor}: it lacks the cgroup v2 \
                 CPU controller the agent uses to enforce task CPU shares"
            ),
            "upgrade the kernel (Debian 10 and Ubuntu 18.04 or later ship 4.15 or newer) and reboot",
        ),
        None => Check::warn(
            ID,
            format!("cannot tell the version of kernel {release:?}"),
            "check `uname -r`: Capstan needs Linux 4.15 or newer",
        ),
    }
}

/// A cgroup filesystem in `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: String,
    /// `None` for cgroup2; the controllers in its options for a v1 hierarchy.
    pub v1_controllers: Option<Vec<String>>,
}

/// The cgroup mounts in `/proc/self/mountinfo`: `36 25 0:31 / /sys/fs/cgroup/memory rw,... -
/// cgroup cgroup rw,memory`; the fields after ` - ` are the type, the source and the
/// filesystem's options (a v1 hierarchy's controllers are among them).
pub fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let mount_point = mount.split_whitespace().nth(4)?.to_owned();
            let mut fs = fs.split_whitespace();
            let v1_controllers = match fs.next()? {
                "cgroup2" => None,
                "cgroup" => Some(
                    fs.nth(1)
                        .unwrap_or("")
                        .split(',')
                        .filter(|o| !o.contains('=') && !matches!(*o, "rw" | "ro"))
                        .map(str::to_owned)
                        .collect(),
                ),
                _ => return None,
            };
            Some(CgroupMount {
                mount_point,
                v1_controllers,
            })
        })
        .collect()
}

pub fn cgroups(facts: &CgroupFacts) -> Check {
    const ID: &str = "cgroups";
    let mountinfo = match &facts.mountinfo {
        Ok(m) => m,
        Err(e) => {
            return Check::warn(
                ID,
                format!("cannot read the mounts: {e}"),
                "check that /proc is mounted",
            );
        }
    };
    let mounts = cgroup_mounts(mountinfo);
    let v2 = mounts.iter().find(|m| m.v1_controllers.is_none());
    let v1: Vec<&String> = mounts
        .iter()
        .filter_map(|m| m.v1_controllers.as_ref())
        .flatten()
        .collect();
    let mut available: Vec<&str> = v1.iter().map(|c| c.as_str()).collect();
    if let Some(Ok(controllers)) = &facts.v2_controllers {
        available.extend(controllers.split_whitespace());
    }
    let layout = match (v2, v1.is_empty()) {
        (None, true) => {
            return Check::fail(
                ID,
                "no cgroup filesystem is mounted",
                "mount cgroup2 on /sys/fs/cgroup (`mount -t cgroup2 none /sys/fs/cgroup`; \
                 systemd does it at boot)",
            );
        }
        (Some(m), true) => format!("cgroup v2 at {}", m.mount_point),
        (Some(m), false) => format!("cgroup v1 (hybrid, cgroup2 at {})", m.mount_point),
        (None, false) => "cgroup v1".to_owned(),
    };
    let missing: Vec<&str> = ["cpu", "memory"]
        .into_iter()
        .filter(|c| !available.contains(c))
        .collect();
    if missing.is_empty() {
        return Check::pass(ID, format!("{layout} with the cpu and memory controllers"));
    }
    let unreadable = match &facts.v2_controllers {
        Some(Err(e)) => format!(" (cannot read cgroup.controllers: {e})"),
        _ => String::new(),
    };
    let mut fix = String::new();
    if missing.contains(&"memory") {
        fix.push_str(
            "enable the memory controller: add `cgroup_enable=memory cgroup_memory=1` to the \
             kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then `update-grub`; \
             /boot/firmware/cmdline.txt on a Raspberry Pi) and reboot",
        );
    } else {
        fix.push_str("enable the cpu controller in the kernel (CONFIG_CGROUP_SCHED) and reboot");
    }
    fix.push_str("; inside a container, have the host delegate the controllers to it");
    Check::fail(
        ID,
        format!(
            "{layout} without the {} controller{}{unreadable}: the agent limits each task's \
             CPU and memory with them",
            missing.join(" and "),
            if missing.len() > 1 { "s" } else { "" },
        ),
        fix,
    )
}

pub fn nftables(facts: &NftFacts) -> Check {
    const ID: &str = "nftables";
    let nft = match &facts.nft {
        Some(Ok(v)) => Some(v.trim().to_owned()),
        _ => None,
    };
    let kernel = match facts.kernel {
        NfTablesKernel::Loaded => Some("nf_tables is loaded"),
        NfTablesKernel::Module => Some("the nf_tables module is installed"),
        NfTablesKernel::Absent | NfTablesKernel::Unknown => None,
    };
    match (nft, kernel, facts.kernel) {
        (Some(nft), Some(kernel), _) => Check::pass(ID, format!("{nft}; {kernel}")),
        (Some(nft), None, NfTablesKernel::Unknown) => {
            Check::pass(ID, format!("{nft} (kernel support not verified)"))
        }
        (None, Some(kernel), _) => Check::warn(
            ID,
            format!("{kernel}, but the nft tool is missing"),
            "apt-get install nftables",
        ),
        (Some(nft), None, _) => Check::warn(
            ID,
            format!("{nft} is installed, but this kernel has no nf_tables"),
            "use a kernel built with CONFIG_NF_TABLES (every Debian and Ubuntu kernel is); \
             Capstan's load balancer will need it",
        ),
        (None, None, _) => Check::warn(
            ID,
            "no nftables: neither the nft tool nor the kernel's nf_tables module was found",
            "apt-get install nftables (Capstan's load balancer will need it)",
        ),
    }
}

pub fn docker(role: Role, facts: Option<&DockerFacts>) -> Check {
    const ID: &str = "docker";
    let facts = match (role, facts) {
        (Role::Master, _) => return Check::skip(ID, "masters do not run containers"),
        (Role::Agent, None) => {
            return Check::fail(
                ID,
                "the Docker engine was not probed",
                "run `capstan doctor --role agent` on the agent",
            );
        }
        (Role::Agent, Some(f)) => f,
    };
    let endpoint = &facts.endpoint;
    let (want_major, want_minor) = MIN_DOCKER;
    match &facts.result {
        Ok(v) => match major_minor(&v.version) {
            Some(have) if have >= MIN_DOCKER => Check::pass(
                ID,
                format!(
                    "Docker Engine {} (API {}) at {endpoint}",
                    v.version, v.api_version
                ),
            ),
            Some(_) => Check::fail(
                ID,
                format!(
                    "Docker Engine {} at {endpoint} is older than {want_major}.{want_minor}",
                    v.version
                ),
                "upgrade Docker: `apt-get install docker.io` (Debian 12 and Ubuntu 22.04 or \
                 later ship 20.10 or newer) or Docker CE from download.docker.com",
            ),
            None => Check::warn(
                ID,
                format!(
                    "cannot tell the version of Docker Engine {:?} at {endpoint}",
                    v.version
                ),
                "check `docker version`: agents need Docker Engine 20.10 or newer",
            ),
        },
        Err(e) => {
            let fix = match e.kind {
                DockerErrorKind::Missing => {
                    "install and start Docker: `apt-get install docker.io && systemctl enable \
                     --now docker` (install.sh does this on agents)"
                }
                DockerErrorKind::Denied => {
                    "run the doctor as root (`sudo capstan doctor`): the agent runs as root"
                }
                DockerErrorKind::Other => {
                    "check the engine: `systemctl status docker`, `journalctl -u docker`"
                }
            };
            Check::fail(
                ID,
                format!("no Docker engine at {endpoint}: {}", e.message),
                fix,
            )
        }
    }
}

/// The ports a role's daemons listen on, with the daemon that needs each.
pub fn role_ports(role: Role) -> &'static [(u16, Proto, &'static str)] {
    match role {
        Role::Master => &[
            (8181, Proto::Tcp, "coord"),
            (5050, Proto::Tcp, "master"),
            (8080, Proto::Tcp, "apps"),
            (7070, Proto::Tcp, "catalog"),
            (53, Proto::Udp, "dns"),
            (53, Proto::Tcp, "dns"),
            (8123, Proto::Tcp, "dns"),
            (80, Proto::Tcp, "router"),
            (443, Proto::Tcp, "router"),
        ],
        Role::Agent => &[(5051, Proto::Tcp, "agent")],
    }
}

/// Whether a socket bound on `held` stops a daemon of this node from binding its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clash {
    /// It does (a wildcard bind, or the node's own address).
    Yes,
    /// It does if the node advertises that address (not known before it joins).
    Maybe,
    /// A different address (loopback, before the node has joined).
    No,
}

fn clash(held: IpAddr, advertise: Option<IpAddr>) -> Clash {
    let held = held.to_canonical();
    if held.is_unspecified() {
        return Clash::Yes;
    }
    match advertise.map(|a| a.to_canonical()) {
        Some(a) if a.is_unspecified() || a == held => Clash::Yes,
        Some(_) => Clash::No,
        None if held.is_loopback() => Clash::No,
        None => Clash::Maybe,
    }
}

fn holder(s: &HeldSocket) -> String {
    let addr = s.socket.local;
    let who = match &s.owner {
        Some(o) => format!("{} (pid {})", o.name, o.pid),
        None => "a process this user cannot see".to_owned(),
    };
    format!(
        "{}/{} on {} by {who}",
        addr.port(),
        s.socket.proto.as_str(),
        addr.ip()
    )
}

pub fn ports(role: Role, facts: &PortFacts) -> Check {
    const ID: &str = "ports";
    let needs = role_ports(role);
    let wanted = needs
        .iter()
        .map(|(port, proto, _)| format!("{port}/{}", proto.as_str()))
        .collect::<Vec<_>>()
        .join(" ");
    let sockets = match &facts.sockets {
        Ok(s) => s,
        Err(e) => {
            return Check::warn(
                ID,
                format!("cannot list the bound sockets: {e}"),
                format!("check by hand that {wanted} are free: `ss -ltnup`"),
            );
        }
    };
    let mut busy = Vec::new();
    let mut maybe = Vec::new();
    let mut ours = 0;
    let mut unseen = false;
    let mut stray_capstan = false;
    for &(port, proto, daemon) in needs {
        for s in sockets
            .iter()
            .filter(|s| s.socket.proto == proto && s.socket.local.port() == port)
        {
            let is_capstan = s.owner.as_ref().is_some_and(|o| o.is_capstan);
            if is_capstan && facts.installed {
                ours += 1;
                continue;
            }
            let line = format!("{} (needed by {daemon})", holder(s));
            match clash(s.socket.local.ip(), facts.advertise) {
                Clash::No => continue,
                Clash::Maybe => maybe.push(line),
                Clash::Yes => busy.push(line),
            }
            unseen |= s.owner.is_none();
            stray_capstan |= is_capstan;
        }
    }
    let mut fix = vec!["stop or reconfigure what holds them (`ss -ltnup` lists every listener)"];
    if stray_capstan {
        fix.push(
            "a Capstan that is not this node's installation holds some (a `capstan dev` \
             cluster?): stop it with `capstan dev down`",
        );
    }
    if unseen {
        fix.push("run the doctor as root to see which process holds each port");
    }
    let fix = fix.join("; ");
    if !busy.is_empty() {
        let mut message = format!("in use: {}", busy.join(", "));
        if !maybe.is_empty() {
            message.push_str(&format!("; on other addresses: {}", maybe.join(", ")));
        }
        return Check::fail(ID, message, fix);
    }
    if !maybe.is_empty() {
        return Check::warn(
            ID,
            format!(
                "in use on a specific address, a conflict if this node advertises it: {}",
                maybe.join(", ")
            ),
            fix,
        );
    }
    let how = if ours > 0 {
        " or held by this node's Capstan daemons"
    } else {
        ""
    };
    Check::pass(ID, format!("{wanted} free{how}"))
}

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

pub fn clock_skew(clocks: &[ClockFact]) -> Check {
    const ID: &str = "clock-skew";
    if clocks.is_empty() {
        return Check::skip(
            ID,
            "no other master to compare with (pass --masters IP,... to compare)",
        );
    }
    let mut worst = Status::Pass;
    let mut parts = Vec::new();
    let mut unreachable = false;
    let mut skewed = false;
    for c in clocks {
        match &c.offset {
            Ok(offset) => {
                let skew = offset.certain_skew_ms();
                let status = if skew > SKEW_FAIL_MS {
                    Status::Fail
                } else if skew > SKEW_WARN_MS {
                    Status::Warn
                } else {
                    Status::Pass
                };
                worst = worst.max(status);
                skewed |= status != Status::Pass;
                let est = offset.estimate_ms();
                let side = if est >= 0 { "ahead of" } else { "behind" };
                parts.push(format!(
                    "{} is {} ± {} {side} this node",
                    c.master,
                    seconds(est.abs()),
                    seconds(offset.error_ms())
                ));
            }
            Err(e) => {
                unreachable = true;
                worst = worst.max(Status::Warn);
                parts.push(format!("cannot read the clock of {}: {e}", c.master));
            }
        }
    }
    let message = parts.join("; ");
    let mut fixes = Vec::new();
    if skewed {
        fixes.push(
            "synchronize the clocks: `apt-get install systemd-timesyncd && timedatectl set-ntp \
             true` (or chrony) on every node, with the same NTP servers",
        );
    }
    if unreachable {
        fixes.push(
            "check that the masters answer HTTP on port 80 (`curl -sI http://MASTER/v1/cluster`)",
        );
    }
    let fix = fixes.join("; ");
    match worst {
        Status::Pass | Status::Skip => Check::pass(ID, message),
        Status::Warn => Check::warn(ID, message, fix),
        Status::Fail => Check::fail(
            ID,
            format!("{message} (at most {} is allowed)", seconds(SKEW_FAIL_MS)),
            fix,
        ),
    }
}

pub fn hostname(facts: &HostnameFacts) -> Check {
    const ID: &str = "hostname";
    let name = match &facts.hostname {
        Ok(n) => n.trim(),
        Err(e) => {
            return Check::warn(
                ID,
                format!("cannot read the hostname: {e}"),
                "check `hostname`",
            );
        }
    };
    if name.is_empty() || name == "localhost" || name.starts_with("localhost.") {
        return Check::warn(
            ID,
            format!("the hostname is {name:?}: nodes and their tasks are told apart by it"),
            "give the machine its own name: `hostnamectl set-hostname NAME` and add it to /etc/hosts",
        );
    }
    match &facts.addrs {
        Ok(addrs) if !addrs.is_empty() => {
            let list = addrs
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            Check::pass(ID, format!("{name} resolves to {list}"))
        }
        Ok(_) => Check::fail(
            ID,
            format!("{name} resolves to no address"),
            format!("add `ADDRESS {name}` to /etc/hosts (or give it a DNS record)"),
        ),
        Err(e) => Check::fail(
            ID,
            format!("{name} does not resolve: {e}"),
            format!("add `ADDRESS {name}` to /etc/hosts (or give it a DNS record)"),
        ),
    }
}

/// `1536 MiB`, `75.2 GiB`.
pub fn bytes(n: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / GIB)
    } else {
        format!("{} MiB", n >> 20)
    }
}

pub fn disk(disks: &[DiskFact]) -> Check {
    const ID: &str = "disk";
    if disks.is_empty() {
        return Check::skip(ID, "no data directory to measure");
    }
    // Paths on the same filesystem share its free space: report each filesystem once.
    let mut by_mount: BTreeMap<&str, (u64, Vec<String>)> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for d in disks {
        match &d.space {
            Ok(space) => by_mount
                .entry(space.mount.as_str())
                .or_insert((space.avail_bytes, Vec::new()))
                .1
                .push(d.path.display().to_string()),
            Err(e) => unreadable.push(format!("cannot measure {}: {e}", d.path.display())),
        }
    }
    let mut worst = if unreadable.is_empty() {
        Status::Pass
    } else {
        Status::Warn
    };
    let mut parts = unreadable;
    let mut low = Vec::new();
    for (mount, (avail, paths)) in &by_mount {
        let status = if *avail < DISK_FAIL_BYTES {
            Status::Fail
        } else if *avail < DISK_WARN_BYTES {
            Status::Warn
        } else {
            Status::Pass
        };
        worst = worst.max(status);
        if status != Status::Pass {
            low.push(mount.to_string());
        }
        parts.push(format!(
            "{} free for {} (on {mount})",
            bytes(*avail),
            paths.join(" and ")
        ));
    }
    let message = parts.join("; ");
    let fix = format!(
        "free space on {} (`docker system prune`, `apt-get clean`, `journalctl --vacuum-size=200M`) \
         or mount a larger disk: Capstan needs {} and wants {}",
        if low.is_empty() {
            "the disk".to_owned()
        } else {
            low.join(" and ")
        },
        bytes(DISK_FAIL_BYTES),
        bytes(DISK_WARN_BYTES),
    );
    match worst {
        Status::Pass | Status::Skip => Check::pass(ID, message),
        Status::Warn => Check::warn(ID, message, fix),
        Status::Fail => Check::fail(ID, message, fix),
    }
}

/// `key=value` lines of `timedatectl show`.
fn show_property<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

pub fn time_sync(facts: &TimeSyncFacts) -> Check {
    const ID: &str = "time-sync";
    const ENABLE: &str = "turn on time synchronization: `apt-get install systemd-timesyncd && \
                          timedatectl set-ntp true` (or install chrony)";
    let daemons = facts.daemons.join(", ");
    if let Some(Ok(show)) = &facts.timedatectl {
        let synced = show_property(show, "NTPSynchronized") == Some("yes");
        let ntp = show_property(show, "NTP") == Some("yes");
        if synced {
            return Check::pass(ID, "the system clock is synchronized (timedatectl)");
        }
        if ntp || !facts.daemons.is_empty() {
            let who = if daemons.is_empty() {
                "NTP is on".to_owned()
            } else {
                format!("{daemons} runs")
            };
            return Check::warn(
                ID,
                format!("{who} but the clock is not synchronized yet"),
                "check `timedatectl timesync-status` or `chronyc tracking`, and that UDP port \
                 123 reaches your NTP servers",
            );
        }
    }
    if !facts.daemons.is_empty() {
        return Check::pass(ID, format!("{daemons} runs (synchronization not verified)"));
    }
    if let Some(kind) = &facts.container {
        return Check::warn(
            ID,
            format!("no time synchronization in this {kind} container; it shares the host's clock"),
            "make sure the host synchronizes its clock (`timedatectl` on the host)",
        );
    }
    Check::warn(ID, "no time synchronization is running", ENABLE)
}

#[cfg(test)]
mod tests;
