//! Follows the leading master through the operator API `SUBSCRIBE` stream and republishes the
//! records after every batch of events, so a task is resolvable the moment the master reports
//! it `TASK_RUNNING`.
//!
//! This task owns the [`ClusterState`]. The stream itself is `capstan-mesos-client`'s
//! [`OperatorEvents`]: it tries the configured masters in turn, follows a `307` to the leader,
//! and treats a stream without a record (heartbeats included) for `missed_heartbeats`
//! heartbeat intervals as dead; its reconnect loop waits with the shared backoff. While no master answers, the last published records stay in service;
//! the next `SUBSCRIBED` snapshot replaces the model wholesale (a resync), published in one
//! swap once it is applied, never an empty or half-built model in between.
//!
//! A master change must not deny a name that existed: a newly elected master learns the
//! tasks of its registry's agents only as each agent re-registers, so the resync keeps the
//! previous view of agents it lists as recovered (see [`crate::model::HeldOver`]) until they
//! are back, are removed, or [`HOLD_OVER_MAX`] has passed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_mesos_client::{
    Endpoint, MasterClient, OperatorEvents, SessionEnd, StreamError, reconnect,
};
use capstan_proto::mesos::v1::master::Event;
use capstan_proto::mesos::v1::master::event::Type as EventType;
use capstan_types::{Backoff, Chain};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::model::ClusterState;
use crate::records::{SynthConfig, synthesize_shared};
use crate::server::Publisher;
use crate::snapshot::Producer;

/// What the follower is doing, for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterStatus {
    /// `host:port` of the master whose stream we read (or last read).
    pub leader: Option<String>,
    /// A stream is open right now.
    pub subscribed: bool,
    /// How many subscriptions succeeded (each one is a full resync).
    pub subscriptions: u64,
    /// Events applied since start.
    pub events: u64,
}

/// Settings of the stream follower.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// Master HTTP addresses (`host:port` or `http://host:port`).
    pub masters: Vec<String>,
    pub timeout: Duration,
    pub missed_heartbeats: u32,
    pub backoff_max: Duration,
    pub synth: SynthConfig,
    /// Speak TLS to the masters with this configuration (strict mode: the node's
    /// certificate, only the cluster CA trusted); bare `host:port` masters are then `https`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// How one subscription ended.
enum Ended {
    Shutdown,
    Closed,
    Failed(StreamError),
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Most extra already-received events folded into one record update.
const MAX_BATCH_EVENTS: usize = 4096;
/// How long the records of agents a new master has not heard from yet are kept after a
/// resync (the model's, shared with `l4lb`).
pub use capstan_mesos_client::model::HOLD_OVER_MAX;

/// Runs until `shutdown` is cancelled.
pub async fn run(
    cfg: FollowerConfig,
    publisher: Publisher,
    status: watch::Sender<MasterStatus>,
    shutdown: CancellationToken,
) {
    let client = MasterClient::for_masters(&cfg.masters, |c| {
        c.connect_timeout = cfg.timeout;
        c.request_timeout = cfg.timeout;
        c.missed_heartbeats = cfg.missed_heartbeats;
        c.tls = cfg.tls.clone();
    });
    let mut client = match client {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %Chain(&e), "Cannot build the master client; not following any master");
            return;
        }
    };
    let masters: Vec<String> = client
        .config()
        .masters
        .iter()
        .map(Endpoint::authority)
        .collect();
    // Shared with the published records (for `/v1/enumerate`): changed copy-on-write, so
    // between bursts of events one copy of the cluster exists, not two.
    let mut state = Arc::new(ClusterState::default());
    // When the records held over by a resync are dropped if their agents are not back.
    let mut hold_until: Option<Instant> = None;
    let backoff = Backoff::new(MIN_BACKOFF, cfg.backoff_max);
    let stop = shutdown.clone();
    reconnect(backoff, &stop, async move || {
        let mut events = match OperatorEvents::subscribe(&mut client).await {
            Ok(events) => events,
            Err(e) => {
                warn!(masters = ?masters, error = %Chain(&e), "No master answered; serving the last known records");
                return SessionEnd::after(0);
            }
        };
        let leader = events.leader().authority();
        let st = Arc::make_mut(&mut state);
        st.masters = resolve_all(&masters).await;
        st.leader = resolve(&leader).await;
        info!(master = %leader, "Subscribed to the leading master's event stream");
        status.send_modify(|s| {
            s.leader = Some(leader.clone());
            s.subscribed = true;
            s.subscriptions += 1;
        });
        let end = consume(
            &mut events,
            &mut state,
            &mut hold_until,
            &cfg,
            &publisher,
            &status,
            &shutdown,
        )
        .await;
        status.send_modify(|s| s.subscribed = false);
        match end {
            Ended::Shutdown => return SessionEnd::Stop,
            Ended::Closed => {
                warn!(master = %leader, "The master closed the event stream; serving the last known records")
            }
            Ended::Failed(e) => {
                warn!(master = %leader, error = %Chain(&e), "Lost the master's event stream; serving the last known records")
            }
        }
        SessionEnd::after(events.subscription().records())
    })
    .await;
}

/// What woke the stream loop.
enum Wake {
    /// Boxed: a decoded operator event is a few kilobytes.
    Event(Box<Result<Option<Event>, StreamError>>),
    Publish,
    HoldExpired,
}

async fn consume(
    events: &mut OperatorEvents,
    state: &mut Arc<ClusterState>,
    hold_until: &mut Option<Instant>,
    cfg: &FollowerConfig,
    publisher: &Publisher,
    status: &watch::Sender<MasterStatus>,
    shutdown: &CancellationToken,
) -> Ended {
    let synth = Arc::new(cfg.synth.clone());
    // Changes not yet published, and when the next synthesis may run.
    let mut dirty = false;
    let mut not_before = Instant::now();
    loop {
        let hold_deadline = *hold_until;
        let wake = tokio::select! {
            e = events.next() => Wake::Event(Box::new(e)),
            _ = tokio::time::sleep_until(not_before), if dirty => Wake::Publish,
            _ = sleep_until_some(hold_deadline), if hold_deadline.is_some() => Wake::HoldExpired,
            _ = shutdown.cancelled() => return Ended::Shutdown,
        };
        match wake {
            Wake::Publish => {}
            Wake::HoldExpired => {
                *hold_until = None;
                let held = &state.held;
                let (agents, tasks) = (held.agents.len(), held.task_count());
                if Arc::make_mut(state).release_held() {
                    warn!(
                        agents,
                        tasks,
                        waited = ?HOLD_OVER_MAX,
                        "Agents did not re-register with the new master; dropping their records"
                    );
                    dirty = true;
                }
            }
            Wake::Event(first) => {
                let mut next = match *first {
                    Ok(Some(event)) => Some(event),
                    Ok(None) => return end(Ended::Closed, dirty, state, &synth, publisher).await,
                    Err(e) => return end(Ended::Failed(e), dirty, state, &synth, publisher).await,
                };
                // Take whatever else already arrived, so a burst of events costs one synthesis.
                let mut taken = 0;
                while let Some(event) = next.take() {
                    dirty |= apply(state, &event);
                    status.send_modify(|s| s.events += 1);
                    taken += 1;
                    if taken <= MAX_BATCH_EVENTS {
                        match events.next_ready() {
                            Ok(e) => next = e,
                            Err(e) => {
                                return end(Ended::Failed(e), dirty, state, &synth, publisher)
                                    .await;
                            }
                        }
                    }
                }
                if state.held.is_empty() {
                    *hold_until = None;
                } else if hold_until.is_none() {
                    *hold_until = Some(Instant::now() + HOLD_OVER_MAX);
                }
            }
        }
        if dirty && Instant::now() >= not_before {
            let started = Instant::now();
            publish(state, &synth, publisher).await;
            dirty = false;
            // Spend at most about half the time synthesising: on a big cluster a burst of
            // events is coalesced, on a small one every event is published at once.
            not_before = Instant::now() + started.elapsed();
        }
    }
}

/// Applies one event to the model; true if the records may have changed.
fn apply(state: &mut Arc<ClusterState>, event: &Event) -> bool {
    let subscribed = event.r#type == Some(EventType::Subscribed as i32);
    if subscribed {
        info!(tasks = ?event.subscribed.as_ref().and_then(|s| s.get_state.as_ref()).and_then(|s| s.get_tasks.as_ref()).map(|t| t.tasks.len()), "Received the cluster state");
    }
    let changed = event.r#type != Some(EventType::Heartbeat as i32)
        && Arc::make_mut(state).apply_event(event);
    if subscribed && !state.held.is_empty() {
        info!(
            agents = state.held.agents.len(),
            tasks = state.held.task_count(),
            "Keeping the records of agents the master has not heard from yet"
        );
    }
    changed
}

/// The stream ended: publish what is pending, then report why.
async fn end(
    why: Ended,
    dirty: bool,
    state: &Arc<ClusterState>,
    synth: &Arc<SynthConfig>,
    publisher: &Publisher,
) -> Ended {
    if dirty {
        publish(state, synth, publisher).await;
    }
    why
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Synthesises the records off the async threads and publishes them.
async fn publish(state: &Arc<ClusterState>, synth: &Arc<SynthConfig>, publisher: &Publisher) {
    let shared = state.clone();
    let tasks = shared.tasks.len();
    let synth = synth.clone();
    match tokio::task::spawn_blocking(move || synthesize_shared(shared, synth)).await {
        Ok(records) => {
            debug!(names = records.len(), tasks, "Records updated");
            publisher.publish(Producer::Mesos, records);
        }
        Err(e) => {
            warn!(error = %capstan_runtime::Chain(&e), "Record synthesis failed; keeping the previous records")
        }
    }
}

async fn resolve(hostport: &str) -> Option<SocketAddr> {
    if let Ok(a) = hostport.parse() {
        return Some(a);
    }
    let lookup = tokio::net::lookup_host(hostport.to_owned());
    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(mut addrs)) => addrs.next(),
        _ => None,
    }
}

async fn resolve_all(masters: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for m in masters {
        let hostport = capstan_mesos_client::Endpoint::parse(m)
            .map(|e| e.authority())
            .unwrap_or_else(|_| m.clone());
        if let Some(a) = resolve(&hostport).await {
            out.push(a);
        }
    }
    out
}
