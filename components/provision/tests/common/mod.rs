//! What the provisioning tests share: the repository's folders, step timing, and this tree's
//! `.deb` (`packaging/build-deb.sh` with the testkit's `capstan` binary and no task images),
//! built once and reused while its inputs are unchanged (the package step costs 30-70 s).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use capstan_testkit::capstan_bin;
use capstan_testkit::machines::check;
use tokio::process::Command;
use tokio::time::Instant;

/// The repository's root folder.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Cargo's target folder (the tests keep their work under `<target>/capstan-provision/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// `<target>/capstan-provision/<name>`.
pub fn work_dir(name: &str) -> PathBuf {
    target_dir().join("capstan-provision").join(name)
}

/// Runs one step: prints its time (with --nocapture), and names the step in its error.
#[allow(clippy::print_stderr)] // the tests' progress report
pub async fn step<T>(name: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    let started = Instant::now();
    let result = work.await;
    let elapsed = started.elapsed();
    let verdict = if result.is_ok() { "ok" } else { "FAILED" };
    eprintln!(
        "[provision] {name}: {verdict} in {:.1} s",
        elapsed.as_secs_f64()
    );
    result.with_context(|| format!("step `{name}` failed after {elapsed:.1?}"))
}

/// Size and modification time of every file in `paths` (folders recursively), one per line: a
/// cheap stamp of a build's inputs.
pub fn stamp(paths: &[PathBuf]) -> Result<String> {
    fn walk(path: &Path, out: &mut String) -> Result<()> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out)?;
            }
        } else {
            let mtime = meta
                .modified()?
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            writeln!(out, "{} {} {mtime}", path.display(), meta.len())?;
        }
        Ok(())
    }
    let mut out = String::new();
    for p in paths {
        walk(p, &mut out)?;
    }
    Ok(out)
}

/// The one file with extension `ext` in `dir`.
pub fn only_file(dir: &Path, ext: &str) -> Result<PathBuf> {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        other => Err(anyhow!(
            "{} .{ext} files in {}: {other:?}",
            other.len(),
            dir.display()
        )),
    }
}

/// This tree's package without the task images, in `<target>/capstan-provision/deb/`; rebuilt
/// when the binary, `packaging/` or the workspace manifest changed since the last build.
pub async fn deb() -> Result<PathBuf> {
    let bin = capstan_bin()?;
    let out = work_dir("deb");
    let want = stamp(&[
        bin.clone(),
        repo().join("packaging"),
        repo().join("Cargo.toml"),
    ])?;
    let stamp_file = out.join(".stamp");
    if std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == want)
        && let Ok(deb) = only_file(&out, "deb")
    {
        return Ok(deb);
    }
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot empty {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let output = Command::new("bash")
        .arg(repo().join("packaging/build-deb.sh"))
        .current_dir(repo())
        .env("BIN", &bin)
        .env("NO_IMAGES", "1")
        .env("OUT", &out)
        .output()
        .await
        .context("cannot run packaging/build-deb.sh")?;
    check(
        &format!("BIN={} NO_IMAGES=1 packaging/build-deb.sh", bin.display()),
        output,
    )?;
    let deb = only_file(&out, "deb")?;
    std::fs::write(&stamp_file, want)?;
    Ok(deb)
}

/// `deb` as a newer package: the same contents with Debian revision `revision` (its
/// `Version: <upstream>-1` made `<upstream>-<revision>`), repacked with `dpkg-deb` (gzip -1:
/// seconds, where building the package again takes a minute), in
/// `<target>/capstan-provision/deb-r<revision>/`; for upgrade runs.
#[allow(dead_code)] // not every test binary upgrades
pub async fn newer_deb(deb: &Path, revision: u32) -> Result<PathBuf> {
    let out = work_dir(&format!("deb-r{revision}"));
    let want = stamp(&[deb.to_owned()])?;
    let stamp_file = out.join(".stamp");
    if std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == want)
        && let Ok(newer) = only_file(&out, "deb")
    {
        return Ok(newer);
    }
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot empty {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let tree = tempfile::tempdir()?;
    let root = tree.path().join("pkg");
    let output = Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb)
        .arg(&root)
        .output()
        .await
        .context("cannot run dpkg-deb")?;
    check("dpkg-deb -R", output)?;
    let control_path = root.join("DEBIAN/control");
    let control = std::fs::read_to_string(&control_path)?;
    let mut version = None;
    let control: String = control
        .lines()
        .map(|l| match l.strip_prefix("Version: ") {
            Some(v) => {
                let upstream = v.rsplit_once('-').map_or(v, |(u, _)| u);
                let newer = format!("{upstream}-{revision}");
                let line = format!("Version: {newer}");
                version = Some(newer);
                line
            }
            None => l.to_owned(),
        })
        .map(|l| l + "\n")
        .collect();
    let version = version.with_context(|| format!("no Version in {}", deb.display()))?;
    std::fs::write(&control_path, control)?;
    let newer = out.join(format!("capstan_{version}_amd64.deb"));
    let output = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "-z1", "-b"])
        .arg(&root)
        .arg(&newer)
        .output()
        .await
        .context("cannot run dpkg-deb")?;
    check("dpkg-deb -b", output)?;
    std::fs::write(&stamp_file, want)?;
    Ok(newer)
}
