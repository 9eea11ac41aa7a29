//! Shared test plumbing: start an agent on port 0 with a per-test container label, build
//! TaskInfos from Mesos JSON, wait for task states, and check that no container is left.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use capstan_agent::config::DockerConfig;
use capstan_agent::{Config, Server, ServerHandle, TaskView};
use capstan_proto::mesos::v1::{TaskInfo, TaskState};
use capstan_testkit::{ContainerCleanup, TempDir, wait_until};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const FRAMEWORK: &str = "F-0000";
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A Docker client that speaks the engine's API version.
pub async fn docker() -> anyhow::Result<Docker> {
    let d = Docker::connect_with_local_defaults().context("connect to Docker")?;
    d.negotiate_version()
        .await
        .context("negotiate the Docker API version")
}

/// One scenario: a work dir, a container label, and the guarantee that its containers go.
pub struct Scope {
    pub dir: TempDir,
    pub cleanup: ContainerCleanup,
    pub docker: Docker,
}

impl Scope {
    pub async fn new() -> Scope {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let docker = docker().await.expect("Docker engine");
        for image in ["capstan/busybox", "capstan/http"] {
            docker
                .inspect_image(image)
                .await
                .unwrap_or_else(|e| panic!("image {image} is missing ({e}): run `make images`"));
        }
        Scope {
            dir: capstan_testkit::temp_dir().expect("temp dir"),
            cleanup: ContainerCleanup::new(),
            docker,
        }
    }

    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> Config {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            advertise_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            hostname: Some("agent-under-test".into()),
            work_dir: self.dir.path().to_path_buf(),
            docker: DockerConfig {
                extra_labels: self
                    .cleanup
                    .labels()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                pull_timeout: Duration::from_secs(20),
                ..Default::default()
            },
            default_kill_grace: Duration::from_secs(2),
            status_update_retry: Duration::from_secs(1),
            ..Default::default()
        }
    }

    pub async fn start(&self) -> ServerHandle {
        self.start_with(self.config()).await
    }

    pub async fn start_with(&self, config: Config) -> ServerHandle {
        Server::start(config, CancellationToken::new())
            .await
            .expect("agent starts")
    }

    /// Names of this scenario's containers (running or not).
    pub async fn containers(&self) -> Vec<String> {
        let filters = HashMap::from([("label".to_owned(), vec![self.cleanup.label()])]);
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .expect("list containers")
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .collect()
    }

    /// Fails unless every container of this scenario is gone (waiting briefly for removals).
    pub async fn assert_no_containers_left(&self) {
        wait_until(
            "no test container left",
            Duration::from_secs(30),
            async || {
                let left = self.containers().await;
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("still there: {left:?}"))
                }
            },
        )
        .await
        .unwrap();
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Safety net for failed tests (the testkit guard's client may not match the engine).
        let label = self.cleanup.label();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let d = docker().await.ok()?;
                let filters = HashMap::from([("label".to_owned(), vec![label])]);
                let list = d
                    .list_containers(Some(ListContainersOptions {
                        all: true,
                        filters: Some(filters),
                        ..Default::default()
                    }))
                    .await
                    .ok()?;
                for c in list.into_iter().filter_map(|c| c.id) {
                    let _ = d
                        .remove_container(
                            &c,
                            Some(RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            }),
                        )
                        .await;
                }
                Some(())
            })
        })
        .join();
    }
}

/// A TaskInfo from Mesos JSON; `resources` default to 0.1 cpus and 32 MB.
pub fn task(id: &str, extra: Value) -> TaskInfo {
    let mut t = json!({
        "name": id,
        "task_id": {"value": id},
        "agent_id": {"value": "ignored"},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}
        ]
    });
    for (k, v) in extra.as_object().expect("object") {
        t[k] = v.clone();
    }
    capstan_proto::from_json(&t).expect("valid TaskInfo JSON")
}

/// A Docker task running `command` (shell) in `image` with HOST networking.
pub fn docker_task(id: &str, image: &str, command: Option<&str>) -> TaskInfo {
    let mut extra = json!({"container": {"type": "DOCKER", "docker": {"image": image}}});
    if let Some(c) = command {
        extra["command"] = json!({"value": c});
    }
    task(id, extra)
}

/// `ports` resource JSON for the given ports.
pub fn ports_resource(ports: &[u16]) -> Value {
    let ranges: Vec<Value> = ports
        .iter()
        .map(|p| json!({"begin": p, "end": p}))
        .collect();
    json!({"name": "ports", "type": "RANGES", "ranges": {"range": ranges}})
}

/// Waits until the task is in `state`; fails early if it reaches another terminal state.
/// Launches [`docker_task`] on `agent` for [`FRAMEWORK`].
pub async fn launch_docker(agent: &ServerHandle, id: &str, image: &str, command: Option<&str>) {
    agent
        .tasks()
        .launch(FRAMEWORK, docker_task(id, image, command))
        .await
        .unwrap();
}

pub async fn wait_state(agent: &ServerHandle, task_id: &str, state: TaskState) -> TaskView {
    let what = format!("task {task_id} in {}", state.as_str_name());
    wait_until(&what, DEADLINE, async || {
        let snap = agent.tasks().snapshot();
        let Some(t) = snap.task(task_id) else {
            bail!("unknown task");
        };
        if t.state == state {
            return Ok(Ok(t.clone()));
        }
        if capstan_agent::manager::is_terminal(t.state) {
            let msg = t
                .statuses
                .last()
                .and_then(|s| s.message.clone())
                .unwrap_or_default();
            return Ok(Err(anyhow::anyhow!(
                "task {task_id} ended in {} instead: {msg}",
                t.state.as_str_name()
            )));
        }
        bail!("state is {}", t.state.as_str_name())
    })
    .await
    .unwrap()
    .unwrap()
}

/// The last status message of a task.
pub fn last_message(t: &TaskView) -> String {
    t.statuses
        .last()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

/// The contents of a sandbox file.
pub fn sandbox_file(t: &TaskView, name: &str) -> String {
    std::fs::read_to_string(t.container.sandbox.join(name)).unwrap_or_default()
}
