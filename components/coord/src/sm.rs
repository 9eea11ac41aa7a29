//! The replicated state machine: keys, leases and the watch history, as plain data and
//! functions (no I/O, no tokio). Every member applies the same [`Command`]s in log order and
//! reaches the same [`KvState`]; time never enters it (lease expiry is a `LeaseRevoke`
//! proposed by the leader).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use capstan_coord_client::{
    DeleteRequest, DeleteResponse, Event, EventKind, KeyValue, LeaseGrantResponse, LeaseId,
    LeaseRevokeResponse, PutRequest, PutResponse, TxnOp, TxnOpResult, TxnRequest, TxnResponse,
    validate_key,
};
use serde::{Deserialize, Serialize};

/// A write proposed through raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Put(PutRequest),
    Delete(DeleteRequest),
    Txn(TxnRequest),
    LeaseGrant {
        ttl_ms: u64,
    },
    LeaseRevoke {
        id: LeaseId,
    },
    /// Writes that arrived together at the leader, proposed as one log entry (one fsync)
    /// and applied one after the other exactly as if each had its own entry: each gets its
    /// own revision and result, and one's failure does not affect the others.
    Batch(Vec<Command>),
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ApplyError {
    #[error("version conflict: key is at version {current_version}")]
    Conflict { current_version: u64 },
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// For raft-internal entries (blank, membership).
    None,
    Put(PutResponse),
    Delete(DeleteResponse),
    Txn(TxnResponse),
    LeaseGranted(LeaseGrantResponse),
    LeaseRevoked(LeaseRevokeResponse),
    /// The results of a [`Command::Batch`], in order.
    Batch(Vec<CommandResult>),
}

pub type CommandResult = Result<Outcome, ApplyError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    #[serde(with = "capstan_coord_client::b64")]
    value: Vec<u8>,
    version: u64,
    create_revision: u64,
    lease: Option<LeaseId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ttl_ms: u64,
    pub keys: BTreeSet<String>,
}

/// Error of a watch whose start revision is no longer in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub compact_revision: u64,
}

/// The whole replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    revision: u64,
    kvs: BTreeMap<String, Stored>,
    leases: BTreeMap<LeaseId, Lease>,
    last_lease_id: LeaseId,
    /// Recent changes, in revision order.
    history: VecDeque<Event>,
    /// Changes at or below this revision may be missing from `history`.
    compact_revision: u64,
    history_limit: usize,
    /// Value bytes held by `history` (kept under [`HISTORY_MAX_BYTES`]).
    #[serde(default)]
    history_bytes: usize,
}

/// Upper bound of the value bytes kept in the watch history, whatever its length limit.
pub const HISTORY_MAX_BYTES: usize = 64 << 20;

impl Default for KvState {
    fn default() -> Self {
        KvState::new(10_000)
    }
}

impl KvState {
    /// An empty state keeping the last `history_limit` changes for watches.
    pub fn new(history_limit: usize) -> KvState {
        KvState {
            revision: 0,
            kvs: BTreeMap::new(),
            leases: BTreeMap::new(),
            last_lease_id: 0,
            history: VecDeque::new(),
            compact_revision: 0,
            history_limit: history_limit.max(1),
            history_bytes: 0,
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
        self.history_bytes = self.history.iter().map(|e| e.kv.value.len()).sum();
        self.trim_history();
    }

    /// A copy without watch history, for backups (`snapshot save`).
    pub fn without_history(&self) -> KvState {
        let mut s = self.clone();
        s.history.clear();
        s.history_bytes = 0;
        s.compact_revision = s.revision;
        s
    }

    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kvs.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.kvs.get(key).map(|s| to_kv(key, s))
    }

    /// Up to `limit` keys starting with `prefix` and greater than `after`, plus whether more
    /// follow.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        keys_only: bool,
    ) -> (Vec<KeyValue>, bool) {
        use std::ops::Bound;
        let lower = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut out = Vec::new();
        let mut iter = self
            .kvs
            .range::<String, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        for (k, s) in iter.by_ref() {
            if out.len() == limit {
                return (out, true);
            }
            let mut kv = to_kv(k, s);
            if keys_only {
                kv.value.clear();
            }
            out.push(kv);
        }
        (out, false)
    }

    /// Leases and their TTLs.
    pub fn leases(&self) -> impl Iterator<Item = (LeaseId, u64)> + '_ {
        self.leases.iter().map(|(id, l)| (*id, l.ttl_ms))
    }

    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Changes at revision `from` or later matching `key` (or prefix), at most about
    /// `max_events` (a revision is never split).
    pub fn events_since(
        &self,
        from: u64,
        key: &str,
        prefix: bool,
        max_events: usize,
    ) -> Result<Vec<Event>, Compacted> {
        if from <= self.compact_revision {
            return Err(Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let start = self.history.partition_point(|e| e.revision() < from);
        let mut out: Vec<Event> = Vec::new();
        for e in self.history.range(start..) {
            if out.len() >= max_events && out.last().is_some_and(|l| l.revision() != e.revision()) {
                break;
            }
            let matches = if prefix {
                e.kv.key.starts_with(key)
            } else {
                e.kv.key == key
            };
            if matches {
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Applies one command. A command that fails changes nothing.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::Batch(cmds) => {
                Ok(Outcome::Batch(cmds.iter().map(|c| self.apply(c)).collect()))
            }
            Command::Put(req) => self.put(req),
            Command::Delete(req) => self.delete(req),
            Command::Txn(req) => self.txn(req),
            Command::LeaseGrant { ttl_ms } => {
                if *ttl_ms == 0 {
                    return Err(ApplyError::Invalid("ttl_ms must be positive".into()));
                }
                self.last_lease_id += 1;
                let id = self.last_lease_id;
                self.leases.insert(
                    id,
                    Lease {
                        ttl_ms: *ttl_ms,
                        keys: BTreeSet::new(),
                    },
                );
                Ok(Outcome::LeaseGranted(LeaseGrantResponse {
                    id,
                    ttl_ms: *ttl_ms,
                }))
            }
            Command::LeaseRevoke { id } => {
                let lease = self
                    .leases
                    .remove(id)
                    .ok_or(ApplyError::LeaseNotFound(*id))?;
                if !lease.keys.is_empty() {
                    self.revision += 1;
                    for key in &lease.keys {
                        self.remove_key(key);
                    }
                }
                self.trim_history();
                Ok(Outcome::LeaseRevoked(LeaseRevokeResponse {
                    revision: self.revision,
                }))
            }
        }
    }

    fn version_of(&self, key: &str) -> u64 {
        self.kvs.get(key).map_or(0, |s| s.version)
    }

    fn check_put(&self, key: &str, lease: Option<LeaseId>) -> Result<(), ApplyError> {
        validate_key(key).map_err(ApplyError::Invalid)?;
        if let Some(id) = lease
            && !self.leases.contains_key(&id)
        {
            return Err(ApplyError::LeaseNotFound(id));
        }
        Ok(())
    }

    fn put(&mut self, req: &PutRequest) -> CommandResult {
        self.check_put(&req.key, req.lease)?;
        if let Some(expected) = req.if_version {
            let current_version = self.version_of(&req.key);
            if current_version != expected {
                return Err(ApplyError::Conflict { current_version });
            }
        }
        self.revision += 1;
        let prev = self.write_key(&req.key, req.value.clone(), req.lease);
        self.trim_history();
        Ok(Outcome::Put(PutResponse {
            revision: self.revision,
            prev,
        }))
    }

    fn delete(&mut self, req: &DeleteRequest) -> CommandResult {
        validate_key(&req.key).map_err(ApplyError::Invalid)?;
        let current_version = self.version_of(&req.key);
        if let Some(expected) = req.if_version
            && current_version != expected
        {
            return Err(ApplyError::Conflict { current_version });
        }
        if current_version == 0 {
            return Ok(Outcome::Delete(DeleteResponse {
                revision: self.revision,
                prev: None,
            }));
        }
        self.revision += 1;
        let prev = self.remove_key(&req.key);
        self.trim_history();
        Ok(Outcome::Delete(DeleteResponse {
            revision: self.revision,
            prev,
        }))
    }

    fn txn(&mut self, req: &TxnRequest) -> CommandResult {
        for c in &req.compares {
            validate_key(&c.key).map_err(ApplyError::Invalid)?;
        }
        // Validate both branches up front: an invalid transaction changes nothing, whichever
        // branch would run.
        for ops in [&req.success, &req.failure] {
            let mut written = BTreeSet::new();
            for op in ops {
                match op {
                    TxnOp::Put { key, lease, .. } => {
                        self.check_put(key, *lease)?;
                        if !written.insert(key.as_str()) {
                            return Err(ApplyError::Invalid(format!(
                                "key {key:?} written twice in one branch"
                            )));
                        }
                    }
                    TxnOp::Delete { key } => {
                        validate_key(key).map_err(ApplyError::Invalid)?;
                        if !written.insert(key.as_str()) {
                            return Err(ApplyError::Invalid(format!(
                                "key {key:?} written twice in one branch"
                            )));
                        }
                    }
                    TxnOp::Get { key } => validate_key(key).map_err(ApplyError::Invalid)?,
                }
            }
        }
        let succeeded = req
            .compares
            .iter()
            .all(|c| self.version_of(&c.key) == c.version);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let writes = ops.iter().any(|op| match op {
            TxnOp::Put { .. } => true,
            TxnOp::Delete { key } => self.kvs.contains_key(key),
            TxnOp::Get { .. } => false,
        });
        if writes {
            self.revision += 1;
        }
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let kv = match op {
                TxnOp::Put { key, value, lease } => self.write_key(key, value.clone(), *lease),
                TxnOp::Delete { key } => self.remove_key(key),
                TxnOp::Get { key } => self.get(key),
            };
            results.push(TxnOpResult { kv });
        }
        self.trim_history();
        Ok(Outcome::Txn(TxnResponse {
            succeeded,
            revision: self.revision,
            results,
        }))
    }

    /// Writes `key` at the current revision; returns the previous key.
    fn write_key(&mut self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Option<KeyValue> {
        let revision = self.revision;
        let prev = self.kvs.get(key).cloned();
        if let Some(old) = prev.as_ref().and_then(|p| p.lease)
            && Some(old) != lease
            && let Some(l) = self.leases.get_mut(&old)
        {
            l.keys.remove(key);
        }
        if let Some(id) = lease
            && let Some(l) = self.leases.get_mut(&id)
        {
            l.keys.insert(key.to_string());
        }
        let stored = Stored {
            value,
            version: revision,
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            lease,
        };
        self.history_bytes += stored.value.len();
        self.history.push_back(Event {
            kind: EventKind::Put,
            kv: to_kv(key, &stored),
        });
        self.kvs.insert(key.to_string(), stored);
        prev.map(|p| to_kv(key, &p))
    }

    /// Removes `key` at the current revision; returns it.
    fn remove_key(&mut self, key: &str) -> Option<KeyValue> {
        let old = self.kvs.remove(key)?;
        if let Some(id) = old.lease
            && let Some(l) = self.leases.get_mut(&id)
        {
            l.keys.remove(key);
        }
        self.history.push_back(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_string(),
                value: Vec::new(),
                version: self.revision,
                create_revision: old.create_revision,
                lease: old.lease,
            },
        });
        Some(to_kv(key, &old))
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit || self.history_bytes > HISTORY_MAX_BYTES {
            let Some(e) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= e.kv.value.len();
            self.compact_revision = self.compact_revision.max(e.revision());
        }
        // Never leave half a revision behind.
        while self
            .history
            .front()
            .is_some_and(|front| front.revision() <= self.compact_revision)
        {
            if let Some(e) = self.history.pop_front() {
                self.history_bytes -= e.kv.value.len();
            }
        }
    }
}

fn to_kv(key: &str, s: &Stored) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: s.value.clone(),
        version: s.version,
        create_revision: s.create_revision,
        lease: s.lease,
    }
}

#[cfg(test)]
mod tests {
    use capstan_coord_client::Compare;
    use proptest::prelude::*;

    use super::*;

    fn put(key: &str, value: &str) -> Command {
        Command::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    fn put_if(key: &str, value: &str, version: u64) -> Command {
        Command::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            lease: None,
            if_version: Some(version),
        })
    }

    fn val(s: &KvState, key: &str) -> Option<String> {
        s.get(key).map(|kv| String::from_utf8(kv.value).unwrap())
    }

    #[test]
    fn put_sets_version_to_the_new_revision() {
        let mut s = KvState::default();
        s.apply(&put("/a", "1")).unwrap();
        s.apply(&put("/b", "2")).unwrap();
        s.apply(&put("/a", "3")).unwrap();
        let a = s.get("/a").unwrap();
        assert_eq!((a.version, a.create_revision, s.revision()), (3, 1, 3));
        assert_eq!(val(&s, "/a").as_deref(), Some("3"));
    }

    #[test]
    fn conditional_writes_check_the_version() {
        let cases: &[(&str, Command, Result<u64, u64>)] = &[
            ("create absent", put_if("/new", "x", 0), Ok(2)),
            ("create existing", put_if("/a", "x", 0), Err(1)),
            ("cas right version", put_if("/a", "x", 1), Ok(2)),
            ("cas wrong version", put_if("/a", "x", 7), Err(1)),
            (
                "delete wrong version",
                Command::Delete(DeleteRequest {
                    key: "/a".into(),
                    if_version: Some(9),
                }),
                Err(1),
            ),
            (
                "delete right version",
                Command::Delete(DeleteRequest {
                    key: "/a".into(),
                    if_version: Some(1),
                }),
                Ok(2),
            ),
        ];
        for (name, cmd, want) in cases {
            let mut s = KvState::default();
            s.apply(&put("/a", "1")).unwrap();
            let before = s.clone();
            match (s.apply(cmd), want) {
                (Ok(_), Ok(rev)) => assert_eq!(s.revision(), *rev, "{name}"),
                (Err(ApplyError::Conflict { current_version }), Err(v)) => {
                    assert_eq!(current_version, *v, "{name}");
                    assert_eq!(s, before, "{name}: a conflict changes nothing");
                }
                (got, _) => panic!("{name}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn deleting_an_absent_key_changes_nothing() {
        let mut s = KvState::default();
        let r = s
            .apply(&Command::Delete(DeleteRequest {
                key: "/x".into(),
                if_version: None,
            }))
            .unwrap();
        assert_eq!(
            r,
            Outcome::Delete(DeleteResponse {
                revision: 0,
                prev: None
            })
        );
        assert_eq!(s.revision(), 0);
    }

    #[test]
    fn list_pages_by_prefix_with_continuation() {
        let mut s = KvState::default();
        for k in ["/a/1", "/a/2", "/a/3", "/b/1", "/a"] {
            s.apply(&put(k, "v")).unwrap();
        }
        let (page, more) = s.list("/a/", None, 2, false);
        assert_eq!(
            page.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["/a/1", "/a/2"]
        );
        assert!(more);
        let (page, more) = s.list("/a/", Some("/a/2"), 2, true);
        assert_eq!(
            page.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["/a/3"]
        );
        assert!(page[0].value.is_empty());
        assert!(!more);
    }

    #[test]
    fn txn_applies_the_branch_chosen_by_compares_atomically() {
        let mut s = KvState::default();
        s.apply(&put("/a", "1")).unwrap();
        let txn = |version| {
            Command::Txn(TxnRequest {
                compares: vec![Compare {
                    key: "/a".into(),
                    version,
                }],
                success: vec![
                    TxnOp::Put {
                        key: "/b".into(),
                        value: b"2".to_vec(),
                        lease: None,
                    },
                    TxnOp::Delete { key: "/a".into() },
                ],
                failure: vec![TxnOp::Get { key: "/a".into() }],
            })
        };
        let Outcome::Txn(r) = s.apply(&txn(5)).unwrap() else {
            panic!()
        };
        assert!(!r.succeeded);
        assert_eq!(r.results[0].kv.as_ref().unwrap().key, "/a");
        assert_eq!(s.revision(), 1);
        let Outcome::Txn(r) = s.apply(&txn(1)).unwrap() else {
            panic!()
        };
        assert!(r.succeeded);
        assert_eq!(s.revision(), 2, "all writes of a txn share one revision");
        assert_eq!(val(&s, "/b").as_deref(), Some("2"));
        assert_eq!(s.get("/a"), None);
    }

    #[test]
    fn invalid_txn_changes_nothing() {
        let mut s = KvState::default();
        s.apply(&put("/a", "1")).unwrap();
        let before = s.clone();
        let txn = Command::Txn(TxnRequest {
            compares: vec![],
            success: vec![
                TxnOp::Put {
                    key: "/b".into(),
                    value: vec![],
                    lease: None,
                },
                TxnOp::Put {
                    key: "/c".into(),
                    value: vec![],
                    lease: Some(42),
                },
            ],
            failure: vec![],
        });
        assert_eq!(s.apply(&txn), Err(ApplyError::LeaseNotFound(42)));
        assert_eq!(s, before);
    }

    #[test]
    fn revoking_a_lease_deletes_its_keys() {
        let mut s = KvState::default();
        let Outcome::LeaseGranted(l) = s.apply(&Command::LeaseGrant { ttl_ms: 1000 }).unwrap()
        else {
            panic!()
        };
        s.apply(&Command::Put(PutRequest {
            key: "/e".into(),
            value: vec![1],
            lease: Some(l.id),
            if_version: None,
        }))
        .unwrap();
        s.apply(&put("/keep", "k")).unwrap();
        s.apply(&Command::LeaseRevoke { id: l.id }).unwrap();
        assert_eq!(s.get("/e"), None);
        assert!(s.get("/keep").is_some());
        assert_eq!(
            s.apply(&Command::LeaseRevoke { id: l.id }),
            Err(ApplyError::LeaseNotFound(l.id))
        );
        let evs = s.events_since(1, "/e", false, 100).unwrap();
        assert_eq!(
            evs.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventKind::Put, EventKind::Delete]
        );
    }

    #[test]
    fn rewriting_a_key_without_lease_detaches_it() {
        let mut s = KvState::default();
        s.apply(&Command::LeaseGrant { ttl_ms: 1000 }).unwrap();
        s.apply(&Command::Put(PutRequest {
            key: "/e".into(),
            value: vec![1],
            lease: Some(1),
            if_version: None,
        }))
        .unwrap();
        s.apply(&put("/e", "plain")).unwrap();
        s.apply(&Command::LeaseRevoke { id: 1 }).unwrap();
        assert_eq!(val(&s, "/e").as_deref(), Some("plain"));
    }

    #[test]
    fn watch_history_is_bounded_in_bytes() {
        let mut s = KvState::new(1_000_000);
        let big = vec![0u8; 1 << 20];
        for _ in 0..70 {
            s.apply(&Command::Put(PutRequest {
                key: "/big".into(),
                value: big.clone(),
                ..Default::default()
            }))
            .unwrap();
        }
        assert!(s.history.len() <= 64);
        assert_eq!(s.compact_revision(), s.revision() - s.history.len() as u64);
    }

    #[test]
    fn watch_history_is_ordered_and_compaction_is_reported() {
        let mut s = KvState::new(3);
        for i in 0..5 {
            s.apply(&put("/w/k", &i.to_string())).unwrap();
        }
        assert_eq!(s.compact_revision(), 2);
        assert_eq!(
            s.events_since(2, "/w/", true, 100),
            Err(Compacted {
                compact_revision: 2
            })
        );
        let evs = s.events_since(3, "/w/", true, 100).unwrap();
        assert_eq!(
            evs.iter().map(|e| e.revision()).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(s.events_since(4, "/w/", true, 1).unwrap().len(), 1);
        assert!(s.events_since(6, "/w/", true, 100).unwrap().is_empty());
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        let key = prop::sample::select(vec!["/a", "/b", "/c/d"]);
        prop_oneof![
            (key.clone(), any::<u8>()).prop_map(|(k, v)| put(k, &v.to_string())),
            (key.clone(), 0u64..6).prop_map(|(k, v)| put_if(k, "x", v)),
            (key.clone(), prop::option::of(0u64..6)).prop_map(|(k, v)| Command::Delete(
                DeleteRequest {
                    key: k.into(),
                    if_version: v
                }
            )),
            (1u64..100).prop_map(|ttl_ms| Command::LeaseGrant { ttl_ms }),
            (1u64..4).prop_map(|id| Command::LeaseRevoke { id }),
            (key.clone(), 1u64..4).prop_map(|(k, l)| Command::Put(PutRequest {
                key: k.into(),
                value: vec![],
                lease: Some(l),
                if_version: None
            })),
        ]
    }

    proptest! {
        #[test]
        fn replaying_commands_is_deterministic_and_history_replays_state(cmds in prop::collection::vec(arb_command(), 0..60)) {
            let mut a = KvState::default();
            let mut b = KvState::default();
            for c in &cmds {
                let ra = a.apply(c);
                let rb = b.apply(c);
                prop_assert_eq!(ra, rb);
            }
            prop_assert_eq!(&a, &b);
            // Replaying the change history rebuilds the key set.
            let mut rebuilt: BTreeMap<String, u64> = BTreeMap::new();
            let mut last = 0;
            for e in a.events_since(1, "/", true, usize::MAX).unwrap() {
                prop_assert!(e.revision() >= last);
                last = e.revision();
                match e.kind {
                    EventKind::Put => { rebuilt.insert(e.kv.key.clone(), e.kv.version); }
                    EventKind::Delete => { rebuilt.remove(&e.kv.key); }
                }
            }
            let now: BTreeMap<String, u64> = a.list("/", None, usize::MAX, true).0.into_iter().map(|kv| (kv.key, kv.version)).collect();
            prop_assert_eq!(rebuilt, now);
            // Every key attached to a lease is listed in that lease.
            for kv in a.list("/", None, usize::MAX, true).0 {
                if let Some(l) = kv.lease {
                    prop_assert!(a.lease(l).is_some_and(|l| l.keys.contains(&kv.key)));
                }
            }
        }

        #[test]
        fn a_batch_applies_exactly_like_its_commands_one_by_one(
            cmds in prop::collection::vec(arb_command(), 0..40),
            split in 0usize..40,
        ) {
            let mut one_by_one = KvState::default();
            let singles: Vec<CommandResult> = cmds.iter().map(|c| one_by_one.apply(c)).collect();
            // Some commands alone, the rest as one batch: same state, same per-command results.
            let split = split.min(cmds.len());
            let mut batched = KvState::default();
            let mut results: Vec<CommandResult> = cmds[..split].iter().map(|c| batched.apply(c)).collect();
            match batched.apply(&Command::Batch(cmds[split..].to_vec())) {
                Ok(Outcome::Batch(rs)) => results.extend(rs),
                other => prop_assert!(false, "a batch answers Outcome::Batch, got {:?}", other),
            }
            prop_assert_eq!(results, singles);
            prop_assert_eq!(batched, one_by_one);
        }
    }
}
