//! Docker Engine helpers for tests: a client, image checks, and the test label every container
//! a test creates must carry so [`ContainerCleanup`] can remove them all, even after a panic.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use tracing::{debug, warn};

/// Label key on every container a test creates; its value is a [`ContainerCleanup`]'s run id,
/// so the label reads `capstan.test=<run id>`.
pub const TEST_LABEL: &str = "capstan.test";

/// A run id unique to this call: pid, process start time and a counter. Tests in one binary
/// run in parallel, so each cleanup guard needs its own id.
fn new_run_id() -> String {
    static PROCESS: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let process = PROCESS.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{}-{:x}", std::process::id(), nanos)
    });
    format!("{process}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The Engine API version tests speak: 1.41 (Docker 20.10, Debian 12's `docker.io`). Newer
/// engines still accept it; bollard's own default is newer than Debian's engine supports.
pub const API_VERSION: &bollard::ClientVersion = &bollard::ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// A client for the local engine (`DOCKER_HOST` as a `unix://` path, else
/// `/var/run/docker.sock`), speaking [`API_VERSION`].
pub fn docker() -> anyhow::Result<Docker> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let socket = host
        .strip_prefix("unix://")
        .unwrap_or("/var/run/docker.sock");
    Docker::connect_with_local(socket, 120, API_VERSION)
        .context("cannot connect to the Docker engine")
}

/// Fails with "run `make images`" when `image` (e.g. `capstan/busybox`) is not built.
pub async fn ensure_image(docker: &Docker, image: &str) -> anyhow::Result<()> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(()),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => bail!("Docker image {image} is missing: run `make images` to build it"),
        Err(e) => Err(e).with_context(|| format!("cannot inspect Docker image {image}")),
    }
}

/// Force-removes every container (running or not) labelled `capstan.test=<run_id>`.
/// Returns how many were removed.
pub async fn remove_test_containers(docker: &Docker, run_id: &str) -> anyhow::Result<usize> {
    let filters = HashMap::from([("label", vec![format!("{TEST_LABEL}={run_id}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .context("cannot list test containers")?;
    let mut removed = 0;
    for id in containers.into_iter().filter_map(|c| c.id) {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => removed += 1,
            // Already gone (e.g. auto-removed): fine.
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove container {id}")),
        }
    }
    debug!(run_id, removed, "Removed test containers");
    Ok(removed)
}

/// Force-removes test containers left behind by test processes that no longer run (a test
/// binary killed before its guards dropped). Containers of live processes are left alone.
/// Returns how many were removed.
pub async fn remove_stale_test_containers(docker: &Docker) -> anyhow::Result<usize> {
    let filters = HashMap::from([("label", vec![TEST_LABEL.to_owned()])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .context("cannot list test containers")?;
    let mut stale_runs: Vec<String> = containers
        .into_iter()
        .filter_map(|c| c.labels?.remove(TEST_LABEL))
        .filter(|run_id| !owner_is_alive(run_id))
        .collect();
    stale_runs.sort();
    stale_runs.dedup();
    let mut removed = 0;
    for run_id in stale_runs {
        removed += remove_test_containers(docker, &run_id).await?;
    }
    Ok(removed)
}

/// Whether the process that made run id `<pid>-<start>-<n>` still runs. Ids that do not
/// parse are treated as alive, so nothing foreign is removed.
fn owner_is_alive(run_id: &str) -> bool {
    match run_id
        .split('-')
        .next()
        .and_then(|pid| pid.parse::<u32>().ok())
    {
        Some(pid) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        None => true,
    }
}

/// A test's container scope: label every container the test creates with
/// [`labels`](Self::labels) (or [`label`](Self::label)); dropping the guard force-removes them,
/// also when the test panicked. Each guard has its own run id, so parallel tests never remove
/// each other's containers.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// use capstan_testkit::bollard::models::ContainerCreateBody;
/// use capstan_testkit::{ContainerCleanup, docker};
///
/// let scope = ContainerCleanup::new();
/// let body = ContainerCreateBody {
///     image: Some("capstan/busybox".into()),
///     labels: Some(scope.labels()),
///     ..Default::default()
/// };
/// docker()?.create_container(None, body).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ContainerCleanup {
    run_id: String,
}

impl ContainerCleanup {
    pub fn new() -> Self {
        ContainerCleanup {
            run_id: new_run_id(),
        }
    }

    /// A scope for a given run id (e.g. to clean up after another process).
    pub fn for_run_id(run_id: &str) -> Self {
        ContainerCleanup {
            run_id: run_id.to_owned(),
        }
    }

    /// The value of [`TEST_LABEL`] for this scope.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// `capstan.test=<run id>`, as written in a Docker filter or `docker run --label`.
    pub fn label(&self) -> String {
        format!("{TEST_LABEL}={}", self.run_id)
    }

    /// `{capstan.test: <run id>}`, for a container create body's `labels`.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([(TEST_LABEL.to_owned(), self.run_id.clone())])
    }
}

impl Default for ContainerCleanup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside or outside a runtime: use a thread with its own.
        let run_id = self.run_id.clone();
        let cleanup = std::thread::spawn(move || -> anyhow::Result<usize> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async { remove_test_containers(&docker()?, &run_id).await })
        });
        match cleanup.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                warn!(run_id = %self.run_id, error = %format!("{e:#}"), "Test container cleanup failed")
            }
            Err(_) => warn!(run_id = %self.run_id, "Test container cleanup panicked"),
        }
    }
}
