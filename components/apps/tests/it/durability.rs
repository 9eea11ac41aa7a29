//! Acknowledge only what is durable (reliability probe F2): a reply or a scheduler call
//! leaves apps only after the store writes it depends on are stored, and a write the store
//! refuses makes the instance step down instead of answering as if it were kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use capstan_apps::store::{Listing, StoreOp};
use capstan_apps::{InMemoryStore, Store, StoreError};
use capstan_runtime::Exit;
use capstan_testkit::wait_until;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::fake_master::FakeMaster;
use crate::support::{Apps, WAIT};

/// Memory, but batches wait for a permit (a slow store) and batches touching `refuse` are
/// refused (a write over the store's limits).
struct GatedStore {
    inner: InMemoryStore,
    gate: Arc<Semaphore>,
    waiting: Arc<AtomicBool>,
    refuse: &'static str,
}

impl GatedStore {
    fn new(refuse: &'static str, open: bool) -> GatedStore {
        GatedStore {
            inner: InMemoryStore::new(),
            gate: Arc::new(Semaphore::new(if open {
                Semaphore::MAX_PERMITS
            } else {
                0
            })),
            waiting: Arc::new(AtomicBool::new(false)),
            refuse,
        }
    }
}

impl Store for GatedStore {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        self.inner.get(key)
    }
    fn put(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.put(key, value)
    }
    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.delete(key)
    }
    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Listing, StoreError>> {
        self.inner.list(prefix)
    }
    fn apply<'a>(&'a self, ops: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if let Some(op) = ops.iter().find(|op| op.key().contains(self.refuse)) {
                return Err(StoreError::Rejected {
                    key: op.key().to_string(),
                    reason: "over the limit".into(),
                });
            }
            self.waiting.store(true, Ordering::SeqCst);
            let _permit = self.gate.acquire().await;
            self.inner.apply(ops).await
        })
    }
}

#[tokio::test]
async fn an_app_is_acknowledged_only_once_it_is_stored() {
    let master = FakeMaster::start(1).await;
    let store = Arc::new(GatedStore::new("/never", false));
    let (gate, waiting, data) = (
        store.gate.clone(),
        store.waiting.clone(),
        store.inner.clone(),
    );
    let mut apps = Apps::start_with_store(&master, store).await;
    let (http, url) = (apps.http.clone(), format!("{}/v2/apps", apps.url));
    let post = tokio::spawn(async move {
        let body =
            json!({"id": "/slow", "cmd": "sleep 100", "cpus": 0.1, "mem": 16, "instances": 0});
        let resp = http.post(url).json(&body).send().await.expect("sent");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    });
    wait_until("the app's write reached the store", WAIT, async || {
        waiting.load(Ordering::SeqCst)
    })
    .await
    .unwrap();
    assert!(!post.is_finished(), "no answer while the write is pending");
    assert_eq!(data.get("/apps/slow").await.unwrap(), None);
    gate.add_permits(Semaphore::MAX_PERMITS);
    let (status, body) = post.await.expect("the request task");
    assert_eq!(status, 201, "{body}");
    assert!(
        data.get("/apps/slow").await.unwrap().is_some(),
        "stored when acknowledged"
    );
    apps.stop().await;
}

#[tokio::test]
async fn a_refused_store_write_answers_no_201_releases_no_call_and_steps_down() {
    let master = FakeMaster::start(1).await;
    let store = Arc::new(GatedStore::new("/doomed", true));
    let data = store.inner.clone();
    let mut apps = Apps::start_with_store(&master, store).await;
    // A subscription ends with a REVIVE: wait for it, so that it is not taken for one that
    // followed the refused write.
    wait_until("subscribed and revived", WAIT, async || {
        !master.calls_of("REVIVE").is_empty()
    })
    .await
    .unwrap();
    let revives_before = master.calls_of("REVIVE").len();
    let (status, body) = apps
        .post(
            "/v2/apps",
            json!({"id": "/doomed", "cmd": "sleep 100", "cpus": 0.1, "mem": 16, "instances": 1}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    let handle = apps.handle.take().expect("running");
    let exit = handle.wait().await;
    assert!(
        matches!(&exit, Exit::Failed(e) if e.to_string().contains("store write failed")),
        "{exit:?}"
    );
    assert_eq!(data.get("/apps/doomed").await.unwrap(), None);
    assert!(master.calls_of("ACCEPT").is_empty(), "nothing launched");
    assert_eq!(
        master.calls_of("REVIVE").len(),
        revives_before,
        "no call that followed the refused write was sent"
    );
}
