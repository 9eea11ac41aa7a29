//! Deployment planning, pure: which ordered steps turn the original set of apps into the
//! target set (stop removed apps, start new ones, scale or restart changed ones, dependencies
//! first), how a rolling restart proceeds within `minimumHealthCapacity` and
//! `maximumOverCapacity`, which tasks a scale-down kills, and the launch backoff.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{KillSelection, PathId, Timestamp};

/// What the planner needs to know about one app.
#[derive(Clone, Debug, PartialEq)]
pub struct AppSpec {
    pub instances: u32,
    /// Changes whenever the tasks themselves change (`versionInfo.lastConfigChangeAt`).
    pub config_version: Timestamp,
    /// Apps this one depends on (group dependencies already expanded to apps).
    pub dependencies: Vec<PathId>,
}

/// One action of a deployment step (Marathon's action names).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "action", content = "app")]
#[allow(clippy::enum_variant_names, reason = "Marathon's action names")]
pub enum Action {
    StartApplication(PathId),
    ScaleApplication(PathId),
    RestartApplication(PathId),
    StopApplication(PathId),
}

impl Action {
    pub fn app(&self) -> &PathId {
        match self {
            Action::StartApplication(a)
            | Action::ScaleApplication(a)
            | Action::RestartApplication(a)
            | Action::StopApplication(a) => a,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Action::StartApplication(_) => "StartApplication",
            Action::ScaleApplication(_) => "ScaleApplication",
            Action::RestartApplication(_) => "RestartApplication",
            Action::StopApplication(_) => "StopApplication",
        }
    }
}

/// A set of actions run together; the next step starts when all are done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub actions: Vec<Action>,
}

/// Dependency depth of every app of `apps` (apps without dependencies are 0). Cycles and
/// unknown dependencies are ignored.
fn levels(apps: &BTreeMap<PathId, AppSpec>) -> BTreeMap<PathId, usize> {
    fn visit(
        id: &PathId,
        apps: &BTreeMap<PathId, AppSpec>,
        memo: &mut BTreeMap<PathId, usize>,
        stack: &mut BTreeSet<PathId>,
    ) -> usize {
        if let Some(l) = memo.get(id) {
            return *l;
        }
        if !stack.insert(id.clone()) {
            return 0;
        }
        let mut level = 0;
        if let Some(spec) = apps.get(id) {
            for d in &spec.dependencies {
                if d != id && apps.contains_key(d) {
                    level = level.max(visit(d, apps, memo, stack) + 1);
                }
            }
        }
        stack.remove(id);
        memo.insert(id.clone(), level);
        level
    }
    let mut memo = BTreeMap::new();
    for id in apps.keys() {
        visit(id, apps, &mut memo, &mut BTreeSet::new());
    }
    memo
}

/// A dependency cycle among `apps`, as the path that closes it (`[/a, /b, /a]` for `/a` → `/b`
/// → `/a`), or `None`. Like [`plan`], it ignores dependencies on the app itself and on apps not
/// in `apps`. Iterative, so a long dependency chain cannot overflow the stack.
pub fn find_cycle(apps: &BTreeMap<PathId, AppSpec>) -> Option<Vec<PathId>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: BTreeMap<&PathId, Mark> = BTreeMap::new();
    for root in apps.keys() {
        if marks.contains_key(root) {
            continue;
        }
        marks.insert(root, Mark::Open);
        // Each entry: an open app and the index of its next dependency to follow.
        let mut stack: Vec<(&PathId, usize)> = vec![(root, 0)];
        while let Some(&(id, next)) = stack.last() {
            let Some(dep) = apps.get(id).and_then(|s| s.dependencies.get(next)) else {
                marks.insert(id, Mark::Done);
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            let Some((dep, _)) = apps.get_key_value(dep) else {
                continue;
            };
            if dep == id {
                continue;
            }
            match marks.get(dep) {
                Some(Mark::Done) => {}
                Some(Mark::Open) => {
                    let start = stack.iter().position(|(a, _)| *a == dep).unwrap_or(0);
                    let mut cycle: Vec<PathId> =
                        stack[start..].iter().map(|(a, _)| (*a).clone()).collect();
                    cycle.push(dep.clone());
                    return Some(cycle);
                }
                None => {
                    marks.insert(dep, Mark::Open);
                    stack.push((dep, 0));
                }
            }
        }
    }
    None
}

/// The steps from `original` to `target`. Removed apps are stopped first (dependents before
/// their dependencies), then new apps are started (with 0 instances), then new and changed
/// apps are scaled or restarted, one step per dependency level.
pub fn plan(original: &BTreeMap<PathId, AppSpec>, target: &BTreeMap<PathId, AppSpec>) -> Vec<Step> {
    let mut steps = Vec::new();
    let old_levels = levels(original);
    let removed: Vec<&PathId> = original
        .keys()
        .filter(|id| !target.contains_key(*id))
        .collect();
    let max_old = removed.iter().map(|id| old_levels[*id]).max();
    if let Some(max_old) = max_old {
        for level in (0..=max_old).rev() {
            let actions: Vec<Action> = removed
                .iter()
                .filter(|id| old_levels[**id] == level)
                .map(|id| Action::StopApplication((*id).clone()))
                .collect();
            if !actions.is_empty() {
                steps.push(Step { actions });
            }
        }
    }
    let started: Vec<Action> = target
        .keys()
        .filter(|id| !original.contains_key(*id))
        .map(|id| Action::StartApplication(id.clone()))
        .collect();
    if !started.is_empty() {
        steps.push(Step { actions: started });
    }
    let new_levels = levels(target);
    let mut by_level: BTreeMap<usize, Vec<Action>> = BTreeMap::new();
    for (id, spec) in target {
        let action = match original.get(id) {
            None => Some(Action::ScaleApplication(id.clone())),
            Some(old) if old.config_version != spec.config_version => {
                Some(Action::RestartApplication(id.clone()))
            }
            Some(old) if old.instances != spec.instances => {
                Some(Action::ScaleApplication(id.clone()))
            }
            Some(_) => None,
        };
        if let Some(a) = action {
            by_level.entry(new_levels[id]).or_default().push(a);
        }
    }
    steps.extend(by_level.into_values().map(|actions| Step { actions }));
    steps
}

/// Counts a rolling restart decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rolling {
    pub target: u32,
    /// Tasks of the old config still alive.
    pub old_alive: u32,
    /// Tasks of the new config launched and alive (ready or not).
    pub new_launched: u32,
    /// Tasks of the new config running and healthy.
    pub new_ready: u32,
}

/// What to do now: kill this many old tasks, launch this many new ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RollingDecision {
    pub kill_old: u32,
    pub launch: u32,
}

/// `ceil(target × minimumHealthCapacity)`.
pub fn min_healthy(target: u32, min_health: f64) -> u32 {
    (f64::from(target) * min_health - 1e-9).ceil().max(0.0) as u32
}

/// `floor(target × (1 + maximumOverCapacity))`.
pub fn max_capacity(target: u32, max_over: f64) -> u32 {
    ((f64::from(target) * (1.0 + max_over) + 1e-9).floor() as u32).max(target)
}

/// One decision of a rolling restart (Marathon's task replacement): old tasks are killed as
/// long as old + ready-new stay at or above the minimum healthy count, new ones launched as
/// long as everything alive stays within the maximum capacity. When the two limits coincide
/// (e.g. 1 and 0) no progress is possible without dropping one old task, so one is killed.
pub fn rolling_step(s: Rolling, min_health: f64, max_over: f64) -> RollingDecision {
    let min_h = min_healthy(s.target, min_health);
    let max_c = max_capacity(s.target, max_over);
    let healthy = s.old_alive + s.new_ready;
    let mut kill_old = healthy.saturating_sub(min_h).min(s.old_alive);
    // Old tasks beyond what the target still needs can always go once enough new are ready.
    let launch_room = |kill: u32| {
        s.target
            .saturating_sub(s.new_launched)
            .min(max_c.saturating_sub(s.old_alive - kill + s.new_launched))
    };
    let mut launch = launch_room(kill_old);
    if kill_old == 0 && launch == 0 && s.old_alive > 0 && s.new_launched == s.new_ready {
        kill_old = 1;
        launch = launch_room(1);
    }
    RollingDecision { kill_old, launch }
}

/// A task a scale-down may pick.
#[derive(Clone, Debug, PartialEq)]
pub struct KillCandidate {
    pub id: capstan_types::TaskId,
    pub staged_at: Timestamp,
    pub running: bool,
    pub healthy: Option<bool>,
}

/// The `n` tasks to kill: not-running first, then unhealthy, then by `killSelection`.
pub fn select_kills(
    tasks: &[KillCandidate],
    n: usize,
    selection: KillSelection,
) -> Vec<capstan_types::TaskId> {
    let mut sorted: Vec<&KillCandidate> = tasks.iter().collect();
    sorted.sort_by(|a, b| {
        let rank = |t: &KillCandidate| (t.running, t.healthy != Some(false));
        rank(a).cmp(&rank(b)).then_with(|| match selection {
            KillSelection::YoungestFirst => b.staged_at.cmp(&a.staged_at),
            KillSelection::OldestFirst => a.staged_at.cmp(&b.staged_at),
        })
    });
    sorted.into_iter().take(n).map(|t| t.id.clone()).collect()
}

/// Launch delay after `failures` consecutive failures: `backoff × factor^(failures-1)`,
/// capped at `max` seconds; no delay without failures.
pub fn launch_delay_secs(backoff: f64, factor: f64, max: f64, failures: u32) -> f64 {
    if failures == 0 {
        return 0.0;
    }
    let exp = i32::try_from(failures - 1).unwrap_or(i32::MAX).min(1000);
    (backoff * factor.powi(exp)).min(max).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(instances: u32, v: i64, deps: &[&str]) -> AppSpec {
        AppSpec {
            instances,
            config_version: Timestamp(v),
            dependencies: deps.iter().map(|d| PathId::parse(d)).collect(),
        }
    }

    fn names(steps: &[Step]) -> Vec<Vec<String>> {
        steps
            .iter()
            .map(|s| {
                s.actions
                    .iter()
                    .map(|a| format!("{} {}", a.name(), a.app()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn new_group_starts_dependencies_first() {
        let target = BTreeMap::from([
            (PathId::parse("/g/db"), spec(1, 1, &[])),
            (PathId::parse("/g/web"), spec(2, 1, &["/g/db"])),
        ]);
        let steps = plan(&BTreeMap::new(), &target);
        assert_eq!(
            names(&steps),
            vec![
                vec!["StartApplication /g/db", "StartApplication /g/web"],
                vec!["ScaleApplication /g/db"],
                vec!["ScaleApplication /g/web"],
            ]
        );
    }

    #[test]
    fn dependency_cycles_are_found_and_reported_as_the_closing_path() {
        let ids = |v: Option<Vec<PathId>>| {
            v.map(|c| c.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        // (apps with their dependencies, the cycle expected)
        type Case = (
            Vec<(&'static str, Vec<&'static str>)>,
            Option<Vec<&'static str>>,
        );
        let table: Vec<Case> = vec![
            (vec![], None),
            (vec![("/a", vec![]), ("/b", vec!["/a"])], None),
            // Self-dependencies and unknown apps are ignored, as in planning.
            (vec![("/a", vec!["/a", "/nope"])], None),
            // A diamond is not a cycle.
            (
                vec![
                    ("/a", vec!["/b", "/c"]),
                    ("/b", vec!["/d"]),
                    ("/c", vec!["/d"]),
                    ("/d", vec![]),
                ],
                None,
            ),
            (
                vec![("/a", vec!["/b"]), ("/b", vec!["/a"])],
                Some(vec!["/a", "/b", "/a"]),
            ),
            (
                vec![
                    ("/a", vec!["/x"]),
                    ("/x", vec!["/y"]),
                    ("/y", vec!["/z"]),
                    ("/z", vec!["/x"]),
                ],
                Some(vec!["/x", "/y", "/z", "/x"]),
            ),
        ];
        for (apps, want) in table {
            let apps: BTreeMap<PathId, AppSpec> = apps
                .into_iter()
                .map(|(id, deps)| (PathId::parse(id), spec(1, 1, &deps)))
                .collect();
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(ids(find_cycle(&apps)), want, "{apps:?}");
        }
        // A chain far longer than any recursion could follow.
        let n = 100_000;
        let chain: BTreeMap<PathId, AppSpec> = (0..n)
            .map(|i| {
                let dep = format!("/app{}", (i + 1) % n);
                (
                    PathId::parse(&format!("/app{i}")),
                    spec(1, 1, &[dep.as_str()]),
                )
            })
            .collect();
        assert_eq!(find_cycle(&chain).map(|c| c.len()), Some(n + 1));
    }

    #[test]
    fn changes_become_scale_restart_and_stop() {
        let original = BTreeMap::from([
            (PathId::parse("/a"), spec(1, 1, &[])),
            (PathId::parse("/b"), spec(1, 1, &[])),
            (PathId::parse("/c"), spec(1, 1, &[])),
        ]);
        let target = BTreeMap::from([
            (PathId::parse("/a"), spec(3, 1, &[])),
            (PathId::parse("/b"), spec(1, 2, &[])),
        ]);
        assert_eq!(
            names(&plan(&original, &target)),
            vec![
                vec!["StopApplication /c"],
                vec!["ScaleApplication /a", "RestartApplication /b"]
            ]
        );
        assert!(plan(&original, &original).is_empty());
    }

    #[test]
    fn rolling_restart_with_default_strategy_launches_all_then_kills() {
        let d = rolling_step(
            Rolling {
                target: 3,
                old_alive: 3,
                new_launched: 0,
                new_ready: 0,
            },
            1.0,
            1.0,
        );
        assert_eq!(
            d,
            RollingDecision {
                kill_old: 0,
                launch: 3
            }
        );
        let d = rolling_step(
            Rolling {
                target: 3,
                old_alive: 3,
                new_launched: 3,
                new_ready: 2,
            },
            1.0,
            1.0,
        );
        assert_eq!(
            d,
            RollingDecision {
                kill_old: 2,
                launch: 0
            }
        );
        // minimumHealthCapacity 1, maximumOverCapacity 0: one old task must go first.
        let d = rolling_step(
            Rolling {
                target: 2,
                old_alive: 2,
                new_launched: 0,
                new_ready: 0,
            },
            1.0,
            0.0,
        );
        assert_eq!(
            d,
            RollingDecision {
                kill_old: 1,
                launch: 1
            }
        );
    }

    #[test]
    fn kill_selection_prefers_unhealthy_then_youngest_or_oldest() {
        let t = |id: &str, at: i64, running: bool, healthy: Option<bool>| KillCandidate {
            id: id.into(),
            staged_at: Timestamp(at),
            running,
            healthy,
        };
        let tasks = [
            t("old", 1, true, None),
            t("young", 3, true, None),
            t("mid", 2, true, None),
            t("sick", 1, true, Some(false)),
            t("staging", 1, false, None),
        ];
        assert_eq!(
            select_kills(&tasks, 3, KillSelection::YoungestFirst),
            ["staging", "sick", "young"]
        );
        assert_eq!(
            select_kills(&tasks, 3, KillSelection::OldestFirst),
            ["staging", "sick", "old"]
        );
    }

    #[test]
    fn backoff_grows_by_factor_and_is_capped() {
        assert_eq!(launch_delay_secs(1.0, 2.0, 300.0, 0), 0.0);
        assert_eq!(launch_delay_secs(1.0, 2.0, 300.0, 1), 1.0);
        assert_eq!(launch_delay_secs(1.0, 2.0, 300.0, 4), 8.0);
        assert_eq!(launch_delay_secs(1.0, 2.0, 300.0, 40), 300.0);
    }

    fn arb_apps() -> impl Strategy<Value = BTreeMap<PathId, AppSpec>> {
        proptest::collection::btree_map(
            0u8..8,
            (0u32..4, 0i64..3, proptest::collection::vec(0u8..8, 0..3)),
            0..8,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(k, (n, v, deps))| {
                    // Dependencies only on lower-numbered apps: no cycles.
                    let deps = deps
                        .into_iter()
                        .filter(|d| *d < k)
                        .map(|d| PathId::parse(&format!("/app{d}")))
                        .collect();
                    (
                        PathId::parse(&format!("/app{k}")),
                        AppSpec {
                            instances: n,
                            config_version: Timestamp(v),
                            dependencies: deps,
                        },
                    )
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn plans_touch_every_change_once_and_respect_dependencies(original in arb_apps(), target in arb_apps()) {
            prop_assert!(find_cycle(&target).is_none());
            let steps = plan(&original, &target);
            let mut step_of: BTreeMap<PathId, usize> = BTreeMap::new();
            let mut seen: BTreeMap<PathId, Vec<&'static str>> = BTreeMap::new();
            for (i, s) in steps.iter().enumerate() {
                prop_assert!(!s.actions.is_empty());
                for a in &s.actions {
                    seen.entry(a.app().clone()).or_default().push(a.name());
                    if !matches!(a, Action::StartApplication(_)) {
                        step_of.insert(a.app().clone(), i);
                    }
                }
            }
            for (id, spec) in &target {
                let acts = seen.get(id).cloned().unwrap_or_default();
                match original.get(id) {
                    None => prop_assert_eq!(acts, vec!["StartApplication", "ScaleApplication"]),
                    Some(o) if o.config_version != spec.config_version => prop_assert_eq!(acts, vec!["RestartApplication"]),
                    Some(o) if o.instances != spec.instances => prop_assert_eq!(acts, vec!["ScaleApplication"]),
                    Some(_) => prop_assert!(acts.is_empty()),
                }
                for d in &spec.dependencies {
                    if let (Some(a), Some(b)) = (step_of.get(id), step_of.get(d))
                        && target.contains_key(d)
                    {
                        prop_assert!(b < a, "{} must come after its dependency {}", id, d);
                    }
                }
            }
            for id in original.keys().filter(|id| !target.contains_key(*id)) {
                prop_assert_eq!(seen.get(id).cloned().unwrap_or_default(), vec!["StopApplication"]);
            }
        }

        #[test]
        fn rolling_restart_stays_within_capacity_and_finishes(
            target in 1u32..12,
            min_health in 0.0f64..=1.0,
            max_over in 0.0f64..=1.0,
            readiness in proptest::collection::vec(0u32..4, 1..200),
        ) {
            let min_h = min_healthy(target, min_health);
            let max_c = max_capacity(target, max_over);
            let degenerate = max_c <= min_h;
            let mut s = Rolling { target, old_alive: target, new_launched: 0, new_ready: 0 };
            let mut rounds = 0;
            while s.old_alive > 0 || s.new_ready < target {
                let d = rolling_step(s, min_health, max_over);
                prop_assert!(d.kill_old <= s.old_alive);
                s.old_alive -= d.kill_old;
                if !degenerate {
                    prop_assert!(s.old_alive + s.new_ready >= min_h, "dropped below {}: {:?}", min_h, s);
                } else {
                    prop_assert!(s.old_alive + s.new_ready + 1 >= min_h);
                }
                s.new_launched += d.launch;
                prop_assert!(s.new_launched <= target);
                prop_assert!(s.old_alive + s.new_launched <= max_c.max(target), "over capacity: {:?}", s);
                // Some in-flight tasks become ready.
                let r = readiness[rounds % readiness.len()].max(u32::from(rounds > 50));
                s.new_ready = (s.new_ready + r).min(s.new_launched);
                rounds += 1;
                prop_assert!(rounds < 500, "no progress: {:?}", s);
            }
        }
    }
}
