//! The token coord members authenticate each other with (`/raft/*` and membership changes).
//!
//! Every member of a cluster is configured with the same secret (coord's `peer_secret` or
//! `peer_secret_file`; an installed master points at the cluster CA's key, which every master
//! already holds). What travels in the [`PEER_TOKEN_HEADER`] header is not the secret but
//! HMAC-SHA256 of a fixed label under it, so a token seen on the wire does not reveal the
//! secret (the CA key signs node certificates). The server compares tokens in constant time.

use std::path::Path;

/// Header carrying a member's (or an administrator's) peer token.
pub const PEER_TOKEN_HEADER: &str = "x-capstan-coord-peer";

/// Shortest secret accepted, in bytes (after trimming surrounding whitespace).
pub const MIN_PEER_SECRET_BYTES: usize = 16;

const LABEL: &[u8] = b"capstan coord peer token v1";

/// A peer token (64 lowercase hex digits). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerToken(String);

/// Why a peer secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerSecretError {
    #[error("cannot read the coord peer secret file {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the coord peer secret file {path} can be read by group or others (mode {mode:o}); make it 0600"
    )]
    Permissions { path: std::path::PathBuf, mode: u32 },
    #[error("the coord peer secret must be at least {MIN_PEER_SECRET_BYTES} bytes")]
    TooShort,
}

impl PeerToken {
    /// The token of the cluster whose secret is `secret` (surrounding whitespace ignored, so a
    /// file's trailing newline does not matter).
    pub fn derive(secret: &[u8]) -> Result<PeerToken, PeerSecretError> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_PEER_SECRET_BYTES {
            return Err(PeerSecretError::TooShort);
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&key, LABEL);
        Ok(PeerToken(hex(tag.as_ref())))
    }

    /// The token of the secret in `path`, which must not be readable by group or others.
    pub fn from_file(path: &Path) -> Result<PeerToken, PeerSecretError> {
        use std::os::unix::fs::PermissionsExt as _;
        let read = |source| PeerSecretError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(PeerSecretError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        PeerToken::derive(&bytes)
    }

    /// A token nobody else knows (a member with no configured secret accepts no peer).
    pub fn random() -> PeerToken {
        use ring::rand::SecureRandom as _;
        let mut bytes = [0u8; 32];
        // SystemRandom only fails if the OS has no randomness source at all.
        if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes[..16].copy_from_slice(&nanos.to_le_bytes());
            bytes[16..24].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes);
        PeerToken(hex(ring::hmac::sign(&key, LABEL).as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if `presented` is this token; takes the same time wherever the two differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        let diff = expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for PeerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerToken(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_the_secret_only_and_hide_it() {
        let a = PeerToken::derive(b"0123456789abcdef-secret\n").unwrap();
        let b = PeerToken::derive(b"  0123456789abcdef-secret").unwrap();
        assert_eq!(a, b, "surrounding whitespace is ignored");
        assert_eq!(a.as_str().len(), 64);
        assert!(!a.as_str().contains("secret"));
        let c = PeerToken::derive(b"0123456789abcdef-other").unwrap();
        assert_ne!(a, c);
        assert!(a.matches(a.as_str().as_bytes()));
        assert!(!a.matches(c.as_str().as_bytes()));
        assert!(!a.matches(b""));
        assert!(!a.matches(&a.as_str().as_bytes()[..63]));
        assert!(matches!(
            PeerToken::derive(b"short"),
            Err(PeerSecretError::TooShort)
        ));
        assert_ne!(PeerToken::random(), PeerToken::random());
        assert_eq!(format!("{a:?}"), "PeerToken(..)");
    }

    #[test]
    fn a_secret_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("peer-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "0123456789abcdef-secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            PeerToken::from_file(&path),
            Err(PeerSecretError::Permissions { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            PeerToken::from_file(&path).unwrap(),
            PeerToken::derive(b"0123456789abcdef-secret").unwrap()
        );
        assert!(matches!(
            PeerToken::from_file(&dir.join("missing")),
            Err(PeerSecretError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
