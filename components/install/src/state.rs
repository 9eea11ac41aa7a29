//! The cluster's records in coord, under [`keyspace::CLUSTER`]: its identity (`info`), the
//! first administrator (`admin`) and the join tokens (`tokens/<id>`). Every master's bootstrap
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

    /// The masters' addresses in coord member-id order: the `cluster.masters` list a node
    /// joining now gets (the i-th master is coord member i). `None` if coord's member ids
    /// are not 1..=n (a replaced member), which that list cannot express.
    pub async fn masters(&self) -> Result<Option<Vec<std::net::IpAddr>>, StateError> {
        let mut members = self.coord.members().await?.members;
        members.sort_by_key(|m| m.id);
        let mut out = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let host = m.addr.rsplit_once(':').map_or(m.addr.as_str(), |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match host.parse() {
                Ok(ip) if m.id == i as u64 + 1 => out.push(ip),
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
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
