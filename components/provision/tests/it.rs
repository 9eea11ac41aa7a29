//! Runs the repository's provisioning checks as tests: each script prints its steps and ends
//! with "... checks: ok"; a failure shows the whole output.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `bash <script>` from the repository root and returns its stdout, or fails with both
/// streams.
fn run_script(script: &str, ok_line: &str) -> anyhow::Result<String> {
    let path = repo().join(script);
    let out = Command::new("bash")
        .arg(&path)
        .current_dir(repo())
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stdout.lines().any(|l| l == ok_line) {
        bail!(
            "{script} exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
    }
    Ok(stdout)
}

#[test]
fn terraform_modules_pass_fmt_validate_test_and_structure_checks() -> anyhow::Result<()> {
    let out = run_script("terraform/test.sh", "terraform checks: ok")?;
    assert!(
        out.lines()
            .any(|l| l.starts_with("Success! ") && l.ends_with(" passed, 0 failed.")),
        "terraform test's summary is missing:\n{out}"
    );
    Ok(())
}

#[test]
fn ansible_playbook_passes_syntax_check_and_lint() -> anyhow::Result<()> {
    run_script("ansible/test.sh", "ansible checks: ok")?;
    Ok(())
}
