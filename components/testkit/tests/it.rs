//! testkit against the real Docker engine: image checks and test-container cleanup.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
};
use capstan_testkit::{
    ContainerCleanup, TEST_LABEL, docker, ensure_image, remove_stale_test_containers,
    remove_test_containers,
};

/// A tiny image made here from the host's static busybox, so these tests do not depend on
/// `make images`. Imported once per test process.
const TEST_IMAGE: &str = "capstan-testkit/busybox:test";

fn test_image() -> &'static str {
    static IMPORTED: OnceLock<()> = OnceLock::new();
    IMPORTED.get_or_init(|| {
        let present = Command::new("docker")
            .args(["image", "inspect", TEST_IMAGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run docker")
            .success();
        if present {
            return;
        }
        assert!(
            std::path::Path::new("/bin/busybox").is_file(),
            "these tests need a static /bin/busybox (apt-get install busybox-static)"
        );
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.path().join("bin/busybox")).unwrap();
        let script = format!(
            "tar -C {} -cf - . | docker import --change 'CMD [\"/bin/busybox\", \"sleep\", \"600\"]' - {TEST_IMAGE}",
            rootfs.path().display()
        );
        let out = Command::new("sh").args(["-c", &script]).output().expect("run sh");
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    TEST_IMAGE
}

async fn labelled_containers(docker: &Docker, label: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![label.to_owned()])]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

async fn run_sleeper(docker: &Docker, labels: HashMap<String, String>) -> String {
    let body = ContainerCreateBody {
        image: Some(test_image().to_owned()),
        labels: Some(labels),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::new().build()), body)
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    created.id
}

#[tokio::test]
async fn ensure_image_accepts_a_present_image() {
    let docker = docker().unwrap();
    ensure_image(&docker, test_image()).await.unwrap();
}

#[tokio::test]
async fn ensure_image_says_make_images_when_an_image_is_missing() {
    let docker = docker().unwrap();
    let err = ensure_image(&docker, "capstan/does-not-exist:never")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("capstan/does-not-exist:never"), "{err}");
    assert!(err.contains("run `make images`"), "{err}");
}

#[tokio::test]
async fn cleanup_guard_removes_its_labelled_containers_on_drop() {
    let docker = docker().unwrap();
    let scope = ContainerCleanup::new();
    let label = scope.label();
    assert_eq!(label, format!("{TEST_LABEL}={}", scope.run_id()));
    let id = run_sleeper(&docker, scope.labels()).await;
    let state = docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    assert_eq!(state.state.and_then(|s| s.running), Some(true));
    assert_eq!(labelled_containers(&docker, &label).await, vec![id]);

    drop(scope);
    assert!(labelled_containers(&docker, &label).await.is_empty());
}

#[tokio::test]
async fn cleanup_of_one_scope_leaves_other_scopes_alone() {
    let docker = docker().unwrap();
    let mine = ContainerCleanup::new();
    let theirs = ContainerCleanup::new();
    assert_ne!(mine.run_id(), theirs.run_id());
    run_sleeper(&docker, mine.labels()).await;
    let survivor = run_sleeper(&docker, theirs.labels()).await;

    let removed = remove_test_containers(&docker, mine.run_id())
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(labelled_containers(&docker, &mine.label()).await.is_empty());
    assert_eq!(
        labelled_containers(&docker, &theirs.label()).await,
        vec![survivor]
    );
}

#[tokio::test]
async fn cleanup_runs_even_when_the_test_panics() {
    let docker = docker().unwrap();
    let scope = ContainerCleanup::new();
    let label = scope.label();
    let labels = scope.labels();
    let handle = tokio::spawn(async move {
        let _scope = scope;
        run_sleeper(&capstan_testkit::docker().unwrap(), labels).await;
        panic!("test body failed");
    });
    assert!(handle.await.unwrap_err().is_panic());
    assert!(labelled_containers(&docker, &label).await.is_empty());
}

#[tokio::test]
async fn stale_sweep_removes_containers_of_dead_test_processes_only() {
    let docker = docker().unwrap();
    let live = ContainerCleanup::new();
    // Pids never exceed 2^22, so this run id's owner cannot be alive.
    let dead = ContainerCleanup::for_run_id("99999999-0-1");
    let survivor = run_sleeper(&docker, live.labels()).await;
    run_sleeper(&docker, dead.labels()).await;

    assert!(remove_stale_test_containers(&docker).await.unwrap() >= 1);
    assert!(labelled_containers(&docker, &dead.label()).await.is_empty());
    assert_eq!(
        labelled_containers(&docker, &live.label()).await,
        vec![survivor]
    );
}
