//! Offer matching, pure: does this offer (what is left of it) fit one more task of an app,
//! which resources and host ports would the task take, and if not, why not. Reasons use
//! Marathon's names (`InsufficientCpus`, `UnfulfilledConstraint`, ...), so `/v2/queue` can say
//! which resource, port, role or constraint ruled out how many agents.

use std::collections::{BTreeMap, BTreeSet};

use capstan_types::resources::{from_milli, to_milli};
use regex::Regex;

/// One resource of an offer, flattened: unreserved resources have role `*`.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferResource {
    pub name: String,
    pub role: String,
    pub scalar: f64,
    pub ranges: Vec<(u64, u64)>,
}

/// The parts of a Mesos offer placement looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferView {
    pub id: capstan_types::OfferId,
    pub agent_id: capstan_types::AgentId,
    pub hostname: String,
    /// Attribute values as text (scalars formatted, ranges `[a-b]`, sets `{a,b}`).
    pub attributes: BTreeMap<String, String>,
    pub resources: Vec<OfferResource>,
}

impl OfferView {
    /// The value a constraint field has on this agent.
    pub fn field(&self, field: &str) -> Option<&str> {
        match field {
            "hostname" | "@hostname" => Some(&self.hostname),
            other => self.attributes.get(other).map(String::as_str),
        }
    }
}

/// A constraint operator with its argument.
#[derive(Clone, Debug)]
pub enum Operator {
    Unique,
    Cluster(Option<String>),
    GroupBy(Option<u32>),
    Like(Regex),
    Unlike(Regex),
    MaxPer(u32),
    Is(String),
}

#[derive(Clone, Debug)]
pub struct Constraint {
    pub field: String,
    pub op: Operator,
}

impl Constraint {
    /// Parses `[field, OP(, value)]`; `None` if invalid (validation reports those).
    pub fn parse(c: &[String]) -> Option<Constraint> {
        let field = c.first()?.clone();
        let value = c.get(2).cloned();
        let op = match c.get(1)?.as_str() {
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster(value),
            "GROUP_BY" => Operator::GroupBy(value.and_then(|v| v.parse().ok())),
            "LIKE" => Operator::Like(Regex::new(&format!("^(?:{})$", value?)).ok()?),
            "UNLIKE" => Operator::Unlike(Regex::new(&format!("^(?:{})$", value?)).ok()?),
            "MAX_PER" => Operator::MaxPer(value?.parse().ok()?),
            "IS" => Operator::Is(value?),
            _ => return None,
        };
        Some(Constraint { field, op })
    }

    /// Whether a task may go to `offer`, given the field values of the app's other tasks.
    pub fn allows(&self, offer: &OfferView, placed: &[Placed]) -> bool {
        let value = offer.field(&self.field);
        let others = placed.iter().map(|p| p.field(&self.field));
        match &self.op {
            Operator::Unlike(re) => value.is_none_or(|v| !re.is_match(v)),
            _ if value.is_none() => false,
            Operator::Unique => others.into_iter().all(|o| o != value),
            Operator::Cluster(Some(want)) => value == Some(want.as_str()),
            Operator::Cluster(None) => others.into_iter().all(|o| o == value),
            Operator::Like(re) => value.is_some_and(|v| re.is_match(v)),
            Operator::MaxPer(n) => (others.filter(|o| *o == value).count() as u32) < *n,
            Operator::Is(want) => value == Some(want.as_str()),
            Operator::GroupBy(n) => {
                let mut counts: BTreeMap<Option<&str>, usize> = BTreeMap::new();
                for o in others {
                    *counts.entry(o).or_default() += 1;
                }
                let mine = counts.get(&value).copied().unwrap_or(0);
                let distinct_wanted = n.unwrap_or(0) as usize;
                let min = if counts.len() < distinct_wanted {
                    0
                } else {
                    counts.values().copied().min().unwrap_or(0)
                };
                mine <= min
            }
        }
    }
}

/// Where one existing task of the app runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub hostname: String,
    pub attributes: BTreeMap<String, String>,
}

impl Placed {
    pub fn of(offer: &OfferView) -> Placed {
        Placed {
            hostname: offer.hostname.clone(),
            attributes: offer.attributes.clone(),
        }
    }

    fn field(&self, field: &str) -> Option<&str> {
        match field {
            "hostname" | "@hostname" => Some(&self.hostname),
            other => self.attributes.get(other).map(String::as_str),
        }
    }
}

/// What one task of an app needs.
#[derive(Clone, Debug)]
pub struct Needs {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: f64,
    /// Per port: `None` no host port, `Some(0)` any, `Some(p)` exactly `p`.
    pub host_ports: Vec<Option<u32>>,
    /// Reservation roles whose resources may be used (`*` = unreserved).
    pub roles: Vec<String>,
    pub constraints: Vec<Constraint>,
}

/// Why an offer did not fit (Marathon's `NoOfferMatchReason` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    UnfulfilledRole,
    UnfulfilledConstraint,
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientGpus,
    InsufficientPorts,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::UnfulfilledRole,
        Reason::UnfulfilledConstraint,
        Reason::InsufficientCpus,
        Reason::InsufficientMemory,
        Reason::InsufficientDisk,
        Reason::InsufficientGpus,
        Reason::InsufficientPorts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnfulfilledRole => "UnfulfilledRole",
            Reason::UnfulfilledConstraint => "UnfulfilledConstraint",
            Reason::InsufficientCpus => "InsufficientCpus",
            Reason::InsufficientMemory => "InsufficientMemory",
            Reason::InsufficientDisk => "InsufficientDisk",
            Reason::InsufficientGpus => "InsufficientGpus",
            Reason::InsufficientPorts => "InsufficientPorts",
        }
    }
}

/// The resources one task takes from an offer.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Consumed {
    /// (resource name, role, amount) for scalar resources.
    pub scalars: Vec<(String, String, f64)>,
    /// (role, port) for every host port taken.
    pub ports: Vec<(String, u32)>,
    /// Per requested port, the host port assigned (`None` where no host port was asked for).
    pub host_ports: Vec<Option<u32>>,
}

/// Matches one task against what is left of `offer`. `placed` are the app's other tasks
/// (including ones placed earlier on this offer). Every failing check is reported.
pub fn match_offer(
    offer: &OfferView,
    needs: &Needs,
    placed: &[Placed],
) -> Result<Consumed, Vec<Reason>> {
    let usable: Vec<&OfferResource> = offer
        .resources
        .iter()
        .filter(|r| needs.roles.iter().any(|role| role == &r.role))
        .collect();
    let mut reasons = Vec::new();
    if usable.is_empty() && !offer.resources.is_empty() {
        reasons.push(Reason::UnfulfilledRole);
    }
    if !needs.constraints.iter().all(|c| c.allows(offer, placed)) {
        reasons.push(Reason::UnfulfilledConstraint);
    }
    let mut consumed = Consumed::default();
    for (name, want, reason) in [
        ("cpus", needs.cpus, Reason::InsufficientCpus),
        ("mem", needs.mem, Reason::InsufficientMemory),
        ("disk", needs.disk, Reason::InsufficientDisk),
        ("gpus", needs.gpus, Reason::InsufficientGpus),
    ] {
        // In the master's fixed-point milli-units, so both agree on what fits.
        let want = to_milli(want);
        if want <= 0 {
            continue;
        }
        let mut left = want;
        let mut taken = Vec::new();
        for r in usable.iter().filter(|r| r.name == name) {
            let have = to_milli(r.scalar);
            if have <= 0 {
                continue;
            }
            let take = left.min(have);
            taken.push((name.to_string(), r.role.clone(), from_milli(take)));
            left -= take;
            if left == 0 {
                break;
            }
        }
        if left > 0 {
            reasons.push(reason);
        } else {
            consumed.scalars.extend(taken);
        }
    }
    match pick_ports(&usable, &needs.host_ports) {
        Some((ports, assigned)) => {
            consumed.ports = ports;
            consumed.host_ports = assigned;
        }
        None => reasons.push(Reason::InsufficientPorts),
    }
    if reasons.contains(&Reason::UnfulfilledRole) {
        // Nothing of the offer is usable: resource shortages would only repeat that.
        reasons.retain(|r| matches!(r, Reason::UnfulfilledRole | Reason::UnfulfilledConstraint));
    }
    if reasons.is_empty() {
        Ok(consumed)
    } else {
        reasons.sort();
        reasons.dedup();
        Err(reasons)
    }
}

type PortPick = (Vec<(String, u32)>, Vec<Option<u32>>);

fn pick_ports(usable: &[&OfferResource], wanted: &[Option<u32>]) -> Option<PortPick> {
    let ranges: Vec<(&str, u64, u64)> = usable
        .iter()
        .filter(|r| r.name == "ports")
        .flat_map(|r| r.ranges.iter().map(move |(b, e)| (r.role.as_str(), *b, *e)))
        .collect();
    let role_of = |p: u64| {
        ranges
            .iter()
            .find(|(_, b, e)| *b <= p && p <= *e)
            .map(|(r, _, _)| *r)
    };
    let mut taken: BTreeSet<u64> = BTreeSet::new();
    let mut out = Vec::new();
    let mut assigned = vec![None; wanted.len()];
    // Fixed ports first so a dynamic pick never steals one.
    for (i, w) in wanted.iter().enumerate() {
        if let Some(p) = w
            && *p != 0
        {
            let role = role_of(u64::from(*p))?;
            if !taken.insert(u64::from(*p)) {
                return None;
            }
            out.push((role.to_string(), *p));
            assigned[i] = Some(*p);
        }
    }
    for (i, w) in wanted.iter().enumerate() {
        if *w == Some(0) {
            let found = ranges.iter().find_map(|(role, b, e)| {
                (*b..=*e)
                    .find(|p| !taken.contains(p) && *p <= u64::from(u32::MAX))
                    .map(|p| (*role, p))
            })?;
            taken.insert(found.1);
            out.push((found.0.to_string(), found.1 as u32));
            assigned[i] = Some(found.1 as u32);
        }
    }
    Some((out, assigned))
}

/// Removes what a matched task took from the offer, so the next task sees the rest.
pub fn subtract(offer: &mut OfferView, consumed: &Consumed) {
    for (name, role, amount) in &consumed.scalars {
        if let Some(r) = offer
            .resources
            .iter_mut()
            .find(|r| &r.name == name && &r.role == role && to_milli(r.scalar) >= to_milli(*amount))
        {
            r.scalar = from_milli(to_milli(r.scalar) - to_milli(*amount));
        }
    }
    for (role, port) in &consumed.ports {
        let p = u64::from(*port);
        for r in offer
            .resources
            .iter_mut()
            .filter(|r| r.name == "ports" && &r.role == role)
        {
            let mut next = Vec::new();
            for &(b, e) in &r.ranges {
                if b <= p && p <= e {
                    if b < p {
                        next.push((b, p - 1));
                    }
                    if p < e {
                        next.push((p + 1, e));
                    }
                } else {
                    next.push((b, e));
                }
            }
            r.ranges = next;
        }
    }
}

#[cfg(test)]
mod milli_tests {
    use super::*;

    /// The master rounds every amount to milli-units: 0.0015 cpus is 2 milli there, so an
    /// offer of 0.005 holds two such tasks, not three as float arithmetic would say.
    #[test]
    fn fitting_agrees_with_the_masters_milli_units() {
        let mut offer = OfferView {
            id: "o".into(),
            agent_id: "a".into(),
            hostname: "h".into(),
            attributes: BTreeMap::new(),
            resources: vec![OfferResource {
                name: "cpus".into(),
                role: "*".into(),
                scalar: 0.005,
                ranges: Vec::new(),
            }],
        };
        let needs = Needs {
            cpus: 0.0015,
            mem: 0.0,
            disk: 0.0,
            gpus: 0.0,
            host_ports: Vec::new(),
            roles: vec!["*".into()],
            constraints: Vec::new(),
        };
        let mut fits = 0;
        while let Ok(c) = match_offer(&offer, &needs, &[]) {
            subtract(&mut offer, &c);
            fits += 1;
            assert!(fits < 10);
        }
        assert_eq!(fits, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offer(
        host: &str,
        cpus: f64,
        mem: f64,
        ports: Vec<(u64, u64)>,
        attrs: &[(&str, &str)],
    ) -> OfferView {
        OfferView {
            id: format!("o-{host}").into(),
            agent_id: format!("a-{host}").into(),
            hostname: host.to_string(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            resources: vec![
                OfferResource {
                    name: "cpus".into(),
                    role: "*".into(),
                    scalar: cpus,
                    ranges: vec![],
                },
                OfferResource {
                    name: "mem".into(),
                    role: "*".into(),
                    scalar: mem,
                    ranges: vec![],
                },
                OfferResource {
                    name: "ports".into(),
                    role: "*".into(),
                    scalar: 0.0,
                    ranges: ports,
                },
            ],
        }
    }

    fn needs(cpus: f64, mem: f64, ports: Vec<Option<u32>>, constraints: &[&[&str]]) -> Needs {
        Needs {
            cpus,
            mem,
            disk: 0.0,
            gpus: 0.0,
            host_ports: ports,
            roles: vec!["*".into()],
            constraints: constraints
                .iter()
                .map(|c| {
                    Constraint::parse(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
                })
                .collect(),
        }
    }

    #[test]
    fn resources_and_ports_are_matched_and_reasons_reported() {
        let o = offer("a1", 1.0, 256.0, vec![(31000, 31001)], &[]);
        let c = match_offer(&o, &needs(0.5, 128.0, vec![Some(0), Some(31001)], &[]), &[]).unwrap();
        assert_eq!(c.host_ports, vec![Some(31000), Some(31001)]);
        let err = match_offer(&o, &needs(2.0, 512.0, vec![Some(0); 3], &[]), &[]).unwrap_err();
        assert_eq!(
            err,
            vec![
                Reason::InsufficientCpus,
                Reason::InsufficientMemory,
                Reason::InsufficientPorts
            ]
        );
        let err = match_offer(&o, &needs(0.1, 1.0, vec![Some(80)], &[]), &[]).unwrap_err();
        assert_eq!(err, vec![Reason::InsufficientPorts]);
        let mut n = needs(0.1, 1.0, vec![], &[]);
        n.roles = vec!["prod".into()];
        assert!(
            match_offer(&o, &n, &[])
                .unwrap_err()
                .contains(&Reason::UnfulfilledRole)
        );
    }

    #[test]
    fn constraints_follow_marathon_semantics() {
        let a = offer("a1", 4.0, 4096.0, vec![], &[("rack", "r1"), ("zone", "z1")]);
        let b = offer("b1", 4.0, 4096.0, vec![], &[("rack", "r2")]);
        let on_a = [Placed::of(&a)];
        let ok = |o: &OfferView, c: &[&str], placed: &[Placed]| {
            match_offer(o, &needs(0.1, 1.0, vec![], &[c]), placed).is_ok()
        };
        assert!(!ok(&a, &["hostname", "UNIQUE"], &on_a));
        assert!(ok(&b, &["hostname", "UNIQUE"], &on_a));
        assert!(ok(&a, &["rack", "CLUSTER", "r1"], &[]));
        assert!(!ok(&b, &["rack", "CLUSTER", "r1"], &[]));
        assert!(!ok(&b, &["rack", "CLUSTER"], &on_a));
        assert!(ok(&a, &["rack", "LIKE", "r[0-9]"], &[]));
        assert!(!ok(&a, &["rack", "LIKE", "r"], &[]));
        assert!(!ok(&a, &["rack", "UNLIKE", "r1"], &[]));
        assert!(
            ok(&b, &["zone", "UNLIKE", "z1"], &[]),
            "missing attribute passes UNLIKE"
        );
        assert!(
            !ok(&b, &["zone", "LIKE", ".*"], &[]),
            "missing attribute fails LIKE"
        );
        assert!(ok(&a, &["rack", "MAX_PER", "2"], &on_a));
        assert!(!ok(&a, &["rack", "MAX_PER", "1"], &on_a));
        assert!(ok(&a, &["zone", "IS", "z1"], &[]));
        assert!(!ok(&b, &["zone", "IS", "z1"], &[]));
        assert!(!ok(
            &a,
            &["rack", "GROUP_BY"],
            &[Placed::of(&a), Placed::of(&b), Placed::of(&a)]
        ));
        assert!(ok(
            &b,
            &["rack", "GROUP_BY"],
            &[Placed::of(&a), Placed::of(&b), Placed::of(&a)]
        ));
        assert!(
            !ok(&a, &["rack", "GROUP_BY", "2"], &on_a),
            "waits for the second rack"
        );
    }

    fn arb_offer() -> impl Strategy<Value = OfferView> {
        (
            0u8..4,
            0.0f64..8.0,
            0.0f64..4096.0,
            31000u64..31010,
            0u64..6,
            0u8..3,
        )
            .prop_map(|(h, cpus, mem, b, len, rack)| {
                offer(
                    &format!("h{h}"),
                    cpus,
                    mem,
                    vec![(b, b + len)],
                    &[("rack", ["r0", "r1", "r2"][rack as usize])],
                )
            })
    }

    proptest! {
        #[test]
        fn matching_never_overcommits_and_honours_constraints(
            offers in proptest::collection::vec(arb_offer(), 1..6),
            cpus in 0.01f64..3.0,
            mem in 1.0f64..1024.0,
            nports in 0usize..3,
            max_per in 1u32..3,
            unique in any::<bool>(),
        ) {
            let constraint: Vec<&str> = if unique { vec!["hostname", "UNIQUE"] } else { vec!["rack", "MAX_PER", ["1", "2", "3"][max_per as usize - 1]] };
            let n = needs(cpus, mem, vec![Some(0); nports], &[&constraint]);
            let mut placed: Vec<Placed> = Vec::new();
            for original in &offers {
                let mut left = original.clone();
                let mut used_cpus = 0.0;
                let mut used_mem = 0.0;
                let mut ports = BTreeSet::new();
                for _ in 0..20 {
                    let Ok(c) = match_offer(&left, &n, &placed) else { break };
                    for (name, _, amt) in &c.scalars {
                        if name == "cpus" { used_cpus += amt; }
                        if name == "mem" { used_mem += amt; }
                    }
                    for (_, p) in &c.ports {
                        prop_assert!(ports.insert(*p), "port {} given twice", p);
                        let (b, e) = original.resources[2].ranges[0];
                        prop_assert!(u64::from(*p) >= b && u64::from(*p) <= e);
                    }
                    prop_assert_eq!(c.host_ports.len(), nports);
                    subtract(&mut left, &c);
                    placed.push(Placed::of(&left));
                }
                // Fitting is decided in the master's milli-units (2.3357 cpus offered is
                // 2336 milli there), so overcommit is judged in the same units.
                prop_assert!(to_milli(used_cpus) <= to_milli(original.resources[0].scalar));
                prop_assert!(to_milli(used_mem) <= to_milli(original.resources[1].scalar));
            }
            if unique {
                let hosts: BTreeSet<_> = placed.iter().map(|p| p.hostname.clone()).collect();
                prop_assert_eq!(hosts.len(), placed.len());
            } else {
                let mut per: BTreeMap<String, u32> = BTreeMap::new();
                for p in &placed { *per.entry(p.attributes["rack"].clone()).or_default() += 1; }
                prop_assert!(per.values().all(|c| *c <= max_per));
            }
        }
    }
}
