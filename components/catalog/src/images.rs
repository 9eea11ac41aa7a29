//! The masters' image store, for clusters with no registry: `docker save` archives of the
//! images that imported bundles brought, one file per image under `images_dir` (not in coord:
//! an image is megabytes). Agents that miss an image fetch it from here
//! (`GET /package/images/<name>`) and `docker load` it. Image names are normalised (`:latest`
//! added) and validated here, so a name can never reach outside the directory.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::universe::Package;

/// Why an image name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image name {name:?} {problem}")]
pub struct ImageNameError {
    pub name: String,
    pub problem: &'static str,
}

/// `name[:tag]` or `name@digest` → the same with `:latest` when neither a tag nor a digest is
/// given. Refuses anything that is not a Docker reference: empty path components, `..`,
/// characters outside `[a-z0-9._-]` in the repository part, a bad tag.
pub fn normalize(image: &str) -> Result<String, ImageNameError> {
    let bad = |problem| ImageNameError {
        name: image.to_owned(),
        problem,
    };
    if image.is_empty() || image.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    let (repo, suffix) = if let Some((repo, digest)) = image.split_once('@') {
        let ok = digest.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && alg.chars().all(|c| c.is_ascii_alphanumeric())
                && !hex.is_empty()
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(bad("has a malformed digest"));
        }
        (repo, format!("@{digest}"))
    } else {
        // A ':' after the last '/' starts the tag (one before it is a registry's port).
        let slash = image.rfind('/').map_or(0, |i| i + 1);
        match image[slash..].rfind(':') {
            Some(i) => {
                let tag = &image[slash + i + 1..];
                let ok = !tag.is_empty()
                    && tag.len() <= 128
                    && !tag.starts_with(['.', '-'])
                    && tag
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                if !ok {
                    return Err(bad("has a malformed tag"));
                }
                (&image[..slash + i], format!(":{tag}"))
            }
            None => (image, ":latest".to_owned()),
        }
    };
    for (i, part) in repo.split('/').enumerate() {
        // The first component may be a registry host with a port.
        let extra = |c: char| i == 0 && c == ':';
        let ok = !part.is_empty()
            && part != "."
            && part != ".."
            && !part.starts_with(['.', '-', '_'])
            && part.chars().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '.' | '_' | '-')
                    || extra(c)
            });
        if !ok {
            return Err(bad(
                "is not a Docker image reference (lowercase [a-z0-9._-] path components)",
            ));
        }
    }
    Ok(format!("{repo}{suffix}"))
}

/// The store's file name for a normalised image name: every byte outside `[a-z0-9._-]` as
/// `%XX`, then `.tar` (so `/` never splits the path and names map one to one).
pub fn file_name(image: &str) -> String {
    let mut out = String::with_capacity(image.len() + 8);
    for b in image.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(".tar");
    out
}

/// The image name a store file holds ([`file_name`] backwards), `None` for other files.
pub fn from_file_name(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".tar")?;
    let mut bytes = Vec::with_capacity(stem.len());
    let mut it = stem.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    let name = String::from_utf8(bytes).ok()?;
    (file_name(&name) == file).then_some(name)
}

/// Every Docker image a package's resources name (`resource.assets.container.docker`),
/// normalised, sorted, without duplicates; names that are not references are errors.
pub fn package_images(package: &Package) -> Result<Vec<String>, ImageNameError> {
    let mut out = Vec::new();
    let docker = package
        .resource
        .as_ref()
        .and_then(|r| r.pointer("/assets/container/docker"))
        .and_then(Value::as_object);
    for image in docker.into_iter().flat_map(|m| m.values()) {
        let Some(image) = image.as_str() else {
            continue;
        };
        out.push(normalize(image)?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The image store: a directory of `docker save` archives, created on the first write.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

impl ImageStore {
    pub fn new(dir: impl Into<PathBuf>) -> ImageStore {
        ImageStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a normalised image's archive lives.
    pub fn path(&self, image: &str) -> PathBuf {
        self.dir.join(file_name(image))
    }

    /// A fresh temporary path in the store for an upload (renamed into place when complete).
    pub fn temp_path(&self, image: &str) -> PathBuf {
        self.dir.join(format!(
            ".upload-{}-{}",
            std::process::id(),
            file_name(image)
        ))
    }

    /// The stored images and their sizes in bytes, sorted by name.
    pub async fn list(&self) -> std::io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut dir = match tokio::fs::read_dir(&self.dir).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        while let Some(entry) = dir.next_entry().await? {
            // Uploads under way (`.upload-*`) and stray files are not images.
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(from_file_name)
                .filter(|n| normalize(n).as_deref() == Ok(n.as_str()))
            else {
                continue;
            };
            out.push((name, entry.metadata().await?.len()));
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_normalised_or_refused() {
        let cases: &[(&str, Option<&str>)] = &[
            ("capstan/redis", Some("capstan/redis:latest")),
            ("capstan/bundle-test:1", Some("capstan/bundle-test:1")),
            ("redis", Some("redis:latest")),
            ("localhost:5000/a/b", Some("localhost:5000/a/b:latest")),
            ("localhost:5000/a/b:v1.2", Some("localhost:5000/a/b:v1.2")),
            ("a/b@sha256:0123abcd", Some("a/b@sha256:0123abcd")),
            ("", None),
            ("../etc/passwd", None),
            ("a//b", None),
            ("/a", None),
            ("a/", None),
            ("Capstan/redis", None),
            ("a/b:", None),
            ("a/b:-x", None),
            ("a/b:x/y", None),
            ("a b", None),
            ("a/b@sha256:", None),
            ("a/b@sha256:xyz", None),
            ("a/%2e%2e", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).ok().as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn file_names_stay_in_the_directory() {
        assert_eq!(
            file_name("capstan/redis:latest"),
            "capstan%2Fredis%3Alatest.tar"
        );
        assert_eq!(
            from_file_name("capstan%2Fredis%3Alatest.tar").as_deref(),
            Some("capstan/redis:latest")
        );
        assert_eq!(
            from_file_name(".upload-1-x.tar").as_deref(),
            Some(".upload-1-x")
        );
        assert_eq!(from_file_name("x%2"), None);
        assert_eq!(
            from_file_name("a%2fb.tar"),
            None,
            "only the canonical spelling"
        );
        assert_eq!(from_file_name("notes.txt"), None);
    }

    #[test]
    fn a_package_names_its_docker_assets() {
        let mut p = crate::builtin::repository()
            .packages
            .iter()
            .find(|p| p.name == "redis")
            .cloned()
            .unwrap();
        assert_eq!(package_images(&p).unwrap(), ["capstan/redis:latest"]);
        p.resource = Some(serde_json::json!({"assets": {"container": {"docker": {
            "a": "x/y:1", "b": "x/y:1", "c": "capstan/redis", "d": 7}}}}));
        assert_eq!(
            package_images(&p).unwrap(),
            ["capstan/redis:latest", "x/y:1"]
        );
        p.resource = Some(serde_json::json!({"assets": {"container": {"docker": {"a": "A B"}}}}));
        assert!(package_images(&p).is_err());
        p.resource = None;
        assert!(package_images(&p).unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn file_names_round_trip_and_never_hold_a_slash(name in "[a-z0-9]{1,8}(/[a-z0-9._-]{1,8}){0,3}(:[A-Za-z0-9_]{1,8})?") {
            if let Ok(n) = normalize(&name) {
                let f = file_name(&n);
                prop_assert!(!f.contains('/'));
                prop_assert!(!f.starts_with('.'));
                prop_assert_eq!(from_file_name(&f), Some(n));
            }
        }
    }
}
