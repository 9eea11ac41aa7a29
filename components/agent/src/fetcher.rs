//! The fetcher: downloads a task's `CommandInfo.uris` into its sandbox before launch, like
//! the Mesos fetcher. `http://` URLs are downloaded (no TLS in this build), plain paths and
//! `file://` URLs are copied; archives (`.tar`, `.tar.gz`/`.tgz`, `.tar.bz2`, `.tar.xz`,
//! `.zip`) are extracted when `extract` is set (the default); `executable` sets the mode.
//! The agent runs as root, so a local file is copied only from a host path the cluster's
//! container policy allows (judged as written and again after symlinks are resolved): a task
//! cannot fetch `/etc/shadow` into a sandbox its framework can read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_proto::mesos::v1::command_info::Uri;
use capstan_types::ContainerPolicy;
use tokio::io::AsyncWriteExt;

/// Per-URI download limit.
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a URI could not be fetched; the message names the URI.
#[derive(Debug, thiserror::Error)]
#[error("Failed to fetch {uri}: {reason}")]
pub struct FetchError {
    pub uri: String,
    pub reason: String,
}

/// The file name a URI is saved as: `output_file`, else the last path segment.
pub fn target_name(uri: &Uri) -> Option<String> {
    if let Some(out) = uri.output_file.as_deref().filter(|o| !o.is_empty()) {
        return Some(out.to_owned());
    }
    let path = uri.value.split(['?', '#']).next().unwrap_or_default();
    path.rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "..")
        .map(str::to_owned)
}

/// How an archive is unpacked, from its name.
pub fn archive_kind(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    if n.ends_with(".zip") {
        Some("zip")
    } else if [
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz",
    ]
    .iter()
    .any(|s| n.ends_with(s))
    {
        Some("tar")
    } else {
        None
    }
}

/// Fetches every URI into `sandbox`, in order.
pub async fn fetch_all(
    uris: &[Uri],
    sandbox: &Path,
    policy: &ContainerPolicy,
) -> Result<(), FetchError> {
    if uris.is_empty() {
        return Ok(());
    }
    let client = capstan_http_client::builder()
        .no_proxy()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| FetchError {
            uri: String::new(),
            reason: e.to_string(),
        })?;
    for uri in uris {
        fetch_one(&client, uri, sandbox, policy)
            .await
            .map_err(|reason| FetchError {
                uri: uri.value.clone(),
                reason,
            })?;
    }
    Ok(())
}

async fn fetch_one(
    client: &reqwest::Client,
    uri: &Uri,
    sandbox: &Path,
    policy: &ContainerPolicy,
) -> Result<(), String> {
    let name = target_name(uri).ok_or("cannot tell the file name")?;
    if name.contains('/') {
        return Err(format!("output file `{name}` must be a plain file name"));
    }
    let dest: PathBuf = sandbox.join(&name);
    let value = uri.value.as_str();
    if value.starts_with("http://") {
        let resp = client.get(value).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("server answered {}", resp.status()));
        }
        let mut file = tokio::fs::File::create(&dest)
            .await
            .map_err(|e| e.to_string())?;
        let mut resp = resp;
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
    } else if let Some(path) = value
        .strip_prefix("file://")
        .or(value.starts_with('/').then_some(value))
    {
        policy.check_host_path(path)?;
        let real = tokio::fs::canonicalize(path)
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        policy.check_host_path(&real.to_string_lossy())?;
        tokio::fs::copy(&real, &dest)
            .await
            .map_err(|e| e.to_string())?;
    } else {
        return Err("only http:// URLs and local paths are supported".into());
    }
    if uri.executable() {
        use std::os::unix::fs::PermissionsExt as _;
        tokio::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(|e| e.to_string())?;
    } else if uri.extract()
        && let Some(kind) = archive_kind(&name)
    {
        let mut cmd = match kind {
            "zip" => {
                let mut c = tokio::process::Command::new("unzip");
                c.arg("-o").arg("-q").arg(&dest).arg("-d").arg(sandbox);
                c
            }
            _ => {
                let mut c = tokio::process::Command::new("tar");
                c.arg("-xf").arg(&dest).arg("-C").arg(sandbox);
                c
            }
        };
        let out = cmd
            .output()
            .await
            .map_err(|e| format!("cannot run {kind}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "extracting failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(v: &str, out: Option<&str>) -> Uri {
        Uri {
            value: v.into(),
            output_file: out.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn file_names_come_from_the_output_file_or_the_url_path() {
        assert_eq!(
            target_name(&uri("http://h/a/b.tgz?x=1", None)).as_deref(),
            Some("b.tgz")
        );
        assert_eq!(
            target_name(&uri("http://h/a/b", Some("c"))).as_deref(),
            Some("c")
        );
        assert_eq!(target_name(&uri("http://h/a/", None)), None);
        assert_eq!(archive_kind("x.TAR.GZ"), Some("tar"));
        assert_eq!(archive_kind("x.zip"), Some("zip"));
        assert_eq!(archive_kind("x.txt"), None);
    }

    #[tokio::test]
    async fn local_files_are_copied_extracted_and_made_executable() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("pkg")).unwrap();
        std::fs::write(src.join("pkg/inside.txt"), "packed").unwrap();
        std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        let status = std::process::Command::new("tar")
            .arg("-czf")
            .arg(src.join("pkg.tgz"))
            .arg("-C")
            .arg(&src)
            .arg("pkg")
            .status()
            .unwrap();
        assert!(status.success());
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        let uris = vec![
            uri(src.join("pkg.tgz").to_str().unwrap(), None),
            Uri {
                executable: Some(true),
                ..uri(&format!("file://{}", src.join("run.sh").display()), None)
            },
        ];
        let policy = ContainerPolicy {
            allowed_host_paths: vec![dir.path().to_string_lossy().into_owned()],
            ..ContainerPolicy::default()
        };
        fetch_all(&uris, &sandbox, &policy).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(sandbox.join("pkg/inside.txt")).unwrap(),
            "packed"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(sandbox.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        let missing = dir.path().join("no/such/file");
        let err = fetch_all(&[uri(missing.to_str().unwrap(), None)], &sandbox, &policy)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no/such/file"), "{err}");
        let err = fetch_all(&[uri("https://example.invalid/x", None)], &sandbox, &policy)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("only http://"), "{err}");
    }

    #[tokio::test]
    async fn host_files_outside_the_policy_are_not_fetched_even_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::write(dir.path().join("secret"), "s3cret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), allowed.join("link")).unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        let policy = ContainerPolicy {
            allowed_host_paths: vec![allowed.to_string_lossy().into_owned()],
            ..ContainerPolicy::default()
        };
        for path in [
            "/etc/shadow".to_owned(),
            format!("file://{}", dir.path().join("secret").display()),
            allowed.join("link").display().to_string(),
        ] {
            let err = fetch_all(&[uri(&path, None)], &sandbox, &policy)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("not"), "{path}: {err}");
        }
        assert!(!sandbox.join("link").exists() && !sandbox.join("secret").exists());
        // Nothing is allowed by default.
        let err = fetch_all(
            &[uri(allowed.join("link").to_str().unwrap(), None)],
            &sandbox,
            &ContainerPolicy::default(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("allowed_host_paths"), "{err}");
    }
}
