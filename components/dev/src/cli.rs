//! The `capstan dev` subcommands: `up`, `status`, `down`, `kill`, `restart`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::DevError;
use crate::control::{self, Request, Response};
use crate::layout::{self, Role};
use crate::paths::ClusterPaths;
use crate::status::{self, ClusterStatus};
use crate::supervisor::{self, ClusterSnapshot};

/// How long `up` waits for every daemon to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Label every task container of a dev cluster carries (set through the agents' config).
pub const CLUSTER_LABEL: &str = "capstan.dev.cluster";

#[derive(Debug, clap::Subcommand)]
pub enum DevCommand {
    /// Start a cluster on this machine: masters at 127.0.1.<i>, agents at 127.0.2.<i>.
    Up(UpArgs),
    /// Show nodes, daemons, pids, health, leaders and endpoints.
    Status {
        /// Print the stable JSON form.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: StateDirArg,
    },
    /// Stop everything and remove the cluster's task containers.
    Down {
        /// Also remove the cluster's state (coord data, logs, configs).
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        dir: StateDirArg,
    },
    /// Failure drill: kill every daemon of NODE (e.g. master-1) and keep it down.
    Kill {
        node: String,
        #[command(flatten)]
        dir: StateDirArg,
    },
    /// Start NODE's daemons again (after `kill`, or to restart them).
    Restart {
        node: String,
        #[command(flatten)]
        dir: StateDirArg,
    },
}

#[derive(Debug, clap::Args)]
pub struct StateDirArg {
    /// Where the cluster keeps its state [default: $CAPSTAN_DEV_STATE or ~/.capstan/dev].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateDirArg {
    fn paths(&self) -> ClusterPaths {
        ClusterPaths::new(
            self.state_dir
                .clone()
                .unwrap_or_else(ClusterPaths::default_root),
        )
    }
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Masters (1, 3 or 5); each runs coord, master, apps and dns.
    #[arg(long, default_value_t = 1)]
    pub masters: u8,
    /// Agents; each runs an agent that starts Docker containers.
    #[arg(long, default_value_t = 2)]
    pub agents: u8,
    #[command(flatten)]
    pub dir: StateDirArg,
    /// Second octet of the node addresses (127.<net>.1.<i>), to run clusters side by side.
    #[arg(long, default_value_t = 0, hide = true)]
    pub net: u8,
    /// Run in the background and return once the cluster is ready.
    #[arg(long)]
    pub detach: bool,
    /// Internal: run as the detached supervisor.
    #[arg(long, hide = true)]
    pub supervise: bool,
    /// Stop the cluster when the process PID is gone (test suites sharing one cluster).
    #[arg(long, value_name = "PID", hide = true)]
    pub exit_with: Option<u32>,
}

/// Runs one `capstan dev` command, writing what a person reads to `out`.
pub async fn run(cmd: DevCommand, out: &mut (dyn Write + Send)) -> Result<(), DevError> {
    match cmd {
        DevCommand::Up(args) => up(args, out).await,
        DevCommand::Status { json, dir } => {
            let status = current_status(&dir.paths()).await?;
            if json {
                let text = serde_json::to_string_pretty(&status).expect("status always serialises");
                writeln!(out, "{text}").map_err(stdout_err)?;
            } else {
                print_status(&status, out)?;
            }
            Ok(())
        }
        DevCommand::Down { purge, dir } => down(&dir.paths(), purge, out).await,
        DevCommand::Kill { node, dir } => drill(&dir.paths(), Request::Kill { node }, out).await,
        DevCommand::Restart { node, dir } => {
            drill(&dir.paths(), Request::Restart { node }, out).await
        }
    }
}

async fn up(args: UpArgs, out: &mut (dyn Write + Send)) -> Result<(), DevError> {
    let paths = args.dir.paths();
    let bin = std::env::current_exe().map_err(DevError::Binary)?;
    let mut nodes = layout::layout(args.masters, args.agents, args.net)?;
    let with_router = has_router(&bin).await;
    if !with_router {
        nodes = layout::without_router(nodes);
    }
    if !args.supervise {
        if let Ok(status) = current_status(&paths).await {
            writeln!(
                out,
                "A dev cluster is already up for {}:",
                paths.root().display()
            )
            .map_err(stdout_err)?;
            return print_status(&status, out);
        }
        docker_ping().await?;
        supervisor::check_addresses_free(&nodes)?;
        if !with_router {
            writeln!(
                out,
                "This capstan has no router (`capstan daemon router`): masters run without one."
            )
            .map_err(stdout_err)?;
        }
        crate::identity::ensure(&nodes, &paths)?;
        crate::config::write_node_configs(&nodes, &paths, CLUSTER_LABEL)?;
    }
    if args.detach {
        let mut child = spawn_detached(&bin, &args, &paths)?;
        let log = paths.supervisor_log();
        let status = wait_ready(&paths, || match child.try_wait() {
            Ok(None) => None,
            _ => Some(DevError::SupervisorDied {
                tail: log_tail(&log, 20),
                log: log.clone(),
            }),
        })
        .await?;
        return print_status(&status, out);
    }

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        on_signal.cancel();
    });
    if let Some(pid) = args.exit_with {
        let on_exit = shutdown.clone();
        tokio::spawn(async move {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            while nix::sys::signal::kill(pid, None).is_ok() {
                sleep(Duration::from_millis(500)).await;
            }
            info!(
                pid = pid.as_raw(),
                "The process the cluster exits with is gone; stopping"
            );
            on_exit.cancel();
        });
    }
    let supervise = tokio::spawn(supervisor::supervise(
        nodes,
        paths.clone(),
        bin,
        shutdown.clone(),
    ));
    if !args.supervise {
        tokio::select! {
            status = wait_ready(&paths, || supervise.is_finished().then(|| {
                DevError::Refused("the supervisor stopped before the cluster was ready (see the log above)".into())
            })) => {
                print_status(&status?, out)?;
                writeln!(out, "\nPress Ctrl-C to stop the cluster.").map_err(stdout_err)?;
            }
            _ = shutdown.cancelled() => {}
        }
    }
    let result = supervise
        .await
        .unwrap_or_else(|e| Err(DevError::Refused(format!("supervisor failed: {e}"))));
    remove_task_containers(&paths).await;
    kill_task_processes(&paths);
    result
}

/// Whether `bin` has the router daemon (`capstan daemon router`); a build without it runs the
/// cluster without routers.
async fn has_router(bin: &Path) -> bool {
    tokio::process::Command::new(bin)
        .args(["daemon", "router", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

fn spawn_detached(
    bin: &Path,
    args: &UpArgs,
    paths: &ClusterPaths,
) -> Result<std::process::Child, DevError> {
    use std::os::unix::process::CommandExt as _;
    std::fs::create_dir_all(paths.root()).map_err(|source| DevError::Io {
        path: paths.root().into(),
        source,
    })?;
    let log_path = paths.supervisor_log();
    let log = std::fs::File::create(&log_path).map_err(|source| DevError::Io {
        path: log_path.clone(),
        source,
    })?;
    let log2 = log.try_clone().map_err(|source| DevError::Io {
        path: log_path.clone(),
        source,
    })?;
    std::process::Command::new(bin)
        .args(["dev", "up", "--supervise"])
        .arg("--masters")
        .arg(args.masters.to_string())
        .arg("--agents")
        .arg(args.agents.to_string())
        .arg("--net")
        .arg(args.net.to_string())
        .arg("--state-dir")
        .arg(paths.root())
        .args(args.exit_with.map(|pid| format!("--exit-with={pid}")))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(DevError::Binary)
}

/// Polls the supervisor until every daemon is ready and healthy and a master leads. `died`
/// says why the supervisor is gone, if it is.
async fn wait_ready(
    paths: &ClusterPaths,
    mut died: impl FnMut() -> Option<DevError>,
) -> Result<ClusterStatus, DevError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(e) = died() {
            return Err(e);
        }
        if let Ok(Response::Status(snapshot)) = control::call(paths, &Request::Status).await
            && snapshot.ready
        {
            let status = status::probe(&snapshot).await;
            if status.healthy() && status.leaders.master.is_some() {
                return Ok(status);
            }
        }
        if Instant::now() > deadline {
            return Err(DevError::NotReady {
                secs: READY_TIMEOUT.as_secs(),
                log: paths.root().join("nodes"),
            });
        }
        sleep(Duration::from_millis(200)).await;
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

async fn current_status(paths: &ClusterPaths) -> Result<ClusterStatus, DevError> {
    match control::call(paths, &Request::Status).await? {
        Response::Status(snapshot) => Ok(status::probe(&snapshot).await),
        Response::Error(e) => Err(DevError::Refused(e)),
        Response::Ok => Err(DevError::Refused(
            "unexpected answer from the supervisor".into(),
        )),
    }
}

async fn drill(
    paths: &ClusterPaths,
    req: Request,
    out: &mut (dyn Write + Send),
) -> Result<(), DevError> {
    let what = match &req {
        Request::Kill { node } => format!("Killed {node}"),
        Request::Restart { node } => format!("Restarting {node}"),
        _ => String::new(),
    };
    match control::call(paths, &req).await? {
        Response::Ok => writeln!(out, "{what}").map_err(stdout_err),
        Response::Error(e) => Err(DevError::Refused(e)),
        Response::Status(_) => Err(DevError::Refused(
            "unexpected answer from the supervisor".into(),
        )),
    }
}

async fn down(
    paths: &ClusterPaths,
    purge: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), DevError> {
    let snapshot: Option<ClusterSnapshot> = match control::call(paths, &Request::Status).await {
        Ok(Response::Status(s)) => Some(*s),
        _ => None,
    };
    if let Some(snapshot) = &snapshot {
        control::call(paths, &Request::Down).await?;
        let pid = nix::unistd::Pid::from_raw(snapshot.supervisor_pid as i32);
        let deadline = Instant::now() + Duration::from_secs(30);
        while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
            sleep(Duration::from_millis(100)).await;
        }
        writeln!(out, "Stopped the dev cluster").map_err(stdout_err)?;
    } else {
        writeln!(out, "No dev cluster was up for {}", paths.root().display())
            .map_err(stdout_err)?;
    }
    let removed = remove_task_containers(paths).await;
    if removed > 0 {
        writeln!(out, "Removed {removed} task container(s)").map_err(stdout_err)?;
    }
    let killed = kill_task_processes(paths);
    if killed > 0 {
        writeln!(out, "Killed {killed} task process(es)").map_err(stdout_err)?;
    }
    if purge && paths.root().exists() {
        std::fs::remove_dir_all(paths.root()).map_err(|source| DevError::Io {
            path: paths.root().into(),
            source,
        })?;
        writeln!(out, "Removed {}", paths.root().display()).map_err(stdout_err)?;
    }
    Ok(())
}

/// A client for the local engine speaking API 1.41 (Docker 20.10, Debian 12's engine), which
/// newer engines accept too.
fn docker() -> Result<Docker, bollard::errors::Error> {
    const V1_41: &bollard::ClientVersion = &bollard::ClientVersion {
        major_version: 1,
        minor_version: 41,
    };
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let socket = host
        .strip_prefix("unix://")
        .unwrap_or("/var/run/docker.sock");
    Docker::connect_with_local(socket, 120, V1_41)
}

async fn docker_ping() -> Result<(), DevError> {
    let unreachable = |e: bollard::errors::Error| DevError::DockerUnreachable {
        reason: e.to_string(),
    };
    let docker = docker().map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(())
}

/// Kills what is left of the cluster's command tasks (those without a container): processes
/// whose working directory is in a sandbox under the state directory. They outlive a stopped
/// agent on purpose (a restarted agent recovers them), so only a stopped cluster kills them.
/// Returns how many.
fn kill_task_processes(paths: &ClusterPaths) -> usize {
    let root = paths.root();
    let nodes = root
        .canonicalize()
        .unwrap_or_else(|_| root.to_path_buf())
        .join("nodes");
    let me = std::process::id();
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // A deleted sandbox reads as "<path> (deleted)": the prefix still matches.
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if is_sandbox(&cwd, &nodes) {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
    }
    if killed > 0 {
        info!(killed, "Killed task processes");
    }
    killed
}

/// Whether `dir` is (in) a task sandbox of an agent under `nodes`:
/// `<nodes>/<agent>/data/agent/slaves/<id>/frameworks/<fw>/executors/<e>/runs/<c>/...`.
fn is_sandbox(dir: &Path, nodes: &Path) -> bool {
    let Ok(rest) = dir.strip_prefix(nodes) else {
        return false;
    };
    let parts: Vec<&std::ffi::OsStr> = rest.iter().collect();
    parts.len() >= 10
        && parts[1] == "data"
        && parts[2] == "agent"
        && parts[3] == "slaves"
        && parts[5] == "frameworks"
        && parts[7] == "executors"
        && parts[9] == "runs"
}

/// Removes every container labelled as a task of this cluster; returns how many.
async fn remove_task_containers(paths: &ClusterPaths) -> usize {
    let Ok(docker) = docker() else { return 0 };
    let filter = format!("{CLUSTER_LABEL}={}", paths.control_name());
    let options = ListContainersOptions {
        all: true,
        filters: Some([("label".to_owned(), vec![filter])].into_iter().collect()),
        ..Default::default()
    };
    let Ok(containers) = docker.list_containers(Some(options)).await else {
        return 0;
    };
    let mut removed = 0;
    for c in containers {
        let Some(id) = c.id else { continue };
        let opts = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        if docker.remove_container(&id, Some(opts)).await.is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        info!(removed, "Removed task containers");
    }
    removed
}

fn print_status(status: &ClusterStatus, out: &mut (dyn Write + Send)) -> Result<(), DevError> {
    let mut text = String::new();
    for node in &status.nodes {
        let role = match node.role {
            Role::Master => "master",
            Role::Agent => "agent",
        };
        let down = if node.down { "  (down)" } else { "" };
        text.push_str(&format!(
            "{:<10} {:<10} {role}{down}\n",
            node.name, node.address
        ));
        for d in &node.daemons {
            let pid = d.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            let health = serde_json::to_value(d.health)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            text.push_str(&format!(
                "  {:<7} pid {:<8} {:<10} {}\n",
                d.name.name(),
                pid,
                health,
                d.endpoint
            ));
        }
    }
    let leader = |l: &Option<String>| l.clone().unwrap_or_else(|| "none".to_owned());
    text.push_str(&format!(
        "leaders: coord {}, master {}, apps {}\n",
        leader(&status.leaders.coord),
        leader(&status.leaders.master),
        leader(&status.leaders.apps)
    ));
    if let (Some(http), Some(https)) = (&status.router, &status.router_https) {
        text.push_str(&format!("\nRouter  {http}  {https}"));
        if let Some(ca) = &status.ca {
            text.push_str(&format!("  (CA {})", ca.display()));
        }
        text.push('\n');
    }
    if let Some(admin) = &status.admin {
        text.push_str(&format!(
            "Admin   uid {}  password {}\n",
            admin.uid, admin.password
        ));
        if let Some(https) = &status.router_https {
            let ca = status
                .ca
                .as_ref()
                .map(|c| format!(" --ca-certs {}", c.display()))
                .unwrap_or_default();
            text.push_str(&format!(
                "        dcos cluster setup {https} --username {} --password {}{ca}\n",
                admin.uid, admin.password
            ));
        }
    }
    if let Some(m) = status.nodes.iter().find(|n| n.role == Role::Master) {
        text.push_str(&format!(
            "\nMarathon API  http://{}:8080    Mesos API  http://{}:5050    DNS  {}:53 (dig @{} redis.marathon.mesos)\nstate and logs in {}\n",
            m.address, m.address, m.address, m.address, status.state_dir.display()
        ));
    }
    out.write_all(text.as_bytes()).map_err(stdout_err)
}

fn stdout_err(e: std::io::Error) -> DevError {
    DevError::Io {
        path: PathBuf::from("<stdout>"),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_task_sandboxes_count_as_task_directories() {
        let nodes = Path::new("/s/nodes");
        let sandbox = "/s/nodes/agent-1/data/agent/slaves/A-S0/frameworks/F/executors/e.1/runs/C";
        assert!(is_sandbox(Path::new(sandbox), nodes));
        assert!(is_sandbox(
            Path::new(&format!("{sandbox} (deleted)")),
            nodes
        ));
        assert!(is_sandbox(Path::new(&format!("{sandbox}/sub")), nodes));
        for not in [
            "/s/nodes",
            "/s/nodes/master-1",
            "/s/nodes/agent-1/data/agent",
            "/s/nodes/agent-1/data/agent/slaves/A-S0/frameworks/F/executors/e.1",
            "/other/nodes/agent-1/data/agent/slaves/A-S0/frameworks/F/executors/e.1/runs/C",
        ] {
            assert!(!is_sandbox(Path::new(not), nodes), "{not}");
        }
    }
}
