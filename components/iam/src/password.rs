//! Password hashes: argon2id (memory-hard, the format every new or changed password gets) and
//! the installer's legacy `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>` (the first
//! administrator's record is written in it, before any router runs). A successful login with a
//! legacy hash re-hashes the password to argon2id ([`Verified::needs_rehash`]).
//!
//! These are CPU-heavy (tens of milliseconds in release builds): callers run them on a blocking
//! thread, never on the async runtime.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// Longest password accepted (argon2 itself has no practical limit; this bounds the work an
/// unauthenticated request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The legacy scheme's prefix.
const PBKDF2_SCHEME: &str = "pbkdf2-sha256";
/// Legacy hashes with more iterations than this are refused rather than computed.
const PBKDF2_MAX_ITERATIONS: u32 = 10_000_000;

/// The outcome of a successful [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The stored hash is not argon2id: store [`hash`] of the password instead.
    pub needs_rehash: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("hashing the password failed: {0}")]
pub struct HashError(String);

/// An argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), random salt.
pub fn hash(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches `stored` (argon2 PHC string or legacy pbkdf2). A malformed
/// stored hash never matches.
pub fn verify(password: &str, stored: &str) -> Option<Verified> {
    if password.len() > MAX_PASSWORD_BYTES {
        return None;
    }
    if stored.starts_with("$argon2") {
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), stored)
            .is_ok();
        let needs_rehash = !stored.starts_with("$argon2id$");
        return ok.then_some(Verified { needs_rehash });
    }
    verify_pbkdf2(password, stored).then_some(Verified { needs_rehash: true })
}

/// A password guaranteed to fail, verified when the uid is unknown so that "no such user"
/// costs as much time as "wrong password".
pub fn verify_dummy(password: &str) {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Some(stored) = DUMMY.get_or_init(|| hash("capstan-dummy-password").ok()) {
        let _ = verify(password, stored);
    }
}

fn verify_pbkdf2(password: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let [scheme, iterations, salt, expected] = parts.as_slice() else {
        return false;
    };
    if *scheme != PBKDF2_SCHEME {
        return false;
    }
    let (Ok(iterations), Ok(salt), Ok(expected)) = (
        iterations.parse::<u32>(),
        hex::decode(salt),
        hex::decode(expected),
    ) else {
        return false;
    };
    if iterations > PBKDF2_MAX_ITERATIONS || expected.is_empty() {
        return false;
    }
    let Some(iterations) = std::num::NonZeroU32::new(iterations) else {
        return false;
    };
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &expected,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The installer's format, computed the way `capstan_install::state::hash_password` does.
    fn legacy(password: &str, salt: &[u8], iterations: u32) -> String {
        let mut out = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(iterations).unwrap(),
            salt,
            password.as_bytes(),
            &mut out,
        );
        format!(
            "pbkdf2-sha256${iterations}${}${}",
            hex::encode(salt),
            hex::encode(out)
        )
    }

    #[test]
    fn argon2id_hashes_verify_only_their_password() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert_eq!(
            verify("s3cret", &h),
            Some(Verified {
                needs_rehash: false
            })
        );
        assert_eq!(verify("s3cret!", &h), None);
        assert_eq!(verify("", &h), None);
        assert_ne!(h, hash("s3cret").unwrap(), "salted");
    }

    #[test]
    fn legacy_pbkdf2_hashes_verify_and_ask_for_a_rehash() {
        let h = legacy("s3cret", b"0123456789abcdef", 1000);
        assert_eq!(verify("s3cret", &h), Some(Verified { needs_rehash: true }));
        assert_eq!(verify("s3cret!", &h), None);
    }

    #[test]
    fn malformed_hashes_never_match() {
        for bad in [
            "",
            "x$y",
            "pbkdf2-sha256$0$00$00",
            "pbkdf2-sha256$1$00$",
            "pbkdf2-sha256$99999999999$00$00",
            "md5$1$00$00",
            "pbkdf2-sha256$1$zz$00",
            "$argon2id$v=19$m=19456,t=2,p=1$bad",
            "$argon2id$",
        ] {
            assert_eq!(verify("s3cret", bad), None, "{bad}");
        }
    }

    #[test]
    fn overlong_passwords_are_refused_without_hashing() {
        let h = hash("x").unwrap();
        assert_eq!(verify(&"x".repeat(MAX_PASSWORD_BYTES + 1), &h), None);
    }
}
