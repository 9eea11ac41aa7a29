//! The swarm's live state, shared by the HTTP handlers and the scheduler: the containers
//! (loaded from coord at start), the offers held, and the current subscription. Changes
//! bump a `watch` counter, so `start`, `stop` and `wait` wait for a condition instead of
//! polling. The lock is a plain mutex, never held across an `.await`.
//!
//! Writes to coord go through one writer task that stores the record's *current* value, so
//! writes for one container can never land out of order; a handler answers only after its
//! write committed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use capstan_mesos_client::Calls;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::warn;

use crate::config::Config;
use crate::events::{Event, KEEP};
use crate::model::Container;
use crate::networks::NetworkRecord;
use crate::store::{Store, StoreError};
use crate::views::{Resolve, resolve};

/// The subscription calls go through.
#[derive(Debug, Clone)]
pub struct Conn {
    pub calls: Calls,
    pub framework_id: String,
}

/// An offer swarm holds until a start needs it or it is declined.
#[derive(Debug, Clone)]
pub struct HeldOffer {
    pub offer: Value,
    pub since: Instant,
}

impl HeldOffer {
    pub fn id(&self) -> &str {
        self.offer["id"]["value"].as_str().unwrap_or_default()
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub containers: BTreeMap<String, Container>,
    pub offers: Vec<HeldOffer>,
    /// User networks by id.
    pub networks: BTreeMap<String, NetworkRecord>,
    /// Named volumes by name.
    pub volumes: BTreeMap<String, crate::volumes::VolumeRecord>,
    /// The last events, oldest first (for `/events?since=`).
    pub events: VecDeque<Event>,
    /// Images a client "pulled" (`POST /images/create`, a no-op), normalised: they inspect
    /// as present from then on (in memory only).
    pub pulled: std::collections::BTreeSet<String>,
    /// Execs by id (in memory only: an exec ends with the swarm that started it).
    pub execs: BTreeMap<String, crate::exec::ExecRecord>,
}

type WriteJob = (String, oneshot::Sender<Result<(), String>>);

pub struct Swarm {
    pub cfg: Config,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    writer: mpsc::Sender<WriteJob>,
    pub store: Store,
    pub conn: watch::Sender<Option<Conn>>,
    /// Wakes the scheduler: a start is waiting for an offer.
    pub kick: Notify,
    /// swarm's client of the agents and the masters' state (with the node certificate in
    /// strict mode).
    pub http: reqwest::Client,
    /// The TLS swarm's clients speak in strict mode (`SecurityConfig::client_tls`): the
    /// framework's subscription to the masters presents it.
    pub client_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub iam: Option<capstan_iam::Iam>,
    /// Live `/events` listeners.
    pub events: tokio::sync::broadcast::Sender<Event>,
}

/// swarm's outbound clients.
pub struct Clients {
    /// To the agents and the masters' state endpoints.
    pub http: reqwest::Client,
    /// The TLS of strict mode, for the masters' client.
    pub client_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Why a container cannot be named or found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("multiple containers match {0:?}; give more of the id")]
    Ambiguous(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
}

impl Swarm {
    pub fn new(
        cfg: Config,
        store: Store,
        containers: Vec<Container>,
        networks: Vec<NetworkRecord>,
        clients: Clients,
        iam: Option<capstan_iam::Iam>,
    ) -> (std::sync::Arc<Swarm>, mpsc::Receiver<WriteJob>) {
        let Clients { http, client_tls } = clients;
        let (writer, jobs) = mpsc::channel(256);
        let state = State {
            containers: containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
            offers: Vec::new(),
            networks: networks.into_iter().map(|n| (n.id.clone(), n)).collect(),
            volumes: BTreeMap::new(),
            events: VecDeque::new(),
            pulled: Default::default(),
            execs: BTreeMap::new(),
        };
        let swarm = Swarm {
            cfg,
            state: Mutex::new(state),
            changed: watch::Sender::new(0),
            writer,
            store,
            conn: watch::Sender::new(None),
            kick: Notify::new(),
            http,
            client_tls,
            iam,
            events: tokio::sync::broadcast::Sender::new(256),
        };
        (std::sync::Arc::new(swarm), jobs)
    }

    /// Runs `f` on the state; wakes every waiter afterwards.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut s)
        };
        self.changed.send_modify(|n| *n += 1);
        r
    }

    /// Records an event and sends it to the live `/events` listeners.
    pub fn emit(&self, e: Event) {
        {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if s.events.len() >= KEEP {
                s.events.pop_front();
            }
            s.events.push_back(e.clone());
        }
        let _ = self.events.send(e);
    }

    /// The user networks.
    pub fn networks(&self) -> Vec<NetworkRecord> {
        self.read(|s| s.networks.values().cloned().collect())
    }

    /// A receiver that sees every change of the state.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Reads the state without waking anyone.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&s)
    }

    pub fn list(&self) -> Vec<Container> {
        self.read(|s| s.containers.values().cloned().collect())
    }

    /// The container a reference (id, name or id prefix) names.
    pub fn find(&self, reference: &str) -> Result<Container, LookupError> {
        self.read(|s| {
            let all: Vec<Container> = s.containers.values().cloned().collect();
            match resolve(&all, reference) {
                Ok(c) => Ok(c.clone()),
                Err(Resolve::NotFound) => Err(LookupError::NotFound(reference.to_owned())),
                Err(Resolve::Ambiguous) => Err(LookupError::Ambiguous(reference.to_owned())),
            }
        })
    }

    /// Adds a new container unless its name is taken.
    pub fn insert(&self, c: Container) -> Result<(), LookupError> {
        self.with(|s| {
            if let Some(other) = s.containers.values().find(|o| o.name == c.name) {
                return Err(LookupError::NameInUse {
                    name: c.name.clone(),
                    id: other.id.clone(),
                });
            }
            s.containers.insert(c.id.clone(), c);
            Ok(())
        })
    }

    /// Changes container `id`, if it exists.
    pub fn modify<R>(&self, id: &str, f: impl FnOnce(&mut Container) -> R) -> Option<R> {
        self.with(|s| s.containers.get_mut(id).map(f))
    }

    pub fn get(&self, id: &str) -> Option<Container> {
        self.read(|s| s.containers.get(id).cloned())
    }

    /// Stores container `id`'s current record (or its absence) in coord.
    pub async fn persist(&self, id: &str) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send((id.to_owned(), tx))
            .await
            .map_err(|_| "swarm is stopping".to_owned())?;
        rx.await.map_err(|_| "swarm is stopping".to_owned())?
    }

    /// Waits until `done` holds for container `id` (`None` once it is gone), at most `limit`.
    pub async fn wait_for(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(Option<&Container>) -> bool,
    ) -> Option<Option<Container>> {
        let mut rx = self.changed.subscribe();
        let deadline = Instant::now() + limit;
        loop {
            rx.borrow_and_update();
            let now = self.get(id);
            if done(now.as_ref()) {
                return Some(now);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return None },
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Sends a scheduler call (the framework id is added); an error when not subscribed.
    pub async fn call(&self, mut call: Value) -> Result<(), String> {
        let Some(conn) = self.conn.borrow().clone() else {
            return Err("swarm is not subscribed to a Mesos master".into());
        };
        call["framework_id"] = json!({"value": conn.framework_id});
        conn.calls
            .send_json(call.to_string())
            .await
            .map(|_| ())
            .map_err(|e| capstan_types::Chain(&e).to_string())
    }

    /// Asks the master to kill container `c`'s current task.
    pub async fn kill_task(&self, c: &Container, grace_secs: Option<u64>) -> Result<(), String> {
        let Some(t) = &c.task else {
            return Ok(());
        };
        let mut kill = json!({"task_id": {"value": t.task_id}, "agent_id": {"value": t.agent_id}});
        if let Some(g) = grace_secs {
            kill["kill_policy"] =
                json!({"grace_period": {"nanoseconds": (g as i64).saturating_mul(1_000_000_000)}});
        }
        self.call(json!({"type": "KILL", "kill": kill})).await
    }
}

/// The coord writer: stores each named record's value at the time of writing.
pub async fn write_records(swarm: std::sync::Arc<Swarm>, mut jobs: mpsc::Receiver<WriteJob>) {
    while let Some((id, reply)) = jobs.recv().await {
        let current = swarm.get(&id);
        let result: Result<(), StoreError> = match &current {
            Some(c) => swarm.store.put(c).await,
            None => swarm.store.delete(&id).await,
        };
        let result = result.map_err(|e| {
            let msg = capstan_types::Chain(&e).to_string();
            warn!(container = %id, error = %msg, "Cannot store the container record");
            msg
        });
        let _ = reply.send(result);
    }
}
