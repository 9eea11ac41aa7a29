use std::path::PathBuf;

use super::*;
use crate::doctor::{
    BoundSocket, DiskSpace, DockerError, DockerVersion, Facts, Offset, Owner, Report, Status,
    evaluate,
};

#[track_caller]
fn assert_status(check: &Check, want: Status, needle: &str) {
    assert_eq!(check.status, want, "{check:?}");
    assert!(
        check.message.contains(needle),
        "{needle:?} not in {check:?}"
    );
    assert_eq!(check.fix.is_some(), want >= Status::Warn, "{check:?}");
}

#[test]
fn versions_parse_major_and_minor() {
    for (text, want) in [
        ("6.1.0-18-amd64", Some((6, 1))),
        ("4.15.0-213-generic", Some((4, 15))),
        ("6.18.44-fc-v1098", Some((6, 18))),
        ("20.10.24+dfsg1", Some((20, 10))),
        ("v28.0.1", Some((28, 0))),
        ("5.4", Some((5, 4))),
        ("26.1.5+dfsg1\n", Some((26, 1))),
        ("5", None),
        ("linux", None),
        ("", None),
    ] {
        assert_eq!(major_minor(text), want, "{text:?}");
    }
}

#[test]
fn kernel_needs_4_15() {
    for (release, want, needle) in [
        (
            Ok("6.18.44-fc-v1098"),
            Status::Pass,
            "Linux 6.18.44-fc-v1098",
        ),
        (Ok("4.15.0-213-generic"), Status::Pass, "4.15.0"),
        (Ok("4.19.0-26-amd64\n"), Status::Pass, "4.19.0-26-amd64 ("),
        (Ok("4.14.336"), Status::Fail, "older than 4.15"),
        (Ok("3.10.0-1160.el7.x86_64"), Status::Fail, "cgroup v2"),
        (Ok("weird"), Status::Warn, "cannot tell"),
        (
            Err("/proc/sys/kernel/osrelease: gone"),
            Status::Warn,
            "gone",
        ),
    ] {
        let release = release.map(str::to_owned).map_err(str::to_owned);
        assert_status(&kernel(&release), want, needle);
    }
}

/// This machine's `/proc/self/mountinfo` cgroup lines: a hybrid v1 layout.
const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
/// Debian 12: the unified layout.
const UNIFIED: &str = "\
22 26 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
/// Old v1 with cpu and cpuacct co-mounted and no memory controller (Raspberry Pi default).
const V1_NO_MEMORY: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
";

fn cgroup_facts(mountinfo: &str, v2: Option<Result<&str, &str>>) -> CgroupFacts {
    CgroupFacts {
        mountinfo: Ok(mountinfo.to_owned()),
        v2_controllers: v2.map(|r| r.map(str::to_owned).map_err(str::to_owned)),
    }
}

#[test]
fn cgroup_mounts_parse_v1_controllers_and_v2() {
    let mounts = cgroup_mounts(HYBRID);
    assert_eq!(mounts.len(), 6);
    assert_eq!(mounts[0].mount_point, "/sys/fs/cgroup/cpu");
    assert_eq!(mounts[0].v1_controllers, Some(vec!["cpu".to_owned()]));
    assert_eq!(
        mounts[4].v1_controllers,
        Some(vec![]),
        "name=systemd is no controller"
    );
    assert_eq!(mounts[5].v1_controllers, None);
    assert_eq!(
        cgroup_mounts(V1_NO_MEMORY)[0].v1_controllers,
        Some(vec!["cpu".to_owned(), "cpuacct".to_owned()])
    );
}

#[test]
fn cgroups_need_cpu_and_memory_in_v1_or_v2() {
    let v2_all = Some(Ok("cpuset cpu io memory hugetlb pids rdma misc"));
    for (facts, want, needle) in [
        (
            cgroup_facts(HYBRID, Some(Ok(""))),
            Status::Pass,
            "cgroup v1 (hybrid",
        ),
        (
            cgroup_facts(UNIFIED, v2_all),
            Status::Pass,
            "cgroup v2 at /sys/fs/cgroup with",
        ),
        (
            cgroup_facts(UNIFIED, Some(Ok("cpuset cpu io pids"))),
            Status::Fail,
            "memory controller",
        ),
        (
            cgroup_facts(UNIFIED, Some(Ok("pids"))),
            Status::Fail,
            "cpu and memory controllers",
        ),
        (
            cgroup_facts(UNIFIED, Some(Err("permission denied"))),
            Status::Fail,
            "permission denied",
        ),
        (
            cgroup_facts(V1_NO_MEMORY, None),
            Status::Fail,
            "cgroup v1 without the memory",
        ),
        (cgroup_facts("", None), Status::Fail, "no cgroup filesystem"),
        (
            CgroupFacts {
                mountinfo: Err("no /proc".into()),
                v2_controllers: None,
            },
            Status::Warn,
            "no /proc",
        ),
    ] {
        assert_status(&cgroups(&facts), want, needle);
    }
    let no_memory = cgroups(&cgroup_facts(V1_NO_MEMORY, None));
    assert!(no_memory.fix.unwrap().contains("cgroup_enable=memory"));
}

#[test]
fn nftables_only_warns() {
    let nft = Some(Ok("nftables v1.0.6 (Lester Gooch #5)\n".to_owned()));
    for (nft, kernel, want, needle) in [
        (
            nft.clone(),
            NfTablesKernel::Loaded,
            Status::Pass,
            "v1.0.6 (Lester Gooch #5); nf_tables is loaded",
        ),
        (
            nft.clone(),
            NfTablesKernel::Module,
            Status::Pass,
            "module is installed",
        ),
        (
            nft.clone(),
            NfTablesKernel::Unknown,
            Status::Pass,
            "not verified",
        ),
        (
            nft.clone(),
            NfTablesKernel::Absent,
            Status::Warn,
            "no nf_tables",
        ),
        (
            None,
            NfTablesKernel::Loaded,
            Status::Warn,
            "nft tool is missing",
        ),
        (
            Some(Err("nft: crashed".into())),
            NfTablesKernel::Module,
            Status::Warn,
            "missing",
        ),
        (None, NfTablesKernel::Absent, Status::Warn, "neither"),
        (None, NfTablesKernel::Unknown, Status::Warn, "neither"),
    ] {
        assert_status(&nftables(&NftFacts { nft, kernel }), want, needle);
    }
}

fn docker_facts(result: Result<&str, (DockerErrorKind, &str)>) -> DockerFacts {
    DockerFacts {
        endpoint: "unix:///var/run/docker.sock".into(),
        result: result
            .map(|v| DockerVersion {
                version: v.into(),
                api_version: "1.41".into(),
            })
            .map_err(|(kind, message)| DockerError {
                kind,
                message: message.into(),
            }),
    }
}

#[test]
fn docker_20_10_is_needed_on_agents_only() {
    for (facts, want, needle) in [
        (
            docker_facts(Ok("20.10.24+dfsg1")),
            Status::Pass,
            "Docker Engine 20.10.24+dfsg1 (API 1.41) at unix://",
        ),
        (docker_facts(Ok("28.2.2")), Status::Pass, "28.2.2"),
        (
            docker_facts(Ok("19.03.15")),
            Status::Fail,
            "older than 20.10",
        ),
        (docker_facts(Ok("18.09.1")), Status::Fail, "older"),
        (docker_facts(Ok("dev")), Status::Warn, "cannot tell"),
        (
            docker_facts(Err((DockerErrorKind::Missing, "No such file or directory"))),
            Status::Fail,
            "no Docker engine at unix:///var/run/docker.sock: No such file",
        ),
        (
            docker_facts(Err((DockerErrorKind::Denied, "Permission denied"))),
            Status::Fail,
            "Permission denied",
        ),
        (
            docker_facts(Err((DockerErrorKind::Other, "no answer"))),
            Status::Fail,
            "no answer",
        ),
    ] {
        assert_status(&docker(Role::Agent, Some(&facts)), want, needle);
    }
    let fix = |kind| {
        docker(Role::Agent, Some(&docker_facts(Err((kind, "x")))))
            .fix
            .unwrap()
    };
    assert!(fix(DockerErrorKind::Missing).contains("apt-get install docker.io"));
    assert!(fix(DockerErrorKind::Denied).contains("sudo"));
    assert_status(&docker(Role::Agent, None), Status::Fail, "not probed");
    let skipped = docker(Role::Master, Some(&docker_facts(Ok("1.0"))));
    assert_status(&skipped, Status::Skip, "masters");
    assert_status(&docker(Role::Master, None), Status::Skip, "masters");
}

fn held(proto: Proto, addr: &str, owner: Option<(u32, &str, bool)>) -> HeldSocket {
    HeldSocket {
        socket: BoundSocket {
            proto,
            local: addr.parse().unwrap(),
            inode: 1,
        },
        owner: owner.map(|(pid, name, is_capstan)| Owner {
            pid,
            name: name.into(),
            is_capstan,
        }),
    }
}

fn port_facts(sockets: Vec<HeldSocket>, installed: bool, advertise: Option<&str>) -> PortFacts {
    PortFacts {
        sockets: Ok(sockets),
        installed,
        advertise: advertise.map(|a| a.parse().unwrap()),
    }
}

#[test]
fn ports_of_each_role() {
    assert_eq!(role_ports(Role::Agent), &[(5051, Proto::Tcp, "agent")]);
    let master: Vec<String> = role_ports(Role::Master)
        .iter()
        .map(|(p, proto, _)| format!("{p}/{}", proto.as_str()))
        .collect();
    assert_eq!(
        master,
        [
            "8181/tcp", "5050/tcp", "8080/tcp", "7070/tcp", "53/udp", "53/tcp", "8123/tcp",
            "80/tcp", "443/tcp"
        ]
    );
}

#[test]
fn ports_must_be_free_unless_this_installed_node_holds_them() {
    let nginx = Some((812, "nginx", false));
    let capstan = Some((77, "capstan", true));
    let resolved = Some((300, "systemd-resolve", false));
    let cases = [
        // Nothing on the role's ports (other ports and protocols do not matter).
        (
            Role::Agent,
            port_facts(
                vec![
                    held(Proto::Tcp, "0.0.0.0:22", None),
                    held(Proto::Udp, "0.0.0.0:5051", None),
                ],
                false,
                None,
            ),
            Status::Pass,
            "5051/tcp free",
        ),
        // A wildcard listener clashes with any address, v4 or v6.
        (
            Role::Master,
            port_facts(vec![held(Proto::Tcp, "0.0.0.0:80", nginx)], false, None),
            Status::Fail,
            "80/tcp on 0.0.0.0 by nginx (pid 812) (needed by router)",
        ),
        (
            Role::Agent,
            port_facts(vec![held(Proto::Tcp, "[::]:5051", None)], false, None),
            Status::Fail,
            "by a process this user cannot see",
        ),
        (
            Role::Master,
            port_facts(
                vec![held(Proto::Udp, "[::ffff:0.0.0.0]:53", None)],
                true,
                Some("10.0.0.1"),
            ),
            Status::Fail,
            "53/udp",
        ),
        // systemd-resolved's stub on 127.0.0.53 does not clash with the node's address.
        (
            Role::Master,
            port_facts(
                vec![
                    held(Proto::Udp, "127.0.0.53:53", resolved),
                    held(Proto::Tcp, "127.0.0.53:53", resolved),
                ],
                false,
                None,
            ),
            Status::Pass,
            "53/udp 53/tcp 8123/tcp 80/tcp 443/tcp free",
        ),
        // A specific address clashes only if the node advertises it: unknown before joining.
        (
            Role::Master,
            port_facts(
                vec![held(
                    Proto::Udp,
                    "192.168.122.1:53",
                    Some((9, "dnsmasq", false)),
                )],
                false,
                None,
            ),
            Status::Warn,
            "53/udp on 192.168.122.1 by dnsmasq",
        ),
        (
            Role::Master,
            port_facts(
                vec![held(Proto::Udp, "192.168.122.1:53", None)],
                true,
                Some("10.0.0.1"),
            ),
            Status::Pass,
            "free",
        ),
        (
            Role::Master,
            port_facts(
                vec![held(Proto::Tcp, "10.0.0.1:8181", nginx)],
                true,
                Some("10.0.0.1"),
            ),
            Status::Fail,
            "8181/tcp on 10.0.0.1",
        ),
        // Re-running the installer: this node's own daemons hold the ports.
        (
            Role::Agent,
            port_facts(
                vec![held(Proto::Tcp, "10.0.0.9:5051", capstan)],
                true,
                Some("10.0.0.9"),
            ),
            Status::Pass,
            "free or held by this node's Capstan daemons",
        ),
        (
            Role::Master,
            port_facts(
                vec![
                    held(Proto::Tcp, "0.0.0.0:80", capstan),
                    held(Proto::Udp, "10.0.0.1:53", capstan),
                ],
                true,
                Some("10.0.0.1"),
            ),
            Status::Pass,
            "held by this node's Capstan",
        ),
        // A Capstan that is not this node's installation (capstan dev) still clashes.
        (
            Role::Agent,
            port_facts(vec![held(Proto::Tcp, "0.0.0.0:5051", capstan)], false, None),
            Status::Fail,
            "capstan (pid 77)",
        ),
        // A wildcard clash and an address that may clash: fail, and say both.
        (
            Role::Master,
            port_facts(
                vec![
                    held(Proto::Tcp, "0.0.0.0:443", nginx),
                    held(Proto::Tcp, "10.1.1.1:8080", nginx),
                ],
                false,
                None,
            ),
            Status::Fail,
            "443/tcp on 0.0.0.0 by nginx (pid 812) (needed by router); on other addresses: 8080/tcp on 10.1.1.1",
        ),
        (
            Role::Agent,
            PortFacts {
                sockets: Err("/proc/net/tcp: gone".into()),
                installed: false,
                advertise: None,
            },
            Status::Warn,
            "gone",
        ),
    ];
    for (role, facts, want, needle) in cases {
        assert_status(&ports(role, &facts), want, needle);
    }
    let stray = ports(
        Role::Agent,
        &port_facts(vec![held(Proto::Tcp, "0.0.0.0:5051", capstan)], false, None),
    );
    assert!(stray.fix.unwrap().contains("capstan dev down"));
    let unseen = ports(
        Role::Agent,
        &port_facts(vec![held(Proto::Tcp, "0.0.0.0:5051", None)], false, None),
    );
    assert!(unseen.fix.unwrap().contains("as root"));
}

fn clock(master: &str, offset: Result<(i64, i64), &str>) -> ClockFact {
    ClockFact {
        master: master.into(),
        offset: offset
            .map(|(low_ms, high_ms)| Offset { low_ms, high_ms })
            .map_err(str::to_owned),
    }
}

#[test]
fn clock_skew_warns_past_half_a_second_and_fails_past_two() {
    for (clocks, want, needle) in [
        (vec![], Status::Skip, "no other master"),
        (
            vec![clock("10.0.0.1", Ok((-100, 120)))],
            Status::Pass,
            "10.0.0.1 is 0.0 s ± 0.1 s ahead of this node",
        ),
        (
            vec![clock("10.0.0.1", Ok((400, 600)))],
            Status::Pass,
            "0.5 s",
        ),
        (
            vec![clock("10.0.0.1", Ok((700, 900)))],
            Status::Warn,
            "0.8 s ± 0.1 s ahead",
        ),
        (
            vec![clock("10.0.0.1", Ok((-1_900, -1_700)))],
            Status::Warn,
            "1.8 s ± 0.1 s behind",
        ),
        (
            vec![clock("10.0.0.1", Ok((2_100, 2_300)))],
            Status::Fail,
            "(at most 2.0 s is allowed)",
        ),
        (
            vec![clock("10.0.0.1", Ok((-3_700_000, -3_599_000)))],
            Status::Fail,
            "behind",
        ),
        // Wide bounds that include a small skew prove nothing worse than their nearest end.
        (
            vec![clock("10.0.0.1", Ok((-300, 1_100)))],
            Status::Pass,
            "10.0.0.1",
        ),
        (
            vec![clock("m1", Err("cannot connect to m1:80: refused"))],
            Status::Warn,
            "cannot read the clock of m1: cannot connect",
        ),
        (
            vec![clock("m1", Ok((0, 10))), clock("m2", Ok((5_000, 5_100)))],
            Status::Fail,
            "m1 is 0.0 s ± 0.0 s ahead of this node; m2 is 5.",
        ),
    ] {
        assert_status(&clock_skew(&clocks), want, needle);
    }
    let both = clock_skew(&[clock("m1", Err("refused")), clock("m2", Ok((900, 1_000)))]);
    let fix = both.fix.unwrap();
    assert!(
        fix.contains("timedatectl set-ntp") && fix.contains("port 80"),
        "{fix}"
    );
    let unreachable = clock_skew(&[clock("m1", Err("refused"))]).fix.unwrap();
    assert!(!unreachable.contains("set-ntp"), "{unreachable}");
}

fn host(name: Result<&str, &str>, addrs: Result<&[&str], &str>) -> HostnameFacts {
    HostnameFacts {
        hostname: name.map(str::to_owned).map_err(str::to_owned),
        addrs: addrs
            .map(|a| a.iter().map(|a| a.parse().unwrap()).collect())
            .map_err(str::to_owned),
    }
}

#[test]
fn hostname_must_resolve() {
    for (facts, want, needle) in [
        (
            host(Ok("node-7"), Ok(&["10.0.0.7"])),
            Status::Pass,
            "node-7 resolves to 10.0.0.7",
        ),
        (
            host(Ok("node-7\n"), Ok(&["127.0.1.1", "fd00::7"])),
            Status::Pass,
            "127.0.1.1, fd00::7",
        ),
        (
            host(
                Ok("node-7"),
                Err("failed to lookup address information: Name or service not known"),
            ),
            Status::Fail,
            "node-7 does not resolve: failed",
        ),
        (host(Ok("node-7"), Ok(&[])), Status::Fail, "no address"),
        (
            host(Ok("localhost"), Ok(&["127.0.0.1"])),
            Status::Warn,
            "\"localhost\"",
        ),
        (host(Ok(""), Err("empty")), Status::Warn, "\"\""),
        (
            host(Err("no /proc"), Err("no /proc")),
            Status::Warn,
            "cannot read the hostname",
        ),
    ] {
        assert_status(&hostname(&facts), want, needle);
    }
    assert!(
        hostname(&host(Ok("n7"), Ok(&[])))
            .fix
            .unwrap()
            .contains("/etc/hosts")
    );
}

fn disk_fact(path: &str, space: Result<(u64, &str), &str>) -> DiskFact {
    DiskFact {
        path: PathBuf::from(path),
        space: space
            .map(|(avail_bytes, mount)| DiskSpace {
                avail_bytes,
                mount: mount.into(),
            })
            .map_err(str::to_owned),
    }
}

#[test]
fn disk_needs_2_gib_and_wants_10() {
    const GIB: u64 = 1 << 30;
    for (disks, want, needle) in [
        (
            vec![disk_fact("/var/lib", Ok((75 * GIB, "/")))],
            Status::Pass,
            "75.0 GiB free for /var/lib (on /)",
        ),
        (
            vec![disk_fact("/var/lib", Ok((10 * GIB, "/")))],
            Status::Pass,
            "10.0 GiB",
        ),
        (
            vec![disk_fact("/var/lib", Ok((5 * GIB, "/")))],
            Status::Warn,
            "5.0 GiB",
        ),
        (
            vec![disk_fact("/var/lib", Ok((GIB + GIB / 2, "/")))],
            Status::Fail,
            "1.5 GiB free",
        ),
        // Two paths on one filesystem are one line; on two, the worst decides.
        (
            vec![
                disk_fact("/var/lib", Ok((75 * GIB, "/"))),
                disk_fact("/var/lib/docker", Ok((75 * GIB, "/"))),
            ],
            Status::Pass,
            "for /var/lib and /var/lib/docker (on /)",
        ),
        (
            vec![
                disk_fact("/var/lib", Ok((75 * GIB, "/"))),
                disk_fact("/var/lib/docker", Ok((GIB, "/var/lib/docker"))),
            ],
            Status::Fail,
            "1.0 GiB free for /var/lib/docker (on /var/lib/docker)",
        ),
        (
            vec![disk_fact("/var/lib", Err("no df program"))],
            Status::Warn,
            "cannot measure /var/lib: no df",
        ),
        (vec![], Status::Skip, "no data directory"),
    ] {
        assert_status(&disk(&disks), want, needle);
    }
    let low = disk(&[
        disk_fact("/var/lib", Ok((75 * GIB, "/"))),
        disk_fact("/var/lib/docker", Ok((GIB, "/var/lib/docker"))),
    ]);
    assert!(
        low.fix
            .unwrap()
            .starts_with("free space on /var/lib/docker (")
    );
}

fn sync(
    timedatectl: Option<Result<&str, &str>>,
    daemons: &[&str],
    container: Option<&str>,
) -> TimeSyncFacts {
    TimeSyncFacts {
        timedatectl: timedatectl.map(|r| r.map(str::to_owned).map_err(str::to_owned)),
        daemons: daemons.iter().map(|d| d.to_string()).collect(),
        container: container.map(str::to_owned),
    }
}

#[test]
fn time_sync_only_warns() {
    // `timedatectl show` on Debian 12.
    let synced = "Timezone=Etc/UTC\nLocalRTC=no\nCanNTP=yes\nNTP=yes\nNTPSynchronized=yes\nTimeUSec=Wed 2026-12-02 17:06:00 UTC\n";
    let waiting = "CanNTP=yes\nNTP=yes\nNTPSynchronized=no\n";
    let off = "CanNTP=yes\nNTP=no\nNTPSynchronized=no\n";
    let no_systemd =
        "System has not been booted with systemd as init system (PID 1). Can't operate.";
    for (facts, want, needle) in [
        (
            sync(Some(Ok(synced)), &[], None),
            Status::Pass,
            "synchronized",
        ),
        (
            sync(Some(Ok(synced)), &[], Some("docker")),
            Status::Pass,
            "synchronized",
        ),
        (
            sync(Some(Ok(waiting)), &["systemd-timesyn"], None),
            Status::Warn,
            "systemd-timesyn runs but the clock is not synchronized yet",
        ),
        (
            sync(Some(Ok(waiting)), &[], None),
            Status::Warn,
            "NTP is on but",
        ),
        (
            sync(Some(Ok(off)), &[], None),
            Status::Warn,
            "no time synchronization is running",
        ),
        (
            sync(Some(Err(no_systemd)), &["chronyd"], None),
            Status::Pass,
            "chronyd runs (synchronization not verified)",
        ),
        (
            sync(None, &["chronyd", "ntpd"], None),
            Status::Pass,
            "chronyd, ntpd",
        ),
        (
            sync(Some(Err(no_systemd)), &[], Some("docker")),
            Status::Warn,
            "docker container",
        ),
        (
            sync(None, &[], None),
            Status::Warn,
            "no time synchronization",
        ),
    ] {
        assert_status(&time_sync(&facts), want, needle);
    }
    assert!(
        time_sync(&sync(None, &[], None))
            .fix
            .unwrap()
            .contains("timedatectl set-ntp true")
    );
}

/// Facts of a machine where every check passes for `role`.
fn healthy(role: Role) -> Facts {
    Facts {
        kernel_release: Ok("6.1.0-18-amd64".into()),
        cgroups: cgroup_facts(UNIFIED, Some(Ok("cpu memory pids"))),
        nftables: NftFacts {
            nft: Some(Ok("nftables v1.0.6 (Lester Gooch #5)".into())),
            kernel: NfTablesKernel::Loaded,
        },
        docker: (role == Role::Agent).then(|| docker_facts(Ok("20.10.24+dfsg1"))),
        ports: port_facts(vec![held(Proto::Tcp, "0.0.0.0:22", None)], false, None),
        clocks: vec![clock("10.0.0.1", Ok((-50, 60)))],
        hostname: host(Ok("n1"), Ok(&["10.0.0.2"])),
        disks: vec![disk_fact("/var/lib", Ok((50 << 30, "/")))],
        time_sync: sync(Some(Ok("NTPSynchronized=yes\n")), &[], None),
    }
}

fn statuses(report: &Report) -> Vec<(&'static str, Status)> {
    report.checks.iter().map(|c| (c.id, c.status)).collect()
}

#[test]
fn a_healthy_machine_passes_every_check_for_its_role() {
    let agent = evaluate(Role::Agent, &healthy(Role::Agent));
    assert!(agent.ok);
    assert!(
        agent.checks.iter().all(|c| c.status == Status::Pass),
        "{agent:#?}"
    );
    let ids: Vec<_> = agent.checks.iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        [
            "kernel",
            "cgroups",
            "nftables",
            "docker",
            "ports",
            "clock-skew",
            "hostname",
            "disk",
            "time-sync"
        ]
    );
    let master = evaluate(Role::Master, &healthy(Role::Master));
    assert!(master.ok);
    assert!(statuses(&master).contains(&("docker", Status::Skip)));
}

#[test]
fn one_failure_makes_the_report_not_ok_and_warnings_do_not() {
    let mut facts = healthy(Role::Agent);
    facts.nftables.nft = None;
    facts.time_sync = sync(None, &[], None);
    let warned = evaluate(Role::Agent, &facts);
    assert!(warned.ok, "{warned:#?}");
    facts.docker = Some(docker_facts(Err((DockerErrorKind::Missing, "gone"))));
    let failed = evaluate(Role::Agent, &facts);
    assert!(!failed.ok);
    assert!(statuses(&failed).contains(&("docker", Status::Fail)));
}
