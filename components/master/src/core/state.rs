//! The read-only views in the old Mesos JSON shape: `/master/state`, `/master/state-summary`,
//! `/master/slaves`, `/master/frameworks`, `/master/tasks` and `/metrics/snapshot`.

use std::collections::{BTreeMap, BTreeSet};

use capstan_types::TaskState;
use serde_json::{Value, json};

use super::{Agent, AgentState, Core, Framework, MESOS_VERSION, Packed, Task};
use crate::resources::{ANY_ROLE, MesosJson, Pools, pools_add, pools_sum};

impl Core {
    pub(super) fn slave_state_json(&self, a: &Agent) -> Value {
        let mut used = Pools::new();
        for t in self
            .tasks
            .values()
            .filter(|t| t.agent_id == a.id && !t.released)
        {
            pools_add(&mut used, &t.resources);
        }
        let mut offered = Pools::new();
        for o in self.offers.values().filter(|o| o.agent_id == a.id) {
            pools_add(&mut offered, &o.resources);
        }
        let mut reserved = serde_json::Map::new();
        for (role, r) in &a.total {
            if role != ANY_ROLE {
                reserved.insert(role.clone(), r.to_flat_json());
            }
        }
        let unreserved = a.total.get(ANY_ROLE).cloned().unwrap_or_default();
        let mut attrs = serde_json::Map::new();
        if let Some(list) = a.info.get("attributes").and_then(Value::as_array) {
            for at in list {
                let Some(name) = at.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let v = if let Some(t) = at.pointer("/text/value") {
                    t.clone()
                } else if let Some(s) = at.pointer("/scalar/value") {
                    s.clone()
                } else if let Some(r) = at.pointer("/ranges/range").and_then(Value::as_array) {
                    let parts: Vec<String> = r
                        .iter()
                        .map(|x| format!("{}-{}", x["begin"], x["end"]))
                        .collect();
                    json!(format!("[{}]", parts.join(", ")))
                } else if let Some(s) = at.pointer("/set/item").and_then(Value::as_array) {
                    let parts: Vec<&str> = s.iter().filter_map(Value::as_str).collect();
                    json!(format!("{{{}}}", parts.join(", ")))
                } else {
                    continue;
                };
                attrs.insert(name.into(), v);
            }
        }
        let mut v = json!({
            "id": a.id, "hostname": a.hostname, "port": a.port, "pid": a.pid(),
            "attributes": attrs,
            "registered_time": a.registered_time,
            "resources": pools_sum(&a.total).to_flat_json(),
            "used_resources": pools_sum(&used).to_flat_json(),
            "offered_resources": pools_sum(&offered).to_flat_json(),
            "reserved_resources": reserved,
            "unreserved_resources": unreserved.to_flat_json(),
            "active": a.state == AgentState::Active,
            "deactivated": a.state == AgentState::Draining,
            "version": a.version,
            "capabilities": ["MULTI_ROLE"],
        });
        if let Some(t) = a.reregistered_time {
            v["reregistered_time"] = json!(t);
        }
        if let Some(d) = a.info.get("domain") {
            v["domain"] = d.clone();
        }
        v
    }

    pub(super) fn task_state_json(&self, t: &Task) -> Value {
        let info = t.info.value();
        let statuses: Vec<Value> = t
            .statuses
            .iter()
            .map(Packed::value)
            .map(|s| {
                let mut o = json!({"state": s["state"], "timestamp": s.get("timestamp").cloned().unwrap_or(json!(0.0))});
                for k in ["labels", "container_status", "healthy"] {
                    if let Some(x) = s.get(k) {
                        o[k] = if k == "labels" { x.get("labels").cloned().unwrap_or(x.clone()) } else { x.clone() };
                    }
                }
                o
            })
            .collect();
        let mut v = json!({
            "id": t.id,
            "name": info.get("name").cloned().unwrap_or(json!("")),
            "framework_id": t.framework_id,
            "executor_id": t.executor_id.clone().unwrap_or_default(),
            "slave_id": t.agent_id,
            "state": t.state,
            "resources": pools_sum(&t.resources).to_flat_json(),
            "role": t.role,
            "statuses": statuses,
        });
        if let Some(l) = info.pointer("/labels/labels") {
            v["labels"] = l.clone();
        }
        for k in ["discovery", "container", "health_check"] {
            if let Some(x) = info.get(k) {
                v[k] = x.clone();
            }
        }
        if let Some(u) = self
            .frameworks
            .get(&t.framework_id)
            .and_then(|f| f.info.get("user"))
        {
            v["user"] = u.clone();
        }
        v
    }

    pub(super) fn framework_state_json(&self, f: &Framework) -> Value {
        let mut used = Pools::new();
        let mut tasks = Vec::new();
        let mut unreachable = Vec::new();
        for t in self.tasks.values().filter(|t| t.framework_id == f.id) {
            if !t.released {
                pools_add(&mut used, &t.resources);
            }
            if t.state == TaskState::Unreachable {
                unreachable.push(self.task_state_json(t));
            } else {
                tasks.push(self.task_state_json(t));
            }
        }
        let mut offered = Pools::new();
        let mut offers = Vec::new();
        for o in self.offers.values().filter(|o| o.framework_id == f.id) {
            pools_add(&mut offered, &o.resources);
            offers.push(json!({"id": o.id, "framework_id": o.framework_id, "slave_id": o.agent_id,
                "allocation_info": {"role": o.role}, "resources": pools_sum(&o.resources).to_flat_json()}));
        }
        let caps: Vec<Value> = f
            .info
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|c| c.get("type").cloned()).collect())
            .unwrap_or_default();
        let mut v = json!({
            "id": f.id,
            "name": f.info["name"],
            "hostname": f.info.get("hostname").cloned().unwrap_or(json!("")),
            "webui_url": f.info.get("webui_url").cloned().unwrap_or(json!("")),
            "user": f.info["user"],
            "failover_timeout": f.info.get("failover_timeout").cloned().unwrap_or(json!(0.0)),
            "checkpoint": f.info.get("checkpoint").cloned().unwrap_or(json!(false)),
            "capabilities": caps,
            "active": f.connected(),
            "connected": f.connected(),
            "recovered": f.recovered,
            "registered_time": f.registered_time,
            "unregistered_time": f.unregistered_time.unwrap_or(0.0),
            "used_resources": pools_sum(&used).to_flat_json(),
            "offered_resources": pools_sum(&offered).to_flat_json(),
            "resources": pools_sum(&{ let mut r = used.clone(); pools_add(&mut r, &offered); r }).to_flat_json(),
            "tasks": tasks,
            "unreachable_tasks": unreachable,
            "completed_tasks": f.completed_tasks.iter().map(|t| self.task_state_json(t)).collect::<Vec<_>>(),
            "offers": offers,
            "executors": [],
        });
        if f.has_capability("MULTI_ROLE") {
            v["roles"] = json!(f.roles);
        } else {
            v["role"] = json!(f.roles.first().cloned().unwrap_or_else(|| ANY_ROLE.into()));
        }
        if let Some(p) = f.info.get("principal") {
            v["principal"] = p.clone();
        }
        if let Some(t) = f.reregistered_time {
            v["reregistered_time"] = json!(t);
        }
        if let Some(l) = f.info.pointer("/labels/labels") {
            v["labels"] = l.clone();
        }
        v
    }

    pub fn slaves_json(&self) -> Value {
        let slaves: Vec<Value> = self
            .agents
            .values()
            .filter(|a| a.state != AgentState::Unreachable)
            .map(|a| self.slave_state_json(a))
            .collect();
        let recovered: Vec<&Value> = self.recovered_agents.values().collect();
        json!({"slaves": slaves, "recovered_slaves": recovered})
    }

    pub fn frameworks_json(&self, framework_id: Option<&str>) -> Value {
        let keep = |f: &&Framework| framework_id.is_none_or(|id| f.id == *id);
        let fws: Vec<Value> = self
            .frameworks
            .values()
            .filter(keep)
            .map(|f| self.framework_state_json(f))
            .collect();
        let done: Vec<Value> = self
            .completed_frameworks
            .iter()
            .filter(keep)
            .map(|f| self.framework_state_json(f))
            .collect();
        json!({"frameworks": fws, "completed_frameworks": done, "unregistered_frameworks": []})
    }

    /// `/master/tasks`.
    pub fn tasks_json(
        &self,
        limit: usize,
        offset: usize,
        asc: bool,
        framework_id: Option<&str>,
        task_id: Option<&str>,
    ) -> Value {
        let first_seen = |t: &Task| {
            t.statuses
                .first()
                .and_then(|s| s.value()["timestamp"].as_f64())
                .unwrap_or(0.0)
        };
        let mut all: Vec<(f64, &Task)> = self
            .tasks
            .values()
            .chain(
                self.frameworks
                    .values()
                    .flat_map(|f| f.completed_tasks.iter()),
            )
            .filter(|t| framework_id.is_none_or(|f| t.framework_id == f))
            .filter(|t| task_id.is_none_or(|id| t.id == id))
            .map(|t| (first_seen(t), t))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !asc {
            all.reverse();
        }
        let tasks: Vec<Value> = all
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, t)| self.task_state_json(t))
            .collect();
        json!({"tasks": tasks})
    }

    pub fn state_json(&self) -> Value {
        let fw = self.frameworks_json(None);
        let slaves = self.slaves_json();
        let activated = self
            .agents
            .values()
            .filter(|a| a.state == AgentState::Active)
            .count();
        let deactivated = self
            .agents
            .values()
            .filter(|a| a.state == AgentState::Draining)
            .count();
        let unreachable = self
            .agents
            .values()
            .filter(|a| a.state == AgentState::Unreachable)
            .count();
        let mut v = json!({
            "version": MESOS_VERSION,
            "build_date": "", "build_time": 0, "build_user": "",
            "start_time": self.start_time,
            "elected_time": self.start_time,
            "id": self.master_id,
            "pid": self.pid,
            "hostname": self.master_info["hostname"],
            "capabilities": ["AGENT_UPDATE", "AGENT_DRAINING"],
            "activated_slaves": activated,
            "deactivated_slaves": deactivated,
            "unreachable_slaves": unreachable,
            "leader": self.pid,
            "leader_info": {"id": self.master_id, "pid": self.pid, "port": self.master_info["port"], "hostname": self.master_info["hostname"]},
            "flags": {
                "port": self.master_info["port"].to_string(),
                "agent_ping_timeout": format!("{}secs", self.cfg.agent_timeout.as_secs_f64()),
                "allocation_interval": format!("{}secs", self.cfg.allocation_interval.as_secs_f64()),
            },
            "slaves": slaves["slaves"],
            "recovered_slaves": slaves["recovered_slaves"],
            "frameworks": fw["frameworks"],
            "completed_frameworks": fw["completed_frameworks"],
            "orphan_tasks": [],
            "unregistered_frameworks": [],
        });
        if let Some(c) = &self.cfg.cluster {
            v["cluster"] = json!(c);
        }
        v
    }

    /// `/master/state-summary`, as Mesos builds it: agents (without unreachable ones) and
    /// registered frameworks in their summary form, each with the per-state counts of the
    /// tasks it knows (active, unreachable and the completed ones kept per framework) and
    /// the ids of the frameworks (agents) those tasks link it to. `cluster` only when set.
    pub fn state_summary_json(&self) -> Value {
        let mut by_agent: BTreeMap<&str, TaskCounts> = BTreeMap::new();
        let mut by_framework: BTreeMap<&str, TaskCounts> = BTreeMap::new();
        let mut agent_fws: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut fw_agents: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for f in self.frameworks.values() {
            let tasks = self
                .tasks
                .values()
                .filter(|t| t.framework_id == f.id)
                .chain(f.completed_tasks.iter());
            for t in tasks {
                let (aid, fid) = (t.agent_id.as_str(), f.id.as_str());
                by_agent.entry(aid).or_default().count(t.state.name());
                by_framework.entry(fid).or_default().count(t.state.name());
                agent_fws.entry(aid).or_default().insert(fid);
                fw_agents.entry(fid).or_default().insert(aid);
            }
        }
        let slaves: Vec<Value> = self
            .agents
            .values()
            .filter(|a| a.state != AgentState::Unreachable)
            .map(|a| {
                let mut v = self.slave_state_json(a);
                by_agent
                    .get(a.id.as_str())
                    .copied()
                    .unwrap_or_default()
                    .write(&mut v);
                v["framework_ids"] =
                    json!(agent_fws.get(a.id.as_str()).cloned().unwrap_or_default());
                v
            })
            .collect();
        let frameworks: Vec<Value> = self
            .frameworks
            .values()
            .map(|f| {
                let mut v = self.framework_summary_json(f);
                by_framework
                    .get(f.id.as_str())
                    .copied()
                    .unwrap_or_default()
                    .write(&mut v);
                v["slave_ids"] = json!(fw_agents.get(f.id.as_str()).cloned().unwrap_or_default());
                v
            })
            .collect();
        let mut v = json!({
            "hostname": self.master_info["hostname"],
            "slaves": slaves,
            "frameworks": frameworks,
        });
        if let Some(c) = &self.cfg.cluster {
            v["cluster"] = json!(c);
        }
        v
    }

    /// A framework as `/master/state-summary` shows it (Mesos' `Summary<Framework>`): no
    /// `pid` (every Capstan framework speaks HTTP), capabilities as `{"type": …}` objects.
    fn framework_summary_json(&self, f: &Framework) -> Value {
        let mut used = Pools::new();
        for t in self
            .tasks
            .values()
            .filter(|t| t.framework_id == f.id && !t.released)
        {
            pools_add(&mut used, &t.resources);
        }
        let mut offered = Pools::new();
        for o in self.offers.values().filter(|o| o.framework_id == f.id) {
            pools_add(&mut offered, &o.resources);
        }
        let caps: Vec<Value> = f
            .info
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("type").map(|t| json!({"type": t})))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "id": f.id,
            "name": f.info.get("name").cloned().unwrap_or(json!("")),
            "used_resources": pools_sum(&used).to_flat_json(),
            "offered_resources": pools_sum(&offered).to_flat_json(),
            "capabilities": caps,
            "hostname": f.info.get("hostname").cloned().unwrap_or(json!("")),
            "webui_url": f.info.get("webui_url").cloned().unwrap_or(json!("")),
            "active": f.connected(),
            "connected": f.connected(),
            "recovered": f.recovered,
        })
    }

    pub fn metrics(&self) -> Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: f64| {
            m.insert(k.to_string(), json!(v));
        };
        put("master/elected", 1.0);
        put(
            "master/uptime_secs",
            self.clock
                .now()
                .saturating_duration_since(self.started)
                .as_secs_f64(),
        );
        let active = self
            .agents
            .values()
            .filter(|a| a.state == AgentState::Active)
            .count();
        let connected = self.agents.values().filter(|a| a.sink.is_some()).count();
        put("master/slaves_active", active as f64);
        put("master/slaves_connected", connected as f64);
        put(
            "master/slaves_unreachable",
            self.agents
                .values()
                .filter(|a| a.state == AgentState::Unreachable)
                .count() as f64,
        );
        put(
            "master/frameworks_active",
            self.frameworks.values().filter(|f| f.connected()).count() as f64,
        );
        put(
            "master/frameworks_connected",
            self.frameworks.values().filter(|f| f.connected()).count() as f64,
        );
        put(
            "master/frameworks_disconnected",
            self.frameworks.values().filter(|f| !f.connected()).count() as f64,
        );
        for s in [
            "staging",
            "starting",
            "running",
            "killing",
            "finished",
            "failed",
            "killed",
            "lost",
            "error",
            "unreachable",
            "dropped",
            "gone",
        ] {
            let name = format!("TASK_{}", s.to_ascii_uppercase());
            let n = self
                .tasks
                .values()
                .chain(
                    self.frameworks
                        .values()
                        .flat_map(|f| f.completed_tasks.iter()),
                )
                .filter(|t| t.state.name() == name)
                .count();
            put(&format!("master/tasks_{s}"), n as f64);
        }
        let total = self.alloc.cluster_total().clone();
        let mut used = Pools::new();
        for t in self.tasks.values().filter(|t| !t.released) {
            pools_add(&mut used, &t.resources);
        }
        let used = pools_sum(&used);
        for k in ["cpus", "mem", "disk", "gpus"] {
            let (t, u) = (total.get_scalar(k), used.get_scalar(k));
            put(&format!("master/{k}_total"), t);
            put(&format!("master/{k}_used"), u);
            put(
                &format!("master/{k}_percent"),
                if t > 0.0 { u / t } else { 0.0 },
            );
        }
        put("master/outstanding_offers", self.offers.len() as f64);
        put("master/dropped_messages", self.dropped_messages as f64);
        Value::Object(m)
    }
}

/// Per-state task counts of one agent or framework in `/master/state-summary`; the states
/// Mesos reports there (others, e.g. `TASK_DROPPED`, are not counted).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct TaskCounts([u64; SUMMARY_STATES.len()]);

const SUMMARY_STATES: [&str; 10] = [
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_FINISHED",
    "TASK_KILLED",
    "TASK_FAILED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_UNREACHABLE",
];

impl TaskCounts {
    fn count(&mut self, state: &str) {
        if let Some(i) = SUMMARY_STATES.iter().position(|s| *s == state) {
            self.0[i] += 1;
        }
    }

    /// Adds every count (zeros included) to `v`, an object.
    fn write(&self, v: &mut Value) {
        for (s, n) in SUMMARY_STATES.iter().zip(self.0) {
            v[*s] = json!(n);
        }
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    #[test]
    fn counts_cover_the_mesos_summary_states_and_ignore_the_rest() {
        let mut c = TaskCounts::default();
        for s in [
            "TASK_RUNNING",
            "TASK_RUNNING",
            "TASK_LOST",
            "TASK_DROPPED",
            "bogus",
        ] {
            c.count(s);
        }
        let mut v = json!({});
        c.write(&mut v);
        let o = v.as_object().expect("object");
        assert_eq!(o.len(), SUMMARY_STATES.len());
        assert_eq!(v["TASK_RUNNING"], 2);
        assert_eq!(v["TASK_LOST"], 1);
        assert_eq!(v["TASK_STAGING"], 0);
        assert_eq!(v["TASK_UNREACHABLE"], 0);
        assert!(v.get("TASK_DROPPED").is_none());
    }
}
