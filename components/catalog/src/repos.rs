//! The repository list (kept in coord under `<prefix>/repositories`, a JSON array of
//! `{name, uri}`; in memory without coord) and loading repositories: the built-in one, a
//! local file (`file:///path`), or a URL fetched with Cosmos's `Accept` and reused for a
//! while. A repository that does not load, or fails the schema, is an error naming it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_coord_client::{Client as Coord, ClientError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex as AsyncMutex;

use crate::builtin;
use crate::catalog::{Collection, Loaded};
use crate::error::CosmosError;
use crate::universe::Repository;

/// One entry of the repository list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRef {
    pub name: String,
    pub uri: String,
}

/// The list a fresh cluster starts with: the built-in repository only.
pub fn default_list() -> Vec<RepoRef> {
    vec![RepoRef {
        name: builtin::NAME.into(),
        uri: builtin::URI.into(),
    }]
}

/// The URI of the cluster's local repository (the packages `capstan package import`
/// brought, kept in coord) in the repository list and `DCOS_PACKAGE_SOURCE`.
pub const LOCAL_URI: &str = "capstan:local";
/// Its name in the repository list.
pub const LOCAL_NAME: &str = "local";

/// The Accept Cosmos sends when it fetches a repository.
pub const REPO_ACCEPT: &str = "application/vnd.dcos.universe.repo+json;charset=utf-8;version=v4,application/vnd.dcos.universe.repo+json;charset=utf-8;version=v3";

enum Backend {
    /// The list, and the local repository's JSON.
    Memory(Mutex<Vec<RepoRef>>, Mutex<Option<Vec<u8>>>),
    Coord {
        client: Coord,
        key: String,
        local_key: String,
    },
}

/// The repository list and the loaded repositories.
pub struct Repos {
    backend: Backend,
    /// Serialises this process's read-modify-write of the list (coord's CAS guards others).
    write: AsyncMutex<()>,
    cache: Mutex<HashMap<String, (Instant, Arc<Repository>)>>,
    ttl: Duration,
    http: reqwest::Client,
}

fn coord_err(e: ClientError) -> CosmosError {
    CosmosError::Internal(format!("coord: {e}"))
}

impl Repos {
    pub fn in_memory(ttl: Duration) -> Repos {
        Repos::with(
            Backend::Memory(Mutex::new(default_list()), Mutex::new(None)),
            ttl,
        )
    }

    pub fn in_coord(client: Coord, prefix: &str, ttl: Duration) -> Repos {
        let key = capstan_coord_client::keyspace::under(prefix, "repositories");
        let local_key = capstan_coord_client::keyspace::under(prefix, "local-repository");
        Repos::with(
            Backend::Coord {
                client,
                key,
                local_key,
            },
            ttl,
        )
    }

    fn with(backend: Backend, ttl: Duration) -> Repos {
        Repos {
            backend,
            write: AsyncMutex::new(()),
            cache: Mutex::new(HashMap::new()),
            ttl,
            http: capstan_http_client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The list and the version to swap it at (0: not stored yet).
    async fn read(&self) -> Result<(Vec<RepoRef>, u64), CosmosError> {
        match &self.backend {
            Backend::Memory(m, _) => Ok((m.lock().map(|l| l.clone()).unwrap_or_default(), 0)),
            Backend::Coord { client, key, .. } => match client.get(key).await.map_err(coord_err)? {
                None => Ok((default_list(), 0)),
                Some(kv) => {
                    let list = serde_json::from_slice(&kv.value).map_err(|e| {
                        CosmosError::Internal(format!("stored repository list: {e}"))
                    })?;
                    Ok((list, kv.version))
                }
            },
        }
    }

    /// The repository list.
    pub async fn list(&self) -> Result<Vec<RepoRef>, CosmosError> {
        Ok(self.read().await?.0)
    }

    /// Applies `change` to the list and stores it; retried on a concurrent write elsewhere.
    async fn update(
        &self,
        change: impl Fn(&mut Vec<RepoRef>) -> Result<(), CosmosError>,
    ) -> Result<Vec<RepoRef>, CosmosError> {
        let _g = self.write.lock().await;
        for _ in 0..10 {
            let (mut list, version) = self.read().await?;
            change(&mut list)?;
            match &self.backend {
                Backend::Memory(m, _) => {
                    if let Ok(mut l) = m.lock() {
                        *l = list.clone();
                    }
                    return Ok(list);
                }
                Backend::Coord { client, key, .. } => {
                    let bytes = serde_json::to_vec(&list).unwrap_or_default();
                    match client.compare_and_swap(key, version, bytes).await {
                        Ok(_) => return Ok(list),
                        Err(ClientError::Conflict { .. }) => continue,
                        Err(e) => return Err(coord_err(e)),
                    }
                }
            }
        }
        Err(CosmosError::Internal(
            "the repository list kept changing; try again".into(),
        ))
    }

    /// `repository/add`: checks the repository loads, then inserts it at `index` (default:
    /// the end).
    pub async fn add(
        &self,
        name: &str,
        uri: &str,
        index: Option<usize>,
    ) -> Result<Vec<RepoRef>, CosmosError> {
        self.load(uri, true).await?;
        self.update(|list| {
            if list.iter().any(|r| r.name == name) {
                return Err(CosmosError::RepositoryAlreadyPresent(name.to_owned()));
            }
            if list.iter().any(|r| r.uri == uri) {
                return Err(CosmosError::RepositoryAlreadyPresent(uri.to_owned()));
            }
            let at = index.unwrap_or(list.len());
            if at > list.len() {
                return Err(CosmosError::MalformedRequest(format!(
                    "Index [{at}] is out of range: the list has {} repositories",
                    list.len()
                )));
            }
            list.insert(
                at,
                RepoRef {
                    name: name.to_owned(),
                    uri: uri.to_owned(),
                },
            );
            Ok(())
        })
        .await
    }

    /// `repository/delete` by name or URI.
    pub async fn delete(
        &self,
        name: Option<&str>,
        uri: Option<&str>,
    ) -> Result<Vec<RepoRef>, CosmosError> {
        if name.is_none() && uri.is_none() {
            return Err(CosmosError::MalformedRequest(
                "name or uri is required".into(),
            ));
        }
        self.update(|list| {
            let before = list.len();
            list.retain(|r| !(Some(r.name.as_str()) == name || Some(r.uri.as_str()) == uri));
            if list.len() == before {
                return Err(CosmosError::RepositoryNotPresent(
                    name.or(uri).unwrap_or_default().to_owned(),
                ));
            }
            Ok(())
        })
        .await
    }

    /// Every configured repository, loaded, in order.
    pub async fn collection(&self) -> Result<Collection, CosmosError> {
        let mut repos = Vec::new();
        for r in self.list().await? {
            let repo = self.load(&r.uri, false).await?;
            repos.push(Loaded {
                name: r.name,
                uri: r.uri,
                repo,
            });
        }
        Ok(Collection { repos })
    }

    /// Loads the repository at `uri` (`fresh`: bypass the cache).
    pub async fn load(&self, uri: &str, fresh: bool) -> Result<Arc<Repository>, CosmosError> {
        if uri == builtin::URI {
            return Ok(builtin::repository());
        }
        if uri == LOCAL_URI {
            return Ok(Arc::new(self.read_local().await?.0));
        }
        if !fresh
            && let Some((at, repo)) = self.cache.lock().ok().and_then(|c| c.get(uri).cloned())
            && at.elapsed() < self.ttl
        {
            return Ok(repo);
        }
        let bytes = self.fetch(uri).await?;
        let repo = Repository::parse(&bytes).map_err(|e| CosmosError::RepositoryInvalid {
            uri: uri.to_owned(),
            message: e.to_string(),
        })?;
        let repo = Arc::new(repo);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(uri.to_owned(), (Instant::now(), repo.clone()));
        }
        Ok(repo)
    }

    /// The local repository (empty before the first import) and its coord version.
    async fn read_local(&self) -> Result<(Repository, u64), CosmosError> {
        let (bytes, version) = match &self.backend {
            Backend::Memory(_, local) => (local.lock().ok().and_then(|l| l.clone()), 0),
            Backend::Coord {
                client, local_key, ..
            } => match client.get(local_key).await.map_err(coord_err)? {
                None => (None, 0),
                Some(kv) => (Some(kv.value), kv.version),
            },
        };
        let repo = match bytes {
            None => Repository {
                packages: Vec::new(),
            },
            Some(b) => Repository::parse(&b)
                .map_err(|e| CosmosError::Internal(format!("stored local repository: {e}")))?,
        };
        Ok((repo, version))
    }

    /// Adds `imported`'s packages to the local repository (replacing any of the same name and
    /// version) and puts the local repository first in the list if it is not listed yet.
    /// Answers the local repository as it now is.
    pub async fn add_local(&self, imported: &Repository) -> Result<Repository, CosmosError> {
        let _g = self.write.lock().await;
        let mut stored = None;
        for _ in 0..10 {
            let (current, version) = self.read_local().await?;
            let merged = merge_local(current, imported);
            let bytes = crate::source::to_json(&merged).into_bytes();
            match &self.backend {
                Backend::Memory(_, local) => {
                    if let Ok(mut l) = local.lock() {
                        *l = Some(bytes);
                    }
                }
                Backend::Coord {
                    client, local_key, ..
                } => match client.compare_and_swap(local_key, version, bytes).await {
                    Ok(_) => {}
                    Err(ClientError::Conflict { .. }) => continue,
                    Err(e) => return Err(coord_err(e)),
                },
            }
            stored = Some(merged);
            break;
        }
        let Some(merged) = stored else {
            return Err(CosmosError::Internal(
                "the local repository kept changing; try again".into(),
            ));
        };
        drop(_g);
        let listed = self.list().await?.iter().any(|r| r.uri == LOCAL_URI);
        if !listed {
            self.update(|list| {
                if !list.iter().any(|r| r.uri == LOCAL_URI) {
                    list.insert(
                        0,
                        RepoRef {
                            name: LOCAL_NAME.into(),
                            uri: LOCAL_URI.into(),
                        },
                    );
                }
                Ok(())
            })
            .await?;
        }
        Ok(merged)
    }

    async fn fetch(&self, uri: &str) -> Result<Vec<u8>, CosmosError> {
        let uri_err = |message: String| CosmosError::RepositoryUriError {
            uri: uri.to_owned(),
            message,
        };
        if let Some(path) = uri.strip_prefix("file://") {
            return tokio::fs::read(path)
                .await
                .map_err(|e| uri_err(e.to_string()));
        }
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(CosmosError::UnsupportedRepositoryUri(uri.to_owned()));
        }
        let resp = self
            .http
            .get(uri)
            .header(reqwest::header::ACCEPT, REPO_ACCEPT)
            .send()
            .await
            .map_err(|e| uri_err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(uri_err(format!("HTTP {}", resp.status())));
        }
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if ct.starts_with("application/zip") {
            return Err(CosmosError::RepositoryInvalid {
                uri: uri.to_owned(),
                message: "legacy v2 zip repositories are not supported".into(),
            });
        }
        let bytes = resp.bytes().await.map_err(|e| uri_err(e.to_string()))?;
        Ok(bytes.to_vec())
    }
}

/// `current` with `imported`'s packages added, replacing those of the same name and version,
/// sorted as a parsed repository is.
pub fn merge_local(mut current: Repository, imported: &Repository) -> Repository {
    current.packages.retain(|p| {
        !imported
            .packages
            .iter()
            .any(|n| n.name == p.name && n.version == p.version)
    });
    current.packages.extend(imported.packages.iter().cloned());
    current.packages.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then(b.release_version.cmp(&a.release_version))
    });
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, release: u64, notes: &str) -> crate::universe::Package {
        let mut p = builtin::repository().packages[0].clone();
        p.name = name.into();
        p.version = version.into();
        p.release_version = release;
        p.post_install_notes = Some(notes.into());
        p
    }

    #[test]
    fn an_import_replaces_the_same_version_and_keeps_the_others() {
        let current = Repository {
            packages: vec![pkg("a", "1", 0, "old"), pkg("b", "1", 0, "b")],
        };
        let imported = Repository {
            packages: vec![pkg("a", "1", 0, "new"), pkg("a", "2", 1, "two")],
        };
        let got = merge_local(current, &imported);
        let names: Vec<(&str, &str, Option<&str>)> = got
            .packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.post_install_notes.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("a", "2", Some("two")),
                ("a", "1", Some("new")),
                ("b", "1", Some("b"))
            ]
        );
    }

    #[tokio::test]
    async fn the_local_repository_is_listed_first_once_something_is_imported() {
        let repos = Repos::in_memory(Duration::from_secs(60));
        assert!(
            repos
                .load(LOCAL_URI, false)
                .await
                .unwrap()
                .packages
                .is_empty()
        );
        let imported = Repository {
            packages: vec![pkg("zz-imported", "1", 0, "x")],
        };
        repos.add_local(&imported).await.unwrap();
        repos.add_local(&imported).await.unwrap();
        let list = repos.list().await.unwrap();
        assert_eq!(list[0].uri, LOCAL_URI);
        assert_eq!(list.iter().filter(|r| r.uri == LOCAL_URI).count(), 1);
        let c = repos.collection().await.unwrap();
        assert!(c.find("zz-imported", None).is_ok());
    }
}
