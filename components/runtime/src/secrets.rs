//! Secrets at rest: a daemon's state directory and its secret files (the cluster CA's key, the
//! node key, signing keys, coord's peer secret) must not be open to other users (issue #19).
//! [`check_private_dir`] and [`check_secret_file`] are what a daemon calls before it starts,
//! and refuse with an error that names the path, its mode and the fix; [`create_private_dir`]
//! and [`write_secret_file`] create them with the right modes (0700, 0600) from the start, so
//! a file never exists with wider permissions, even for a moment.
//!
//! Only the permission bits are judged (any group or other bit refuses); ownership is left to
//! the packaging (root, or the user who runs `capstan dev`).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The mode of a state directory.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// The mode of a secret file.
pub const SECRET_FILE_MODE: u32 = 0o600;

/// Why a state directory or secret file may not be used.
#[derive(Debug, thiserror::Error)]
pub enum PermissionError {
    /// The directory can be read or entered by other users.
    #[error(
        "state directory {} is accessible by group or others (mode {mode:04o}); \
         it must be 0700: run `chmod 700 {}`",
        path.display(), path.display()
    )]
    DirTooOpen { path: PathBuf, mode: u32 },
    /// The secret file can be read (or written) by other users.
    #[error(
        "secret file {} is readable by group or others (mode {mode:04o}); \
         it must be 0600: run `chmod 600 {}`",
        path.display(), path.display()
    )]
    FileTooOpen { path: PathBuf, mode: u32 },
    /// The path exists but is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// The path exists but is not a regular file.
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// The path could not be inspected or created.
    #[error("cannot use {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PermissionError + '_ {
    move |source| PermissionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Refuses a directory that group or others can read, write or enter.
pub fn check_private_dir(path: &Path) -> Result<(), PermissionError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_dir() {
        return Err(PermissionError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PermissionError::DirTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Refuses a secret file that group or others can read or write (symbolic links are followed:
/// the file they name is judged).
pub fn check_secret_file(path: &Path) -> Result<(), PermissionError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_file() {
        return Err(PermissionError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PermissionError::FileTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Creates `path` (and missing parents) as a 0700 directory if it does not exist, then checks
/// it with [`check_private_dir`]: an existing directory with wider permissions is refused, not
/// silently changed, so an operator learns that it was exposed.
pub fn create_private_dir(path: &Path) -> Result<(), PermissionError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(io(path))?;
    check_private_dir(path)
}

/// A daemon's state directory at start: created 0700 when missing; when group or others can
/// reach it, refused if it already holds any of the daemon's state (`holds`, names relative to
/// `path`: it may have been exposed, so an operator must look and `chmod`), else narrowed to
/// 0700 (nothing of ours was in it yet, e.g. a fresh directory made under umask 022, or a
/// directory above it is closed to them, as the package's 0700 `/var/lib/capstan`).
pub fn prepare_state_dir(path: &Path, holds: &[&str]) -> Result<(), PermissionError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(io(path))?;
    match check_private_dir(path) {
        Err(PermissionError::DirTooOpen { mode, .. })
            if !holds.iter().any(|h| path.join(h).exists()) || shielded(path) =>
        {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
                .map_err(io(path))?;
            tracing::info!(
                path = %path.display(),
                was = %format!("{mode:04o}"),
                "Narrowed a state directory that holds no state yet to 0700"
            );
            check_private_dir(path)
        }
        other => other,
    }
}

/// True if no group or other user can reach `path`: some directory above it grants them no
/// search (`x`) permission, as the package's 0700 `/var/lib/capstan` does.
fn shielded(path: &Path) -> bool {
    let Ok(full) = std::fs::canonicalize(path) else {
        return false;
    };
    full.ancestors()
        .skip(1)
        .any(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o011 == 0))
}

/// Writes `bytes` to `path` atomically (a temporary file created 0600, then renamed over it),
/// creating missing parent directories 0700.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), PermissionError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(dir)
            .map_err(io(dir))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_FILE_MODE)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_private_dir_passes_and_an_open_one_is_refused_naming_path_and_mode() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        check_private_dir(&dir).unwrap();
        for open in [0o750, 0o705, 0o755, 0o777, 0o710] {
            chmod(&dir, open);
            let err = check_private_dir(&dir).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, PermissionError::DirTooOpen { .. }),
                "{open:o}: {text}"
            );
            assert!(text.contains(&dir.display().to_string()), "{text}");
            assert!(text.contains(&format!("{open:04o}")), "{text}");
            assert!(text.contains("chmod 700"), "{text}");
        }
    }

    #[test]
    fn a_secret_file_readable_by_others_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let key = root.path().join("ca.key");
        std::fs::write(&key, b"secret").unwrap();
        for ok in [0o600, 0o400] {
            chmod(&key, ok);
            check_secret_file(&key).unwrap();
        }
        for open in [0o640, 0o644, 0o604, 0o660, 0o666] {
            chmod(&key, open);
            let err = check_secret_file(&key).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, PermissionError::FileTooOpen { .. }),
                "{open:o}: {text}"
            );
            assert!(text.contains(&key.display().to_string()), "{text}");
            assert!(text.contains(&format!("{open:04o}")), "{text}");
        }
    }

    #[test]
    fn missing_and_wrong_kinds_are_errors_that_name_the_path() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("nope");
        let err = check_secret_file(&missing).unwrap_err();
        assert!(matches!(err, PermissionError::Io { .. }));
        assert!(err.to_string().contains("nope"));
        assert!(matches!(
            check_secret_file(root.path()).unwrap_err(),
            PermissionError::NotAFile { .. }
        ));
        let file = root.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            check_private_dir(&file).unwrap_err(),
            PermissionError::NotADirectory { .. }
        ));
    }

    #[test]
    fn created_dirs_are_0700_and_an_existing_open_one_is_refused_not_changed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/state");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        create_private_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        assert!(matches!(
            create_private_dir(&dir).unwrap_err(),
            PermissionError::DirTooOpen { .. }
        ));
        assert_eq!(mode(&dir), 0o755, "left as found");
    }

    #[test]
    fn a_state_dir_is_narrowed_while_empty_and_refused_once_it_holds_state() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("coord");
        prepare_state_dir(&dir, &["coord.redb"]).unwrap();
        assert_eq!(mode(&dir), 0o700, "created private");
        chmod(&dir, 0o755);
        std::fs::write(dir.join("unrelated"), b"").unwrap();
        prepare_state_dir(&dir, &["coord.redb"]).unwrap();
        assert_eq!(mode(&dir), 0o700, "narrowed: no state in it yet");
        std::fs::write(dir.join("coord.redb"), b"").unwrap();
        chmod(&dir, 0o750);
        let err = prepare_state_dir(&dir, &["coord.redb"]).unwrap_err();
        assert!(
            matches!(err, PermissionError::DirTooOpen { mode: 0o750, .. }),
            "{err}"
        );
        assert_eq!(
            mode(&dir),
            0o750,
            "state that may have been exposed is left as found"
        );
        // Behind a directory others cannot search, nothing was exposed: narrowed.
        chmod(root.path(), 0o700);
        prepare_state_dir(&dir, &["coord.redb"]).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn secret_files_are_written_0600_whatever_the_umask_and_replace_old_ones() {
        let root = tempfile::tempdir().unwrap();
        let key = root.path().join("pki/signing.key");
        write_secret_file(&key, b"one").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&root.path().join("pki")), 0o700);
        chmod(&key, 0o644);
        write_secret_file(&key, b"two").unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"two");
        assert_eq!(mode(&key), 0o600, "a rewrite narrows the mode");
        check_secret_file(&key).unwrap();
    }
}
