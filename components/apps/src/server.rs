//! Wiring: load the store, start the core task (owner of all state) with its timer, the store
//! writer, the Mesos driver, the health checker and the HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;

use capstan_runtime::{Chain, ConfigProblem, Exit, Validate, retry_until_cancelled};
use capstan_types::Backoff;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::core::{Core, CoreConfig, Deployment, GroupMeta, Snapshot, keys};
use crate::driver::{self, DriverConfig};
use crate::events::EventBus;
use crate::health;
use crate::http::{CoreHandle, Ctx, Durability, Info, dispatch};
use crate::model::{AppDefinition, PathId, TaskRecord, Timestamp};
use crate::store::{CoordStore, InMemoryStore, Store, StoreError, StoreOp, coalesce};

/// Why apps could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid apps config: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigProblem>),
    #[error("cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load state from the store")]
    Load(#[source] StoreError),
    #[error("cannot secure the API")]
    Security(#[source] capstan_iam::GuardError),
    #[error("cannot use the Mesos authentication secret")]
    Secret(#[source] crate::config::SecretError),
}

/// Why an apps instance stopped by itself. Each ends the process non-zero, so its supervisor
/// starts it again as a standby that loads the stored state.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("lost apps leadership")]
    LostLeadership,
    #[error("abdicated apps leadership (DELETE /v2/leader)")]
    Abdicated,
    #[error(
        "a store write failed, so this instance stepped down; a new leader loads the stored state"
    )]
    StoreFailed(#[source] StoreError),
}

/// The apps daemon.
pub struct Server;

/// A running apps daemon.
pub struct ServerHandle {
    local_addr: SocketAddr,
    token: CancellationToken,
    lifecycle: JoinHandle<Exit>,
    http: JoinHandle<()>,
}

impl ServerHandle {
    /// The bound REST API address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the daemon stopped, and says why.
    pub async fn wait(self) -> Exit {
        let exit = self.lifecycle.await.unwrap_or_else(Exit::failed);
        // The core is gone: stop the API too (a no-op after a requested shutdown).
        self.token.cancel();
        let _ = self.http.await;
        exit
    }

    /// Stops the daemon: the API closes, the Mesos subscription ends (tasks keep running;
    /// Mesos holds them for `failover_timeout`).
    pub async fn shutdown(self) -> Exit {
        self.token.cancel();
        self.wait().await
    }
}

async fn load(store: &dyn Store) -> Result<Snapshot, StoreError> {
    fn parse<T: serde::de::DeserializeOwned>(items: Vec<(String, Vec<u8>)>) -> Vec<T> {
        items
            .into_iter()
            .filter_map(|(k, v)| match serde_json::from_slice(&v) {
                Ok(x) => Some(x),
                Err(e) => {
                    warn!(key = %k, error = %Chain(&e), "Skipping unreadable stored value");
                    None
                }
            })
            .collect()
    }
    let apps: Vec<AppDefinition> = parse(store.list("/apps/").await?);
    let versions: Vec<AppDefinition> = parse(store.list("/versions/").await?);
    let tasks: Vec<TaskRecord> = parse(store.list("/tasks/").await?);
    let deployments: Vec<Deployment> = parse(store.list("/deployments/").await?);
    let groups: Vec<(PathId, GroupMeta)> = store
        .list("/groups/")
        .await?
        .into_iter()
        .filter_map(|(k, v)| {
            Some((
                PathId::parse(k.strip_prefix("/groups")?),
                serde_json::from_slice(&v).ok()?,
            ))
        })
        .collect();
    let framework_id = store
        .get(keys::FRAMEWORK_ID)
        .await?
        .and_then(|v| String::from_utf8(v).ok())
        .map(capstan_types::FrameworkId::from);
    Ok(Snapshot {
        apps,
        versions,
        groups,
        tasks,
        deployments,
        framework_id,
    })
}

type Job = Box<dyn FnOnce(&mut Core, Timestamp) + Send>;

/// What the core wants done outside, in order, through the store writer: scheduler calls
/// wait until every earlier write is persisted, so a task is stored before it is launched
/// and a leader that dies in between leaves no task its successor does not know.
enum Outgoing {
    Write(StoreOp),
    /// Boxed: a typed call is several times the size of a store write.
    Call(Box<driver::OutCall>),
}

/// Who leads, as the HTTP layer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Leadership {
    Leader,
    /// Another instance leads (its `host:port`), or nobody is known yet.
    Follower(Option<String>),
}

/// High availability through coord: the election and the client used for it.
struct Ha {
    client: capstan_coord_client::Client,
    election_prefix: String,
    lease_ttl: std::time::Duration,
}

/// First and longest wait between tries of a failed election or load step.
const RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(100);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// The backoff between tries of one start-up step.
fn step_backoff() -> Backoff {
    Backoff::new(RETRY_INITIAL, RETRY_MAX)
}
/// First and longest wait between tries of a store write the store could not take.
const WRITE_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(50);
const WRITE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// One store transaction carries at most this many ops and about this many bytes (coord
/// takes request bodies up to 8 MiB, values base64-encoded).
const TXN_MAX_OPS: usize = 512;
const TXN_MAX_BYTES: usize = 2 << 20;
/// Ops the writer takes from its queue before storing them.
const WRITE_BATCH_MAX: usize = 4096;

/// The store writer: applies the core's writes in order, in atomic batches, and releases each
/// scheduler call only once every write queued before it is stored. A write the store cannot
/// take now is retried; a write it refuses stops the writer — nothing queued after it is
/// stored or sent, waiting replies fail, and the caller steps down.
async fn write_store(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Outgoing>,
    calls: mpsc::Sender<driver::OutCall>,
    durable: watch::Sender<Durability>,
    token: CancellationToken,
) -> Result<(), StoreError> {
    let mut stored = 0u64;
    let mut next: Option<Outgoing> = None;
    loop {
        let item = match next.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return Ok(()),
            },
        };
        let first = match item {
            Outgoing::Call(call) => {
                if calls.send(*call).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            Outgoing::Write(op) => op,
        };
        let mut ops = vec![first];
        while ops.len() < WRITE_BATCH_MAX {
            match rx.try_recv() {
                Ok(Outgoing::Write(op)) => ops.push(op),
                Ok(call) => {
                    next = Some(call);
                    break;
                }
                Err(_) => break,
            }
        }
        let count = ops.len() as u64;
        let ops = coalesce(ops);
        let mut chunk_start = 0;
        while chunk_start < ops.len() {
            let mut end = chunk_start;
            let mut bytes = 0;
            while end < ops.len()
                && end - chunk_start < TXN_MAX_OPS
                && (end == chunk_start || bytes + ops[end].size() <= TXN_MAX_BYTES)
            {
                bytes += ops[end].size();
                end += 1;
            }
            if let Err(e) = apply_with_retry(store.as_ref(), &ops[chunk_start..end], &token).await {
                if let Some(e) = e {
                    durable.send_modify(|d| d.failed = true);
                    return Err(e);
                }
                // Cancelled: stop without releasing anything queued after these writes.
                return Ok(());
            }
            chunk_start = end;
        }
        stored += count;
        durable.send_modify(|d| d.stored = stored);
    }
}

/// Applies `ops` atomically, retrying while the store is unavailable. `Err(None)` when
/// cancelled first, `Err(Some(e))` when the store refused them.
async fn apply_with_retry(
    store: &dyn Store,
    ops: &[StoreOp],
    token: &CancellationToken,
) -> Result<(), Option<StoreError>> {
    let mut backoff = Backoff::new(WRITE_RETRY_INITIAL, WRITE_RETRY_MAX);
    loop {
        match store.apply(ops).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                warn!(ops = ops.len(), attempt = backoff.attempts() + 1, error = %Chain(&e), "Store write failed; retrying");
            }
            Err(e) => {
                tracing::error!(ops = ops.len(), error = %Chain(&e), "The store refused a write; stepping down");
                return Err(Some(e));
            }
        }
        tokio::select! {
            _ = token.cancelled() => return Err(None),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// The TLS a strict apps speaks to its own clients' servers (coord, the masters): the node's
/// certificate.
fn client_tls(config: &Config) -> Result<Option<Arc<rustls::ClientConfig>>, StartError> {
    config
        .security
        .client_tls()
        .map_err(|e| StartError::Security(capstan_iam::GuardError::Tls(e)))
}

fn coord_options(config: &Config) -> Result<capstan_coord_client::ClientOptions, StartError> {
    Ok(capstan_coord_client::ClientOptions {
        tls: client_tls(config)?,
        ..capstan_coord_client::ClientOptions::default()
    })
}

impl Server {
    /// Starts apps over the configured store: coord when `store.coord_endpoints` is set
    /// (then instances elect a leader through coord and followers proxy to it), else memory
    /// (state is then lost with the process).
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let store: Arc<dyn Store> = if config.store.coord_endpoints.is_empty() {
            Arc::new(InMemoryStore::new())
        } else {
            let prefix = config
                .store
                .prefix
                .as_deref()
                .unwrap_or(capstan_coord_client::keyspace::APPS);
            Arc::new(
                CoordStore::with_options(
                    &config.store.coord_endpoints,
                    prefix,
                    coord_options(&config)?,
                )
                .map_err(StartError::Load)?,
            )
        };
        Server::start_with_store(config, store, shutdown).await
    }

    /// Starts apps over `store` (tests share one store between restarts).
    pub async fn start_with_store(
        config: Config,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(StartError::Invalid(problems));
        }
        if let Some(auth) = &config.mesos_authentication {
            auth.credential().map_err(StartError::Secret)?;
        }
        client_tls(&config)?;
        let ha = if config.store.coord_endpoints.is_empty() {
            None
        } else {
            let client = capstan_coord_client::Client::with_options(
                &config.store.coord_endpoints,
                coord_options(&config)?,
            )
            .map_err(|e| StartError::Load(StoreError::Unavailable(Box::new(e))))?;
            let prefix = config
                .store
                .prefix
                .clone()
                .unwrap_or_else(|| capstan_coord_client::keyspace::APPS.into());
            Some(Ha {
                client,
                election_prefix: capstan_coord_client::keyspace::election(&prefix),
                lease_ttl: config.leader_lease_ttl,
            })
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let host = config.hostname.clone().unwrap_or_else(|| {
            if local_addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                local_addr.ip().to_string()
            }
        });
        let me = format!("{host}:{}", local_addr.port());
        let events = EventBus::default();
        let token = shutdown.child_token();
        let (job_tx, job_rx) = mpsc::channel::<Job>(1024);
        let (durable_tx, durable_rx) = watch::channel(Durability::default());
        let handle = CoreHandle {
            tx: job_tx,
            durable: durable_rx,
        };
        let (lead_tx, lead_rx) = watch::channel(if ha.is_some() {
            Leadership::Follower(None)
        } else {
            Leadership::Leader
        });
        let abdicate = Arc::new(tokio::sync::Notify::new());
        let info = Info {
            leader: me.clone(),
            http_port: local_addr.port(),
            masters: config.masters.clone(),
            framework_name: config.framework_name.clone(),
            mesos_role: config.mesos_role.clone(),
            mesos_user: config.mesos_user.clone(),
            failover_timeout_secs: config.failover_timeout.as_secs(),
            local_port_min: config.local_port_min,
            local_port_max: config.local_port_max,
            decline_offer_duration_ms: config.decline_offer_duration.as_millis() as u64,
            ha: ha.is_some(),
            container_policy: config.container_policy.clone(),
        };
        let ctx = Ctx {
            core: handle.clone(),
            events: events.clone(),
            info: Arc::new(info),
            shutdown: token.clone(),
            leadership: lead_rx,
            proxy: capstan_http_client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            abdicate: abdicate.clone(),
        };
        let router = axum::Router::new().fallback(dispatch).with_state(ctx);
        let (guard, tls) = capstan_iam::secure_api(
            "apps",
            &config.security,
            ha.as_ref().map(|h| &h.client),
            Arc::new(crate::http::access),
            &token,
        )
        .await
        .map_err(StartError::Security)?;
        let http_token = token.clone();
        let http = tokio::spawn(async move {
            let limits = capstan_runtime::HttpLimits::default();
            let r =
                capstan_runtime::serve_secured(listener, router, limits, guard, tls, http_token)
                    .await;
            if let Err(e) = r {
                warn!(error = %Chain(&e), "Apps HTTP server failed");
            }
        });
        info!(addr = %local_addr, ha = ha.is_some(), "Apps listening");
        let lifecycle = tokio::spawn(lead(
            config,
            me,
            store,
            ha,
            events,
            handle,
            job_rx,
            lead_tx,
            durable_tx,
            abdicate,
            token.clone(),
        ));
        Ok(ServerHandle {
            local_addr,
            token,
            lifecycle,
            http,
        })
    }
}

/// Becomes leader (at once without coord), loads the state, then owns the core until
/// shutdown, abdication, lost leadership or a refused store write (which stop this instance,
/// like Marathon).
#[allow(clippy::too_many_arguments)]
async fn lead(
    config: Config,
    me: String,
    store: Arc<dyn Store>,
    ha: Option<Ha>,
    events: EventBus,
    handle: CoreHandle,
    mut job_rx: mpsc::Receiver<Job>,
    lead_tx: watch::Sender<Leadership>,
    durable_tx: watch::Sender<Durability>,
    abdicate: Arc<tokio::sync::Notify>,
    token: CancellationToken,
) -> Exit {
    let mut held: Option<(
        capstan_coord_client::KeepAlive,
        capstan_coord_client::Client,
        u64,
    )> = None;
    let mut observer_task = None;
    if let Some(ha) = &ha {
        // Followers learn who leads, to proxy to it.
        let election =
            capstan_coord_client::Election::new(ha.client.clone(), ha.election_prefix.clone())
                .with_liveness_probe();
        let obs_election = election.clone();
        let obs_tx = lead_tx.clone();
        let obs_token = token.clone();
        observer_task = Some(tokio::spawn(async move {
            while !obs_token.is_cancelled() {
                let Some(mut observer) = retry_until_cancelled(
                    "Observing the apps leader",
                    &obs_token,
                    step_backoff(),
                    || obs_election.observe(),
                )
                .await
                else {
                    return;
                };
                loop {
                    let next = tokio::select! {
                        _ = obs_token.cancelled() => return,
                        n = observer.next() => n,
                    };
                    match next {
                        Ok(leader) => {
                            let addr =
                                leader.map(|l| String::from_utf8_lossy(&l.value).into_owned());
                            obs_tx.send_if_modified(|state| match state {
                                Leadership::Leader => false,
                                Leadership::Follower(current) if *current == addr => false,
                                Leadership::Follower(current) => {
                                    *current = addr.clone();
                                    true
                                }
                            });
                        }
                        Err(e) => {
                            warn!(error = %Chain(&e), "Watching the apps leader failed");
                            break;
                        }
                    }
                }
            }
        }));
        let ttl = ha.lease_ttl;
        let Some(lease) =
            retry_until_cancelled("Granting the leader lease", &token, step_backoff(), || {
                ha.client.lease_grant(ttl)
            })
            .await
        else {
            return Exit::Requested;
        };
        let keep = ha.client.spawn_keep_alive(lease.id, ttl);
        info!(candidate = %me, "Campaigning for apps leadership");
        let elected = tokio::select! {
            _ = token.cancelled() => None,
            r = retry_until_cancelled("Campaigning", &token, step_backoff(), || election.campaign(lease.id, me.clone().into_bytes())) => r,
        };
        if elected.is_none() {
            let _ = ha.client.lease_revoke(lease.id).await;
            return Exit::Requested;
        }
        info!(leader = %me, "Elected apps leader");
        held = Some((keep, ha.client.clone(), lease.id));
        lead_tx.send_replace(Leadership::Leader);
    }
    let Some(snapshot) = retry_until_cancelled("Loading state", &token, step_backoff(), || {
        load(store.as_ref())
    })
    .await
    else {
        return Exit::Requested;
    };
    info!(apps = snapshot.apps.len(), tasks = snapshot.tasks.len(), framework_id = ?snapshot.framework_id, "Loaded state");
    let core_cfg = CoreConfig {
        role: config.mesos_role.clone(),
        refuse_seconds: config.decline_offer_duration.as_secs_f64(),
        port_min: config.local_port_min,
        port_max: config.local_port_max,
        reconciliation_interval_ms: config.reconciliation_interval.as_millis() as i64,
        kill_retry_ms: 10_000,
        task_launch_timeout_ms: config.task_launch_timeout.as_millis() as i64,
        container_policy: config.container_policy.clone(),
    };
    let mut core = Core::new(core_cfg, events, snapshot);
    let (call_tx, call_rx) = mpsc::channel::<driver::OutCall>(4096);
    let (store_tx, store_rx) = mpsc::channel::<Outgoing>(4096);
    let mut durable_rx = durable_tx.subscribe();
    let writer = tokio::spawn(write_store(
        store.clone(),
        store_rx,
        call_tx,
        durable_tx,
        token.clone(),
    ));
    let driver_cfg = DriverConfig {
        masters: config.masters.clone(),
        framework_name: config.framework_name.clone(),
        user: config.mesos_user.clone(),
        role: config.mesos_role.clone(),
        hostname: me
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default(),
        webui_url: format!("http://{me}"),
        failover_timeout_secs: config.failover_timeout.as_secs_f64(),
        backoff_max: config.reconnect_backoff_max,
        heartbeat_failure_threshold: config.heartbeat_failure_threshold,
        credential: config.mesos_authentication.as_ref().and_then(|a| match a.credential() {
            Ok(c) => Some((a.principal.clone(), c)),
            Err(e) => {
                warn!(error = %Chain(&e), "Cannot read the Mesos secret; connecting without it");
                None
            }
        }),
        // Loaded (and checked) once at start already.
        tls: config.security.client_tls().ok().flatten(),
    };
    let driver_task = tokio::spawn(driver::run(
        driver_cfg,
        handle.clone(),
        call_rx,
        token.clone(),
    ));
    let tick_every = config.tick_interval;
    let health_task = tokio::spawn(run_health(handle, tick_every, token.clone()));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let elected = held.is_some();
    let mut stopped = None;
    loop {
        let lost = async {
            match held.as_mut() {
                Some((keep, _, _)) => keep.lost().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            job = job_rx.recv() => match job {
                Some(job) => job(&mut core, Timestamp::now()),
                None => break,
            },
            _ = tick.tick() => core.tick(Timestamp::now()),
            _ = token.cancelled() => break,
            _ = abdicate.notified(), if elected => {
                info!("Abdicating apps leadership");
                stopped = Some(Stopped::Abdicated);
                token.cancel();
                break;
            }
            _ = lost => {
                tracing::error!("Lost apps leadership; stopping this instance");
                stopped = Some(Stopped::LostLeadership);
                token.cancel();
                break;
            }
            Ok(_) = durable_rx.wait_for(|d| d.failed) => {
                // The writer stopped; the reason comes from its result below.
                token.cancel();
                break;
            }
        }
        let ops = std::mem::take(&mut core.store_ops);
        core.ops_issued += ops.len() as u64;
        let ops = ops.into_iter();
        let calls = std::mem::take(&mut core.calls)
            .into_iter()
            .map(|call| Outgoing::Call(Box::new(call)));
        for out in ops.map(Outgoing::Write).chain(calls) {
            if store_tx.send(out).await.is_err() {
                break;
            }
        }
    }
    // Dropping the job queue fails every pending and later `CoreHandle::call`, so the
    // driver and the health checker see the core is gone instead of waiting forever.
    drop(job_rx);
    drop(core);
    drop(store_tx);
    if let Ok(Err(e)) = writer.await {
        stopped = Some(Stopped::StoreFailed(e));
    }
    let _ = driver_task.await;
    let _ = health_task.await;
    if let Some(t) = observer_task {
        let _ = t.await;
    }
    if let Some((_, client, lease)) = held {
        // Let a standby take over now instead of after the lease TTL.
        let _ = client.lease_revoke(lease).await;
    }
    info!("Apps core stopped");
    match stopped {
        Some(reason) => Exit::failed(reason),
        None => Exit::Requested,
    }
}

async fn run_health(core: CoreHandle, every: std::time::Duration, token: CancellationToken) {
    let client = capstan_http_client::client();
    let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Ok((jobs, ready_jobs)) = core
            .submit(|c, now| (c.due_health_checks(now), c.due_readiness_checks(now)))
            .await
        else {
            break;
        };
        for job in ready_jobs {
            let core = core.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let outcome = health::probe_readiness(&client, &job).await;
                let _ = core
                    .submit(move |c, now| {
                        c.readiness_result(job.task_id.as_str(), job.index, outcome, now)
                    })
                    .await;
            });
        }
        for job in jobs {
            let core = core.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let result = health::probe(&client, &job).await;
                let _ = core
                    .submit(move |c, now| {
                        c.health_result(job.task_id.as_str(), job.index, result, now)
                    })
                    .await;
            });
        }
    }
}
