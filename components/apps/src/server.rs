//! Wiring: load the store, start the core task (owner of all state) with its timer, the store
//! writer, the Mesos driver, the health checker and the HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;

use capstan_runtime::{ConfigProblem, Validate};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::core::{Core, CoreConfig, Deployment, GroupMeta, Snapshot, keys};
use crate::driver::{self, DriverConfig};
use crate::events::EventBus;
use crate::health;
use crate::http::{CoreHandle, Ctx, Info, dispatch};
use crate::model::{AppDefinition, PathId, TaskRecord, Timestamp};
use crate::store::{CoordStore, InMemoryStore, Store, StoreError, StoreOp};

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
}

/// The apps daemon.
pub struct Server;

/// A running apps daemon.
pub struct ServerHandle {
    local_addr: SocketAddr,
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound REST API address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until every task stopped (after shutdown was requested).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Stops the daemon: the API closes, the Mesos subscription ends (tasks keep running;
    /// Mesos holds them for `failover_timeout`).
    pub async fn shutdown(self) {
        self.token.cancel();
        self.wait().await;
    }
}

async fn load(store: &dyn Store) -> Result<Snapshot, StoreError> {
    fn parse<T: serde::de::DeserializeOwned>(items: Vec<(String, Vec<u8>)>) -> Vec<T> {
        items
            .into_iter()
            .filter_map(|(k, v)| match serde_json::from_slice(&v) {
                Ok(x) => Some(x),
                Err(e) => {
                    warn!(key = %k, error = %e, "Skipping unreadable stored value");
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
        .and_then(|v| String::from_utf8(v).ok());
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
    Call(driver::OutCall),
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

/// Runs `f` until it succeeds or `token` is cancelled, backing off between attempts.
async fn retry<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    token: &CancellationToken,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => warn!(error = %e, "{what} failed; retrying"),
        }
        tokio::select! {
            _ = token.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
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
            let prefix = config.store.prefix.as_deref().unwrap_or("/capstan/apps");
            Arc::new(
                CoordStore::new(&config.store.coord_endpoints, prefix).map_err(StartError::Load)?,
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
        let ha = if config.store.coord_endpoints.is_empty() {
            None
        } else {
            let client = capstan_coord_client::Client::new(&config.store.coord_endpoints)
                .map_err(|e| StartError::Load(StoreError::Unavailable(Box::new(e))))?;
            let prefix = config
                .store
                .prefix
                .clone()
                .unwrap_or_else(|| "/capstan/apps".into());
            Some(Ha {
                client,
                election_prefix: format!("{prefix}/leader"),
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
        let handle = CoreHandle { tx: job_tx };
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
        };
        let ctx = Ctx {
            core: handle.clone(),
            events: events.clone(),
            info: Arc::new(info),
            shutdown: token.clone(),
            leadership: lead_rx,
            proxy: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            abdicate: abdicate.clone(),
        };
        let router = axum::Router::new().fallback(dispatch).with_state(ctx);
        let http_token = token.clone();
        let http = tokio::spawn(async move {
            let r = axum::serve(listener, router)
                .with_graceful_shutdown(async move { http_token.cancelled().await })
                .await;
            if let Err(e) = r {
                warn!(error = %e, "Apps HTTP server failed");
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
            abdicate,
            token.clone(),
        ));
        Ok(ServerHandle {
            local_addr,
            token,
            tasks: vec![lifecycle, http],
        })
    }
}

/// Becomes leader (at once without coord), loads the state, then owns the core until
/// shutdown, abdication or lost leadership (which stop this instance, like Marathon).
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
    abdicate: Arc<tokio::sync::Notify>,
    token: CancellationToken,
) {
    let mut held: Option<(
        capstan_coord_client::KeepAlive,
        capstan_coord_client::Client,
        u64,
    )> = None;
    let mut observer_task = None;
    if let Some(ha) = &ha {
        // Followers learn who leads, to proxy to it.
        let election =
            capstan_coord_client::Election::new(ha.client.clone(), ha.election_prefix.clone());
        let obs_election = election.clone();
        let obs_tx = lead_tx.clone();
        let obs_token = token.clone();
        observer_task = Some(tokio::spawn(async move {
            while !obs_token.is_cancelled() {
                let Some(mut observer) = retry("Observing the apps leader", &obs_token, || {
                    obs_election.observe()
                })
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
                            warn!(error = %e, "Watching the apps leader failed");
                            break;
                        }
                    }
                }
            }
        }));
        let ttl = ha.lease_ttl;
        let Some(lease) = retry("Granting the leader lease", &token, || {
            ha.client.lease_grant(ttl)
        })
        .await
        else {
            return;
        };
        let keep = ha.client.spawn_keep_alive(lease.id, ttl);
        info!(candidate = %me, "Campaigning for apps leadership");
        let elected = tokio::select! {
            _ = token.cancelled() => None,
            r = retry("Campaigning", &token, || election.campaign(lease.id, me.clone().into_bytes())) => r,
        };
        if elected.is_none() {
            let _ = ha.client.lease_revoke(lease.id).await;
            return;
        }
        info!(leader = %me, "Elected apps leader");
        held = Some((keep, ha.client.clone(), lease.id));
        lead_tx.send_replace(Leadership::Leader);
    }
    let Some(snapshot) = retry("Loading state", &token, || load(store.as_ref())).await else {
        return;
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
    };
    let mut core = Core::new(core_cfg, events, snapshot);
    let (call_tx, call_rx) = mpsc::channel::<driver::OutCall>(4096);
    let (store_tx, mut store_rx) = mpsc::channel::<Outgoing>(4096);
    let writer = tokio::spawn(async move {
        while let Some(out) = store_rx.recv().await {
            let op = match out {
                Outgoing::Write(op) => op,
                Outgoing::Call(call) => {
                    // Every earlier write is persisted: the call may go.
                    let _ = call_tx.send(call).await;
                    continue;
                }
            };
            // Puts and deletes are idempotent: retry a few times before giving up.
            let mut delay = std::time::Duration::from_millis(50);
            for attempt in 1..=5 {
                let r = match &op {
                    StoreOp::Put(k, v) => store.put(k, v.clone()).await,
                    StoreOp::Delete(k) => store.delete(k).await,
                };
                match r {
                    Ok(()) => break,
                    Err(e) if attempt == 5 => {
                        let key = match &op {
                            StoreOp::Put(k, _) | StoreOp::Delete(k) => k.clone(),
                        };
                        warn!(key = %key, error = %e, "Store write failed; state may be lost on restart");
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
    });
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
                token.cancel();
                break;
            }
            _ = lost => {
                tracing::error!("Lost apps leadership; stopping this instance");
                token.cancel();
                break;
            }
        }
        let ops = std::mem::take(&mut core.store_ops).into_iter();
        // Calls are compact text already (see `Core::calls`).
        let calls = std::mem::take(&mut core.calls)
            .into_iter()
            .map(Outgoing::Call);
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
    let _ = writer.await;
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
}

async fn run_health(core: CoreHandle, every: std::time::Duration, token: CancellationToken) {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Ok((jobs, ready_jobs)) = core
            .call(|c, now| (c.due_health_checks(now), c.due_readiness_checks(now)))
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
                    .call(move |c, now| c.readiness_result(&job.task_id, job.index, outcome, now))
                    .await;
            });
        }
        for job in jobs {
            let core = core.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let result = health::probe(&client, &job).await;
                let _ = core
                    .call(move |c, now| c.health_result(&job.task_id, job.index, result, now))
                    .await;
            });
        }
    }
}

/// Entry point for `capstan apps`: start, tell systemd we are ready, run until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let handle = Server::start(config, shutdown).await?;
    capstan_runtime::notify_ready();
    handle.wait().await;
    Ok(())
}
