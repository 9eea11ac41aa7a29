//! Leader election on top of leases and create-if-absent.
//!
//! Each candidate creates `<prefix>/<lease id as 16 hex digits>` attached to its lease; the
//! leader is the candidate whose key has the lowest `create_revision`. A candidate waits for
//! the key just before its own to disappear (resign, lease expiry). The value of a key is the
//! candidate's payload, typically its address.
//!
//! Failure detection: a lease alone makes a standby wait a whole TTL after the leader died.
//! With [`Election::with_liveness_probe`] the next candidate in line also connects to the
//! address its predecessor campaigned with: a refused connection means no process listens
//! there (the process died while its host is up), so after [`PROBE_REFUSALS`] refusals in a
//! row it revokes the predecessor's lease and takes over at once. A leader that is only slow
//! still accepts connections (the kernel completes them), and a host that is gone answers
//! nothing: both are left to the lease, so slowness never causes a failover.

use std::time::Duration;

use crate::client::{Client, ClientError};
use crate::types::*;

/// Time between two liveness probes of the predecessor.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Refused connections in a row that prove the predecessor's process is gone.
pub const PROBE_REFUSALS: u32 = 3;

/// The current leader of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub lease: Option<LeaseId>,
}

/// An election named by a key prefix, e.g. `/capstan/master/election`.
#[derive(Clone)]
pub struct Election {
    client: Client,
    prefix: String,
    probe: bool,
}

impl Election {
    pub fn new(client: Client, prefix: impl Into<String>) -> Election {
        let prefix = prefix.into().trim_end_matches('/').to_string();
        Election {
            client,
            prefix,
            probe: false,
        }
    }

    /// Campaigns also probe the predecessor's address (the module docs say how); candidates'
    /// values must then be `host:port` addresses that their process listens on while it lives.
    pub fn with_liveness_probe(mut self) -> Election {
        self.probe = true;
        self
    }

    fn key_for(&self, lease: LeaseId) -> String {
        format!("{}/{lease:016x}", self.prefix)
    }

    /// Runs for leader with `value` under `lease` and returns once this candidate leads.
    /// The caller keeps the lease alive; when it ends, leadership ends.
    pub async fn campaign(
        &self,
        lease: LeaseId,
        value: impl Into<Vec<u8>>,
    ) -> Result<Leadership, ClientError> {
        let key = self.key_for(lease);
        let value = value.into();
        let create_revision = match self.client.create(&key, value.clone(), Some(lease)).await {
            Ok(r) => r.revision,
            Err(ClientError::Conflict { .. }) => {
                // Our own key from an earlier attempt with the same lease: keep it.
                match self.client.get(&key).await? {
                    Some(kv) => kv.create_revision,
                    None => return Box::pin(self.campaign(lease, value)).await,
                }
            }
            Err(e) => return Err(e),
        };
        loop {
            let list = self.client.list_all(&format!("{}/", self.prefix)).await?;
            let mut candidates: Vec<&KeyValue> = list.kvs.iter().collect();
            candidates.sort_by_key(|kv| kv.create_revision);
            let Some(pos) = candidates.iter().position(|kv| kv.key == key) else {
                // Our key vanished: the lease ended.
                return Err(ClientError::LeaseNotFound(lease));
            };
            if pos == 0 {
                return Ok(Leadership {
                    election: self.clone(),
                    key,
                    create_revision,
                    lease,
                });
            }
            let predecessor = candidates[pos - 1];
            let probe = match (self.probe, predecessor.lease) {
                (true, Some(lease)) => String::from_utf8(predecessor.value.clone())
                    .ok()
                    .map(|addr| (addr, lease)),
                _ => None,
            };
            let key = predecessor.key.clone();
            tokio::select! {
                r = self.wait_deleted(&key, list.revision + 1) => r?,
                () = async {
                    match &probe {
                        Some((addr, lease)) => depose_when_dead(&self.client, addr, *lease).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }

    async fn wait_deleted(&self, key: &str, from: u64) -> Result<(), ClientError> {
        let mut watcher = self.client.watch(WatchRequest {
            key: key.into(),
            prefix: false,
            start_revision: Some(from),
        });
        loop {
            let batch = match watcher.next().await {
                Ok(b) => b,
                Err(ClientError::Unavailable(_)) => continue,
                Err(e) => return Err(e),
            };
            if batch.events.iter().any(|e| e.kind == EventKind::Delete) {
                return Ok(());
            }
        }
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, ClientError> {
        Ok(self.leader_at().await?.1)
    }

    async fn leader_at(&self) -> Result<(u64, Option<LeaderInfo>), ClientError> {
        let list = self.client.list_all(&format!("{}/", self.prefix)).await?;
        let leader = list
            .kvs
            .into_iter()
            .min_by_key(|kv| kv.create_revision)
            .map(|kv| LeaderInfo {
                key: kv.key,
                value: kv.value,
                create_revision: kv.create_revision,
                lease: kv.lease,
            });
        Ok((list.revision, leader))
    }

    /// Follows leader changes: [`LeaderObserver::next`] returns each new leader (or `None`
    /// when there is none).
    pub async fn observe(&self) -> Result<LeaderObserver, ClientError> {
        let (revision, current) = self.leader_at().await?;
        let watcher = self.client.watch(WatchRequest {
            key: format!("{}/", self.prefix),
            prefix: true,
            start_revision: Some(revision + 1),
        });
        Ok(LeaderObserver {
            election: self.clone(),
            watcher,
            current,
            first: true,
        })
    }
}

/// Returns once `addr` refused [`PROBE_REFUSALS`] connections in a row and the lease it
/// campaigned under is revoked (or already gone).
async fn depose_when_dead(client: &Client, addr: &str, lease: LeaseId) {
    let mut refusals = 0;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let attempt =
            tokio::time::timeout(PROBE_INTERVAL * 2, tokio::net::TcpStream::connect(addr)).await;
        match attempt {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => refusals += 1,
            // Connected (alive, maybe slow), timed out or unresolvable: nothing is proven.
            _ => refusals = 0,
        }
        if refusals < PROBE_REFUSALS {
            continue;
        }
        tracing::warn!(%addr, lease, "The leader's address refuses connections; revoking its lease");
        match client.lease_revoke(lease).await {
            Ok(_) | Err(ClientError::LeaseNotFound(_)) => return,
            Err(e) => {
                tracing::warn!(%addr, lease, error = %e, "Cannot revoke the dead leader's lease; still waiting");
                refusals = 0;
            }
        }
    }
}

/// Leader changes of an [`Election`].
pub struct LeaderObserver {
    election: Election,
    watcher: crate::client::Watcher,
    current: Option<LeaderInfo>,
    first: bool,
}

impl LeaderObserver {
    /// The leader when observation started (first call), then each change.
    pub async fn next(&mut self) -> Result<Option<LeaderInfo>, ClientError> {
        if self.first {
            self.first = false;
            return Ok(self.current.clone());
        }
        loop {
            match self.watcher.next().await {
                Ok(_) => {}
                Err(ClientError::Unavailable(_)) => continue,
                Err(e) => return Err(e),
            }
            let leader = self.election.leader().await?;
            if leader != self.current {
                self.current = leader.clone();
                return Ok(leader);
            }
        }
    }
}

/// Held by the elected candidate.
pub struct Leadership {
    election: Election,
    key: String,
    create_revision: u64,
    lease: LeaseId,
}

impl Leadership {
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    pub fn create_revision(&self) -> u64 {
        self.create_revision
    }

    /// True while this candidate's key still exists and is the oldest.
    pub async fn is_leader(&self) -> Result<bool, ClientError> {
        Ok(self
            .election
            .leader()
            .await?
            .is_some_and(|l| l.key == self.key))
    }

    /// Gives leadership up by deleting this candidate's key.
    pub async fn resign(self) -> Result<(), ClientError> {
        self.election.client.delete(&self.key).await?;
        Ok(())
    }
}
