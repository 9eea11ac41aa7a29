//! The master's state machine: frameworks, agents, offers and tasks. Owned by one task
//! (see `server.rs`); every method is synchronous and non-blocking. Streams are bounded
//! channels of pre-framed RecordIO bytes; a full or closed channel counts as a broken
//! connection.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::allocator::Allocator;
use crate::config::Config;
use crate::registry::{Durability, Registry, RegistryOp};
use crate::resources::{
    ANY_ROLE, Pools, pools_add, pools_checked_sub, pools_from_mesos_json, pools_sum,
    pools_to_mesos_json,
};
use crate::wire::{
    Api, Encoding, downgrade_state, encode_message, id_json, id_value, is_terminal, master_status,
    recordio, recordio_json, str_list, wall,
};

/// Version reported by `/version`, MasterInfo and `/master/state` (pymesos needs plain
/// dotted integers ≥ 1.0.0).
pub const MESOS_VERSION: &str = "1.11.0";

const STREAM_BUFFER: usize = 4096;
const MAX_STATUSES_KEPT: usize = 20;
const MAX_ACKED_KEPT: usize = 32;

/// A rejected API call: HTTP status and a plain-text reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(m: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: m.into(),
        }
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        ApiError {
            status: 403,
            message: m.into(),
        }
    }
    fn invalid(m: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("Failed to validate scheduler::Call: {m}"))
    }
}

/// A stream to a client.
#[derive(Debug)]
struct Sink {
    tx: mpsc::Sender<Frame>,
    api: Api,
    enc: Encoding,
    durability: Durability,
}

/// One encoded event on a stream, to be written once registry op `after` is durable.
#[derive(Debug)]
pub struct Frame {
    pub after: u64,
    pub bytes: Bytes,
}

impl Sink {
    fn new(api: Api, enc: Encoding, durability: &Durability) -> (Self, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let durability = durability.clone();
        (
            Sink {
                tx,
                api,
                enc,
                durability,
            },
            rx,
        )
    }
    /// False when the receiver is gone or lagging (the connection is then dropped).
    fn send(&self, v: &Value) -> bool {
        let bytes = if self.enc == Encoding::Json {
            recordio_json(v)
        } else {
            match encode_message(self.api, self.enc, v, false) {
                Some(b) => recordio(&b),
                None => {
                    warn!(event = %v["type"], "Event does not fit its protobuf message; dropped");
                    return true;
                }
            }
        };
        let after = self.durability.mark();
        self.tx.try_send(Frame { after, bytes }).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

#[derive(Debug)]
struct Framework {
    id: String,
    info: Value,
    roles: Vec<String>,
    suppressed_roles: Vec<String>,
    sink: Option<Sink>,
    stream_id: Option<String>,
    registered_time: f64,
    reregistered_time: Option<f64>,
    unregistered_time: Option<f64>,
    disconnected_at: Option<Instant>,
    last_heartbeat: Instant,
    completed_tasks: VecDeque<Task>,
    /// Known from the registry only (after a leader change), not yet re-subscribed.
    recovered: bool,
}

impl Framework {
    fn has_capability(&self, cap: &str) -> bool {
        self.info
            .get("capabilities")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|c| c.get("type").and_then(Value::as_str) == Some(cap))
            })
    }
    fn partition_aware(&self) -> bool {
        self.has_capability("PARTITION_AWARE")
    }
    fn connected(&self) -> bool {
        self.sink.is_some()
    }
    fn failover_timeout(&self) -> Duration {
        let secs = self
            .info
            .get("failover_timeout")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        Duration::try_from_secs_f64(secs.clamp(0.0, 1e9)).unwrap_or(Duration::ZERO)
    }
    fn send(&mut self, ev: &Value) {
        if let Some(s) = &self.sink
            && !s.send(ev)
        {
            warn!(framework_id = %self.id, "Framework stream broken");
            self.sink = None;
        }
    }
}

fn roles_of(info: &Value) -> Vec<String> {
    let multi = info
        .get("capabilities")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|c| c.get("type").and_then(Value::as_str) == Some("MULTI_ROLE"))
        });
    let roles = str_list(info.get("roles"));
    if multi && !roles.is_empty() {
        return roles;
    }
    vec![
        info.get("role")
            .and_then(Value::as_str)
            .unwrap_or(ANY_ROLE)
            .to_string(),
    ]
}

#[derive(Debug, Clone)]
struct Pending {
    status: Value,
    uuid: String,
    sent_at: Option<Instant>,
}

/// A JSON value kept as its compact text: a task's TaskInfo and status history are only
/// read back for state endpoints and events, and as text they take a fraction of the memory
/// of a `serde_json::Value` tree (which is what keeps 10,000 tasks within the RSS goal).
#[derive(Clone, PartialEq)]
struct Packed(Box<str>);

impl Packed {
    fn new(v: &Value) -> Self {
        Packed(v.to_string().into_boxed_str())
    }

    fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone)]
struct Task {
    framework_id: String,
    id: String,
    agent_id: String,
    info: Packed,
    executor_id: Option<String>,
    /// The task's executor (its own `executor`, or the task group's).
    executor: Option<Packed>,
    resources: Pools,
    role: String,
    state: String,
    statuses: Vec<Packed>,
    pending: VecDeque<Pending>,
    acked: VecDeque<String>,
    released: bool,
}

impl Task {
    fn latest_status(&self) -> Value {
        self.statuses.last().map(Packed::value).unwrap_or_else(|| {
            master_status(&self.id, &self.state, Some(&self.agent_id), None, None)
        })
    }

    fn push_status(&mut self, status: &Value) {
        self.statuses.push(Packed::new(status));
        if self.statuses.len() > MAX_STATUSES_KEPT {
            self.statuses.remove(0);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum AgentState {
    Active,
    Draining,
    Unreachable,
}

#[derive(Debug)]
struct Agent {
    id: String,
    info: Value,
    hostname: String,
    port: u64,
    ip: String,
    version: String,
    total: Pools,
    sink: Option<Sink>,
    last_seen: Instant,
    last_ping: Instant,
    registered_time: f64,
    reregistered_time: Option<f64>,
    state: AgentState,
    /// DRAIN_AGENT with `mark_gone`: the agent is marked gone once drained.
    mark_gone_when_drained: bool,
}

impl Agent {
    fn send(&mut self, ev: &Value) {
        if let Some(s) = &self.sink
            && !s.send(ev)
        {
            warn!(agent_id = %self.id, "Agent stream broken");
            self.sink = None;
        }
    }
    fn pid(&self) -> String {
        format!("slave(1)@{}:{}", self.ip, self.port)
    }
}

#[derive(Debug, Clone)]
struct Offer {
    id: String,
    framework_id: String,
    agent_id: String,
    role: String,
    resources: Pools,
    created: Instant,
}

/// Result of an operator call.
#[derive(Debug)]
pub enum OperatorReply {
    Json(Value),
    Empty,
    Stream(mpsc::Receiver<Frame>),
}

/// The master state machine.
pub struct Core {
    cfg: Config,
    master_id: String,
    master_info: Value,
    pid: String,
    start_time: f64,
    started: Instant,
    alloc: Allocator,
    frameworks: BTreeMap<String, Framework>,
    completed_frameworks: VecDeque<Framework>,
    removed_frameworks: BTreeSet<String>,
    agents: BTreeMap<String, Agent>,
    gone_agents: BTreeSet<String>,
    recovered_agents: BTreeMap<String, Value>,
    offers: BTreeMap<String, Offer>,
    tasks: BTreeMap<(String, String), Task>,
    operator_subs: Vec<Sink>,
    operator_heartbeat: Instant,
    registry: Box<dyn Registry>,
    durability: Durability,
    allocation_requested: bool,
    next_framework: u64,
    next_offer: u64,
    next_agent: u64,
    dropped_messages: u64,
}

fn require<'a>(v: &'a Value, key: &str) -> Result<&'a Value, ApiError> {
    v.get(key)
        .filter(|x| !x.is_null())
        .ok_or_else(|| ApiError::invalid(format_args!("Expecting '{key}' to be present")))
}

impl Core {
    pub fn new(cfg: Config, advertised: std::net::SocketAddr, registry: Box<dyn Registry>) -> Self {
        let master_id = uuid::Uuid::new_v4().to_string();
        let ip = advertised.ip().to_string();
        let hostname = cfg.hostname.clone().unwrap_or_else(|| ip.clone());
        let port = advertised.port();
        let pid = format!("master@{ip}:{port}");
        let ip_u32 = match advertised.ip() {
            std::net::IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
            _ => 0,
        };
        let master_info = json!({
            "id": master_id, "ip": ip_u32, "port": port, "pid": pid, "hostname": hostname,
            "version": MESOS_VERSION,
            "address": {"hostname": hostname, "ip": ip, "port": port},
            "capabilities": [{"type": "AGENT_UPDATE"}, {"type": "AGENT_DRAINING"}],
        });
        let snap = registry.load();
        let durability = registry.durability();
        Core {
            cfg,
            master_info,
            pid,
            start_time: wall(),
            started: Instant::now(),
            alloc: Allocator::new(),
            frameworks: BTreeMap::new(),
            completed_frameworks: VecDeque::new(),
            removed_frameworks: snap.removed_frameworks,
            agents: BTreeMap::new(),
            gone_agents: snap.gone_agents,
            recovered_agents: snap.agents,
            offers: BTreeMap::new(),
            tasks: BTreeMap::new(),
            operator_subs: Vec::new(),
            operator_heartbeat: Instant::now(),
            registry,
            durability,
            allocation_requested: false,
            next_framework: 0,
            next_offer: 0,
            next_agent: 0,
            dropped_messages: 0,
            master_id,
        }
    }

    pub fn master_id(&self) -> &str {
        &self.master_id
    }

    /// Takes over a registry loaded from durable storage (a newly elected leader): gone
    /// agents and removed frameworks stay refused; known agents show as recovered until
    /// they re-register.
    /// Frameworks of the registry come back disconnected, with their failover_timeout
    /// running from now: they keep the tasks their agents report if they re-subscribe in
    /// time, and are removed (tasks killed) otherwise.
    pub fn recover(&mut self, snap: crate::registry::RegistrySnapshot, now: Instant) {
        self.gone_agents.extend(snap.gone_agents);
        self.removed_frameworks.extend(snap.removed_frameworks);
        for (id, info) in snap.frameworks {
            if self.frameworks.contains_key(&id) || self.removed_frameworks.contains(&id) {
                continue;
            }
            let roles = roles_of(&info);
            self.alloc.add_framework(&id, roles.clone(), &[]);
            self.alloc.set_framework_active(&id, false);
            info!(framework_id = %id, "Recovered framework from the registry");
            self.frameworks.insert(
                id.clone(),
                Framework {
                    id,
                    info,
                    roles,
                    suppressed_roles: Vec::new(),
                    sink: None,
                    stream_id: None,
                    registered_time: wall(),
                    reregistered_time: None,
                    unregistered_time: Some(wall()),
                    disconnected_at: Some(now),
                    last_heartbeat: now,
                    completed_tasks: VecDeque::new(),
                    recovered: true,
                },
            );
        }
        for (id, info) in snap.agents {
            if !self.agents.contains_key(&id) {
                self.recovered_agents.insert(id, info);
            }
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.duration_since(self.started).as_millis() as u64
    }

    // ------------------------------------------------------------------ operator events

    fn operator_event(&mut self, ev: Value) {
        self.operator_subs.retain(|s| s.send(&ev));
    }

    fn task_v1_json(&self, t: &Task) -> Value {
        let info = t.info.value();
        let statuses: Vec<Value> = t.statuses.iter().map(Packed::value).collect();
        let mut v = json!({
            "name": info.get("name").cloned().unwrap_or(json!("")),
            "task_id": id_json(&t.id),
            "framework_id": id_json(&t.framework_id),
            "agent_id": id_json(&t.agent_id),
            "state": t.state,
            "resources": pools_to_mesos_json(&t.resources, Some(&t.role)),
            "statuses": statuses,
        });
        if let Some(e) = &t.executor_id {
            v["executor_id"] = id_json(e);
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

    fn agent_v1_json(&self, a: &Agent) -> Value {
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

    fn framework_v1_json(&self, f: &Framework) -> Value {
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

    fn offer_json(&self, o: &Offer) -> Value {
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

    // ------------------------------------------------------------------ scheduler API

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
        let stream_id = uuid::Uuid::new_v4().to_string();
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
            f.reregistered_time = Some(wall());
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
                    registered_time: wall(),
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
        let ty = call
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN");
        if ty == "UNKNOWN" {
            return Err(ApiError {
                status: 501,
                message: "Received 'UNKNOWN' call".into(),
            });
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

    fn send_update_to_framework(&mut self, fid: &str, mut status: Value) {
        let Some(f) = self.frameworks.get_mut(fid) else {
            return;
        };
        let pa = f.partition_aware();
        if let Some(s) = status.get("state").and_then(Value::as_str) {
            let d = downgrade_state(s, pa).to_string();
            status["state"] = json!(d);
        }
        f.send(&json!({"type": "UPDATE", "update": {"status": status}}));
    }

    fn accept(&mut self, fid: &str, accept: &Value, now: Instant) {
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
                    let s =
                        master_status(&tid, st, None, Some("REASON_INVALID_OFFERS"), Some(&err));
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
                                let s = master_status(
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
                                let s = master_status(
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
    fn launch(
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
            let s = master_status(&tid, st, Some(agent_id), Some(reason), Some(&msg));
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
        let staging = master_status(&tid, "TASK_STAGING", Some(agent_id), None, None);
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

    fn kill_task(&mut self, fid: &str, tid: &str, policy: Option<&Value>) {
        let key = (fid.to_string(), tid.to_string());
        let Some(t) = self.tasks.get(&key) else {
            let pa = self
                .frameworks
                .get(fid)
                .is_some_and(Framework::partition_aware);
            let st = if pa { "TASK_UNKNOWN" } else { "TASK_LOST" };
            let s = master_status(
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

    fn acknowledge(&mut self, fid: &str, tid: &str, uuid: &str, now: Instant) {
        let key = (fid.to_string(), tid.to_string());
        let Some(t) = self.tasks.get_mut(&key) else {
            return;
        };
        if t.pending.front().is_none_or(|p| p.uuid != uuid) {
            return;
        }
        t.pending.pop_front();
        t.acked.push_back(uuid.to_string());
        if t.acked.len() > MAX_ACKED_KEPT {
            t.acked.pop_front();
        }
        let agent_id = t.agent_id.clone();
        let ack = json!({"type":"ACKNOWLEDGED","acknowledged":{
            "framework_id": id_json(fid), "task_id": id_json(tid), "uuid": uuid}});
        if let Some(a) = self.agents.get_mut(&agent_id) {
            a.send(&ack);
        }
        self.deliver_head(&key, now, true);
        self.maybe_complete(&key);
    }

    fn deliver_head(&mut self, key: &(String, String), now: Instant, force: bool) {
        let retry = self.cfg.status_update_retry_interval;
        let Some(t) = self.tasks.get_mut(key) else {
            return;
        };
        let connected = self
            .frameworks
            .get(&key.0)
            .is_some_and(Framework::connected);
        let Some(p) = t.pending.front_mut() else {
            return;
        };
        if !connected {
            return;
        }
        let due = force || p.sent_at.is_none_or(|s| now.duration_since(s) >= retry);
        if !due {
            return;
        }
        p.sent_at = Some(now);
        let status = p.status.clone();
        self.send_update_to_framework(&key.0, status);
    }

    fn deliver_pending(&mut self, fid: &str, now: Instant, force: bool) {
        let keys: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(k, t)| k.0 == fid && !t.pending.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.deliver_head(&k, now, force);
        }
    }

    /// A terminal task whose updates are all acknowledged moves to completed_tasks.
    fn maybe_complete(&mut self, key: &(String, String)) {
        let done = self
            .tasks
            .get(key)
            .is_some_and(|t| is_terminal(&t.state) && t.pending.is_empty());
        if !done {
            return;
        }
        let t = self.tasks.remove(key).expect("exists");
        self.release(&t);
        let max = self.cfg.max_completed_tasks_per_framework;
        if let Some(f) = self.frameworks.get_mut(&key.0) {
            f.completed_tasks.push_back(t);
            while f.completed_tasks.len() > max {
                f.completed_tasks.pop_front();
            }
        }
    }

    fn release(&mut self, t: &Task) {
        if !t.released {
            self.alloc
                .recover(&t.framework_id, &t.agent_id, &t.resources);
        }
    }

    fn reconcile(&mut self, fid: &str, tasks: &[Value]) {
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
                    out.push(master_status(
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

    fn reconcile_status(&self, t: &Task) -> Value {
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
    fn remove_framework(&mut self, fid: &str, why: &str) {
        let Some(mut f) = self.frameworks.remove(fid) else {
            return;
        };
        info!(framework_id = %fid, reason = %why, "Removing framework");
        f.send(&json!({"type":"ERROR","error":{"message": "Framework has been removed"}}));
        f.sink = None;
        f.unregistered_time = Some(wall());
        self.offers.retain(|_, o| o.framework_id != fid);
        let keys: Vec<(String, String)> =
            self.tasks.keys().filter(|k| k.0 == fid).cloned().collect();
        let mut agents = BTreeSet::new();
        for k in keys {
            let mut t = self.tasks.remove(&k).expect("exists");
            agents.insert(t.agent_id.clone());
            if !is_terminal(&t.state) {
                t.state = "TASK_KILLED".into();
                t.push_status(&master_status(
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

    // ------------------------------------------------------------------ agent protocol

    pub fn agent_subscribe(
        &mut self,
        call: &Value,
        enc: Encoding,
        now: Instant,
    ) -> Result<mpsc::Receiver<Frame>, ApiError> {
        let sub = call
            .get("subscribe")
            .ok_or_else(|| ApiError::bad_request("Expecting 'subscribe' to be present"))?;
        let info = sub.get("agent_info").ok_or_else(|| {
            ApiError::bad_request("Expecting 'subscribe.agent_info' to be present")
        })?;
        let hostname = info
            .get("hostname")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("Missing required fields: agent_info.hostname"))?
            .to_string();
        let empty = Vec::new();
        let total = pools_from_mesos_json(
            info.get("resources")
                .and_then(Value::as_array)
                .unwrap_or(&empty),
        )
        .map_err(|e| ApiError::bad_request(format!("Invalid agent resources: {e}")))?;
        let claimed = id_value(info.get("id")).or_else(|| id_value(call.get("agent_id")));
        if let Some(id) = &claimed
            && self.gone_agents.contains(id)
        {
            return Err(ApiError::forbidden(format!(
                "Agent {id} has been marked gone"
            )));
        }
        let reported = sub
            .get("tasks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // Validate reported tasks before changing anything.
        let mut parsed = Vec::new();
        for rt in &reported {
            let fid = id_value(rt.get("framework_id"));
            let task = rt.get("task");
            let tid = task.and_then(|t| id_value(t.get("task_id")));
            let state = rt.pointer("/status/state").and_then(Value::as_str);
            let (Some(fid), Some(task), Some(tid), Some(_)) = (fid, task, tid, state) else {
                return Err(ApiError::bad_request(
                    "Each reported task needs framework_id, task.task_id and status.state",
                ));
            };
            let res = pools_from_mesos_json(
                task.get("resources")
                    .and_then(Value::as_array)
                    .unwrap_or(&empty),
            )
            .map_err(|e| ApiError::bad_request(format!("Invalid task resources: {e}")))?;
            parsed.push((
                fid,
                tid,
                task.clone(),
                rt["status"].clone(),
                res,
                rt.get("executor").cloned(),
            ));
        }
        let id = match claimed {
            Some(id) => id,
            None => {
                let id = format!("{}-S{}", self.master_id, self.next_agent);
                self.next_agent += 1;
                id
            }
        };
        let mut info = info.clone();
        info["id"] = id_json(&id);
        if info.get("port").is_none() {
            info["port"] = json!(5051);
        }
        let port = info["port"].as_u64().unwrap_or(5051);
        let ip = sub
            .get("ip")
            .and_then(Value::as_str)
            .unwrap_or("127.0.0.1")
            .to_string();
        let version = sub
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or(MESOS_VERSION)
            .to_string();
        let (sink, rx) = Sink::new(Api::Agent, enc, &self.durability);
        sink.send(&json!({"type":"SUBSCRIBED","subscribed":{
            "agent_id": id_json(&id),
            "ping_interval_seconds": self.cfg.agent_ping_interval.as_secs_f64(),
            "agent_timeout_seconds": self.cfg.agent_timeout.as_secs_f64(),
        }}));
        let rereg = self.agents.remove(&id);
        let was_known = rereg.is_some() || self.recovered_agents.remove(&id).is_some();
        // Offers on the agent are void either way.
        let stale: Vec<String> = self
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
            .unwrap_or_else(wall);
        let draining = rereg
            .as_ref()
            .is_some_and(|a| a.state == AgentState::Draining);
        let mark_gone_when_drained = rereg.as_ref().is_some_and(|a| a.mark_gone_when_drained);
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
            reregistered_time: was_known.then(wall),
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
        let reported_keys: BTreeSet<(String, String)> =
            parsed.iter().map(|p| (p.0.clone(), p.1.clone())).collect();
        let ours: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(k, t)| t.agent_id == id && !reported_keys.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in ours {
            // The agent does not know this task any more: it is gone.
            let t = self.tasks.get_mut(&k).expect("exists");
            if is_terminal(&t.state) {
                continue;
            }
            let s = master_status(
                &t.id,
                "TASK_GONE",
                Some(&id),
                Some("REASON_AGENT_REREGISTERED"),
                Some("Task was not reported by its re-registered agent"),
            );
            t.state = "TASK_GONE".into();
            t.push_status(&s);
            self.send_update_to_framework(&k.0, s);
            let t = self.tasks.remove(&k).expect("exists");
            self.release(&t);
            if let Some(f) = self.frameworks.get_mut(&k.0) {
                f.completed_tasks.push_back(t);
            }
        }
        for (fid, tid, task, status, res, exec) in parsed {
            let key = (fid.clone(), tid.clone());
            if self.removed_frameworks.contains(&fid) {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.send(&json!({"type":"SHUTDOWN_FRAMEWORK","shutdown_framework":{"framework_id": id_json(&fid)}}));
                }
                continue;
            }
            let state = status["state"].as_str().unwrap_or("TASK_LOST").to_string();
            match self.tasks.get_mut(&key) {
                Some(t) => {
                    let changed = t.state != state;
                    t.agent_id = id.clone();
                    t.state = state.clone();
                    let terminal = is_terminal(&state);
                    let mut st = status.clone();
                    if let Some(o) = st.as_object_mut() {
                        o.remove("uuid");
                    }
                    st["agent_id"] = id_json(&id);
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
                        st["timestamp"] = json!(wall());
                        self.send_update_to_framework(&fid, st);
                    }
                }
                None => {
                    // Adopt (e.g. after a master restart); the framework may re-subscribe.
                    let mut st = status.clone();
                    if let Some(o) = st.as_object_mut() {
                        o.remove("uuid");
                    }
                    st["agent_id"] = id_json(&id);
                    let terminal = is_terminal(&state);
                    let role = task
                        .pointer("/resources/0/allocation_info/role")
                        .and_then(Value::as_str)
                        .unwrap_or(ANY_ROLE)
                        .to_string();
                    let t = Task {
                        framework_id: fid.clone(),
                        id: tid.clone(),
                        agent_id: id.clone(),
                        executor_id: exec
                            .as_ref()
                            .or(task.get("executor"))
                            .and_then(|e| id_value(e.get("executor_id"))),
                        executor: exec.as_ref().or(task.get("executor")).map(Packed::new),
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

    pub fn agent_call(&mut self, call: &Value, now: Instant) -> Result<(), ApiError> {
        let aid = id_value(call.get("agent_id"))
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
        let ty = call
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN");
        match ty {
            "PONG" => Ok(()),
            "MESSAGE" => {
                let m = call
                    .get("message")
                    .ok_or_else(|| ApiError::bad_request("Expecting 'message' to be present"))?;
                let fid = id_value(m.get("framework_id")).ok_or_else(|| {
                    ApiError::bad_request("Expecting 'message.framework_id' to be present")
                })?;
                let ev = json!({"type": "MESSAGE", "message": {
                    "agent_id": id_json(&aid),
                    "executor_id": m.get("executor_id").cloned().unwrap_or(json!({"value": ""})),
                    "data": m.get("data").cloned().unwrap_or(json!("")),
                }});
                match self.frameworks.get_mut(&fid) {
                    Some(f) if f.connected() => f.send(&ev),
                    _ => self.dropped_messages += 1,
                }
                Ok(())
            }
            "UPDATE" => {
                let u = call
                    .get("update")
                    .ok_or_else(|| ApiError::bad_request("Expecting 'update' to be present"))?;
                let fid = id_value(u.get("framework_id")).ok_or_else(|| {
                    ApiError::bad_request("Expecting 'update.framework_id' to be present")
                })?;
                let status = u.get("status").ok_or_else(|| {
                    ApiError::bad_request("Expecting 'update.status' to be present")
                })?;
                let tid = id_value(status.get("task_id")).ok_or_else(|| {
                    ApiError::bad_request("Expecting 'update.status.task_id' to be present")
                })?;
                let state = status
                    .get("state")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::bad_request("Expecting 'update.status.state' to be present")
                    })?
                    .to_string();
                let uuid = status
                    .get("uuid")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::bad_request("Expecting 'update.status.uuid' to be present")
                    })?
                    .to_string();
                self.agent_update(&aid, &fid, &tid, &state, &uuid, status.clone(), now);
                Ok(())
            }
            "SUBSCRIBE" => Err(ApiError::bad_request(
                "SUBSCRIBE must be sent on its own connection",
            )),
            other => Err(ApiError::bad_request(format!(
                "Unknown agent call type '{other}'"
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn agent_update(
        &mut self,
        aid: &str,
        fid: &str,
        tid: &str,
        state: &str,
        uuid: &str,
        mut status: Value,
        now: Instant,
    ) {
        let key = (fid.to_string(), tid.to_string());
        let ack = json!({"type":"ACKNOWLEDGED","acknowledged":{
            "framework_id": id_json(fid), "task_id": id_json(tid), "uuid": uuid}});
        let Some(t) = self.tasks.get_mut(&key) else {
            // Completed and acknowledged before, or framework gone: acknowledge so the
            // agent stops retrying.
            let acked_before = self.frameworks.get(fid).is_some_and(|f| {
                f.completed_tasks
                    .iter()
                    .any(|t| t.acked.iter().any(|u| u == uuid))
            });
            let fw_known = self.frameworks.contains_key(fid);
            if acked_before || !fw_known {
                if let Some(a) = self.agents.get_mut(aid) {
                    a.send(&ack);
                }
            } else {
                warn!(framework_id = %fid, task_id = %tid, "Status update for an unknown task; forwarding");
                if let Some(a) = self.agents.get_mut(aid) {
                    a.send(&ack);
                }
                status["agent_id"] = id_json(aid);
                if let Some(o) = status.as_object_mut() {
                    o.remove("uuid");
                }
                self.send_update_to_framework(fid, status);
            }
            return;
        };
        if t.acked.iter().any(|u| u == uuid) {
            if let Some(a) = self.agents.get_mut(aid) {
                a.send(&ack);
            }
            return;
        }
        if t.pending.iter().any(|p| p.uuid == uuid) {
            return; // duplicate of a queued update
        }
        status["agent_id"] = id_json(aid);
        if status.get("timestamp").is_none() {
            status["timestamp"] = json!(wall());
        }
        t.state = state.to_string();
        let mut hist = status.clone();
        if let Some(o) = hist.as_object_mut() {
            o.remove("uuid");
        }
        t.push_status(&hist);
        t.pending.push_back(Pending {
            status: status.clone(),
            uuid: uuid.to_string(),
            sent_at: None,
        });
        let first = t.pending.len() == 1;
        info!(framework_id = %fid, task_id = %tid, state = %state, "Status update");
        if is_terminal(state) && !t.released {
            t.released = true;
            let (agent, res) = (t.agent_id.clone(), t.resources.clone());
            self.alloc.recover(fid, &agent, &res);
        }
        self.operator_event(json!({"type":"TASK_UPDATED","task_updated":{
            "framework_id": id_json(fid), "status": status, "state": state}}));
        if first {
            self.deliver_head(&key, now, true);
        }
        if !self.frameworks.contains_key(fid) {
            // No framework to acknowledge: acknowledge on its behalf.
            self.tasks.get_mut(&key).expect("exists").pending.clear();
            if let Some(a) = self.agents.get_mut(aid) {
                a.send(&ack);
            }
        }
    }

    fn rescind(&mut self, offer_id: &str) {
        if let Some(o) = self.offers.remove(offer_id) {
            self.alloc
                .recover(&o.framework_id, &o.agent_id, &o.resources);
            if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
                f.send(&json!({"type":"RESCIND","rescind":{"offer_id": id_json(offer_id)}}));
            }
        }
    }

    fn mark_unreachable(&mut self, aid: &str) {
        let Some(a) = self.agents.get_mut(aid) else {
            return;
        };
        if a.state == AgentState::Unreachable {
            return;
        }
        warn!(agent_id = %aid, "Agent unreachable");
        a.state = AgentState::Unreachable;
        a.sink = None;
        let offers: Vec<String> = self
            .offers
            .values()
            .filter(|o| o.agent_id == aid)
            .map(|o| o.id.clone())
            .collect();
        for o in offers {
            self.rescind(&o);
        }
        self.alloc.remove_agent(aid);
        let keys: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id == aid && !is_terminal(&t.state))
            .map(|(k, _)| k.clone())
            .collect();
        let ts = wall();
        for k in keys {
            let t = self.tasks.get_mut(&k).expect("exists");
            t.state = "TASK_UNREACHABLE".into();
            t.released = true; // resources went with the agent
            let mut s = master_status(
                &t.id,
                "TASK_UNREACHABLE",
                Some(aid),
                Some("REASON_AGENT_DISCONNECTED"),
                Some("Agent is unreachable"),
            );
            s["unreachable_time"] = json!({"nanoseconds": (ts * 1e9) as i64});
            t.push_status(&s);
            self.send_update_to_framework(&k.0, s.clone());
            self.operator_event(json!({"type":"TASK_UPDATED","task_updated":{
                "framework_id": id_json(&k.0), "status": s, "state": "TASK_UNREACHABLE"}}));
        }
        let failure = json!({"type":"FAILURE","failure":{"agent_id": id_json(aid)}});
        for f in self.frameworks.values_mut() {
            f.send(&failure);
        }
        self.operator_event(
            json!({"type":"AGENT_REMOVED","agent_removed":{"agent_id": id_json(aid)}}),
        );
    }

    // ------------------------------------------------------------------ timers

    /// Runs allocation and every timer: heartbeats, pings, timeouts, retries.
    pub fn tick(&mut self, now: Instant) {
        self.mark_drained_agents_gone();
        // Broken framework streams → disconnected; expired failover → removed.
        let ids: Vec<String> = self.frameworks.keys().cloned().collect();
        for id in ids {
            let f = self.frameworks.get_mut(&id).expect("exists");
            if f.sink.as_ref().is_some_and(Sink::is_closed) {
                f.sink = None;
            }
            if f.sink.is_none() && f.disconnected_at.is_none() {
                info!(framework_id = %id, "Framework disconnected");
                f.disconnected_at = Some(now);
                f.unregistered_time = Some(wall());
                f.stream_id = None;
                self.alloc.set_framework_active(&id, false);
                let offers: Vec<String> = self
                    .offers
                    .values()
                    .filter(|o| o.framework_id == id)
                    .map(|o| o.id.clone())
                    .collect();
                for o in offers {
                    self.rescind(&o);
                }
                let fv = self.framework_v1_json(&self.frameworks[&id]);
                self.operator_event(
                    json!({"type":"FRAMEWORK_UPDATED","framework_updated":{"framework": fv}}),
                );
            }
            let f = self.frameworks.get_mut(&id).expect("exists");
            if let Some(at) = f.disconnected_at
                && now.duration_since(at) >= f.failover_timeout()
            {
                self.remove_framework(&id, "Framework failover timeout");
                continue;
            }
            let hb = self.cfg.heartbeat_interval;
            let f = self.frameworks.get_mut(&id).expect("exists");
            if f.connected() && now.duration_since(f.last_heartbeat) >= hb {
                f.last_heartbeat = now;
                f.send(&json!({"type":"HEARTBEAT"}));
            }
        }
        if now.duration_since(self.operator_heartbeat) >= self.cfg.heartbeat_interval {
            self.operator_heartbeat = now;
            self.operator_event(json!({"type":"HEARTBEAT"}));
        }
        self.operator_subs.retain(|s| !s.is_closed());
        // Agents: ping, time out.
        let ids: Vec<String> = self.agents.keys().cloned().collect();
        for id in ids {
            let a = self.agents.get_mut(&id).expect("exists");
            if a.state == AgentState::Unreachable {
                continue;
            }
            if now.duration_since(a.last_seen) > self.cfg.agent_timeout {
                self.mark_unreachable(&id);
                continue;
            }
            if a.sink.as_ref().is_some_and(Sink::is_closed) {
                a.sink = None;
            }
            if now.duration_since(a.last_ping) >= self.cfg.agent_ping_interval {
                a.last_ping = now;
                a.send(&json!({"type":"PING"}));
            }
        }
        // Offer timeout.
        if !self.cfg.offer_timeout.is_zero() {
            let expired: Vec<String> = self
                .offers
                .values()
                .filter(|o| now.duration_since(o.created) >= self.cfg.offer_timeout)
                .map(|o| o.id.clone())
                .collect();
            for o in expired {
                self.rescind(&o);
            }
        }
        // Status update retries.
        let keys: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.pending.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.deliver_head(&k, now, false);
        }
        self.allocate(now);
    }

    /// Whether something happened that deserves offers before the next tick (a framework
    /// subscribed, an agent registered, a framework revived); clears the request. The core
    /// task then allocates after a short batching delay, as Mesos' allocator does.
    pub fn take_allocation_request(&mut self) -> bool {
        std::mem::take(&mut self.allocation_requested)
    }

    /// Runs the allocator and sends the offers it grants.
    pub fn allocate(&mut self, now: Instant) {
        let grants = self.alloc.allocate(self.ms(now));
        let mut by_fw: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for g in grants {
            let id = format!("{}-O{}", self.master_id, self.next_offer);
            self.next_offer += 1;
            let o = Offer {
                id: id.clone(),
                framework_id: g.framework.clone(),
                agent_id: g.agent,
                role: g.role,
                resources: g.resources,
                created: now,
            };
            by_fw
                .entry(g.framework)
                .or_default()
                .push(self.offer_json(&o));
            self.offers.insert(id, o);
        }
        for (fid, offers) in by_fw {
            if let Some(f) = self.frameworks.get_mut(&fid) {
                f.send(&json!({"type":"OFFERS","offers":{"offers": offers}}));
            }
        }
    }

    // ------------------------------------------------------------------ operator API

    pub fn operator_call(
        &mut self,
        call: &Value,
        enc: Encoding,
        now: Instant,
    ) -> Result<OperatorReply, ApiError> {
        let ty = call
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN");
        let lower = ty.to_ascii_lowercase();
        let wrap = |v: Value| OperatorReply::Json(json!({"type": ty, lower.clone(): v}));
        match ty {
            "GET_HEALTH" => Ok(wrap(json!({"healthy": true}))),
            "GET_VERSION" => Ok(wrap(json!({"version_info": version_info()}))),
            "GET_STATE" => Ok(wrap(self.get_state())),
            "GET_AGENTS" => Ok(wrap(self.get_agents())),
            "GET_FRAMEWORKS" => Ok(wrap(self.get_frameworks())),
            "GET_TASKS" => Ok(wrap(self.get_tasks())),
            "GET_EXECUTORS" => Ok(wrap(self.get_executors())),
            "GET_MASTER" => Ok(wrap(json!({
                "master_info": self.master_info,
                "start_time": self.start_time,
                "elected_time": self.start_time,
            }))),
            "GET_METRICS" => Ok(wrap(
                json!({"metrics": self.metrics().as_object().map(|m| m.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()).unwrap_or_default()}),
            )),
            "TEARDOWN" => {
                let fid = id_value(call.pointer("/teardown/framework_id")).ok_or_else(|| {
                    ApiError::bad_request("Expecting 'teardown.framework_id' to be present")
                })?;
                if !self.frameworks.contains_key(&fid) {
                    return Err(ApiError::bad_request(format!("Framework {fid} not found")));
                }
                self.remove_framework(&fid, "Teardown by operator");
                Ok(OperatorReply::Empty)
            }
            "MARK_AGENT_GONE" => {
                let aid = id_value(call.pointer("/mark_agent_gone/agent_id")).ok_or_else(|| {
                    ApiError::bad_request("Expecting 'mark_agent_gone.agent_id' to be present")
                })?;
                if !self.agents.contains_key(&aid) && !self.recovered_agents.contains_key(&aid) {
                    return Err(ApiError::bad_request(format!("Agent {aid} not found")));
                }
                self.mark_gone(&aid);
                Ok(OperatorReply::Empty)
            }
            "DRAIN_AGENT" => {
                let aid = id_value(call.pointer("/drain_agent/agent_id")).ok_or_else(|| {
                    ApiError::bad_request("Expecting 'drain_agent.agent_id' to be present")
                })?;
                let mark_gone = call
                    .pointer("/drain_agent/mark_gone")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let Some(a) = self.agents.get_mut(&aid) else {
                    return Err(ApiError::bad_request(format!("Agent {aid} not found")));
                };
                if a.state == AgentState::Unreachable {
                    return Err(ApiError::bad_request(format!("Agent {aid} is unreachable")));
                }
                a.state = AgentState::Draining;
                a.mark_gone_when_drained |= mark_gone;
                self.alloc.set_agent_active(&aid, false);
                let offers: Vec<String> = self
                    .offers
                    .values()
                    .filter(|o| o.agent_id == aid)
                    .map(|o| o.id.clone())
                    .collect();
                for o in offers {
                    self.rescind(&o);
                }
                let kills: Vec<(String, String)> = self
                    .tasks
                    .values()
                    .filter(|t| t.agent_id == aid && !is_terminal(&t.state))
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
            "SUBSCRIBE" => {
                let (sink, rx) = Sink::new(Api::Operator, enc, &self.durability);
                sink.send(&json!({"type":"SUBSCRIBED","subscribed":{
                    "get_state": self.get_state(),
                    "heartbeat_interval_seconds": self.cfg.heartbeat_interval.as_secs_f64(),
                }}));
                self.operator_subs.push(sink);
                Ok(OperatorReply::Stream(rx))
            }
            "UNKNOWN" => Err(ApiError {
                status: 501,
                message: "Received 'UNKNOWN' call".into(),
            }),
            other => Err(ApiError {
                status: 501,
                message: format!("Operator call '{other}' is not implemented"),
            }),
        }
    }

    /// A draining agent is drained once none of its tasks is still running.
    fn is_drained(&self, aid: &str) -> bool {
        !self
            .tasks
            .values()
            .any(|t| t.agent_id == aid && !is_terminal(&t.state))
    }

    fn mark_drained_agents_gone(&mut self) {
        let drained: Vec<String> = self
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

    fn mark_gone(&mut self, aid: &str) {
        info!(agent_id = %aid, "Agent marked gone");
        let keys: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id == aid)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let mut t = self.tasks.remove(&k).expect("exists");
            self.release(&t);
            if !is_terminal(&t.state) {
                let s = master_status(
                    &t.id,
                    "TASK_GONE_BY_OPERATOR",
                    Some(aid),
                    Some("REASON_AGENT_REMOVED_BY_OPERATOR"),
                    Some("Agent marked gone by operator"),
                );
                t.state = "TASK_GONE_BY_OPERATOR".into();
                t.push_status(&s);
                self.send_update_to_framework(&k.0, s);
            }
            t.pending.clear();
            if let Some(f) = self.frameworks.get_mut(&k.0) {
                f.completed_tasks.push_back(t);
            }
        }
        let offers: Vec<String> = self
            .offers
            .values()
            .filter(|o| o.agent_id == aid)
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
        self.gone_agents.insert(aid.into());
        self.registry
            .record(RegistryOp::AgentGone { id: aid.into() });
        self.operator_event(
            json!({"type":"AGENT_REMOVED","agent_removed":{"agent_id": id_json(aid)}}),
        );
    }

    fn get_agents(&self) -> Value {
        let agents: Vec<Value> = self
            .agents
            .values()
            .filter(|a| a.state != AgentState::Unreachable)
            .map(|a| self.agent_v1_json(a))
            .collect();
        let recovered: Vec<&Value> = self.recovered_agents.values().collect();
        json!({"agents": agents, "recovered_agents": recovered})
    }

    fn get_frameworks(&self) -> Value {
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

    fn get_tasks(&self) -> Value {
        let mut tasks = Vec::new();
        let mut unreachable = Vec::new();
        for t in self.tasks.values() {
            if t.state == "TASK_UNREACHABLE" {
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

    fn get_executors(&self) -> Value {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for t in self.tasks.values() {
            if let (Some(eid), Some(exec)) = (&t.executor_id, &t.executor)
                && seen.insert((t.framework_id.clone(), eid.clone()))
            {
                out.push(json!({"executor_info": exec.value(), "agent_id": id_json(&t.agent_id)}));
            }
        }
        json!({"executors": out})
    }

    fn get_state(&self) -> Value {
        json!({
            "get_tasks": self.get_tasks(),
            "get_executors": self.get_executors(),
            "get_frameworks": self.get_frameworks(),
            "get_agents": self.get_agents(),
        })
    }

    // ------------------------------------------------------------------ read-only JSON

    fn slave_state_json(&self, a: &Agent) -> Value {
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
        v
    }

    fn task_state_json(&self, t: &Task) -> Value {
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

    fn framework_state_json(&self, f: &Framework) -> Value {
        let mut used = Pools::new();
        let mut tasks = Vec::new();
        let mut unreachable = Vec::new();
        for t in self.tasks.values().filter(|t| t.framework_id == f.id) {
            if !t.released {
                pools_add(&mut used, &t.resources);
            }
            if t.state == "TASK_UNREACHABLE" {
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
        let keep = |f: &&Framework| framework_id.is_none_or(|id| f.id == id);
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

    pub fn metrics(&self) -> Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: f64| {
            m.insert(k.to_string(), json!(v));
        };
        put("master/elected", 1.0);
        put("master/uptime_secs", self.started.elapsed().as_secs_f64());
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
                .filter(|t| t.state == name)
                .count();
            put(&format!("master/tasks_{s}"), n as f64);
        }
        let total = self.alloc.cluster_total();
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

/// `/version` body and GET_VERSION payload.
pub fn version_info() -> Value {
    json!({
        "version": MESOS_VERSION,
        "build_date": "",
        "build_time": 0,
        "build_user": "",
        "capstan_version": env!("CARGO_PKG_VERSION"),
    })
}
