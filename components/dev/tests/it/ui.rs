//! The web console on a dev cluster, in a real browser: `components/ui/e2e/console.mjs`
//! (Debian's `chromium` driven by `playwright-core`) against the cluster's router with the
//! first administrator's credentials — log in, create an app from the form until it is
//! healthy, scale it, follow its log, install a catalog package with one click and open its
//! `/service/` page, roll back a version, see a killed task replaced, and see the
//! broken-stream banner when the apps daemon (the event stream's source) is killed and the
//! console recover. The screenshots land in `target/ui-screenshots` (or `$UI_SCREENSHOTS`);
//! on failure the test fails with node's output and the daemons' logs.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, ensure};

use super::{DevCluster, ONE_AT_A_TIME, text};

#[tokio::test(flavor = "multi_thread")]
async fn the_console_passes_its_browser_scenarios_on_a_dev_cluster() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = tokio::task::spawn_blocking(|| DevCluster::up(1, 2, 1)).await??;
    let status = cluster.status()?;
    let router = status["router"]
        .as_str()
        .with_context(|| format!("status has no router: {status:#}"))?
        .to_owned();
    let uid = status["admin"]["uid"]
        .as_str()
        .unwrap_or("admin")
        .to_owned();
    let password = status["admin"]["password"]
        .as_str()
        .with_context(|| format!("status has no admin password: {status:#}"))?
        .to_owned();

    // The broken-stream scenario kills the apps daemon (the event stream's source); the dev
    // supervisor starts it again.
    let apps_pid = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["daemons"].as_array().into_iter().flatten())
        .find(|d| d["name"] == "apps")
        .and_then(|d| d["pid"].as_u64())
        .with_context(|| format!("status has no apps daemon pid: {status:#}"))?;

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let e2e = root.join("components/ui/e2e");
    let shots = std::env::var_os("UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/ui-screenshots"));
    ensure!(
        e2e.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in {}",
        e2e.display()
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("console.mjs")
            .current_dir(&e2e)
            .env("CAPSTAN_URL", &router)
            .env("CAPSTAN_USER", &uid)
            .env("CAPSTAN_PASSWORD", &password)
            .env("UI_SCREENSHOTS", &shots)
            .env("UI_BREAK_STREAM_PID", apps_pid.to_string())
            .output()
            .context("running node (is nodejs installed?)")
    })
    .await??;
    let stdout = text(&out.stdout);
    // The scenarios' progress, shown with --nocapture.
    #[allow(clippy::print_stdout)]
    {
        println!("{stdout}");
    }
    ensure!(
        out.status.success(),
        "the browser scenarios failed ({}):\n{stdout}\n{}\n{}",
        out.status,
        text(&out.stderr),
        cluster.logs()
    );
    Ok(())
}
