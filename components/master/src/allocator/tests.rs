use std::collections::BTreeMap;

use proptest::prelude::*;

use capstan_types::{AgentId, FrameworkId};

use super::*;
use crate::resources::{Pools, Resources, pools_sum};

fn agent_pools(cpus: f64, mem: f64, ports: (u64, u64)) -> Pools {
    let mut p = Pools::new();
    p.insert(
        "*".into(),
        Resources::default()
            .scalar("cpus", cpus)
            .scalar("mem", mem)
            .range("ports", ports.0, ports.1),
    );
    p
}

fn public_pools(cpus: f64) -> Pools {
    let mut p = Pools::new();
    p.insert(
        "slave_public".into(),
        Resources::default().scalar("cpus", cpus),
    );
    p
}

fn roles(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| s.to_string()).collect()
}

#[test]
fn each_agent_is_offered_to_one_framework_and_never_twice() {
    let mut a = Allocator::new();
    a.add_agent(
        &"a1".into(),
        agent_pools(4.0, 1024.0, (31000, 31100)),
        &BTreeMap::new(),
    );
    a.add_framework(&"f1".into(), roles(&["*"]), &[]);
    a.add_framework(&"f2".into(), roles(&["*"]), &[]);
    let g = a.allocate(0);
    assert_eq!(g.len(), 1);
    assert!(
        a.allocate(1).is_empty(),
        "offered resources are not offered again"
    );
    a.check_invariants().unwrap();
}

#[test]
fn drf_spreads_agents_across_frameworks_fairly() {
    let mut a = Allocator::new();
    for i in 0..10 {
        a.add_agent(
            &format!("a{i}").into(),
            agent_pools(1.0, 100.0, (1, 10)),
            &BTreeMap::new(),
        );
    }
    a.add_framework(&"f1".into(), roles(&["*"]), &[]);
    a.add_framework(&"f2".into(), roles(&["*"]), &[]);
    let g = a.allocate(0);
    assert_eq!(g.len(), 10);
    let f1 = g.iter().filter(|g| g.framework == "f1").count();
    assert_eq!(f1, 5, "each framework gets half the agents: {g:?}");
}

#[test]
fn drf_favours_the_framework_with_the_smaller_dominant_share() {
    let mut a = Allocator::new();
    a.add_agent(
        &"a1".into(),
        agent_pools(4.0, 400.0, (1, 10)),
        &BTreeMap::new(),
    );
    a.add_agent(
        &"a2".into(),
        agent_pools(4.0, 400.0, (1, 10)),
        &BTreeMap::new(),
    );
    a.add_framework(&"big".into(), roles(&["*"]), &[]);
    // "big" already runs on a1.
    let mut used = Pools::new();
    used.insert("*".into(), Resources::default().scalar("cpus", 3.0));
    assert!(a.charge(&"big".into(), &"a1".into(), &used));
    a.add_framework(&"small".into(), roles(&["*"]), &[]);
    let g = a.allocate(0);
    let to_small: Vec<&str> = g
        .iter()
        .filter(|g| g.framework == "small")
        .map(|g| g.agent.as_str())
        .collect();
    assert!(to_small.contains(&"a1"), "{g:?}");
    a.check_invariants().unwrap();
}

#[test]
fn declined_resources_are_filtered_until_refuse_seconds_pass() {
    let mut a = Allocator::new();
    a.add_agent(
        &"a1".into(),
        agent_pools(1.0, 100.0, (1, 10)),
        &BTreeMap::new(),
    );
    a.add_framework(&"f1".into(), roles(&["*"]), &[]);
    let g = a.allocate(0).remove(0);
    a.recover(&"f1".into(), &"a1".into(), &g.resources);
    a.add_filter(&"f1".into(), &"a1".into(), 0, 5000, &g.resources);
    assert!(a.allocate(1000).is_empty());
    assert_eq!(a.allocate(5000).len(), 1);
}

#[test]
fn a_filter_does_not_block_more_resources_than_were_refused() {
    let mut a = Allocator::new();
    a.add_agent(
        &"a1".into(),
        agent_pools(2.0, 200.0, (1, 10)),
        &BTreeMap::new(),
    );
    a.add_framework(&"f1".into(), roles(&["*"]), &[]);
    let g = a.allocate(0).remove(0);
    // Use half, refuse the rest for a long time.
    let mut used = Pools::new();
    used.insert(
        "*".into(),
        Resources::default()
            .scalar("cpus", 1.0)
            .scalar("mem", 100.0),
    );
    let mut rest = g.resources.clone();
    assert!(crate::resources::pools_checked_sub(&mut rest, &used));
    a.recover(&"f1".into(), &"a1".into(), &rest);
    a.add_filter(&"f1".into(), &"a1".into(), 0, 1_000_000, &rest);
    assert!(
        a.allocate(1).is_empty(),
        "the refused remainder is filtered"
    );
    // The task ends: now more than the refused resources are available.
    a.recover(&"f1".into(), &"a1".into(), &used);
    assert_eq!(a.allocate(2).len(), 1);
    a.check_invariants().unwrap();
}

#[test]
fn revive_clears_filters_and_suppress_stops_offers() {
    let mut a = Allocator::new();
    a.add_agent(
        &"a1".into(),
        agent_pools(1.0, 100.0, (1, 10)),
        &BTreeMap::new(),
    );
    a.add_framework(&"f1".into(), roles(&["*"]), &[]);
    a.suppress(&"f1".into(), &[]);
    assert!(a.allocate(0).is_empty());
    a.revive(&"f1".into(), &[]);
    let g = a.allocate(0).remove(0);
    a.recover(&"f1".into(), &"a1".into(), &g.resources);
    a.add_filter(&"f1".into(), &"a1".into(), 0, 1_000_000, &g.resources);
    assert!(a.allocate(1).is_empty());
    a.revive(&"f1".into(), &[]);
    assert_eq!(a.allocate(2).len(), 1);
}

#[test]
fn public_agents_are_offered_only_to_the_slave_public_role() {
    let mut a = Allocator::new();
    a.add_agent(&"pub".into(), public_pools(2.0), &BTreeMap::new());
    a.add_framework(&"f1".into(), roles(&["*"]), &[]);
    assert!(a.allocate(0).is_empty());
    a.add_framework(&"f2".into(), roles(&["slave_public"]), &[]);
    let g = a.allocate(0);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].framework, "f2");
    assert_eq!(g[0].role, "slave_public");
}

#[test]
fn removing_a_framework_returns_its_resources() {
    let mut a = Allocator::new();
    a.add_agent(
        &"a1".into(),
        agent_pools(1.0, 100.0, (1, 10)),
        &BTreeMap::new(),
    );
    a.add_framework(&"f1".into(), roles(&["*"]), &[]);
    assert_eq!(a.allocate(0).len(), 1);
    a.remove_framework(&"f1".into());
    a.add_framework(&"f2".into(), roles(&["*"]), &[]);
    assert_eq!(a.allocate(0).len(), 1);
    a.check_invariants().unwrap();
}

#[test]
fn inactive_agents_and_frameworks_get_no_offers() {
    let mut a = Allocator::new();
    a.add_agent(
        &"a1".into(),
        agent_pools(1.0, 100.0, (1, 10)),
        &BTreeMap::new(),
    );
    a.add_framework(&"f1".into(), roles(&["*"]), &[]);
    a.set_agent_active(&"a1".into(), false);
    assert!(a.allocate(0).is_empty());
    a.set_agent_active(&"a1".into(), true);
    a.set_framework_active(&"f1".into(), false);
    assert!(a.allocate(0).is_empty());
    a.set_framework_active(&"f1".into(), true);
    assert_eq!(a.allocate(0).len(), 1);
}

#[derive(Clone, Debug)]
enum Op {
    AddAgent(u8, u8, u8),
    RemoveAgent(u8),
    AddFramework(u8, bool),
    RemoveFramework(u8),
    Allocate,
    /// Use a fraction (in tenths) of grant #i, recover the rest.
    UsePart(u8, u8),
    /// Finish: recover half of what framework holds on agent.
    Release(u8, u8),
    Decline(u8, u16),
    Revive(u8),
    Suppress(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 1u8..8, 0u8..2).prop_map(|(a, c, p)| Op::AddAgent(a, c, p)),
        (0u8..6).prop_map(Op::RemoveAgent),
        (0u8..4, any::<bool>()).prop_map(|(f, p)| Op::AddFramework(f, p)),
        (0u8..4).prop_map(Op::RemoveFramework),
        Just(Op::Allocate),
        Just(Op::Allocate),
        (0u8..8, 0u8..=10).prop_map(|(i, t)| Op::UsePart(i, t)),
        (0u8..4, 0u8..6).prop_map(|(f, a)| Op::Release(f, a)),
        (0u8..8, 0u16..3000).prop_map(|(i, s)| Op::Decline(i, s)),
        (0u8..4).prop_map(Op::Revive),
        (0u8..4).prop_map(Op::Suppress),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn resources_are_never_offered_twice_or_over_committed(ops in prop::collection::vec(op(), 1..60)) {
        let mut a = Allocator::new();
        let mut outstanding: Vec<Grant> = Vec::new();
        let mut now = 0u64;
        for op in ops {
            now += 100;
            match op {
                Op::AddAgent(i, cpus, public) => {
                    let id = AgentId::from(format!("a{i}"));
                    outstanding.retain(|g| g.agent != id);
                    let pools = if public == 1 {
                        public_pools(cpus as f64)
                    } else {
                        agent_pools(cpus as f64 / 2.0, cpus as f64 * 100.0, (1000, 1000 + cpus as u64))
                    };
                    a.add_agent(&id, pools, &BTreeMap::new());
                }
                Op::RemoveAgent(i) => {
                    let id = AgentId::from(format!("a{i}"));
                    outstanding.retain(|g| g.agent != id);
                    a.remove_agent(&id);
                }
                Op::AddFramework(f, public) => {
                    let r = if public { roles(&["slave_public", "*"]) } else { roles(&["*"]) };
                    a.add_framework(&format!("f{f}").into(), r, &[]);
                }
                Op::RemoveFramework(f) => {
                    let id = FrameworkId::from(format!("f{f}"));
                    outstanding.retain(|g| g.framework != id);
                    a.remove_framework(&id);
                }
                Op::Allocate => {
                    let grants = a.allocate(now);
                    for g in &grants {
                        // A grant never overlaps an outstanding grant on the same agent.
                        for o in outstanding.iter().filter(|o| o.agent == g.agent) {
                            for (role, r) in &g.resources {
                                if let Some(or) = o.resources.get(role) {
                                    for (k, v) in &r.ranges {
                                        if let Some(ov) = or.ranges.get(k) {
                                            prop_assert!(ov.subtract(v) == *ov, "ranges offered twice");
                                        }
                                    }
                                }
                            }
                        }
                    }
                    outstanding.extend(grants);
                }
                Op::UsePart(i, tenths) => {
                    if outstanding.is_empty() { continue; }
                    let g = outstanding.remove(i as usize % outstanding.len());
                    let mut rest = Pools::new();
                    for (role, r) in &g.resources {
                        let mut back = Resources::default();
                        for (k, v) in &r.scalars {
                            back.scalars.insert(k.clone(), v * (10 - tenths as i64) / 10);
                        }
                        rest.insert(role.clone(), back);
                    }
                    a.recover(&g.framework, &g.agent, &rest);
                }
                Op::Release(f, ag) => {
                    let (fid, aid) = (FrameworkId::from(format!("f{f}")), AgentId::from(format!("a{ag}")));
                    if let Some(held) = a.allocated(&fid, &aid).cloned() {
                        let mut half = Pools::new();
                        for (role, r) in &held {
                            let mut h = Resources::default();
                            for (k, v) in &r.scalars { h.scalars.insert(k.clone(), v / 2); }
                            half.insert(role.clone(), h);
                        }
                        a.recover(&fid, &aid, &half);
                    }
                }
                Op::Decline(i, ms) => {
                    if outstanding.is_empty() { continue; }
                    let g = outstanding.remove(i as usize % outstanding.len());
                    a.recover(&g.framework, &g.agent, &g.resources);
                    a.add_filter(&g.framework, &g.agent, now, ms as u64, &g.resources);
                }
                Op::Revive(f) => a.revive(&format!("f{f}").into(), &[]),
                Op::Suppress(f) => a.suppress(&format!("f{f}").into(), &[]),
            }
            if let Err(e) = a.check_invariants() {
                prop_assert!(false, "{}", e);
            }
            // Nothing available is negative.
            for i in 0..6 {
                if let Some(p) = a.agent_available(&format!("a{i}").into()) {
                    let s = pools_sum(p);
                    prop_assert!(s.scalars.values().all(|v| *v >= 0));
                    let t = pools_sum(a.agent_total(&format!("a{i}").into()).unwrap());
                    prop_assert!(t.contains(&s));
                }
            }
        }
    }
}
