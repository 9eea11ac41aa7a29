//! A scripted containerizer for unit tests: what a task's container does is chosen by its
//! command (the shell command of a command task), so manager tests run without Docker or
//! child processes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{
    ContainerError, ContainerRef, Containerizer, LaunchError, LaunchSpec, Launched, Reattached,
    Termination,
};

/// What a container does.
#[derive(Debug, Clone, PartialEq)]
pub enum Script {
    /// The launch fails with this message.
    FailToStart(String),
    /// Runs for `run_for`, then exits with `code`.
    Exit { run_for: Duration, code: i64 },
    /// Runs until killed (then ends by SIGTERM).
    RunUntilKilled,
}

type Exit = watch::Sender<Option<Termination>>;

/// Runs scripted containers.
#[derive(Default)]
pub struct FakeContainerizer {
    /// By command.
    scripts: Mutex<HashMap<String, Script>>,
    /// Live or ended-but-not-destroyed containers, by container id.
    containers: Mutex<HashMap<String, Exit>>,
    kills: AtomicUsize,
    execs: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn exited(code: i64) -> Termination {
    Termination {
        exit_code: Some(code),
        signal: None,
        oom_killed: false,
        note: None,
    }
}

impl FakeContainerizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Containers running `command` follow `script`.
    pub fn script(&self, command: &str, script: Script) {
        lock(&self.scripts).insert(command.to_owned(), script);
    }

    /// A container that exists already (started by an earlier agent), still running.
    pub fn adopt(&self, container_id: &str) {
        let (tx, _) = watch::channel(None);
        lock(&self.containers).insert(container_id.to_owned(), tx);
    }

    /// How many kills were asked for.
    pub fn kills(&self) -> usize {
        self.kills.load(Ordering::SeqCst)
    }

    /// How many commands were run in containers (COMMAND health checks).
    pub fn execs(&self) -> usize {
        self.execs.load(Ordering::SeqCst)
    }

    /// How many containers are running.
    pub fn running(&self) -> usize {
        lock(&self.containers)
            .values()
            .filter(|tx| tx.borrow().is_none())
            .count()
    }

    fn exit_of(&self, container: &ContainerRef) -> Option<watch::Receiver<Option<Termination>>> {
        lock(&self.containers)
            .get(&container.container_id)
            .map(|tx| tx.subscribe())
    }

    fn do_launch(&self, container: &ContainerRef, spec: &LaunchSpec) -> Result<(), LaunchError> {
        let command = match spec {
            LaunchSpec::Process(p) => p.argv.last().cloned().unwrap_or_default(),
            LaunchSpec::Docker(_) => {
                return Err(LaunchError::Unsupported(
                    "the fake containerizer runs command tasks only".into(),
                ));
            }
        };
        let script = lock(&self.scripts)
            .get(&command)
            .cloned()
            .ok_or_else(|| LaunchError::Spawn(format!("no script for {command:?}")))?;
        let (tx, _) = watch::channel(None);
        match script {
            Script::FailToStart(message) => return Err(LaunchError::Spawn(message)),
            Script::RunUntilKilled => {}
            Script::Exit { run_for, code } => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(run_for).await;
                    tx.send_if_modified(|t| {
                        let first = t.is_none();
                        if first {
                            *t = Some(exited(code));
                        }
                        first
                    });
                });
            }
        }
        lock(&self.containers).insert(container.container_id.clone(), tx);
        Ok(())
    }
}

impl Containerizer for FakeContainerizer {
    fn launch<'a>(
        &'a self,
        container: &'a ContainerRef,
        spec: &'a LaunchSpec,
    ) -> BoxFuture<'a, Result<Launched, LaunchError>> {
        Box::pin(async move {
            self.do_launch(container, spec)?;
            Ok(Launched::default())
        })
    }

    fn reattach<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<Reattached, ContainerError>> {
        Box::pin(async move {
            Ok(match self.exit_of(container) {
                None => Reattached::Missing,
                Some(rx) => match rx.borrow().clone() {
                    Some(t) => Reattached::Exited(t),
                    None => Reattached::Running(Launched::default()),
                },
            })
        })
    }

    fn wait<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
        Box::pin(async move {
            let mut rx = self
                .exit_of(container)
                .ok_or_else(|| ContainerError::NotFound(container.container_id.clone()))?;
            let t = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| ContainerError::NotFound(container.container_id.clone()))?;
            Ok(t.clone().expect("waited for Some"))
        })
    }

    fn kill<'a>(
        &'a self,
        container: &'a ContainerRef,
        _grace: Duration,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        Box::pin(async move {
            self.kills.fetch_add(1, Ordering::SeqCst);
            if let Some(tx) = lock(&self.containers).get(&container.container_id) {
                tx.send_if_modified(|t| {
                    let first = t.is_none();
                    if first {
                        *t = Some(Termination {
                            exit_code: None,
                            signal: Some(15),
                            oom_killed: false,
                            note: None,
                        });
                    }
                    first
                });
            }
            Ok(())
        })
    }

    fn destroy<'a>(
        &'a self,
        container: &'a ContainerRef,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        Box::pin(async move {
            lock(&self.containers).remove(&container.container_id);
            Ok(())
        })
    }

    fn update<'a>(
        &'a self,
        _container: &'a ContainerRef,
        _cpus: f64,
        _mem_mb: f64,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        Box::pin(async { Ok(()) })
    }

    fn exec<'a>(
        &'a self,
        _container: &'a ContainerRef,
        _argv: Vec<String>,
        _env: Vec<(String, String)>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<i64, ContainerError>> {
        self.execs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(0) })
    }
}
