//! Starting apps against a fake master, and small HTTP helpers.

use std::sync::Arc;
use std::time::Duration;

use capstan_apps::{Config, InMemoryStore, Server, ServerHandle, Store};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::fake_master::FakeMaster;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Apps {
    pub handle: Option<ServerHandle>,
    pub url: String,
    pub http: reqwest::Client,
}

impl Apps {
    pub async fn start(master: &FakeMaster) -> Apps {
        Apps::start_with_store(master, Arc::new(InMemoryStore::new())).await
    }

    pub async fn start_with_store(master: &FakeMaster, store: Arc<dyn Store>) -> Apps {
        Apps::start_on(&master.url(), store).await
    }

    /// Starts apps against the master at `master_url`.
    pub async fn start_on(master_url: &str, store: Arc<dyn Store>) -> Apps {
        let config = Config::for_tests(master_url);
        let handle = Server::start_with_store(config, store, CancellationToken::new())
            .await
            .expect("apps starts");
        let url = format!("http://{}", handle.local_addr());
        Apps {
            handle: Some(handle),
            url,
            http: capstan_http_client::client(),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    pub async fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, v)
    }

    pub async fn get(&self, path: &str) -> Value {
        let (s, _, v) = self.req(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, _, v) = self.req(reqwest::Method::POST, path, Some(body)).await;
        (s, v)
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, _, v) = self.req(reqwest::Method::PUT, path, Some(body)).await;
        (s, v)
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let (s, _, v) = self.req(reqwest::Method::DELETE, path, None).await;
        (s, v)
    }

    /// Waits until the app has `n` running tasks and no deployment.
    pub async fn wait_running(&self, id: &str, n: usize) -> Value {
        capstan_testkit::wait_until(&format!("{id} to run {n} tasks"), WAIT, async || {
            let (s, _, v) = self
                .req(reqwest::Method::GET, &format!("/v2/apps{id}"), None)
                .await;
            if s != 200 {
                return Err(anyhow::anyhow!("status {s}: {v}"));
            }
            let app = &v["app"];
            let running = app["tasks"]
                .as_array()
                .map(|t| t.iter().filter(|t| t["state"] == "TASK_RUNNING").count())
                .unwrap_or(0);
            let total = app["tasks"].as_array().map(Vec::len).unwrap_or(0);
            if running == n
                && total == n
                && app["deployments"].as_array().is_some_and(Vec::is_empty)
            {
                Ok(v["app"].clone())
            } else {
                Err(anyhow::anyhow!(
                    "{running} running of {total}, deployments {}",
                    app["deployments"]
                ))
            }
        })
        .await
        .expect("app converges")
    }

    pub async fn wait_no_deployments(&self) {
        capstan_testkit::wait_until("no deployments", WAIT, async || {
            let v = self.get("/v2/deployments").await;
            v.as_array().is_some_and(Vec::is_empty)
        })
        .await
        .expect("deployments finish");
    }
}

pub fn task_ids(app: &Value) -> Vec<String> {
    let mut v: Vec<String> = app["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}
