//! [`Iam`]: the identity store's state and operations — start-up (load, signing key, first
//! administrator), the coord watch that keeps the cache current, logins, user and service
//! account changes, key rotation — independent of HTTP (`api.rs` maps requests onto these).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use capstan_coord_client::types::{Compare, TxnOp, TxnRequest, WatchRequest};
use capstan_coord_client::{Client, ClientError};
use capstan_runtime::auth::{Account, Authenticator, Refusal, Verifying};
use capstan_types::Role;
use capstan_types::cluster::AdminRecord;
use tokio_util::sync::CancellationToken;

use crate::Options;
use crate::keys::{self, Jwk, KeyError, KeyRecord};
use crate::limiter::{Limiter, Policy};
use crate::password::{self, HashError};
use crate::store::{AdminImported, Cache, CurrentKey, Paths, ServiceAccountRecord, UserRecord};
use crate::token::{self, Claims, VerifyError};

/// Longest uid accepted.
pub const MAX_UID_BYTES: usize = 96;
/// Longest description accepted.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Password hashes computed at once (argon2id takes tens of MiB and milliseconds each).
const HASHING_PERMITS: usize = 2;
/// Verified tokens remembered at most (a few MiB); beyond it the expired ones go, then all.
const VERIFIED_TOKENS: usize = 4096;
/// How long a retired signing key is kept beyond the token lifetime (clock differences).
const KEY_RETENTION_SLACK: Duration = Duration::from_secs(300);

/// Errors of [`Iam`]'s operations.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("coord")]
    Coord(#[from] ClientError),
    #[error("the record at {key} is not valid JSON")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("no signing key is available")]
    NoSigningKey,
    #[error("a background task failed: {0}")]
    Task(String),
    /// The request is refused for its content (→ 400).
    #[error("{0}")]
    Invalid(String),
    #[error("user {0} does not exist")]
    NoSuchUser(String),
    #[error("service account {0} does not exist")]
    NoSuchAccount(String),
    #[error("{0} already exists")]
    Exists(String),
    /// Somebody else changed the record meanwhile (→ 409).
    #[error("{0} was changed concurrently, try again")]
    Conflict(String),
    #[error("invalid credentials")]
    BadCredentials,
    #[error("too many failed logins, retry in {} s", retry_after.as_secs().max(1))]
    TooManyAttempts { retry_after: Duration },
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct Login {
    pub token: String,
    pub claims: Claims,
    pub description: String,
}

/// A user or service account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub uid: String,
    pub description: String,
    pub role: Role,
    pub is_service: bool,
    /// SPKI PEM, service accounts only.
    pub public_key: Option<String>,
}

/// The identity store. Cheap to clone; [`Iam::verify`] never does I/O.
#[derive(Clone)]
pub struct Iam {
    inner: Arc<Inner>,
}

struct Inner {
    coord: Client,
    opts: Options,
    paths: Paths,
    cache: RwLock<Cache>,
    limits: Mutex<Limits>,
    /// Tokens whose signature already verified, by their exact text (see [`Iam::verify`]).
    verified: Mutex<HashMap<String, Claims>>,
    hashing: tokio::sync::Semaphore,
    started: Instant,
    /// A verifier in some other daemon: it reads the records and never writes them.
    read_only: bool,
    /// Basic credentials that verified, by uid, so a framework's every call does not cost an
    /// argon2 hash.
    basic: Mutex<HashMap<String, RememberedBasic>>,
}

/// A basic credential that verified: the SHA-256 of its secret, the version of the user
/// record it verified against, and when.
#[derive(Clone, Copy)]
struct RememberedBasic {
    digest: [u8; 32],
    version: u64,
    at: Instant,
}

/// How long a verified basic credential is remembered (a changed password or a deleted user
/// ends it at once: the record's version is compared on every call).
const BASIC_REMEMBERED: Duration = Duration::from_secs(300);

struct Limits {
    by_uid: Limiter<String>,
    by_source: Limiter<String>,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A uid as DC/OS allows them: 1 to 96 of `A-Z a-z 0-9 . _ @ -`, starting with a letter or digit.
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_UID_BYTES
        && uid.as_bytes()[0].is_ascii_alphanumeric()
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

fn check_uid(uid: &str) -> Result<(), IamError> {
    if valid_uid(uid) {
        Ok(())
    } else {
        Err(IamError::Invalid(format!(
            "invalid uid {uid:?}: 1 to {MAX_UID_BYTES} characters of A-Z a-z 0-9 . _ @ -, starting with a letter or digit"
        )))
    }
}

fn check_description(d: &str) -> Result<(), IamError> {
    if d.len() > MAX_DESCRIPTION_BYTES || d.chars().any(char::is_control) {
        return Err(IamError::Invalid(format!(
            "the description must be at most {MAX_DESCRIPTION_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_password(p: &str) -> Result<(), IamError> {
    if p.is_empty() || p.len() > password::MAX_PASSWORD_BYTES {
        return Err(IamError::Invalid(format!(
            "the password must be 1 to {} bytes",
            password::MAX_PASSWORD_BYTES
        )));
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Iam {
    /// Loads the records from coord, makes sure there is a signing key (generating one if this
    /// is the first router; routers starting at once agree on one), imports the first
    /// administrator, and keeps the cache current (coord watch) until `shutdown`.
    pub async fn start(
        coord: Client,
        opts: Options,
        shutdown: CancellationToken,
    ) -> Result<Iam, IamError> {
        let iam = Iam::new(coord, opts, false);
        let revision = iam.reload().await?;
        iam.ensure_signing_key().await?;
        if let Err(e) = iam.import_admin().await {
            tracing::warn!(error = %capstan_types::Chain(&e), "Importing the first administrator failed; retried at the next failed login");
        }
        if let Err(e) = iam.prune_keys().await {
            tracing::warn!(error = %capstan_types::Chain(&e), "Pruning old signing keys failed");
        }
        let task = iam.clone();
        tokio::spawn(async move { task.sync(revision, shutdown).await });
        Ok(iam)
    }

    /// The records for verifying credentials in another daemon ([`Iam::verify`] and the
    /// [`Authenticator`] the daemons' guard uses): loaded from coord and kept current until
    /// `shutdown`, never written (no key is generated, no administrator imported, a legacy
    /// hash is not re-hashed). Fails if coord cannot be read.
    pub async fn verifier(
        coord: Client,
        opts: Options,
        shutdown: CancellationToken,
    ) -> Result<Iam, IamError> {
        let iam = Iam::new(coord, opts, true);
        let revision = iam.reload().await?;
        let task = iam.clone();
        tokio::spawn(async move { task.sync(revision, shutdown).await });
        Ok(iam)
    }

    fn new(coord: Client, opts: Options, read_only: bool) -> Iam {
        let paths = Paths::new(&opts.prefix, &opts.cluster_prefix);
        Iam {
            inner: Arc::new(Inner {
                coord,
                opts,
                paths,
                cache: RwLock::new(Cache::default()),
                limits: Mutex::new(Limits {
                    by_uid: Limiter::new(Policy::per_uid()),
                    by_source: Limiter::new(Policy::per_source()),
                }),
                verified: Mutex::new(HashMap::new()),
                hashing: tokio::sync::Semaphore::new(HASHING_PERMITS),
                started: Instant::now(),
                read_only,
                basic: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.inner
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.inner
            .cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Verifies a cluster token: RS256 under a known key, unexpired, our issuer, and its uid
    /// still a user or service account. In memory only.
    ///
    /// The RSA signature check is the expensive part, and a client sends the same token on
    /// every request: a token that verified is remembered by its exact text (so a forged one can
    /// never hit) until it expires; expiry and the uid are checked again on every call. Signing
    /// keys are kept until every token they signed has expired, so a remembered signature
    /// cannot outlive its key.
    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let now = now_secs();
        let remembered = self.verified().get(token).cloned();
        let claims = match remembered {
            Some(claims) if claims.exp > now => claims,
            _ => {
                let cache = self.read();
                let claims =
                    token::verify(token, &self.inner.opts.issuer, now, |kid| cache.key(kid))?;
                drop(cache);
                let mut verified = self.verified();
                if verified.len() >= VERIFIED_TOKENS {
                    verified.retain(|_, c| c.exp > now);
                    if verified.len() >= VERIFIED_TOKENS {
                        verified.clear();
                    }
                }
                verified.insert(token.to_owned(), claims.clone());
                claims
            }
        };
        if !self.read().principal_exists(&claims.uid) {
            return Err(VerifyError::UnknownUser);
        }
        Ok(claims)
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claims>> {
        self.inner
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The public signing keys, current first.
    pub fn jwks(&self) -> Vec<Jwk> {
        let cache = self.read();
        let current = cache.current_kid().map(|c| c.value.clone());
        let mut keys: Vec<_> = cache.keys().map(|k| &k.value).collect();
        keys.sort_by_key(|k| {
            (
                Some(&k.kid) != current.as_ref(),
                std::cmp::Reverse(k.created_ms),
            )
        });
        keys.into_iter().map(|k| k.jwk.clone()).collect()
    }

    /// The kid that signs new tokens.
    pub fn current_kid(&self) -> Option<String> {
        self.read().current().map(|(k, _)| k.kid.clone())
    }

    // ---- loading and watching ----

    /// Reads every record (replacing the cache's view); returns the listing's revision.
    async fn reload(&self) -> Result<u64, IamError> {
        let list = self.inner.coord.list_all(&self.inner.paths.root).await?;
        self.write()
            .reload(&self.inner.paths, &list.kvs, list.revision);
        Ok(list.revision)
    }

    async fn sync(self, mut revision: u64, shutdown: CancellationToken) {
        loop {
            let mut watcher = self.inner.coord.watch(WatchRequest {
                key: self.inner.paths.root.clone(),
                prefix: true,
                start_revision: Some(revision + 1),
            });
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = watcher.next() => next,
                };
                match next {
                    Ok(resp) => {
                        self.write().apply_events(&self.inner.paths, &resp.events);
                        revision = revision.max(resp.revision);
                    }
                    Err(ClientError::Unavailable(why)) => {
                        tracing::debug!(%why, "Identity watch: coord unavailable, retrying");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Identity watch ended; reloading");
                        break;
                    }
                }
            }
            let mut backoff =
                capstan_types::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
            loop {
                match self.reload().await {
                    Ok(r) => {
                        revision = r;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %capstan_types::Chain(&e), "Reloading identity records failed");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                    }
                }
            }
        }
    }

    /// Applies the puts of a successful transaction to the cache at once.
    fn apply_txn(&self, revision: u64, ops: &[TxnOp]) {
        let mut cache = self.write();
        for op in ops {
            match op {
                TxnOp::Put { key, value, .. } => cache.put(&self.inner.paths, key, value, revision),
                TxnOp::Delete { key } => cache.delete(&self.inner.paths, key, revision),
                TxnOp::Get { .. } => {}
            }
        }
    }

    async fn put_if(&self, key: &str, version: u64, value: Vec<u8>) -> Result<(), IamError> {
        let resp = match version {
            0 => self.inner.coord.create(key, value.clone(), None).await,
            v => {
                self.inner
                    .coord
                    .compare_and_swap(key, v, value.clone())
                    .await
            }
        }?;
        self.write()
            .put(&self.inner.paths, key, &value, resp.revision);
        Ok(())
    }

    /// Reads one record straight from coord and caches it (for lookups that may not wait for
    /// the watch, e.g. a login right after the user was created on another router).
    async fn refresh(&self, key: &str) -> Result<(), IamError> {
        let resp = self
            .inner
            .coord
            .get_with(capstan_coord_client::types::GetRequest {
                key: key.to_owned(),
                serializable: false,
            })
            .await?;
        let mut cache = self.write();
        match resp.kv {
            Some(kv) => cache.put(&self.inner.paths, key, &kv.value, kv.version),
            None => cache.delete(&self.inner.paths, key, resp.revision),
        }
        Ok(())
    }

    // ---- signing keys ----

    async fn generate_key() -> Result<KeyRecord, IamError> {
        tokio::task::spawn_blocking(|| keys::generate(now_ms()))
            .await
            .map_err(|e| IamError::Task(e.to_string()))?
            .map_err(IamError::from)
    }

    /// Installs `record` as the signing key if `signing-key` still has version `expected`
    /// (0: absent). Returns false if another router got there first.
    async fn install_key(&self, record: &KeyRecord, expected: u64) -> Result<bool, IamError> {
        let paths = &self.inner.paths;
        let key_path = paths.key(&record.kid);
        let ops = vec![
            TxnOp::Put {
                key: key_path.clone(),
                value: to_json(record),
                lease: None,
            },
            TxnOp::Put {
                key: paths.current.clone(),
                value: to_json(&CurrentKey {
                    kid: record.kid.clone(),
                }),
                lease: None,
            },
        ];
        let resp = self
            .inner
            .coord
            .txn(TxnRequest {
                compares: vec![
                    Compare {
                        key: paths.current.clone(),
                        version: expected,
                    },
                    Compare {
                        key: key_path,
                        version: 0,
                    },
                ],
                success: ops.clone(),
                failure: vec![],
            })
            .await?;
        if resp.succeeded {
            self.apply_txn(resp.revision, &ops);
        }
        Ok(resp.succeeded)
    }

    async fn ensure_signing_key(&self) -> Result<(), IamError> {
        for _ in 0..5 {
            let expected = {
                let cache = self.read();
                if cache.current().is_some() {
                    return Ok(());
                }
                cache.current_kid().map_or(0, |c| c.version)
            };
            if expected != 0 {
                // The pointer names a key we do not have: read both again before replacing it.
                self.refresh(&self.inner.paths.current).await?;
                let kid = self.read().current_kid().map(|c| c.value.clone());
                if let Some(kid) = kid {
                    self.refresh(&self.inner.paths.key(&kid)).await?;
                }
                if self.read().current().is_some() {
                    return Ok(());
                }
                tracing::warn!("The current signing key is missing or unusable; replacing it");
            }
            let expected = self.read().current_kid().map_or(0, |c| c.version);
            let record = Self::generate_key().await?;
            if self.install_key(&record, expected).await? {
                tracing::info!(kid = %record.kid, "Created the cluster's token signing key");
                return Ok(());
            }
            // Another router won: take its key.
            self.refresh(&self.inner.paths.current).await?;
            let kid = self.read().current_kid().map(|c| c.value.clone());
            if let Some(kid) = kid {
                self.refresh(&self.inner.paths.key(&kid)).await?;
            }
        }
        Err(IamError::NoSigningKey)
    }

    /// Replaces the signing key with a new one; old keys keep verifying the tokens they
    /// signed until those expire (they are deleted `token_ttl` after being replaced).
    pub async fn rotate_keys(&self) -> Result<String, IamError> {
        self.refresh(&self.inner.paths.current).await?;
        let expected = self.read().current_kid().map_or(0, |c| c.version);
        let record = Self::generate_key().await?;
        if !self.install_key(&record, expected).await? {
            return Err(IamError::Conflict("the signing key".into()));
        }
        tracing::info!(kid = %record.kid, "Rotated the token signing key");
        if let Err(e) = self.prune_keys().await {
            tracing::warn!(error = %capstan_types::Chain(&e), "Pruning old signing keys failed");
        }
        Ok(record.kid)
    }

    /// Deletes signing keys replaced more than `token_ttl` ago (no live token can name them).
    async fn prune_keys(&self) -> Result<(), IamError> {
        let now = now_ms();
        let keep = self.inner.opts.token_ttl + KEY_RETENTION_SLACK;
        let keep = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        let doomed: Vec<(String, u64)> = {
            let cache = self.read();
            let Some((current, _)) = cache.current() else {
                return Ok(());
            };
            let current = current.kid.clone();
            let all: Vec<(String, u64, u64)> = cache
                .keys()
                .map(|k| (k.value.kid.clone(), k.value.created_ms, k.version))
                .collect();
            all.iter()
                .filter(|(kid, _, _)| *kid != current)
                .filter_map(|(kid, created, version)| {
                    // Replaced when the next newer key was created.
                    let replaced = all
                        .iter()
                        .map(|(_, c, _)| *c)
                        .filter(|c| c > created)
                        .min()?;
                    (now > replaced.saturating_add(keep)).then(|| (kid.clone(), *version))
                })
                .collect()
        };
        for (kid, version) in doomed {
            let key = self.inner.paths.key(&kid);
            match self.inner.coord.delete_if(&key, version).await {
                Ok(resp) => {
                    self.write().delete(&self.inner.paths, &key, resp.revision);
                    tracing::info!(%kid, "Deleted a retired signing key");
                }
                Err(ClientError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    // ---- the first administrator ----

    /// Imports `/capstan/cluster/admin` as a user, once: a transaction creates the user and the
    /// `admin-imported` marker only if both are absent.
    pub async fn import_admin(&self) -> Result<bool, IamError> {
        if self.read().admin_imported() {
            return Ok(false);
        }
        let key = &self.inner.paths.cluster_admin;
        let Some(kv) = self.inner.coord.get(key).await? else {
            return Ok(false);
        };
        let admin: AdminRecord =
            serde_json::from_slice(&kv.value).map_err(|source| IamError::Corrupt {
                key: key.clone(),
                source,
            })?;
        check_uid(&admin.uid)?;
        let paths = &self.inner.paths;
        let user = UserRecord {
            uid: admin.uid.clone(),
            description: "Cluster administrator".into(),
            password_hash: admin.password_hash,
            created_ms: now_ms(),
            role: Role::Admin,
        };
        let ops = vec![
            TxnOp::Put {
                key: paths.user(&admin.uid),
                value: to_json(&user),
                lease: None,
            },
            TxnOp::Put {
                key: paths.admin_imported.clone(),
                value: to_json(&AdminImported {
                    uid: admin.uid.clone(),
                    imported_ms: now_ms(),
                }),
                lease: None,
            },
        ];
        let resp = self
            .inner
            .coord
            .txn(TxnRequest {
                compares: vec![
                    Compare {
                        key: paths.user(&admin.uid),
                        version: 0,
                    },
                    Compare {
                        key: paths.admin_imported.clone(),
                        version: 0,
                    },
                ],
                success: ops.clone(),
                failure: vec![],
            })
            .await?;
        if resp.succeeded {
            self.apply_txn(resp.revision, &ops);
            tracing::info!(uid = %admin.uid, "Imported the first administrator");
        } else {
            self.refresh(&paths.admin_imported).await?;
            self.refresh(&paths.user(&admin.uid)).await?;
        }
        Ok(resp.succeeded)
    }

    // ---- logins ----

    fn mono_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn limiter_check(&self, uid: &str, source: &str) -> Result<(), IamError> {
        let now = self.mono_ms();
        let limits = self
            .inner
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let a = limits.by_uid.check(&uid.to_owned(), now);
        let b = limits.by_source.check(&source.to_owned(), now);
        match (a, b) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(x), Err(y)) => Err(IamError::TooManyAttempts {
                retry_after: x.max(y),
            }),
            (Err(x), _) | (_, Err(x)) => Err(IamError::TooManyAttempts { retry_after: x }),
        }
    }

    fn limiter_record(&self, uid: &str, source: &str, ok: bool) {
        let now = self.mono_ms();
        let mut limits = self
            .inner
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ok {
            limits.by_uid.success(&uid.to_owned());
        } else {
            limits.by_uid.failure(&uid.to_owned(), now);
            limits.by_source.failure(&source.to_owned(), now);
        }
    }

    fn issue(&self, uid: &str, description: String) -> Result<Login, IamError> {
        let cache = self.read();
        let (key, _) = cache.current().ok_or(IamError::NoSigningKey)?;
        let exp = now_secs() + self.inner.opts.token_ttl.as_secs();
        let token = token::issue(key, uid, &self.inner.opts.issuer, exp)
            .map_err(|_| IamError::NoSigningKey)?;
        Ok(Login {
            token,
            claims: Claims {
                uid: uid.to_owned(),
                exp,
                iss: self.inner.opts.issuer.clone(),
            },
            description,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, IamError> {
        let _permit = self
            .inner
            .hashing
            .acquire()
            .await
            .map_err(|e| IamError::Task(e.to_string()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| IamError::Task(e.to_string()))
    }

    /// Logs a user in with a password. `source` is the client's address (for slowing down
    /// repeated failures).
    pub async fn login_password(
        &self,
        uid: &str,
        password: &str,
        source: &str,
    ) -> Result<Login, IamError> {
        self.limiter_check(uid, source)?;
        let ok = if valid_uid(uid) && password.len() <= password::MAX_PASSWORD_BYTES {
            self.try_password(uid, password).await?
        } else {
            None
        };
        self.limiter_record(uid, source, ok.is_some());
        let user = ok.ok_or(IamError::BadCredentials)?;
        self.issue(uid, user.description)
    }

    /// The user if `password` is theirs; re-hashes a legacy hash.
    async fn try_password(
        &self,
        uid: &str,
        password: &str,
    ) -> Result<Option<UserRecord>, IamError> {
        let mut found = self.read().user(uid).cloned();
        if found.is_none() {
            // Not cached: maybe created a moment ago elsewhere, or the admin not imported yet.
            self.refresh(&self.inner.paths.user(uid)).await?;
            if !self.inner.read_only
                && !self.read().admin_imported()
                && let Err(e) = self.import_admin().await
            {
                tracing::warn!(error = %capstan_types::Chain(&e), "Importing the first administrator failed");
            }
            found = self.read().user(uid).cloned();
        }
        let pw = password.to_owned();
        let Some(user) = found else {
            self.blocking(move || password::verify_dummy(&pw)).await?;
            return Ok(None);
        };
        let stored = user.value.password_hash.clone();
        let Some(verified) = self
            .blocking(move || password::verify(&pw, &stored))
            .await?
        else {
            return Ok(None);
        };
        if verified.needs_rehash && !self.inner.read_only {
            let pw = password.to_owned();
            match self.blocking(move || password::hash(&pw)).await? {
                Ok(hash) => {
                    let mut record = user.value.clone();
                    record.password_hash = hash;
                    let key = self.inner.paths.user(uid);
                    match self.put_if(&key, user.version, to_json(&record)).await {
                        Ok(()) => tracing::info!(%uid, "Re-hashed a legacy password to argon2id"),
                        Err(e) => {
                            tracing::warn!(%uid, error = %capstan_types::Chain(&e), "Re-hashing a legacy password failed")
                        }
                    }
                }
                Err(e) => tracing::warn!(%uid, error = %e, "Re-hashing a legacy password failed"),
            }
        }
        Ok(Some(user.value))
    }

    /// Logs a service account in with its login token (RS256 `{uid, exp}` signed by its key).
    pub async fn login_service(
        &self,
        uid: &str,
        login_token: &str,
        source: &str,
    ) -> Result<Login, IamError> {
        self.limiter_check(uid, source)?;
        let mut account = None;
        if valid_uid(uid) {
            if self.read().account(uid).is_none() {
                self.refresh(&self.inner.paths.account(uid)).await?;
            }
            account = self.read().account(uid).map(|a| a.value.clone());
        }
        let ok = account
            .filter(|a| token::verify_service_login(login_token, uid, &a.key, now_secs()).is_ok());
        self.limiter_record(uid, source, ok.is_some());
        let account = ok.ok_or(IamError::BadCredentials)?;
        self.issue(uid, account.record.description)
    }

    // ---- users and service accounts ----

    fn principal(&self, uid: &str, service: bool) -> Option<Principal> {
        let cache = self.read();
        if service {
            cache.account(uid).map(|a| Principal {
                uid: uid.to_owned(),
                description: a.value.record.description.clone(),
                role: a.value.record.role,
                is_service: true,
                public_key: Some(a.value.record.public_key.clone()),
            })
        } else {
            cache.user(uid).map(|u| Principal {
                uid: uid.to_owned(),
                description: u.value.description.clone(),
                role: u.value.role,
                is_service: false,
                public_key: None,
            })
        }
    }

    /// Users (or service accounts), sorted by uid.
    pub fn list(&self, service: bool) -> Vec<Principal> {
        let cache = self.read();
        let mut out: Vec<Principal> = if service {
            cache
                .accounts()
                .map(|a| Principal {
                    uid: a.uid.clone(),
                    description: a.description.clone(),
                    role: a.role,
                    is_service: true,
                    public_key: Some(a.public_key.clone()),
                })
                .collect()
        } else {
            cache
                .users()
                .map(|u| Principal {
                    uid: u.uid.clone(),
                    description: u.description.clone(),
                    role: u.role,
                    is_service: false,
                    public_key: None,
                })
                .collect()
        };
        out.sort_by(|a, b| a.uid.cmp(&b.uid));
        out
    }

    pub fn user(&self, uid: &str) -> Result<Principal, IamError> {
        self.principal(uid, false)
            .ok_or_else(|| IamError::NoSuchUser(uid.to_owned()))
    }

    pub fn service_account(&self, uid: &str) -> Result<Principal, IamError> {
        self.principal(uid, true)
            .ok_or_else(|| IamError::NoSuchAccount(uid.to_owned()))
    }

    /// Users and service accounts share one uid space (a token names only the uid).
    async fn ensure_uid_free(&self, uid: &str) -> Result<(), IamError> {
        self.refresh(&self.inner.paths.user(uid)).await?;
        self.refresh(&self.inner.paths.account(uid)).await?;
        if self.read().principal_exists(uid) {
            return Err(IamError::Exists(uid.to_owned()));
        }
        Ok(())
    }

    fn exists_on_conflict(uid: &str) -> impl FnOnce(IamError) -> IamError + '_ {
        move |e| match e {
            IamError::Coord(ClientError::Conflict { .. }) => IamError::Exists(uid.to_owned()),
            e => e,
        }
    }

    pub async fn create_user(
        &self,
        uid: &str,
        password: &str,
        description: &str,
        role: Role,
    ) -> Result<(), IamError> {
        check_uid(uid)?;
        check_password(password)?;
        check_description(description)?;
        self.ensure_uid_free(uid).await?;
        let pw = password.to_owned();
        let hash = self.blocking(move || password::hash(&pw)).await??;
        let record = UserRecord {
            uid: uid.to_owned(),
            description: description.to_owned(),
            password_hash: hash,
            created_ms: now_ms(),
            role,
        };
        self.put_if(&self.inner.paths.user(uid), 0, to_json(&record))
            .await
            .map_err(Self::exists_on_conflict(uid))?;
        tracing::info!(%uid, "Created a user");
        Ok(())
    }

    /// Changes a user's password, description and/or role.
    pub async fn update_user(
        &self,
        uid: &str,
        password: Option<&str>,
        description: Option<&str>,
        role: Option<Role>,
    ) -> Result<(), IamError> {
        if let Some(p) = password {
            check_password(p)?;
        }
        if let Some(d) = description {
            check_description(d)?;
        }
        let key = self.inner.paths.user(uid);
        self.refresh(&key).await?;
        let current = self
            .read()
            .user(uid)
            .cloned()
            .ok_or_else(|| IamError::NoSuchUser(uid.to_owned()))?;
        let mut record = current.value;
        if let Some(p) = password {
            let pw = p.to_owned();
            record.password_hash = self.blocking(move || password::hash(&pw)).await??;
        }
        if let Some(d) = description {
            record.description = d.to_owned();
        }
        if let Some(r) = role {
            record.role = r;
        }
        self.put_if(&key, current.version, to_json(&record))
            .await
            .map_err(|e| match e {
                IamError::Coord(ClientError::Conflict { .. }) => IamError::Conflict(uid.to_owned()),
                e => e,
            })
    }

    async fn delete_record(&self, key: &str) -> Result<bool, IamError> {
        let resp = self.inner.coord.delete(key).await?;
        self.write().delete(&self.inner.paths, key, resp.revision);
        Ok(resp.prev.is_some())
    }

    pub async fn delete_user(&self, uid: &str) -> Result<(), IamError> {
        if !valid_uid(uid) || !self.delete_record(&self.inner.paths.user(uid)).await? {
            return Err(IamError::NoSuchUser(uid.to_owned()));
        }
        tracing::info!(%uid, "Deleted a user");
        Ok(())
    }

    pub async fn create_service_account(
        &self,
        uid: &str,
        public_key: &str,
        description: &str,
        role: Role,
    ) -> Result<(), IamError> {
        check_uid(uid)?;
        check_description(description)?;
        let key = keys::parse_public_key(public_key)
            .map_err(|e| IamError::Invalid(format!("public_key: {e}")))?;
        self.ensure_uid_free(uid).await?;
        let record = ServiceAccountRecord {
            uid: uid.to_owned(),
            description: description.to_owned(),
            public_key: key.pem,
            created_ms: now_ms(),
            role,
        };
        self.put_if(&self.inner.paths.account(uid), 0, to_json(&record))
            .await
            .map_err(Self::exists_on_conflict(uid))?;
        tracing::info!(%uid, "Created a service account");
        Ok(())
    }

    pub async fn update_service_account(
        &self,
        uid: &str,
        public_key: Option<&str>,
        description: Option<&str>,
        role: Option<Role>,
    ) -> Result<(), IamError> {
        if let Some(d) = description {
            check_description(d)?;
        }
        let new_key = public_key
            .map(|k| {
                keys::parse_public_key(k).map_err(|e| IamError::Invalid(format!("public_key: {e}")))
            })
            .transpose()?;
        let key = self.inner.paths.account(uid);
        self.refresh(&key).await?;
        let current = self
            .read()
            .account(uid)
            .cloned()
            .ok_or_else(|| IamError::NoSuchAccount(uid.to_owned()))?;
        let mut record = current.value.record;
        if let Some(k) = new_key {
            record.public_key = k.pem;
        }
        if let Some(d) = description {
            record.description = d.to_owned();
        }
        if let Some(r) = role {
            record.role = r;
        }
        self.put_if(&key, current.version, to_json(&record))
            .await
            .map_err(|e| match e {
                IamError::Coord(ClientError::Conflict { .. }) => IamError::Conflict(uid.to_owned()),
                e => e,
            })
    }

    pub async fn delete_service_account(&self, uid: &str) -> Result<(), IamError> {
        if !valid_uid(uid) || !self.delete_record(&self.inner.paths.account(uid)).await? {
            return Err(IamError::NoSuchAccount(uid.to_owned()));
        }
        tracing::info!(%uid, "Deleted a service account");
        Ok(())
    }
}

// ---- verifying credentials for the daemons' guard ----

impl Iam {
    /// The role of a user or service account, if it exists.
    pub fn role_of(&self, uid: &str) -> Option<Role> {
        let cache = self.read();
        cache
            .user(uid)
            .map(|u| u.value.role)
            .or_else(|| cache.account(uid).map(|a| a.value.record.role))
    }

    fn basic_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, RememberedBasic>> {
        self.inner
            .basic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// HTTP basic credentials: a user's uid and password, or a service account's uid and a
    /// login token signed by its key. Failures count against the uid as failed logins do.
    pub async fn verify_basic(&self, uid: &str, secret: &str) -> Result<Account, IamError> {
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        let known = self.read().user(uid).map(|u| (u.version, u.value.role));
        if let Some((version, role)) = known {
            let remembered = self.basic_cache().get(uid).copied();
            if let Some(r) = remembered
                && r.digest == digest
                && r.version == version
                && r.at.elapsed() < BASIC_REMEMBERED
            {
                return Ok(Account {
                    uid: uid.to_owned(),
                    role,
                });
            }
        }
        let source = format!("basic:{uid}");
        self.limiter_check(uid, &source)?;
        if !valid_uid(uid) || secret.len() > password::MAX_PASSWORD_BYTES.max(16 * 1024) {
            self.limiter_record(uid, &source, false);
            return Err(IamError::BadCredentials);
        }
        if let Some(account) = self.read().account(uid).map(|a| a.value.clone()) {
            let ok = token::verify_service_login(secret, uid, &account.key, now_secs()).is_ok();
            self.limiter_record(uid, &source, ok);
            return if ok {
                Ok(Account {
                    uid: uid.to_owned(),
                    role: account.record.role,
                })
            } else {
                Err(IamError::BadCredentials)
            };
        }
        let user = self.try_password(uid, secret).await?;
        self.limiter_record(uid, &source, user.is_some());
        let user = user.ok_or(IamError::BadCredentials)?;
        if let Some(version) = self.read().user(uid).map(|u| u.version) {
            let mut cache = self.basic_cache();
            if cache.len() >= VERIFIED_TOKENS {
                cache.clear();
            }
            cache.insert(
                uid.to_owned(),
                RememberedBasic {
                    digest,
                    version,
                    at: Instant::now(),
                },
            );
        }
        Ok(Account {
            uid: uid.to_owned(),
            role: user.role,
        })
    }
}

impl Authenticator for Iam {
    fn verify_token(&self, token: &str) -> Result<Account, Refusal> {
        let claims = self.verify(token).map_err(|e| Refusal(e.to_string()))?;
        let role = self
            .role_of(&claims.uid)
            .ok_or_else(|| Refusal(format!("{} is no longer a user", claims.uid)))?;
        Ok(Account {
            uid: claims.uid,
            role,
        })
    }

    fn verify_basic<'a>(&'a self, principal: &'a str, secret: &'a str) -> Verifying<'a> {
        Box::pin(async move {
            Iam::verify_basic(self, principal, secret)
                .await
                .map_err(|e| match e {
                    IamError::BadCredentials => Refusal("wrong principal or secret".into()),
                    e => Refusal(capstan_types::Chain(&e).to_string()),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_follow_the_dcos_alphabet() {
        for ok in [
            "a",
            "bootstrapuser",
            "alice@example.com",
            "svc-1.x_y",
            &"a".repeat(96),
        ] {
            assert!(valid_uid(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-a",
            "a/b",
            "a b",
            "ä",
            "a\0",
            &"a".repeat(97),
            "a%2f",
        ] {
            assert!(!valid_uid(bad), "{bad}");
        }
    }
}
