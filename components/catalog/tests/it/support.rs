//! A catalog with a one-member coord and an apps daemon (in-memory store, no master: apps
//! are stored and deployments wait), and a client that speaks Cosmos's media types.

use std::sync::Arc;

use capstan_catalog::{Config, Server, ServerHandle};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct Cluster {
    pub catalog: Option<ServerHandle>,
    pub apps: Option<capstan_apps::ServerHandle>,
    pub coord: Option<capstan_coord::ServerHandle>,
    pub url: String,
    pub apps_url: String,
    pub coord_url: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A Cosmos answer: status, Content-Type and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

pub fn media(name: &str, version: &str) -> String {
    format!("application/vnd.dcos.{name}+json;charset=utf-8;version={version}")
}

/// The test catalog's largest image upload.
pub const MAX_IMAGE_BYTES: u64 = 1024 * 1024;

pub const ERROR: &str = "application/vnd.dcos.package.error+json;charset=utf-8;version=v1";

impl Cluster {
    pub async fn start() -> Cluster {
        let dir = capstan_testkit::temp_dir().expect("temp dir");
        let coord =
            capstan_coord::Server::start_single(dir.path().join("coord"), CancellationToken::new())
                .await
                .expect("coord starts");
        let addr = coord.local_addr();
        let coord_url = format!("http://{addr}");

        // Port 1 refuses: apps keeps retrying the master while it serves its API.
        let apps_cfg = capstan_apps::Config::for_tests("127.0.0.1:1");
        let apps = capstan_apps::Server::start_with_store(
            apps_cfg,
            Arc::new(capstan_apps::InMemoryStore::new()),
            CancellationToken::new(),
        )
        .await
        .expect("apps starts");
        let apps_url = format!("http://{}", apps.local_addr());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = Config {
            listen: listener.local_addr().unwrap(),
            coord_endpoints: vec![coord_url.clone()],
            coord_prefix: "/test/catalog".into(),
            // An unreachable instance first: the catalog falls through to the next.
            apps: vec!["127.0.0.1:1".into(), apps_url.clone()],
            images_dir: dir.path().join("images"),
            max_image_bytes: MAX_IMAGE_BYTES,
            ..Config::default()
        };
        let catalog = Server::start_on(config, listener, CancellationToken::new())
            .await
            .expect("catalog starts");
        let url = format!("http://{}", catalog.local_addr());
        Cluster {
            catalog: Some(catalog),
            apps: Some(apps),
            coord: Some(coord),
            url,
            apps_url,
            coord_url,
            http: capstan_http_client::client(),
            _dir: dir,
        }
    }

    /// POSTs `body` to `/package/<endpoint>` as the CLI does: request type v1, `accept`.
    pub async fn call_with(&self, endpoint: &str, accept: &str, body: Value) -> Answer {
        let name = format!("package.{}", endpoint.replace('/', "."));
        let resp = self
            .http
            .post(format!("{}/package/{endpoint}", self.url))
            .header("Content-Type", media(&format!("{name}-request"), "v1"))
            .header("Accept", accept)
            .body(body.to_string())
            .send()
            .await
            .expect("catalog answers");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            content_type,
            body,
        }
    }

    /// As [`Cluster::call_with`] with the response type `dcos package` asks for.
    pub async fn call(&self, endpoint: &str, version: &str, body: Value) -> Answer {
        let name = format!("package.{}", endpoint.replace('/', "."));
        let accept = media(&format!("{name}-response"), version);
        let a = self.call_with(endpoint, &accept, body).await;
        if a.status < 300 {
            assert!(
                a.content_type.contains(&accept),
                "{endpoint}: Content-Type {} does not contain {accept}",
                a.content_type
            );
        }
        a
    }

    pub async fn marathon_apps(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/v2/apps", self.apps_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["apps"].as_array().cloned().unwrap_or_default()
    }

    pub async fn stop(mut self) {
        if let Some(c) = self.catalog.take() {
            c.shutdown().await;
        }
        if let Some(a) = self.apps.take() {
            let _ = a.shutdown().await;
        }
        if let Some(c) = self.coord.take() {
            let _ = c.shutdown().await;
        }
    }
}
