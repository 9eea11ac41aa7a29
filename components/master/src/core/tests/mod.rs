//! Table tests of the core, driven the way `server.rs` drives it but with no sockets and no
//! tokio runtime: a scripted [`Clock`] (every `now` is `t0 + offset`, wall time is
//! `WALL0 + offset`), sequential uuids (so the master id and every framework, agent, offer
//! and stream id is known in advance), and the in-memory registry wrapped to record each
//! op. Outputs are read where the HTTP layer reads them: the RecordIO frames of each
//! scheduler, agent and operator stream, the call results, and the registry ops.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Clock, Core, Frame, IdGen, OperatorReply};
use crate::config::Config;
use crate::registry::{Durability, InMemoryRegistry, Registry, RegistryOp, RegistrySnapshot};
use crate::wire::{
    AgentCall, Encoding, OperatorCall, SchedulerCall, decode_agent_json, decode_operator_json,
    decode_scheduler_json,
};
use capstan_proto::recordio::RecordIoDecoder;

mod agents;
mod offers;
mod subscribe;
mod updates;

/// Wall-clock time at offset zero (seconds since the epoch).
const WALL0: f64 = 1_700_000_000.0;
/// The master id made from the first uuid.
const MASTER: &str = "00000000-0000-0000-0000-000000000001";

fn uuid_str(n: u128) -> String {
    uuid::Uuid::from_u128(n).to_string()
}

fn framework_id(n: u32) -> String {
    format!("{MASTER}-{n:04}")
}

fn agent_id(n: u32) -> String {
    format!("{MASTER}-S{n}")
}

fn offer_id(n: u32) -> String {
    format!("{MASTER}-O{n}")
}

/// A JSON scheduler call decoded as the HTTP edge decodes it (its errors are 400s).
fn decode(call: &Value) -> Result<SchedulerCall, super::ApiError> {
    decode_scheduler_json(call).map_err(super::ApiError::bad_request)
}

/// A JSON agent call decoded as the HTTP edge decodes it (the test's own calls are well-formed).
fn agent_call(call: &Value) -> AgentCall {
    decode_agent_json(call).unwrap_or_else(|e| panic!("{call} is a well-formed agent call: {e}"))
}

/// A JSON operator call decoded as the HTTP edge decodes it (its errors are 400s).
fn operator_call(call: &Value) -> Result<OperatorCall, super::ApiError> {
    decode_operator_json(call).map_err(super::ApiError::bad_request)
}

/// A clock that moves only when the test says so.
struct ScriptedClock {
    t0: Instant,
    offset: Arc<Mutex<Duration>>,
}

impl Clock for ScriptedClock {
    fn now(&self) -> Instant {
        self.t0 + *self.offset.lock().expect("clock lock")
    }
    fn wall(&self) -> f64 {
        WALL0 + self.offset.lock().expect("clock lock").as_secs_f64()
    }
}

/// Uuids 1, 2, 3, ...
struct SequentialIds(u128);

impl IdGen for SequentialIds {
    fn uuid(&mut self) -> uuid::Uuid {
        self.0 += 1;
        uuid::Uuid::from_u128(self.0)
    }
}

/// The in-memory registry, remembering every op recorded.
struct RecordingRegistry {
    inner: InMemoryRegistry,
    ops: Arc<Mutex<Vec<RegistryOp>>>,
}

impl Registry for RecordingRegistry {
    fn load(&self) -> RegistrySnapshot {
        self.inner.load()
    }
    fn record(&mut self, op: RegistryOp) {
        self.ops.lock().expect("ops lock").push(op.clone());
        self.inner.record(op);
    }
    fn durability(&self) -> Durability {
        self.inner.durability()
    }
}

/// One stream's receiving end, decoded as the HTTP layer would frame it.
struct Stream {
    rx: mpsc::Receiver<Frame>,
    decoder: RecordIoDecoder,
}

impl Stream {
    fn new(rx: mpsc::Receiver<Frame>) -> Self {
        Stream {
            rx,
            decoder: RecordIoDecoder::default(),
        }
    }

    /// Every event sent so far (and not read before).
    fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(frame) = self.rx.try_recv() {
            self.decoder.push(&frame.bytes);
            while let Some(rec) = self.decoder.next_record().expect("well-framed record") {
                out.push(serde_json::from_slice(&rec).expect("a JSON event"));
            }
        }
        out
    }

    /// The events of type `ty` sent so far; the others read are dropped.
    fn take(&mut self, ty: &str) -> Vec<Value> {
        self.drain()
            .into_iter()
            .filter(|e| e["type"] == ty)
            .collect()
    }

    /// True once the core dropped its end (the connection would close).
    fn is_closed(&mut self) -> bool {
        matches!(
            self.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        )
    }
}

/// A subscribed framework as a scheduler sees it.
struct Sched {
    id: String,
    stream_id: String,
    events: Stream,
}

/// A subscribed agent as the agent daemon sees it.
struct FakeAgent {
    id: String,
    events: Stream,
}

struct Harness {
    core: Core,
    offset: Arc<Mutex<Duration>>,
    t0: Instant,
    ops: Arc<Mutex<Vec<RegistryOp>>>,
}

fn config() -> Config {
    Config {
        agent_timeout: Duration::from_secs(15),
        agent_ping_interval: Duration::from_secs(5),
        heartbeat_interval: Duration::from_secs(15),
        status_update_retry_interval: Duration::from_secs(10),
        ..Config::default()
    }
}

fn framework_info(name: &str, caps: &[&str], failover_timeout: f64) -> Value {
    json!({
        "user": "root", "name": name, "failover_timeout": failover_timeout,
        "capabilities": caps.iter().map(|c| json!({"type": c})).collect::<Vec<_>>(),
    })
}

fn scalar(name: &str, value: f64) -> Value {
    json!({"name": name, "type": "SCALAR", "scalar": {"value": value}})
}

fn task_info(task_id: &str, agent: &str, cpus: f64, mem: f64) -> Value {
    json!({
        "name": task_id, "task_id": {"value": task_id}, "agent_id": {"value": agent},
        "resources": [scalar("cpus", cpus), scalar("mem", mem)],
        "command": {"value": "sleep 100", "shell": true},
    })
}

/// The resources of a scalar kind in an offer (or any Mesos resource list).
fn amount(resources: &Value, kind: &str) -> f64 {
    resources
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["name"] == kind)
        .filter_map(|r| r["scalar"]["value"].as_f64())
        .sum()
}

/// A status update uuid as agents send it (base64 of 16 bytes).
fn update_uuid(n: u128) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::from_u128(n).as_bytes())
}

impl Harness {
    fn new() -> Self {
        Self::with_config(config())
    }

    fn with_config(cfg: Config) -> Self {
        let offset = Arc::new(Mutex::new(Duration::ZERO));
        let ops = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let registry = RecordingRegistry {
            inner: InMemoryRegistry::default(),
            ops: ops.clone(),
        };
        let core = Core::with_clock(
            cfg,
            "127.0.0.1:5050".parse().expect("an address"),
            Box::new(registry),
            Box::new(ScriptedClock {
                t0,
                offset: offset.clone(),
            }),
            Box::new(SequentialIds(0)),
        );
        Harness {
            core,
            offset,
            t0,
            ops,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + *self.offset.lock().expect("clock lock")
    }

    /// Moves the clock forward and runs the timers, as the core task's interval does.
    fn advance(&mut self, d: Duration) {
        *self.offset.lock().expect("clock lock") += d;
        let now = self.now();
        self.core.tick(now);
    }

    /// What the core task does after each job: allocate if something asked for it.
    fn settle(&mut self) {
        if self.core.take_allocation_request() {
            let now = self.now();
            self.core.allocate(now);
        }
    }

    fn ops(&self) -> Vec<RegistryOp> {
        self.ops.lock().expect("ops lock").clone()
    }

    fn subscribe_call(&mut self, call: &Value) -> Result<Sched, super::ApiError> {
        let now = self.now();
        let call = decode(call)?;
        let (stream_id, rx) = self
            .core
            .scheduler_subscribe(&call.call, Encoding::Json, now)?;
        let mut events = Stream::new(rx);
        let sub = events.take("SUBSCRIBED");
        let id = sub
            .first()
            .and_then(|s| s["subscribed"]["framework_id"]["value"].as_str())
            .unwrap_or_default()
            .to_string();
        self.settle();
        Ok(Sched {
            id,
            stream_id,
            events,
        })
    }

    fn subscribe(&mut self, info: Value) -> Sched {
        let mut call = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}});
        if let Some(id) = info.get("id") {
            call["framework_id"] = id.clone();
        }
        self.subscribe_call(&call).expect("SUBSCRIBE accepted")
    }

    fn call(&mut self, s: &Sched, mut call: Value) -> Result<Option<Value>, super::ApiError> {
        call["framework_id"] = json!({"value": s.id});
        let now = self.now();
        let r = decode(&call).and_then(|c| self.core.scheduler_call(&c, Some(&s.stream_id), now));
        self.settle();
        r
    }

    fn call_ok(&mut self, s: &Sched, call: Value) {
        let ty = call["type"].clone();
        let r = self.call(s, call);
        assert!(r.is_ok(), "{ty} refused: {r:?}");
    }

    fn add_agent(&mut self, hostname: &str, cpus: f64, mem: f64) -> FakeAgent {
        self.add_agent_with(json!({"hostname": hostname, "port": 5051,
            "resources": [scalar("cpus", cpus), scalar("mem", mem)]}))
    }

    fn add_agent_with(&mut self, agent_info: Value) -> FakeAgent {
        let call = json!({"type": "SUBSCRIBE", "subscribe": {
            "agent_info": agent_info, "ip": "127.0.0.1", "version": "1.11.0",
        }});
        let now = self.now();
        let rx = self
            .core
            .agent_subscribe(&agent_call(&call), Encoding::Json, now)
            .expect("agent SUBSCRIBE accepted");
        let mut events = Stream::new(rx);
        let sub = events.take("SUBSCRIBED");
        let id = sub[0]["subscribed"]["agent_id"]["value"]
            .as_str()
            .expect("an agent id")
            .to_string();
        self.settle();
        FakeAgent { id, events }
    }

    fn agent_update(&mut self, a: &FakeAgent, fid: &str, tid: &str, state: &str, uuid: &str) {
        let call = json!({"type": "UPDATE", "agent_id": {"value": a.id}, "update": {
            "framework_id": {"value": fid},
            "status": {"task_id": {"value": tid}, "state": state, "uuid": uuid,
                "source": "SOURCE_EXECUTOR", "agent_id": {"value": a.id}},
        }});
        let now = self.now();
        self.core
            .agent_call(&agent_call(&call), now)
            .expect("agent UPDATE accepted");
        self.settle();
    }

    fn pong(&mut self, a: &FakeAgent) {
        let now = self.now();
        self.core
            .agent_call(
                &agent_call(&json!({"type": "PONG", "agent_id": {"value": a.id}})),
                now,
            )
            .expect("PONG accepted");
    }

    /// The single offer of the next OFFERS event on `s`'s stream.
    fn offer(&mut self, s: &mut Sched) -> Value {
        let offers = s.events.take("OFFERS");
        assert_eq!(offers.len(), 1, "one OFFERS event");
        let list = offers[0]["offers"]["offers"].as_array().expect("offers");
        assert_eq!(list.len(), 1, "one offer");
        list[0].clone()
    }

    /// ACCEPT `offer` launching `tasks` (refuse_seconds 0).
    fn launch(&mut self, s: &Sched, offer: &Value, tasks: Vec<Value>) {
        self.call_ok(
            s,
            json!({"type": "ACCEPT", "accept": {
                "offer_ids": [offer["id"]],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                "filters": {"refuse_seconds": 0},
            }}),
        );
    }

    fn operator_stream(&mut self) -> Stream {
        let now = self.now();
        let call = operator_call(&json!({"type": "SUBSCRIBE"})).expect("a SUBSCRIBE");
        match self.core.operator_call(&call, Encoding::Json, now) {
            Ok(OperatorReply::Stream(rx)) => Stream::new(rx),
            other => panic!("operator SUBSCRIBE answered {other:?}"),
        }
    }

    /// `/master/state`'s view of one task: (state, framework's list it is in).
    fn task_state(&self, fid: &str, tid: &str) -> Option<(String, &'static str)> {
        let state = self.core.state_json();
        for list in ["frameworks", "completed_frameworks"] {
            for f in state[list].as_array().into_iter().flatten() {
                if f["id"] != fid {
                    continue;
                }
                for (key, name) in [
                    ("tasks", "tasks"),
                    ("unreachable_tasks", "unreachable_tasks"),
                    ("completed_tasks", "completed_tasks"),
                ] {
                    if let Some(t) = f[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|t| t["id"] == tid)
                    {
                        return Some((t["state"].as_str().unwrap_or("").into(), name));
                    }
                }
            }
        }
        None
    }
}

/// A framework on one agent with `tid` launched (1 cpu, 128 mem) and the LAUNCH read.
fn running_task(h: &mut Harness, info: Value, tid: &str) -> (Sched, FakeAgent) {
    let mut agent = h.add_agent("a1", 4.0, 1024.0);
    let mut s = h.subscribe(info);
    let offer = h.offer(&mut s);
    h.launch(&s, &offer, vec![task_info(tid, &agent.id, 1.0, 128.0)]);
    assert_eq!(agent.events.take("LAUNCH").len(), 1);
    (s, agent)
}

fn updates(s: &mut Sched) -> Vec<Value> {
    s.events
        .take("UPDATE")
        .into_iter()
        .map(|u| u["update"]["status"].clone())
        .collect()
}
