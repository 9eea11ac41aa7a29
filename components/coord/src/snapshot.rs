//! Backups (`snapshot save`) and offline restore into a fresh data directory.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sm::KvState;
use crate::store;

const FORMAT: &str = "capstan-coord-backup/1";

/// The content of a `snapshot save` file: every key and lease, without watch history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    pub format: String,
    pub revision: u64,
    pub state: KvState,
}

impl Backup {
    pub fn new(state: KvState) -> Backup {
        Backup {
            format: FORMAT.to_string(),
            revision: state.revision(),
            state,
        }
    }
}

/// Error of [`restore`].
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("not a coord backup: {0}")]
    Format(String),
    #[error(transparent)]
    Open(#[from] store::OpenError),
    #[error("data directory {0} already holds coord state; restore needs a fresh directory")]
    NotFresh(String),
    #[error("cannot write the restored state")]
    Write(#[source] redb::Error),
}

/// Writes the backup `bytes` into the fresh `data_dir` as the initial state. Restore the same
/// file into the data directory of every initial member of the new cluster (or into one
/// member of a 1-member cluster and grow it with `member add`).
pub fn restore(bytes: &[u8], data_dir: &Path) -> Result<Backup, RestoreError> {
    let backup: Backup =
        serde_json::from_slice(bytes).map_err(|e| RestoreError::Format(e.to_string()))?;
    if backup.format != FORMAT {
        return Err(RestoreError::Format(format!(
            "unknown format {:?}",
            backup.format
        )));
    }
    let db = store::open_db(data_dir)?;
    if !store::is_fresh(&db).map_err(RestoreError::Write)? {
        return Err(RestoreError::NotFresh(data_dir.display().to_string()));
    }
    store::write_seed(&db, &backup.state).map_err(RestoreError::Write)?;
    Ok(backup)
}
