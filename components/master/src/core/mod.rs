//! The master's state machine: frameworks, agents, offers and tasks. Owned by one task
//! (see `server.rs`); every method is synchronous and non-blocking. Streams are bounded
//! channels of pre-framed RecordIO bytes; a full or closed channel counts as a broken
//! connection.
//!
//! This module owns the [`Core`] type, the records it keeps (frameworks, tasks, agents,
//! offers, stream sinks), its construction and recovery from the registry, and the timers
//! ([`Core::tick`], [`Core::allocate`]). The APIs live in submodules: [`scheduler`] (the v1
//! scheduler calls), [`updates`] (status updates from agents to frameworks, retried until
//! acknowledged), [`agents`] (the Capstan agent protocol, agent loss, drain and gone),
//! [`operator`] (operator calls and the operator event stream) and [`state`] (the
//! `/master/*` read views and metrics).
//!
//! Key decision: the core never reads a clock or a random source itself. Monotonic time is
//! the `now` each entry point is given; wall-clock timestamps and fresh uuids (the master
//! id, stream ids) come from an injected [`Clock`] and [`IdGen`], so the table tests in
//! `tests/` assert exact ids and timings while production uses the system's.

mod agents;
mod operator;
mod scheduler;
mod state;
mod updates;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_types::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId, TaskState};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::allocator::Allocator;
use crate::config::Config;
use crate::registry::{Durability, Registry};
use crate::resources::{ANY_ROLE, Pools};
use crate::wire::{
    Api, Encoding, encode_message, master_status, recordio, recordio_json, str_list, wall,
};

/// A task's key: tasks ids are unique within their framework only.
type TaskKey = (FrameworkId, TaskId);

/// Version reported by `/version`, MasterInfo and `/master/state` (pymesos needs plain
/// dotted integers ≥ 1.0.0).
pub use capstan_types::MESOS_VERSION;

const STREAM_BUFFER: usize = 4096;
const MAX_STATUSES_KEPT: usize = 20;
const MAX_ACKED_KEPT: usize = 32;

/// The core's clock: the instant it starts counting from and wall-clock time for the
/// timestamps the APIs report. Everything else that needs time is given `now`.
pub trait Clock: Send + 'static {
    /// The current monotonic instant.
    fn now(&self) -> Instant;
    /// Seconds since the Unix epoch, fractional.
    fn wall(&self) -> f64;
}

/// The system clock (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> f64 {
        wall()
    }
}

/// Where the core gets fresh uuids: the master id (the prefix of every framework, agent
/// and offer id it makes) and scheduler stream ids.
pub trait IdGen: Send + 'static {
    fn uuid(&mut self) -> uuid::Uuid;
}

/// Random (v4) uuids (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGen for RandomIds {
    fn uuid(&mut self) -> uuid::Uuid {
        uuid::Uuid::new_v4()
    }
}

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
    /// A well-formed call whose `type` is the enum's `UNKNOWN`: Mesos answers it
    /// `501 Not Implemented` (a missing or unknown `type` is a 400, see `wire::call_type`).
    fn unknown_call() -> Self {
        ApiError {
            status: 501,
            message: "Received 'UNKNOWN' call".into(),
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
    id: FrameworkId,
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
    framework_id: FrameworkId,
    id: TaskId,
    agent_id: AgentId,
    info: Packed,
    executor_id: Option<ExecutorId>,
    /// The task's executor (its own `executor`, or the task group's).
    executor: Option<Packed>,
    resources: Pools,
    role: String,
    state: TaskState,
    statuses: Vec<Packed>,
    pending: VecDeque<Pending>,
    acked: VecDeque<String>,
    released: bool,
}

impl Task {
    fn latest_status(&self) -> Value {
        self.statuses.last().map(Packed::value).unwrap_or_else(|| {
            master_status(&self.id, self.state, Some(&self.agent_id), None, None)
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
    id: AgentId,
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
    id: OfferId,
    framework_id: FrameworkId,
    agent_id: AgentId,
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
    frameworks: BTreeMap<FrameworkId, Framework>,
    completed_frameworks: VecDeque<Framework>,
    removed_frameworks: BTreeSet<FrameworkId>,
    agents: BTreeMap<AgentId, Agent>,
    gone_agents: BTreeSet<AgentId>,
    recovered_agents: BTreeMap<AgentId, Value>,
    /// Drains of the registry (with their `mark_gone`) for agents that have not re-registered
    /// since: they come back draining.
    recovered_drains: BTreeMap<AgentId, bool>,
    offers: BTreeMap<OfferId, Offer>,
    tasks: BTreeMap<TaskKey, Task>,
    operator_subs: Vec<Sink>,
    operator_heartbeat: Instant,
    registry: Box<dyn Registry>,
    durability: Durability,
    allocation_requested: bool,
    next_framework: u64,
    next_offer: u64,
    next_agent: u64,
    dropped_messages: u64,
    clock: Box<dyn Clock>,
    ids: Box<dyn IdGen>,
}

impl Core {
    /// A core on the system clock with random ids (production).
    pub fn new(cfg: Config, advertised: std::net::SocketAddr, registry: Box<dyn Registry>) -> Self {
        Self::with_clock(
            cfg,
            advertised,
            registry,
            Box::new(SystemClock),
            Box::new(RandomIds),
        )
    }

    /// A core on the given clock and id source (tests script both).
    pub fn with_clock(
        cfg: Config,
        advertised: std::net::SocketAddr,
        registry: Box<dyn Registry>,
        clock: Box<dyn Clock>,
        mut ids: Box<dyn IdGen>,
    ) -> Self {
        let master_id = ids.uuid().to_string();
        let started = clock.now();
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
            start_time: clock.wall(),
            started,
            alloc: Allocator::new(),
            frameworks: BTreeMap::new(),
            completed_frameworks: VecDeque::new(),
            removed_frameworks: snap.removed_frameworks,
            agents: BTreeMap::new(),
            gone_agents: snap.gone_agents,
            recovered_agents: snap.agents,
            recovered_drains: snap.draining,
            offers: BTreeMap::new(),
            tasks: BTreeMap::new(),
            operator_subs: Vec::new(),
            operator_heartbeat: started,
            registry,
            durability,
            allocation_requested: false,
            next_framework: 0,
            next_offer: 0,
            next_agent: 0,
            dropped_messages: 0,
            master_id,
            clock,
            ids,
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
        for (id, mark_gone) in snap.draining {
            if !self.agents.contains_key(&id) {
                self.recovered_drains.insert(id, mark_gone);
            }
        }
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
                    registered_time: self.clock.wall(),
                    reregistered_time: None,
                    unregistered_time: Some(self.clock.wall()),
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

    /// Runs allocation and every timer: heartbeats, pings, timeouts, retries.
    pub fn tick(&mut self, now: Instant) {
        self.mark_drained_agents_gone();
        // Broken framework streams → disconnected; expired failover → removed.
        let ids: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
        for id in ids {
            let f = self.frameworks.get_mut(&id).expect("exists");
            if f.sink.as_ref().is_some_and(Sink::is_closed) {
                f.sink = None;
            }
            if f.sink.is_none() && f.disconnected_at.is_none() {
                info!(framework_id = %id, "Framework disconnected");
                f.disconnected_at = Some(now);
                f.unregistered_time = Some(self.clock.wall());
                f.stream_id = None;
                self.alloc.set_framework_active(&id, false);
                let offers: Vec<OfferId> = self
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
        let ids: Vec<AgentId> = self.agents.keys().cloned().collect();
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
            let expired: Vec<OfferId> = self
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
        let keys: Vec<TaskKey> = self
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
        let mut by_fw: BTreeMap<FrameworkId, Vec<Value>> = BTreeMap::new();
        for g in grants {
            let id = OfferId::from(format!("{}-O{}", self.master_id, self.next_offer));
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

    fn rescind(&mut self, offer_id: &OfferId) {
        if let Some(o) = self.offers.remove(offer_id) {
            self.alloc
                .recover(&o.framework_id, &o.agent_id, &o.resources);
            if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
                f.send(&json!({"type":"RESCIND","rescind":{"offer_id": offer_id.to_wire()}}));
            }
        }
    }
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
