//! Durability of the manager's state: which records changed, writing them off the async
//! runtime, and releasing status updates only once they are durable.
//!
//! Tasks and executors live in `Tracked` maps: every mutable access marks the entry
//! dirty, so no change can be forgotten by a caller. After each message the manager calls
//! `persist()`, which turns the dirty entries whose record differs from the one last
//! written (and the agent record, when it changed) into one [`Batch`] and hands it to the
//! [`CheckpointStore`] in `spawn_blocking`. One batch is in flight at a time; what changes
//! meanwhile waits for the next one (group commit). A status update is queued with its
//! batch and broadcast, and offered to the master link (`TaskManagerHandle::deliverable`),
//! only when the store reported that batch written.
//!
//! When a write fails, nothing of the batch is published: its records are marked dirty
//! again, its updates go back to the front of the queue, the manager is marked degraded
//! (`AgentSnapshot::checkpoint_failing`, `/health` answers 503) and the write is retried
//! after [`CHECKPOINT_RETRY`]. Updates are released in the order they were recorded once a
//! write succeeds again.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_proto::mesos::v1::TaskStatus;
use capstan_runtime::Chain;
use tokio::task::{JoinError, JoinHandle};
use tracing::{error, info};

use super::{StatusUpdate, TaskManager};
use crate::checkpoint::{
    AgentRecord, Batch, CheckpointError, CheckpointStore, ExecutorKey, ExecutorRecord, TaskRecord,
};

/// How long a failed checkpoint write waits before it is tried again.
pub const CHECKPOINT_RETRY: Duration = Duration::from_millis(500);

/// A map that remembers which keys were inserted, removed or borrowed mutably.
pub(crate) struct Tracked<K: Ord + Clone, V> {
    map: BTreeMap<K, V>,
    dirty: BTreeSet<K>,
}

impl<K: Ord + Clone, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone, V> Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<K: Ord + Clone, V> Tracked<K, V> {
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let value = self.map.get_mut(key)?;
        self.dirty.insert(key.to_owned());
        Some(value)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.dirty.insert(key.clone());
        self.map.insert(key, value)
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let value = self.map.remove(key)?;
        self.dirty.insert(key.to_owned());
        Some(value)
    }

    /// Every entry, mutably (all are marked dirty).
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.dirty.extend(self.map.keys().cloned());
        self.map.iter_mut()
    }

    /// Every entry, mutably, for changes that are not persisted (nothing is marked).
    pub(crate) fn values_mut_unpersisted(&mut self) -> impl Iterator<Item = &mut V> {
        self.map.values_mut()
    }

    /// Empties the map (every key is marked).
    pub(crate) fn take_all(&mut self) -> BTreeMap<K, V> {
        self.dirty.extend(self.map.keys().cloned());
        std::mem::take(&mut self.map)
    }

    /// Marks entries whose key matches.
    pub(crate) fn mark_where(&mut self, matches: impl Fn(&K) -> bool) {
        let keys: Vec<K> = self.map.keys().filter(|k| matches(k)).cloned().collect();
        self.dirty.extend(keys);
    }

    pub(crate) fn mark(&mut self, key: K) {
        self.dirty.insert(key);
    }

    fn take_dirty(&mut self) -> BTreeSet<K> {
        std::mem::take(&mut self.dirty)
    }
}

/// What a write returns: the batch (to remember what is on disk) and its outcome.
type WriteResult = Result<(Batch, Result<(), CheckpointError>), JoinError>;

/// A batch being written.
struct InFlight {
    join: JoinHandle<(Batch, Result<(), CheckpointError>)>,
    batch: Written,
}

/// What a batch covered, and the updates that wait for it.
struct Written {
    full: bool,
    tasks: Vec<String>,
    executors: Vec<ExecutorKey>,
    updates: Vec<StatusUpdate>,
}

/// The manager's checkpoint writer state.
pub(crate) struct Persistence {
    store: Arc<Mutex<Box<dyn CheckpointStore>>>,
    in_flight: Option<InFlight>,
    /// Recorded, not yet durable, in the order they were recorded.
    outbox: Vec<StatusUpdate>,
    /// uuids of the updates in `outbox` or in flight.
    undurable: HashSet<Vec<u8>>,
    /// The next batch replaces the whole checkpoint.
    full_pending: bool,
    /// The records as last written, so an entry marked dirty without a change (a periodic
    /// health check result, say) is not written again.
    agent_written: Option<AgentRecord>,
    tasks_written: HashMap<String, TaskRecord>,
    executors_written: HashMap<ExecutorKey, ExecutorRecord>,
    /// After a failure: not before this.
    retry_at: Option<tokio::time::Instant>,
    pub(crate) failing: bool,
}

impl Persistence {
    /// The first batch is a full one: it migrates, drops unreadable records and settles
    /// file names.
    pub(crate) fn new(store: Box<dyn CheckpointStore>) -> Self {
        Persistence {
            store: Arc::new(Mutex::new(store)),
            in_flight: None,
            outbox: Vec::new(),
            undurable: HashSet::new(),
            full_pending: true,
            agent_written: None,
            tasks_written: HashMap::new(),
            executors_written: HashMap::new(),
            retry_at: None,
            failing: false,
        }
    }

    /// Whether a status may be offered to the master: its record is durable.
    pub(crate) fn is_durable(&self, status: &TaskStatus) -> bool {
        status
            .uuid
            .as_ref()
            .is_none_or(|u| !self.undurable.contains(u))
    }

    /// When a failed write is retried.
    pub(crate) fn retry_at(&self) -> Option<tokio::time::Instant> {
        self.retry_at
    }

    pub(crate) fn clear_retry(&mut self) {
        self.retry_at = None;
    }

    pub(crate) fn writing(&self) -> bool {
        self.in_flight.is_some()
    }

    fn idle(&self) -> bool {
        self.in_flight.is_none() && self.retry_at.is_none()
    }

    /// Remembers what a successful batch put on disk.
    fn remember(&mut self, batch: Batch) {
        if batch.full {
            self.tasks_written.clear();
            self.executors_written.clear();
        }
        if let Some(agent) = batch.agent {
            self.agent_written = Some(agent);
        }
        for (k, r) in batch.tasks {
            match r {
                Some(r) => self.tasks_written.insert(k, r),
                None => self.tasks_written.remove(&k),
            };
        }
        for (k, r) in batch.executors {
            match r {
                Some(r) => self.executors_written.insert(k, r),
                None => self.executors_written.remove(&k),
            };
        }
    }

    /// A failed batch may have been partly written: what it covered is unknown now.
    fn forget(&mut self, done: &Written) {
        if done.full {
            self.tasks_written.clear();
            self.executors_written.clear();
        }
        for k in &done.tasks {
            self.tasks_written.remove(k);
        }
        for k in &done.executors {
            self.executors_written.remove(k);
        }
        self.agent_written = None;
    }
}

/// Resolves when the batch in flight was written (never, when none is).
pub(crate) async fn written(persist: &mut Persistence) -> WriteResult {
    match persist.in_flight.as_mut() {
        Some(f) => (&mut f.join).await,
        None => std::future::pending().await,
    }
}

impl TaskManager {
    /// Queues a status update: it is broadcast once its record is durable.
    pub(super) fn queue_update(&mut self, update: StatusUpdate) {
        if let Some(uuid) = &update.status.uuid {
            self.persist.undurable.insert(uuid.clone());
        }
        self.persist.outbox.push(update);
    }

    /// Every unacknowledged update (whose record is durable, with `durable_only`), oldest
    /// first per task.
    pub(super) fn unacked(&self, durable_only: bool) -> Vec<StatusUpdate> {
        self.tasks
            .values()
            .flat_map(|t| {
                t.unacked
                    .iter()
                    .filter(move |s| !durable_only || self.persist.is_durable(s))
                    .map(|s| StatusUpdate {
                        framework_id: t.framework_id.clone(),
                        status: s.clone(),
                    })
            })
            .collect()
    }

    /// Starts writing what changed, unless a write is in flight or waiting to be retried.
    pub(super) fn persist(&mut self) {
        if !self.persist.idle() {
            return;
        }
        let Some((records, batch)) = self.next_batch() else {
            return;
        };
        let store = self.persist.store.clone();
        let join = tokio::task::spawn_blocking(move || {
            let result = store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write(&records);
            (records, result)
        });
        self.persist.in_flight = Some(InFlight { join, batch });
    }

    /// The batch of everything that changed, and what to remember about it; `None` when
    /// nothing changed and no update waits.
    fn next_batch(&mut self) -> Option<(Batch, Written)> {
        let full = std::mem::take(&mut self.persist.full_pending);
        let mut task_keys = self.tasks.take_dirty();
        let mut executor_keys = self.executors.take_dirty();
        if full {
            task_keys = self.tasks.keys().cloned().collect();
            executor_keys = self.executors.keys().cloned().collect();
        }
        let agent = AgentRecord {
            agent_id: self.agent_id.clone(),
            registered: self.registered,
        };
        let agent = (full || self.persist.agent_written.as_ref() != Some(&agent)).then_some(agent);
        let p = &self.persist;
        // Removals are always written: after a failure the disk may hold more than the
        // cache knows.
        let tasks: Vec<(String, Option<TaskRecord>)> = task_keys
            .into_iter()
            .filter_map(|k| {
                let record = self.tasks.get(&k).map(|t| t.record());
                let unchanged = !full
                    && record
                        .as_ref()
                        .is_some_and(|r| p.tasks_written.get(&k) == Some(r));
                (!unchanged).then_some((k, record))
            })
            .collect();
        let executors: Vec<(ExecutorKey, Option<ExecutorRecord>)> = executor_keys
            .into_iter()
            .filter_map(|k| {
                let record = self
                    .executors
                    .get(&k)
                    .map(|e| e.record(&k.0, self.frameworks.get(&k.0)));
                let unchanged = !full
                    && record
                        .as_ref()
                        .is_some_and(|r| p.executors_written.get(&k) == Some(r));
                (!unchanged).then_some((k, record))
            })
            .collect();
        let batch = Batch {
            full,
            agent,
            tasks,
            executors,
        };
        if batch.is_empty() && self.persist.outbox.is_empty() {
            return None;
        }
        let written = Written {
            full,
            tasks: batch.tasks.iter().map(|(k, _)| k.clone()).collect(),
            executors: batch.executors.iter().map(|(k, _)| k.clone()).collect(),
            updates: std::mem::take(&mut self.persist.outbox),
        };
        Some((batch, written))
    }

    /// The batch in flight finished: publish its updates, or keep them for a retry.
    pub(super) fn write_finished(&mut self, result: WriteResult) {
        let Some(InFlight { batch: done, .. }) = self.persist.in_flight.take() else {
            return;
        };
        let (records, result) = match result {
            Ok((records, result)) => (Some(records), result),
            Err(_) => (None, Err(CheckpointError::Interrupted)),
        };
        match (records, result) {
            (Some(records), Ok(())) => {
                if self.persist.failing {
                    info!("The checkpoint is writable again; releasing held status updates");
                    self.persist.failing = false;
                }
                self.persist.remember(records);
                for update in done.updates {
                    if let Some(uuid) = &update.status.uuid {
                        self.persist.undurable.remove(uuid);
                    }
                    let _ = self.handle.updates.send(update);
                }
            }
            (_, result) => {
                let e = result.err().unwrap_or(CheckpointError::Interrupted);
                if !self.persist.failing {
                    error!(
                        error = %Chain(&e),
                        held = done.updates.len(),
                        "Cannot write the checkpoint; status updates are held until it is written"
                    );
                }
                self.persist.failing = true;
                self.persist.forget(&done);
                if done.full {
                    self.persist.full_pending = true;
                }
                for k in done.tasks {
                    self.tasks.mark(k);
                }
                for k in done.executors {
                    self.executors.mark(k);
                }
                let mut held = done.updates;
                held.append(&mut self.persist.outbox);
                self.persist.outbox = held;
                self.persist.retry_at = Some(tokio::time::Instant::now() + CHECKPOINT_RETRY);
            }
        }
    }

    /// On shutdown: waits for the write in flight and writes what is left once more.
    pub(super) async fn flush(&mut self) {
        for _ in 0..2 {
            if self.persist.writing() {
                let r = written(&mut self.persist).await;
                self.write_finished(r);
            }
            self.persist.clear_retry();
            self.persist();
        }
        if self.persist.writing() {
            let r = written(&mut self.persist).await;
            self.write_finished(r);
        }
    }
}
