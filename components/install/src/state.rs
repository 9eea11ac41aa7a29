//! The cluster's records in coord, under [`keyspace::CLUSTER`]: its identity (`info`), the
//! first administrator (`admin`), the join tokens (`tokens/<id>`) and the highest coord
//! member id of a removed master (`members/retired`). Every master's bootstrap
//! server reads them, so a token made on one master admits nodes at all of them.

use std::time::{SystemTime, UNIX_EPOCH};

use capstan_coord_client::{Client, ClientError, keyspace};
use capstan_runtime::cluster::ClusterSecurity;

use crate::token::{JoinToken, Role, TokenRecord, TokenRefused};

pub use capstan_types::cluster::{AdminRecord, ClusterInfo};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("coord")]
    Coord(#[from] ClientError),
    #[error("the record at {key} is not valid JSON")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("coord already holds cluster {0}; refusing to overwrite it")]
    OtherCluster(String),
    #[error(transparent)]
    Refused(#[from] TokenRefused),
    #[error("no token {0}")]
    NoSuchToken(String),
    #[error("no master at {0} is a coord member")]
    NoSuchMaster(std::net::IpAddr),
    #[error("this node's TLS identity")]
    Tls(#[from] capstan_runtime::tls::TlsError),
}

/// coord as this node's installer reaches it (`cluster init`, `join`, tokens, upgrades, the
/// bootstrap server): over TLS with the node's certificate when the cluster is strict.
pub fn coord_client<I, S>(security: &ClusterSecurity, endpoints: I) -> Result<Client, StateError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let opts = capstan_coord_client::ClientOptions {
        tls: security.client_tls()?,
        ..capstan_coord_client::ClientOptions::default()
    };
    Ok(Client::with_options(endpoints, opts)?)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn key(name: &str) -> String {
    keyspace::under(keyspace::CLUSTER, name)
}

fn token_key(id: &str) -> String {
    format!("{}/{id}", key("tokens"))
}

/// Typed access to the cluster records.
#[derive(Clone)]
pub struct ClusterState {
    coord: Client,
}

impl ClusterState {
    pub fn new(coord: Client) -> ClusterState {
        ClusterState { coord }
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, StateError> {
        let Some(kv) = self.coord.get(key).await? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&kv.value).map_err(|source| StateError::Corrupt {
            key: key.to_owned(),
            source,
        })?;
        Ok(Some((value, kv.version)))
    }

    pub async fn info(&self) -> Result<Option<ClusterInfo>, StateError> {
        Ok(self.read(&key("info")).await?.map(|(v, _)| v))
    }

    /// Stores the cluster's identity once; storing the same cluster again is a no-op and
    /// another cluster is refused (a coord can hold only one).
    pub async fn create(&self, info: &ClusterInfo, admin: &AdminRecord) -> Result<(), StateError> {
        let body = serde_json::to_vec(info).expect("cluster info serializes");
        match self.coord.create(&key("info"), body, None).await {
            Ok(_) => {}
            Err(ClientError::Conflict { .. }) => match self.info().await? {
                Some(existing) if existing.cluster_id == info.cluster_id => {}
                Some(existing) => return Err(StateError::OtherCluster(existing.cluster_id)),
                None => return Err(StateError::OtherCluster("(unreadable)".into())),
            },
            Err(e) => return Err(e.into()),
        }
        let admin = serde_json::to_vec(admin).expect("admin serializes");
        match self.coord.create(&key("admin"), admin, None).await {
            Ok(_) | Err(ClientError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn admin(&self) -> Result<Option<AdminRecord>, StateError> {
        Ok(self.read(&key("admin")).await?.map(|(v, _)| v))
    }

    pub async fn put_token(&self, record: &TokenRecord) -> Result<(), StateError> {
        let body = serde_json::to_vec(record).expect("token record serializes");
        self.coord.put(&token_key(&record.id), body).await?;
        Ok(())
    }

    /// The token named `id`, revoked and expired ones included.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StateError> {
        Ok(self.read(&token_key(id)).await?.map(|(v, _)| v))
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StateError> {
        let prefix = format!("{}/", key("tokens"));
        let list = self.coord.list_all(&prefix).await?;
        list.kvs
            .into_iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value).map_err(|source| StateError::Corrupt {
                    key: kv.key.clone(),
                    source,
                })
            })
            .collect()
    }

    /// Marks a token revoked (kept, so a node presenting it hears "revoked", not "unknown").
    pub async fn revoke(&self, id: &str) -> Result<TokenRecord, StateError> {
        let Some((mut record, version)) = self.read::<TokenRecord>(&token_key(id)).await? else {
            return Err(StateError::NoSuchToken(id.to_owned()));
        };
        record.revoked = true;
        let body = serde_json::to_vec(&record).expect("token record serializes");
        self.coord
            .compare_and_swap(&token_key(id), version, body)
            .await?;
        Ok(record)
    }

    /// coord's members, `(id, address)` in id order: the cluster's masters as they are now.
    /// A member whose address is not `IP:port` (added by hand) is left out.
    pub async fn members(&self) -> Result<Vec<(u64, std::net::IpAddr)>, StateError> {
        let mut members: Vec<(u64, std::net::IpAddr)> = self
            .coord
            .members()
            .await?
            .members
            .iter()
            .filter_map(|m| Some((m.id, member_ip(&m.addr)?)))
            .collect();
        members.sort_by_key(|(id, _)| *id);
        Ok(members)
    }

    /// The masters' addresses in coord member-id order: the `cluster.masters` list a node
    /// joining now gets.
    pub async fn masters(&self) -> Result<Vec<std::net::IpAddr>, StateError> {
        Ok(self
            .members()
            .await?
            .into_iter()
            .map(|(_, ip)| ip)
            .collect())
    }

    /// Removes the coord member of the master at `ip` (a dead master being replaced);
    /// returns its id. coord keeps serving while the rest hold a quorum.
    pub async fn remove_master(&self, ip: std::net::IpAddr) -> Result<u64, StateError> {
        let Some((id, _)) = self.members().await?.into_iter().find(|(_, m)| *m == ip) else {
            return Err(StateError::NoSuchMaster(ip));
        };
        // Remembered first: the id is never given to another machine, even if this master
        // had the highest.
        let retired = self.retired_member_id().await?.max(id);
        let body =
            serde_json::to_vec(&RetiredMembers { highest: retired }).expect("record serializes");
        self.coord.put(&key("members/retired"), body).await?;
        self.coord.member_remove(id).await?;
        Ok(id)
    }

    /// [`Self::members`] and [`Self::retired_member_id`]: what a joining master's id is
    /// chosen from ([`member_id_for`]).
    pub async fn membership(&self) -> Result<(Vec<(u64, std::net::IpAddr)>, u64), StateError> {
        Ok((self.members().await?, self.retired_member_id().await?))
    }

    /// The highest coord member id of a removed master (0: none was removed).
    pub async fn retired_member_id(&self) -> Result<u64, StateError> {
        Ok(self
            .read::<RetiredMembers>(&key("members/retired"))
            .await?
            .map_or(0, |(r, _)| r.highest))
    }

    /// Adds a master's coord member (it joins as a learner, catches up, then votes).
    pub async fn add_member(&self, id: u64, addr: &str) -> Result<(), StateError> {
        let members = self.coord.members().await?;
        if members
            .members
            .iter()
            .any(|m| m.id == id && m.addr == addr && m.voter)
        {
            return Ok(());
        }
        self.coord.member_add(id, addr).await?;
        Ok(())
    }

    /// Whether `token` admits a node of `role` now.
    pub async fn admit(&self, token: &JoinToken, role: Role) -> Result<TokenRecord, StateError> {
        let Some((record, _)) = self.read::<TokenRecord>(&token_key(&token.id)).await? else {
            return Err(TokenRefused::Unknown.into());
        };
        record.admit(token, role, now_ms())?;
        Ok(record)
    }
}

/// The IP of a coord member address (`IP:port`, `[v6]:port`).
fn member_ip(addr: &str) -> Option<std::net::IpAddr> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The highest member id a removed master had (`<prefix>/members/retired`).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct RetiredMembers {
    highest: u64,
}

/// The coord member id of the master at `ip` among `members` (`(id, ip)`): its own if it is
/// one already (a re-run join), else one above every id in use and above `retired` (the
/// highest id of a removed master), so that a replaced master's id — and its old log, should
/// that machine come back — is never another machine's.
pub fn member_id_for(
    members: &[(u64, std::net::IpAddr)],
    ip: std::net::IpAddr,
    retired: u64,
) -> u64 {
    members
        .iter()
        .find(|(_, m)| *m == ip)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| members.iter().map(|(id, _)| *id).fold(retired, u64::max) + 1)
}

/// PBKDF2-HMAC-SHA256 iterations for stored passwords (OWASP's 2023 figure).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>` for `password`.
pub fn hash_password(password: &str) -> String {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    hash_password_with(password, &salt, PBKDF2_ITERATIONS)
}

fn hash_password_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; 32];
    let n = std::num::NonZeroU32::new(iterations.max(1)).expect("at least one iteration");
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        n,
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

/// Whether `password` matches a [`hash_password`] string.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let [scheme, iterations, salt, hash] = parts.as_slice() else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(hash)) = (
        iterations.parse::<u32>(),
        hex::decode(salt),
        hex::decode(hash),
    ) else {
        return false;
    };
    let Some(n) = std::num::NonZeroU32::new(iterations) else {
        return false;
    };
    *scheme == "pbkdf2-sha256"
        && ring::pbkdf2::verify(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            n,
            &salt,
            password.as_bytes(),
            &hash,
        )
        .is_ok()
}

/// A random password for the first administrator: 20 characters of an unambiguous alphabet.
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joining_master_gets_a_member_id_no_one_ever_had() {
        let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
        let (a, b, c, d) = (
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("10.0.0.3"),
            ip("10.0.0.4"),
        );
        assert_eq!(member_id_for(&[], a, 0), 1, "the first master");
        assert_eq!(member_id_for(&[(1, a), (2, b)], c, 0), 3);
        assert_eq!(
            member_id_for(&[(1, a), (2, b)], b, 0),
            2,
            "a re-run keeps its id"
        );
        // Master 3 died and was removed: its replacement is 4, whatever its address.
        assert_eq!(member_id_for(&[(1, a), (2, b)], d, 3), 4);
        assert_eq!(
            member_id_for(&[(1, a), (2, b)], c, 3),
            4,
            "even at the old address"
        );
        assert_eq!(member_id_for(&[(1, a), (2, b), (4, d)], c, 3), 5);
        assert_eq!(
            member_id_for(&[(2, b), (4, d)], a, 1),
            5,
            "never below the highest id"
        );
        assert_eq!(member_ip("10.0.0.1:8181"), Some(a));
        assert_eq!(member_ip("[fd00::1]:8181"), Some(ip("fd00::1")));
        assert_eq!(member_ip("coord-1:8181"), None);
    }

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let h = hash_password_with("s3cret", b"salt", 1000);
        assert!(h.starts_with("pbkdf2-sha256$1000$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret!", &h));
        for bad in [
            "",
            "x$y",
            "pbkdf2-sha256$0$00$00",
            "md5$1$00$00",
            "pbkdf2-sha256$1$zz$00",
        ] {
            assert!(!verify_password("s3cret", bad), "{bad}");
        }
        let p = generate_password();
        assert_eq!(p.len(), 20);
        assert_ne!(p, generate_password());
    }
}
