//! Compatibility: an unmodified pymesos scheduler from PyPI against the master.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;

use crate::common::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn pymesos_scheduler_launches_kills_and_reconciles_tasks() -> anyhow::Result<()> {
    let python = capstan_testkit::pymesos_python().await?;
    let m = Master::start().await;
    let agent = m.agent("a1");
    agent.wait_subscribed(WAIT).await?;
    let addr = m
        .handle
        .as_ref()
        .map(|h| h.local_addr())
        .context("running")?;
    let child = tokio::process::Command::new(python)
        .arg(dir().join("tests/pymesos/scheduler.py"))
        .arg(addr.to_string())
        .env("TEST_TIMEOUT", "30")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = child.wait_with_output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pymesos scheduler failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for needle in [
        "REGISTERED",
        "UPDATE short TASK_RUNNING",
        "UPDATE short TASK_FINISHED",
        "UPDATE long TASK_RUNNING",
        "UPDATE long TASK_KILLED",
        "UPDATE short TASK_FINISHED REASON_RECONCILIATION",
        "RESULT OK",
    ] {
        assert!(
            stdout.contains(needle),
            "missing {needle:?} in\n{stdout}\nstderr:\n{stderr}"
        );
    }
    // driver.stop() tears the framework down.
    capstan_testkit::wait_until("framework torn down", WAIT, async || {
        m.get("/master/state")
            .await
            .map(|s| s["completed_frameworks"].as_array().map(Vec::len) == Some(1))
            .unwrap_or(false)
    })
    .await?;
    Ok(())
}
