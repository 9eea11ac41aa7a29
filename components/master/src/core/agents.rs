//! The Capstan agent protocol (`/api/capstan/agent/v1`): SUBSCRIBE (registration and
//! re-registration, reconciling the tasks the agent reports against the master's), the
//! agent's calls (PONG, MESSAGE, UPDATE), an agent that stops answering becoming
//! unreachable (its tasks TASK_UNREACHABLE, or TASK_LOST for frameworks that are not
//! partition aware), and draining and marking agents gone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use base64::Engine;
use capstan_proto::capstan::agent::v1::call::Type;
use capstan_proto::mesos::v1 as mesos;
use capstan_proto::to_json;
use capstan_types::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId, TaskState};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::scheduler::{agent_id, framework_id, task_id};
use super::{Agent, AgentState, ApiError, Core, Frame, MESOS_VERSION, Packed, Sink, Task, TaskKey};
use crate::registry::RegistryOp;
use crate::resources::{ANY_ROLE, ParseResourceError, Pools, pools_from_mesos_json};
use crate::wire::{AgentCall, Api, Encoding, master_status_at};

/// The call's `type`: present and a name of `Call.Type` (checked at the edge).
fn call_type_of(call: &AgentCall) -> Result<Type, ApiError> {
    crate::wire::call_type_enum(call.r#type).map_err(ApiError::bad_request)
}

/// Resources as the allocator counts them (read from their Mesos JSON).
fn pools_of(resources: &[mesos::Resource]) -> Result<Pools, ParseResourceError> {
    let list: Vec<Value> = resources.iter().map(to_json).collect();
    pools_from_mesos_json(&list)
}

/// A task an agent reports on (re-)registration, read before anything changes.
struct Reported {
    framework_id: FrameworkId,
    task_id: TaskId,
    state: TaskState,
    /// The TaskInfo and the latest TaskStatus, as the master keeps them (Mesos JSON).
    task: Value,
    status: Value,
    resources: Pools,
    role: String,
    executor_id: Option<ExecutorId>,
    executor: Option<Value>,
}

impl Core {
    /// The hostname agent `id` registered with, if it is known.
    pub fn agent_hostname(&self, id: &AgentId) -> Option<&str> {
        self.agents.get(id).map(|a| a.hostname.as_str())
    }

    pub fn agent_subscribe(
        &mut self,
        call: &AgentCall,
        enc: Encoding,
        now: Instant,
    ) -> Result<mpsc::Receiver<Frame>, ApiError> {
        let sub = call
            .subscribe
            .as_ref()
            .ok_or_else(|| ApiError::bad_request("Expecting 'subscribe' to be present"))?;
        let info = &sub.agent_info;
        let hostname = info.hostname.clone();
        let total = pools_of(&info.resources)
            .map_err(|e| ApiError::bad_request(format!("Invalid agent resources: {e}")))?;
        let claimed = info.id.as_ref().or(call.agent_id.as_ref()).map(agent_id);
        if let Some(id) = &claimed
            && self.gone_agents.contains(id)
        {
            return Err(ApiError::forbidden(format!(
                "Agent {id} has been marked gone"
            )));
        }
        // Validate reported tasks before changing anything.
        let mut parsed = Vec::new();
        for rt in &sub.tasks {
            let resources = pools_of(&rt.task.resources)
                .map_err(|e| ApiError::bad_request(format!("Invalid task resources: {e}")))?;
            let role = rt
                .task
                .resources
                .first()
                .and_then(|r| r.allocation_info.as_ref())
                .and_then(|a| a.role.clone())
                .unwrap_or_else(|| ANY_ROLE.to_string());
            let executor = rt.executor.as_ref().or(rt.task.executor.as_ref());
            parsed.push(Reported {
                framework_id: framework_id(&rt.framework_id),
                task_id: task_id(&rt.task.task_id),
                state: TaskState::from_number_or_unknown(rt.status.state),
                task: to_json(&rt.task),
                status: to_json(&rt.status),
                resources,
                role,
                executor_id: executor.map(|e| e.executor_id.value.as_str().into()),
                executor: executor.map(to_json),
            });
        }
        let id = match claimed {
            Some(id) => id,
            None => {
                let id = AgentId::from(format!("{}-S{}", self.master_id, self.next_agent));
                self.next_agent += 1;
                id
            }
        };
        let mut info = info.clone();
        info.id = Some(mesos::AgentId {
            value: id.to_string(),
        });
        let port = u64::try_from(info.port()).unwrap_or(5051);
        // The AgentInfo as the master keeps it (`port` always set: it has a default).
        let info = to_json(&info);
        let ip = sub.ip.clone().unwrap_or_else(|| "127.0.0.1".to_string());
        let version = sub
            .version
            .clone()
            .unwrap_or_else(|| MESOS_VERSION.to_string());
        let (sink, rx) = Sink::new(Api::Agent, enc, &self.durability);
        sink.send(&json!({"type":"SUBSCRIBED","subscribed":{
            "agent_id": id.to_wire(),
            "ping_interval_seconds": self.cfg.agent_ping_interval.as_secs_f64(),
            "agent_timeout_seconds": self.cfg.agent_timeout.as_secs_f64(),
        }}));
        let rereg = self.agents.remove(&id);
        let was_known = rereg.is_some() || self.recovered_agents.remove(&id).is_some();
        // Offers on the agent are void either way.
        let stale: Vec<OfferId> = self
            .offers
            .values()
            .filter(|o| o.agent_id == id)
            .map(|o| o.id.clone())
            .collect();
        for oid in stale {
            self.rescind(&oid);
        }
        self.alloc.remove_agent(&id);
        let registered_time = rereg
            .as_ref()
            .map(|a| a.registered_time)
            .unwrap_or_else(|| self.clock.wall());
        // A drain survives re-registration and, through the registry, a leader change.
        let recovered_drain = self.recovered_drains.remove(&id);
        let draining = recovered_drain.is_some()
            || rereg
                .as_ref()
                .is_some_and(|a| a.state == AgentState::Draining);
        let mark_gone_when_drained = recovered_drain.unwrap_or(false)
            || rereg.as_ref().is_some_and(|a| a.mark_gone_when_drained);
        let agent = Agent {
            id: id.clone(),
            info: info.clone(),
            hostname,
            port,
            ip,
            version,
            total: total.clone(),
            sink: Some(sink),
            last_seen: now,
            last_ping: now,
            registered_time,
            reregistered_time: was_known.then(|| self.clock.wall()),
            state: if draining {
                AgentState::Draining
            } else {
                AgentState::Active
            },
            mark_gone_when_drained,
        };
        info!(agent_id = %id, hostname = %agent.hostname, reregistered = was_known, tasks = parsed.len(), "Agent subscribed");
        self.agents.insert(id.clone(), agent);
        self.alloc.add_agent(&id, total, &BTreeMap::new());
        if draining {
            self.alloc.set_agent_active(&id, false);
        }
        self.registry.record(RegistryOp::AgentAdmitted {
            id: id.clone(),
            info: info.clone(),
        });
        self.allocation_requested = true;

        // Reconcile tasks.
        let reported_keys: BTreeSet<TaskKey> = parsed
            .iter()
            .map(|p| (p.framework_id.clone(), p.task_id.clone()))
            .collect();
        let ours: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(k, t)| t.agent_id == id && !reported_keys.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in ours {
            // The agent does not know this task any more: it is gone.
            let t = self.tasks.get_mut(&k).expect("exists");
            if t.state.is_terminal() {
                continue;
            }
            let s = master_status_at(
                self.clock.wall(),
                &t.id,
                TaskState::Gone,
                Some(&id),
                Some("REASON_AGENT_REREGISTERED"),
                Some("Task was not reported by its re-registered agent"),
            );
            t.state = TaskState::Gone;
            t.push_status(&s);
            self.send_update_to_framework(&k.0, s);
            let t = self.tasks.remove(&k).expect("exists");
            self.release(&t);
            if let Some(f) = self.frameworks.get_mut(&k.0) {
                f.completed_tasks.push_back(t);
            }
        }
        for p in parsed {
            let Reported {
                framework_id: fid,
                task_id: tid,
                state,
                task,
                status,
                resources: res,
                role,
                executor_id,
                executor,
            } = p;
            let key = (fid.clone(), tid.clone());
            if self.removed_frameworks.contains(&fid) {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.send(&json!({"type":"SHUTDOWN_FRAMEWORK","shutdown_framework":{"framework_id": fid.to_wire()}}));
                }
                continue;
            }
            match self.tasks.get_mut(&key) {
                Some(t) => {
                    let changed = t.state != state;
                    t.agent_id = id.clone();
                    t.state = state;
                    let terminal = state.is_terminal();
                    let mut st = status.clone();
                    if let Some(o) = st.as_object_mut() {
                        o.remove("uuid");
                    }
                    st["agent_id"] = id.to_wire();
                    if changed {
                        t.push_status(&st);
                    }
                    if !terminal && !self.alloc.charge(&fid, &id, &res) {
                        warn!(task_id = %tid, "Re-registered task's resources exceed the agent's");
                    }
                    let t = self.tasks.get_mut(&key).expect("exists");
                    t.released = terminal;
                    if changed && t.pending.is_empty() {
                        st["reason"] = json!("REASON_AGENT_REREGISTERED");
                        st["source"] = json!("SOURCE_MASTER");
                        st["timestamp"] = json!(self.clock.wall());
                        self.send_update_to_framework(&fid, st);
                    }
                }
                None => {
                    // Adopt (e.g. after a master restart); the framework may re-subscribe.
                    let mut st = status.clone();
                    if let Some(o) = st.as_object_mut() {
                        o.remove("uuid");
                    }
                    st["agent_id"] = id.to_wire();
                    let terminal = state.is_terminal();
                    let t = Task {
                        framework_id: fid.clone(),
                        id: tid.clone(),
                        agent_id: id.clone(),
                        executor_id,
                        executor: executor.as_ref().map(Packed::new),
                        info: Packed::new(&task),
                        resources: res.clone(),
                        role,
                        state,
                        statuses: vec![Packed::new(&st)],
                        pending: VecDeque::new(),
                        acked: VecDeque::new(),
                        released: terminal,
                    };
                    if !terminal && self.frameworks.contains_key(&fid) {
                        self.alloc.charge(&fid, &id, &res);
                    }
                    // Not charged when the framework is unknown: charged on its SUBSCRIBE.
                    let tv = self.task_v1_json(&t);
                    self.tasks.insert(key, t);
                    self.operator_event(json!({"type":"TASK_ADDED","task_added":{"task": tv}}));
                }
            }
        }
        let av = self.agent_v1_json(&self.agents[&id]);
        self.operator_event(json!({"type":"AGENT_ADDED","agent_added":{"agent": av}}));
        Ok(rx)
    }

    pub fn agent_call(&mut self, call: &AgentCall, now: Instant) -> Result<(), ApiError> {
        let aid = call
            .agent_id
            .as_ref()
            .map(agent_id)
            .ok_or_else(|| ApiError::bad_request("Expecting 'agent_id' to be present"))?;
        if self.gone_agents.contains(&aid) {
            return Err(ApiError::forbidden(format!(
                "Agent {aid} has been marked gone"
            )));
        }
        let Some(a) = self.agents.get_mut(&aid) else {
            return Err(ApiError::forbidden(format!(
                "Agent {aid} is not subscribed"
            )));
        };
        if a.state == AgentState::Unreachable {
            return Err(ApiError::forbidden(format!(
                "Agent {aid} is unreachable; subscribe again"
            )));
        }
        a.last_seen = now;
        match call_type_of(call)? {
            Type::Pong => Ok(()),
            Type::Message => {
                let m = call
                    .message
                    .as_ref()
                    .ok_or_else(|| ApiError::bad_request("Expecting 'message' to be present"))?;
                let fid = framework_id(&m.framework_id);
                let ev = json!({"type": "MESSAGE", "message": {
                    "agent_id": aid.to_wire(),
                    "executor_id": to_json(&m.executor_id),
                    "data": base64::engine::general_purpose::STANDARD.encode(&m.data),
                }});
                match self.frameworks.get_mut(&fid) {
                    Some(f) if f.connected() => f.send(&ev),
                    _ => self.dropped_messages += 1,
                }
                Ok(())
            }
            Type::Update => {
                let u = call
                    .update
                    .as_ref()
                    .ok_or_else(|| ApiError::bad_request("Expecting 'update' to be present"))?;
                let fid = framework_id(&u.framework_id);
                let status = &u.status;
                let tid = task_id(&status.task_id);
                let state = TaskState::from_number_or_unknown(status.state);
                // Updates are named by the standard base64 of their uuid's bytes.
                let uuid = status
                    .uuid
                    .as_ref()
                    .map(|u| base64::engine::general_purpose::STANDARD.encode(u))
                    .ok_or_else(|| {
                        ApiError::bad_request("Expecting 'update.status.uuid' to be present")
                    })?;
                self.agent_update(&aid, &fid, &tid, state, &uuid, to_json(status), now);
                Ok(())
            }
            Type::Subscribe => Err(ApiError::bad_request(
                "SUBSCRIBE must be sent on its own connection",
            )),
            Type::Unknown => Err(ApiError::bad_request("Unknown agent call type 'UNKNOWN'")),
        }
    }

    pub(super) fn mark_unreachable(&mut self, aid: &AgentId) {
        let Some(a) = self.agents.get_mut(aid) else {
            return;
        };
        if a.state == AgentState::Unreachable {
            return;
        }
        warn!(agent_id = %aid, "Agent unreachable");
        a.state = AgentState::Unreachable;
        a.sink = None;
        let offers: Vec<OfferId> = self
            .offers
            .values()
            .filter(|o| o.agent_id == *aid)
            .map(|o| o.id.clone())
            .collect();
        for o in offers {
            self.rescind(&o);
        }
        self.alloc.remove_agent(aid);
        let keys: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id == *aid && !t.state.is_terminal())
            .map(|(k, _)| k.clone())
            .collect();
        let ts = self.clock.wall();
        for k in keys {
            let t = self.tasks.get_mut(&k).expect("exists");
            t.state = TaskState::Unreachable;
            t.released = true; // resources went with the agent
            let mut s = master_status_at(
                self.clock.wall(),
                &t.id,
                TaskState::Unreachable,
                Some(aid),
                Some("REASON_AGENT_DISCONNECTED"),
                Some("Agent is unreachable"),
            );
            s["unreachable_time"] = json!({"nanoseconds": (ts * 1e9) as i64});
            t.push_status(&s);
            self.send_update_to_framework(&k.0, s.clone());
            self.operator_event(json!({"type":"TASK_UPDATED","task_updated":{
                "framework_id": k.0.to_wire(), "status": s, "state": TaskState::Unreachable.name()}}));
        }
        let failure = json!({"type":"FAILURE","failure":{"agent_id": aid.to_wire()}});
        for f in self.frameworks.values_mut() {
            f.send(&failure);
        }
        self.operator_event(
            json!({"type":"AGENT_REMOVED","agent_removed":{"agent_id": aid.to_wire()}}),
        );
    }

    /// A draining agent is drained once none of its tasks is still running.
    pub(super) fn is_drained(&self, aid: &AgentId) -> bool {
        !self
            .tasks
            .values()
            .any(|t| t.agent_id == *aid && !t.state.is_terminal())
    }

    pub(super) fn mark_drained_agents_gone(&mut self) {
        let drained: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| a.state == AgentState::Draining && a.mark_gone_when_drained)
            .map(|a| a.id.clone())
            .filter(|id| self.is_drained(id))
            .collect();
        for id in drained {
            info!(agent_id = %id, "Agent drained");
            self.mark_gone(&id);
        }
    }

    pub(super) fn mark_gone(&mut self, aid: &AgentId) {
        info!(agent_id = %aid, "Agent marked gone");
        let keys: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id == *aid)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let mut t = self.tasks.remove(&k).expect("exists");
            self.release(&t);
            if !t.state.is_terminal() {
                let s = master_status_at(
                    self.clock.wall(),
                    &t.id,
                    TaskState::GoneByOperator,
                    Some(aid),
                    Some("REASON_AGENT_REMOVED_BY_OPERATOR"),
                    Some("Agent marked gone by operator"),
                );
                t.state = TaskState::GoneByOperator;
                t.push_status(&s);
                self.send_update_to_framework(&k.0, s);
            }
            t.pending.clear();
            if let Some(f) = self.frameworks.get_mut(&k.0) {
                f.completed_tasks.push_back(t);
            }
        }
        let offers: Vec<OfferId> = self
            .offers
            .values()
            .filter(|o| o.agent_id == *aid)
            .map(|o| o.id.clone())
            .collect();
        for o in offers {
            self.rescind(&o);
        }
        self.alloc.remove_agent(aid);
        if let Some(mut a) = self.agents.remove(aid) {
            a.send(&json!({"type":"ERROR","error":{"message":"Agent has been marked gone"}}));
        }
        self.recovered_agents.remove(aid);
        self.recovered_drains.remove(aid);
        self.gone_agents.insert(aid.clone());
        self.registry
            .record(RegistryOp::AgentGone { id: aid.clone() });
        self.operator_event(
            json!({"type":"AGENT_REMOVED","agent_removed":{"agent_id": aid.to_wire()}}),
        );
    }
}
