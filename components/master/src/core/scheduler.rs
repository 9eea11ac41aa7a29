//! The v1 scheduler API (`/api/v1/scheduler`): SUBSCRIBE (new frameworks, re-subscription
//! with the same id, failover), ACCEPT with LAUNCH / LAUNCH_GROUP, DECLINE with filters,
//! KILL, SHUTDOWN, RECONCILE (explicit and implicit), REVIVE / SUPPRESS, MESSAGE,
//! UPDATE_FRAMEWORK and TEARDOWN, and removing a framework (teardown or an expired
//! failover_timeout). ACKNOWLEDGE is decoded here and handled in `updates.rs`.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    AgentState, ApiError, Core, Frame, Framework, Offer, Packed, Sink, Task, require, roles_of,
};
use crate::registry::RegistryOp;
use crate::resources::{
    ANY_ROLE, Pools, pools_add, pools_checked_sub, pools_from_mesos_json, pools_sum,
    pools_to_mesos_json,
};
use crate::wire::{
    Api, Encoding, call_type, id_json, id_value, is_terminal, master_status_at, str_list,
};

impl Core {
    /// Ties frameworks to the principal that authenticated their calls (strict mode; reliability
    /// probe F5): a SUBSCRIBE takes the caller as its `framework_info.principal` when it names
    /// none, and is refused (403) when it names another or when the framework id it claims is
    /// registered by another principal; any other call is refused (400, as Mesos) unless its
    /// framework's principal is the caller. Run in the same core step as the call itself.
    pub fn authorize_scheduler_call(&self, call: &mut Value, caller: &str) -> Result<(), ApiError> {
        let registered = |id: Option<String>| {
            id.and_then(|id| self.frameworks.get(&id))
                .and_then(|f| f.info.get("principal"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if call.get("type").and_then(Value::as_str) != Some("SUBSCRIBE") {
            if let Some(p) = registered(id_value(call.get("framework_id")))
                && p != caller
            {
                return Err(ApiError::bad_request(format!(
                    "Authenticated principal '{caller}' does not match principal '{p}' set in `FrameworkInfo`"
                )));
            }
            return Ok(());
        }
        let call_id = id_value(call.get("framework_id"));
        let Some(info) = call.pointer_mut("/subscribe/framework_info") else {
            return Ok(()); // SUBSCRIBE itself says what is missing
        };
        match info.get("principal").and_then(Value::as_str) {
            Some(p) if p != caller => {
                return Err(ApiError::forbidden(format!(
                    "Framework principal '{p}' does not match authenticated principal '{caller}'"
                )));
            }
            Some(_) => {}
            None => info["principal"] = json!(caller),
        }
        let id = id_value(info.get("id")).or(call_id);
        if let Some(p) = registered(id.clone())
            && p != caller
        {
            return Err(ApiError::forbidden(format!(
                "Framework {} is registered by principal '{p}', not '{caller}'",
                id.unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// SUBSCRIBE: returns the new stream id and the event stream.
    pub fn scheduler_subscribe(
        &mut self,
        call: &Value,
        enc: Encoding,
        now: Instant,
    ) -> Result<(String, mpsc::Receiver<Frame>), ApiError> {
        let sub = require(call, "subscribe")?;
        let info = require(sub, "framework_info")?;
        for k in ["user", "name"] {
            if info.get(k).and_then(Value::as_str).is_none() {
                return Err(ApiError::invalid(format_args!(
                    "Missing required fields: framework_info.{k}"
                )));
            }
        }
        let info_id = id_value(info.get("id"));
        let call_id = id_value(call.get("framework_id"));
        if info_id.is_some() && call_id.is_some() && info_id != call_id {
            return Err(ApiError::invalid(
                "'framework_id' differs from 'subscribe.framework_info.id'",
            ));
        }
        if let Some(ft) = info.get("failover_timeout")
            && ft.as_f64().is_none_or(|x| !x.is_finite() || x < 0.0)
        {
            return Err(ApiError::invalid(
                "framework_info.failover_timeout must be a non-negative number",
            ));
        }
        let id = info_id.or(call_id);
        let suppressed = str_list(sub.get("suppressed_roles"));
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
                let id = format!("{}-{:04}", self.master_id, self.next_framework);
                self.next_framework += 1;
                id
            }
        };
        let mut info = info.clone();
        info["id"] = id_json(&id);
        if info.get("failover_timeout").is_none() {
            info["failover_timeout"] = json!(0.0);
        }
        let roles = roles_of(&info);
        let subscribed = json!({
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": id_json(&id),
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
            let adopted: Vec<(String, Pools)> = self
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
        call: &Value,
        stream_id: Option<&str>,
        now: Instant,
    ) -> Result<Option<Value>, ApiError> {
        let ty = call_type(Api::Scheduler, call).map_err(ApiError::bad_request)?;
        if ty == "UNKNOWN" {
            return Err(ApiError::unknown_call());
        }
        let fid = id_value(call.get("framework_id"))
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
        match ty {
            "TEARDOWN" => {
                self.remove_framework(&fid, "Framework teardown");
                Ok(None)
            }
            "ACCEPT" => {
                let accept = require(call, "accept")?;
                self.accept(&fid, accept, now);
                Ok(None)
            }
            "DECLINE" => {
                let decline = require(call, "decline")?;
                let ids = decline
                    .get("offer_ids")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let refuse = refuse_ms(decline.get("filters"));
                for id in ids.iter().filter_map(|v| id_value(Some(v))) {
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
            "REVIVE" => {
                let roles = str_list(call.pointer("/revive/roles"));
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
            "SUPPRESS" => {
                let roles = str_list(call.pointer("/suppress/roles"));
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
            "KILL" => {
                let kill = require(call, "kill")?;
                let tid = id_value(kill.get("task_id"))
                    .ok_or_else(|| ApiError::invalid("Expecting 'kill.task_id' to be present"))?;
                self.kill_task(&fid, &tid, kill.get("kill_policy"));
                Ok(None)
            }
            "SHUTDOWN" => {
                let sd = require(call, "shutdown")?;
                let eid = id_value(sd.get("executor_id")).ok_or_else(|| {
                    ApiError::invalid("Expecting 'shutdown.executor_id' to be present")
                })?;
                let tids: Vec<String> = self
                    .tasks
                    .values()
                    .filter(|t| t.framework_id == fid && t.executor_id.as_deref() == Some(&eid))
                    .map(|t| t.id.clone())
                    .collect();
                for t in tids {
                    self.kill_task(&fid, &t, None);
                }
                Ok(None)
            }
            "ACKNOWLEDGE" => {
                let ack = require(call, "acknowledge")?;
                let tid = id_value(ack.get("task_id")).ok_or_else(|| {
                    ApiError::invalid("Expecting 'acknowledge.task_id' to be present")
                })?;
                let uuid = ack.get("uuid").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::invalid("Expecting 'acknowledge.uuid' to be present")
                })?;
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(uuid)
                    .map_err(|_| ApiError::invalid("'acknowledge.uuid' is not valid base64"))?;
                if uuid::Uuid::from_slice(&raw).is_err() {
                    return Err(ApiError::invalid("'acknowledge.uuid' is not a valid UUID"));
                }
                self.acknowledge(&fid, &tid, uuid, now);
                Ok(None)
            }
            "RECONCILE" => {
                let tasks = call
                    .pointer("/reconcile/tasks")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                self.reconcile(&fid, &tasks);
                Ok(None)
            }
            "MESSAGE" => {
                let m = require(call, "message")?;
                for k in ["agent_id", "executor_id", "data"] {
                    require(m, k)?;
                }
                let aid = id_value(m.get("agent_id")).unwrap_or_default();
                let ev = json!({"type": "MESSAGE", "message": {
                    "framework_id": id_json(&fid),
                    "executor_id": m["executor_id"],
                    "data": m["data"],
                }});
                match self.agents.get_mut(&aid) {
                    Some(a) if a.sink.is_some() => a.send(&ev),
                    // Like Mesos: best effort, dropped when the agent is not connected.
                    _ => self.dropped_messages += 1,
                }
                Ok(None)
            }
            "REQUEST"
            | "ACCEPT_INVERSE_OFFERS"
            | "DECLINE_INVERSE_OFFERS"
            | "ACKNOWLEDGE_OPERATION_STATUS"
            | "RECONCILE_OPERATIONS" => Ok(None),
            "UPDATE_FRAMEWORK" => {
                let u = require(call, "update_framework")?;
                let info = require(u, "framework_info")?;
                if id_value(info.get("id")).as_deref() != Some(fid.as_str()) {
                    return Err(ApiError::invalid(
                        "'update_framework.framework_info.id' must match 'framework_id'",
                    ));
                }
                let suppressed = str_list(u.get("suppressed_roles"));
                let f = self.frameworks.get_mut(&fid).expect("exists");
                let mut info = info.clone();
                if info.get("failover_timeout").is_none() {
                    info["failover_timeout"] = json!(0.0);
                }
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
            "SUBSCRIBE" => Err(ApiError::bad_request(
                "SUBSCRIBE must be sent on its own connection",
            )),
            other => Err(ApiError::bad_request(format!(
                "Failed to convert JSON into Call protobuf: unknown call type '{other}'"
            ))),
        }
    }

    pub(super) fn accept(&mut self, fid: &str, accept: &Value, now: Instant) {
        let offer_ids: Vec<String> = accept
            .get("offer_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| id_value(Some(v))).collect())
            .unwrap_or_default();
        let ops = accept
            .get("operations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let refuse = refuse_ms(accept.get("filters"));
        // Validate the offers.
        let mut error: Option<String> = None;
        let mut seen = BTreeSet::new();
        let mut agent: Option<String> = None;
        for id in &offer_ids {
            if !seen.insert(id.clone()) {
                error = Some(format!("Offer {id} appears more than once"));
                continue;
            }
            match self.offers.get(id) {
                None => error = Some(format!("Offer {id} is no longer valid")),
                Some(o) if o.framework_id != fid => {
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
            if self.offers.get(id).is_some_and(|o| o.framework_id == fid) {
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
            for t in launch_task_infos(&ops) {
                if let Some(tid) = id_value(t.get("task_id")) {
                    let st = if pa { "TASK_DROPPED" } else { "TASK_LOST" };
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
            }
            return;
        }
        let agent_id = agent.expect("at least one valid offer");
        for op in &ops {
            let ty = op.get("type").and_then(Value::as_str).unwrap_or("UNKNOWN");
            match ty {
                "LAUNCH" => {
                    let infos = op
                        .pointer("/launch/task_infos")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for ti in infos {
                        self.launch(fid, &agent_id, &role, &mut pool, &ti, None);
                    }
                }
                "LAUNCH_GROUP" => {
                    let exec = op.pointer("/launch_group/executor").cloned();
                    let tasks = op
                        .pointer("/launch_group/task_group/tasks")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let Some(mut exec) = exec else {
                        for t in &tasks {
                            if let Some(tid) = id_value(t.get("task_id")) {
                                let s = master_status_at(
                                    self.clock.wall(),
                                    &tid,
                                    "TASK_ERROR",
                                    None,
                                    Some("REASON_TASK_GROUP_INVALID"),
                                    Some("Expecting 'launch_group.executor' to be present"),
                                );
                                self.send_update_to_framework(fid, s);
                            }
                        }
                        continue;
                    };
                    if exec.get("framework_id").is_none() {
                        exec["framework_id"] = id_json(fid);
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
                        for t in &tasks {
                            if let Some(tid) = id_value(t.get("task_id")) {
                                let s = master_status_at(
                                    self.clock.wall(),
                                    &tid,
                                    "TASK_ERROR",
                                    None,
                                    Some("REASON_TASK_GROUP_INVALID"),
                                    Some("Executor resources are invalid or not in the offer"),
                                );
                                self.send_update_to_framework(fid, s);
                            }
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
                    warn!(framework_id = %fid, op = %other, "Unsupported offer operation ignored");
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
        fid: &str,
        agent_id: &str,
        role: &str,
        pool: &mut Pools,
        ti: &Value,
        group_executor: Option<&Value>,
    ) -> Option<Value> {
        let Some(tid) = id_value(ti.get("task_id")) else {
            warn!(framework_id = %fid, "Task without task_id dropped");
            return None;
        };
        let pa = self
            .frameworks
            .get(fid)
            .is_some_and(Framework::partition_aware);
        let fail = |core: &mut Core, state: &str, reason: &str, msg: String| {
            let st = if state == "TASK_DROPPED" && !pa {
                "TASK_LOST"
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
        if self.tasks.contains_key(&(fid.to_string(), tid.clone())) {
            return fail(
                self,
                "TASK_ERROR",
                "REASON_TASK_INVALID",
                format!("Task has duplicate ID: {tid}"),
            );
        }
        if ti.get("name").and_then(Value::as_str).is_none() {
            return fail(
                self,
                "TASK_ERROR",
                "REASON_TASK_INVALID",
                "Missing required fields: name".into(),
            );
        }
        match id_value(ti.get("agent_id")) {
            Some(a) if a == agent_id => {}
            Some(a) => {
                return fail(
                    self,
                    "TASK_ERROR",
                    "REASON_TASK_INVALID",
                    format!("Task uses agent {a} but the offer is for agent {agent_id}"),
                );
            }
            None => {
                return fail(
                    self,
                    "TASK_ERROR",
                    "REASON_TASK_INVALID",
                    "Missing required fields: agent_id".into(),
                );
            }
        }
        let has_cmd = ti.get("command").is_some();
        let has_exec = ti.get("executor").is_some();
        if group_executor.is_none() && has_cmd == has_exec {
            return fail(self, "TASK_ERROR", "REASON_TASK_INVALID", "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into());
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
                    "TASK_ERROR",
                    "REASON_TASK_INVALID",
                    format!("Invalid resources: {e}"),
                );
            }
        };
        if pools_sum(&res).is_empty() {
            return fail(
                self,
                "TASK_ERROR",
                "REASON_TASK_INVALID",
                "Task uses no resources".into(),
            );
        }
        if !pools_checked_sub(pool, &res) {
            return fail(
                self,
                "TASK_ERROR",
                "REASON_TASK_INVALID",
                "Task uses more resources than available in the offer".into(),
            );
        }
        let executor_id = group_executor
            .or(ti.get("executor"))
            .and_then(|e| id_value(e.get("executor_id")));
        let mut info = ti.clone();
        if let Some(e) = info.get_mut("executor")
            && e.get("framework_id").is_none()
        {
            e["framework_id"] = id_json(fid);
        }
        let staging = master_status_at(
            self.clock.wall(),
            &tid,
            "TASK_STAGING",
            Some(agent_id),
            None,
            None,
        );
        let task = Task {
            framework_id: fid.into(),
            id: tid.clone(),
            agent_id: agent_id.into(),
            info: Packed::new(&info),
            executor_id,
            executor: group_executor.or(ti.get("executor")).map(Packed::new),
            resources: res,
            role: role.into(),
            state: "TASK_STAGING".into(),
            statuses: vec![Packed::new(&staging)],
            pending: VecDeque::new(),
            acked: VecDeque::new(),
            released: false,
        };
        info!(framework_id = %fid, task_id = %tid, agent_id = %agent_id, "Launching task");
        let tv = self.task_v1_json(&task);
        self.tasks.insert((fid.into(), tid), task);
        self.operator_event(json!({"type":"TASK_ADDED","task_added":{"task": tv}}));
        if group_executor.is_none() {
            let finfo = self.frameworks[fid].info.clone();
            if let Some(a) = self.agents.get_mut(agent_id) {
                a.send(&json!({"type":"LAUNCH","launch":{"framework_info": finfo, "task": info}}));
            }
        }
        Some(info)
    }

    pub(super) fn kill_task(&mut self, fid: &str, tid: &str, policy: Option<&Value>) {
        let key = (fid.to_string(), tid.to_string());
        let Some(t) = self.tasks.get(&key) else {
            let pa = self
                .frameworks
                .get(fid)
                .is_some_and(Framework::partition_aware);
            let st = if pa { "TASK_UNKNOWN" } else { "TASK_LOST" };
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
        let mut kill = json!({"framework_id": id_json(fid), "task_id": id_json(tid)});
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

    pub(super) fn reconcile(&mut self, fid: &str, tasks: &[Value]) {
        let pa = self
            .frameworks
            .get(fid)
            .is_some_and(Framework::partition_aware);
        let mut out = Vec::new();
        if tasks.is_empty() {
            for t in self.tasks.values().filter(|t| t.framework_id == fid) {
                out.push(self.reconcile_status(t));
            }
        } else {
            for q in tasks {
                let Some(tid) = id_value(q.get("task_id")) else {
                    continue;
                };
                let key = (fid.to_string(), tid.clone());
                if let Some(t) = self.tasks.get(&key) {
                    out.push(self.reconcile_status(t));
                } else if let Some(t) = self
                    .frameworks
                    .get(fid)
                    .and_then(|f| f.completed_tasks.iter().rev().find(|t| t.id == tid))
                {
                    out.push(self.reconcile_status(t));
                } else {
                    let st = if pa { "TASK_UNKNOWN" } else { "TASK_LOST" };
                    let agent = id_value(q.get("agent_id"));
                    out.push(master_status_at(
                        self.clock.wall(),
                        &tid,
                        st,
                        agent.as_deref(),
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
        s["state"] = json!(t.state);
        s["agent_id"] = id_json(&t.agent_id);
        s["reason"] = json!("REASON_RECONCILIATION");
        s["source"] = json!("SOURCE_MASTER");
        s["message"] = json!("Reconciliation: Latest task state");
        s
    }

    /// Removes a framework: kills its tasks, returns its resources, closes its stream.
    pub(super) fn remove_framework(&mut self, fid: &str, why: &str) {
        let Some(mut f) = self.frameworks.remove(fid) else {
            return;
        };
        info!(framework_id = %fid, reason = %why, "Removing framework");
        f.send(&json!({"type":"ERROR","error":{"message": "Framework has been removed"}}));
        f.sink = None;
        f.unregistered_time = Some(self.clock.wall());
        self.offers.retain(|_, o| o.framework_id != fid);
        let keys: Vec<(String, String)> =
            self.tasks.keys().filter(|k| k.0 == fid).cloned().collect();
        let mut agents = BTreeSet::new();
        for k in keys {
            let mut t = self.tasks.remove(&k).expect("exists");
            agents.insert(t.agent_id.clone());
            if !is_terminal(&t.state) {
                t.state = "TASK_KILLED".into();
                t.push_status(&master_status_at(
                    self.clock.wall(),
                    &t.id,
                    "TASK_KILLED",
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
                a.send(&json!({"type":"SHUTDOWN_FRAMEWORK","shutdown_framework":{"framework_id": id_json(fid)}}));
            }
        }
        self.removed_frameworks.insert(fid.into());
        self.registry
            .record(RegistryOp::FrameworkRemoved { id: fid.into() });
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
            "id": id_json(&o.id),
            "framework_id": id_json(&o.framework_id),
            "agent_id": id_json(&o.agent_id),
            "hostname": a.map(|a| a.hostname.clone()).unwrap_or_default(),
            "resources": pools_to_mesos_json(&o.resources, Some(&o.role)),
            "allocation_info": {"role": o.role},
        });
        if let Some(a) = a {
            if let Some(attrs) = a.info.get("attributes") {
                v["attributes"] = attrs.clone();
            }
            v["url"] = json!({"scheme": "http", "address": {"hostname": a.hostname, "ip": a.ip, "port": a.port}, "path": "/slave(1)"});
        }
        v
    }
}

fn refuse_ms(filters: Option<&Value>) -> u64 {
    let secs = filters
        .and_then(|f| f.get("refuse_seconds"))
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(5.0);
    if !secs.is_finite() || secs < 0.0 {
        return 5000;
    }
    (secs.min(31_536_000.0) * 1000.0) as u64
}

fn launch_task_infos(ops: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for op in ops {
        if let Some(a) = op.pointer("/launch/task_infos").and_then(Value::as_array) {
            out.extend(a.iter().cloned());
        }
        if let Some(a) = op
            .pointer("/launch_group/task_group/tasks")
            .and_then(Value::as_array)
        {
            out.extend(a.iter().cloned());
        }
    }
    out
}
