//! Python clients from PyPI, unmodified, for compatibility tests: a virtualenv under the
//! target directory, created once and shared by every crate's tests (a lock file serializes
//! concurrent set-ups).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where shared test environments live: `$CARGO_TARGET_DIR` or the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The python of a virtualenv with `pymesos` (and its pure-Python HTTP parser) installed,
/// created on first use (`python/pymesos_env.sh`).
pub async fn pymesos_python() -> anyhow::Result<PathBuf> {
    let venv = target_dir().join("pyenv");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pymesos_env.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(&venv)
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "pymesos virtualenv set-up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(venv.join("bin/python"))
}
