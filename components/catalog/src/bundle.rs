//! Bundles: one file that moves packages and their images to a cluster with no registry.
//! A bundle is a tar archive of
//!
//! - `capstan-bundle.json`: `{format: 1, packages: [{name, version}], images: [{name, file, size}]}`
//! - `repository.json`: the packages, as `capstan package build` writes them;
//! - `images/<n>.tar`: one `docker save` archive per image the packages' resources name.
//!
//! [`write`] makes one (the caller saves the images); [`Bundle::open`] indexes one without
//! unpacking it; [`import`] uploads one to a catalog: each image to the masters' image store
//! (`PUT /package/images/<name>`, streamed from the bundle), then the packages into the
//! cluster's local repository (`POST /package/local-repository`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::images::{self, ImageNameError};
use crate::tar::{self, TarError};
use crate::universe::Repository;

/// The manifest's file name in a bundle.
pub const MANIFEST: &str = "capstan-bundle.json";
/// The repository's file name in a bundle.
pub const REPOSITORY: &str = "repository.json";
/// The bundle format this code writes and reads.
pub const FORMAT: u32 = 1;

/// What a bundle says it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub packages: Vec<PackageRef>,
    pub images: Vec<ImageRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRef {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// The normalised image name (`capstan/redis:latest`).
    pub name: String,
    /// Its `docker save` archive in the bundle.
    pub file: String,
    pub size: u64,
}

/// Why a bundle could not be written, read or imported.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Image(#[from] ImageNameError),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Every image the repository's packages name, normalised, sorted, once each.
pub fn images_of(repo: &Repository) -> Result<Vec<String>, ImageNameError> {
    let mut out = Vec::new();
    for p in &repo.packages {
        out.extend(images::package_images(p)?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The manifest of a bundle of `repo` with these saved images (`(name, size)`, in order).
pub fn manifest(repo: &Repository, images: &[(String, u64)]) -> Manifest {
    Manifest {
        format: FORMAT,
        packages: repo
            .packages
            .iter()
            .map(|p| PackageRef {
                name: p.name.clone(),
                version: p.version.clone(),
            })
            .collect(),
        images: images
            .iter()
            .enumerate()
            .map(|(i, (name, size))| ImageRef {
                name: name.clone(),
                file: format!("images/{i}.tar"),
                size: *size,
            })
            .collect(),
    }
}

/// Writes a bundle of `repo` and the `docker save` archives at `images` (`(name, path)`).
pub fn write(
    out: &mut impl Write,
    repo: &Repository,
    images: &[(String, PathBuf)],
) -> Result<Manifest, BundleError> {
    let mut sized = Vec::new();
    for (name, path) in images {
        let len = std::fs::metadata(path).map_err(io_err(path))?.len();
        sized.push((name.clone(), len));
    }
    let m = manifest(repo, &sized);
    let manifest_json = serde_json::to_vec_pretty(&m).unwrap_or_default();
    let mut archive = ::tar::Builder::new(out);
    tar::append(
        &mut archive,
        MANIFEST,
        manifest_json.len() as u64,
        manifest_json.as_slice(),
    )?;
    let repo_json = crate::source::to_json(repo).into_bytes();
    tar::append(
        &mut archive,
        REPOSITORY,
        repo_json.len() as u64,
        repo_json.as_slice(),
    )?;
    for (entry, (_, path)) in m.images.iter().zip(images) {
        let f = File::open(path).map_err(io_err(path))?;
        tar::append(&mut archive, &entry.file, entry.size, f)?;
    }
    // Writes the end-of-archive blocks.
    archive.into_inner().map_err(TarError::Write)?;
    Ok(m)
}

/// An indexed bundle file.
#[derive(Debug)]
pub struct Bundle {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub repository: Repository,
    /// Where each image's archive sits in the file: `name → (offset, size)`.
    pub images: BTreeMap<String, (u64, u64)>,
}

impl Bundle {
    /// Reads the manifest and the repository and checks that every image is there.
    pub fn open(path: &Path) -> Result<Bundle, BundleError> {
        let invalid = |message: String| BundleError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let mut f = File::open(path).map_err(io_err(path))?;
        let entries = tar::index(&mut f)?;
        let mut read = |name: &str| -> Result<Vec<u8>, BundleError> {
            let e = entries
                .iter()
                .find(|e| e.name == name)
                .ok_or_else(|| invalid(format!("no {name}: not a Capstan bundle")))?;
            f.seek(SeekFrom::Start(e.offset)).map_err(io_err(path))?;
            let mut buf = Vec::new();
            (&mut f)
                .take(e.size)
                .read_to_end(&mut buf)
                .map_err(io_err(path))?;
            Ok(buf)
        };
        let manifest: Manifest = serde_json::from_slice(&read(MANIFEST)?)
            .map_err(|e| invalid(format!("{MANIFEST}: {e}")))?;
        if manifest.format != FORMAT {
            return Err(invalid(format!(
                "{MANIFEST}: format {} is not {FORMAT}",
                manifest.format
            )));
        }
        let repository = Repository::parse(&read(REPOSITORY)?)
            .map_err(|e| invalid(format!("{REPOSITORY}: {e}")))?;
        let mut images = BTreeMap::new();
        for i in &manifest.images {
            let name = images::normalize(&i.name)?;
            let e = entries
                .iter()
                .find(|e| e.name == i.file)
                .ok_or_else(|| invalid(format!("{MANIFEST} names {}, which is missing", i.file)))?;
            images.insert(name, (e.offset, e.size));
        }
        for name in images_of(&repository)? {
            if !images.contains_key(&name) {
                return Err(invalid(format!(
                    "the packages use image {name}, which the bundle lacks"
                )));
            }
        }
        Ok(Bundle {
            path: path.to_owned(),
            manifest,
            repository,
            images,
        })
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub images: Vec<String>,
    /// The catalog's answer to adding the packages (the local repository's name and uri
    /// and the packages it now holds).
    pub repository: Value,
}

fn http_err(url: &str) -> impl FnOnce(reqwest::Error) -> BundleError + '_ {
    move |e| BundleError::Http {
        url: url.to_owned(),
        message: capstan_runtime::Chain(&e).to_string(),
    }
}

async fn check(url: &str, resp: reqwest::Response) -> Result<Value, BundleError> {
    let status = resp.status();
    let body = resp.text().await.map_err(http_err(url))?;
    if !status.is_success() {
        return Err(BundleError::Http {
            url: url.to_owned(),
            message: format!("HTTP {status}: {body}"),
        });
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// An HTTP client for [`login`] and [`import`] (no overall timeout: images are large).
pub fn http_client() -> reqwest::Client {
    capstan_http_client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// A token for `uid` from the router at `base` (`POST /acs/api/v1/auth/login`).
pub async fn login(
    http: &reqwest::Client,
    base: &str,
    uid: &str,
    password: &str,
) -> Result<String, BundleError> {
    let url = format!("{}/acs/api/v1/auth/login", base.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .json(&json!({"uid": uid, "password": password}))
        .send()
        .await
        .map_err(http_err(&url))?;
    let body = check(&url, resp).await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| BundleError::Http {
            url,
            message: "the login answer has no token".into(),
        })
}

/// Uploads `bundle` to the catalog at `base` (the router, or a master's catalog directly),
/// with `token` as `Authorization: token=…` when given: the images first (streamed from the
/// file), then the packages, so nothing installable refers to an image the store lacks.
pub async fn import(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    bundle: &Bundle,
) -> Result<Imported, BundleError> {
    let base = base.trim_end_matches('/');
    let auth = |r: reqwest::RequestBuilder| match token {
        Some(t) => r.header("Authorization", format!("token={t}")),
        None => r,
    };
    let mut done = Vec::new();
    for (name, (offset, size)) in &bundle.images {
        let url = format!("{base}/package/images/{name}");
        let mut f = tokio::fs::File::open(&bundle.path)
            .await
            .map_err(io_err(&bundle.path))?;
        tokio::io::AsyncSeekExt::seek(&mut f, SeekFrom::Start(*offset))
            .await
            .map_err(io_err(&bundle.path))?;
        let part = tokio::io::AsyncReadExt::take(f, *size);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(part));
        let resp = auth(http.put(&url))
            .header("Content-Type", "application/x-tar")
            .header("Content-Length", size.to_string())
            .body(body)
            .send()
            .await
            .map_err(http_err(&url))?;
        check(&url, resp).await?;
        tracing::info!(image = %name, bytes = size, "Uploaded image");
        done.push(name.clone());
    }
    let url = format!("{base}/package/local-repository");
    let resp = auth(http.post(&url))
        .header("Content-Type", "application/json")
        .body(crate::source::to_json(&bundle.repository))
        .send()
        .await
        .map_err(http_err(&url))?;
    let repository = check(&url, resp).await?;
    Ok(Imported {
        images: done,
        repository,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with(image: &str) -> Repository {
        let mut p = crate::builtin::repository()
            .packages
            .iter()
            .find(|p| p.name == "hello-world")
            .cloned()
            .unwrap();
        p.name = "bundled".into();
        p.resource = Some(json!({"assets": {"container": {"docker": {"http": image}}}}));
        Repository { packages: vec![p] }
    }

    #[test]
    fn a_written_bundle_opens_with_its_repository_and_images() {
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("img.tar");
        std::fs::write(&saved, vec![7u8; 1500]).unwrap();
        let repo = repo_with("capstan/bundle-test:1");
        let path = dir.path().join("b.tar");
        let mut out = File::create(&path).unwrap();
        let m = write(&mut out, &repo, &[("capstan/bundle-test:1".into(), saved)]).unwrap();
        drop(out);
        assert_eq!(m.images[0].size, 1500);
        let b = Bundle::open(&path).unwrap();
        assert_eq!(b.manifest, m);
        assert_eq!(b.repository.packages[0].name, "bundled");
        let (offset, size) = b.images["capstan/bundle-test:1"];
        let bytes = std::fs::read(&path).unwrap();
        let at = usize::try_from(offset).unwrap();
        assert_eq!(size, 1500);
        assert!(bytes[at..at + 1500].iter().all(|&b| b == 7));
    }

    #[test]
    fn a_bundle_missing_an_image_its_packages_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar");
        let mut out = File::create(&path).unwrap();
        write(&mut out, &repo_with("x/y:2"), &[]).unwrap();
        drop(out);
        let err = Bundle::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("uses image x/y:2") || err.contains("use image x/y:2"),
            "{err}"
        );
        std::fs::write(
            &path,
            b"not a tar at all, just some text that is long enough",
        )
        .unwrap();
        assert!(Bundle::open(&path).is_err());
    }

    #[test]
    fn images_of_a_repository_are_each_named_once() {
        let mut r = repo_with("capstan/http");
        r.packages.push(r.packages[0].clone());
        assert_eq!(images_of(&r).unwrap(), ["capstan/http:latest"]);
    }
}
