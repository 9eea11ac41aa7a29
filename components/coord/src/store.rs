//! Durable raft storage on redb: the log, the vote, the committed id and the last snapshot
//! live in one redb file (`<data_dir>/coord.redb`); every write transaction that matters for
//! safety (log append, vote, truncate, snapshot) is committed with redb's default
//! `Durability::Immediate`, i.e. fsynced before openraft is told it is done. Log writes go
//! through one writer thread that commits everything queued in one transaction (group
//! commit), so concurrent writes share an fsync.
//!
//! The state machine ([`KvState`]) is kept in memory and made durable by the log plus
//! snapshots: on start it is loaded from the last snapshot and openraft re-applies the
//! committed log after it.

// openraft's StorageError is large; it is the error type the traits require.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::raft::{NodeId, TypeConfig};
use crate::sm::{CommandResult, KvState, Outcome};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";
/// State written by `snapshot restore` into a fresh data dir, loaded before the first snapshot.
const SEED: &str = "seed";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}

/// Error opening the data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {path}")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("cannot read database {path}: {message}")]
    Read { path: String, message: String },
}

/// Opens (or creates) `<data_dir>/coord.redb` and its tables.
/// redb's page cache.
const REDB_CACHE_BYTES: usize = 16 << 20;

pub fn open_db(data_dir: &Path) -> Result<Arc<Database>, OpenError> {
    // 0700 like the daemon's own start makes it (a restore writes here before any start).
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|source| OpenError::CreateDir {
            path: data_dir.display().to_string(),
            source,
        })?;
    let path = data_dir.join("coord.redb");
    // The state machine lives in memory; redb holds the log (compacted at every snapshot),
    // the vote and the last snapshot, so a small page cache is enough (redb's default is
    // 1 GiB, which a member holding many keys would fill with snapshot pages).
    let db = Database::builder()
        .set_cache_size(REDB_CACHE_BYTES)
        .create(&path)
        .map_err(|source| OpenError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let init = || -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    };
    init().map_err(|e| OpenError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(Arc::new(db))
}

fn meta_get(db: &Database, key: &str) -> StorageResult<Option<Vec<u8>>> {
    let txn = db.begin_read().map_err(read_err)?;
    let table = txn.open_table(META).map_err(read_err)?;
    Ok(table
        .get(key)
        .map_err(read_err)?
        .map(|v| v.value().to_vec()))
}

fn meta_get_json<T: serde::de::DeserializeOwned>(
    db: &Database,
    key: &str,
) -> StorageResult<Option<T>> {
    match meta_get(db, key)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(read_err)?)),
    }
}

/// Runs a write transaction on the blocking pool (redb commits fsync).
async fn write_txn<F>(db: &Arc<Database>, durable: bool, f: F) -> StorageResult<()>
where
    F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
{
    let db = db.clone();
    let run = move || -> Result<(), redb::Error> {
        let mut txn = db.begin_write()?;
        if !durable {
            // Falls back to a durable commit where redb refuses (multi-process mode).
            let _ = txn.set_durability(redb::Durability::None);
        }
        f(&txn)?;
        txn.commit()?;
        Ok(())
    };
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::spawn_blocking(run)
            .await
            .map_err(write_err)?
            .map_err(write_err),
        Err(_) => run().map_err(write_err),
    }
}

/// The raft log, vote and committed id.
///
/// All log writes go through one writer thread that groups whatever is queued into a single
/// redb transaction (group commit): `append` returns as soon as the entries are queued and
/// readable (from an in-memory overlay), and openraft is called back once they are fsynced.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Appended entries not yet committed to redb, by index.
    pending: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
    writer: std::sync::mpsc::Sender<WriteOp>,
}

type TxnFn = Box<dyn FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send>;

enum WriteOp {
    Append {
        rows: Vec<(LogId<NodeId>, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    Txn {
        durable: bool,
        f: Option<TxnFn>,
        done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    },
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> LogStore {
        let (tx, rx) = std::sync::mpsc::channel();
        let pending: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>> = Arc::default();
        let (wdb, wpending) = (db.clone(), pending.clone());
        std::thread::Builder::new()
            .name("coord-log-writer".into())
            .spawn(move || writer_loop(wdb, rx, wpending))
            .expect("spawn the log writer thread");
        LogStore {
            db,
            pending,
            writer: tx,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in the writer's next transaction; waits for it when `wait` is set.
    async fn txn<F>(&self, durable: bool, wait: bool, f: F) -> StorageResult<()>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        let (done, rx) = tokio::sync::oneshot::channel();
        let op = WriteOp::Txn {
            durable,
            f: Some(Box::new(f)),
            done: wait.then_some(done),
        };
        self.writer
            .send(op)
            .map_err(|_| write_err(std::io::Error::other("log writer stopped")))?;
        if !wait {
            return Ok(());
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_err(std::io::Error::other(e))),
            Err(_) => Err(write_err(std::io::Error::other("log writer stopped"))),
        }
    }
}

fn writer_loop(
    db: Arc<Database>,
    rx: std::sync::mpsc::Receiver<WriteOp>,
    pending: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let durable = batch
            .iter()
            .any(|op| !matches!(op, WriteOp::Txn { durable: false, .. }));
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            if !durable {
                // Falls back to a durable commit where redb refuses (multi-process mode).
                let _ = txn.set_durability(redb::Durability::None);
            }
            for op in &mut batch {
                match op {
                    WriteOp::Append { rows, .. } => {
                        let mut table = txn.open_table(LOG)?;
                        for (id, bytes) in rows.iter() {
                            table.insert(id.index, bytes.as_slice())?;
                        }
                    }
                    WriteOp::Txn { f, .. } => {
                        if let Some(f) = f.take() {
                            f(&txn)?;
                        }
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })();
        if result.is_ok() {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            for op in &batch {
                if let WriteOp::Append { rows, .. } = op {
                    for (id, _) in rows {
                        if p.get(&id.index).is_some_and(|e| e.log_id == *id) {
                            p.remove(&id.index);
                        }
                    }
                }
            }
        }
        for op in batch {
            match op {
                WriteOp::Append { callback, .. } => callback.log_io_completed(
                    result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| std::io::Error::other(e.to_string())),
                ),
                WriteOp::Txn {
                    done: Some(done), ..
                } => {
                    let _ = done.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                }
                WriteOp::Txn { done: None, .. } => {}
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        // The overlay first: an entry leaving it is already in redb when we read redb.
        let overlay: Vec<(u64, Entry<TypeConfig>)> = {
            let p = self.pending();
            match end {
                Some(e) => p.range(start..e).map(|(i, e)| (*i, e.clone())).collect(),
                None => p.range(start..).map(|(i, e)| (*i, e.clone())).collect(),
            }
        };
        let mut out: BTreeMap<u64, Entry<TypeConfig>> = BTreeMap::new();
        {
            let txn = self.db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            let iter = match end {
                Some(e) => table.range(start..e),
                None => table.range(start..),
            }
            .map_err(read_err)?;
            for item in iter {
                let (k, v) = item.map_err(read_err)?;
                out.insert(
                    k.value(),
                    serde_json::from_slice(v.value()).map_err(read_err)?,
                );
            }
        }
        out.extend(overlay);
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = meta_get_json(&self.db, PURGED)?;
        let pending_last = self.pending().last_key_value().map(|(_, e)| e.log_id);
        let last = match pending_last {
            Some(l) => Some(l),
            None => {
                let txn = self.db.begin_read().map_err(read_err)?;
                let table = txn.open_table(LOG).map_err(read_err)?;
                match table.last().map_err(read_err)? {
                    Some((_, v)) => {
                        let e: Entry<TypeConfig> =
                            serde_json::from_slice(v.value()).map_err(read_err)?;
                        Some(e.log_id)
                    }
                    None => last_purged,
                }
            }
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let bytes = serde_json::to_vec(vote).map_err(write_err)?;
        self.txn(true, true, move |txn| {
            txn.open_table(META)?.insert(VOTE, bytes.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        meta_get_json(&self.db, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Losing the committed id is safe (it only shortens a restart), so it is queued
        // without fsync and without waiting; the queue keeps it behind the entries it covers.
        let bytes = serde_json::to_vec(&committed).map_err(write_err)?;
        self.txn(false, false, move |txn| {
            txn.open_table(META)?.insert(COMMITTED, bytes.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(meta_get_json::<Option<LogId<NodeId>>>(&self.db, COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        {
            let mut p = self.pending();
            for e in entries {
                rows.push((e.log_id, serde_json::to_vec(&e).map_err(write_err)?));
                p.insert(e.log_id.index, e);
            }
        }
        self.writer
            .send(WriteOp::Append { rows, callback })
            .map_err(|_| write_err(std::io::Error::other("log writer stopped")))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let since = log_id.index;
        drop(self.pending().split_off(&since));
        self.txn(true, true, move |txn| {
            let mut table = txn.open_table(LOG)?;
            let keys: Vec<u64> = table
                .range(since..)?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for k in keys {
                table.remove(k)?;
            }
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let upto = log_id.index;
        let bytes = serde_json::to_vec(&log_id).map_err(write_err)?;
        {
            let mut p = self.pending();
            let keep = p.split_off(&(upto + 1));
            *p = keep;
        }
        self.txn(true, true, move |txn| {
            txn.open_table(META)?.insert(PURGED, bytes.as_slice())?;
            let mut table = txn.open_table(LOG)?;
            let keys: Vec<u64> = table
                .range(..=upto)?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for k in keys {
                table.remove(k)?;
            }
            Ok(())
        })
        .await
    }
}

/// What a snapshot contains (and what the in-memory state machine is).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub kv: KvState,
}

/// The state machine shared between the raft storage (the only writer) and readers (HTTP
/// handlers, watches, the lease keeper). The lock is never held across an `.await`.
pub struct Shared {
    state: RwLock<SmData>,
    revision_tx: watch::Sender<u64>,
}

impl Shared {
    /// Runs `f` on the current state under the read lock.
    pub fn read<T>(&self, f: impl FnOnce(&SmData) -> T) -> T {
        let guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    fn write<T>(&self, f: impl FnOnce(&mut SmData) -> T) -> T {
        let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Changes whenever the revision moves (or the state is replaced by a snapshot).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }

    fn notify(&self) {
        let rev = self.read(|s| s.kv.revision());
        self.revision_tx.send_modify(|r| *r = rev);
    }
}

/// The raft state machine: applies entries to the shared [`SmData`] and builds, stores and
/// installs snapshots.
pub struct StateMachineStore {
    db: Arc<Database>,
    shared: Arc<Shared>,
    history_limit: usize,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshotMeta {
    meta: SnapshotMeta<NodeId, BasicNode>,
}

impl StateMachineStore {
    /// Loads the last snapshot (or a restore seed) from `db`.
    pub fn open(db: Arc<Database>, history_limit: usize) -> StorageResult<StateMachineStore> {
        let mut data: SmData = match meta_get(&db, SNAPSHOT_DATA)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(read_err)?,
            None => match meta_get(&db, SEED)? {
                Some(bytes) => {
                    let kv: KvState = serde_json::from_slice(&bytes).map_err(read_err)?;
                    SmData {
                        kv,
                        ..Default::default()
                    }
                }
                None => SmData::default(),
            },
        };
        data.kv.set_history_limit(history_limit);
        let rev = data.kv.revision();
        let (revision_tx, _) = watch::channel(rev);
        Ok(StateMachineStore {
            db,
            shared: Arc::new(Shared {
                state: RwLock::new(data),
                revision_tx,
            }),
            history_limit,
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    async fn persist_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    ) -> StorageResult<()> {
        let meta_bytes =
            serde_json::to_vec(&StoredSnapshotMeta { meta: meta.clone() }).map_err(write_err)?;
        write_txn(&self.db, true, move |txn| {
            let mut t = txn.open_table(META)?;
            t.insert(SNAPSHOT_META, meta_bytes.as_slice())?;
            t.insert(SNAPSHOT_DATA, data.as_slice())?;
            t.remove(SEED)?;
            Ok(())
        })
        .await
    }
}

/// Writes `kv` as the initial state of a fresh data dir (`snapshot restore`).
pub fn write_seed(db: &Database, kv: &KvState) -> Result<(), redb::Error> {
    let bytes = serde_json::to_vec(kv).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert(SEED, bytes.as_slice())?;
    txn.commit()?;
    Ok(())
}

/// True if the data dir holds no raft state at all.
pub fn is_fresh(db: &Database) -> Result<bool, redb::Error> {
    let txn = db.begin_read()?;
    let log = txn.open_table(LOG)?;
    let meta = txn.open_table(META)?;
    Ok(log.first()?.is_none() && meta.first()?.is_none())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (data, last_applied, membership) = self
            .shared
            .read(|s| (serde_json::to_vec(s), s.last_applied, s.membership.clone()));
        let data = data.map_err(read_err)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{nanos}", l.leader_id.term, l.index),
            None => format!("none-{nanos}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.persist_snapshot(&meta, data.clone()).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok(self.shared.read(|s| (s.last_applied, s.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let results = self.shared.write(|s| {
            let mut results = Vec::new();
            for entry in entries {
                s.last_applied = Some(entry.log_id);
                let r = match entry.payload {
                    EntryPayload::Blank => Ok(Outcome::None),
                    EntryPayload::Normal(cmd) => s.kv.apply(&cmd),
                    EntryPayload::Membership(m) => {
                        s.membership = StoredMembership::new(Some(entry.log_id), m);
                        Ok(Outcome::None)
                    }
                };
                results.push(r);
            }
            results
        });
        self.shared.notify();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachineStore {
            db: self.db.clone(),
            shared: self.shared.clone(),
            history_limit: self.history_limit,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let mut data: SmData = serde_json::from_slice(&bytes).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        data.last_applied = meta.last_log_id;
        data.membership = meta.last_membership.clone();
        data.kv.set_history_limit(self.history_limit);
        self.persist_snapshot(meta, bytes).await?;
        self.shared.write(|s| *s = data);
        self.shared.notify();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let Some(stored) = meta_get_json::<StoredSnapshotMeta>(&self.db, SNAPSHOT_META)? else {
            return Ok(None);
        };
        let data = meta_get(&self.db, SNAPSHOT_DATA)?.unwrap_or_default();
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
