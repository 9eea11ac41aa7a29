//! A small fake Mesos master speaking the v1 scheduler HTTP API: one SUBSCRIBE stream,
//! offers from simulated agents, tasks go straight to TASK_RUNNING (or TASK_FAILED when the
//! command contains `fail`), KILL → TASK_KILLED, RECONCILE answers from its task table.
//! Every call is recorded so tests can assert what apps sent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub struct FakeAgent {
    pub id: String,
    pub hostname: String,
    pub cpus: f64,
    pub mem: f64,
    pub ports: (u64, u64),
    pub attributes: Vec<(String, String)>,
}

impl FakeAgent {
    pub fn new(n: usize) -> FakeAgent {
        FakeAgent {
            id: format!("fake-S{n}"),
            hostname: "127.0.0.1".into(),
            cpus: 8.0,
            mem: 8192.0,
            ports: (31000 + n as u64 * 1000, 31000 + n as u64 * 1000 + 999),
            attributes: vec![("rack".into(), format!("r{n}"))],
        }
    }
}

#[derive(Clone, Debug)]
pub struct FakeTask {
    pub agent_id: String,
    pub state: String,
    pub cpus: f64,
    pub mem: f64,
    pub ports: Vec<u64>,
    pub info: Value,
}

#[derive(Default)]
pub struct FakeState {
    pub agents: Vec<FakeAgent>,
    pub tasks: BTreeMap<String, FakeTask>,
    pub offers: BTreeMap<String, String>,
    pub stream: Option<mpsc::Sender<Bytes>>,
    pub stream_id: String,
    pub framework_ids: Vec<String>,
    pub calls: Vec<Value>,
    pub subscribes: usize,
    pub counter: u64,
    pub paused_offers: bool,
}

fn frame(event: &Value) -> Bytes {
    let s = event.to_string();
    Bytes::from(format!("{}\n{}", s.len(), s))
}

fn uuid_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

impl FakeState {
    fn send(&mut self, event: Value) {
        if let Some(tx) = &self.stream
            && tx.try_send(frame(&event)).is_err()
        {
            self.stream = None;
        }
    }

    pub fn update(&mut self, task_id: &str, state: &str, with_uuid: bool) {
        let agent = self
            .tasks
            .get(task_id)
            .map(|t| t.agent_id.clone())
            .unwrap_or_default();
        let mut status = json!({
            "task_id": {"value": task_id}, "state": state, "agent_id": {"value": agent},
            "source": "SOURCE_EXECUTOR", "timestamp": 1.7e9,
            "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": "127.0.0.1"}]}]},
        });
        if with_uuid {
            status["uuid"] = json!(uuid_b64());
        }
        if let Some(t) = self.tasks.get_mut(task_id) {
            t.state = state.to_string();
        }
        self.send(json!({"type": "UPDATE", "update": {"status": status}}));
    }

    fn free(&self, agent: &FakeAgent) -> (f64, f64, Vec<(u64, u64)>) {
        let live: Vec<&FakeTask> = self
            .tasks
            .values()
            .filter(|t| t.agent_id == agent.id && is_live(&t.state))
            .collect();
        let cpus = agent.cpus - live.iter().map(|t| t.cpus).sum::<f64>();
        let mem = agent.mem - live.iter().map(|t| t.mem).sum::<f64>();
        let used: BTreeSet<u64> = live.iter().flat_map(|t| t.ports.clone()).collect();
        let mut ranges = Vec::new();
        let mut start = None;
        for p in agent.ports.0..=agent.ports.1 {
            match (used.contains(&p), start) {
                (false, None) => start = Some(p),
                (true, Some(s)) => {
                    ranges.push((s, p - 1));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            ranges.push((s, agent.ports.1));
        }
        (cpus, mem, ranges)
    }

    fn make_offers(&mut self) {
        if self.stream.is_none() || self.paused_offers {
            return;
        }
        let fw = self.framework_ids.last().cloned().unwrap_or_default();
        let agents = self.agents.clone();
        let mut offers = Vec::new();
        for a in &agents {
            if self.offers.values().any(|x| x == &a.id) {
                continue;
            }
            let (cpus, mem, ranges) = self.free(a);
            if cpus < 0.01 {
                continue;
            }
            self.counter += 1;
            let id = format!("fake-O{}", self.counter);
            self.offers.insert(id.clone(), a.id.clone());
            offers.push(json!({
                "id": {"value": id}, "framework_id": {"value": fw}, "agent_id": {"value": a.id}, "hostname": a.hostname,
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}, "role": "*", "allocation_info": {"role": "*"}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}, "role": "*", "allocation_info": {"role": "*"}},
                    {"name": "disk", "type": "SCALAR", "scalar": {"value": 10000.0}, "role": "*", "allocation_info": {"role": "*"}},
                    {"name": "ports", "type": "RANGES", "ranges": {"range": ranges.iter().map(|(b, e)| json!({"begin": b, "end": e})).collect::<Vec<_>>()}, "role": "*", "allocation_info": {"role": "*"}},
                ],
                "attributes": a.attributes.iter().map(|(k, v)| json!({"name": k, "type": "TEXT", "text": {"value": v}})).collect::<Vec<_>>(),
            }));
        }
        if !offers.is_empty() {
            self.send(json!({"type": "OFFERS", "offers": {"offers": offers}}));
        }
    }
}

fn is_live(state: &str) -> bool {
    !matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_ERROR"
            | "TASK_LOST"
            | "TASK_DROPPED"
            | "TASK_GONE"
    )
}

#[derive(Clone)]
pub struct FakeMaster {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeMaster {
    pub async fn start(agents: usize) -> FakeMaster {
        FakeMaster::start_with((0..agents).map(FakeAgent::new).collect()).await
    }

    pub async fn start_with(agents: Vec<FakeAgent>) -> FakeMaster {
        let state = Arc::new(Mutex::new(FakeState {
            agents,
            ..FakeState::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let ticker = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                ticker.lock().unwrap().make_offers();
            }
        });
        FakeMaster { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn calls_of(&self, kind: &str) -> Vec<Value> {
        self.with(|s| {
            s.calls
                .iter()
                .filter(|c| c["type"] == kind)
                .cloned()
                .collect()
        })
    }

    pub fn live_tasks(&self) -> Vec<(String, FakeTask)> {
        self.with(|s| {
            s.tasks
                .iter()
                .filter(|(_, t)| is_live(&t.state))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// Ends the subscription stream (as if the connection broke).
    pub fn drop_stream(&self) {
        self.with(|s| s.stream = None);
    }
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return status(400),
    };
    // Every call must be a valid mesos.v1.scheduler.Call.
    if capstan_proto::from_json::<capstan_proto::mesos::v1::scheduler::Call>(&call).is_err() {
        return status(400);
    }
    let mut s = state.lock().unwrap();
    s.calls.push(call.clone());
    let kind = call["type"].as_str().unwrap_or_default().to_string();
    if kind == "SUBSCRIBE" {
        let fw = call["framework_id"]["value"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("fake-master-{:04}", s.framework_ids.len()));
        s.framework_ids.push(fw.clone());
        s.subscribes += 1;
        s.offers.clear();
        let (tx, rx) = mpsc::channel::<Bytes>(4096);
        s.stream = Some(tx);
        s.stream_id = uuid::Uuid::new_v4().to_string();
        s.send(json!({"type": "SUBSCRIBED", "subscribed": {"framework_id": {"value": fw}, "heartbeat_interval_seconds": 15.0}}));
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let body = Body::from_stream(futures::StreamExt::map(stream, Ok::<Bytes, std::io::Error>));
        let mut r = Response::new(body);
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r.headers_mut()
            .insert("mesos-stream-id", s.stream_id.parse().unwrap());
        return r;
    }
    if headers.get("mesos-stream-id").and_then(|v| v.to_str().ok()) != Some(s.stream_id.as_str()) {
        return status(400);
    }
    match kind.as_str() {
        "ACCEPT" => {
            for o in call["accept"]["offer_ids"].as_array().into_iter().flatten() {
                let id = o["value"].as_str().unwrap_or_default().to_string();
                s.offers.remove(&id);
            }
            for op in call["accept"]["operations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                for t in op["launch"]["task_infos"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    let id = t["task_id"]["value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let mut cpus = 0.0;
                    let mut mem = 0.0;
                    let mut ports = Vec::new();
                    for r in t["resources"].as_array().into_iter().flatten() {
                        match r["name"].as_str() {
                            Some("cpus") => cpus += r["scalar"]["value"].as_f64().unwrap_or(0.0),
                            Some("mem") => mem += r["scalar"]["value"].as_f64().unwrap_or(0.0),
                            Some("ports") => {
                                for rg in r["ranges"]["range"].as_array().into_iter().flatten() {
                                    ports.extend(
                                        rg["begin"].as_u64().unwrap()..=rg["end"].as_u64().unwrap(),
                                    );
                                }
                            }
                            _ => {}
                        }
                    }
                    let fail = t["command"]["value"]
                        .as_str()
                        .is_some_and(|c| c.contains("fail"));
                    s.tasks.insert(
                        id.clone(),
                        FakeTask {
                            agent_id: t["agent_id"]["value"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            state: "TASK_STAGING".into(),
                            cpus,
                            mem,
                            ports,
                            info: t.clone(),
                        },
                    );
                    s.update(&id, "TASK_STARTING", true);
                    s.update(&id, if fail { "TASK_FAILED" } else { "TASK_RUNNING" }, true);
                }
            }
        }
        "DECLINE" => {
            for o in call["decline"]["offer_ids"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let id = o["value"].as_str().unwrap_or_default().to_string();
                s.offers.remove(&id);
            }
        }
        "KILL" => {
            let id = call["kill"]["task_id"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if s.tasks.get(&id).is_some_and(|t| is_live(&t.state)) {
                s.update(&id, "TASK_KILLED", true);
            } else if !s.tasks.contains_key(&id) {
                s.send(json!({"type": "UPDATE", "update": {"status": {"task_id": {"value": id}, "state": "TASK_LOST", "source": "SOURCE_MASTER", "reason": "REASON_RECONCILIATION"}}}));
            }
        }
        "RECONCILE" => {
            let asked: Vec<String> = call["reconcile"]["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["task_id"]["value"].as_str().map(str::to_string))
                .collect();
            let ids: Vec<String> = if asked.is_empty() {
                s.tasks
                    .iter()
                    .filter(|(_, t)| is_live(&t.state))
                    .map(|(k, _)| k.clone())
                    .collect()
            } else {
                asked
            };
            for id in ids {
                match s.tasks.get(&id).map(|t| t.state.clone()) {
                    Some(state) => s.update(&id, &state, false),
                    None => s.send(json!({"type": "UPDATE", "update": {"status": {"task_id": {"value": id}, "state": "TASK_LOST", "source": "SOURCE_MASTER", "reason": "REASON_RECONCILIATION"}}})),
                }
            }
        }
        _ => {}
    }
    status(202)
}

fn status(code: u16) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}
