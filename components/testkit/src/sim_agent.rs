//! Simulated agents: many agents in one process that speak the real Capstan agent protocol
//! (`capstan.agent.v1`, `POST /api/capstan/agent/v1` on the master) and run tasks with a
//! fake containerizer. The reference example for the real agent.
//!
//! What a task does is scripted ([`Script`]): by default from its command line
//! (`sleep N` → runs N seconds then TASK_FINISHED, `exit N` → ends at once with code N,
//! `fail` → fails to start, `hang` → runs and ignores kills, anything else runs until
//! killed), or by a [`ScriptFn`] the test installs.
//!
//! Each agent keeps its agent ID and its tasks across [`SimAgent::stop`] /
//! [`SimAgent::start`] (like a real agent restarting with its work dir), resends each
//! task's status updates in order until the master acknowledges them, and answers PINGs.
//! Framework messages to an executor are echoed back to the framework.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use capstan_mesos_client::{MasterClient, SessionEnd, reconnect};
use capstan_types::{Backoff, Chain};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What a simulated task does.
#[derive(Clone, Debug, PartialEq)]
pub enum Script {
    /// Runs; after `duration` (None = forever) it exits with `exit_code`
    /// (0 → TASK_FINISHED, else TASK_FAILED). Kills end it with TASK_KILLED.
    Run {
        duration: Option<Duration>,
        exit_code: i32,
    },
    /// The container does not start: TASK_FAILED with REASON_CONTAINER_LAUNCH_FAILED.
    FailToStart(String),
    /// Runs forever and ignores kills.
    Hang,
}

/// Picks the script for a TaskInfo (Mesos JSON).
pub type ScriptFn = Arc<dyn Fn(&Value) -> Script + Send + Sync>;

/// The default script rule, from `command.value` (see the module docs).
pub fn script_from_command(task: &Value) -> Script {
    let cmd = task
        .pointer("/command/value")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    let mut words = cmd.split_whitespace();
    match (
        words.next(),
        words.next().and_then(|n| n.parse::<f64>().ok()),
    ) {
        (Some("sleep"), Some(n)) => Script::Run {
            duration: Some(Duration::from_secs_f64(n.max(0.0))),
            exit_code: 0,
        },
        (Some("exit"), Some(n)) => Script::Run {
            duration: Some(Duration::ZERO),
            exit_code: n as i32,
        },
        (Some("fail"), _) => Script::FailToStart("simulated launch failure".into()),
        (Some("hang"), _) => Script::Hang,
        _ => Script::Run {
            duration: None,
            exit_code: 0,
        },
    }
}

/// How to build a simulated agent.
#[derive(Clone)]
pub struct SimAgentConfig {
    /// Master base URL, e.g. `http://127.0.0.1:5050`.
    pub master: String,
    /// Other masters (HA): tried in turn when the current one fails. Standbys redirect to
    /// the leader, which the agent follows.
    pub other_masters: Vec<String>,
    pub hostname: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    /// Inclusive port range offered.
    pub ports: (u64, u64),
    /// Text attributes.
    pub attributes: Vec<(String, String)>,
    /// Public agent: all resources reserved to `slave_public`.
    pub public: bool,
    /// Resend an unacknowledged update after this long.
    pub update_retry: Duration,
    pub script: ScriptFn,
    /// Sent to the master with every call (a master in strict mode wants one).
    pub credential: Option<capstan_types::ClientCredential>,
}

impl SimAgentConfig {
    pub fn new(master: impl Into<String>, hostname: impl Into<String>) -> Self {
        SimAgentConfig {
            master: master.into(),
            other_masters: Vec::new(),
            hostname: hostname.into(),
            cpus: 4.0,
            mem: 4096.0,
            disk: 10000.0,
            ports: (31000, 32000),
            attributes: Vec::new(),
            public: false,
            update_retry: Duration::from_millis(300),
            script: Arc::new(script_from_command),
            credential: None,
        }
    }

    fn agent_info(&self, id: Option<&str>) -> Value {
        let role = if self.public { "slave_public" } else { "*" };
        let res = |v: Value| {
            let mut v = v;
            v["role"] = json!(role);
            if self.public {
                v["reservations"] = json!([{"type": "STATIC", "role": role}]);
            }
            v
        };
        let mut info = json!({
            "hostname": self.hostname,
            "port": 5051,
            "resources": [
                res(json!({"name":"cpus","type":"SCALAR","scalar":{"value": self.cpus}})),
                res(json!({"name":"mem","type":"SCALAR","scalar":{"value": self.mem}})),
                res(json!({"name":"disk","type":"SCALAR","scalar":{"value": self.disk}})),
                res(json!({"name":"ports","type":"RANGES","ranges":{"range":[{"begin": self.ports.0, "end": self.ports.1}]}})),
            ],
            "attributes": self.attributes.iter().map(|(k, v)| json!({"name": k, "type": "TEXT", "text": {"value": v}})).collect::<Vec<_>>(),
        });
        if let Some(id) = id {
            info["id"] = json!({ "value": id });
        }
        info
    }
}

#[derive(Clone, Debug)]
struct PendingUpdate {
    status: Value,
    uuid: String,
    sent_at: Option<Instant>,
}

#[derive(Clone, Debug)]
struct SimTask {
    framework_id: String,
    info: Value,
    executor: Option<Value>,
    state: String,
    last_status: Value,
    ends_at: Option<Instant>,
    exit_code: i32,
    hang: bool,
    pending: VecDeque<PendingUpdate>,
}

#[derive(Debug, Default)]
struct State {
    agent_id: Option<String>,
    connected: bool,
    tasks: BTreeMap<(String, String), SimTask>,
    /// Count of status updates POSTed (incl. retries), for tests.
    updates_sent: u64,
}

/// A simulated agent; see the module docs.
pub struct SimAgent {
    config: SimAgentConfig,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    run: Option<JoinHandle<()>>,
}

fn is_terminal(state: &str) -> bool {
    capstan_types::TaskState::is_terminal_name(state)
}

fn id_of(v: Option<&Value>) -> Option<String> {
    v?.get("value")?.as_str().map(String::from)
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl SimAgent {
    /// Creates the agent and starts it (it subscribes in the background).
    pub fn start_new(config: SimAgentConfig) -> Self {
        let mut a = SimAgent {
            config,
            state: Arc::new(Mutex::new(State::default())),
            wake: Arc::new(Notify::new()),
            run: None,
        };
        a.start();
        a
    }

    /// (Re)starts the agent process: it subscribes again with its ID (if it has one) and
    /// reports its tasks. No-op if running.
    pub fn start(&mut self) {
        if self.run.is_some() {
            return;
        }
        let (cfg, state, wake) = (self.config.clone(), self.state.clone(), self.wake.clone());
        self.run = Some(tokio::spawn(run_agent(cfg, state, wake)));
    }

    /// Stops the agent process (crash or partition): the connection drops, nothing is
    /// sent, tasks and unacknowledged updates are kept.
    pub fn stop(&mut self) {
        if let Some(h) = self.run.take() {
            h.abort();
        }
        self.lock().connected = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The master-assigned ID, once subscribed.
    pub fn id(&self) -> Option<String> {
        self.lock().agent_id.clone()
    }

    /// Whether the subscription stream is open.
    pub fn connected(&self) -> bool {
        self.lock().connected
    }

    pub fn hostname(&self) -> &str {
        &self.config.hostname
    }

    /// Task id → state, for every task the agent knows.
    pub fn tasks(&self) -> BTreeMap<String, String> {
        self.lock()
            .tasks
            .iter()
            .map(|((_, t), s)| (t.clone(), s.state.clone()))
            .collect()
    }

    /// Number of status updates not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.lock().tasks.values().map(|t| t.pending.len()).sum()
    }

    /// Status update POSTs made so far, retries included.
    pub fn updates_sent(&self) -> u64 {
        self.lock().updates_sent
    }

    /// Ends a running task now as if its process exited with `exit_code`.
    pub fn finish_task(&self, task_id: &str, exit_code: i32) {
        let mut st = self.lock();
        if let Some(t) = st
            .tasks
            .values_mut()
            .find(|t| id_of(t.info.get("task_id")).as_deref() == Some(task_id))
        {
            t.ends_at = Some(Instant::now());
            t.exit_code = exit_code;
            t.hang = false;
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Waits until the agent is subscribed and returns its ID.
    pub async fn wait_subscribed(&self, deadline: Duration) -> anyhow::Result<String> {
        crate::wait_until("sim agent subscribed", deadline, async || {
            let st = self.lock();
            if st.connected {
                st.agent_id.clone()
            } else {
                None
            }
        })
        .await
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        if let Some(h) = self.run.take() {
            h.abort();
        }
    }
}

/// Queues a status update for a task (caller holds the lock).
fn push_update(
    st: &mut State,
    key: &(String, String),
    state: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let agent_id = st.agent_id.clone();
    let Some(t) = st.tasks.get_mut(key) else {
        return;
    };
    let uuid = base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
    let mut s = json!({
        "task_id": {"value": key.1},
        "state": state,
        "source": "SOURCE_EXECUTOR",
        "timestamp": now_secs(),
        "uuid": uuid,
    });
    if let Some(a) = agent_id {
        s["agent_id"] = json!({"value": a});
    }
    if let Some(e) = t.executor.as_ref().and_then(|e| e.get("executor_id")) {
        s["executor_id"] = e.clone();
    }
    if state == "TASK_RUNNING" {
        s["container_status"] = json!({"network_infos": [{"ip_addresses": [{"protocol": "IPv4", "ip_address": "127.0.0.1"}]}]});
    }
    if let Some(r) = reason {
        s["reason"] = json!(r);
    }
    if let Some(m) = message {
        s["message"] = json!(m);
    }
    t.state = state.to_string();
    t.last_status = s.clone();
    t.pending.push_back(PendingUpdate {
        status: s,
        uuid,
        sent_at: None,
    });
}

fn launch(
    st: &mut State,
    cfg: &SimAgentConfig,
    framework_id: String,
    task: Value,
    executor: Option<Value>,
) {
    let Some(tid) = id_of(task.get("task_id")) else {
        return;
    };
    let key = (framework_id.clone(), tid);
    if st.tasks.contains_key(&key) {
        return;
    }
    let script = (cfg.script)(&task);
    st.tasks.insert(
        key.clone(),
        SimTask {
            framework_id,
            info: task,
            executor,
            state: "TASK_STAGING".into(),
            last_status: Value::Null,
            ends_at: None,
            exit_code: 0,
            hang: false,
            pending: VecDeque::new(),
        },
    );
    match script {
        Script::FailToStart(msg) => push_update(
            st,
            &key,
            "TASK_FAILED",
            Some("REASON_CONTAINER_LAUNCH_FAILED"),
            Some(&msg),
        ),
        Script::Hang => {
            push_update(st, &key, "TASK_RUNNING", None, None);
            st.tasks.get_mut(&key).expect("inserted").hang = true;
        }
        Script::Run {
            duration,
            exit_code,
        } => {
            push_update(st, &key, "TASK_RUNNING", None, None);
            let t = st.tasks.get_mut(&key).expect("inserted");
            t.ends_at = duration.map(|d| Instant::now() + d);
            t.exit_code = exit_code;
        }
    }
}

fn kill(st: &mut State, key: &(String, String)) {
    match st.tasks.get(key) {
        None => {
            // Unknown task: report it lost so the framework learns.
            st.tasks.insert(
                key.clone(),
                SimTask {
                    framework_id: key.0.clone(),
                    info: json!({"task_id": {"value": key.1}, "name": key.1}),
                    executor: None,
                    state: "TASK_LOST".into(),
                    last_status: Value::Null,
                    ends_at: None,
                    exit_code: 0,
                    hang: false,
                    pending: VecDeque::new(),
                },
            );
            push_update(
                st,
                key,
                "TASK_LOST",
                Some("REASON_TASK_UNKNOWN"),
                Some("Task is unknown to the agent"),
            );
        }
        Some(t) if t.hang || is_terminal(&t.state) => {}
        Some(_) => push_update(st, key, "TASK_KILLED", None, Some("Killed")),
    }
}

/// Handles one event from the master; returns PONG/other calls to send.
fn handle_event(st: &mut State, cfg: &SimAgentConfig, ev: &Value) -> Vec<Value> {
    let ty = ev.get("type").and_then(Value::as_str).unwrap_or("");
    let mut calls = Vec::new();
    match ty {
        "SUBSCRIBED" => {
            st.agent_id = id_of(ev.pointer("/subscribed/agent_id"));
            st.connected = true;
            let id = st.agent_id.clone();
            // Statuses queued before the ID was known get it now.
            for t in st.tasks.values_mut() {
                for p in t.pending.iter_mut() {
                    p.status["agent_id"] = json!({"value": id});
                    p.sent_at = None;
                }
            }
        }
        "PING" => calls.push(json!({"type": "PONG"})),
        "LAUNCH" => {
            let fid = id_of(ev.pointer("/launch/framework_info/id")).unwrap_or_default();
            if let Some(task) = ev.pointer("/launch/task") {
                launch(st, cfg, fid, task.clone(), None);
            }
        }
        "LAUNCH_GROUP" => {
            let fid = id_of(ev.pointer("/launch_group/framework_info/id")).unwrap_or_default();
            let exec = ev.pointer("/launch_group/executor").cloned();
            let tasks = ev
                .pointer("/launch_group/task_group/tasks")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for t in tasks {
                launch(st, cfg, fid.clone(), t, exec.clone());
            }
        }
        "KILL" => {
            let fid = id_of(ev.pointer("/kill/framework_id")).unwrap_or_default();
            let tid = id_of(ev.pointer("/kill/task_id")).unwrap_or_default();
            kill(st, &(fid, tid));
        }
        "SHUTDOWN_FRAMEWORK" => {
            let fid = id_of(ev.pointer("/shutdown_framework/framework_id")).unwrap_or_default();
            let keys: Vec<(String, String)> =
                st.tasks.keys().filter(|k| k.0 == fid).cloned().collect();
            for k in keys {
                if let Some(t) = st.tasks.get_mut(&k) {
                    t.hang = false;
                }
                kill(st, &k);
            }
        }
        "ACKNOWLEDGED" => {
            let fid = id_of(ev.pointer("/acknowledged/framework_id")).unwrap_or_default();
            let tid = id_of(ev.pointer("/acknowledged/task_id")).unwrap_or_default();
            let uuid = ev
                .pointer("/acknowledged/uuid")
                .and_then(Value::as_str)
                .unwrap_or("");
            let key = (fid, tid);
            if let Some(t) = st.tasks.get_mut(&key)
                && t.pending.front().is_some_and(|p| p.uuid == uuid)
            {
                t.pending.pop_front();
                for p in t.pending.iter_mut().take(1) {
                    p.sent_at = None;
                }
                if t.pending.is_empty() && is_terminal(&t.state) {
                    st.tasks.remove(&key);
                }
            }
        }
        "MESSAGE" => {
            // The simulated executor echoes framework messages back.
            calls.push(json!({"type": "MESSAGE", "message": ev["message"].clone()}));
        }
        "ERROR" => warn!(message = %ev["error"]["message"], "Master sent ERROR"),
        _ => debug!(event = %ty, "Ignoring event"),
    }
    calls
}

/// Moves time forward: ends tasks whose run time passed; returns the update calls due.
fn due_calls(st: &mut State, retry: Duration) -> Vec<Value> {
    let now = Instant::now();
    let ended: Vec<((String, String), i32)> = st
        .tasks
        .iter()
        .filter(|(_, t)| !t.hang && t.ends_at.is_some_and(|e| e <= now) && !is_terminal(&t.state))
        .map(|(k, t)| (k.clone(), t.exit_code))
        .collect();
    for (k, code) in ended {
        if let Some(t) = st.tasks.get_mut(&k) {
            t.ends_at = None;
        }
        if code == 0 {
            push_update(
                st,
                &k,
                "TASK_FINISHED",
                None,
                Some("Command exited with status 0"),
            );
        } else {
            push_update(
                st,
                &k,
                "TASK_FAILED",
                Some("REASON_COMMAND_EXECUTOR_FAILED"),
                Some(&format!("Command exited with status {code}")),
            );
        }
    }
    let Some(agent_id) = st.agent_id.clone() else {
        return Vec::new();
    };
    if !st.connected {
        return Vec::new();
    }
    let mut calls = Vec::new();
    for t in st.tasks.values_mut() {
        if let Some(p) = t.pending.front_mut()
            && p.sent_at.is_none_or(|s| now.duration_since(s) >= retry)
        {
            p.sent_at = Some(now);
            calls.push(json!({
                "type": "UPDATE",
                "agent_id": {"value": agent_id},
                "update": {"framework_id": {"value": t.framework_id}, "status": p.status},
            }));
        }
    }
    st.updates_sent += calls.len() as u64;
    calls
}

fn subscribe_call(st: &State, cfg: &SimAgentConfig) -> Value {
    let tasks: Vec<Value> = st
        .tasks
        .iter()
        .filter(|(_, t)| !t.last_status.is_null())
        .map(|((fid, _), t)| {
            let mut status = t.last_status.clone();
            if let Some(o) = status.as_object_mut() {
                o.remove("uuid");
            }
            let mut rt = json!({"framework_id": {"value": fid}, "task": t.info, "status": status});
            if let Some(e) = &t.executor {
                rt["executor"] = e.clone();
            }
            rt
        })
        .collect();
    let mut call = json!({
        "type": "SUBSCRIBE",
        "subscribe": {
            "agent_info": cfg.agent_info(st.agent_id.as_deref()),
            "tasks": tasks,
            "ip": "127.0.0.1",
            "version": "1.11.0",
        }
    });
    if let Some(id) = &st.agent_id {
        call["agent_id"] = json!({"value": id});
    }
    call
}

/// The agent protocol's path on a master.
const AGENT_PATH: &str = "/api/capstan/agent/v1";
/// Pause between subscription attempts (the real agent's first step too).
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// A stream without a record for this many ping intervals is dead.
const MISSED_PINGS: u32 = 10;

async fn run_agent(cfg: SimAgentConfig, state: Arc<Mutex<State>>, wake: Arc<Notify>) {
    let masters: Vec<String> = std::iter::once(cfg.master.clone())
        .chain(cfg.other_masters.iter().cloned())
        .collect();
    let client = MasterClient::for_masters(&masters, |c| {
        c.missed_heartbeats = MISSED_PINGS;
        c.credential = cfg.credential.clone();
    });
    let mut client = match client {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %Chain(&e), agent = %cfg.hostname, "Sim agent cannot build its master client");
            return;
        }
    };
    let never = CancellationToken::new();
    reconnect(
        Backoff::new(RECONNECT_DELAY, RECONNECT_DELAY),
        &never,
        async move || {
            let end = session(&mut client, &cfg, &state, &wake).await;
            state.lock().unwrap_or_else(|p| p.into_inner()).connected = false;
            match end {
                Ok(records) => SessionEnd::after(records),
                Err(e) => {
                    debug!(error = %format!("{e:#}"), agent = %cfg.hostname, "Sim agent session ended");
                    SessionEnd::after(0)
                }
            }
        },
    )
    .await;
}

/// One subscription; returns how many records it got once the master closed the stream.
async fn session(
    client: &mut MasterClient,
    cfg: &SimAgentConfig,
    state: &Arc<Mutex<State>>,
    wake: &Arc<Notify>,
) -> anyhow::Result<u64> {
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    let call = subscribe_call(&lock(), cfg);
    let mut sub = match client
        .subscribe(AGENT_PATH, serde_json::to_vec(&call)?)
        .await
    {
        Ok(sub) => sub,
        Err(e) => {
            if let Some((reqwest::StatusCode::FORBIDDEN, msg)) = e.refusal()
                && msg.contains("marked gone")
            {
                // Wipe state and register as a new agent.
                let mut st = lock();
                st.agent_id = None;
                st.tasks.clear();
            }
            return Err(e).context("subscribing");
        }
    };
    // Calls go where the subscription ended up (after a standby's redirect).
    let calls = client.calls(sub.leader(), AGENT_PATH, None);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        let mut outgoing = Vec::new();
        tokio::select! {
            record = sub.next() => {
                let Some(record) = record.context("reading stream")? else {
                    return Ok(sub.records());
                };
                let ev: Value = serde_json::from_slice(&record)?;
                if let Some(secs) = ev.pointer("/subscribed/ping_interval_seconds").and_then(Value::as_f64) {
                    sub.set_heartbeat_interval_secs(secs);
                }
                let mut st = lock();
                outgoing.extend(handle_event(&mut st, cfg, &ev));
                while let Some(record) = sub.next_ready().context("reading stream")? {
                    let ev: Value = serde_json::from_slice(&record)?;
                    outgoing.extend(handle_event(&mut st, cfg, &ev));
                }
            }
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        {
            let mut st = lock();
            outgoing.extend(due_calls(&mut st, cfg.update_retry));
        }
        let agent_id = lock().agent_id.clone();
        for mut c in outgoing {
            if c.get("agent_id").is_none()
                && let Some(id) = &agent_id
            {
                c["agent_id"] = json!({"value": id});
            }
            if let Err(e) = calls.send_json(serde_json::to_vec(&c)?).await {
                debug!(error = %Chain(&e), "Sim agent call failed");
                if e.status() == Some(reqwest::StatusCode::FORBIDDEN) {
                    return Err(e).context("master refused call");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_come_from_the_command_line() {
        let t = |c: &str| json!({"command": {"value": c}});
        assert_eq!(
            script_from_command(&t("sleep 2")),
            Script::Run {
                duration: Some(Duration::from_secs(2)),
                exit_code: 0
            }
        );
        assert_eq!(
            script_from_command(&t("exit 3")),
            Script::Run {
                duration: Some(Duration::ZERO),
                exit_code: 3
            }
        );
        assert!(matches!(
            script_from_command(&t("fail")),
            Script::FailToStart(_)
        ));
        assert_eq!(script_from_command(&t("hang")), Script::Hang);
        assert_eq!(
            script_from_command(&t("nginx")),
            Script::Run {
                duration: None,
                exit_code: 0
            }
        );
    }

    #[test]
    fn updates_are_resent_in_order_until_acknowledged() {
        let cfg = SimAgentConfig::new("http://x", "h");
        let mut st = State {
            agent_id: Some("A".into()),
            connected: true,
            ..State::default()
        };
        launch(
            &mut st,
            &cfg,
            "F".into(),
            json!({"task_id": {"value": "t"}, "command": {"value": "exit 0"}}),
            None,
        );
        let c1 = due_calls(&mut st, Duration::from_secs(60));
        // RUNNING is sent; FINISHED waits behind it.
        assert_eq!(c1.len(), 1);
        assert_eq!(c1[0]["update"]["status"]["state"], "TASK_RUNNING");
        assert!(due_calls(&mut st, Duration::from_secs(60)).is_empty());
        // A zero retry interval resends the same uuid.
        let again = due_calls(&mut st, Duration::ZERO);
        assert_eq!(
            again[0]["update"]["status"]["uuid"],
            c1[0]["update"]["status"]["uuid"]
        );
        let uuid = c1[0]["update"]["status"]["uuid"].clone();
        handle_event(
            &mut st,
            &cfg,
            &json!({"type":"ACKNOWLEDGED","acknowledged":{"framework_id":{"value":"F"},"task_id":{"value":"t"},"uuid": uuid}}),
        );
        let c2 = due_calls(&mut st, Duration::from_secs(60));
        assert_eq!(c2[0]["update"]["status"]["state"], "TASK_FINISHED");
        let uuid = c2[0]["update"]["status"]["uuid"].clone();
        handle_event(
            &mut st,
            &cfg,
            &json!({"type":"ACKNOWLEDGED","acknowledged":{"framework_id":{"value":"F"},"task_id":{"value":"t"},"uuid": uuid}}),
        );
        assert!(
            st.tasks.is_empty(),
            "acknowledged terminal tasks are forgotten"
        );
    }

    #[test]
    fn calls_match_the_agent_protocol_proto() {
        use capstan_proto::capstan::agent::v1 as pb;
        let cfg = SimAgentConfig::new("http://x", "h");
        let mut st = State {
            agent_id: Some("A".into()),
            connected: true,
            ..State::default()
        };
        launch(
            &mut st,
            &cfg,
            "F".into(),
            json!({"name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "A"}, "command": {"value": "sleep 1"}}),
            None,
        );
        let sub = subscribe_call(&st, &cfg);
        let parsed: pb::Call = capstan_proto::from_json(&sub).expect("SUBSCRIBE matches the proto");
        assert_eq!(parsed.subscribe.expect("subscribe").tasks.len(), 1);
        for c in due_calls(&mut st, Duration::ZERO) {
            let _: pb::Call = capstan_proto::from_json(&c).expect("UPDATE matches the proto");
        }
    }
}
