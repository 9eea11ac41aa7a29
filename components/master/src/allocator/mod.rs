//! The offer allocator: pure code, no I/O and no clock (callers pass `now_ms`).
//!
//! Each agent's resources are kept in per-role pools (`*` unreserved, `slave_public` for
//! public agents, any other static reservation). A pool's available resources are offered
//! whole to one framework per cycle: the candidate (framework, role) with the lowest
//! dominant share, roles compared first and frameworks within a role second (hierarchical
//! DRF). Resources move `available → allocated[framework]` when offered and back with
//! [`Allocator::recover`], so `available + Σ allocated == total` on every agent at all times;
//! nothing is offered twice or over-committed.

use std::collections::{BTreeMap, BTreeSet};

use capstan_types::{AgentId, FrameworkId};

use crate::resources::{ANY_ROLE, Pools, Resources, pools_add, pools_checked_sub, pools_sum};

/// The kinds that count for dominant shares.
const SHARE_KINDS: [&str; 4] = ["cpus", "mem", "disk", "gpus"];

/// One offer to make: these resources of `agent` now belong to `framework` (as offered).
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub framework: FrameworkId,
    pub agent: AgentId,
    /// The role the resources are allocated to (`allocation_info.role`).
    pub role: String,
    /// Resources keyed by their reservation role.
    pub resources: Pools,
}

#[derive(Clone, Debug)]
struct AgentSlot {
    total: Pools,
    available: Pools,
    active: bool,
}

#[derive(Clone, Debug)]
struct FrameworkSlot {
    roles: Vec<String>,
    active: bool,
    suppressed: BTreeSet<String>,
    /// agent id → (refused until (ms), the refused resources). An offer is filtered only
    /// if it is no more than the refused resources, so freed resources still get offered.
    filters: BTreeMap<AgentId, (u64, Pools)>,
    /// agent id → resources offered or used by this framework on that agent.
    allocated: BTreeMap<AgentId, Pools>,
}

/// Allocator state; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    agents: BTreeMap<AgentId, AgentSlot>,
    frameworks: BTreeMap<FrameworkId, FrameworkSlot>,
    /// The scalars of every agent's total, kept as agents come and go: each allocation cycle
    /// divides by it, and summing 1,000 agents' pools each time cost more than the cycle.
    total: Resources,
}

/// Largest refuse_seconds honoured (one year), as in Mesos.
pub const MAX_REFUSE_MS: u64 = 31_536_000_000;

impl Allocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an agent. `used` is what running tasks already hold, per framework;
    /// it is charged to those frameworks if they are known.
    pub fn add_agent(&mut self, id: &AgentId, total: Pools, used: &BTreeMap<FrameworkId, Pools>) {
        self.remove_agent(id);
        let mut available = total.clone();
        for (fw, pools) in used {
            if let Some(f) = self.frameworks.get_mut(fw) {
                // Only charge what actually fits; a misreporting agent cannot drive
                // `available` negative.
                if pools_checked_sub(&mut available, pools) {
                    pools_add(f.allocated.entry(id.clone()).or_default(), pools);
                }
            }
        }
        self.total.add(&scalars_of(&total));
        self.agents.insert(
            id.clone(),
            AgentSlot {
                total,
                available,
                active: true,
            },
        );
    }

    /// Removes an agent and every allocation on it.
    pub fn remove_agent(&mut self, id: &AgentId) {
        if let Some(slot) = self.agents.remove(id)
            && !self.total.checked_sub(&scalars_of(&slot.total))
        {
            // Cannot happen (the total holds what was added); recount rather than drift.
            self.total = self.agents.values().fold(Resources::default(), |mut t, a| {
                t.add(&scalars_of(&a.total));
                t
            });
        }
        for f in self.frameworks.values_mut() {
            f.allocated.remove(id);
            f.filters.remove(id);
        }
    }

    /// Inactive agents (draining, deactivated) get no new offers.
    pub fn set_agent_active(&mut self, id: &AgentId, active: bool) {
        if let Some(a) = self.agents.get_mut(id) {
            a.active = active;
        }
    }

    pub fn add_framework(&mut self, id: &FrameworkId, roles: Vec<String>, suppressed: &[String]) {
        let roles = if roles.is_empty() {
            vec![ANY_ROLE.to_string()]
        } else {
            roles
        };
        let slot = self
            .frameworks
            .entry(id.clone())
            .or_insert_with(|| FrameworkSlot {
                roles: Vec::new(),
                active: true,
                suppressed: BTreeSet::new(),
                filters: BTreeMap::new(),
                allocated: BTreeMap::new(),
            });
        slot.roles = roles;
        slot.active = true;
        slot.suppressed = suppressed.iter().cloned().collect();
    }

    /// Removes a framework; everything it held goes back to the agents.
    pub fn remove_framework(&mut self, id: &FrameworkId) {
        if let Some(f) = self.frameworks.remove(id) {
            for (agent, pools) in f.allocated {
                if let Some(a) = self.agents.get_mut(&agent) {
                    pools_add(&mut a.available, &pools);
                }
            }
        }
    }

    /// Inactive (disconnected) frameworks keep their allocations but get no offers.
    pub fn set_framework_active(&mut self, id: &FrameworkId, active: bool) {
        if let Some(f) = self.frameworks.get_mut(id) {
            f.active = active;
        }
    }

    /// Marks resources as allocated to `framework` without offering them (tasks that an
    /// agent reports on re-registration). Returns false if they are not available.
    pub fn charge(&mut self, framework: &FrameworkId, agent: &AgentId, pools: &Pools) -> bool {
        let (Some(a), Some(f)) = (
            self.agents.get_mut(agent),
            self.frameworks.get_mut(framework),
        ) else {
            return false;
        };
        if !pools_checked_sub(&mut a.available, pools) {
            return false;
        }
        pools_add(f.allocated.entry(agent.clone()).or_default(), pools);
        true
    }

    /// Gives resources held by `framework` on `agent` back (declined or rescinded offer,
    /// finished task). Only what the framework actually holds is returned.
    pub fn recover(&mut self, framework: &FrameworkId, agent: &AgentId, pools: &Pools) {
        let Some(f) = self.frameworks.get_mut(framework) else {
            return;
        };
        let Some(held) = f.allocated.get_mut(agent) else {
            return;
        };
        let mut back = Pools::new();
        for (role, r) in pools {
            let Some(h) = held.get_mut(role) else {
                continue;
            };
            // Take the part of `r` that is held, piece by piece.
            let mut part = Resources::default();
            for (k, v) in &r.scalars {
                let have = h.scalars.get(k).copied().unwrap_or(0);
                let take = (*v).min(have);
                if take > 0 {
                    part.scalars.insert(k.clone(), take);
                }
            }
            for (k, v) in &r.ranges {
                if let Some(hr) = h.ranges.get(k) {
                    let take = hr.subtract(&hr.subtract(v));
                    if !take.is_empty() {
                        part.ranges.insert(k.clone(), take);
                    }
                }
            }
            for (k, v) in &r.sets {
                if let Some(hs) = h.sets.get(k) {
                    let take: BTreeSet<String> = v.intersection(hs).cloned().collect();
                    if !take.is_empty() {
                        part.sets.insert(k.clone(), take);
                    }
                }
            }
            h.checked_sub(&part);
            back.insert(role.clone(), part);
        }
        held.retain(|_, r| !r.is_empty());
        if held.is_empty() {
            f.allocated.remove(agent);
        }
        if let Some(a) = self.agents.get_mut(agent) {
            pools_add(&mut a.available, &back);
        }
    }

    /// Refuse offers of (at most) `refused` from `agent` to `framework` until
    /// `now_ms + refuse_ms`. Nothing refused, or a zero duration, adds no filter.
    pub fn add_filter(
        &mut self,
        framework: &FrameworkId,
        agent: &AgentId,
        now_ms: u64,
        refuse_ms: u64,
        refused: &Pools,
    ) {
        if refuse_ms == 0 || refused.values().all(Resources::is_empty) {
            return;
        }
        if let Some(f) = self.frameworks.get_mut(framework) {
            let until = now_ms.saturating_add(refuse_ms.min(MAX_REFUSE_MS));
            let entry = f
                .filters
                .entry(agent.clone())
                .or_insert_with(|| (until, Pools::new()));
            entry.0 = entry.0.max(until);
            pools_add(&mut entry.1, refused);
        }
    }

    /// REVIVE: clears all filters and unsuppresses `roles` (all roles when empty).
    pub fn revive(&mut self, framework: &FrameworkId, roles: &[String]) {
        if let Some(f) = self.frameworks.get_mut(framework) {
            f.filters.clear();
            if roles.is_empty() {
                f.suppressed.clear();
            } else {
                for r in roles {
                    f.suppressed.remove(r);
                }
            }
        }
    }

    /// SUPPRESS `roles` (all roles when empty).
    pub fn suppress(&mut self, framework: &FrameworkId, roles: &[String]) {
        if let Some(f) = self.frameworks.get_mut(framework) {
            if roles.is_empty() {
                f.suppressed = f.roles.iter().cloned().collect();
            } else {
                f.suppressed.extend(roles.iter().cloned());
            }
        }
    }

    pub fn update_framework_roles(
        &mut self,
        framework: &FrameworkId,
        roles: Vec<String>,
        suppressed: &[String],
    ) {
        if let Some(f) = self.frameworks.get_mut(framework) {
            f.roles = if roles.is_empty() {
                vec![ANY_ROLE.to_string()]
            } else {
                roles
            };
            f.suppressed = suppressed.iter().cloned().collect();
        }
    }

    /// The scalar resources (cpus, mem, disk, gpus …) of all agents together, for shares and
    /// metrics. Ranges and sets are left out: agents' port ranges overlap, so they do not add.
    pub fn cluster_total(&self) -> &Resources {
        &self.total
    }

    pub fn agent_available(&self, agent: &AgentId) -> Option<&Pools> {
        self.agents.get(agent).map(|a| &a.available)
    }

    pub fn agent_total(&self, agent: &AgentId) -> Option<&Pools> {
        self.agents.get(agent).map(|a| &a.total)
    }

    /// What `framework` holds on `agent`.
    pub fn allocated(&self, framework: &FrameworkId, agent: &AgentId) -> Option<&Pools> {
        self.frameworks.get(framework)?.allocated.get(agent)
    }

    fn share(total: &Resources, used: &Resources) -> f64 {
        SHARE_KINDS
            .iter()
            .filter_map(|k| {
                let t = total.scalars.get(*k).copied().unwrap_or(0);
                (t > 0).then(|| used.scalars.get(*k).copied().unwrap_or(0) as f64 / t as f64)
            })
            .fold(0.0, f64::max)
    }

    fn framework_usage(f: &FrameworkSlot) -> Resources {
        let mut u = Resources::default();
        for p in f.allocated.values() {
            u.add(&pools_sum(p));
        }
        u
    }

    /// One allocation cycle: returns the grants to turn into offers. Filters that have
    /// expired are dropped.
    pub fn allocate(&mut self, now_ms: u64) -> Vec<Grant> {
        for f in self.frameworks.values_mut() {
            f.filters.retain(|_, (until, _)| *until > now_ms);
        }
        let total = self.total.clone();
        let mut usage: BTreeMap<FrameworkId, Resources> = self
            .frameworks
            .iter()
            .map(|(id, f)| (id.clone(), Self::framework_usage(f)))
            .collect();
        // Role usage: a framework's usage counts towards its first role (approximation for
        // multi-role frameworks).
        let mut role_usage: BTreeMap<String, Resources> = BTreeMap::new();
        for (id, f) in &self.frameworks {
            role_usage
                .entry(f.roles[0].clone())
                .or_default()
                .add(&usage[id]);
        }
        let mut grants = Vec::new();
        let agent_ids: Vec<AgentId> = self.agents.keys().cloned().collect();
        for agent_id in agent_ids {
            let agent = &self.agents[&agent_id];
            if !agent.active {
                continue;
            }
            let pool_roles: Vec<String> = agent
                .available
                .iter()
                .filter(|(_, r)| !r.is_empty())
                .map(|(k, _)| k.clone())
                .collect();
            for pool_role in pool_roles {
                // Candidates: (role share, framework share, framework, role).
                let mut best: Option<(f64, f64, FrameworkId, String)> = None;
                let mut candidate = Pools::new();
                candidate.insert(
                    pool_role.clone(),
                    self.agents[&agent_id].available[&pool_role].clone(),
                );
                for (fid, f) in &self.frameworks {
                    let filtered = f.filters.get(&agent_id).is_some_and(|(_, refused)| {
                        crate::resources::pools_contains(refused, &candidate)
                    });
                    if !f.active || filtered {
                        continue;
                    }
                    for role in &f.roles {
                        if f.suppressed.contains(role) {
                            continue;
                        }
                        if pool_role != ANY_ROLE && pool_role != *role {
                            continue;
                        }
                        let rs = Self::share(
                            &total,
                            role_usage.get(role).unwrap_or(&Resources::default()),
                        );
                        let fs = Self::share(&total, &usage[fid]);
                        let cand = (rs, fs, fid.clone(), role.clone());
                        let better = match &best {
                            None => true,
                            Some(b) => (cand.0, cand.1, &cand.2) < (b.0, b.1, &b.2),
                        };
                        if better {
                            best = Some(cand);
                        }
                        break; // one role per framework per pool: its first eligible
                    }
                }
                let Some((_, _, fid, role)) = best else {
                    continue;
                };
                let agent = self.agents.get_mut(&agent_id).expect("agent exists");
                let Some(res) = agent.available.remove(&pool_role) else {
                    continue;
                };
                let mut pools = Pools::new();
                pools.insert(pool_role.clone(), res.clone());
                let f = self.frameworks.get_mut(&fid).expect("framework exists");
                pools_add(f.allocated.entry(agent_id.clone()).or_default(), &pools);
                usage.get_mut(&fid).expect("usage").add(&res);
                role_usage.entry(f.roles[0].clone()).or_default().add(&res);
                match grants.iter_mut().find(|g: &&mut Grant| {
                    g.framework == fid && g.agent == agent_id && g.role == role
                }) {
                    Some(g) => pools_add(&mut g.resources, &pools),
                    None => grants.push(Grant {
                        framework: fid,
                        agent: agent_id.clone(),
                        role,
                        resources: pools,
                    }),
                }
            }
        }
        grants
    }

    /// Checks `available + Σ allocated == total` on every agent (used by tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, a) in &self.agents {
            let mut sum = a.available.clone();
            for f in self.frameworks.values() {
                if let Some(p) = f.allocated.get(id) {
                    pools_add(&mut sum, p);
                }
            }
            let mut total = a.total.clone();
            total.retain(|_, r| !r.is_empty());
            if sum != total {
                return Err(format!(
                    "agent {id}: available+allocated {sum:?} != total {total:?}"
                ));
            }
        }
        let mut recount = Resources::default();
        for a in self.agents.values() {
            recount.add(&scalars_of(&a.total));
        }
        recount.scalars.retain(|_, v| *v != 0);
        let mut kept = self.total.clone();
        kept.scalars.retain(|_, v| *v != 0);
        if kept != recount {
            return Err(format!("cluster total {kept:?} != Σ agents {recount:?}"));
        }
        Ok(())
    }
}

/// The scalars of `pools` summed (their ranges and sets dropped).
fn scalars_of(pools: &Pools) -> Resources {
    let mut sum = pools_sum(pools);
    sum.ranges.clear();
    sum.sets.clear();
    sum
}

#[cfg(test)]
mod tests;
