//! The v1 operator API (`/api/v1`): the GET_* calls, TEARDOWN, MARK_AGENT_GONE,
//! DRAIN_AGENT and REACTIVATE_AGENT (a drain undone), and the operator event stream
//! (SUBSCRIBE, then TASK_ADDED, TASK_UPDATED, FRAMEWORK_*, AGENT_* events), with the v1 JSON
//! views of tasks, agents and frameworks they carry.

use std::collections::BTreeSet;
use std::time::Instant;

use capstan_proto::mesos::v1 as mesos;
use capstan_proto::mesos::v1::master::call::Type;
use capstan_types::{AgentId, FrameworkId, OfferId, TaskId, TaskState};
use serde_json::{Value, json};
use tracing::info;

use super::scheduler::{agent_id, framework_id};
use super::{
    Agent, AgentState, ApiError, Core, Framework, OperatorReply, Packed, Sink, Task, version_info,
};
use crate::registry::RegistryOp;
use crate::resources::{Pools, pools_add, pools_to_mesos_json};
use crate::wire::{Api, Encoding, OperatorCall};

/// The call's `type`: present and a name of `Call.Type` (checked at the edge).
fn call_type_of(call: &OperatorCall) -> Result<Type, ApiError> {
    crate::wire::call_type_enum(call.r#type).map_err(ApiError::bad_request)
}

/// The `<field>.agent_id` of an operator call that names an agent, from its `<field>`
/// message (400 when the message is missing; the edge checks its required `agent_id`).
fn agent_id_of(id: Option<&mesos::AgentId>, field: &str) -> Result<AgentId, ApiError> {
    id.map(agent_id)
        .ok_or_else(|| ApiError::bad_request(format!("Expecting '{field}.agent_id' to be present")))
}

impl Core {
    pub(super) fn operator_event(&mut self, ev: Value) {
        self.operator_subs.retain(|s| s.send(&ev));
    }

    /// Tears a registered framework down (the operator's TEARDOWN call and the old
    /// `POST /master/teardown` endpoint): its tasks are killed and it is removed. An
    /// unknown id is a 400 with Mesos' message.
    pub fn teardown_framework(&mut self, fid: &FrameworkId) -> Result<(), ApiError> {
        if !self.frameworks.contains_key(fid) {
            return Err(ApiError::bad_request(
                "No framework found with specified ID",
            ));
        }
        self.remove_framework(fid, "Teardown by operator");
        Ok(())
    }

    pub fn operator_call(
        &mut self,
        call: &OperatorCall,
        enc: Encoding,
        now: Instant,
    ) -> Result<OperatorReply, ApiError> {
        let ty = call_type_of(call)?;
        let name = ty.as_str_name();
        let lower = name.to_ascii_lowercase();
        let wrap = |v: Value| OperatorReply::Json(json!({"type": name, lower.clone(): v}));
        match ty {
            Type::GetHealth => Ok(wrap(json!({"healthy": true}))),
            Type::GetVersion => Ok(wrap(json!({"version_info": version_info()}))),
            Type::GetState => Ok(wrap(self.get_state())),
            Type::GetAgents => Ok(wrap(self.get_agents())),
            Type::GetFrameworks => Ok(wrap(self.get_frameworks())),
            Type::GetTasks => Ok(wrap(self.get_tasks())),
            Type::GetExecutors => Ok(wrap(self.get_executors())),
            Type::GetMaster => Ok(wrap(json!({
                "master_info": self.master_info,
                "start_time": self.start_time,
                "elected_time": self.start_time,
            }))),
            Type::GetMetrics => Ok(wrap(
                json!({"metrics": self.metrics().as_object().map(|m| m.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()).unwrap_or_default()}),
            )),
            Type::Teardown => {
                let fid = call
                    .teardown
                    .as_ref()
                    .map(|t| framework_id(&t.framework_id))
                    .ok_or_else(|| {
                        ApiError::bad_request("Expecting 'teardown.framework_id' to be present")
                    })?;
                if !self.frameworks.contains_key(&fid) {
                    return Err(ApiError::bad_request(format!("Framework {fid} not found")));
                }
                self.teardown_framework(&fid)?;
                Ok(OperatorReply::Empty)
            }
            Type::MarkAgentGone => {
                let aid = agent_id_of(
                    call.mark_agent_gone.as_ref().map(|m| &m.agent_id),
                    "mark_agent_gone",
                )?;
                if !self.agents.contains_key(&aid) && !self.recovered_agents.contains_key(&aid) {
                    return Err(ApiError::bad_request(format!("Agent {aid} not found")));
                }
                self.mark_gone(&aid);
                Ok(OperatorReply::Empty)
            }
            Type::DrainAgent => {
                let drain = call.drain_agent.as_ref();
                let aid = agent_id_of(drain.map(|d| &d.agent_id), "drain_agent")?;
                let mark_gone = drain.is_some_and(mesos::master::call::DrainAgent::mark_gone);
                let Some(a) = self.agents.get_mut(&aid) else {
                    return Err(ApiError::bad_request(format!("Agent {aid} not found")));
                };
                if a.state == AgentState::Unreachable {
                    return Err(ApiError::bad_request(format!("Agent {aid} is unreachable")));
                }
                a.state = AgentState::Draining;
                a.mark_gone_when_drained |= mark_gone;
                let mark_gone = a.mark_gone_when_drained;
                self.registry.record(RegistryOp::AgentDraining {
                    id: aid.clone(),
                    mark_gone,
                });
                self.alloc.set_agent_active(&aid, false);
                let offers: Vec<OfferId> = self
                    .offers
                    .values()
                    .filter(|o| o.agent_id == aid)
                    .map(|o| o.id.clone())
                    .collect();
                for o in offers {
                    self.rescind(&o);
                }
                let kills: Vec<(FrameworkId, TaskId)> = self
                    .tasks
                    .values()
                    .filter(|t| t.agent_id == aid && !t.state.is_terminal())
                    .map(|t| (t.framework_id.clone(), t.id.clone()))
                    .collect();
                for (f, t) in kills {
                    self.kill_task(&f, &t, None);
                }
                // With mark_gone, the agent goes once drained (see `tick`), as in Mesos.
                self.mark_drained_agents_gone();
                let _ = now;
                Ok(OperatorReply::Empty)
            }
            Type::ReactivateAgent => {
                let aid = agent_id_of(
                    call.reactivate_agent.as_ref().map(|r| &r.agent_id),
                    "reactivate_agent",
                )?;
                let Some(a) = self.agents.get_mut(&aid) else {
                    return Err(ApiError::bad_request(format!("Agent {aid} not found")));
                };
                if a.state != AgentState::Draining {
                    return Err(ApiError::bad_request(format!(
                        "Agent {aid} is not deactivated"
                    )));
                }
                // Tasks the drain killed stay killed; the agent only takes offers again.
                a.state = AgentState::Active;
                a.mark_gone_when_drained = false;
                self.registry
                    .record(RegistryOp::AgentReactivated { id: aid.clone() });
                self.alloc.set_agent_active(&aid, true);
                info!(agent_id = %aid, "Agent reactivated");
                Ok(OperatorReply::Empty)
            }
            Type::Subscribe => {
                let (sink, rx) = Sink::new(Api::Operator, enc, &self.durability);
                sink.send(&json!({"type":"SUBSCRIBED","subscribed":{
                    "get_state": self.get_state(),
                    "heartbeat_interval_seconds": self.cfg.heartbeat_interval.as_secs_f64(),
                }}));
                self.operator_subs.push(sink);
                Ok(OperatorReply::Stream(rx))
            }
            Type::Unknown => Err(ApiError::unknown_call()),
            // A call type of the operator API (checked at the edge) that Capstan does not
            // implement: a well-formed call, so 501 rather than 400.
            _ => Err(ApiError {
                status: 501,
                message: format!("Operator call '{name}' is not implemented"),
            }),
        }
    }

    pub(super) fn task_v1_json(&self, t: &Task) -> Value {
        let info = t.info.value();
        let statuses: Vec<Value> = t.statuses.iter().map(Packed::value).collect();
        let mut v = json!({
            "name": info.get("name").cloned().unwrap_or(json!("")),
            "task_id": t.id.to_wire(),
            "framework_id": t.framework_id.to_wire(),
            "agent_id": t.agent_id.to_wire(),
            "state": t.state.name(),
            "resources": pools_to_mesos_json(&t.resources, Some(&t.role)),
            "statuses": statuses,
        });
        if let Some(e) = &t.executor_id {
            v["executor_id"] = e.to_wire();
        }
        for k in [
            "labels",
            "discovery",
            "container",
            "health_check",
            "kill_policy",
            "limits",
        ] {
            if let Some(x) = info.get(k) {
                v[k] = x.clone();
            }
        }
        if let Some(p) = t.pending.front() {
            v["status_update_state"] = p.status["state"].clone();
            v["status_update_uuid"] = json!(p.uuid);
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

    pub(super) fn agent_v1_json(&self, a: &Agent) -> Value {
        let mut used = Pools::new();
        let mut offered = Pools::new();
        for t in self
            .tasks
            .values()
            .filter(|t| t.agent_id == a.id && !t.released)
        {
            pools_add(&mut used, &t.resources);
        }
        for o in self.offers.values().filter(|o| o.agent_id == a.id) {
            pools_add(&mut offered, &o.resources);
        }
        let mut v = json!({
            "agent_info": a.info,
            "active": a.state == AgentState::Active,
            "deactivated": a.state == AgentState::Draining,
            "version": a.version,
            "pid": a.pid(),
            "registered_time": {"nanoseconds": (a.registered_time * 1e9) as i64},
            "total_resources": pools_to_mesos_json(&a.total, None),
            "allocated_resources": pools_to_mesos_json(&used, None),
            "offered_resources": pools_to_mesos_json(&offered, None),
            "capabilities": [{"type":"MULTI_ROLE"}],
        });
        if let Some(t) = a.reregistered_time {
            v["reregistered_time"] = json!({"nanoseconds": (t * 1e9) as i64});
        }
        if a.state == AgentState::Draining {
            let state = if self.is_drained(&a.id) {
                "DRAINED"
            } else {
                "DRAINING"
            };
            v["drain_info"] =
                json!({"state": state, "config": {"mark_gone": a.mark_gone_when_drained}});
        }
        v
    }

    pub(super) fn framework_v1_json(&self, f: &Framework) -> Value {
        let mut v = json!({
            "framework_info": f.info,
            "active": f.connected(),
            "connected": f.connected(),
            "recovered": f.recovered,
            "registered_time": {"nanoseconds": (f.registered_time * 1e9) as i64},
        });
        if let Some(t) = f.reregistered_time {
            v["reregistered_time"] = json!({"nanoseconds": (t * 1e9) as i64});
        }
        if let Some(t) = f.unregistered_time {
            v["unregistered_time"] = json!({"nanoseconds": (t * 1e9) as i64});
        }
        let offers: Vec<Value> = self
            .offers
            .values()
            .filter(|o| o.framework_id == f.id)
            .map(|o| self.offer_json(o))
            .collect();
        if !offers.is_empty() {
            v["offers"] = json!(offers);
        }
        v
    }

    pub(super) fn get_agents(&self) -> Value {
        let agents: Vec<Value> = self
            .agents
            .values()
            .filter(|a| a.state != AgentState::Unreachable)
            .map(|a| self.agent_v1_json(a))
            .collect();
        let recovered: Vec<&Value> = self.recovered_agents.values().collect();
        json!({"agents": agents, "recovered_agents": recovered})
    }

    pub(super) fn get_frameworks(&self) -> Value {
        let fws: Vec<Value> = self
            .frameworks
            .values()
            .map(|f| self.framework_v1_json(f))
            .collect();
        let done: Vec<Value> = self
            .completed_frameworks
            .iter()
            .map(|f| self.framework_v1_json(f))
            .collect();
        json!({"frameworks": fws, "completed_frameworks": done})
    }

    pub(super) fn get_tasks(&self) -> Value {
        let mut tasks = Vec::new();
        let mut unreachable = Vec::new();
        for t in self.tasks.values() {
            if t.state == TaskState::Unreachable {
                unreachable.push(self.task_v1_json(t));
            } else {
                tasks.push(self.task_v1_json(t));
            }
        }
        let completed: Vec<Value> = self
            .frameworks
            .values()
            .chain(self.completed_frameworks.iter())
            .flat_map(|f| f.completed_tasks.iter())
            .map(|t| self.task_v1_json(t))
            .collect();
        json!({"tasks": tasks, "completed_tasks": completed, "unreachable_tasks": unreachable})
    }

    pub(super) fn get_executors(&self) -> Value {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for t in self.tasks.values() {
            if let (Some(eid), Some(exec)) = (&t.executor_id, &t.executor)
                && seen.insert((t.framework_id.clone(), eid.clone()))
            {
                out.push(json!({"executor_info": exec.value(), "agent_id": t.agent_id.to_wire()}));
            }
        }
        json!({"executors": out})
    }

    pub(super) fn get_state(&self) -> Value {
        json!({
            "get_tasks": self.get_tasks(),
            "get_executors": self.get_executors(),
            "get_frameworks": self.get_frameworks(),
            "get_agents": self.get_agents(),
        })
    }
}
