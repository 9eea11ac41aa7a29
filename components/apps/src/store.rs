//! Persistence behind a trait: apps keeps apps, versions, groups, deployments, task records and
//! its framework id as JSON values under `/`-separated keys. The state machine never waits on
//! the store: it emits writes in order to a writer task, and everything is loaded once at start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Every `(key, value)` under a prefix, sorted by key.
pub type Listing = Vec<(String, Vec<u8>)>;

/// A key-value store with prefix listing (coord, or memory).
pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;
    fn put(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>>;
    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Every key starting with `prefix`, sorted.
    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Listing, StoreError>>;
}

/// A store in process memory. Clones share the data, so a test can restart apps over it.
#[derive(Clone, Default)]
pub struct InMemoryStore {
    data: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl InMemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> R) -> R {
        let mut guard = match self.data.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

impl Store for InMemoryStore {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let v = self.with(|d| d.get(key).cloned());
        Box::pin(async move { Ok(v) })
    }

    fn put(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with(|d| d.insert(key.to_string(), value));
        Box::pin(async { Ok(()) })
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with(|d| d.remove(key));
        Box::pin(async { Ok(()) })
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Listing, StoreError>> {
        let v = self.with(|d| {
            d.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        Box::pin(async move { Ok(v) })
    }
}

/// One write the state machine wants persisted.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreOp {
    Put(String, Vec<u8>),
    Delete(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_lists_by_prefix_and_clones_share_data() {
        let s = InMemoryStore::new();
        let t = s.clone();
        s.put("/apps/a", b"1".to_vec()).await.unwrap();
        s.put("/apps/b", b"2".to_vec()).await.unwrap();
        s.put("/tasks/x", b"3".to_vec()).await.unwrap();
        assert_eq!(t.list("/apps/").await.unwrap().len(), 2);
        t.delete("/apps/a").await.unwrap();
        assert_eq!(s.get("/apps/a").await.unwrap(), None);
        assert_eq!(s.get("/apps/b").await.unwrap(), Some(b"2".to_vec()));
    }
}

/// The store in coord (`capstan coord`): every key lives under `prefix`
/// (default `/capstan/apps`), so `/apps/web` is `/capstan/apps/apps/web` in coord.
#[derive(Clone)]
pub struct CoordStore {
    client: capstan_coord_client::Client,
    prefix: String,
}

impl CoordStore {
    pub fn new(endpoints: &[String], prefix: &str) -> Result<CoordStore, StoreError> {
        let client = capstan_coord_client::Client::new(endpoints)
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Ok(CoordStore {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn unavailable(e: capstan_coord_client::ClientError) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

impl Store for CoordStore {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let key = self.full(key);
        Box::pin(async move {
            let kv = self.client.get(&key).await.map_err(unavailable)?;
            Ok(kv.map(|kv| kv.value))
        })
    }

    fn put(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>> {
        let key = self.full(key);
        Box::pin(async move {
            self.client
                .put(&key, value)
                .await
                .map(|_| ())
                .map_err(unavailable)
        })
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let key = self.full(key);
        Box::pin(async move {
            match self.client.delete(&key).await {
                Ok(_) => Ok(()),
                Err(capstan_coord_client::ClientError::Api { status: 404, .. }) => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Listing, StoreError>> {
        let full = self.full(prefix);
        Box::pin(async move {
            let resp = self.client.list_all(&full).await.map_err(unavailable)?;
            Ok(resp
                .kvs
                .into_iter()
                .filter_map(|kv| Some((kv.key.strip_prefix(&self.prefix)?.to_string(), kv.value)))
                .collect())
        })
    }
}
