//! Where a dev cluster keeps its files under its state directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::DevError;
use crate::layout::Daemon;

/// The files of one dev cluster:
/// `cluster.json` (what runs where, written by the supervisor), `supervisor.log`,
/// `identity.json` (cluster id and the first administrator's password, 0600), `tls/ca.pem`
/// and `tls/ca.key` (the cluster CA), and per node `nodes/<name>/config.yaml`,
/// `nodes/<name>/<daemon>.log`, `nodes/<name>/data/` and, on masters,
/// `nodes/<name>/tls/{cert,key}.pem` (the router's certificate).
#[derive(Debug, Clone)]
pub struct ClusterPaths {
    root: PathBuf,
}

impl ClusterPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ClusterPaths { root: root.into() }
    }

    /// The default state directory: `$CAPSTAN_DEV_STATE`, else `~/.capstan/dev`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("CAPSTAN_DEV_STATE") {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".capstan").join("dev")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn cluster_json(&self) -> PathBuf {
        self.root.join("cluster.json")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join("supervisor.log")
    }
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node)
    }
    pub fn node_config(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("config.yaml")
    }
    pub fn node_data(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("data")
    }
    pub fn daemon_log(&self, node: &str, daemon: Daemon) -> PathBuf {
        self.node_dir(node).join(format!("{daemon}.log"))
    }
    pub fn identity(&self) -> PathBuf {
        self.root.join("identity.json")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("tls").join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("tls").join("ca.key")
    }
    pub fn node_cert(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("tls").join("cert.pem")
    }
    pub fn node_key(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("tls").join("key.pem")
    }
    /// The abstract unix socket name of the supervisor's control channel: one per state dir.
    pub fn control_name(&self) -> String {
        let canonical = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        format!(
            "capstan-dev-control-{:016x}",
            fnv1a(canonical.as_os_str().as_encoded_bytes())
        )
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes a file so that readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DevError> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with the file's permission bits (`0o600` for secrets: the file never
/// exists with wider ones). Creates the parent directory.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DevError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| DevError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
