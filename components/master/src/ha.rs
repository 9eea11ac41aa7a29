//! High availability through coord: lease-based leader election and the registry kept in
//! coord.
//!
//! Every master campaigns under `<prefix>/election` with its `host:port` as the value, on a
//! lease it keeps alive. The oldest candidate leads. Before it serves, a new leader loads the
//! registry (`<prefix>/registry/...`) so gone agents and removed frameworks stay so; agents
//! and frameworks then re-register with their IDs. Standbys follow the election and answer
//! `307` to the leader (or `503` when there is none). A leader that loses its lease stops
//! its server (like a Mesos master, it "commits suicide"); the service manager restarts it
//! as a standby.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use capstan_coord_client::{Client, ClientError, Election};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::CoordConfig;
use crate::http::Leadership;
use crate::registry::{Durability, Registry, RegistryOp, RegistrySnapshot};
use crate::server::CoreHandle;

fn registry_prefix(prefix: &str) -> String {
    capstan_coord_client::keyspace::registry(prefix)
}

/// A registry persisted in coord. Writes go through one background task in order; each
/// committed write advances the registry's [`Durability`], which holds back every reply and
/// event that followed the op (so the core never blocks on coord, yet nothing is
/// acknowledged before it is durable).
pub struct CoordRegistry {
    tx: mpsc::UnboundedSender<(u64, RegistryOp)>,
    durability: Durability,
}

impl CoordRegistry {
    /// Starts the writer. The returned handle finishes once the registry was dropped and
    /// every queued write was attempted (await it before resigning leadership).
    pub fn spawn(client: Client, prefix: &str) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, RegistryOp)>();
        let (durability, committed) = Durability::deferred();
        let base = registry_prefix(prefix);
        let writer = tokio::spawn(async move {
            while let Some((seq, op)) = rx.recv().await {
                let mut delay = Duration::from_millis(50);
                let mut attempt = 0u32;
                loop {
                    match write(&client, &base, &op).await {
                        Ok(()) => {
                            committed.send_replace(seq);
                            break;
                        }
                        // While the master runs, a write is retried until it lands: nothing
                        // that depends on it is said before. (If coord stays away, the lease
                        // expires and this master steps down.) Once the registry is dropped
                        // the master is stopping, and a bounded number of attempts is made.
                        Err(e) if !rx.is_closed() || attempt < 20 => {
                            if attempt.is_multiple_of(10) {
                                warn!(error = %e, attempt, "Registry write to coord failed; retrying");
                            }
                            attempt += 1;
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                        Err(e) => {
                            error!(error = %e, "Registry write to coord failed; giving up (stopping)");
                            return;
                        }
                    }
                }
            }
        });
        (CoordRegistry { tx, durability }, writer)
    }
}

async fn write(client: &Client, base: &str, op: &RegistryOp) -> Result<(), ClientError> {
    match op {
        RegistryOp::AgentAdmitted { id, info } => {
            client
                .put(&format!("{base}/agents/{id}"), info.to_string())
                .await?;
        }
        RegistryOp::AgentGone { id } => {
            client.put(&format!("{base}/gone_agents/{id}"), "").await?;
            client.delete(&format!("{base}/agents/{id}")).await?;
            client.delete(&format!("{base}/draining/{id}")).await?;
        }
        RegistryOp::AgentDraining { id, mark_gone } => {
            let drain = serde_json::json!({ "mark_gone": mark_gone });
            client
                .put(&format!("{base}/draining/{id}"), drain.to_string())
                .await?;
        }
        RegistryOp::AgentReactivated { id } => {
            client.delete(&format!("{base}/draining/{id}")).await?;
        }
        RegistryOp::FrameworkAdded { id, info } => {
            client
                .put(&format!("{base}/frameworks/{id}"), info.to_string())
                .await?;
        }
        RegistryOp::FrameworkRemoved { id } => {
            client
                .put(&format!("{base}/removed_frameworks/{id}"), "")
                .await?;
            client.delete(&format!("{base}/frameworks/{id}")).await?;
        }
    }
    Ok(())
}

impl Registry for CoordRegistry {
    fn load(&self) -> RegistrySnapshot {
        // Loaded asynchronously by the election task before this master serves.
        RegistrySnapshot::default()
    }

    fn record(&mut self, op: RegistryOp) {
        let seq = self.durability.next();
        let _ = self.tx.send((seq, op));
    }

    fn durability(&self) -> Durability {
        self.durability.clone()
    }
}

/// Reads the registry from coord.
pub async fn load_registry(client: &Client, prefix: &str) -> Result<RegistrySnapshot, ClientError> {
    let base = registry_prefix(prefix);
    let list = client.list_all(&format!("{base}/")).await?;
    let mut snap = RegistrySnapshot::default();
    for kv in list.kvs {
        let Some(rest) = kv.key.strip_prefix(&format!("{base}/")) else {
            continue;
        };
        let Some((kind, id)) = rest.split_once('/') else {
            continue;
        };
        let value = serde_json::from_slice(&kv.value).unwrap_or(serde_json::Value::Null);
        match kind {
            "agents" => {
                snap.agents.insert(id.into(), value);
            }
            "gone_agents" => {
                snap.gone_agents.insert(id.into());
            }
            "draining" => {
                let mark_gone = value["mark_gone"].as_bool().unwrap_or(false);
                snap.draining.insert(id.into(), mark_gone);
            }
            "frameworks" => {
                snap.frameworks.insert(id.into(), value);
            }
            "removed_frameworks" => {
                snap.removed_frameworks.insert(id.into());
            }
            _ => {}
        }
    }
    Ok(snap)
}

/// Runs the election for this master until `token` is cancelled or leadership is lost
/// (which cancels `token`).
/// Everything the election task needs.
pub(crate) struct ElectionTask {
    pub client: Client,
    pub cfg: CoordConfig,
    /// This master's `host:port`, the election value.
    pub me: String,
    pub core: CoreHandle,
    pub leader_tx: watch::Sender<Leadership>,
    pub token: CancellationToken,
    pub registry_writer: tokio::task::JoinHandle<()>,
    pub lost: Arc<AtomicBool>,
}

pub(crate) async fn run_election(task: ElectionTask) {
    let ElectionTask {
        client,
        cfg,
        me,
        core,
        leader_tx,
        token,
        registry_writer,
        lost,
    } = task;
    let election = Election::new(
        client.clone(),
        capstan_coord_client::keyspace::election(&cfg.prefix),
    )
    .with_liveness_probe();
    let leading = Arc::new(AtomicBool::new(false));
    // Follow the election to know where to redirect.
    {
        let (election, leading, leader_tx, token, me) = (
            election.clone(),
            leading.clone(),
            leader_tx.clone(),
            token.clone(),
            me.clone(),
        );
        tokio::spawn(async move {
            loop {
                let mut obs = tokio::select! {
                    o = election.observe() => match o {
                        Ok(o) => o,
                        Err(e) => {
                            warn!(error = %e, "Cannot observe the master election; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    },
                    _ = token.cancelled() => return,
                };
                loop {
                    let next = tokio::select! {
                        n = obs.next() => n,
                        _ = token.cancelled() => return,
                    };
                    match next {
                        Ok(leader) => {
                            if leading.load(Ordering::SeqCst) {
                                continue;
                            }
                            let l = match leader {
                                Some(l) => {
                                    let addr = String::from_utf8_lossy(&l.value).to_string();
                                    if addr == me {
                                        continue;
                                    } else {
                                        Leadership::Follower(addr)
                                    }
                                }
                                None => Leadership::NoLeader,
                            };
                            info!(leader = ?l, "Master leadership changed");
                            let _ = leader_tx.send(l);
                        }
                        Err(e) => {
                            warn!(error = %e, "Election observation failed; restarting");
                            break;
                        }
                    }
                }
            }
        });
    }
    // Campaign.
    let (lease, mut keep_alive, leadership) = loop {
        let attempt = async {
            let lease = client.lease_grant(cfg.lease_ttl).await?.id;
            let keep_alive = tokio::spawn(keep_lease(client.clone(), lease, cfg.lease_ttl));
            let leadership = election.campaign(lease, me.clone().into_bytes()).await?;
            Ok::<_, ClientError>((lease, keep_alive, leadership))
        };
        tokio::select! {
            r = attempt => match r {
                Ok(x) => break x,
                Err(e) => {
                    warn!(error = %e, "Campaign for master leadership failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = token.cancelled() => return,
        }
    };
    let snapshot = loop {
        match load_registry(&client, &cfg.prefix).await {
            Ok(s) => break s,
            Err(e) => {
                warn!(error = %e, "Cannot load the registry; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = token.cancelled() => return,
                }
            }
        }
    };
    let agents = snapshot.agents.len();
    if core
        .call(move |c, now| c.recover(snapshot, now))
        .await
        .is_err()
    {
        return;
    }
    leading.store(true, Ordering::SeqCst);
    let _ = leader_tx.send(Leadership::Leader);
    info!(lease, agents, "Elected leading master");
    tokio::select! {
        _ = &mut keep_alive => {
            error!("Lost the coord lease: no longer the leading master; stopping");
            lost.store(true, Ordering::SeqCst);
            let _ = leader_tx.send(Leadership::NoLeader);
            token.cancel();
        }
        _ = token.cancelled() => {
            // The core drops the registry when it stops; let queued writes land first.
            if tokio::time::timeout(Duration::from_secs(5), registry_writer).await.is_err() {
                warn!("Registry writes still pending at shutdown");
            }
            if let Err(e) = leadership.resign().await {
                warn!(error = %e, "Could not resign leadership");
            }
            let _ = client.lease_revoke(lease).await;
            keep_alive.abort();
        }
    }
}

/// Keeps the lease alive every third of its TTL. Returns when the lease is gone, or when
/// no keep-alive succeeded for a whole TTL (coord may already have expired it and elected
/// someone else, so this master must stop acting as leader).
async fn keep_lease(client: Client, lease: u64, ttl: Duration) {
    let period = (ttl / 3).max(Duration::from_millis(10));
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        match tokio::time::timeout(period, client.lease_keep_alive(lease)).await {
            Ok(Ok(_)) => last_ok = tokio::time::Instant::now(),
            Ok(Err(ClientError::LeaseNotFound(_))) => {
                warn!(lease, "Master lease expired");
                return;
            }
            Ok(Err(e)) => warn!(lease, error = %e, "Lease keep-alive failed"),
            Err(_) => warn!(lease, "Lease keep-alive timed out"),
        }
        if last_ok.elapsed() >= ttl {
            warn!(lease, "No successful lease keep-alive for a whole TTL");
            return;
        }
    }
}
