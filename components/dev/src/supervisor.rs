//! The supervisor: one process that runs every daemon of the dev cluster as a child process,
//! restarts a crashed daemon with backoff, carries out failure drills (`kill`/`restart` a node)
//! and publishes what runs where in `cluster.json`. It also stores the cluster's identity in
//! coord once coord answers ([`crate::identity::seed`]) and only then starts the routers.
//!
//! One task owns the cluster's state (the `supervise` loop); each daemon has a task that owns
//! its child process and follows a `watch` of what the loop wants from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::DevError;
use crate::control::{self, Request, Response};
use crate::layout::{Daemon, Node, Role};
use crate::paths::ClusterPaths;

/// First restart delay of a crashed daemon; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A daemon that ran this long before crashing restarts after [`MIN_BACKOFF`] again.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a daemon gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a daemon is doing, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonState {
    /// Started, not yet READY.
    Starting,
    /// Sent READY=1.
    Running,
    /// Exited on its own; will be started again after a backoff.
    Restarting,
    /// Stopped on purpose (`capstan dev kill`, or shutdown).
    Stopped,
}

/// One daemon in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonSnapshot {
    pub name: Daemon,
    pub pid: Option<u32>,
    pub endpoint: String,
    pub state: DaemonState,
    pub restarts: u32,
    pub log: PathBuf,
}

/// One node in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSnapshot {
    #[serde(flatten)]
    pub node: Node,
    /// True after `capstan dev kill NODE`, until `restart`.
    pub down: bool,
    pub daemons: Vec<DaemonSnapshot>,
}

/// What the supervisor publishes: the cluster as it runs now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    pub supervisor_pid: u32,
    pub state_dir: PathBuf,
    /// Every daemon of every node that is not down has sent READY=1 at least once.
    pub ready: bool,
    pub nodes: Vec<NodeSnapshot>,
}

impl ClusterSnapshot {
    pub fn node(&self, name: &str) -> Option<&NodeSnapshot> {
        self.nodes.iter().find(|n| n.node.name == name)
    }
}

/// What the supervise loop wants from one daemon task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Desired {
    run: bool,
    /// Bumped to make a running daemon start over (`capstan dev restart`).
    generation: u64,
    /// Stop for good and end the task.
    exit: bool,
}

#[derive(Debug)]
struct DaemonEvent {
    node: usize,
    daemon: usize,
    pid: Option<u32>,
    state: DaemonState,
}

struct DaemonSpec {
    node: usize,
    daemon: usize,
    which: Daemon,
    label: String,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    notify_dir: PathBuf,
    notify_name: String,
}

/// Runs the cluster until `shutdown` is cancelled or a `down` request arrives, then stops every
/// daemon. The node configs must already be written (see [`crate::config`]).
pub async fn supervise(
    nodes: Vec<Node>,
    paths: ClusterPaths,
    bin: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), DevError> {
    let listener = control::listen(&paths)?;
    let (events_tx, mut events_rx) = mpsc::channel::<DaemonEvent>(256);
    let mut snapshot = ClusterSnapshot {
        supervisor_pid: std::process::id(),
        state_dir: paths.root().to_path_buf(),
        ready: false,
        nodes: nodes
            .iter()
            .map(|node| NodeSnapshot {
                node: node.clone(),
                down: false,
                daemons: node
                    .daemons()
                    .iter()
                    .map(|d| DaemonSnapshot {
                        name: *d,
                        pid: None,
                        endpoint: format!("http://{}", node.http_addr(*d)),
                        state: DaemonState::Starting,
                        restarts: 0,
                        log: paths.daemon_log(&node.name, *d),
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut desired: BTreeMap<(usize, usize), watch::Sender<Desired>> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    // Readiness sockets live in a short directory: unix socket paths are limited to 108 bytes.
    let notify_dir = std::env::temp_dir().join(paths.control_name());
    std::fs::create_dir_all(&notify_dir).map_err(|source| DevError::Io {
        path: notify_dir.clone(),
        source,
    })?;
    for (ni, node) in nodes.iter().enumerate() {
        for (di, which) in node.daemons().iter().enumerate() {
            // Routers wait until the cluster's identity is in coord (see `seeded` below).
            let (tx, rx) = watch::channel(Desired {
                run: *which != Daemon::Router,
                generation: 0,
                exit: false,
            });
            desired.insert((ni, di), tx);
            let spec = DaemonSpec {
                node: ni,
                daemon: di,
                which: *which,
                label: format!("{}/{}", node.name, which),
                bin: bin.clone(),
                config: paths.node_config(&node.name),
                log: paths.daemon_log(&node.name, *which),
                notify_dir: notify_dir.clone(),
                notify_name: format!("{}.{}", node.name, which),
            };
            tasks.spawn(run_daemon(spec, rx, events_tx.clone()));
        }
    }
    drop(events_tx);
    write_snapshot(&paths, &snapshot)?;

    let (control_tx, mut control_rx) = mpsc::channel::<(Request, oneshot::Sender<Response>)>(16);
    let control_task = tokio::spawn(control::serve(listener, control_tx));
    let coord_endpoints: Vec<String> = nodes
        .iter()
        .filter(|n| n.role == Role::Master)
        .map(|m| m.http_addr(Daemon::Coord).to_string())
        .collect();
    let mut seeding = Some(tokio::spawn(crate::identity::seed(
        coord_endpoints,
        paths.clone(),
        shutdown.child_token(),
    )));
    let mut seeded = false;
    let mut announced = false;
    let mut failure = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            done = async { seeding.as_mut().expect("guarded by the branch condition").await }, if seeding.is_some() => {
                seeding = None;
                match done {
                    Ok(Ok(true)) => {
                        seeded = true;
                        set_routers(&snapshot, &desired, |d| d.run = true);
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        warn!(error = %capstan_runtime::Chain(&e), "Cannot store the cluster's identity; stopping");
                        failure = Some(e);
                        break;
                    }
                    Err(e) => {
                        failure = Some(DevError::Refused(format!("storing the cluster's identity failed: {e}")));
                        break;
                    }
                }
            }
            Some(ev) = events_rx.recv() => {
                let d = &mut snapshot.nodes[ev.node].daemons[ev.daemon];
                if ev.state == DaemonState::Restarting {
                    d.restarts += 1;
                }
                d.pid = ev.pid;
                d.state = ev.state;
                if !snapshot.ready && all_up(&snapshot) {
                    snapshot.ready = true;
                }
                write_snapshot(&paths, &snapshot)?;
                if snapshot.ready && !announced {
                    announced = true;
                    info!("Cluster ready");
                }
            }
            Some((req, reply)) = control_rx.recv() => {
                let response = match req {
                    Request::Status => Response::Status(Box::new(snapshot.clone())),
                    Request::Down => { let _ = reply.send(Response::Ok); break; }
                    Request::Kill { node } | Request::Restart { node } if snapshot.node(&node).is_none() => {
                        Response::Error(format!("no node named {node:?}; nodes: {}", node_names(&snapshot)))
                    }
                    Request::Kill { node } => {
                        set_node(&mut snapshot, &desired, &node, |d| d.run = false, true);
                        info!(node = %node, "Node killed");
                        Response::Ok
                    }
                    Request::Restart { node } => {
                        set_node(&mut snapshot, &desired, &node, |d| { d.run = true; d.generation += 1; }, false);
                        if !seeded {
                            set_routers(&snapshot, &desired, |d| d.run = false);
                        }
                        info!(node = %node, "Node restarting");
                        Response::Ok
                    }
                };
                let _ = reply.send(response);
                write_snapshot(&paths, &snapshot)?;
            }
        }
    }

    info!("Stopping the cluster");
    control_task.abort();
    if let Some(seeding) = seeding {
        seeding.abort();
    }
    // Agents first, so no task is reported lost by a master that outlives them; masters last.
    for role in [Role::Agent, Role::Master] {
        for (&(ni, _), tx) in &desired {
            if snapshot.nodes[ni].node.role == role {
                tx.send_modify(|d| d.exit = true);
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let _ = std::fs::remove_file(paths.cluster_json());
    let _ = std::fs::remove_dir_all(&notify_dir);
    failure.map_or(Ok(()), Err)
}

/// Changes what the router of every master that is not down should do.
fn set_routers(
    snapshot: &ClusterSnapshot,
    desired: &BTreeMap<(usize, usize), watch::Sender<Desired>>,
    change: impl Fn(&mut Desired),
) {
    for (ni, node) in snapshot.nodes.iter().enumerate() {
        for (di, d) in node.daemons.iter().enumerate() {
            if d.name == Daemon::Router && !node.down {
                desired[&(ni, di)].send_modify(&change);
            }
        }
    }
}

fn node_names(snapshot: &ClusterSnapshot) -> String {
    snapshot
        .nodes
        .iter()
        .map(|n| n.node.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn set_node(
    snapshot: &mut ClusterSnapshot,
    desired: &BTreeMap<(usize, usize), watch::Sender<Desired>>,
    name: &str,
    change: impl Fn(&mut Desired),
    down: bool,
) {
    for (ni, node) in snapshot.nodes.iter_mut().enumerate() {
        if node.node.name == name {
            node.down = down;
            for di in 0..node.daemons.len() {
                desired[&(ni, di)].send_modify(&change);
            }
        }
    }
}

fn all_up(snapshot: &ClusterSnapshot) -> bool {
    snapshot
        .nodes
        .iter()
        .filter(|n| !n.down)
        .flat_map(|n| &n.daemons)
        .all(|d| d.state == DaemonState::Running)
}

fn write_snapshot(paths: &ClusterPaths, snapshot: &ClusterSnapshot) -> Result<(), DevError> {
    let json = serde_json::to_vec_pretty(snapshot).expect("a snapshot always serialises");
    crate::paths::write_atomic(&paths.cluster_json(), &json)
}

/// Owns one daemon's child process for the life of the cluster.
async fn run_daemon(
    spec: DaemonSpec,
    mut desired: watch::Receiver<Desired>,
    events: mpsc::Sender<DaemonEvent>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut spawns = 0u32;
    let send = |pid: Option<u32>, state: DaemonState| {
        let events = events.clone();
        let (node, daemon) = (spec.node, spec.daemon);
        async move {
            let _ = events
                .send(DaemonEvent {
                    node,
                    daemon,
                    pid,
                    state,
                })
                .await;
        }
    };
    loop {
        let want = *desired.borrow_and_update();
        if want.exit {
            return;
        }
        if !want.run {
            if desired.changed().await.is_err() {
                return;
            }
            continue;
        }
        spawns += 1;
        let (mut child, notify) = match spawn(&spec, spawns) {
            Ok(c) => c,
            Err(e) => {
                warn!(daemon = %spec.label, error = %capstan_runtime::Chain(&e), "Cannot start daemon");
                send(None, DaemonState::Restarting).await;
                if wait_or_change(&mut desired, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let pid = child.id();
        let started = Instant::now();
        send(pid, DaemonState::Starting).await;
        let mut ready_seen = false;
        let outcome = loop {
            tokio::select! {
                status = child.wait() => break Outcome::Exited(status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())),
                ready = wait_ready(&notify), if !ready_seen => {
                    if ready {
                        ready_seen = true;
                        info!(daemon = %spec.label, pid = pid.unwrap_or(0), "Daemon ready");
                        send(pid, DaemonState::Running).await;
                    }
                }
                changed = desired.changed() => {
                    let now = *desired.borrow_and_update();
                    if changed.is_err() || now.exit || !now.run || now.generation != want.generation {
                        break Outcome::Stop(now);
                    }
                }
            }
        };
        match outcome {
            Outcome::Exited(status) => {
                warn!(daemon = %spec.label, %status, log = %spec.log.display(), "Daemon exited; restarting");
                if started.elapsed() > STABLE_AFTER {
                    backoff = MIN_BACKOFF;
                }
                send(None, DaemonState::Restarting).await;
                if wait_or_change(&mut desired, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Outcome::Stop(now) => {
                let graceful = now.exit;
                stop_child(&mut child, graceful).await;
                send(None, DaemonState::Stopped).await;
                backoff = MIN_BACKOFF;
                if now.exit {
                    return;
                }
            }
        }
    }
}

enum Outcome {
    Exited(String),
    Stop(Desired),
}

/// Sleeps `delay` unless told to stop meanwhile; true when the task should end.
async fn wait_or_change(desired: &mut watch::Receiver<Desired>, delay: Duration) -> bool {
    tokio::select! {
        _ = sleep(delay) => false,
        changed = desired.changed() => changed.is_err() || desired.borrow().exit,
    }
}

/// Starts the daemon with its own `NOTIFY_SOCKET`, a socket file named per spawn so a restart
/// never collides with the previous run's socket.
fn spawn(spec: &DaemonSpec, nth: u32) -> std::io::Result<(Child, UnixDatagram)> {
    let socket = spec
        .notify_dir
        .join(format!("{}-{nth}.sock", spec.notify_name));
    let _ = std::fs::remove_file(&socket);
    let notify = UnixDatagram::bind(&socket)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let child = Command::new(&spec.bin)
        .arg("daemon")
        .arg(spec.which.name())
        .arg("--config")
        .arg(&spec.config)
        .env("NOTIFY_SOCKET", &socket)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    Ok((child, notify))
}

/// Waits for a `READY=1` datagram; false if the socket failed (then readiness is never seen).
async fn wait_ready(notify: &UnixDatagram) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match notify.recv(&mut buf).await {
            Ok(n) => {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l.trim() == "READY=1")
                {
                    return true;
                }
            }
            Err(_) => return std::future::pending().await,
        }
    }
}

async fn stop_child(child: &mut Child, graceful: bool) {
    if graceful && let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Checks that nothing else listens where the cluster's daemons will, before starting any.
pub fn check_addresses_free(nodes: &[Node]) -> Result<(), DevError> {
    for node in nodes {
        for addr in node.bound_tcp_addrs() {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                return Err(DevError::AddressInUse {
                    addr,
                    node: node.name.clone(),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

/// The supervisor's pid from a `cluster.json`, if that process still runs.
pub fn running_supervisor(cluster_json: &Path) -> Option<ClusterSnapshot> {
    let bytes = std::fs::read(cluster_json).ok()?;
    let snapshot: ClusterSnapshot = serde_json::from_slice(&bytes).ok()?;
    let alive = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(snapshot.supervisor_pid as i32),
        None,
    )
    .is_ok();
    alive.then_some(snapshot)
}
