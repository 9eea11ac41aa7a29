//! Follows the leading master's operator `SUBSCRIBE` stream and republishes the VIP table
//! after every batch of events: no polling, no gossip, and a change reaches the data plane as
//! soon as the master reports it.
//!
//! The model and the event application are the shared ones `dns` uses too
//! ([`capstan_mesos_client::model::ClusterState`]), so both daemons see the same tasks; the table is the shared pure function of it. Every
//! `SUBSCRIBED` (first connect, or after a stream gap) replaces the model wholesale: a full
//! reconcile. While no master answers the last table stays in service. Agents a newly elected
//! master lists as recovering keep their backends for at most
//! [`HOLD_OVER_MAX`], as in `dns`.

use std::sync::Arc;
use std::time::Duration;

use capstan_mesos_client::model::{ClusterState, HOLD_OVER_MAX};
use capstan_mesos_client::{MasterClient, OperatorEvents, SessionEnd, reconnect};
use capstan_proto::mesos::v1::master::event::Type as EventType;
use capstan_types::vip::{VipConfig, VipTable};
use capstan_types::{Backoff, Chain};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// Settings of the follower.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    pub masters: Vec<String>,
    pub timeout: Duration,
    pub missed_heartbeats: u32,
    pub backoff_max: Duration,
    pub vip: VipConfig,
    /// Speak TLS to the masters with this configuration (strict mode: the node's
    /// certificate, only the cluster CA trusted); bare `host:port` masters are then `https`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What the follower is doing, for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowStatus {
    pub subscribed: bool,
    /// Successful subscriptions (each one a full reconcile).
    pub subscriptions: u64,
    /// Table recomputations that changed the table.
    pub table_updates: u64,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Most already-received events folded into one table update.
const MAX_BATCH_EVENTS: usize = 4096;

/// Runs until `shutdown` is cancelled, sending every changed table to `table` (and telling
/// `metrics` when the events behind each change arrived).
pub async fn run(
    cfg: FollowerConfig,
    table: watch::Sender<Arc<VipTable>>,
    status: watch::Sender<FollowStatus>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut client = match MasterClient::for_masters(&cfg.masters, |c| {
        c.connect_timeout = cfg.timeout;
        c.request_timeout = cfg.timeout;
        c.missed_heartbeats = cfg.missed_heartbeats;
        c.tls = cfg.tls.clone();
    }) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %Chain(&e), "Cannot build the master client; not following any master");
            return;
        }
    };
    let mut state = ClusterState::default();
    let mut hold_until: Option<Instant> = None;
    let stop = shutdown.clone();
    reconnect(Backoff::new(MIN_BACKOFF, cfg.backoff_max), &stop, async move || {
        let mut events = match OperatorEvents::subscribe(&mut client).await {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %Chain(&e), "No master answered; keeping the last VIP table");
                return SessionEnd::after(0);
            }
        };
        info!(master = %events.leader().authority(), "Subscribed to the leading master's event stream");
        status.send_modify(|s| {
            s.subscribed = true;
            s.subscriptions += 1;
        });
        loop {
            let deadline = hold_until;
            let first = tokio::select! {
                e = events.next() => e,
                _ = sleep_until_some(deadline), if deadline.is_some() => {
                    hold_until = None;
                    if state.release_held() {
                        warn!("Agents did not re-register with the new master; dropping their backends");
                        publish(&state, &cfg.vip, &table, &status, &metrics, Instant::now());
                    }
                    continue;
                }
                _ = shutdown.cancelled() => return SessionEnd::Stop,
            };
            let received = Instant::now();
            let mut next = match first {
                Ok(Some(e)) => Some(e),
                Ok(None) => {
                    warn!("The master closed the event stream; keeping the last VIP table");
                    break;
                }
                Err(e) => {
                    warn!(error = %Chain(&e), "Lost the master's event stream; keeping the last VIP table");
                    break;
                }
            };
            let mut dirty = false;
            let mut taken = 0;
            let mut failed = false;
            while let Some(event) = next.take() {
                if event.r#type != Some(EventType::Heartbeat as i32) {
                    dirty |= state.apply_event(&event);
                }
                taken += 1;
                if taken <= MAX_BATCH_EVENTS {
                    match events.next_ready() {
                        Ok(e) => next = e,
                        Err(e) => {
                            warn!(error = %Chain(&e), "Lost the master's event stream");
                            failed = true;
                        }
                    }
                }
            }
            if state.held.is_empty() {
                hold_until = None;
            } else if hold_until.is_none() {
                hold_until = Some(Instant::now() + HOLD_OVER_MAX);
            }
            if dirty {
                publish(&state, &cfg.vip, &table, &status, &metrics, received);
            }
            if failed {
                break;
            }
        }
        status.send_modify(|s| s.subscribed = false);
        SessionEnd::after(events.subscription().records())
    })
    .await;
}

/// Recomputes the table and sends it if it changed; `received` is when the change arrived.
fn publish(
    state: &ClusterState,
    vip: &VipConfig,
    table: &watch::Sender<Arc<VipTable>>,
    status: &watch::Sender<FollowStatus>,
    metrics: &Metrics,
    received: Instant,
) {
    let started = Instant::now();
    let new = state.vip_table(vip);
    // This task is the only sender: the comparison cannot race another update.
    if **table.borrow() == new {
        return;
    }
    // Marked before the send, so the data plane never applies a change it was not told of.
    metrics.table_changed(received);
    table.send_replace(Arc::new(new));
    status.send_modify(|s| s.table_updates += 1);
    debug!(took = ?started.elapsed(), "VIP table updated");
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
