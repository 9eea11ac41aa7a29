//! Where an installed node keeps its files. Tests point a [`Layout`] at a temporary directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::token::Role;

/// The files of an installed node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The node config every daemon reads (`/etc/capstan/config.yaml`).
    pub config: PathBuf,
    /// The state directory (`/var/lib/capstan`, 0700).
    pub state: PathBuf,
    /// Shipped, read-only files (`/usr/share/capstan`): `install.sh`, `images/`.
    pub share: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            config: "/etc/capstan/config.yaml".into(),
            state: "/var/lib/capstan".into(),
            share: "/usr/share/capstan".into(),
        }
    }
}

impl Layout {
    /// Everything under one directory (tests, `capstan dev`).
    pub fn under(root: &Path) -> Layout {
        Layout {
            config: root.join("etc/config.yaml"),
            state: root.join("state"),
            share: root.join("share"),
        }
    }

    pub fn pki(&self) -> PathBuf {
        self.state.join("pki")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.pki().join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.pki().join("ca.key")
    }
    pub fn node_cert(&self) -> PathBuf {
        self.pki().join("node.pem")
    }
    pub fn node_key(&self) -> PathBuf {
        self.pki().join("node.key")
    }
    /// What this node knows about the cluster it belongs to ([`Membership`]).
    pub fn membership(&self) -> PathBuf {
        self.state.join("cluster/membership.json")
    }
    /// Masters: the packages they hand to joining nodes.
    pub fn packages(&self) -> PathBuf {
        self.state.join("packages")
    }
    pub fn install_script(&self) -> PathBuf {
        self.share.join("install.sh")
    }
    pub fn images(&self) -> PathBuf {
        self.share.join("images")
    }
}

/// This node's membership, written once it has created or joined a cluster; `join` reads it
/// to make a second run change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    pub cluster_id: String,
    pub name: String,
    pub role: Role,
    pub ca_fingerprint: String,
    /// The master it joined through (`host` or `host:port`); empty on the first master.
    #[serde(default)]
    pub server: String,
}

impl Membership {
    pub fn read(layout: &Layout) -> std::io::Result<Option<Membership>> {
        match std::fs::read(layout.membership()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write(&self, layout: &Layout) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_file(&layout.membership(), &text, 0o644)
    }
}

/// Writes `data` to `path` atomically (a temporary file renamed over it) with `mode`, making
/// parent directories (0700 when they are new: they hold keys).
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_written_whole_with_their_mode_and_membership_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        write_file(&layout.node_key(), b"secret", 0o600).unwrap();
        let meta = std::fs::metadata(layout.node_key()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let pki = std::fs::metadata(layout.pki()).unwrap();
        assert_eq!(pki.permissions().mode() & 0o777, 0o700);
        assert_eq!(Membership::read(&layout).unwrap(), None);
        let m = Membership {
            cluster_id: "c".into(),
            name: "n".into(),
            role: Role::Agent,
            ca_fingerprint: "f".into(),
            server: "10.0.0.1".into(),
        };
        m.write(&layout).unwrap();
        assert_eq!(Membership::read(&layout).unwrap(), Some(m));
    }
}
