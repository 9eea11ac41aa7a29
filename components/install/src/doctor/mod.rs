//! Pre-flight checks (`capstan doctor`): can this machine run a Capstan node of a role?
//!
//! `install.sh` runs them before it changes anything, and an operator can run them at any
//! time. The work is split in two: [`gather`] is a thin I/O layer that reads what the checks
//! need from the machine into plain [`Facts`] (kernel release, cgroup mounts, nftables,
//! the Docker engine's version, bound sockets and who holds them, clock offsets to the masters,
//! the hostname and what it resolves to, free disk, time-sync status); [`evaluate`] turns
//! facts into [`Check`]s with pure functions ([`checks`]) that say what is wrong and how to fix
//! it. Every judgement is therefore table-tested without touching the machine.
//!
//! Re-running the installer must be harmless, so a port held by a Capstan daemon on a node
//! that has already joined a cluster counts as free.

pub mod checks;
pub mod clock;
pub mod gather;
pub mod procnet;

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

pub use clock::Offset;
pub use gather::{Plan, gather};
pub use procnet::{BoundSocket, Proto};

use crate::Role;

/// What a gatherer saw, or why it could not look (a message for the operator).
pub type Observed<T> = Result<T, String>;

/// Everything the checks judge, read from the machine by [`gather`] (or made up by tests).
#[derive(Debug, Clone)]
pub struct Facts {
    /// `/proc/sys/kernel/osrelease`, e.g. `6.1.0-18-amd64`.
    pub kernel_release: Observed<String>,
    pub cgroups: CgroupFacts,
    pub nftables: NftFacts,
    /// `None`: not probed (masters do not need Docker).
    pub docker: Option<DockerFacts>,
    pub ports: PortFacts,
    /// One per master compared with; empty when there is none to compare with.
    pub clocks: Vec<ClockFact>,
    pub hostname: HostnameFacts,
    /// The directories the role stores data under.
    pub disks: Vec<DiskFact>,
    pub time_sync: TimeSyncFacts,
}

#[derive(Debug, Clone)]
pub struct CgroupFacts {
    /// `/proc/self/mountinfo`.
    pub mountinfo: Observed<String>,
    /// `cgroup.controllers` at the root of the cgroup2 mount, if one is mounted.
    pub v2_controllers: Option<Observed<String>>,
}

#[derive(Debug, Clone)]
pub struct NftFacts {
    /// `nft --version` (`nftables v1.0.6 (Lester Gooch #5)`); `None`: no `nft` on the PATH.
    pub nft: Option<Observed<String>>,
    pub kernel: NfTablesKernel,
}

/// Whether the running kernel has nf_tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NfTablesKernel {
    /// Loaded or built in (`/sys/module/nf_tables`).
    Loaded,
    /// Not loaded, but the module is installed (`modules.dep`); it loads on first use.
    Module,
    /// Neither loaded nor listed among the kernel's modules.
    Absent,
    /// The kernel's module lists could not be read.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct DockerFacts {
    /// The engine address asked, e.g. `unix:///var/run/docker.sock`.
    pub endpoint: String,
    pub result: Result<DockerVersion, DockerError>,
}

/// `GET /version` of the Docker Engine API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerVersion {
    /// `Version`, e.g. `20.10.24+dfsg1`.
    pub version: String,
    /// `ApiVersion`, e.g. `1.41`.
    pub api_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerError {
    pub kind: DockerErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerErrorKind {
    /// Nothing listens at the address (no socket file, connection refused).
    Missing,
    /// The socket exists but this user may not use it.
    Denied,
    /// It answered, but not as a Docker engine would; or it timed out.
    Other,
}

#[derive(Debug, Clone)]
pub struct PortFacts {
    /// Every socket that holds a port, with its owner when this user may see it.
    pub sockets: Observed<Vec<HeldSocket>>,
    /// The node has joined a cluster (its membership file exists).
    pub installed: bool,
    /// The address the node's daemons bind, when the node is installed.
    pub advertise: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSocket {
    pub socket: BoundSocket,
    pub owner: Option<Owner>,
}

/// The process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub name: String,
    /// Its `comm` or executable is `capstan`.
    pub is_capstan: bool,
}

#[derive(Debug, Clone)]
pub struct ClockFact {
    /// The master as given (`10.0.0.1`, `m1:80`).
    pub master: String,
    pub offset: Observed<Offset>,
}

#[derive(Debug, Clone)]
pub struct HostnameFacts {
    /// `/proc/sys/kernel/hostname`.
    pub hostname: Observed<String>,
    /// What the system resolver (`/etc/hosts`, DNS) gives for it.
    pub addrs: Observed<Vec<IpAddr>>,
}

#[derive(Debug, Clone)]
pub struct DiskFact {
    pub path: PathBuf,
    pub space: Observed<DiskSpace>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes available to unprivileged users.
    pub avail_bytes: u64,
    /// The mount point of the filesystem holding the path.
    pub mount: String,
}

#[derive(Debug, Clone)]
pub struct TimeSyncFacts {
    /// `timedatectl show` output; `None`: no timedatectl; an error: it could not answer (no
    /// systemd as PID 1).
    pub timedatectl: Option<Observed<String>>,
    /// Time daemons running (`chronyd`, `ntpd`, `systemd-timesyncd`, ...).
    pub daemons: Vec<String>,
    /// The kind of container this runs in (`docker`, `lxc`, ...), if any.
    pub container: Option<String>,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Not relevant for this role or this node.
    Skip,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "ok",
            Status::Skip => "skip",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's outcome: what was found and, unless it passed, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(id: &'static str, message: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Pass,
            message: message.into(),
            fix: None,
        }
    }

    pub fn skip(id: &'static str, message: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Skip,
            message: message.into(),
            fix: None,
        }
    }

    pub fn warn(id: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(id: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every check's outcome; `ok` unless one failed. `--json` prints it as it serializes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// Judges the facts for a node of `role`.
pub fn evaluate(role: Role, facts: &Facts) -> Report {
    let checks = vec![
        checks::kernel(&facts.kernel_release),
        checks::cgroups(&facts.cgroups),
        checks::nftables(&facts.nftables),
        checks::docker(role, facts.docker.as_ref()),
        checks::ports(role, &facts.ports),
        checks::clock_skew(&facts.clocks),
        checks::hostname(&facts.hostname),
        checks::disk(&facts.disks),
        checks::time_sync(&facts.time_sync),
    ];
    Report {
        ok: checks.iter().all(|c| c.status != Status::Fail),
        checks,
    }
}

/// The report as an aligned table for people, a fix under each check that needs one, and a
/// last line with the verdict.
pub fn render_table(role: Role, report: &Report) -> String {
    let id_width = report
        .checks
        .iter()
        .map(|c| c.id.len())
        .max()
        .unwrap_or(0)
        .max("CHECK".len());
    let mut out = format!("{:<6}{:<id_width$}  RESULT\n", "", "CHECK");
    for check in &report.checks {
        out.push_str(&format!(
            "{:<6}{:<id_width$}  {}\n",
            check.status.label(),
            check.id,
            check.message
        ));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("{:<6}{:<id_width$}  fix: {fix}\n", "", ""));
        }
    }
    let count = |s: Status| report.checks.iter().filter(|c| c.status == s).count();
    let (failed, warned) = (count(Status::Fail), count(Status::Warn));
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if report.ok {
        out.push_str(&format!(
            "This machine can run a Capstan {role} ({}).\n",
            plural(warned, "warning")
        ));
    } else {
        out.push_str(&format!(
            "This machine cannot run a Capstan {role} yet: {} failed ({}).\n",
            plural(failed, "check"),
            plural(warned, "warning")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(statuses: &[Status]) -> Report {
        let checks: Vec<_> = statuses
            .iter()
            .zip(["kernel", "docker", "time-sync"])
            .map(|(&status, id)| Check {
                id,
                status,
                message: format!("{id} message"),
                fix: (status >= Status::Warn).then(|| format!("fix {id}")),
            })
            .collect();
        Report {
            ok: checks.iter().all(|c| c.status != Status::Fail),
            checks,
        }
    }

    #[test]
    fn table_aligns_results_and_fixes_and_ends_with_the_verdict() {
        let text = render_table(
            Role::Agent,
            &report(&[Status::Pass, Status::Fail, Status::Warn]),
        );
        assert_eq!(
            text,
            "      CHECK      RESULT\n\
             ok    kernel     kernel message\n\
             FAIL  docker     docker message\n\
            \x20                fix: fix docker\n\
             WARN  time-sync  time-sync message\n\
            \x20                fix: fix time-sync\n\
             This machine cannot run a Capstan agent yet: 1 check failed (1 warning).\n"
        );
        let good = render_table(Role::Master, &report(&[Status::Pass, Status::Skip]));
        assert!(
            good.ends_with("This machine can run a Capstan master (0 warnings).\n"),
            "{good}"
        );
    }

    #[test]
    fn json_has_ok_and_every_check_with_its_fix() {
        let json = serde_json::to_value(report(&[Status::Pass, Status::Fail])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "ok": false,
                "checks": [
                    {"id": "kernel", "status": "pass", "message": "kernel message", "fix": null},
                    {"id": "docker", "status": "fail", "message": "docker message", "fix": "fix docker"},
                ]
            })
        );
    }
}
