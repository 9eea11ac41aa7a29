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
        members: &'static [&'static str],
        chain: Option<(&'static str, &'static str)>,
    }
    let cases = [
        Case {
            name: "three backends: random choice per connection, in address order",
            vip: "11.0.0.1:80",
            proto: Protocol::Tcp,
            backends: vec![
                b("10.0.0.3", 8080),
                b("10.0.0.1", 8080),
                b("10.0.0.2", 31000),
            ],
            element: "11.0.0.1 . tcp . 80 : goto pick4-tcp-3",
            members: &[
                "11.0.0.1 . 80 . 0 : 10.0.0.1 . 8080,",
                "11.0.0.1 . 80 . 1 : 10.0.0.2 . 31000,",
                "11.0.0.1 . 80 . 2 : 10.0.0.3 . 8080",
            ],
            chain: Some((
                "pick4-tcp-3",
                "meta l4proto tcp dnat ip to ip daddr . tcp dport . numgen random mod 3 map @backends4-tcp",
            )),
        },
        Case {
            name: "one backend",
            vip: "198.51.100.7:53",
            proto: Protocol::Udp,
            backends: vec![b("10.0.0.9", 5353)],
            element: "198.51.100.7 . udp . 53 : goto pick4-udp-1",
            members: &["198.51.100.7 . 53 . 0 : 10.0.0.9 . 5353"],
            chain: Some((
                "pick4-udp-1",
                "meta l4proto udp dnat ip to ip daddr . udp dport . numgen random mod 1 map @backends4-udp",
            )),
        },
        Case {
            name: "no backend: refused",
            vip: "11.0.0.2:80",
            proto: Protocol::Tcp,
            backends: vec![],
            element: "11.0.0.2 . tcp . 80 : goto no-backend",
            members: &[],
            chain: None,
        },
        Case {
            name: "only backends of the other family: refused",
            vip: "11.0.0.3:80",
            proto: Protocol::Tcp,
            backends: vec![b("fd00::1", 80)],
            element: "11.0.0.3 . tcp . 80 : goto no-backend",
            members: &[],
            chain: None,
        },
        Case {
            name: "IPv6",
            vip: "[fd01:c::5]:443",
            proto: Protocol::Tcp,
            backends: vec![b("fd00::2", 8443), b("fd00::1", 8443)],
            element: "fd01:c::5 . tcp . 443 : goto pick6-tcp-2",
            members: &[
                "fd01:c::5 . 443 . 0 : fd00::1 . 8443,",
                "fd01:c::5 . 443 . 1 : fd00::2 . 8443",
            ],
            chain: Some((
                "pick6-tcp-2",
                "meta l4proto tcp dnat ip6 to ip6 daddr . tcp dport . numgen random mod 2 map @backends6-tcp",
            )),
        },
    ];
    for c in cases {
        let vips = l(&[(c.vip, c.proto, &c.backends)]);
        let s = render("capstan", &vips);
        let v6 = c.vip.starts_with('[');
        let map = block(&s, "map", if v6 { "vips6" } else { "vips4" });
        assert_eq!(map[1..], ["elements = {", c.element, "}"], "{}", c.name);
        let members = block(&s, "map", &backend_map(!v6, c.proto));
        let family = if v6 { "ip6" } else { "ip" };
        assert_eq!(
            members[0],
            format!(
                "typeof {family} daddr . {p} dport . numgen random mod 1 : {family} daddr . {p} dport",
                p = c.proto
            ),
            "{}",
            c.name
        );
        if c.members.is_empty() {
            assert_eq!(members.len(), 1, "{}", c.name);
        } else {
            let mut want = vec!["elements = {"];
            want.extend(c.members);
            want.push("}");
            assert_eq!(members[1..], want, "{}", c.name);
        }
        match c.chain {
            Some((chain, rule)) => assert_eq!(block(&s, "chain", chain), [rule], "{}", c.name),
            None => assert!(!s.contains("\tchain pick"), "{}: {s}", c.name),
        }
        let addrs = block(&s, "set", if v6 { "vip-addrs6" } else { "vip-addrs4" });
        let ip = c.vip.parse::<SocketAddr>().expect("addr").ip().to_string();
        assert_eq!(addrs[1..], ["elements = {", ip.as_str(), "}"], "{}", c.name);
    }
}

#[test]
fn vips_share_one_chain_per_backend_count() {
    let three = [b("10.0.0.1", 80), b("10.0.0.2", 80), b("10.0.0.3", 80)];
    let many: Vec<(String, Protocol, &[Backend])> = (0..100u8)
        .map(|i| {
            (
                format!("11.0.1.{i}:80"),
                Protocol::Tcp,
                &three[..1 + usize::from(i % 3)],
            )
        })
        .collect();
    let entries: Vec<(&str, Protocol, &[Backend])> = many
        .iter()
        .map(|(a, p, bs)| (a.as_str(), *p, *bs))
        .collect();
    let s = render("capstan", &l(&entries));
    let chains: Vec<&str> = s
        .lines()
        .filter_map(|l| l.strip_prefix("\tchain ")?.strip_suffix(" {"))
        .collect();
    assert_eq!(
        chains,
        [
            "no-backend",
            "pick4-tcp-1",
            "pick4-tcp-2",
            "pick4-tcp-3",
            "prerouting",
            "output",
            "postrouting"
        ]
    );
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
        let model = Model::of(&s);
        let mut pick_chains = BTreeSet::new();
        let mut members = 0;
        for ((addr, proto), backends) in &t {
            // Exactly one dispatch element per VIP listener, to a chain that exists.
            let map = if addr.is_ipv4() { "vips4" } else { "vips6" };
            let backend_map = backend_map(addr.is_ipv4(), *proto);
            let backend_map = backend_map.as_str();
            let key = format!("{} . {proto} . {}", addr.ip(), addr.port());
            let target = model.lookup(map, &key);
            prop_assert!(target.is_some(), "{} {} not dispatched", addr, proto);
            let target = target.unwrap_or_default().trim_start_matches("goto ").to_string();
            prop_assert!(model.blocks.contains_key(&format!("chain {target}")), "goto {} undefined", target);
            let same: Vec<&Backend> = backends.iter().filter(|b| b.ip.is_ipv4() == addr.is_ipv4()).collect();
            if same.is_empty() {
                prop_assert_eq!(target, "no-backend");
                continue;
            }
            let rules = &model.blocks[&format!("chain {target}")];
            prop_assert_eq!(rules.len(), 1);
            let modulo = format!("numgen random mod {} map @{backend_map}", same.len());
            prop_assert!(rules.iter().any(|r| r.contains(&modulo)), "{:?}", rules);
            // Index i holds the i-th backend; there is no index past the last.
            for (i, b) in same.iter().enumerate() {
                let got = model.lookup(backend_map, &format!("{} . {} . {i}", addr.ip(), addr.port()));
                prop_assert_eq!(got, Some(format!("{} . {}", b.ip, b.port)));
            }
            prop_assert_eq!(model.lookup(backend_map, &format!("{} . {} . {}", addr.ip(), addr.port(), same.len())), None);
            members += same.len();
            pick_chains.insert(target);
        }
        // No element for a VIP that is not in the table, no chain nobody uses.
        let all_members: usize = [true, false].iter()
            .flat_map(|&v4| [Protocol::Tcp, Protocol::Udp].map(|p| backend_map(v4, p)))
            .map(|m| model.elements(&m).len())
            .sum();
        prop_assert_eq!(all_members, members);
        let defined: BTreeSet<String> = model.blocks.keys()
            .filter_map(|k| k.strip_prefix("chain pick")).map(|c| format!("pick{c}")).collect();
        prop_assert_eq!(defined, pick_chains);
    }
}

/// What a script leaves in the kernel, as nft would: each set, map and chain (`"map vips4"`,
/// `"chain pick4-tcp-2"`) with its elements or rules. [`Model::of`] reads a full render;
/// [`Model::run`] applies a change script with nft's checks (an element deleted must exist,
/// one added must not, a chain deleted must be empty and unreferenced).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    blocks: BTreeMap<String, BTreeSet<String>>,
}

impl Model {
    fn of(script: &str) -> Model {
        let mut blocks = BTreeMap::new();
        let mut current: Option<(String, BTreeSet<String>)> = None;
        let mut in_elements = false;
        for line in script.lines() {
            if let Some(head) = line.strip_prefix('\t').and_then(|l| l.strip_suffix(" {"))
                && !head.starts_with('\t')
            {
                current = Some((head.to_string(), BTreeSet::new()));
                continue;
            }
            if line == "\t}" {
                let (name, items) = current.take().expect("block open");
                blocks.insert(name, items);
                continue;
            }
            let Some((_, items)) = current.as_mut() else {
                continue;
            };
            let t = line.trim();
            if t == "elements = {" {
                in_elements = true;
            } else if t == "}" {
                in_elements = false;
            } else if in_elements {
                items.insert(t.trim_end_matches(',').to_string());
            } else if !t.starts_with("type") && !t.starts_with("flags") {
                items.insert(t.to_string());
            }
        }
        Model { blocks }
    }

    fn key(element: &str) -> &str {
        element.split(" : ").next().unwrap_or(element)
    }

    fn elements(&self, set: &str) -> Vec<&String> {
        let kind = if self.blocks.contains_key(&format!("set {set}")) {
            "set"
        } else {
            "map"
        };
        self.blocks
            .get(&format!("{kind} {set}"))
            .map(|b| b.iter().collect())
            .unwrap_or_default()
    }

    fn lookup(&self, map: &str, key: &str) -> Option<String> {
        self.elements(map)
            .into_iter()
            .find(|e| Model::key(e) == key)
            .and_then(|e| e.split_once(" : ").map(|(_, v)| v.to_string()))
    }

    fn set_name(&self, set: &str) -> String {
        ["set", "map"]
            .iter()
            .map(|k| format!("{k} {set}"))
            .find(|n| self.blocks.contains_key(n))
            .unwrap_or_else(|| panic!("no set or map {set}"))
    }

    fn run(&mut self, script: &str) {
        for line in script.lines().filter(|l| !l.starts_with('#')) {
            let words: Vec<&str> = line.splitn(5, ' ').collect();
            assert_eq!(words[2..4], ["inet", "capstan"], "{line}");
            let rest = words[4];
            match (words[0], words[1]) {
                (verb @ ("add" | "delete"), "element") => {
                    let (set, list) = rest.split_once(' ').expect("set name");
                    let list = list
                        .strip_prefix("{ ")
                        .and_then(|l| l.strip_suffix(" }"))
                        .expect("braces");
                    let name = self.set_name(set);
                    for e in list.split(", ") {
                        let items = self.blocks.get_mut(&name).expect("set");
                        let existing = items
                            .iter()
                            .find(|x| Model::key(x) == Model::key(e))
                            .cloned();
                        if verb == "add" {
                            assert!(existing.is_none(), "{line}: {e} exists");
                            if let Some((_, v)) = e.split_once(" : goto ") {
                                assert!(
                                    self.blocks.contains_key(&format!("chain {v}")),
                                    "{line}: no chain {v}"
                                );
                            }
                            self.blocks
                                .get_mut(&name)
                                .expect("set")
                                .insert(e.to_string());
                        } else {
                            assert_eq!(Model::key(e), e, "{line}: delete names keys only");
                            let existing = existing.unwrap_or_else(|| panic!("{line}: no {e}"));
                            self.blocks.get_mut(&name).expect("set").remove(&existing);
                        }
                    }
                }
                ("add", "chain") => {
                    assert!(
                        self.blocks
                            .insert(format!("chain {rest}"), BTreeSet::new())
                            .is_none(),
                        "{line}"
                    );
                }
                ("add", "rule") => {
                    let (chain, rule) = rest.split_once(' ').expect("rule");
                    let rules = self
                        .blocks
                        .get_mut(&format!("chain {chain}"))
                        .unwrap_or_else(|| panic!("{line}"));
                    rules.insert(rule.to_string());
                }
                ("flush", "chain") => {
                    self.blocks
                        .get_mut(&format!("chain {rest}"))
                        .unwrap_or_else(|| panic!("{line}"))
                        .clear();
                }
                ("delete", "chain") => {
                    let goto = format!("goto {rest}");
                    for (name, items) in &self.blocks {
                        assert!(
                            !items.iter().any(|e| e.ends_with(&goto)),
                            "{line}: still used by {name}"
                        );
                    }
                    let rules = self
                        .blocks
                        .remove(&format!("chain {rest}"))
                        .unwrap_or_else(|| panic!("{line}"));
                    assert!(rules.is_empty(), "{line}: not empty");
                }
                _ => panic!("unexpected command {line}"),
            }
        }
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
        // Backend 3 leaves: now two backends (index 2 goes, the chain is the 2-chain).
        ("11.0.0.1:80", Protocol::Tcp, &three[..2]),
        // Unchanged.
        ("11.0.0.2:80", Protocol::Tcp, &three[..1]),
        // Last backend gone: refused.
        ("11.0.0.3:80", Protocol::Tcp, &[]),
        // First backend (10.0.0.3 stays a backend, so its hairpin entry stays too).
        ("11.0.0.4:80", Protocol::Tcp, &three[2..]),
        // New.
        ("11.0.0.5:53", Protocol::Udp, &three[1..2]),
    ]);
    let s = render_changes("capstan", &before, &after).expect("changes");
    let lines: Vec<&str> = s.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "delete element inet capstan backends4-tcp { 11.0.0.1 . 80 . 2, 11.0.0.3 . 80 . 0 }",
            "delete element inet capstan vips4 { 11.0.0.1 . tcp . 80, 11.0.0.3 . tcp . 80, 11.0.0.4 . tcp . 80 }",
            "add chain inet capstan pick4-tcp-2",
            "add rule inet capstan pick4-tcp-2 meta l4proto tcp dnat ip to ip daddr . tcp dport . numgen random mod 2 map @backends4-tcp",
            "add chain inet capstan pick4-udp-1",
            "add rule inet capstan pick4-udp-1 meta l4proto udp dnat ip to ip daddr . udp dport . numgen random mod 1 map @backends4-udp",
            "add element inet capstan backends4-tcp { 11.0.0.4 . 80 . 0 : 10.0.0.3 . 80 }",
            "add element inet capstan backends4-udp { 11.0.0.5 . 53 . 0 : 10.0.0.2 . 80 }",
            "add element inet capstan vip-addrs4 { 11.0.0.5 }",
            "add element inet capstan vips4 { 11.0.0.1 . tcp . 80 : goto pick4-tcp-2, 11.0.0.3 . tcp . 80 : goto no-backend, 11.0.0.4 . tcp . 80 : goto pick4-tcp-1, 11.0.0.5 . udp . 53 : goto pick4-udp-1 }",
            "flush chain inet capstan pick4-tcp-3",
            "delete chain inet capstan pick4-tcp-3",
        ]
    );
    // A backend replaced at the same count: only its backend element changes.
    let swapped = l(&[
        ("11.0.0.1:80", Protocol::Tcp, &[three[0], three[2]]),
        ("11.0.0.2:80", Protocol::Tcp, &three[..1]),
        ("11.0.0.3:80", Protocol::Tcp, &[]),
        ("11.0.0.4:80", Protocol::Tcp, &three[2..]),
        ("11.0.0.5:53", Protocol::Udp, &three[1..2]),
    ]);
    let s = render_changes("capstan", &after, &swapped).expect("changes");
    assert_eq!(
        s.lines().skip(1).collect::<Vec<_>>(),
        [
            "delete element inet capstan backends4-tcp { 11.0.0.1 . 80 . 1 }",
            "add element inet capstan backends4-tcp { 11.0.0.1 . 80 . 1 : 10.0.0.3 . 80 }",
        ]
    );
    // Removing VIPs: elements first, chains last, nothing added.
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
    /// Applying the change script to what `render(old)` left gives exactly what `render(new)`
    /// gives, under nft's rules; an unchanged VIP's elements are never named; no change is
    /// `None`.
    #[test]
    fn changes_turn_old_into_new(old in arb_entries(), new in arb_entries()) {
        let (old, new) = (table_of(&old), table_of(&new));
        let mut model = Model::of(&render("capstan", &old));
        let want = Model::of(&render("capstan", &new));
        match render_changes("capstan", &old, &new) {
            None => prop_assert_eq!(&model, &want),
            Some(s) => {
                model.run(&s);
                prop_assert_eq!(&model, &want, "script:\n{}", s);
                let same = |t: &Listeners, k: &(SocketAddr, Protocol)| t.get(k).map(|bs| {
                    bs.iter().filter(|b| b.ip.is_ipv4() == k.0.is_ipv4()).copied().collect::<Vec<_>>()
                });
                for k in old.keys().filter(|k| same(&old, k) == same(&new, k)) {
                    let key = format!(" {} . {} . {}", k.0.ip(), k.1, k.0.port());
                    for line in s.lines().filter(|l| l.contains(" vips")) {
                        prop_assert!(
                            !line.contains(&format!("{key} :")) && !line.contains(&format!("{key},")) && !line.contains(&format!("{key} }}")),
                            "{} touches unchanged {:?}", line, k
                        );
                    }
                    let map = format!(" {} ", backend_map(k.0.is_ipv4(), k.1));
                    let member = format!(" {} . {} . ", k.0.ip(), k.0.port());
                    for line in s.lines().filter(|l| l.contains(&map)) {
                        prop_assert!(!line.contains(&member), "{} touches unchanged {:?}", line, k);
                    }
                }
            }
        }
    }
}
