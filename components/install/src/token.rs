//! Join tokens: `CSTN1<ca-hash>::<id>.<secret>`.
//!
//! The CA hash is the SHA-256 of the cluster's CA certificate exactly as the masters serve it
//! (`GET /v1/cluster/ca.pem`), in lowercase hex; a joining node fetches that file over an
//! unverified connection, checks the hash, and from then on trusts only that CA — so it knows
//! whom it talks to before it sends the secret (k3s's `K10<ca-hash>::` tokens work the same
//! way). The id names the token (to list and revoke it); the secret is what proves it. Masters
//! keep only the SHA-256 of the secret ([`TokenRecord`]).
//!
//! A token can also be chosen before its cluster exists — by Terraform, a VM's user-data or an
//! operator who hands the same line to every machine at once — and then it cannot name the CA,
//! which `cluster init` has not made yet. That short form, `CSTN1::<id>.<secret>` ([`ShortToken`]),
//! is passed to `cluster init --agent-token/--master-token`; a node joining with it asks the
//! master for a [`ca_proof`] over a fresh nonce and the CA it serves, which only a holder of the
//! token's secret hash can compute, and so still knows whom it talks to before it sends the
//! secret (kubeadm's bootstrap tokens sign the cluster's CA the same way).

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The token format's prefix and version.
pub const PREFIX: &str = "CSTN1";
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 32;
const HASH_LEN: usize = 64;

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the CA certificate PEM, lowercase hex.
    pub ca_hash: String,
    /// The token's name: 8 lowercase hex characters.
    pub id: String,
    /// 32 lowercase hex characters.
    pub secret: String,
}

/// Why a string is not a join token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    #[error("a join token starts with {PREFIX}")]
    Prefix,
    #[error("a join token is {PREFIX}<ca-hash>::<id>.<secret>")]
    Shape,
    #[error("the token's CA hash must be {HASH_LEN} hex characters")]
    CaHash,
    #[error("the token's id must be {ID_LEN} hex characters")]
    Id,
    #[error("the token's secret must be {SECRET_LEN} hex characters")]
    Secret,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl JoinToken {
    /// A new token for the CA whose PEM hashes to `ca_hash`, with a random id and secret.
    pub fn generate(ca_hash: &str) -> JoinToken {
        let mut rng = rand::rng();
        let mut id = [0u8; ID_LEN / 2];
        let mut secret = [0u8; SECRET_LEN / 2];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        JoinToken {
            ca_hash: ca_hash.to_owned(),
            id: hex::encode(id),
            secret: hex::encode(secret),
        }
    }

    /// SHA-256 of the secret, hex: what masters store.
    pub fn secret_hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }
}

/// Splits `CSTN1<ca-hash>::<id>.<secret>`, the CA hash empty in the short form.
fn split_token(s: &str) -> Result<(&str, &str, &str), TokenParseError> {
    let rest = s
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(TokenParseError::Prefix)?;
    let (ca_hash, cred) = rest.split_once("::").ok_or(TokenParseError::Shape)?;
    let (id, secret) = cred.split_once('.').ok_or(TokenParseError::Shape)?;
    if !ca_hash.is_empty() && !is_hex(ca_hash, HASH_LEN) {
        return Err(TokenParseError::CaHash);
    }
    if !is_hex(id, ID_LEN) {
        return Err(TokenParseError::Id);
    }
    if !is_hex(secret, SECRET_LEN) {
        return Err(TokenParseError::Secret);
    }
    Ok((ca_hash, id, secret))
}

impl FromStr for JoinToken {
    type Err = TokenParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ca_hash, id, secret) = split_token(s)?;
        if ca_hash.is_empty() {
            return Err(TokenParseError::CaHash);
        }
        Ok(JoinToken {
            ca_hash: ca_hash.to_owned(),
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// A token chosen before its cluster's CA existed: `CSTN1::<id>.<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ShortToken {
    pub id: String,
    pub secret: String,
}

impl ShortToken {
    /// A new short token with a random id and secret.
    pub fn generate() -> ShortToken {
        let JoinToken { id, secret, .. } = JoinToken::generate("");
        ShortToken { id, secret }
    }

    /// The full token for the CA whose PEM hashes to `ca_hash`.
    pub fn pin(&self, ca_hash: &str) -> JoinToken {
        JoinToken {
            ca_hash: ca_hash.to_owned(),
            id: self.id.clone(),
            secret: self.secret.clone(),
        }
    }

    /// SHA-256 of the secret, hex: what masters store.
    pub fn secret_hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }
}

impl FromStr for ShortToken {
    type Err = TokenParseError;

    /// The short form; a full token is accepted too (its CA hash is dropped).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (_, id, secret) = split_token(s)?;
        Ok(ShortToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

impl fmt::Display for ShortToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}::{}.{}", self.id, self.secret)
    }
}

/// Never prints the secret.
impl fmt::Debug for ShortToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShortToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A token as an operator hands it to a joining node: pinned to a CA, or short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresentedToken {
    Pinned(JoinToken),
    /// The CA is learned from the master, which proves it knows the token ([`ca_proof`]).
    Short(ShortToken),
}

impl PresentedToken {
    pub fn id(&self) -> &str {
        match self {
            PresentedToken::Pinned(t) => &t.id,
            PresentedToken::Short(t) => &t.id,
        }
    }
}

impl FromStr for PresentedToken {
    type Err = TokenParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ca_hash, _, _) = split_token(s)?;
        if ca_hash.is_empty() {
            s.parse().map(PresentedToken::Short)
        } else {
            s.parse().map(PresentedToken::Pinned)
        }
    }
}

impl fmt::Display for PresentedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PresentedToken::Pinned(t) => t.fmt(f),
            PresentedToken::Short(t) => t.fmt(f),
        }
    }
}

/// Length of a [`ca_proof`] nonce: 32 lowercase hex characters (128 random bits).
pub const NONCE_LEN: usize = 32;

/// Whether `nonce` has the shape a [`ca_proof`] takes.
pub fn is_nonce(nonce: &str) -> bool {
    is_hex(nonce, NONCE_LEN)
}

/// A fresh random nonce for [`ca_proof`].
pub fn generate_nonce() -> String {
    let mut bytes = [0u8; NONCE_LEN / 2];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What a master answers `GET /v1/cluster/ca-proof?token=<id>&nonce=<nonce>` with: proof that
/// it knows the token's secret hash, bound to the CA it serves and to the asker's nonce.
///
/// `SHA-256("capstan-ca-proof\n" ‖ secret-hash ‖ "\n" ‖ nonce ‖ "\n" ‖ ca-fingerprint)`, hex.
/// A keyed hash rather than an HMAC so that `install.sh` can check it with `sha256sum` alone
/// (minimal Debian images have no `openssl`); every field has a fixed length and the nonce is
/// fresh and the verifier's own, so a length-extended message never matches one it computes.
pub fn ca_proof(secret_sha256: &str, nonce: &str, ca_fingerprint: &str) -> String {
    sha256_hex(format!("capstan-ca-proof\n{secret_sha256}\n{nonce}\n{ca_fingerprint}").as_bytes())
}

/// Whether `proof` is [`ca_proof`] of `token` for `nonce` and the CA hashing to `ca_fingerprint`.
pub fn check_ca_proof(token: &ShortToken, nonce: &str, ca_fingerprint: &str, proof: &str) -> bool {
    constant_time_eq(
        ca_proof(&token.secret_hash(), nonce, ca_fingerprint).as_bytes(),
        proof.trim().as_bytes(),
    )
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}::{}.{}", self.ca_hash, self.id, self.secret)
    }
}

/// Never prints the secret.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What a token lets its holder become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    Master,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Master => "master",
        }
    }

    /// The systemd target that runs this role's daemons.
    pub fn target(self) -> &'static str {
        match self {
            Role::Agent => "capstan-agent.target",
            Role::Master => "capstan-master.target",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "master" => Ok(Role::Master),
            other => Err(format!("role must be agent or master, not {other:?}")),
        }
    }
}

/// A token as the masters keep it (in coord, under `/capstan/cluster/tokens/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub id: String,
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Why a presented token does not admit its holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("the join token is not known to this cluster")]
    Unknown,
    #[error("the join token {0} was revoked")]
    Revoked(String),
    #[error("the join token {0} expired")]
    Expired(String),
    #[error("the join token {id} is for {allowed} nodes, not {asked} nodes")]
    Role {
        id: String,
        allowed: Role,
        asked: Role,
    },
}

impl TokenRecord {
    /// A record for `token` (its secret is only hashed).
    pub fn new(token: &JoinToken, role: Role, now_ms: u64, ttl_ms: Option<u64>) -> TokenRecord {
        TokenRecord {
            id: token.id.clone(),
            role,
            secret_sha256: token.secret_hash(),
            created_ms: now_ms,
            expires_ms: ttl_ms.map(|t| now_ms.saturating_add(t)),
            revoked: false,
            description: String::new(),
        }
    }

    /// Whether `token` admits a node of `role` at `now_ms`. An unknown id and a wrong secret
    /// are the same answer, so the reply does not tell which ids exist.
    pub fn admit(&self, token: &JoinToken, role: Role, now_ms: u64) -> Result<(), TokenRefused> {
        if !constant_time_eq(
            self.secret_sha256.as_bytes(),
            token.secret_hash().as_bytes(),
        ) {
            return Err(TokenRefused::Unknown);
        }
        if self.revoked {
            return Err(TokenRefused::Revoked(self.id.clone()));
        }
        if self.expires_ms.is_some_and(|e| now_ms >= e) {
            return Err(TokenRefused::Expired(self.id.clone()));
        }
        // A master token may join agents too; an agent token never makes a master.
        if self.role == Role::Agent && role == Role::Master {
            return Err(TokenRefused::Role {
                id: self.id.clone(),
                allowed: self.role,
                asked: role,
            });
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_generated_token_round_trips_through_its_text() {
        let t = JoinToken::generate(HASH);
        let text = t.to_string();
        assert!(text.starts_with("CSTN1"));
        assert_eq!(text.parse::<JoinToken>().unwrap(), t);
        assert!(
            !format!("{t:?}").contains(&t.secret),
            "Debug hides the secret"
        );
    }

    #[test]
    fn malformed_tokens_name_what_is_wrong() {
        let id = "deadbeef";
        let secret = "00112233445566778899aabbccddeeff";
        let cases = [
            ("", TokenParseError::Prefix),
            ("K10abc::x:y", TokenParseError::Prefix),
            ("CSTN1abc", TokenParseError::Shape),
            (
                &format!("CSTN1{HASH}::{id}{secret}"),
                TokenParseError::Shape,
            ),
            (
                &format!("CSTN1{}::{id}.{secret}", &HASH[1..]),
                TokenParseError::CaHash,
            ),
            (
                &format!("CSTN1{}::{id}.{secret}", HASH.to_uppercase()),
                TokenParseError::CaHash,
            ),
            (&format!("CSTN1{HASH}::dead.{secret}"), TokenParseError::Id),
            (
                &format!("CSTN1{HASH}::{id}.{}", &secret[2..]),
                TokenParseError::Secret,
            ),
            (
                &format!("CSTN1{HASH}::{id}.{secret}x"),
                TokenParseError::Secret,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<JoinToken>(), Err(want), "{text:?}");
        }
        let ok = format!(" CSTN1{HASH}::{id}.{secret}\n");
        assert!(
            ok.parse::<JoinToken>().is_ok(),
            "surrounding whitespace is ignored"
        );
    }

    #[test]
    fn short_tokens_round_trip_and_pin_to_a_ca() {
        let short = ShortToken::generate();
        let text = short.to_string();
        assert!(text.starts_with("CSTN1::"), "{text}");
        assert_eq!(text.parse::<ShortToken>().unwrap(), short);
        assert_eq!(
            text.parse::<PresentedToken>().unwrap(),
            PresentedToken::Short(short.clone())
        );
        assert_eq!(
            text.parse::<JoinToken>(),
            Err(TokenParseError::CaHash),
            "a short token is not a pinned one"
        );
        let pinned = short.pin(HASH);
        assert_eq!(pinned.secret_hash(), short.secret_hash());
        assert_eq!(
            pinned.to_string().parse::<PresentedToken>().unwrap(),
            PresentedToken::Pinned(pinned.clone())
        );
        assert!(!format!("{short:?}").contains(&short.secret));
        assert_eq!(
            "CSTN1::dead.00112233445566778899aabbccddeeff".parse::<ShortToken>(),
            Err(TokenParseError::Id)
        );
    }

    #[test]
    fn a_ca_proof_checks_only_for_its_secret_nonce_and_ca() {
        let t = ShortToken::generate();
        let nonce = generate_nonce();
        assert!(is_nonce(&nonce));
        let proof = ca_proof(&t.secret_hash(), &nonce, HASH);
        assert!(check_ca_proof(&t, &nonce, HASH, &proof));
        assert!(check_ca_proof(&t, &nonce, HASH, &format!("{proof}\n")));
        let other_ca = "f".repeat(64);
        assert!(!check_ca_proof(&t, &nonce, &other_ca, &proof), "another CA");
        assert!(
            !check_ca_proof(&t, &generate_nonce(), HASH, &proof),
            "a replay"
        );
        assert!(!check_ca_proof(
            &ShortToken::generate(),
            &nonce,
            HASH,
            &proof
        ));
        // The construction install.sh computes with printf and sha256sum.
        let text = format!("capstan-ca-proof\n{}\n{nonce}\n{HASH}", t.secret_hash());
        assert_eq!(proof, sha256_hex(text.as_bytes()));
    }

    #[test]
    fn records_admit_only_the_right_secret_role_and_time() {
        let t = JoinToken::generate(HASH);
        let agent = TokenRecord::new(&t, Role::Agent, 1_000, Some(500));
        assert_eq!(agent.admit(&t, Role::Agent, 1_200), Ok(()));
        assert_eq!(
            agent.admit(&t, Role::Agent, 1_500),
            Err(TokenRefused::Expired(t.id.clone()))
        );
        assert!(matches!(
            agent.admit(&t, Role::Master, 1_200),
            Err(TokenRefused::Role { .. })
        ));
        let mut wrong = t.clone();
        wrong.secret = "f".repeat(32);
        assert_eq!(
            agent.admit(&wrong, Role::Agent, 1_200),
            Err(TokenRefused::Unknown)
        );
        let mut revoked = agent.clone();
        revoked.revoked = true;
        assert_eq!(
            revoked.admit(&t, Role::Agent, 1_200),
            Err(TokenRefused::Revoked(t.id.clone()))
        );
        let master = TokenRecord::new(&t, Role::Master, 0, None);
        assert_eq!(master.admit(&t, Role::Agent, u64::MAX), Ok(()));
        assert_eq!(master.admit(&t, Role::Master, u64::MAX), Ok(()));
        let never = TokenRecord::new(&t, Role::Agent, u64::MAX - 1, Some(u64::MAX));
        assert_eq!(never.expires_ms, Some(u64::MAX), "expiry saturates");
    }

    #[test]
    fn roles_parse_and_name_their_targets() {
        assert_eq!("agent".parse::<Role>(), Ok(Role::Agent));
        assert_eq!(Role::Master.target(), "capstan-master.target");
        assert!(
            "boss"
                .parse::<Role>()
                .unwrap_err()
                .contains("agent or master")
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_accepts_only_what_it_prints(s in ".{0,120}") {
            if let Ok(t) = s.parse::<JoinToken>() {
                prop_assert_eq!(t.to_string(), s.trim());
            }
        }
    }
}
