//! Pure tests of the ruleset rendering: exact scripts for small tables, and properties over
//! random tables (order independence, every backend present, every VIP dispatched).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use capstan_types::vip::{AddrRange, Backend, Protocol};
use proptest::prelude::*;

use super::*;

fn b(ip: &str, port: u16) -> Backend {
    Backend {
        ip: ip.parse().expect("ip"),
        port,
    }
}

fn l(entries: &[(&str, Protocol, &[Backend])]) -> Listeners {
    entries
        .iter()
        .map(|(a, p, bs)| {
            (
                (a.parse::<SocketAddr>().expect("addr"), *p),
                bs.iter().copied().collect(),
            )
        })
        .collect()
}

/// The lines of `script` inside chain or set `name` (without the braces).
fn block<'a>(script: &'a str, kind: &str, name: &str) -> Vec<&'a str> {
    let head = format!("\t{kind} {name} {{");
    let mut lines = script.lines().skip_while(|l| *l != head);
    assert!(lines.next().is_some(), "no {kind} {name} in\n{script}");
    lines.take_while(|l| *l != "\t}").map(str::trim).collect()
}

#[test]
fn empty_table_is_valid_shape() {
    let s = render("capstan", &Listeners::new());
    let head: Vec<&str> = s.lines().skip(1).take(3).collect();
    assert_eq!(
        head,
        [
            "table inet capstan",
            "delete table inet capstan",
            "table inet capstan {"
        ]
    );
    assert!(s.ends_with("}\n"));
    // No empty element lists (nft rejects `elements = { }`).
    assert!(!s.contains("elements = {\n\t\t}"));
    assert_eq!(
        block(&s, "map", "vips4"),
        ["type ipv4_addr . inet_proto . inet_service : verdict"]
    );
    assert_eq!(
        block(&s, "chain", "prerouting"),
        [
            "type nat hook prerouting priority -110; policy accept;",
            "ct state != new accept",
            "ip daddr . meta l4proto . th dport vmap @vips4",
            "ip6 daddr . meta l4proto . th dport vmap @vips6",
            "ip daddr @guard4 goto no-backend",
            "ip6 daddr @guard6 goto no-backend",
        ]
    );
    assert_eq!(
        block(&s, "chain", "output")[0],
        "type nat hook output priority -110; policy accept;"
    );
    assert_eq!(
        block(&s, "chain", "no-backend"),
        ["meta l4proto tcp reject with tcp reset", "reject"]
    );
}

#[test]
fn rules_per_vip_as_table() {
    struct Case {
        name: &'static str,
        vip: &'static str,
        proto: Protocol,
        backends: Vec<Backend>,
        element: &'static str,
        chain: Option<(&'static str, &'static str)>,
    }
    let cases = [
        Case {
            name: "three backends: random choice per connection",
            vip: "11.0.0.1:80",
            proto: Protocol::Tcp,
            backends: vec![
                b("10.0.0.3", 8080),
                b("10.0.0.1", 8080),
                b("10.0.0.2", 31000),
            ],
            element: "11.0.0.1 . tcp . 80 : goto v4-11-0-0-1-tcp-80",
            chain: Some((
                "v4-11-0-0-1-tcp-80",
                "meta l4proto tcp dnat ip to numgen random mod 3 map { 0 : 10.0.0.1 . 8080, 1 : 10.0.0.2 . 31000, 2 : 10.0.0.3 . 8080 }",
            )),
        },
        Case {
            name: "one backend: plain DNAT",
            vip: "198.51.100.7:53",
            proto: Protocol::Udp,
            backends: vec![b("10.0.0.9", 5353)],
            element: "198.51.100.7 . udp . 53 : goto v4-198-51-100-7-udp-53",
            chain: Some((
                "v4-198-51-100-7-udp-53",
                "meta l4proto udp dnat ip to 10.0.0.9:5353",
            )),
        },
        Case {
            name: "no backend: refused",
            vip: "11.0.0.2:80",
            proto: Protocol::Tcp,
            backends: vec![],
            element: "11.0.0.2 . tcp . 80 : goto no-backend",
            chain: None,
        },
        Case {
            name: "only backends of the other family: refused",
            vip: "11.0.0.3:80",
            proto: Protocol::Tcp,
            backends: vec![b("fd00::1", 80)],
            element: "11.0.0.3 . tcp . 80 : goto no-backend",
            chain: None,
        },
        Case {
            name: "IPv6",
            vip: "[fd01:c::5]:443",
            proto: Protocol::Tcp,
            backends: vec![b("fd00::2", 8443), b("fd00::1", 8443)],
            element: "fd01:c::5 . tcp . 443 : goto v6-fd01000c000000000000000000000005-tcp-443",
            chain: Some((
                "v6-fd01000c000000000000000000000005-tcp-443",
                "meta l4proto tcp dnat ip6 to numgen random mod 2 map { 0 : fd00::1 . 8443, 1 : fd00::2 . 8443 }",
            )),
        },
    ];
    for c in cases {
        let vips = l(&[(c.vip, c.proto, &c.backends)]);
        let s = render("capstan", &vips);
        let v6 = c.vip.starts_with('[');
        let map = block(&s, "map", if v6 { "vips6" } else { "vips4" });
        assert_eq!(map[1..], ["elements = {", c.element, "}"], "{}", c.name);
        match c.chain {
            Some((chain, rule)) => assert_eq!(block(&s, "chain", chain), [rule], "{}", c.name),
            None => assert!(!s.contains("\tchain v"), "{}: {s}", c.name),
        }
        let addrs = block(&s, "set", if v6 { "vip-addrs6" } else { "vip-addrs4" });
        let ip = c.vip.parse::<SocketAddr>().expect("addr").ip().to_string();
        assert_eq!(addrs[1..], ["elements = {", ip.as_str(), "}"], "{}", c.name);
    }
}

#[test]
fn hairpin_and_guard_sets() {
    let vips = l(&[
        (
            "11.0.0.1:80",
            Protocol::Tcp,
            &[b("10.0.0.1", 80), b("10.0.0.2", 80)],
        ),
        ("11.0.0.1:81", Protocol::Tcp, &[b("10.0.0.1", 81)]),
    ]);
    let guard = Guard {
        ipv4: vec![AddrRange::parse("11.0.0.0/8").expect("range")],
        ipv6: vec![AddrRange::parse("fd01:c::/64").expect("range")],
    };
    let s = render_guarded("capstan", &vips, &guard);
    assert_eq!(
        block(&s, "set", "hairpin4"),
        [
            "type ipv4_addr . ipv4_addr",
            "elements = {",
            "10.0.0.1 . 10.0.0.1,",
            "10.0.0.2 . 10.0.0.2",
            "}"
        ]
    );
    // One address for two ports.
    assert_eq!(block(&s, "set", "vip-addrs4")[2], "11.0.0.1");
    assert_eq!(
        block(&s, "set", "guard4"),
        [
            "type ipv4_addr",
            "flags interval",
            "elements = {",
            "11.0.0.0-11.255.255.255",
            "}"
        ]
    );
    assert_eq!(
        block(&s, "set", "guard6")[3],
        "fd01:c::-fd01:c::ffff:ffff:ffff:ffff"
    );
    assert_eq!(
        block(&s, "chain", "postrouting"),
        [
            "type nat hook postrouting priority 110; policy accept;",
            "ct status dnat ct original ip daddr @vip-addrs4 ip saddr @vip-addrs4 masquerade",
            "ct status dnat ct original ip daddr @vip-addrs4 ip saddr . ip daddr @hairpin4 masquerade",
            "ct status dnat ct original ip6 daddr @vip-addrs6 ip6 saddr @vip-addrs6 masquerade",
            "ct status dnat ct original ip6 daddr @vip-addrs6 ip6 saddr . ip6 daddr @hairpin6 masquerade",
        ]
    );
}

#[test]
fn table_names() {
    assert!(valid_table_name("capstan"));
    assert!(valid_table_name("capstan-test_1"));
    assert!(!valid_table_name(""));
    assert!(!valid_table_name("1capstan"));
    assert!(!valid_table_name("cap stan"));
    assert!(!valid_table_name("cap;flush ruleset"));
    assert!(NftPlane::new("x;y").is_err());
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => (0u8..4, 0u8..4).prop_map(|(c, d)| IpAddr::V4(Ipv4Addr::new(11, 0, c, d))),
        1 => (0u16..4).prop_map(|x| IpAddr::V6(Ipv6Addr::new(0xfd01, 0xc, 0, 0, 0, 0, 0, x))),
    ]
}

fn arb_backend() -> impl Strategy<Value = Backend> {
    prop_oneof![
        4 => (0u8..8, 1u16..4).prop_map(|(d, p)| Backend { ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, d)), port: 8000 + p }),
        1 => (0u16..8, 1u16..4).prop_map(|(x, p)| Backend { ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, x)), port: 8000 + p }),
    ]
}

/// Entries of a table, possibly repeating a key (their backends then merge).
fn arb_entries() -> impl Strategy<Value = Vec<(SocketAddr, Protocol, Vec<Backend>)>> {
    prop::collection::vec(
        (
            arb_ip(),
            prop_oneof![Just(80u16), Just(443), Just(53)],
            prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)],
            prop::collection::vec(arb_backend(), 0..6),
        )
            .prop_map(|(ip, port, p, bs)| (SocketAddr::new(ip, port), p, bs)),
        0..12,
    )
}

fn table_of(entries: &[(SocketAddr, Protocol, Vec<Backend>)]) -> Listeners {
    let mut t: Listeners = BTreeMap::new();
    for (a, p, bs) in entries {
        let e = t.entry((*a, *p)).or_default();
        e.extend(bs.iter().rev().copied());
    }
    t
}

proptest! {
    #[test]
    fn same_vips_any_order_same_script(
        (entries, shuffled) in arb_entries().prop_flat_map(|e| {
            let n = e.len();
            (Just(e.clone()), Just(e).prop_shuffle().prop_map(move |s| { let _ = n; s }))
        })
    ) {
        prop_assert_eq!(render("capstan", &table_of(&entries)), render("capstan", &table_of(&shuffled)));
    }

    #[test]
    fn every_vip_has_a_rule_and_every_backend_appears(entries in arb_entries()) {
        let t = table_of(&entries);
        let s = render("capstan", &t);
        let mut defined: BTreeSet<String> = BTreeSet::new();
        for line in s.lines() {
            if let Some(name) = line.strip_prefix("\tchain ").and_then(|r| r.strip_suffix(" {")) {
                prop_assert!(defined.insert(name.to_string()), "chain {} twice", name);
            }
        }
        for ((addr, proto), backends) in &t {
            // Exactly one dispatch element per VIP listener, to a chain that exists.
            let prefix = format!("{} . {proto} . {} : goto ", addr.ip(), addr.port());
            let elements: Vec<&str> = s.lines().map(str::trim).filter(|l| l.starts_with(&prefix)).collect();
            prop_assert_eq!(elements.len(), 1, "{} {}", addr, proto);
            let target = elements[0][prefix.len()..].trim_end_matches(',');
            prop_assert!(defined.contains(target), "goto {} undefined", target);
            let same: Vec<&Backend> = backends.iter().filter(|b| b.ip.is_ipv4() == addr.is_ipv4()).collect();
            if same.is_empty() {
                prop_assert_eq!(target, "no-backend");
                continue;
            }
            let rules = block(&s, "chain", target);
            prop_assert_eq!(rules.len(), 1);
            let rule = rules[0];
            for b in &same {
                let single = b.addr().to_string();
                let mapped = format!(" : {} . {}", b.ip, b.port);
                prop_assert!(
                    if same.len() == 1 { rule.ends_with(&format!(" to {single}")) } else { rule.contains(&mapped) },
                    "backend {} missing in {}", b.addr(), rule
                );
            }
            if same.len() > 1 {
                let modulo = format!("numgen random mod {} map", same.len());
                prop_assert!(rule.contains(&modulo), "{}", rule);
            }
        }
        // No rule for a VIP that is not in the table.
        let vip_chains = defined.iter().filter(|c| c.starts_with("v4-") || c.starts_with("v6-")).count();
        let served = t.iter().filter(|((a, _), bs)| bs.iter().any(|b| b.ip.is_ipv4() == a.is_ipv4())).count();
        prop_assert_eq!(vip_chains, served);
    }
}

#[test]
fn changes_touch_only_the_changed_vips() {
    let three = [b("10.0.0.1", 80), b("10.0.0.2", 80), b("10.0.0.3", 80)];
    let before = l(&[
        ("11.0.0.1:80", Protocol::Tcp, &three),
        ("11.0.0.2:80", Protocol::Tcp, &three[..1]),
        ("11.0.0.3:80", Protocol::Tcp, &three[..1]),
        ("11.0.0.4:80", Protocol::Tcp, &[]),
    ]);
    assert_eq!(render_changes("capstan", &before, &before), None);
    let after = l(&[
        // Backend 3 leaves: only the chain's rule is replaced.
        ("11.0.0.1:80", Protocol::Tcp, &three[..2]),
        // Unchanged.
        ("11.0.0.2:80", Protocol::Tcp, &three[..1]),
        // Last backend gone: refused, its chain deleted.
        ("11.0.0.3:80", Protocol::Tcp, &[]),
        // First backend: a chain of its own (10.0.0.3 stays a backend, so its hairpin entry
        // stays too).
        ("11.0.0.4:80", Protocol::Tcp, &three[2..]),
        // New.
        ("11.0.0.5:53", Protocol::Udp, &three[1..2]),
    ]);
    let s = render_changes("capstan", &before, &after).expect("changes");
    let lines: Vec<&str> = s.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "delete element inet capstan vips4 { 11.0.0.3 . tcp . 80 }",
            "delete element inet capstan vips4 { 11.0.0.4 . tcp . 80 }",
            "flush chain inet capstan v4-11-0-0-1-tcp-80",
            "add rule inet capstan v4-11-0-0-1-tcp-80 meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.0.0.1 . 80, 1 : 10.0.0.2 . 80 }",
            "add element inet capstan vips4 { 11.0.0.3 . tcp . 80 : goto no-backend }",
            "add chain inet capstan v4-11-0-0-4-tcp-80",
            "add rule inet capstan v4-11-0-0-4-tcp-80 meta l4proto tcp dnat ip to 10.0.0.3:80",
            "add element inet capstan vips4 { 11.0.0.4 . tcp . 80 : goto v4-11-0-0-4-tcp-80 }",
            "add chain inet capstan v4-11-0-0-5-udp-53",
            "add rule inet capstan v4-11-0-0-5-udp-53 meta l4proto udp dnat ip to 10.0.0.2:80",
            "add element inet capstan vips4 { 11.0.0.5 . udp . 53 : goto v4-11-0-0-5-udp-53 }",
            "add element inet capstan vip-addrs4 { 11.0.0.5 }",
            "flush chain inet capstan v4-11-0-0-3-tcp-80",
            "delete chain inet capstan v4-11-0-0-3-tcp-80",
        ]
    );
    // Removing VIPs: elements first, chains last.
    let gone = render_changes("capstan", &after, &l(&[])).expect("changes");
    let lines: Vec<&str> = gone.lines().skip(1).collect();
    let last_element = lines
        .iter()
        .rposition(|l| l.starts_with("delete element"))
        .expect("elements");
    let first_chain = lines
        .iter()
        .position(|l| l.contains(" chain "))
        .expect("chains");
    assert!(last_element < first_chain, "{gone}");
    assert!(!gone.contains("add "), "{gone}");
}

proptest! {
    /// A change script names exactly the changed VIPs' chains, and changing nothing is `None`.
    #[test]
    fn changes_name_only_changed_chains(old in arb_entries(), new in arb_entries()) {
        let (old, new) = (table_of(&old), table_of(&new));
        let same = |t: &Listeners, k: &(SocketAddr, Protocol)| t.get(k).map(|bs| {
            bs.iter().filter(|b| b.ip.is_ipv4() == k.0.is_ipv4()).copied().collect::<Vec<_>>()
        });
        let changed: BTreeSet<String> = old.keys().chain(new.keys())
            .filter(|k| same(&old, k) != same(&new, k))
            .map(|(a, p)| vip_chain(*a, *p))
            .collect();
        match render_changes("capstan", &old, &new) {
            None => prop_assert!(changed.is_empty()),
            Some(s) => {
                for line in s.lines().skip(1) {
                    let words: Vec<&str> = line.split(' ').collect();
                    if words.get(1) == Some(&"chain") || words.get(1) == Some(&"rule") {
                        prop_assert!(changed.contains(words[4]), "{} touches an unchanged VIP", line);
                    }
                }
            }
        }
    }
}
