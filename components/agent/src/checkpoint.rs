//! The agent's checkpoint: its id, its tasks and containers, its custom executors, and
//! unacknowledged status updates, in one JSON file written atomically (temp file + fsync + rename + directory
//! fsync), so a crash leaves either the old or the new state, never a torn one.
//! Protobuf messages are stored as base64 protobuf bytes.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use capstan_proto::Message;
use serde::{Deserialize, Serialize};

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
    #[error("cannot write checkpoint {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `<work_dir>/meta/agent.json`.
pub fn checkpoint_path(work_dir: &Path) -> PathBuf {
    work_dir.join("meta").join("agent.json")
}

/// Reads the checkpoint; `None` when the agent never ran with this work dir.
pub fn load(work_dir: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = checkpoint_path(work_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Read { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CheckpointError::Corrupt { path, source })
}

/// Writes the checkpoint atomically.
pub fn store(work_dir: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let path = checkpoint_path(work_dir);
    let write = || -> std::io::Result<()> {
        let dir = path.parent().expect("checkpoint path has a parent");
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".agent.json.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec_pretty(checkpoint).map_err(std::io::Error::other)?;
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    };
    write().map_err(|source| CheckpointError::Write {
        path: path.clone(),
        source,
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
    use capstan_proto::mesos::v1::{TaskId, TaskStatus};

    use super::*;

    #[test]
    fn checkpoint_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let status = TaskStatus {
            task_id: TaskId { value: "t".into() },
            state: 1,
            uuid: Some(vec![1; 16]),
            ..Default::default()
        };
        let mut cp = Checkpoint {
            agent_id: "A-S0".into(),
            registered: true,
            tasks: vec![TaskRecord {
                framework_id: "F".into(),
                task_info: String::new(),
                executor_id: "t".into(),
                container_id: "c".into(),
                container_name: "mesos-A-S0.c".into(),
                sandbox: "/s".into(),
                docker: true,
                custom_executor: false,
                pid: None,
                state: 1,
                statuses: vec![encode_msg(&status)],
                unacknowledged: vec![encode_msg(&status)],
            }],
            executors: vec![ExecutorRecord {
                framework_id: "F".into(),
                executor_info: String::new(),
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
            }],
        };
        store(dir.path(), &cp).unwrap();
        assert_eq!(load(dir.path()).unwrap().as_ref(), Some(&cp));
        cp.tasks.clear();
        cp.executors.clear();
        store(dir.path(), &cp).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(cp));
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("meta"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        let back: TaskStatus = decode_msg(&encode_msg(&status)).unwrap();
        assert_eq!(back, status);
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
    }
}
