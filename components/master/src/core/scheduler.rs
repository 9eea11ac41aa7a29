//! The v1 scheduler API (`/api/v1/scheduler`): SUBSCRIBE (new frameworks, re-subscription
//! with the same id, failover), ACCEPT with LAUNCH / LAUNCH_GROUP, DECLINE with filters,
//! KILL, SHUTDOWN, RECONCILE (explicit and implicit), REVIVE / SUPPRESS, MESSAGE,
//! UPDATE_FRAMEWORK and TEARDOWN, and removing a framework (teardown or an expired
//! failover_timeout). ACKNOWLEDGE is decoded here and handled in `updates.rs`.
//!
//! Calls come typed (`scheduler::Call`, decoded at the HTTP edge by
//! `wire::decode_scheduler_json` / `decode_scheduler_protobuf`); only the blobs the master
//! keeps for its views and passes on to agents (FrameworkInfo, TaskInfo, ExecutorInfo,
//! KillPolicy) are turned back into their Mesos JSON with `capstan_proto::to_json`.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use base64::Engine;
use capstan_proto::mesos::v1 as mesos;
use capstan_proto::mesos::v1::scheduler::{self, call::Type};
use capstan_proto::to_json;
use capstan_types::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId, TaskState};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    AgentState, ApiError, Core, Frame, Framework, Offer, Packed, Sink, Task, TaskKey, roles_of,
};
use crate::registry::RegistryOp;
use crate::resources::{
    ANY_ROLE, Pools, pools_add, pools_checked_sub, pools_from_mesos_json, pools_sum,
    pools_to_mesos_json,
};
use crate::wire::{Api, Encoding, RejectedTask, SchedulerCall, master_status_at};

pub(super) fn framework_id(id: &mesos::FrameworkId) -> FrameworkId {
    id.value.as_str().into()
}

pub(super) fn task_id(id: &mesos::TaskId) -> TaskId {
    id.value.as_str().into()
}

pub(super) fn agent_id(id: &mesos::AgentId) -> AgentId {
    id.value.as_str().into()
}

/// The call's `type`: present and a name of `Call.Type` (checked at the edge).
fn call_type_of(call: &scheduler::Call) -> Result<Type, ApiError> {
    crate::wire::call_type_enum(call.r#type).map_err(ApiError::bad_request)
}

/// A FrameworkInfo as the master keeps it: its Mesos JSON, `failover_timeout` always set.
fn framework_info_json(info: &mesos::FrameworkInfo) -> Value {
    let mut info = info.clone();
    if info.failover_timeout.is_none() {
        info.failover_timeout = Some(0.0);
    }
    to_json(&info)
}

impl Core {
    /// Ties frameworks to the principal that authenticated their calls (strict mode; reliability
    /// probe F5): a SUBSCRIBE takes the caller as its `framework_info.principal` when it names
    /// none, and is refused (403) when it names another or when the framework id it claims is
    /// registered by another principal; any other call is refused (400, as Mesos) unless its
    /// framework's principal is the caller. Run in the same core step as the call itself.
    pub fn authorize_scheduler_call(
        &self,
        call: &mut scheduler::Call,
        caller: &str,
    ) -> Result<(), ApiError> {
        let registered = |id: Option<&FrameworkId>| {
            id.and_then(|id| self.frameworks.get(id))
                .and_then(|f| f.info.get("principal"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let call_id = call.framework_id.as_ref().map(framework_id);
        if call.r#type != Some(Type::Subscribe as i32) {
            if let Some(p) = registered(call_id.as_ref())
                && p != caller
            {
                return Err(ApiError::bad_request(format!(
                    "Authenticated principal '{caller}' does not match principal '{p}' set in `FrameworkInfo`"
                )));
            }
            return Ok(());
        }
        let Some(sub) = call.subscribe.as_mut() else {
            return Ok(()); // SUBSCRIBE itself says what is missing
        };
        let info = &mut sub.framework_info;
        match info.principal.as_deref() {
            Some(p) if p != caller => {
                return Err(ApiError::forbidden(format!(
                    "Framework principal '{p}' does not match authenticated principal '{caller}'"
                )));
            }
            Some(_) => {}
            None => info.principal = Some(caller.to_owned()),
        }
        let id = info.id.as_ref().map(framework_id).or(call_id);
        if let Some(p) = registered(id.as_ref())
            && p != caller
        {
            return Err(ApiError::forbidden(format!(
                "Framework {} is registered by principal '{p}', not '{caller}'",
                id.map(FrameworkId::into_string).unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// SUBSCRIBE: returns the new stream id and the event stream.
    pub fn scheduler_subscribe(
        &mut self,
        call: &scheduler::Call,
        enc: Encoding,
        now: Instant,
    ) -> Result<(String, mpsc::Receiver<Frame>), ApiError> {
        let sub = call
            .subscribe
            .as_ref()
            .ok_or_else(|| ApiError::invalid("Expecting 'subscribe' to be present"))?;
        let info = &sub.framework_info;
        let info_id = info.id.as_ref().map(framework_id);
        let call_id = call.framework_id.as_ref().map(framework_id);
        if info_id.is_some() && call_id.is_some() && info_id != call_id {
            return Err(ApiError::invalid(
                "'framework_id' differs from 'subscribe.framework_info.id'",
            ));
        }
        if let Some(ft) = info.failover_timeout
            && (!ft.is_finite() || ft < 0.0)
        {
            return Err(ApiError::invalid(
                "framework_info.failover_timeout must be a non-negative number",
            ));
        }
        let id = info_id.or(call_id);
        let suppressed = sub.suppressed_roles.clone();
        let stream_id = self.ids.uuid().to_string();
        let (sink, rx) = Sink::new(Api::Scheduler, enc, &self.durability);
        if let Some(id) = &id
            && self.removed_frameworks.contains(id)
        {
            sink.send(
                &json!({"type": "ERROR", "error": {"message": "Framework has been removed"}}),
            );
            return Ok((stream_id, rx));
        }
        let id = match id {
            Some(id) => id,
            None => {
                let id =
                    FrameworkId::from(format!("{}-{:04}", self.master_id, self.next_framework));
                self.next_framework += 1;
                id
            }
        };
        let mut info = info.clone();
        info.id = Some(mesos::FrameworkId {
            value: id.to_string(),
        });
        let info = framework_info_json(&info);
        let roles = roles_of(&info);
        let subscribed = json!({
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": id.to_wire(),
                "heartbeat_interval_seconds": self.cfg.heartbeat_interval.as_secs_f64(),
                "master_info": self.master_info,
            }
        });
        sink.send(&subscribed);
        let existed = self.frameworks.contains_key(&id);
        if existed {
            let f = self.frameworks.get_mut(&id).expect("exists");
            info!(framework_id = %id, "Framework re-subscribed");
            if let Some(old) = f.sink.take() {
                drop(old); // closes the previous subscription stream
            }
            f.info = info.clone();
            f.roles = roles.clone();
            f.suppressed_roles = suppressed.clone();
            f.sink = Some(sink);
            f.stream_id = Some(stream_id.clone());
            f.reregistered_time = Some(self.clock.wall());
            f.disconnected_at = None;
            f.unregistered_time = None;
            f.last_heartbeat = now;
            f.recovered = false;
            self.alloc.update_framework_roles(&id, roles, &suppressed);
            self.alloc.set_framework_active(&id, true);
        } else {
            info!(framework_id = %id, name = %info["name"], "Framework subscribed");
            self.frameworks.insert(
                id.clone(),
                Framework {
                    id: id.clone(),
                    info: info.clone(),
                    roles: roles.clone(),
                    suppressed_roles: suppressed.clone(),
                    sink: Some(sink),
                    stream_id: Some(stream_id.clone()),
                    registered_time: self.clock.wall(),
                    reregistered_time: None,
                    unregistered_time: None,
                    disconnected_at: None,
                    last_heartbeat: now,
                    completed_tasks: VecDeque::new(),
                    recovered: false,
                },
            );
            self.alloc.add_framework(&id, roles, &suppressed);
            // Charge tasks adopted from re-registered agents before the framework came back.
            let adopted: Vec<(AgentId, Pools)> = self
                .tasks
                .values()
                .filter(|t| t.framework_id == id && !t.released)
                .map(|t| (t.agent_id.clone(), t.resources.clone()))
                .collect();
            for (agent, res) in adopted {
                self.alloc.charge(&id, &agent, &res);
            }
        }
        self.registry.record(RegistryOp::FrameworkAdded {
            id: id.clone(),
            info: info.clone(),
        });
        self.allocation_requested = true;
        let fv = self.framework_v1_json(&self.frameworks[&id]);
        self.operator_event(if existed {
            json!({"type":"FRAMEWORK_UPDATED","framework_updated":{"framework": fv}})
        } else {
            json!({"type":"FRAMEWORK_ADDED","framework_added":{"framework": fv}})
        });
        // Resend the head of every task's pending update queue.
        self.deliver_pending(&id, now, true);
        Ok((stream_id, rx))
    }

    /// Any non-SUBSCRIBE call. `Ok(Some(v))` answers 200 with `v`; `Ok(None)` answers 202.
    pub fn scheduler_call(
        &mut self,
        sc: &SchedulerCall,
        stream_id: Option<&str>,
        now: Instant,
    ) -> Result<Option<Value>, ApiError> {
        let call = &sc.call;
        let ty = call_type_of(call)?;
        if ty == Type::Unknown {
            return Err(ApiError::unknown_call());
        }
        let fid = call
            .framework_id
            .as_ref()
            .map(framework_id)
            .ok_or_else(|| ApiError::invalid("Expecting 'framework_id' to be present"))?;
        let Some(f) = self.frameworks.get(&fid) else {
            return Err(ApiError::bad_request("Framework cannot be found"));
        };
        if !f.connected() {
            return Err(ApiError::forbidden("Framework is not subscribed"));
        }
        let Some(sid) = stream_id else {
            return Err(ApiError::bad_request(
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
            ));
        };
        if f.stream_id.as_deref() != Some(sid) {
            return Err(ApiError::bad_request(format!(
                "The stream ID '{sid}' included in this request didn't match the stream ID currently associated with framework ID {fid}"
            )));
        }
        let missing =
            |what: &str| ApiError::invalid(format_args!("Expecting '{what}' to be present"));
        match ty {
            Type::Teardown => {
                self.remove_framework(&fid, "Framework teardown");
                Ok(None)
            }
            Type::Accept => {
                let accept = call.accept.as_ref().ok_or_else(|| missing("accept"))?;
                self.accept(&fid, accept, &sc.rejected, now);
                Ok(None)
            }
            Type::Decline => {
                let decline = call.decline.as_ref().ok_or_else(|| missing("decline"))?;
                let refuse = refuse_ms(decline.filters.as_ref());
                for id in &decline.offer_ids {
                    let id = OfferId::from(id.value.as_str());
                    if let Some(o) = self.offers.get(&id)
                        && o.framework_id == fid
                    {
                        let o = self.offers.remove(&id).expect("exists");
                        self.alloc.recover(&fid, &o.agent_id, &o.resources);
                        let ms = self.ms(now);
                        self.alloc
                            .add_filter(&fid, &o.agent_id, ms, refuse, &o.resources);
                    }
                }
                Ok(None)
            }
            Type::Revive => {
                let roles = call
                    .revive
                    .as_ref()
                    .map(|r| r.roles.clone())
                    .unwrap_or_default();
                self.alloc.revive(&fid, &roles);
                let f = self.frameworks.get_mut(&fid).expect("exists");
                if roles.is_empty() {
                    f.suppressed_roles.clear();
                } else {
                    f.suppressed_roles.retain(|r| !roles.contains(r));
                }
                self.allocation_requested = true;
                Ok(None)
            }
            Type::Suppress => {
                let roles = call
                    .suppress
                    .as_ref()
                    .map(|r| r.roles.clone())
                    .unwrap_or_default();
                self.alloc.suppress(&fid, &roles);
                let f = self.frameworks.get_mut(&fid).expect("exists");
                let add = if roles.is_empty() {
                    f.roles.clone()
                } else {
                    roles
                };
                for r in add {
                    if !f.suppressed_roles.contains(&r) {
                        f.suppressed_roles.push(r);
                    }
                }
                Ok(None)
            }
            Type::Kill => {
                let kill = call.kill.as_ref().ok_or_else(|| missing("kill"))?;
                let policy = kill.kill_policy.as_ref().map(to_json);
                self.kill_task(&fid, &task_id(&kill.task_id), policy.as_ref());
                Ok(None)
            }
            Type::Shutdown => {
                let sd = call.shutdown.as_ref().ok_or_else(|| missing("shutdown"))?;
                let eid = ExecutorId::from(sd.executor_id.value.as_str());
                let tids: Vec<TaskId> = self
                    .tasks
                    .values()
                    .filter(|t| t.framework_id == fid && t.executor_id.as_ref() == Some(&eid))
                    .map(|t| t.id.clone())
                    .collect();
                for t in tids {
                    self.kill_task(&fid, &t, None);
                }
                Ok(None)
            }
            Type::Acknowledge => {
                let ack = call
                    .acknowledge
                    .as_ref()
                    .ok_or_else(|| missing("acknowledge"))?;
                if uuid::Uuid::from_slice(&ack.uuid).is_err() {
                    return Err(ApiError::invalid("'acknowledge.uuid' is not a valid UUID"));
                }
                // Agents name updates by the standard base64 of the uuid's bytes.
                let uuid = base64::engine::general_purpose::STANDARD.encode(&ack.uuid);
                self.acknowledge(&fid, &task_id(&ack.task_id), &uuid, now);
                Ok(None)
            }
            Type::Reconcile => {
                let tasks = call
                    .reconcile
                    .as_ref()
                    .map(|r| r.tasks.as_slice())
                    .unwrap_or_default();
                self.reconcile(&fid, tasks);
                Ok(None)
            }
            Type::Message => {
                let m = call.message.as_ref().ok_or_else(|| missing("message"))?;
                let aid = agent_id(&m.agent_id);
                let ev = json!({"type": "MESSAGE", "message": {
                    "framework_id": fid.to_wire(),
                    "executor_id": {"value": m.executor_id.value},
                    "data": base64::engine::general_purpose::STANDARD.encode(&m.data),
                }});
                match self.agents.get_mut(&aid) {
                    Some(a) if a.sink.is_some() => a.send(&ev),
                    // Like Mesos: best effort, dropped when the agent is not connected.
                    _ => self.dropped_messages += 1,
                }
                Ok(None)
            }
            Type::Request
            | Type::AcceptInverseOffers
            | Type::DeclineInverseOffers
            | Type::AcknowledgeOperationStatus
            | Type::ReconcileOperations => Ok(None),
            Type::UpdateFramework => {
                let u = call
                    .update_framework
                    .as_ref()
                    .ok_or_else(|| missing("update_framework"))?;
                let info = &u.framework_info;
                if info.id.as_ref().map(|i| i.value.as_str()) != Some(fid.as_str()) {
                    return Err(ApiError::invalid(
                        "'update_framework.framework_info.id' must match 'framework_id'",
                    ));
                }
                let suppressed = u.suppressed_roles.clone();
                let info = framework_info_json(info);
                let f = self.frameworks.get_mut(&fid).expect("exists");
                f.roles = roles_of(&info);
                f.info = info;
                f.suppressed_roles = suppressed.clone();
                let roles = f.roles.clone();
                self.alloc.update_framework_roles(&fid, roles, &suppressed);
                let fv = self.framework_v1_json(&self.frameworks[&fid]);
                self.operator_event(
                    json!({"type":"FRAMEWORK_UPDATED","framework_updated":{"framework": fv}}),
                );
                Ok(Some(Value::Null))
            }
            Type::Subscribe => Err(ApiError::bad_request(
                "SUBSCRIBE must be sent on its own connection",
            )),
            Type::Unknown => Err(ApiError::unknown_call()),
        }
    }

    /// Sends the TASK_ERROR of each task the HTTP edge took out of an ACCEPT for missing
    /// required fields (see `wire::decode_scheduler_json`).
    fn reject_tasks(&mut self, fid: &FrameworkId, agent_id: &AgentId, rejected: &[RejectedTask]) {
        for r in rejected {
            let s = master_status_at(
                self.clock.wall(),
                &r.task_id,
                TaskState::Error,
                r.names_agent.then_some(agent_id),
                Some(r.reason),
                Some(&r.message),
            );
            self.send_update_to_framework(fid, s);
        }
    }

    pub(super) fn accept(
        &mut self,
        fid: &FrameworkId,
        accept: &scheduler::call::Accept,
        rejected: &[RejectedTask],
        now: Instant,
    ) {
        let offer_ids: Vec<OfferId> = accept
            .offer_ids
            .iter()
            .map(|o| OfferId::from(o.value.as_str()))
            .collect();
        let ops = &accept.operations;
        let refuse = refuse_ms(accept.filters.as_ref());
        // Validate the offers.
        let mut error: Option<String> = None;
        let mut seen = BTreeSet::new();
        let mut agent: Option<AgentId> = None;
        for id in &offer_ids {
            if !seen.insert(id.clone()) {
                error = Some(format!("Offer {id} appears more than once"));
                continue;
            }
            match self.offers.get(id) {
                None => error = Some(format!("Offer {id} is no longer valid")),
                Some(o) if o.framework_id != *fid => {
                    error = Some(format!("Offer {id} has invalid framework"))
                }
                Some(o) => {
                    if agent.as_ref().is_some_and(|a| *a != o.agent_id) {
                        error = Some("Aggregated offers must belong to one agent".into());
                    }
                    agent.get_or_insert(o.agent_id.clone());
                }
            }
        }
        if offer_ids.is_empty() {
            error = Some("No offers specified".into());
        }
        // Remove (and collect) every valid offer named.
        let mut pool = Pools::new();
        let mut role = ANY_ROLE.to_string();
        for id in &offer_ids {
            if self.offers.get(id).is_some_and(|o| o.framework_id == *fid) {
                let o = self.offers.remove(id).expect("exists");
                role = o.role.clone();
                if error.is_some() {
                    self.alloc.recover(fid, &o.agent_id, &o.resources);
                } else {
                    pools_add(&mut pool, &o.resources);
                }
            }
        }
        if let Some(err) = error {
            let pa = self
                .frameworks
                .get(fid)
                .is_some_and(Framework::partition_aware);
            let tids = launch_task_ids(ops).chain(rejected.iter().map(|r| r.task_id.clone()));
            for tid in tids.collect::<Vec<_>>() {
                let st = if pa {
                    TaskState::Dropped
                } else {
                    TaskState::Lost
                };
                let s = master_status_at(
                    self.clock.wall(),
                    &tid,
                    st,
                    None,
                    Some("REASON_INVALID_OFFERS"),
                    Some(&err),
                );
                self.send_update_to_framework(fid, s);
            }
            return;
        }
        let agent_id = agent.expect("at least one valid offer");
        self.reject_tasks(fid, &agent_id, rejected);
        use mesos::offer::operation::Type as Op;
        for op in ops {
            match op.r#type.map(Op::try_from) {
                Some(Ok(Op::Launch)) => {
                    for ti in op.launch.iter().flat_map(|l| &l.task_infos) {
                        self.launch(fid, &agent_id, &role, &mut pool, &to_json(ti), None);
                    }
                }
                Some(Ok(Op::LaunchGroup)) => {
                    let Some(group) = &op.launch_group else {
                        continue; // no tasks to launch
                    };
                    let mut exec = to_json(&group.executor);
                    let tasks: Vec<Value> = group.task_group.tasks.iter().map(to_json).collect();
                    if exec.get("framework_id").is_none() {
                        exec["framework_id"] = fid.to_wire();
                    }
                    // Executor resources come out of the offer first.
                    let exec_res = exec
                        .get("resources")
                        .and_then(Value::as_array)
                        .map(|a| pools_from_mesos_json(a));
                    let ok = match exec_res {
                        None => true,
                        Some(Ok(r)) => pools_checked_sub(&mut pool, &r),
                        Some(Err(_)) => false,
                    };
                    if !ok {
                        for t in &group.task_group.tasks {
                            let s = master_status_at(
                                self.clock.wall(),
                                &task_id(&t.task_id),
                                TaskState::Error,
                                None,
                                Some("REASON_TASK_GROUP_INVALID"),
                                Some("Executor resources are invalid or not in the offer"),
                            );
                            self.send_update_to_framework(fid, s);
                        }
                        continue;
                    }
                    let mut launched = Vec::new();
                    for t in &tasks {
                        if let Some(t) =
                            self.launch(fid, &agent_id, &role, &mut pool, t, Some(&exec))
                        {
                            launched.push(t);
                        }
                    }
                    if !launched.is_empty() {
                        let finfo = self.frameworks[fid].info.clone();
                        if let Some(a) = self.agents.get_mut(&agent_id) {
                            a.send(&json!({"type":"LAUNCH_GROUP","launch_group":{
                                "framework_info": finfo, "executor": exec,
                                "task_group": {"tasks": launched}}}));
                        }
                    }
                }
                other => {
                    let op = other
                        .and_then(Result::ok)
                        .map_or("UNKNOWN", |t| t.as_str_name());
                    warn!(framework_id = %fid, op = %op, "Unsupported offer operation ignored");
                }
            }
        }
        // Whatever is left goes back, filtered for refuse_seconds.
        if !pool.is_empty() {
            self.alloc.recover(fid, &agent_id, &pool);
        }
        let ms = self.ms(now);
        self.alloc.add_filter(fid, &agent_id, ms, refuse, &pool);
    }

    /// Validates and starts one task; returns the TaskInfo sent (for groups) or None.
    pub(super) fn launch(
        &mut self,
        fid: &FrameworkId,
        agent_id: &AgentId,
        role: &str,
        pool: &mut Pools,
        ti: &Value,
        group_executor: Option<&Value>,
    ) -> Option<Value> {
        let Some(tid) = TaskId::from_wire(ti.get("task_id")) else {
            warn!(framework_id = %fid, "Task without task_id dropped");
            return None;
        };
        let pa = self
            .frameworks
            .get(fid)
            .is_some_and(Framework::partition_aware);
        let fail = |core: &mut Core, state: TaskState, reason: &str, msg: String| {
            let st = if state == TaskState::Dropped && !pa {
                TaskState::Lost
            } else {
                state
            };
            let s = master_status_at(
                core.clock.wall(),
                &tid,
                st,
                Some(agent_id),
                Some(reason),
                Some(&msg),
            );
            core.send_update_to_framework(fid, s);
            None
        };
        if self.tasks.contains_key(&(fid.clone(), tid.clone())) {
            return fail(
                self,
                TaskState::Error,
                "REASON_TASK_INVALID",
                format!("Task has duplicate ID: {tid}"),
            );
        }
        if ti.get("name").and_then(Value::as_str).is_none() {
            return fail(
                self,
                TaskState::Error,
                "REASON_TASK_INVALID",
                "Missing required fields: name".into(),
            );
        }
        match AgentId::from_wire(ti.get("agent_id")) {
            Some(a) if a == *agent_id => {}
            Some(a) => {
                return fail(
                    self,
                    TaskState::Error,
                    "REASON_TASK_INVALID",
                    format!("Task uses agent {a} but the offer is for agent {agent_id}"),
                );
            }
            None => {
                return fail(
                    self,
                    TaskState::Error,
                    "REASON_TASK_INVALID",
                    "Missing required fields: agent_id".into(),
                );
            }
        }
        let has_cmd = ti.get("command").is_some();
        let has_exec = ti.get("executor").is_some();
        if group_executor.is_none() && has_cmd == has_exec {
            return fail(self, TaskState::Error, "REASON_TASK_INVALID", "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into());
        }
        let empty = Vec::new();
        let res_json = ti
            .get("resources")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let res = match pools_from_mesos_json(res_json) {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    self,
                    TaskState::Error,
                    "REASON_TASK_INVALID",
                    format!("Invalid resources: {e}"),
                );
            }
        };
        if pools_sum(&res).is_empty() {
            return fail(
                self,
                TaskState::Error,
                "REASON_TASK_INVALID",
                "Task uses no resources".into(),
            );
        }
        if !pools_checked_sub(pool, &res) {
            return fail(
                self,
                TaskState::Error,
                "REASON_TASK_INVALID",
                "Task uses more resources than available in the offer".into(),
            );
        }
        let executor_id = group_executor
            .or(ti.get("executor"))
            .and_then(|e| ExecutorId::from_wire(e.get("executor_id")));
        let mut info = ti.clone();
        if let Some(e) = info.get_mut("executor")
            && e.get("framework_id").is_none()
        {
            e["framework_id"] = fid.to_wire();
        }
        let staging = master_status_at(
            self.clock.wall(),
            &tid,
            TaskState::Staging,
            Some(agent_id),
            None,
            None,
        );
        let task = Task {
            framework_id: fid.clone(),
            id: tid.clone(),
            agent_id: agent_id.clone(),
            info: Packed::new(&info),
            executor_id,
            executor: group_executor.or(ti.get("executor")).map(Packed::new),
            resources: res,
            role: role.into(),
            state: TaskState::Staging,
            statuses: vec![Packed::new(&staging)],
            pending: VecDeque::new(),
            acked: VecDeque::new(),
            released: false,
        };
        info!(framework_id = %fid, task_id = %tid, agent_id = %agent_id, "Launching task");
        let tv = self.task_v1_json(&task);
        self.tasks.insert((fid.clone(), tid), task);
        self.operator_event(json!({"type":"TASK_ADDED","task_added":{"task": tv}}));
        if group_executor.is_none() {
            let finfo = self.frameworks[fid].info.clone();
            if let Some(a) = self.agents.get_mut(agent_id) {
                a.send(&json!({"type":"LAUNCH","launch":{"framework_info": finfo, "task": info}}));
            }
        }
        Some(info)
    }

    pub(super) fn kill_task(&mut self, fid: &FrameworkId, tid: &TaskId, policy: Option<&Value>) {
        let key = (fid.clone(), tid.clone());
        let Some(t) = self.tasks.get(&key) else {
            let pa = self
                .frameworks
                .get(fid)
                .is_some_and(Framework::partition_aware);
            let st = if pa {
                TaskState::Unknown
            } else {
                TaskState::Lost
            };
            let s = master_status_at(
                self.clock.wall(),
                tid,
                st,
                None,
                Some("REASON_RECONCILIATION"),
                Some("Attempted to kill an unknown task"),
            );
            self.send_update_to_framework(fid, s);
            return;
        };
        let agent_id = t.agent_id.clone();
        info!(framework_id = %fid, task_id = %tid, "Killing task");
        let mut kill = json!({"framework_id": fid.to_wire(), "task_id": tid.to_wire()});
        if let Some(p) = policy {
            kill["kill_policy"] = p.clone();
        }
        match self.agents.get_mut(&agent_id) {
            Some(a) if a.state != AgentState::Unreachable => {
                a.send(&json!({"type":"KILL","kill": kill}));
            }
            _ => {
                // Agent unreachable: the kill is re-sent if it re-registers (the task is
                // then not reported by reconciliation of the framework's intent).
            }
        }
    }

    pub(super) fn reconcile(
        &mut self,
        fid: &FrameworkId,
        tasks: &[scheduler::call::reconcile::Task],
    ) {
        let pa = self
            .frameworks
            .get(fid)
            .is_some_and(Framework::partition_aware);
        let mut out = Vec::new();
        if tasks.is_empty() {
            for t in self.tasks.values().filter(|t| t.framework_id == *fid) {
                out.push(self.reconcile_status(t));
            }
        } else {
            for q in tasks {
                let tid = task_id(&q.task_id);
                let key = (fid.clone(), tid.clone());
                if let Some(t) = self.tasks.get(&key) {
                    out.push(self.reconcile_status(t));
                } else if let Some(t) = self
                    .frameworks
                    .get(fid)
                    .and_then(|f| f.completed_tasks.iter().rev().find(|t| t.id == tid))
                {
                    out.push(self.reconcile_status(t));
                } else {
                    let st = if pa {
                        TaskState::Unknown
                    } else {
                        TaskState::Lost
                    };
                    let agent = q.agent_id.as_ref().map(agent_id);
                    out.push(master_status_at(
                        self.clock.wall(),
                        &tid,
                        st,
                        agent.as_ref(),
                        Some("REASON_RECONCILIATION"),
                        Some("Reconciliation: Task is unknown"),
                    ));
                }
            }
        }
        for s in out {
            self.send_update_to_framework(fid, s);
        }
    }

    pub(super) fn reconcile_status(&self, t: &Task) -> Value {
        let mut s = t.latest_status();
        if let Some(o) = s.as_object_mut() {
            o.remove("uuid");
        }
        s["state"] = json!(t.state.name());
        s["agent_id"] = t.agent_id.to_wire();
        s["reason"] = json!("REASON_RECONCILIATION");
        s["source"] = json!("SOURCE_MASTER");
        s["message"] = json!("Reconciliation: Latest task state");
        s
    }

    /// Removes a framework: kills its tasks, returns its resources, closes its stream.
    pub(super) fn remove_framework(&mut self, fid: &FrameworkId, why: &str) {
        let Some(mut f) = self.frameworks.remove(fid) else {
            return;
        };
        info!(framework_id = %fid, reason = %why, "Removing framework");
        f.send(&json!({"type":"ERROR","error":{"message": "Framework has been removed"}}));
        f.sink = None;
        f.unregistered_time = Some(self.clock.wall());
        self.offers.retain(|_, o| o.framework_id != *fid);
        let keys: Vec<TaskKey> = self.tasks.keys().filter(|k| k.0 == *fid).cloned().collect();
        let mut agents = BTreeSet::new();
        for k in keys {
            let mut t = self.tasks.remove(&k).expect("exists");
            agents.insert(t.agent_id.clone());
            if !t.state.is_terminal() {
                t.state = TaskState::Killed;
                t.push_status(&master_status_at(
                    self.clock.wall(),
                    &t.id,
                    TaskState::Killed,
                    Some(&t.agent_id),
                    Some("REASON_FRAMEWORK_REMOVED"),
                    Some(why),
                ));
            }
            t.pending.clear();
            f.completed_tasks.push_back(t);
        }
        self.alloc.remove_framework(fid);
        for a in agents {
            if let Some(a) = self.agents.get_mut(&a) {
                a.send(&json!({"type":"SHUTDOWN_FRAMEWORK","shutdown_framework":{"framework_id": fid.to_wire()}}));
            }
        }
        self.removed_frameworks.insert(fid.clone());
        self.registry
            .record(RegistryOp::FrameworkRemoved { id: fid.clone() });
        let info = f.info.clone();
        self.completed_frameworks.push_back(f);
        while self.completed_frameworks.len() > self.cfg.max_completed_frameworks {
            self.completed_frameworks.pop_front();
        }
        self.operator_event(
            json!({"type":"FRAMEWORK_REMOVED","framework_removed":{"framework_info": info}}),
        );
    }

    pub(super) fn offer_json(&self, o: &Offer) -> Value {
        let a = self.agents.get(&o.agent_id);
        let mut v = json!({
            "id": o.id.to_wire(),
            "framework_id": o.framework_id.to_wire(),
            "agent_id": o.agent_id.to_wire(),
            "hostname": a.map(|a| a.hostname.clone()).unwrap_or_default(),
            "resources": pools_to_mesos_json(&o.resources, Some(&o.role)),
            "allocation_info": {"role": o.role},
        });
        if let Some(a) = a {
            for field in ["attributes", "domain"] {
                if let Some(x) = a.info.get(field) {
                    v[field] = x.clone();
                }
            }
            v["url"] = json!({"scheme": "http", "address": {"hostname": a.hostname, "ip": a.ip, "port": a.port}, "path": "/slave(1)"});
        }
        v
    }
}

fn refuse_ms(filters: Option<&mesos::Filters>) -> u64 {
    let secs = filters.and_then(|f| f.refuse_seconds).unwrap_or(5.0);
    if !secs.is_finite() || secs < 0.0 {
        return 5000;
    }
    (secs.min(31_536_000.0) * 1000.0) as u64
}

/// The ids of every task an ACCEPT's operations launch.
fn launch_task_ids(ops: &[mesos::offer::Operation]) -> impl Iterator<Item = TaskId> + '_ {
    ops.iter().flat_map(|op| {
        let single = op.launch.iter().flat_map(|l| &l.task_infos);
        let group = op.launch_group.iter().flat_map(|g| &g.task_group.tasks);
        single.chain(group).map(|t| task_id(&t.task_id))
    })
}
