//! One apps server against a fake master, and a client of it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use capstan_apps::{Config, InMemoryStore, Server, ServerHandle};
use capstan_marathon::{AppDefinition, Client, PathId, TaskState};
use tokio_util::sync::CancellationToken;

use crate::fake_master::FakeMaster;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Env {
    pub master: FakeMaster,
    pub handle: Option<ServerHandle>,
    pub client: Client,
}

impl Env {
    /// apps with an in-memory store and the test configuration, against a fake master with
    /// one agent.
    pub async fn start() -> Env {
        let master = FakeMaster::start(1).await;
        let handle = Server::start_with_store(
            Config::for_tests(&master.url()),
            Arc::new(InMemoryStore::new()),
            CancellationToken::new(),
        )
        .await
        .expect("apps starts");
        let client = Client::new(format!("http://{}", handle.local_addr()));
        Env {
            master,
            handle: Some(handle),
            client,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown().await;
        }
    }

    /// Waits until `id` has `n` running tasks, no others, and no deployment.
    pub async fn wait_running(&self, id: &PathId, n: usize) -> capstan_marathon::App {
        capstan_testkit::wait_until(&format!("{id} to run {n} tasks"), WAIT, async || {
            let app = self.client.get_app(id).await?;
            let tasks = app.tasks.as_deref().unwrap_or_default();
            let running = tasks
                .iter()
                .filter(|t| t.state == TaskState::Running)
                .count();
            if running == n && tasks.len() == n && app.deployments.is_empty() {
                Ok(app)
            } else {
                Err(anyhow!(
                    "{running} running of {}, deployments {:?}",
                    tasks.len(),
                    app.deployments
                ))
            }
        })
        .await
        .expect("the app converges")
    }

    pub async fn wait_no_deployments(&self) {
        capstan_testkit::wait_until("no deployments", WAIT, async || {
            let ds = self.client.list_deployments().await?;
            if ds.is_empty() {
                Ok(())
            } else {
                Err(anyhow!("{} deployments", ds.len()))
            }
        })
        .await
        .expect("deployments finish");
    }
}

/// A small command app.
pub fn sleeper(id: &str, instances: i64) -> AppDefinition {
    AppDefinition {
        id: PathId::parse(id),
        cmd: Some("sleep 1000".into()),
        instances,
        cpus: 0.1,
        mem: 16.0,
        ..AppDefinition::default()
    }
}
