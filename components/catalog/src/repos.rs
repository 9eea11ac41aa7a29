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

/// The Accept Cosmos sends when it fetches a repository.
pub const REPO_ACCEPT: &str = "application/vnd.dcos.universe.repo+json;charset=utf-8;version=v4,application/vnd.dcos.universe.repo+json;charset=utf-8;version=v3";

enum Backend {
    Memory(Mutex<Vec<RepoRef>>),
    Coord { client: Coord, key: String },
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
        Repos::with(Backend::Memory(Mutex::new(default_list())), ttl)
    }

    pub fn in_coord(client: Coord, prefix: &str, ttl: Duration) -> Repos {
        let key = capstan_coord_client::keyspace::under(prefix, "repositories");
        Repos::with(Backend::Coord { client, key }, ttl)
    }

    fn with(backend: Backend, ttl: Duration) -> Repos {
        Repos {
            backend,
            write: AsyncMutex::new(()),
            cache: Mutex::new(HashMap::new()),
            ttl,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The list and the version to swap it at (0: not stored yet).
    async fn read(&self) -> Result<(Vec<RepoRef>, u64), CosmosError> {
        match &self.backend {
            Backend::Memory(m) => Ok((m.lock().map(|l| l.clone()).unwrap_or_default(), 0)),
            Backend::Coord { client, key } => match client.get(key).await.map_err(coord_err)? {
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
                Backend::Memory(m) => {
                    if let Ok(mut l) = m.lock() {
                        *l = list.clone();
                    }
                    return Ok(list);
                }
                Backend::Coord { client, key } => {
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
