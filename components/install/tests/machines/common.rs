//! What the scenarios share: the `.deb` (built once per run), step timing, JSON and token
//! helpers, and the unit lists of each role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use capstan_testkit::machines::{Machine, check};
use serde_json::Value;
use tokio::process::Command;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// Units that run on every master, the role target included.
pub const MASTER_UNITS: &[&str] = &[
    "capstan-coord.service",
    "capstan-master.service",
    "capstan-apps.service",
    "capstan-dns.service",
    "capstan-bootstrap.service",
    "capstan-router.service",
    "capstan-catalog.service",
    "capstan-swarm.service",
    "capstan-l4lb.service",
    "capstan-upgrade.path",
    "capstan-master.target",
];

/// Units that run on every agent (its Docker engine included).
pub const AGENT_UNITS: &[&str] = &[
    "capstan-agent.service",
    "capstan-l4lb.service",
    "capstan-bootstrap.service",
    "capstan-upgrade.path",
    "capstan-agent.target",
    "docker.service",
];

/// How long a node may take to install and join (package, images, units, registration).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(180);

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs one step of a scenario: prints its time, and names the step in its error.
#[allow(clippy::print_stderr)] // the suite's progress report, shown with --nocapture
pub async fn step<T>(name: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    let started = Instant::now();
    let result = work.await;
    let elapsed = started.elapsed();
    let verdict = if result.is_ok() { "ok" } else { "FAILED" };
    eprintln!(
        "[machines] {name}: {verdict} in {:.1} s",
        elapsed.as_secs_f64()
    );
    result.with_context(|| format!("step `{name}` failed after {elapsed:.1?}"))
}

/// Prints a fact worth seeing in the suite's log (with --nocapture).
#[allow(clippy::print_stderr)] // the suite's progress report
pub fn note(what: &str, text: &str) {
    eprintln!("[machines]   {what}: {}", text.trim());
}

/// The `.deb` of this tree: `packaging/build-deb.sh` with `BIN=` the testkit's `capstan`
/// binary and the images included, built once per test run into
/// `target/<profile>/capstan-test-machines/deb/`.
pub async fn deb() -> Result<PathBuf> {
    static DEB: OnceCell<PathBuf> = OnceCell::const_new();
    DEB.get_or_try_init(|| build_deb(1)).await.cloned()
}

/// The same tree packaged as the next Debian revision (`<version>-2`): what an upgrade
/// installs over [`deb`].
pub async fn upgrade_deb() -> Result<PathBuf> {
    static DEB: OnceCell<PathBuf> = OnceCell::const_new();
    DEB.get_or_try_init(|| build_deb(2)).await.cloned()
}

async fn build_deb(revision: u32) -> Result<PathBuf> {
    let script = repo_root().join("packaging/build-deb.sh");
    if !script.is_file() {
        bail!(
            "{} does not exist (the packaging part of issue #13)",
            script.display()
        );
    }
    let bin = capstan_testkit::capstan_bin()?;
    let out = bin
        .parent()
        .context("the capstan binary has no folder")?
        .join(format!("capstan-test-machines/deb-{revision}"));
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot empty {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let output = Command::new("bash")
        .arg(&script)
        .current_dir(repo_root())
        .env("BIN", &bin)
        .env("NO_IMAGES", "0")
        .env("DEB_REVISION", revision.to_string())
        .env("OUT", &out)
        .output()
        .await
        .with_context(|| format!("cannot run {}", script.display()))?;
    check(
        &format!(
            "BIN={} NO_IMAGES=0 OUT={} {}",
            bin.display(),
            out.display(),
            script.display()
        ),
        output,
    )?;
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    match debs.as_slice() {
        [one] => Ok(one.clone()),
        other => bail!(
            "build-deb.sh left {} .deb files in {}: {other:?}",
            other.len(),
            out.display()
        ),
    }
}

/// The JSON object a command printed: all of stdout, or else its last line that is one.
pub fn json_from(stdout: &str) -> Result<Value> {
    if let Ok(v @ Value::Object(_)) = serde_json::from_str(stdout.trim()) {
        return Ok(v);
    }
    stdout
        .lines()
        .rev()
        .find_map(|l| match serde_json::from_str(l.trim()) {
            Ok(v @ Value::Object(_)) => Some(v),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no JSON object in the output:\n{stdout}"))
}

/// `v[a][b]...` as a string, or an error naming the path and quoting `v`.
pub fn str_at<'v>(v: &'v Value, path: &[&str]) -> Result<&'v str> {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_str)
        .with_context(|| format!("no string at {} in {v:#}", path.join(".")))
}

/// The id of a join token `CSTN1<ca-hash>::<id>.<secret>`.
pub fn token_id(token: &str) -> Result<&str> {
    token
        .split_once("::")
        .and_then(|(_, rest)| rest.split_once('.'))
        .map(|(id, _)| id)
        .with_context(|| format!("{token:?} is not a CSTN1<hash>::<id>.<secret> token"))
}

/// `token` with another CA hash (each hex digit of the hash shifted by one): what a token of
/// another cluster looks like to this one.
pub fn token_for_other_ca(token: &str) -> Result<String> {
    let rest = token
        .strip_prefix("CSTN1")
        .with_context(|| format!("{token:?} does not start with CSTN1"))?;
    let (hash, secret) = rest
        .split_once("::")
        .with_context(|| format!("{token:?} has no ::"))?;
    let other: String = hash
        .chars()
        .map(|c| {
            let d = c.to_digit(16).unwrap_or(0);
            char::from_digit((d + 1) % 16, 16).unwrap_or('0')
        })
        .collect();
    Ok(format!("CSTN1{other}::{secret}"))
}

/// The one line, as an operator types it on a fresh node.
pub fn one_line(master: &Machine, role: &str, token: &str) -> String {
    format!(
        "curl -fsSL http://{}/install.sh | sh -s -- --role {role} --join '{token}'",
        master.ip()
    )
}

/// Runs the one line on `node`; the error quotes its output and the journals of `units`.
pub async fn install_with_one_line(
    node: &Machine,
    master: &Machine,
    role: &str,
    token: &str,
    units: &[&str],
) -> Result<String> {
    let line = one_line(master, role, token);
    let r = node.sh(&line).await;
    // The Capstan units' journals; docker's own is noise here.
    let capstan: Vec<&str> = units
        .iter()
        .copied()
        .filter(|u| u.starts_with("capstan-"))
        .collect();
    node.with_journal(&capstan, r).await
}

/// Waits until every unit in `units` is active on `node`.
pub async fn all_active(node: &Machine, units: &[&str]) -> Result<()> {
    for unit in units {
        node.wait_active(unit, Duration::from_secs(60)).await?;
    }
    Ok(())
}

/// `dig +short @server name` from `node`: the answer lines.
pub async fn dig(node: &Machine, server: &str, args: &[&str]) -> Result<Vec<String>> {
    let at = format!("@{server}");
    let mut full = vec!["dig", at.as_str(), "+short", "+time=2", "+tries=1"];
    full.extend_from_slice(args);
    let out = node.exec_ok(&full).await?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_ca_changes_only_the_hash() {
        let hash = "0123456789abcdef".repeat(4);
        let token = format!("CSTN1{hash}::0a1b2c3d.{}", "f".repeat(32));
        let other = token_for_other_ca(&token).unwrap();
        assert_ne!(other, token);
        assert_eq!(other.len(), token.len());
        assert!(
            other.starts_with(&format!("CSTN1{}", "123456789abcdef0".repeat(4))),
            "{other}"
        );
        assert!(
            other.ends_with(&format!("::0a1b2c3d.{}", "f".repeat(32))),
            "{other}"
        );
        assert_eq!(token_id(&token).unwrap(), "0a1b2c3d");
    }

    #[test]
    fn json_is_found_after_other_output() {
        let v = json_from("Installing...\n{\"url\":\"https://m\"}\n").unwrap();
        assert_eq!(str_at(&v, &["url"]).unwrap(), "https://m");
        assert!(json_from("no json").is_err());
    }
}
