//! Table tests and property tests of the VIP function: label grammar, naming, address
//! allocation, backend choice by scope, state and health, and order independence.

use super::*;
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn be(s: &str) -> Backend {
    let a = sa(s);
    Backend {
        ip: a.ip(),
        port: a.port(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn port(number: u32, protocol: &str, pairs: &[(&str, &str)]) -> DiscoveredPort {
    DiscoveredPort {
        number,
        protocol: protocol.into(),
        labels: labels(pairs),
    }
}

/// A RUNNING marathon task on agent 10.0.0.2 without health check.
fn task(ports: Vec<DiscoveredPort>) -> VipTask {
    VipTask {
        framework: "marathon".into(),
        agent_ip: Some(ip("10.0.0.2")),
        discovery_ports: ports,
        ..Default::default()
    }
}

fn named(name: &str, port: u16, protocol: Protocol) -> VipKey {
    VipKey {
        vip: VipAddr::Named {
            name: name.into(),
            port,
        },
        protocol,
    }
}

fn ipkey(addr: &str, protocol: Protocol) -> VipKey {
    VipKey {
        vip: VipAddr::Ip(sa(addr)),
        protocol,
    }
}

fn backends(t: &VipTable, key: &VipKey) -> Vec<Backend> {
    t.vips
        .get(key)
        .map(|v| v.backends.iter().copied().collect())
        .unwrap_or_default()
}

const MYAPP: &str = "myapp.marathon.l4lb.thisdcos.directory";

#[test]
fn vip_keys_start_with_vip_in_either_case() {
    for (key, want) in [
        ("VIP_0", true),
        ("VIP_12", true),
        ("vip-web", true),
        ("VIP", true),
        ("Vip_0", false),
        ("network-scope", false),
        ("xVIP_0", false),
    ] {
        assert_eq!(is_vip_key(key), want, "{key}");
    }
}

#[test]
fn vip_values_parse_as_dc_os_does() {
    let named = |label: &str, port| {
        Ok(VipTarget::Named {
            label: label.into(),
            port,
        })
    };
    let table: Vec<(&str, Result<VipTarget, VipLabelError>)> = vec![
        ("/myapp:5555", named("/myapp", 5555)),
        ("myapp:5555", named("myapp", 5555)),
        ("/mygroup/myapp:80", named("/mygroup/myapp", 80)),
        (" /my.app:80 ", named("/my.app", 80)),
        ("198.51.100.7:80", Ok(VipTarget::Ip(sa("198.51.100.7:80")))),
        ("fd00::7:80", Ok(VipTarget::Ip(sa("[fd00::7]:80")))),
        ("[fd00::7]:443", Ok(VipTarget::Ip(sa("[fd00::7]:443")))),
        // Not a strict IP: a name (dcos-net parses the left part strictly).
        ("198.51.100:80", named("198.51.100", 80)),
        ("myapp", Err(VipLabelError::NoPort("myapp".into()))),
        ("myapp:0", Err(VipLabelError::BadPort("myapp:0".into()))),
        (
            "myapp:70000",
            Err(VipLabelError::BadPort("myapp:70000".into())),
        ),
        (
            "myapp:http",
            Err(VipLabelError::BadPort("myapp:http".into())),
        ),
        ("/:80", Err(VipLabelError::NoName("/:80".into()))),
        (":80", Err(VipLabelError::NoName(":80".into()))),
    ];
    for (value, want) in table {
        assert_eq!(parse_vip_value(value), want, "{value:?}");
    }
}

#[test]
fn legacy_task_labels_are_ip_vips_on_a_port_index() {
    assert_eq!(
        parse_legacy_vip("VIP_PORT1", "tcp://10.1.2.3:5000"),
        Some(Ok((1, Protocol::Tcp, sa("10.1.2.3:5000"))))
    );
    assert_eq!(
        parse_legacy_vip("VIP_PORT0", "UDP://10.1.2.3:53"),
        Some(Ok((0, Protocol::Udp, sa("10.1.2.3:53"))))
    );
    for bad in [
        "10.1.2.3:5000",
        "http://10.1.2.3:80",
        "tcp://name:80",
        "tcp://10.1.2.3",
    ] {
        assert!(
            matches!(parse_legacy_vip("VIP_PORT0", bad), Some(Err(_))),
            "{bad}"
        );
    }
    assert_eq!(parse_legacy_vip("VIP_0", "tcp://10.1.2.3:1"), None);
    assert_eq!(parse_legacy_vip("VIP_PORTx", "tcp://10.1.2.3:1"), None);
}

#[test]
fn names_follow_dc_os_character_rules() {
    let table: &[(&str, &str, Option<&str>)] = &[
        (
            "/mygroup/myapp",
            "marathon",
            Some("mygroupmyapp.marathon.l4lb.thisdcos.directory"),
        ),
        ("/myapp", "marathon", Some(MYAPP)),
        ("myapp", "marathon", Some(MYAPP)),
        (
            "My_App",
            "marathon",
            Some("my-app.marathon.l4lb.thisdcos.directory"),
        ),
        (
            "my.app",
            "marathon",
            Some("my.app.marathon.l4lb.thisdcos.directory"),
        ),
        ("-web-", "Kafka", Some("web.kafka.l4lb.thisdcos.directory")),
        (
            "broker",
            "data.kafka",
            Some("broker.data.kafka.l4lb.thisdcos.directory"),
        ),
        ("/", "marathon", None),
        ("web", "!!!", None),
    ];
    for (label, fw, want) in table {
        assert_eq!(vip_name(label, fw).as_deref(), *want, "{label} {fw}");
    }
    assert_eq!(sanitize_label(&"a".repeat(100)).len(), 63);
    assert_eq!(
        sanitize_label(&format!("{}-b", "a".repeat(62))),
        "a".repeat(62)
    );
    assert_eq!(domain_frag("a..b."), "a.b");
}

#[test]
fn ranges_parse_as_cidr_or_first_last() {
    let r = AddrRange::<Ipv4Addr>::parse("11.0.0.0/8").unwrap();
    assert_eq!(
        (r.first, r.last),
        (Ipv4Addr::new(11, 0, 0, 0), Ipv4Addr::new(11, 255, 255, 255))
    );
    assert_eq!(r.size(), 1 << 24);
    let r = AddrRange::<Ipv4Addr>::parse("11.2.3.4/30").unwrap();
    assert_eq!(
        (r.first, r.last),
        (Ipv4Addr::new(11, 2, 3, 4), Ipv4Addr::new(11, 2, 3, 7))
    );
    let r = AddrRange::<Ipv4Addr>::parse("198.18.0.10 - 198.18.0.20").unwrap();
    assert_eq!(r.size(), 11);
    assert!(r.contains(Ipv4Addr::new(198, 18, 0, 15)));
    let r = AddrRange::<Ipv6Addr>::parse("fd01:c::/64").unwrap();
    assert_eq!(r.size(), 1 << 64);
    assert_eq!(
        AddrRange::<Ipv4Addr>::parse("0.0.0.0/0").unwrap().size(),
        1 << 32
    );
    assert_eq!(
        AddrRange::<Ipv6Addr>::parse("::/0").unwrap().size(),
        u128::MAX
    );
    for bad in [
        "11.0.0.0",
        "11.0.0.0/33",
        "x/8",
        "fd01::/64",
        "11.0.0.9-11.0.0.1",
    ] {
        assert!(AddrRange::<Ipv4Addr>::parse(bad).is_err(), "{bad}");
    }
    let d = VipConfig::default();
    assert_eq!(d.ipv4.size(), (1 << 24) - 1);
    assert_eq!(AddrRange::parse(DEFAULT_NAMED_IPV4), Ok(d.ipv4));
    assert_eq!(AddrRange::parse(DEFAULT_NAMED_IPV6).ok(), d.ipv6);
}

#[test]
fn backends_follow_the_network_scope() {
    let host = task(vec![port(
        31000,
        "tcp",
        &[("VIP_0", "/host:80"), ("network-scope", "host")],
    )]);
    let mut bridge = task(vec![port(
        31001,
        "tcp",
        &[("VIP_0", "/bridge:80"), ("network-scope", "host")],
    )]);
    bridge.container_ips = vec![ip("172.17.0.2")];
    let mut overlay = task(vec![port(
        8080,
        "tcp",
        &[("VIP_0", "/overlay:80"), ("network-scope", "container")],
    )]);
    overlay.container_ips = vec![ip("9.0.0.5")];
    // Container scope without a container address: the task's address is the agent's.
    let nocip = task(vec![port(
        8081,
        "tcp",
        &[("VIP_0", "/nocip:80"), ("network-scope", "container")],
    )]);
    // No scope label (another framework): a mapped host port is reached on the agent...
    let mut mapped = task(vec![port(31002, "tcp", &[("VIP_0", "/mapped:80")])]);
    mapped.container_ips = vec![ip("172.17.0.3")];
    mapped.port_mappings = vec![MappedPort {
        host_port: 31002,
        container_port: 80,
        protocol: "tcp".into(),
    }];
    // ...anything else on the task's own address.
    let mut plain = task(vec![port(9000, "", &[("VIP_0", "/plain:80")])]);
    plain.container_ips = vec![ip("9.0.0.6")];
    let t = VipTable::build(
        [&host, &bridge, &overlay, &nocip, &mapped, &plain],
        &VipConfig::default(),
    );
    let n = |l: &str| {
        named(
            &format!("{l}.marathon.l4lb.thisdcos.directory"),
            80,
            Protocol::Tcp,
        )
    };
    assert_eq!(backends(&t, &n("host")), [be("10.0.0.2:31000")]);
    assert_eq!(backends(&t, &n("bridge")), [be("10.0.0.2:31001")]);
    assert_eq!(backends(&t, &n("overlay")), [be("9.0.0.5:8080")]);
    assert_eq!(backends(&t, &n("nocip")), [be("10.0.0.2:8081")]);
    assert_eq!(backends(&t, &n("mapped")), [be("10.0.0.2:31002")]);
    assert_eq!(backends(&t, &n("plain")), [be("9.0.0.6:9000")]);
    assert!(t.unallocated.is_empty());
}

#[test]
fn several_vips_per_port_and_one_vip_over_several_apps() {
    let a = task(vec![
        port(
            31000,
            "tcp",
            &[
                ("VIP_0", "/myapp:80"),
                ("VIP_1", "/shared:5000"),
                ("network-scope", "host"),
            ],
        ),
        // Ports with number 0 and unknown protocols are ignored.
        port(0, "tcp", &[("VIP_0", "/zero:1")]),
        port(31001, "sctp", &[("VIP_0", "/sctp:1")]),
        // A bad value is skipped, the good one on the same port kept.
        port(
            31002,
            "udp,tcp",
            &[("VIP_0", "broken"), ("vip_dns", "198.51.100.7:53")],
        ),
    ]);
    let mut b = task(vec![port(
        31005,
        "TCP",
        &[("VIP_0", "shared:5000"), ("VIP_1", "myapp:80")],
    )]);
    b.agent_ip = Some(ip("10.0.0.3"));
    let t = VipTable::build([&a, &b], &VipConfig::default());
    let shared = "shared.marathon.l4lb.thisdcos.directory";
    assert_eq!(
        backends(&t, &named(MYAPP, 80, Protocol::Tcp)),
        [be("10.0.0.2:31000"), be("10.0.0.3:31005")],
        "`/myapp` and `myapp` are one VIP"
    );
    assert_eq!(
        backends(&t, &named(shared, 5000, Protocol::Tcp)),
        [be("10.0.0.2:31000"), be("10.0.0.3:31005")]
    );
    for proto in [Protocol::Tcp, Protocol::Udp] {
        assert_eq!(
            backends(&t, &ipkey("198.51.100.7:53", proto)),
            [be("10.0.0.2:31002")]
        );
    }
    assert_eq!(t.vips.len(), 4, "{:?}", t.vips.keys().collect::<Vec<_>>());
    let ips = t.named_addresses();
    assert_eq!(ips.len(), 2);
    assert_ne!(ips[MYAPP], ips[shared]);
    // The IP VIP is reached at its own address.
    let l = t.listeners();
    assert_eq!(
        l[&(sa("198.51.100.7:53"), Protocol::Udp)],
        BTreeSet::from([be("10.0.0.2:31002")])
    );
}

#[test]
fn only_serving_tasks_are_backends_but_published_ones_keep_the_vip() {
    let mk = |state, check, healthy| {
        let mut t = task(vec![port(
            31000,
            "tcp",
            &[("VIP_0", "/myapp:80"), ("network-scope", "host")],
        )]);
        t.state = state;
        t.has_health_check = check;
        t.healthy = healthy;
        t
    };
    use TaskState::*;
    // (state, has check, healthy) → (VIP exists, is a backend)
    let table = [
        (Running, false, None, true, true),
        (Running, false, Some(false), true, true),
        (Running, true, None, true, false),
        (Running, true, Some(false), true, false),
        (Running, true, Some(true), true, true),
        (Killing, false, None, true, false),
        (Staging, false, None, false, false),
        (Starting, false, None, false, false),
        (Unreachable, false, None, false, false),
        (Finished, false, None, false, false),
        (Killed, false, None, false, false),
        (Lost, false, None, false, false),
    ];
    let key = named(MYAPP, 80, Protocol::Tcp);
    for (state, check, healthy, exists, serves) in table {
        let t = VipTable::build([&mk(state, check, healthy)], &VipConfig::default());
        let case = format!("{state} check={check} healthy={healthy:?}");
        assert_eq!(t.vips.contains_key(&key), exists, "{case}");
        assert_eq!(!backends(&t, &key).is_empty(), serves, "{case}");
        assert_eq!(t.named_addresses().contains_key(MYAPP), exists, "{case}");
    }
    // A task on an unknown (lost) agent with host scope has no address: no VIP.
    let mut lost = mk(Running, false, None);
    lost.agent_ip = None;
    assert!(
        VipTable::build([&lost], &VipConfig::default())
            .vips
            .is_empty()
    );
}

#[test]
fn families_get_their_own_addresses() {
    let mut dual = task(vec![port(
        8080,
        "tcp",
        &[
            ("VIP_0", "/dual:80"),
            ("VIP_1", "198.51.100.9:80"),
            ("VIP_2", "[fd00::9]:80"),
            ("network-scope", "container"),
        ],
    )]);
    dual.container_ips = vec![ip("9.0.0.5"), ip("fd00::5")];
    let cfg = VipConfig::default();
    let t = VipTable::build([&dual], &cfg);
    let name = "dual.marathon.l4lb.thisdcos.directory";
    let vip = &t.vips[&named(name, 80, Protocol::Tcp)];
    let (v4, v6) = (vip.ipv4.unwrap(), vip.ipv6.unwrap());
    assert!(cfg.ipv4.contains(v4) && cfg.ipv6.unwrap().contains(v6));
    assert_eq!(
        backends(&t, &ipkey("198.51.100.9:80", Protocol::Tcp)),
        [be("9.0.0.5:8080")]
    );
    assert_eq!(
        backends(&t, &ipkey("[fd00::9]:80", Protocol::Tcp)),
        [be("[fd00::5]:8080")]
    );
    let l = t.listeners();
    assert_eq!(
        l[&(SocketAddr::new(v4.into(), 80), Protocol::Tcp)],
        BTreeSet::from([be("9.0.0.5:8080")])
    );
    assert_eq!(
        l[&(SocketAddr::new(v6.into(), 80), Protocol::Tcp)],
        BTreeSet::from([be("[fd00::5]:8080")])
    );
    assert_eq!(
        t.named_addresses()[name],
        vec![IpAddr::V4(v4), IpAddr::V6(v6)]
    );
    // Without an IPv6 range the name keeps its IPv4 address; the IPv6 side is unallocated.
    let t = VipTable::build([&dual], &VipConfig { ipv6: None, ..cfg });
    let vip = &t.vips[&named(name, 80, Protocol::Tcp)];
    assert_eq!((vip.ipv4, vip.ipv6), (Some(v4), None));
    assert_eq!(t.unallocated, BTreeSet::from([name.to_owned()]));
}

#[test]
fn legacy_vip_port_labels_use_the_agent_and_the_indexed_port() {
    let mut t = task(vec![]);
    t.ports = vec![31000, 31001];
    t.labels = labels(&[
        ("VIP_PORT1", "tcp://10.9.9.9:5000"),
        ("VIP_PORT7", "tcp://10.9.9.8:1"),
    ]);
    let table = VipTable::build([&t], &VipConfig::default());
    assert_eq!(
        backends(&table, &ipkey("10.9.9.9:5000", Protocol::Tcp)),
        [be("10.0.0.2:31001")]
    );
    assert_eq!(table.vips.len(), 1, "index 7 has no port");
}

#[test]
fn a_full_range_leaves_the_largest_names_unallocated() {
    let cfg = VipConfig {
        ipv4: AddrRange::parse("198.18.0.0/30").unwrap(),
        ipv6: None,
    };
    let tasks: Vec<VipTask> = (0..6)
        .map(|i| {
            task(vec![port(
                31000,
                "tcp",
                &[("VIP_0", &format!("/app{i}:80"))],
            )])
        })
        .collect();
    let t = VipTable::build(&tasks, &cfg);
    let addrs = t.named_addresses();
    let given: BTreeSet<IpAddr> = addrs.values().flatten().copied().collect();
    assert_eq!(given.len(), 4, "every address used once");
    assert_eq!(t.unallocated.len(), 2);
    assert!(addrs.values().filter(|v| v.is_empty()).count() == 2);
}

#[test]
fn the_hash_is_pinned() {
    // Changing the hash moves every VIP of every cluster on upgrade: make that deliberate.
    let cfg = VipConfig::default();
    let t = VipTable::build(
        [&task(vec![port(31000, "tcp", &[("VIP_0", "/myapp:5555")])])],
        &cfg,
    );
    let home = cfg.ipv4.first.to_u128() + probe(MYAPP, 0, cfg.ipv4.size());
    assert_eq!(
        t.named_addresses()[MYAPP],
        vec![IpAddr::V4(Ipv4Addr::from_u128(home))]
    );
    assert_eq!(t.named_addresses()[MYAPP], vec![ip("11.54.138.203")]);
    assert_eq!(
        hash64("myapp.marathon.l4lb.thisdcos.directory", 0, 0),
        0x3d8a_9a5f_064f_b67f
    );
}

// ---- properties ----

fn arb_task() -> impl Strategy<Value = VipTask> {
    let name = prop_oneof![Just("a"), Just("b"), Just("c"), Just("grp/d"), Just("e.f")];
    let port_label = (name, 1u16..4, any::<bool>())
        .prop_map(|(n, p, slash)| format!("{}{n}:{p}", if slash { "/" } else { "" }));
    let disc = (
        prop_oneof![Just(0u32), 8080u32..8083, 31000u32..31003],
        prop_oneof![Just("tcp"), Just("udp"), Just("udp,tcp"), Just("")],
        proptest::collection::vec(port_label, 0..3),
        prop_oneof![Just(None), Just(Some("host")), Just(Some("container"))],
    )
        .prop_map(|(number, proto, vips, scope)| {
            let mut labels: Vec<(String, String)> = vips
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("VIP_{i}"), v))
                .collect();
            if let Some(s) = scope {
                labels.push(("network-scope".into(), s.into()));
            }
            DiscoveredPort {
                number,
                protocol: proto.into(),
                labels,
            }
        });
    let state = prop_oneof![
        Just(TaskState::Running),
        Just(TaskState::Killing),
        Just(TaskState::Staging),
        Just(TaskState::Killed)
    ];
    (
        prop_oneof![Just("marathon"), Just("kafka")],
        state,
        any::<bool>(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0u8..4),
        proptest::collection::vec(0u8..4, 0..2),
        proptest::collection::vec(disc, 0..3),
    )
        .prop_map(
            |(fw, state, check, healthy, agent, cips, discovery_ports)| VipTask {
                framework: fw.into(),
                state,
                has_health_check: check,
                healthy,
                agent_ip: agent.map(|a| IpAddr::V4(Ipv4Addr::new(10, 0, 0, a))),
                container_ips: cips
                    .into_iter()
                    .map(|c| IpAddr::V4(Ipv4Addr::new(9, 0, 0, c)))
                    .collect(),
                discovery_ports,
                ..Default::default()
            },
        )
}

fn arb_names() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set("[a-z]{1,6}", 0..40).prop_map(|s| s.into_iter().collect())
}

fn named_tasks(names: &[String]) -> Vec<VipTask> {
    names
        .iter()
        .map(|n| task(vec![port(31000, "tcp", &[("VIP_0", &format!("/{n}:80"))])]))
        .collect()
}

proptest! {
    #[test]
    fn the_same_tasks_in_any_order_give_the_same_table(
        (tasks, shuffled) in proptest::collection::vec(arb_task(), 0..12)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        tiny in any::<bool>(),
    ) {
        let cfg = if tiny {
            VipConfig { ipv4: AddrRange::parse("198.18.0.0/30").unwrap(), ipv6: None }
        } else {
            VipConfig::default()
        };
        let a = VipTable::build(&tasks, &cfg);
        let b = VipTable::build(&shuffled, &cfg);
        prop_assert_eq!(&a, &b);
        // Every backend comes from a serving task.
        let serving: BTreeSet<IpAddr> = tasks.iter().filter(|t| t.serving())
            .flat_map(|t| t.agent_ip.into_iter().chain(t.container_ips.iter().copied()))
            .collect();
        for vip in a.vips.values() {
            for b in &vip.backends {
                prop_assert!(serving.contains(&b.ip));
            }
        }
    }

    #[test]
    fn collisions_resolve_the_same_way_on_every_node(
        (names, shuffled) in arb_names().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        prefix in 26u32..31,
    ) {
        let cfg = VipConfig {
            ipv4: AddrRange::parse(&format!("198.18.0.0/{prefix}")).unwrap(),
            ipv6: None,
        };
        let size = cfg.ipv4.size() as usize;
        let a = VipTable::build(&named_tasks(&names), &cfg);
        let b = VipTable::build(&named_tasks(&shuffled), &cfg);
        prop_assert_eq!(&a, &b);
        let addrs = a.named_addresses();
        let given: Vec<IpAddr> = addrs.values().flatten().copied().collect();
        let distinct: BTreeSet<IpAddr> = given.iter().copied().collect();
        prop_assert_eq!(given.len(), distinct.len(), "no address given twice");
        prop_assert_eq!(given.len(), names.len().min(size));
        prop_assert_eq!(a.unallocated.len(), names.len().saturating_sub(size));
        for ip in &given {
            let IpAddr::V4(v4) = ip else { panic!("v4 range") };
            prop_assert!(cfg.ipv4.contains(*v4));
        }
    }

    #[test]
    fn a_name_nobody_collides_with_keeps_its_home_address(names in arb_names()) {
        let cfg = VipConfig::default();
        let size = cfg.ipv4.size();
        let fq: Vec<String> = names.iter()
            .map(|n| format!("{n}.marathon.l4lb.thisdcos.directory"))
            .collect();
        let t = VipTable::build(&named_tasks(&names), &cfg);
        let addrs = t.named_addresses();
        for n in &fq {
            let home = probe(n, 0, size);
            if fq.iter().filter(|m| probe(m, 0, size) == home).count() == 1 {
                let want = IpAddr::V4(Ipv4Addr::from_u128(cfg.ipv4.first.to_u128() + home));
                prop_assert_eq!(&addrs[n.as_str()], &vec![want]);
            }
        }
    }
}
