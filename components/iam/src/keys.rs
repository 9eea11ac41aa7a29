//! RSA keys: the cluster's token-signing keys (generated here, 2048-bit, kept in coord as PKCS#8
//! PEM) and service accounts' public keys (PEM given by an administrator). Parsing happens once,
//! when a record enters the cache, so signing and verifying never parse PEM again.
//!
//! Key generation uses the `rsa` crate (ring cannot generate RSA keys); signing and verifying go
//! through `jsonwebtoken`, which runs on ring.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};

/// Size of generated signing keys.
pub const SIGNING_KEY_BITS: usize = 2048;
/// Accepted sizes of service-account keys (ring verifies RS256 for 2048..=8192-bit moduli).
const MIN_BITS: u32 = 2048;
const MAX_BITS: u32 = 8192;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating an RSA key failed: {0}")]
    Generate(String),
    #[error("not an RSA key in PEM form ({0})")]
    Parse(String),
    #[error("RSA keys must have {MIN_BITS} to {MAX_BITS} bits, this one has {0}")]
    Size(u32),
}

/// A signing key as stored at `<prefix>/keys/<kid>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub kid: String,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub private_key_pem: String,
    pub created_ms: u64,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// One key of a JWKS document (RFC 7517), RSA public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub kid: String,
    pub n: String,
    pub e: String,
}

/// A parsed signing key.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub created_ms: u64,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    pub jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// A parsed service-account public key.
#[derive(Clone)]
pub struct PublicKey {
    pub(crate) decoding: DecodingKey,
    /// Normalised SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub pem: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").finish_non_exhaustive()
    }
}

/// ring's system random source as the `rand_core` RNG the `rsa` crate asks for.
struct SystemRng(ring::rand::SystemRandom);

#[derive(Debug, thiserror::Error)]
#[error("the system random source failed")]
struct RngFailed;

impl rsa::rand_core::TryRng for SystemRng {
    type Error = RngFailed;

    fn try_next_u32(&mut self) -> Result<u32, RngFailed> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, RngFailed> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngFailed> {
        ring::rand::SecureRandom::fill(&self.0, dst).map_err(|_| RngFailed)
    }
}

impl rsa::rand_core::TryCryptoRng for SystemRng {}

/// A new random key id: 32 hex digits.
pub fn new_kid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Generates a new signing key (CPU-heavy: run it on a blocking thread).
pub fn generate(created_ms: u64) -> Result<KeyRecord, KeyError> {
    let mut rng = SystemRng(ring::rand::SystemRandom::new());
    let key = rsa::PrivateKey::new(&mut rng, SIGNING_KEY_BITS)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(KeyRecord {
        kid: new_kid(),
        private_key_pem: pem.to_string(),
        created_ms,
    })
}

fn jwk(kid: &str, key: &impl PublicKeyParts) -> Jwk {
    Jwk {
        kty: "RSA".into(),
        alg: "RS256".into(),
        use_: "sig".into(),
        kid: kid.into(),
        n: URL_SAFE_NO_PAD.encode(key.n_bytes()),
        e: URL_SAFE_NO_PAD.encode(key.e_bytes()),
    }
}

fn check_size(key: &impl PublicKeyParts) -> Result<(), KeyError> {
    let bits = key.n().bit_width_vartime();
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(KeyError::Size(bits))
    }
}

/// Parses a stored signing key.
pub fn load(record: &KeyRecord) -> Result<SigningKey, KeyError> {
    let key = rsa::PrivateKey::from_pkcs8_pem(&record.private_key_pem)
        .map_err(|e| KeyError::Parse(e.to_string()))?;
    check_size(&key)?;
    let der = key
        .to_pkcs1_der()
        .map_err(|e| KeyError::Parse(e.to_string()))?;
    Ok(SigningKey {
        kid: record.kid.clone(),
        created_ms: record.created_ms,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        decoding: DecodingKey::from_rsa_raw_components(&key.n_bytes(), &key.e_bytes()),
        jwk: jwk(&record.kid, &key),
    })
}

/// Parses a service account's public key: SPKI (`BEGIN PUBLIC KEY`, what `dcos security org
/// service-accounts keypair` writes) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
pub fn parse_public_key(pem: &str) -> Result<PublicKey, KeyError> {
    let pem = pem.trim();
    let key = rsa::PublicKey::from_public_key_pem(pem)
        .or_else(|e| rsa::PublicKey::from_pkcs1_pem(pem).map_err(|_| e))
        .map_err(|e| KeyError::Parse(e.to_string()))?;
    check_size(&key)?;
    let normalised = rsa::pkcs8::EncodePublicKey::to_public_key_pem(&key, LineEnding::LF)
        .map_err(|e| KeyError::Parse(e.to_string()))?;
    Ok(PublicKey {
        decoding: DecodingKey::from_rsa_raw_components(&key.n_bytes(), &key.e_bytes()),
        pem: normalised,
    })
}

/// The public half of a stored signing key, SPKI PEM (tests and tools sign service logins with
/// the private half).
pub fn public_pem(record: &KeyRecord) -> Result<String, KeyError> {
    let key = rsa::PrivateKey::from_pkcs8_pem(&record.private_key_pem)
        .map_err(|e| KeyError::Parse(e.to_string()))?;
    rsa::pkcs8::EncodePublicKey::to_public_key_pem(&key.to_public_key(), LineEnding::LF)
        .map_err(|e| KeyError::Parse(e.to_string()))
}
