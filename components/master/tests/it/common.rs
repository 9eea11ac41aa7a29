use std::time::Duration;

use anyhow::{Context, bail};
use capstan_master::{Config, Server, ServerHandle};
use capstan_proto::recordio::RecordIoDecoder;
use capstan_testkit::sim_agent::{SimAgent, SimAgentConfig};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Master {
    pub handle: Option<ServerHandle>,
    pub base: String,
    pub client: reqwest::Client,
}

impl Master {
    pub async fn start() -> Self {
        Self::start_with(Config::for_tests()).await
    }

    pub async fn start_with(cfg: Config) -> Self {
        let handle = Server::start(cfg, CancellationToken::new())
            .await
            .expect("master starts");
        let base = format!("http://{}", handle.local_addr());
        Master {
            handle: Some(handle),
            base,
            client: capstan_http_client::client(),
        }
    }

    pub fn agent(&self, name: &str) -> SimAgent {
        SimAgent::start_new(SimAgentConfig::new(self.base.clone(), name))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("GET {path}: {}", r.status());
        }
        Ok(r.json().await?)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn operator(&self, body: Value) -> Value {
        let r = self.post_json("/api/v1", &body).await;
        assert_eq!(r.status(), 200, "operator call {body}");
        let bytes = r.bytes().await.expect("body");
        if bytes.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&bytes).expect("JSON answer")
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            tokio::spawn(h.shutdown());
        }
    }
}

/// Reads a RecordIO JSON stream into a channel.
pub fn spawn_reader(resp: reqwest::Response) -> (mpsc::UnboundedReceiver<Value>, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let h = tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut dec = RecordIoDecoder::default();
        while let Some(Ok(chunk)) = body.next().await {
            dec.push(&chunk);
            while let Ok(Some(rec)) = dec.next_record() {
                let v: Value = serde_json::from_slice(&rec).expect("JSON record");
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    (rx, h)
}

/// Waits for the next value matching `pred`; others are kept for later.
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Value>,
    backlog: Vec<Value>,
    reader: JoinHandle<()>,
}

impl EventStream {
    pub fn new(resp: reqwest::Response) -> Self {
        let (rx, reader) = spawn_reader(resp);
        EventStream {
            rx,
            backlog: Vec::new(),
            reader,
        }
    }

    pub async fn expect(
        &mut self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return Ok(self.backlog.remove(i));
        }
        let end = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(end, self.rx.recv()).await {
                Ok(Some(v)) if pred(&v) => return Ok(v),
                Ok(Some(v)) => self.backlog.push(v),
                Ok(None) => bail!(
                    "stream ended while waiting for {what}; saw {:?}",
                    self.backlog
                ),
                Err(_) => bail!("timed out waiting for {what}; saw {:?}", self.backlog),
            }
        }
    }

    /// Drops remembered events.
    pub fn clear(&mut self) {
        self.backlog.clear();
        while self.rx.try_recv().is_ok() {}
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

pub fn is_type(ty: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == ty
}

pub fn is_update(task: &'static str, state: &'static str) -> impl Fn(&Value) -> bool {
    move |v| {
        v["type"] == "UPDATE"
            && v["update"]["status"]["task_id"]["value"] == task
            && v["update"]["status"]["state"] == state
    }
}

/// A scheduler speaking the v1 HTTP API.
pub struct Sched {
    pub base: String,
    pub client: reqwest::Client,
    pub framework_id: String,
    pub stream_id: String,
    pub events: EventStream,
}

pub fn framework_info(name: &str, caps: &[&str], failover_timeout: f64) -> Value {
    json!({
        "user": "root", "name": name, "failover_timeout": failover_timeout,
        "capabilities": caps.iter().map(|c| json!({"type": c})).collect::<Vec<_>>(),
    })
}

impl Sched {
    pub async fn subscribe(m: &Master, info: Value) -> anyhow::Result<Self> {
        let mut call = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}});
        if let Some(id) = info.get("id") {
            call["framework_id"] = id.clone();
        }
        let resp = m
            .client
            .post(format!("{}/api/v1/scheduler", m.base))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(call.to_string())
            .send()
            .await?;
        if resp.status() != 200 {
            bail!("SUBSCRIBE answered {}", resp.status());
        }
        let stream_id = resp
            .headers()
            .get("Mesos-Stream-Id")
            .context("Mesos-Stream-Id header")?
            .to_str()?
            .to_string();
        let mut events = EventStream::new(resp);
        let sub = events.expect("SUBSCRIBED", is_type("SUBSCRIBED")).await?;
        let framework_id = sub["subscribed"]["framework_id"]["value"]
            .as_str()
            .context("framework id")?
            .to_string();
        Ok(Sched {
            base: m.base.clone(),
            client: m.client.clone(),
            framework_id,
            stream_id,
            events,
        })
    }

    pub async fn call(&self, mut call: Value) -> reqwest::Response {
        call["framework_id"] = json!({"value": self.framework_id});
        self.client
            .post(format!("{}/api/v1/scheduler", self.base))
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", &self.stream_id)
            .body(call.to_string())
            .send()
            .await
            .expect("call sent")
    }

    pub async fn call_ok(&self, call: Value) {
        let ty = call["type"].clone();
        let r = self.call(call).await;
        let s = r.status();
        assert!(
            s.is_success(),
            "{ty} answered {s}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Waits for an offer (optionally from a given agent) and returns it.
    pub async fn offer(&mut self) -> anyhow::Result<Value> {
        let ev = self.events.expect("OFFERS", is_type("OFFERS")).await?;
        let offers = ev["offers"]["offers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let first = offers.first().cloned().context("an offer")?;
        // Decline the others so they come back later.
        let rest: Vec<Value> = offers.iter().skip(1).map(|o| o["id"].clone()).collect();
        if !rest.is_empty() {
            self.call_ok(json!({"type":"DECLINE","decline":{"offer_ids": rest, "filters": {"refuse_seconds": 0}}})).await;
        }
        Ok(first)
    }

    pub async fn launch(&self, offer: &Value, task_id: &str, cmd: &str) {
        let task = task_info(offer, task_id, cmd, 0.1, 32.0);
        self.call_ok(json!({"type":"ACCEPT","accept":{
            "offer_ids": [offer["id"]],
            "operations": [{"type":"LAUNCH","launch":{"task_infos":[task]}}],
            "filters": {"refuse_seconds": 0}}}))
            .await;
    }

    pub async fn ack(&self, update: &Value) {
        let s = &update["update"]["status"];
        self.call_ok(json!({"type":"ACKNOWLEDGE","acknowledge":{
            "agent_id": s["agent_id"], "task_id": s["task_id"], "uuid": s["uuid"]}}))
            .await;
    }

    /// Waits for the task's update in `state` and acknowledges it if it carries a uuid.
    pub async fn expect_update(
        &mut self,
        task: &'static str,
        state: &'static str,
    ) -> anyhow::Result<Value> {
        let u = self
            .events
            .expect(&format!("{task} {state}"), is_update(task, state))
            .await?;
        if u["update"]["status"].get("uuid").is_some() {
            self.ack(&u).await;
        }
        Ok(u)
    }
}

pub fn task_info(offer: &Value, task_id: &str, cmd: &str, cpus: f64, mem: f64) -> Value {
    json!({
        "name": task_id, "task_id": {"value": task_id}, "agent_id": offer["agent_id"],
        "resources": [
            {"name":"cpus","type":"SCALAR","scalar":{"value": cpus}},
            {"name":"mem","type":"SCALAR","scalar":{"value": mem}},
        ],
        "command": {"value": cmd, "shell": true},
    })
}

pub fn is_update_with_reason(
    task: &'static str,
    state: &'static str,
    reason: &'static str,
) -> impl Fn(&Value) -> bool {
    move |v| is_update(task, state)(v) && v["update"]["status"]["reason"] == reason
}
