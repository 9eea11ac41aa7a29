//! The identity records in coord and their in-memory copy.
//!
//! Layout under the prefix (default `/capstan/router`):
//! - `users/<uid>` — [`UserRecord`]
//! - `service-accounts/<uid>` — [`ServiceAccountRecord`]
//! - `keys/<kid>` — [`KeyRecord`], the signing keys (the current one and those whose tokens may
//!   still be live)
//! - `signing-key` — [`CurrentKey`], which key signs new tokens. Created together with its key in
//!   one transaction that requires it absent, so routers starting at once agree on one key;
//!   rotation replaces it by compare-and-swap on its version.
//! - `admin-imported` — [`AdminImported`], written in the transaction that imported the first
//!   administrator, so a deleted administrator is not re-created at the next start.
//!
//! The [`Cache`] holds every record parsed (keys ready to sign and verify) and the revision at
//! which each coord key last changed, including deletions: changes are applied only when newer,
//! so a router's own writes (applied at once) and the watch (which delivers them again, maybe
//! after other changes) converge on coord's state in any order.

use std::collections::HashMap;

use capstan_coord_client::types::{Event, EventKind, KeyValue};
use serde::{Deserialize, Serialize};

use capstan_types::Role;

use crate::keys::{self, KeyRecord, PublicKey, SigningKey};

/// A user (`users/<uid>`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub uid: String,
    #[serde(default)]
    pub description: String,
    /// argon2id PHC string, or the installer's legacy `pbkdf2-sha256$…` until the first login.
    pub password_hash: String,
    #[serde(default)]
    pub created_ms: u64,
    /// What the user may do; records written before roles existed are administrators'.
    #[serde(default)]
    pub role: Role,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("uid", &self.uid)
            .field("description", &self.description)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A service account (`service-accounts/<uid>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountRecord {
    pub uid: String,
    #[serde(default)]
    pub description: String,
    /// RSA public key, SPKI PEM.
    pub public_key: String,
    #[serde(default)]
    pub created_ms: u64,
    /// What the account may do; records written before roles existed are administrators'.
    #[serde(default)]
    pub role: Role,
}

/// Which key signs new tokens (`signing-key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentKey {
    pub kid: String,
}

/// The first administrator was imported (`admin-imported`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminImported {
    pub uid: String,
    pub imported_ms: u64,
}

/// The coord keys of the records.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `<prefix>/`, what is listed and watched.
    pub root: String,
    users: String,
    accounts: String,
    keys: String,
    pub current: String,
    pub admin_imported: String,
    /// The first administrator's record (`<cluster prefix>/admin`).
    pub cluster_admin: String,
}

impl Paths {
    pub fn new(prefix: &str, cluster_prefix: &str) -> Paths {
        let p = prefix.trim_end_matches('/');
        Paths {
            root: format!("{p}/"),
            users: format!("{p}/users/"),
            accounts: format!("{p}/service-accounts/"),
            keys: format!("{p}/keys/"),
            current: format!("{p}/signing-key"),
            admin_imported: format!("{p}/admin-imported"),
            cluster_admin: capstan_coord_client::keyspace::under(cluster_prefix, "admin"),
        }
    }

    pub fn user(&self, uid: &str) -> String {
        format!("{}{uid}", self.users)
    }

    pub fn account(&self, uid: &str) -> String {
        format!("{}{uid}", self.accounts)
    }

    pub fn key(&self, kid: &str) -> String {
        format!("{}{kid}", self.keys)
    }
}

/// A record with the revision it was written at.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// A service account with its parsed key.
#[derive(Debug, Clone)]
pub struct Account {
    pub record: ServiceAccountRecord,
    pub key: PublicKey,
}

/// The in-memory copy of the records.
#[derive(Debug, Default)]
pub struct Cache {
    users: HashMap<String, Versioned<UserRecord>>,
    accounts: HashMap<String, Versioned<Account>>,
    keys: HashMap<String, Versioned<SigningKey>>,
    current: Option<Versioned<String>>,
    admin_imported: bool,
    /// Revision of the last change applied per coord key (puts and deletes).
    seen: HashMap<String, u64>,
}

enum Slot<'a> {
    User(&'a str),
    Account(&'a str),
    Key(&'a str),
    Current,
    AdminImported,
}

fn slot<'a>(paths: &Paths, key: &'a str) -> Option<Slot<'a>> {
    let leaf = |prefix: &str| {
        key.strip_prefix(prefix)
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
    };
    if let Some(uid) = leaf(&paths.users) {
        Some(Slot::User(uid))
    } else if let Some(uid) = leaf(&paths.accounts) {
        Some(Slot::Account(uid))
    } else if let Some(kid) = leaf(&paths.keys) {
        Some(Slot::Key(kid))
    } else if key == paths.current {
        Some(Slot::Current)
    } else if key == paths.admin_imported {
        Some(Slot::AdminImported)
    } else {
        None
    }
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key, error = %e, "Ignoring a corrupt identity record");
            None
        }
    }
}

impl Cache {
    fn newer(&mut self, key: &str, version: u64) -> bool {
        match self.seen.get(key) {
            Some(seen) if *seen >= version => false,
            _ => {
                self.seen.insert(key.to_owned(), version);
                true
            }
        }
    }

    /// Applies a put of `key` at revision `version` (ignored if not newer than what we have).
    pub fn put(&mut self, paths: &Paths, key: &str, value: &[u8], version: u64) {
        let Some(slot) = slot(paths, key) else {
            return;
        };
        if !self.newer(key, version) {
            return;
        }
        self.remove_slot(&slot);
        match slot {
            Slot::User(uid) => {
                if let Some(r) = parse::<UserRecord>(key, value).filter(|r| r.uid == uid) {
                    self.users
                        .insert(uid.to_owned(), Versioned { value: r, version });
                }
            }
            Slot::Account(uid) => {
                let Some(record) =
                    parse::<ServiceAccountRecord>(key, value).filter(|r| r.uid == uid)
                else {
                    return;
                };
                match keys::parse_public_key(&record.public_key) {
                    Ok(key) => {
                        self.accounts.insert(
                            uid.to_owned(),
                            Versioned {
                                value: Account { record, key },
                                version,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!(uid, error = %e, "Ignoring a service account with a bad key")
                    }
                }
            }
            Slot::Key(kid) => {
                let Some(record) = parse::<KeyRecord>(key, value).filter(|r| r.kid == kid) else {
                    return;
                };
                match keys::load(&record) {
                    Ok(k) => {
                        self.keys
                            .insert(kid.to_owned(), Versioned { value: k, version });
                    }
                    Err(e) => tracing::warn!(kid, error = %e, "Ignoring an unusable signing key"),
                }
            }
            Slot::Current => {
                if let Some(c) = parse::<CurrentKey>(key, value) {
                    self.current = Some(Versioned {
                        value: c.kid,
                        version,
                    });
                }
            }
            Slot::AdminImported => self.admin_imported = true,
        }
    }

    /// Applies a delete of `key` at revision `revision`.
    pub fn delete(&mut self, paths: &Paths, key: &str, revision: u64) {
        let Some(slot) = slot(paths, key) else {
            return;
        };
        if self.newer(key, revision) {
            self.remove_slot(&slot);
        }
    }

    fn remove_slot(&mut self, slot: &Slot<'_>) {
        match slot {
            Slot::User(uid) => {
                self.users.remove(*uid);
            }
            Slot::Account(uid) => {
                self.accounts.remove(*uid);
            }
            Slot::Key(kid) => {
                self.keys.remove(*kid);
            }
            Slot::Current => self.current = None,
            Slot::AdminImported => self.admin_imported = false,
        }
    }

    pub fn apply_events(&mut self, paths: &Paths, events: &[Event]) {
        for ev in events {
            match ev.kind {
                EventKind::Put => self.put(paths, &ev.kv.key, &ev.kv.value, ev.kv.version),
                EventKind::Delete => self.delete(paths, &ev.kv.key, ev.kv.version),
            }
        }
    }

    /// Replaces the contents with a full listing read at `revision`: listed records are put,
    /// and records missing from it that are not newer than `revision` were deleted.
    pub fn reload(&mut self, paths: &Paths, kvs: &[KeyValue], revision: u64) {
        let listed: std::collections::HashSet<&str> =
            kvs.iter().map(|kv| kv.key.as_str()).collect();
        for kv in kvs {
            self.put(paths, &kv.key, &kv.value, kv.version);
        }
        let mut present: Vec<(String, u64)> = Vec::new();
        present.extend(
            self.users
                .iter()
                .map(|(uid, v)| (paths.user(uid), v.version)),
        );
        present.extend(
            self.accounts
                .iter()
                .map(|(uid, v)| (paths.account(uid), v.version)),
        );
        present.extend(self.keys.iter().map(|(kid, v)| (paths.key(kid), v.version)));
        if let Some(c) = &self.current {
            present.push((paths.current.clone(), c.version));
        }
        if self.admin_imported
            && let Some(v) = self.seen.get(&paths.admin_imported)
        {
            present.push((paths.admin_imported.clone(), *v));
        }
        for (key, version) in present {
            if !listed.contains(key.as_str()) && version <= revision {
                self.delete(paths, &key, revision);
            }
        }
    }

    pub fn user(&self, uid: &str) -> Option<&Versioned<UserRecord>> {
        self.users.get(uid)
    }

    pub fn account(&self, uid: &str) -> Option<&Versioned<Account>> {
        self.accounts.get(uid)
    }

    /// Whether `uid` is a user or a service account.
    pub fn principal_exists(&self, uid: &str) -> bool {
        self.users.contains_key(uid) || self.accounts.contains_key(uid)
    }

    pub fn users(&self) -> impl Iterator<Item = &UserRecord> {
        self.users.values().map(|v| &v.value)
    }

    pub fn accounts(&self) -> impl Iterator<Item = &ServiceAccountRecord> {
        self.accounts.values().map(|v| &v.value.record)
    }

    pub fn key(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.get(kid).map(|v| &v.value)
    }

    pub fn keys(&self) -> impl Iterator<Item = &Versioned<SigningKey>> {
        self.keys.values()
    }

    /// The key that signs new tokens, with the version of the `signing-key` record.
    pub fn current(&self) -> Option<(&SigningKey, u64)> {
        let c = self.current.as_ref()?;
        Some((self.key(&c.value)?, c.version))
    }

    pub fn current_kid(&self) -> Option<&Versioned<String>> {
        self.current.as_ref()
    }

    pub fn admin_imported(&self) -> bool {
        self.admin_imported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths::new("/capstan/router", "/capstan/cluster")
    }

    fn user(uid: &str, description: &str) -> Vec<u8> {
        serde_json::to_vec(&UserRecord {
            uid: uid.into(),
            description: description.into(),
            password_hash: "x".into(),
            created_ms: 0,
            role: Role::Admin,
        })
        .unwrap()
    }

    fn kv(key: &str, value: Vec<u8>, version: u64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
            version,
            create_revision: version,
            lease: None,
        }
    }

    #[test]
    fn changes_apply_only_when_newer() {
        let p = paths();
        let mut c = Cache::default();
        let k = p.user("alice");
        c.put(&p, &k, &user("alice", "v5"), 5);
        c.put(&p, &k, &user("alice", "v3"), 3);
        assert_eq!(c.user("alice").unwrap().value.description, "v5");
        c.delete(&p, &k, 4);
        assert!(c.principal_exists("alice"), "a stale delete is ignored");
        c.delete(&p, &k, 6);
        assert!(!c.principal_exists("alice"));
        c.put(&p, &k, &user("alice", "v5"), 5);
        assert!(
            !c.principal_exists("alice"),
            "a stale put after a delete is ignored"
        );
        c.put(&p, &k, &user("alice", "v7"), 7);
        assert_eq!(c.user("alice").unwrap().version, 7);
    }

    #[test]
    fn foreign_corrupt_and_mismatched_records_are_ignored() {
        let p = paths();
        let mut c = Cache::default();
        c.put(&p, "/capstan/router/other", b"{}", 1);
        c.put(&p, &p.user("bob"), b"not json", 2);
        c.put(&p, &p.user("carol"), &user("mallory", ""), 3);
        c.put(&p, "/capstan/router/users/a/b", &user("a/b", ""), 4);
        assert_eq!(c.users().count(), 0);
        assert!(c.current().is_none());
    }

    #[test]
    fn reload_deletes_what_the_listing_lacks_unless_newer() {
        let p = paths();
        let mut c = Cache::default();
        c.put(&p, &p.user("old"), &user("old", ""), 2);
        c.put(&p, &p.user("fresh"), &user("fresh", ""), 20);
        c.reload(&p, &[kv(&p.user("listed"), user("listed", ""), 5)], 10);
        let mut uids: Vec<&str> = c.users().map(|u| u.uid.as_str()).collect();
        uids.sort();
        assert_eq!(uids, ["fresh", "listed"]);
    }
}
