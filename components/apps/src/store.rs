//! Persistence behind a trait: apps keeps apps, versions, groups, deployments, task records and
//! its framework id as JSON values under `/`-separated keys. The state machine never waits on
//! the store: it emits writes in order to a writer task (see `server`), which applies them in
//! atomic batches; a reply or a scheduler call that depends on a write leaves only once the
//! write is stored. Everything is loaded once at start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer; the same write may succeed later.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store refused the write (a size limit, an invalid key): retrying cannot help.
    #[error("store refused the write to {key}: {reason}")]
    Rejected { key: String, reason: String },
}

impl StoreError {
    /// Whether the same operation may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
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
    /// Applies every op, all or none. Deleting an absent key is not an error.
    fn apply<'a>(&'a self, ops: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>>;
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

    fn apply<'a>(&'a self, ops: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|d| {
            for op in ops {
                match op {
                    StoreOp::Put(k, v) => d.insert(k.clone(), v.clone()),
                    StoreOp::Delete(k) => d.remove(k),
                };
            }
        });
        Box::pin(async { Ok(()) })
    }
}

/// One write the state machine wants persisted.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreOp {
    Put(String, Vec<u8>),
    Delete(String),
}

impl StoreOp {
    pub fn key(&self) -> &str {
        match self {
            StoreOp::Put(k, _) | StoreOp::Delete(k) => k,
        }
    }

    /// Bytes this op carries to the store.
    pub fn size(&self) -> usize {
        match self {
            StoreOp::Put(k, v) => k.len() + v.len(),
            StoreOp::Delete(k) => k.len(),
        }
    }
}

/// Keeps only the last op of each key, in the order of those last ops: applying the result
/// leaves the store as applying every op in order would.
pub fn coalesce(ops: Vec<StoreOp>) -> Vec<StoreOp> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<StoreOp> = ops
        .into_iter()
        .rev()
        .filter(|op| seen.insert(op.key().to_string()))
        .collect();
    out.reverse();
    out
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

    #[test]
    fn coalescing_keeps_the_last_op_of_each_key() {
        let put = |k: &str, v: &str| StoreOp::Put(k.into(), v.as_bytes().to_vec());
        let del = |k: &str| StoreOp::Delete(k.into());
        let ops = vec![
            put("/a", "1"),
            put("/b", "1"),
            del("/a"),
            put("/c", "1"),
            put("/b", "2"),
        ];
        assert_eq!(
            coalesce(ops),
            vec![del("/a"), put("/c", "1"), put("/b", "2")]
        );
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
        CoordStore::with_options(
            endpoints,
            prefix,
            capstan_coord_client::ClientOptions::default(),
        )
    }

    /// As [`CoordStore::new`], the client built with `opts` (its TLS, for a strict coord).
    pub fn with_options(
        endpoints: &[String],
        prefix: &str,
        opts: capstan_coord_client::ClientOptions,
    ) -> Result<CoordStore, StoreError> {
        let client = capstan_coord_client::Client::with_options(endpoints, opts)
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

/// A 4xx answer is coord refusing this write; anything else may pass on another try.
fn write_error(key: &str, e: capstan_coord_client::ClientError) -> StoreError {
    match &e {
        capstan_coord_client::ClientError::Api { status, error } if (400..500).contains(status) => {
            StoreError::Rejected {
                key: key.to_string(),
                reason: format!("coord answered {status}: {}", error.message),
            }
        }
        _ => unavailable(e),
    }
}

/// Checks an op against coord's limits before sending it, so an oversized write is refused
/// here with a clear reason instead of failing the whole batch at coord.
fn check_limits(key: &str, op: &StoreOp) -> Result<(), StoreError> {
    let rejected = |reason: String| StoreError::Rejected {
        key: key.to_string(),
        reason,
    };
    capstan_coord_client::validate_key(key).map_err(rejected)?;
    if let StoreOp::Put(_, v) = op
        && v.len() > capstan_coord_client::MAX_VALUE_BYTES
    {
        return Err(rejected(format!(
            "the value is {} bytes, coord's limit is {}",
            v.len(),
            capstan_coord_client::MAX_VALUE_BYTES
        )));
    }
    Ok(())
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

    fn apply<'a>(&'a self, ops: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut success = Vec::with_capacity(ops.len());
            for op in ops {
                let key = self.full(op.key());
                check_limits(&key, op)?;
                success.push(match op {
                    StoreOp::Put(_, v) => capstan_coord_client::TxnOp::Put {
                        key,
                        value: v.clone(),
                        lease: None,
                    },
                    StoreOp::Delete(_) => capstan_coord_client::TxnOp::Delete { key },
                });
            }
            let first = ops.first().map(StoreOp::key).unwrap_or_default();
            self.client
                .txn(capstan_coord_client::TxnRequest {
                    compares: Vec::new(),
                    success,
                    failure: Vec::new(),
                })
                .await
                .map(|_| ())
                .map_err(|e| write_error(&self.full(first), e))
        })
    }
}
