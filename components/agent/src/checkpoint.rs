//! The agent's checkpoint: its id, its tasks and containers, its custom executors, and
//! unacknowledged status updates.
//!
//! Layout (format version 2), under `<work_dir>/meta/`:
//! - `agent.json`: `{"version":2,"agent_id":…,"registered":…}`;
//! - `tasks/<task id>.json`: one [`TaskRecord`] per task, `{"version":2,…}`;
//! - `executors/<framework id>@<executor id>.json`: one [`ExecutorRecord`] per custom
//!   executor.
//!
//! Key decision: one small file per task or executor, each replaced atomically (temp file,
//! `fdatasync`, rename, then one `fsync` of each directory a batch touched), instead of one
//! file rewritten whole for every update. A status update costs a write of its own task's
//! record (a few KB) whatever the number of tasks, there is no log to compact, and a crash
//! leaves every record either old or new, never torn. The manager hands the writer
//! [`Batch`]es (every record that changed since the last one, coalesced), so a burst of
//! updates shares its directory syncs. An append log would save the rename but needs
//! checksums, replay and compaction; per-record files keep recovery a plain directory read.
//!
//! Records are compact JSON (protobuf messages inside as base64 protobuf bytes): per-task
//! records are small, so the encoding's size hardly matters next to the fsyncs, while JSON
//! keeps a stuck agent's state readable with `cat` and `jq` and lets later versions add
//! fields with serde defaults.
//!
//! Ids become file names as they are when made of `[A-Za-z0-9._-]` (not starting with a
//! dot, at most 128 bytes), else `~` and their base64url form, else (very long ids) `#` and
//! a hash. Names only need to be stable while the agent runs: the first write after every
//! start is a full one ([`Batch::full`]) that also removes files it did not write.
//!
//! Every file carries `version`. The first migration path: a version-1 checkpoint (one
//! unversioned `agent.json` holding everything) is read as before and rewritten in the
//! current layout when loaded (record files a crash left behind mid-migration are
//! replaced). A checkpoint from a newer agent is refused, not misread.
//!
//! Cost: a batch costs one `fdatasync` per record it changes plus one `fsync` per directory
//! it touches, whatever the number of tasks; updates recorded while a batch is written
//! share the next one.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use capstan_proto::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// The format this agent writes.
pub const FORMAT_VERSION: u32 = 2;
/// The unversioned single-file format of the first agents.
const LEGACY_VERSION: u32 = 1;

/// Everything the agent needs to recover.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub agent_id: String,
    /// Whether a master assigned (or confirmed) `agent_id`.
    #[serde(default)]
    pub registered: bool,
    #[serde(default)]
    pub tasks: Vec<TaskRecord>,
    /// Custom executors (their tasks are in `tasks`).
    #[serde(default)]
    pub executors: Vec<ExecutorRecord>,
}

/// The agent's own record (`agent.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub agent_id: String,
    /// Whether a master assigned (or confirmed) `agent_id`.
    #[serde(default)]
    pub registered: bool,
}

/// One custom executor and its container or process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorRecord {
    pub framework_id: String,
    /// `ExecutorInfo`, base64 protobuf.
    pub executor_info: String,
    /// The framework's `FrameworkInfo` (base64 protobuf), given to the executor again when
    /// it re-subscribes.
    #[serde(default)]
    pub framework_info: Option<String>,
    pub container_id: String,
    /// Docker container name; empty for process executors.
    pub container_name: String,
    pub sandbox: PathBuf,
    pub docker: bool,
    /// The executor's pid (a process executor's process group leader).
    #[serde(default)]
    pub pid: Option<u32>,
    /// When `pid` started (field 22 of `/proc/<pid>/stat`, clock ticks after boot), so a
    /// reused pid is not mistaken for the executor.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// Ids of its tasks.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Tasks not yet handed to it (`TaskInfo`, base64 protobuf): sent once it subscribes.
    #[serde(default)]
    pub queued: Vec<String>,
    /// It was told to shut down.
    #[serde(default)]
    pub shutting_down: bool,
}

/// One task and its container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub framework_id: String,
    /// `TaskInfo`, base64 protobuf.
    pub task_info: String,
    pub executor_id: String,
    pub container_id: String,
    /// Docker container name; empty for process tasks.
    pub container_name: String,
    pub sandbox: PathBuf,
    pub docker: bool,
    /// Ran under a custom executor.
    #[serde(default)]
    pub custom_executor: bool,
    #[serde(default)]
    pub pid: Option<u32>,
    /// `TaskState` number.
    pub state: i32,
    /// Every status sent so far (`TaskStatus`, base64 protobuf), oldest first.
    #[serde(default)]
    pub statuses: Vec<String>,
    /// Status updates not yet acknowledged, oldest first.
    #[serde(default)]
    pub unacknowledged: Vec<String>,
}

/// A custom executor's key: (framework id, executor id).
pub type ExecutorKey = (String, String);

/// Records to write (`Some`) or remove (`None`), applied in one go by a [`CheckpointStore`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Replaces the whole checkpoint: records not in this batch are removed. `agent` must
    /// be set.
    pub full: bool,
    pub agent: Option<AgentRecord>,
    /// By task id.
    pub tasks: Vec<(String, Option<TaskRecord>)>,
    pub executors: Vec<(ExecutorKey, Option<ExecutorRecord>)>,
}

impl Batch {
    /// Whether applying it changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.full && self.agent.is_none() && self.tasks.is_empty() && self.executors.is_empty()
    }
}

/// Why the checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {} is corrupt", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "checkpoint {} has format version {found}; this agent reads versions up to {supported}",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot write checkpoint {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The write did not complete (its thread panicked or the runtime is stopping).
    #[error("the checkpoint writer did not finish")]
    Interrupted,
}

/// Where checkpoints are read from and written to. The manager calls it off the async
/// runtime (in `spawn_blocking`), one call at a time.
pub trait CheckpointStore: Send + 'static {
    /// Reads the checkpoint; `None` when the agent never ran with it.
    fn load(&mut self) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Applies a batch; when this returns `Ok` every record in it is durable.
    fn write(&mut self, batch: &Batch) -> Result<(), CheckpointError>;
}

/// `<work_dir>/meta/agent.json`.
pub fn checkpoint_path(work_dir: &Path) -> PathBuf {
    work_dir.join("meta").join("agent.json")
}

/// Reads the checkpoint of `work_dir` (migrating an older format); `None` when the agent
/// never ran with this work dir.
pub fn load(work_dir: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    FileStore::new(work_dir).load()
}

/// Writes a whole checkpoint, replacing what was there.
pub fn store(work_dir: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    FileStore::new(work_dir).write(&checkpoint.full_batch())
}

impl Checkpoint {
    /// A batch that replaces the stored checkpoint with this one.
    pub fn full_batch(&self) -> Batch {
        Batch {
            full: true,
            agent: Some(AgentRecord {
                agent_id: self.agent_id.clone(),
                registered: self.registered,
            }),
            tasks: self
                .tasks
                .iter()
                .map(|t| {
                    let id = decode_msg::<capstan_proto::mesos::v1::TaskInfo>(&t.task_info)
                        .map(|i| i.task_id.value)
                        .unwrap_or_else(|| t.container_id.clone());
                    (id, Some(t.clone()))
                })
                .collect(),
            executors: self
                .executors
                .iter()
                .map(|e| {
                    let id = decode_msg::<capstan_proto::mesos::v1::ExecutorInfo>(&e.executor_info)
                        .map(|i| i.executor_id.value)
                        .unwrap_or_else(|| e.container_id.clone());
                    ((e.framework_id.clone(), id), Some(e.clone()))
                })
                .collect(),
        }
    }
}

/// The checkpoint in `<work_dir>/meta/` (see the module doc for the layout).
#[derive(Debug, Clone)]
pub struct FileStore {
    meta: PathBuf,
}

const TASKS_DIR: &str = "tasks";
const EXECUTORS_DIR: &str = "executors";
const AGENT_FILE: &str = "agent.json";

/// `agent.json` in any version: version 1 (no `version` field) holds everything.
#[derive(Deserialize)]
struct AgentFile {
    #[serde(default)]
    version: Option<u32>,
    agent_id: String,
    #[serde(default)]
    registered: bool,
    #[serde(default)]
    tasks: Vec<TaskRecord>,
    #[serde(default)]
    executors: Vec<ExecutorRecord>,
}

#[derive(Serialize)]
struct VersionedRef<'a, T> {
    version: u32,
    #[serde(flatten)]
    record: &'a T,
}

#[derive(Deserialize)]
struct Versioned<T> {
    version: u32,
    #[serde(flatten)]
    record: T,
}

impl FileStore {
    pub fn new(work_dir: &Path) -> Self {
        FileStore {
            meta: work_dir.join("meta"),
        }
    }

    fn dir(&self, sub: &str) -> PathBuf {
        self.meta.join(sub)
    }

    /// Reads every record file of a directory (sorted by name; dot files are temp files).
    fn read_records<T: DeserializeOwned>(&self, sub: &str) -> Result<Vec<T>, CheckpointError> {
        let dir = self.dir(sub);
        let mut names = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|source| CheckpointError::Read {
                        path: dir.clone(),
                        source,
                    })?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('.') && name.ends_with(".json") {
                        names.push(name);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CheckpointError::Read { path: dir, source }),
        }
        names.sort();
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(&name);
            let bytes = fs::read(&path).map_err(|source| CheckpointError::Read {
                path: path.clone(),
                source,
            })?;
            let v: Versioned<T> =
                serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Corrupt {
                    path: path.clone(),
                    source,
                })?;
            if v.version != FORMAT_VERSION {
                return Err(CheckpointError::UnsupportedVersion {
                    path,
                    found: v.version,
                    supported: FORMAT_VERSION,
                });
            }
            records.push(v.record);
        }
        Ok(records)
    }

    /// Creates `meta/`, `meta/tasks/` and `meta/executors/` (syncing the parents of what it
    /// created).
    fn ensure_dirs(&self) -> Result<(), CheckpointError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Write { path, source }
        };
        for dir in [
            self.meta.clone(),
            self.dir(TASKS_DIR),
            self.dir(EXECUTORS_DIR),
        ] {
            if dir.is_dir() {
                continue;
            }
            fs::create_dir_all(&dir).map_err(write_err(&dir))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(write_err(parent))?;
            }
        }
        Ok(())
    }

    /// Removes the record files of `sub` that are not in `keep` (and stale temp files).
    fn remove_others(&self, sub: &str, keep: &BTreeSet<String>) -> Result<(), CheckpointError> {
        let dir = self.dir(sub);
        let entries = fs::read_dir(&dir).map_err(|source| CheckpointError::Write {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| CheckpointError::Write {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                remove_file(&dir.join(name))?;
            }
        }
        Ok(())
    }
}

impl CheckpointStore for FileStore {
    fn load(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.meta.join(AGENT_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        let agent: AgentFile =
            serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Corrupt {
                path: path.clone(),
                source,
            })?;
        match agent.version.unwrap_or(LEGACY_VERSION) {
            LEGACY_VERSION => {
                // Version 1: everything is in agent.json; record files (of a migration a
                // crash interrupted) are stale. Rewrite it in the current layout.
                let cp = Checkpoint {
                    agent_id: agent.agent_id,
                    registered: agent.registered,
                    tasks: agent.tasks,
                    executors: agent.executors,
                };
                match self.write(&cp.full_batch()) {
                    Ok(()) => info!(
                        from = LEGACY_VERSION,
                        to = FORMAT_VERSION,
                        tasks = cp.tasks.len(),
                        "Migrated the checkpoint to the current format"
                    ),
                    // Still readable; the manager's first (full) write tries again.
                    Err(e) => warn!(
                        error = %capstan_runtime::Chain(&e),
                        "Cannot rewrite the checkpoint in the current format yet"
                    ),
                }
                Ok(Some(cp))
            }
            FORMAT_VERSION => Ok(Some(Checkpoint {
                agent_id: agent.agent_id,
                registered: agent.registered,
                tasks: self.read_records(TASKS_DIR)?,
                executors: self.read_records(EXECUTORS_DIR)?,
            })),
            found => Err(CheckpointError::UnsupportedVersion {
                path,
                found,
                supported: FORMAT_VERSION,
            }),
        }
    }

    fn write(&mut self, batch: &Batch) -> Result<(), CheckpointError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ensure_dirs()?;
        let (tasks_dir, executors_dir) = (self.dir(TASKS_DIR), self.dir(EXECUTORS_DIR));
        let mut task_names = BTreeSet::new();
        for (task_id, record) in &batch.tasks {
            let name = record_file_name(&[task_id]);
            match record {
                Some(r) => write_record(&tasks_dir, &name, r)?,
                None => remove_file(&tasks_dir.join(&name))?,
            }
            task_names.insert(name);
        }
        let mut executor_names = BTreeSet::new();
        for ((framework_id, executor_id), record) in &batch.executors {
            let name = record_file_name(&[framework_id, executor_id]);
            match record {
                Some(r) => write_record(&executors_dir, &name, r)?,
                None => remove_file(&executors_dir.join(&name))?,
            }
            executor_names.insert(name);
        }
        if batch.full {
            self.remove_others(TASKS_DIR, &task_names)?;
            self.remove_others(EXECUTORS_DIR, &executor_names)?;
        }
        // Records are durable before the agent record that may name a new agent id.
        if batch.full || !batch.tasks.is_empty() {
            sync_dir(&tasks_dir).map_err(|source| CheckpointError::Write {
                path: tasks_dir.clone(),
                source,
            })?;
        }
        if batch.full || !batch.executors.is_empty() {
            sync_dir(&executors_dir).map_err(|source| CheckpointError::Write {
                path: executors_dir.clone(),
                source,
            })?;
        }
        if let Some(agent) = &batch.agent {
            write_record(&self.meta, AGENT_FILE, agent)?;
            sync_dir(&self.meta).map_err(|source| CheckpointError::Write {
                path: self.meta.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// `<version + record>` as compact JSON in `dir/name`, replaced atomically (the directory
/// is synced by the caller).
fn write_record<T: Serialize>(dir: &Path, name: &str, record: &T) -> Result<(), CheckpointError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&VersionedRef {
            version: FORMAT_VERSION,
            record,
        })
        .map_err(std::io::Error::other)?;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        drop(f);
        fs::rename(&tmp, &path)
    };
    write().map_err(|source| CheckpointError::Write { path, source })
}

fn remove_file(path: &Path) -> Result<(), CheckpointError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CheckpointError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The longest name part kept readable, and the longest file name made.
const MAX_PLAIN_ID: usize = 128;
const MAX_FILE_NAME: usize = 200;

/// The file name of a record keyed by `parts` (a task id, or a framework and executor id).
fn record_file_name(parts: &[&str]) -> String {
    let stems: Vec<String> = parts.iter().map(|p| file_stem(p)).collect();
    let joined = stems.join("@");
    if joined.len() <= MAX_FILE_NAME {
        return format!("{joined}.json");
    }
    let raw = parts.join("\u{0}");
    format!(
        "#{:016x}{:016x}.json",
        fnv1a(raw.as_bytes(), 0xcbf2_9ce4_8422_2325),
        fnv1a(raw.as_bytes(), 0x6c62_272e_07bb_0142)
    )
}

/// An id as it is when it is a safe file name, else `~` and its base64url form.
fn file_stem(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= MAX_PLAIN_ID
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        id.to_owned()
    } else {
        format!("~{}", URL_SAFE_NO_PAD.encode(id))
    }
}

/// FNV-1a (64 bit) from `basis`: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8], basis: u64) -> u64 {
    bytes.iter().fold(basis, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// base64 protobuf.
pub fn encode_msg<M: Message>(m: &M) -> String {
    STANDARD.encode(m.encode_to_vec())
}

/// Inverse of [`encode_msg`]; `None` when the text is not a valid message.
pub fn decode_msg<M: Message + Default>(text: &str) -> Option<M> {
    let bytes = STANDARD.decode(text).ok()?;
    M::decode(bytes.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use capstan_proto::mesos::v1::{ExecutorId, ExecutorInfo, TaskId, TaskInfo, TaskStatus};

    use super::*;

    fn task_record(task_id: &str, state: i32) -> TaskRecord {
        let info = TaskInfo {
            name: task_id.into(),
            task_id: TaskId {
                value: task_id.into(),
            },
            ..Default::default()
        };
        let status = TaskStatus {
            task_id: TaskId {
                value: task_id.into(),
            },
            state,
            uuid: Some(vec![1; 16]),
            ..Default::default()
        };
        TaskRecord {
            framework_id: "F".into(),
            task_info: encode_msg(&info),
            executor_id: task_id.into(),
            container_id: format!("c-{task_id}"),
            container_name: format!("mesos-A-S0.c-{task_id}"),
            sandbox: "/s".into(),
            docker: true,
            custom_executor: false,
            pid: None,
            state,
            statuses: vec![encode_msg(&status)],
            unacknowledged: vec![encode_msg(&status)],
        }
    }

    fn executor_record(executor_id: &str) -> ExecutorRecord {
        let info = ExecutorInfo {
            executor_id: ExecutorId {
                value: executor_id.into(),
            },
            ..Default::default()
        };
        ExecutorRecord {
            framework_id: "F".into(),
            executor_info: encode_msg(&info),
            framework_info: None,
            container_id: "e".into(),
            container_name: String::new(),
            sandbox: "/e".into(),
            docker: false,
            pid: Some(42),
            pid_start: Some(7),
            tasks: vec!["t".into()],
            queued: Vec::new(),
            shutting_down: false,
        }
    }

    fn sample() -> Checkpoint {
        Checkpoint {
            agent_id: "A-S0".into(),
            registered: true,
            tasks: vec![task_record("t", 1)],
            executors: vec![executor_record("x")],
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn checkpoint_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let mut cp = sample();
        store(dir.path(), &cp).unwrap();
        assert_eq!(load(dir.path()).unwrap().as_ref(), Some(&cp));
        cp.tasks.clear();
        cp.executors.clear();
        store(dir.path(), &cp).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(cp));
        for sub in ["meta", "meta/tasks", "meta/executors"] {
            let leftovers: Vec<_> = files(&dir.path().join(sub))
                .into_iter()
                .filter(|n| n.ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "{sub}: {leftovers:?}");
        }
        let status = TaskStatus {
            task_id: TaskId { value: "t".into() },
            state: 1,
            uuid: Some(vec![1; 16]),
            ..Default::default()
        };
        let back: TaskStatus = decode_msg(&encode_msg(&status)).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn each_task_and_executor_has_its_own_versioned_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = sample();
        cp.tasks.push(task_record("web.1", 1));
        store(dir.path(), &cp).unwrap();
        let meta = dir.path().join("meta");
        assert_eq!(files(&meta.join("tasks")), ["t.json", "web.1.json"]);
        assert_eq!(files(&meta.join("executors")), ["F@x.json"]);
        for path in [
            meta.join("agent.json"),
            meta.join("tasks/t.json"),
            meta.join("executors/F@x.json"),
        ] {
            let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            assert_eq!(v["version"], FORMAT_VERSION, "{}", path.display());
        }
        let agent: serde_json::Value =
            serde_json::from_slice(&fs::read(meta.join("agent.json")).unwrap()).unwrap();
        assert_eq!(agent["agent_id"], "A-S0");
        assert!(
            agent.get("tasks").is_none(),
            "tasks live in their own files"
        );
    }

    #[test]
    fn a_batch_rewrites_only_the_records_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = sample();
        cp.tasks.push(task_record("u", 1));
        store(dir.path(), &cp).unwrap();
        let t_path = dir.path().join("meta/tasks/t.json");
        let before = fs::read(&t_path).unwrap();
        let mut fs_store = FileStore::new(dir.path());
        fs_store
            .write(&Batch {
                tasks: vec![
                    ("u".into(), Some(task_record("u", 2))),
                    ("gone".into(), None),
                ],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(fs::read(&t_path).unwrap(), before, "t was not rewritten");
        let loaded = fs_store.load().unwrap().unwrap();
        assert_eq!(loaded.tasks.len(), 2);
        assert_eq!(loaded.tasks[1].state, 2);
        fs_store
            .write(&Batch {
                tasks: vec![("u".into(), None)],
                executors: vec![(("F".into(), "x".into()), None)],
                agent: Some(AgentRecord {
                    agent_id: "B-S0".into(),
                    registered: false,
                }),
                ..Default::default()
            })
            .unwrap();
        let loaded = fs_store.load().unwrap().unwrap();
        assert_eq!(loaded.agent_id, "B-S0");
        assert_eq!(loaded.tasks, vec![task_record("t", 1)]);
        assert!(loaded.executors.is_empty());
    }

    #[test]
    fn an_unversioned_checkpoint_is_loaded_and_rewritten_in_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let cp = sample();
        // What the first agents wrote: one pretty-printed file, no version.
        fs::create_dir_all(dir.path().join("meta")).unwrap();
        fs::write(
            checkpoint_path(dir.path()),
            serde_json::to_vec_pretty(&cp).unwrap(),
        )
        .unwrap();
        // A stale record of an interrupted migration is not taken for a task.
        fs::create_dir_all(dir.path().join("meta/tasks")).unwrap();
        fs::write(
            dir.path().join("meta/tasks/stale.json"),
            br#"{"version":2,"framework_id":"F","task_info":"","executor_id":"s","container_id":"s","container_name":"","sandbox":"/s","docker":false,"state":1}"#,
        )
        .unwrap();

        assert_eq!(load(dir.path()).unwrap().as_ref(), Some(&cp));

        let agent: serde_json::Value =
            serde_json::from_slice(&fs::read(checkpoint_path(dir.path())).unwrap()).unwrap();
        assert_eq!(agent["version"], FORMAT_VERSION);
        assert!(agent.get("tasks").is_none());
        assert_eq!(files(&dir.path().join("meta/tasks")), ["t.json"]);
        assert_eq!(files(&dir.path().join("meta/executors")), ["F@x.json"]);
        assert_eq!(
            load(dir.path()).unwrap(),
            Some(cp),
            "and reads back the same"
        );
    }

    #[test]
    fn a_checkpoint_from_a_newer_agent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("meta")).unwrap();
        fs::write(
            checkpoint_path(dir.path()),
            br#"{"version":99,"agent_id":"A-S0"}"#,
        )
        .unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(CheckpointError::UnsupportedVersion { found: 99, .. })
        ));
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("meta")).unwrap();
        fs::write(checkpoint_path(dir.path()), b"{not json").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(CheckpointError::Corrupt { .. })
        ));
        store(dir.path(), &sample()).unwrap();
        fs::write(dir.path().join("meta/tasks/t.json"), b"{\"version\":2").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(CheckpointError::Corrupt { .. })
        ));
    }

    #[test]
    fn any_id_becomes_a_distinct_safe_file_name() {
        let ids = [
            "web.1",
            "../etc/passwd",
            "a/b",
            ".hidden",
            "",
            "ünïcode",
            &"x".repeat(129),
            &"y".repeat(400),
            &"z".repeat(401),
        ];
        let mut seen = BTreeSet::new();
        for id in ids {
            let name = record_file_name(&[id]);
            assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
            assert!(name.len() <= MAX_FILE_NAME + 5, "{name}");
            assert!(seen.insert(name.clone()), "{id} collides: {name}");
        }
        assert_eq!(record_file_name(&["web.1"]), "web.1.json");
        assert_ne!(
            record_file_name(&["a@b", "c"]),
            record_file_name(&["a", "b@c"])
        );
    }
}
