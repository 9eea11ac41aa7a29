//! One swarm leads: with coord configured, the swarm of every master campaigns in
//! `<coord_prefix>/election` (`capstan_coord_client::keyspace::election`) with its Docker API
//! address, as apps does. Only the leader loads the records, subscribes the framework and
//! runs the scheduler; a standby answers health, `/_ping` and `/version` and 503 naming the
//! leader for everything else ([`crate::http`]). A leader that loses its lease stops and
//! its handle's `wait()` says so (`Exit::Failed`), so systemd starts it again as a standby.
//! Without coord (tests, a single swarm) there is no election: the one swarm leads.

use capstan_runtime::retry_until_cancelled;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use capstan_coord_client::{Client, Election, KeepAlive, LeaseId};
use capstan_types::{Backoff, Chain};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::state::Swarm;

/// First and longest wait between tries of a failed election step.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The backoff between tries of one start-up step.
fn step_backoff() -> Backoff {
    Backoff::new(RETRY_INITIAL, RETRY_MAX)
}

/// What the HTTP front needs: the running swarm once this instance leads, who leads
/// otherwise, and the token verifier (a standby checks tokens too).
pub(crate) struct Front {
    pub(crate) swarm: OnceLock<Arc<Swarm>>,
    pub(crate) leader: watch::Receiver<Option<String>>,
    pub(crate) iam: Option<capstan_iam::Iam>,
    /// The address this swarm campaigns with.
    pub(crate) me: String,
}

/// Why a leading swarm stopped by itself.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("lost the swarm leadership (the leader lease in coord ended)")]
    LostLeadership,
    #[error("the candidate's lease in coord ended before it was elected")]
    LeaseLost,
}

/// The standby's answer to every request but health, `/_ping` and `/version`.
pub fn standby_message(leader: Option<&str>) -> String {
    match leader {
        Some(addr) => format!("this swarm is a standby; the leader is {addr}"),
        None => "this swarm is a standby; no leader is elected yet".to_owned(),
    }
}

/// The address a candidate campaigns with: its Docker API address, with the configured
/// hostname in place of an unspecified IP (other masters and clients must reach it).
pub fn candidate_address(listen: SocketAddr, hostname: &str) -> String {
    if listen.ip().is_unspecified() {
        format!("{hostname}:{}", listen.port())
    } else {
        listen.to_string()
    }
}

/// The swarm election under `election_prefix`; candidates' values are their addresses, which
/// the next in line probes (a dead leader's process is replaced at once).
pub(crate) fn election(client: &Client, election_prefix: &str) -> Election {
    Election::new(client.clone(), election_prefix).with_liveness_probe()
}

/// Follows who leads into `tx` until `token` is cancelled.
pub(crate) async fn observe(
    election: Election,
    tx: watch::Sender<Option<String>>,
    token: CancellationToken,
) {
    while !token.is_cancelled() {
        let Some(mut observer) =
            retry_until_cancelled("Observing the swarm leader", &token, step_backoff(), || {
                election.observe()
            })
            .await
        else {
            return;
        };
        loop {
            let next = tokio::select! {
                _ = token.cancelled() => return,
                n = observer.next() => n,
            };
            match next {
                Ok(leader) => {
                    let addr = leader.map(|l| String::from_utf8_lossy(&l.value).into_owned());
                    tx.send_if_modified(|current| {
                        let changed = *current != addr;
                        *current = addr.clone();
                        changed
                    });
                }
                Err(e) => {
                    warn!(error = %Chain(&e), "Watching the swarm leader failed");
                    break;
                }
            }
        }
    }
}

/// The lease of an elected swarm.
pub(crate) struct Held {
    keep: KeepAlive,
    client: Client,
    lease: LeaseId,
}

impl Held {
    /// Resolves when the lease is found gone.
    pub(crate) async fn lost(&mut self) {
        self.keep.lost().await
    }

    /// Revokes the lease, so a standby takes over now instead of after the TTL.
    pub(crate) async fn release(self) {
        let Held {
            keep,
            client,
            lease,
        } = self;
        drop(keep);
        let _ = client.lease_revoke(lease).await;
    }
}

/// Campaigns as `me` until elected (`Ok(Some)`), cancelled (`Ok(None)`) or the candidate's
/// lease ended (coord unreachable for longer than the TTL).
pub(crate) async fn campaign(
    client: &Client,
    election: &Election,
    ttl: Duration,
    me: &str,
    token: &CancellationToken,
) -> Result<Option<Held>, Stopped> {
    let Some(lease) = retry_until_cancelled(
        "Granting the swarm leader lease",
        token,
        step_backoff(),
        || client.lease_grant(ttl),
    )
    .await
    else {
        return Ok(None);
    };
    let mut keep = client.spawn_keep_alive(lease.id, ttl);
    info!(candidate = %me, "Campaigning for swarm leadership");
    let elected = tokio::select! {
        _ = token.cancelled() => None,
        _ = keep.lost() => {
            return Err(Stopped::LeaseLost);
        }
        r = retry_until_cancelled("Campaigning for swarm leadership", token, step_backoff(), || election.campaign(lease.id, me.as_bytes().to_vec())) => r,
    };
    let held = Held {
        keep,
        client: client.clone(),
        lease: lease.id,
    };
    if elected.is_none() {
        held.release().await;
        return Ok(None);
    }
    info!(leader = %me, "Elected swarm leader");
    Ok(Some(held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_names_the_leader_and_candidates_campaign_with_a_reachable_address() {
        assert_eq!(
            standby_message(Some("10.0.0.2:2375")),
            "this swarm is a standby; the leader is 10.0.0.2:2375"
        );
        assert_eq!(
            standby_message(None),
            "this swarm is a standby; no leader is elected yet"
        );
        for (listen, host, want) in [
            ("10.0.0.1:2375", "m1", "10.0.0.1:2375"),
            ("0.0.0.0:2375", "m1.example", "m1.example:2375"),
            ("[::]:2375", "m1", "m1:2375"),
            ("[::1]:2375", "m1", "[::1]:2375"),
        ] {
            assert_eq!(candidate_address(listen.parse().unwrap(), host), want);
        }
    }
}
