//! The I/O layer: reads [`Facts`] from this machine. It judges nothing; anything it cannot
//! read becomes an `Err(message)` in the facts for the checks to report.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use super::checks::cgroup_mounts;
use super::procnet::{self, BoundSocket, Proto};
use super::{
    CgroupFacts, ClockFact, DiskFact, DiskSpace, DockerError, DockerErrorKind, DockerFacts,
    DockerVersion, Facts, HeldSocket, HostnameFacts, NfTablesKernel, NftFacts, Observed, Owner,
    PortFacts, TimeSyncFacts, clock,
};
use crate::{Layout, Membership, Role};

/// What this node's files say about it, for the doctor's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// The role it has joined as (membership), or its config's `cluster:` section implies
    /// (a master if its advertised address is among the masters).
    pub role: Option<Role>,
    /// The other masters in its config (not itself, not loopback): whom to compare clocks with.
    pub masters: Vec<IpAddr>,
    /// The config's `cluster.advertise`.
    pub advertise: Option<IpAddr>,
    /// The config's `agent.docker.host`.
    pub docker_host: Option<String>,
    /// It has joined a cluster: its membership file exists.
    pub installed: bool,
}

impl NodeContext {
    /// Reads the node's config and membership; a missing or unreadable file gives no defaults.
    pub fn load(layout: &Layout) -> NodeContext {
        let config = match std::fs::read_to_string(&layout.config) {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::debug!(path = %layout.config.display(), error = %capstan_runtime::Chain(&e), "No node config");
                None
            }
        };
        let membership = Membership::read(layout).unwrap_or_else(|e| {
            tracing::debug!(path = %layout.membership().display(), error = %capstan_runtime::Chain(&e), "No membership");
            None
        });
        NodeContext::from_parts(config.as_deref(), membership.as_ref())
    }

    /// The context from a config file's text and a membership.
    pub fn from_parts(config: Option<&str>, membership: Option<&Membership>) -> NodeContext {
        #[derive(Deserialize)]
        struct Doc {
            cluster: Option<Cluster>,
            agent: Option<Agent>,
        }
        #[derive(Deserialize)]
        struct Cluster {
            #[serde(default)]
            masters: Vec<IpAddr>,
            advertise: Option<IpAddr>,
        }
        #[derive(Deserialize)]
        struct Agent {
            docker: Option<Docker>,
        }
        #[derive(Deserialize)]
        struct Docker {
            host: Option<String>,
        }
        let doc: Option<Doc> = config.and_then(|text| {
            serde_yaml_ng::from_str(text)
                .map_err(|e| tracing::debug!(error = %capstan_runtime::Chain(&e), "Unreadable node config"))
                .ok()
        });
        let (cluster, agent) = match doc {
            Some(d) => (d.cluster, d.agent),
            None => (None, None),
        };
        let advertise = cluster.as_ref().and_then(|c| c.advertise);
        let config_role = cluster.as_ref().map(|c| match c.advertise {
            Some(a) if c.masters.contains(&a) => Role::Master,
            _ => Role::Agent,
        });
        let masters = cluster
            .map(|c| c.masters)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| Some(*m) != advertise && !m.is_loopback())
            .collect();
        NodeContext {
            role: membership.map(|m| m.role).or(config_role),
            masters,
            advertise,
            docker_host: agent.and_then(|a| a.docker).and_then(|d| d.host),
            installed: membership.is_some(),
        }
    }
}

/// What to gather.
#[derive(Debug, Clone)]
pub struct Plan {
    pub role: Role,
    /// Masters to compare clocks with (`host` or `host:port`, port 80 by default).
    pub masters: Vec<String>,
    pub node: NodeContext,
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const DOCKER_TIMEOUT: Duration = Duration::from_secs(5);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads every fact the checks need for `plan.role`, probing the masters' clocks and the
/// Docker engine concurrently with the local reads.
pub async fn gather(plan: &Plan) -> Facts {
    let local = tokio::task::spawn_blocking(read_local);
    let docker = async {
        match plan.role {
            Role::Agent => Some(probe_docker(plan.node.docker_host.as_deref()).await),
            Role::Master => None,
        }
    };
    let (local, docker, clocks, nft, hostname, disks, timedatectl) = tokio::join!(
        local,
        docker,
        measure_clocks(&plan.masters),
        nft_version(),
        hostname(),
        disks(plan.role),
        timedatectl(),
    );
    let local = local.unwrap_or_else(|e| LocalFacts::failed(&format!("reader crashed: {e}")));
    let installed = plan.node.installed;
    Facts {
        kernel_release: local.kernel_release,
        cgroups: local.cgroups,
        nftables: NftFacts {
            nft,
            kernel: local.nf_tables,
        },
        docker,
        ports: PortFacts {
            sockets: local.sockets,
            installed,
            advertise: plan.node.advertise.filter(|_| installed),
        },
        clocks,
        hostname,
        disks,
        time_sync: TimeSyncFacts {
            timedatectl,
            daemons: local.time_daemons,
            container: local.container,
        },
    }
}

/// The facts read from /proc, /sys and /lib/modules in one blocking pass.
struct LocalFacts {
    kernel_release: Observed<String>,
    cgroups: CgroupFacts,
    nf_tables: NfTablesKernel,
    sockets: Observed<Vec<HeldSocket>>,
    time_daemons: Vec<String>,
    container: Option<String>,
}

impl LocalFacts {
    fn failed(e: &str) -> LocalFacts {
        LocalFacts {
            kernel_release: Err(e.to_owned()),
            cgroups: CgroupFacts {
                mountinfo: Err(e.to_owned()),
                v2_controllers: None,
            },
            nf_tables: NfTablesKernel::Unknown,
            sockets: Err(e.to_owned()),
            time_daemons: Vec::new(),
            container: None,
        }
    }
}

fn read(path: impl AsRef<Path>) -> Observed<String> {
    let path = path.as_ref();
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_local() -> LocalFacts {
    let kernel_release = read("/proc/sys/kernel/osrelease").map(|r| r.trim().to_owned());
    let mountinfo = read("/proc/self/mountinfo");
    let v2_controllers = mountinfo.as_ref().ok().and_then(|m| {
        let mounts = cgroup_mounts(m);
        let v2 = mounts.iter().filter(|m| m.v1_controllers.is_none());
        let root = v2
            .clone()
            .find(|m| m.mount_point == "/sys/fs/cgroup")
            .or_else(|| v2.clone().next())?;
        Some(read(
            Path::new(&root.mount_point).join("cgroup.controllers"),
        ))
    });
    let nf_tables = nf_tables_kernel(kernel_release.as_deref().ok());
    let processes = scan_processes();
    let sockets = held_sockets(&processes);
    let time_daemons = {
        let mut names: Vec<String> = processes
            .iter()
            .filter(|p| TIME_DAEMONS.contains(&p.comm.as_str()))
            .map(|p| p.comm.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    LocalFacts {
        kernel_release,
        cgroups: CgroupFacts {
            mountinfo,
            v2_controllers,
        },
        nf_tables,
        sockets,
        time_daemons,
        container: container_kind(),
    }
}

/// `comm` names of time daemons (the kernel cuts `comm` to 15 bytes).
const TIME_DAEMONS: &[&str] = &[
    "chronyd",
    "ntpd",
    "openntpd",
    "systemd-timesyn",
    "ptp4l",
    "phc2sys",
    "timesyncd",
];

fn nf_tables_kernel(release: Option<&str>) -> NfTablesKernel {
    if Path::new("/sys/module/nf_tables").exists() {
        return NfTablesKernel::Loaded;
    }
    let Some(release) = release else {
        return NfTablesKernel::Unknown;
    };
    let dir = Path::new("/lib/modules").join(release);
    let builtin = std::fs::read_to_string(dir.join("modules.builtin"));
    let dep = std::fs::read_to_string(dir.join("modules.dep"));
    let lists = |text: &std::io::Result<String>| {
        text.as_ref().is_ok_and(|t| {
            t.lines().any(|l| {
                let name = l.split(':').next().unwrap_or("");
                let file = name.rsplit('/').next().unwrap_or("");
                file.starts_with("nf_tables.ko")
            })
        })
    };
    if lists(&builtin) {
        NfTablesKernel::Loaded
    } else if lists(&dep) {
        NfTablesKernel::Module
    } else if builtin.is_err() && dep.is_err() {
        NfTablesKernel::Unknown
    } else {
        NfTablesKernel::Absent
    }
}

fn container_kind() -> Option<String> {
    if let Ok(kind) = std::fs::read_to_string("/run/systemd/container") {
        let kind = kind.trim();
        if !kind.is_empty() {
            return Some(kind.to_owned());
        }
    }
    Path::new("/.dockerenv")
        .exists()
        .then(|| "docker".to_owned())
}

/// A process and the sockets it holds (only this user's processes show their fds).
struct Process {
    pid: u32,
    comm: String,
    is_capstan: bool,
    sockets: Vec<u64>,
}

fn scan_processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path();
            let comm = std::fs::read_to_string(dir.join("comm"))
                .ok()?
                .trim()
                .to_owned();
            let exe = std::fs::read_link(dir.join("exe")).ok();
            let exe_name = exe
                .as_ref()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .map(|n| n.trim_end_matches(" (deleted)").to_owned());
            let sockets = std::fs::read_dir(dir.join("fd"))
                .map(|fds| {
                    fds.flatten()
                        .filter_map(|fd| {
                            let link = std::fs::read_link(fd.path()).ok()?;
                            procnet::socket_inode(link.to_str()?)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(Process {
                pid,
                is_capstan: comm == "capstan" || exe_name.as_deref() == Some("capstan"),
                comm,
                sockets,
            })
        })
        .collect()
}

fn held_sockets(processes: &[Process]) -> Observed<Vec<HeldSocket>> {
    let mut sockets: Vec<BoundSocket> = Vec::new();
    let mut errors = Vec::new();
    for (file, proto) in [
        ("/proc/net/tcp", Proto::Tcp),
        ("/proc/net/tcp6", Proto::Tcp),
        ("/proc/net/udp", Proto::Udp),
        ("/proc/net/udp6", Proto::Udp),
    ] {
        match read(file) {
            Ok(text) => sockets.extend(procnet::parse_table(proto, &text)),
            Err(e) => errors.push(e),
        }
    }
    // IPv6 may be disabled (no tcp6/udp6); no table at all means no /proc.
    if errors.len() == 4 {
        return Err(errors.join("; "));
    }
    // A socket shared by several processes (inherited, or caught between fork and exec) is
    // named after the oldest-looking one: the lowest pid, usually the parent.
    let mut owners: HashMap<u64, &Process> = HashMap::new();
    for p in processes {
        for inode in &p.sockets {
            owners
                .entry(*inode)
                .and_modify(|o| {
                    if p.pid < o.pid {
                        *o = p;
                    }
                })
                .or_insert(p);
        }
    }
    Ok(sockets
        .into_iter()
        .map(|socket| HeldSocket {
            owner: owners.get(&socket.inode).map(|p| Owner {
                pid: p.pid,
                name: p.comm.clone(),
                is_capstan: p.is_capstan,
            }),
            socket,
        })
        .collect())
}

async fn measure_clocks(masters: &[String]) -> Vec<ClockFact> {
    let mut probes = JoinSet::new();
    for (i, master) in masters.iter().enumerate() {
        let master = master.clone();
        probes.spawn(async move { (i, clock::measure(&master).await) });
    }
    let mut offsets = vec![None; masters.len()];
    while let Some(done) = probes.join_next().await {
        if let Ok((i, offset)) = done {
            offsets[i] = Some(offset);
        }
    }
    masters
        .iter()
        .zip(offsets)
        .map(|(master, offset)| ClockFact {
            master: master.clone(),
            offset: offset.unwrap_or_else(|| Err("the probe crashed".to_owned())),
        })
        .collect()
}

/// The first of `name` in the PATH or the sbin directories (which a non-root PATH may lack).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs a program with a timeout: its stdout, or why not.
async fn run(program: &Path, args: &[&str]) -> Observed<String> {
    let out = tokio::time::timeout(
        COMMAND_TIMEOUT,
        tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{} timed out", program.display()))?
    .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            stderr.trim()
        ))
    }
}

async fn nft_version() -> Option<Observed<String>> {
    let nft = find_program("nft")?;
    Some(run(&nft, &["--version"]).await.map(|v| v.trim().to_owned()))
}

async fn timedatectl() -> Option<Observed<String>> {
    let program = find_program("timedatectl")?;
    Some(run(&program, &["show"]).await)
}

async fn hostname() -> HostnameFacts {
    let name = read("/proc/sys/kernel/hostname").map(|n| n.trim().to_owned());
    let addrs = match &name {
        Ok(n) if !n.is_empty() => resolve(n).await,
        Ok(_) => Err("the hostname is empty".to_owned()),
        Err(e) => Err(e.clone()),
    };
    HostnameFacts {
        hostname: name,
        addrs,
    }
}

async fn resolve(name: &str) -> Observed<Vec<IpAddr>> {
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, 0)))
        .await
        .map_err(|_| format!("no answer within {RESOLVE_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let mut addrs: Vec<IpAddr> = Vec::new();
    for a in found {
        if !addrs.contains(&a.ip()) {
            addrs.push(a.ip());
        }
    }
    Ok(addrs)
}

/// The directories a role keeps its data under.
pub fn data_dirs(role: Role) -> &'static [&'static str] {
    match role {
        Role::Master => &["/var/lib"],
        Role::Agent => &["/var/lib", "/var/lib/docker"],
    }
}

async fn disks(role: Role) -> Vec<DiskFact> {
    let mut out = Vec::new();
    for dir in data_dirs(role) {
        let path = PathBuf::from(dir);
        // A directory not made yet lands on its nearest existing parent's filesystem.
        let existing = path
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let space = match find_program("df") {
            None => Err("no df program".to_owned()),
            Some(df) => {
                let target = existing.to_string_lossy();
                run(&df, &["-P", "-k", &target]).await.and_then(|text| {
                    parse_df(&text).ok_or_else(|| format!("unexpected df output: {text:?}"))
                })
            }
        };
        out.push(DiskFact { path, space });
    }
    out
}

/// `df -P -k PATH`'s second line: `Filesystem 1024-blocks Used Available Capacity Mounted on`.
pub fn parse_df(text: &str) -> Option<DiskSpace> {
    let line = text.lines().nth(1)?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let capacity = fields.iter().rposition(|f| f.ends_with('%'))?;
    let avail_kib: u64 = fields.get(capacity.checked_sub(1)?)?.parse().ok()?;
    let mount = fields.get(capacity + 1..)?.join(" ");
    if mount.is_empty() {
        return None;
    }
    Some(DiskSpace {
        avail_bytes: avail_kib * 1024,
        mount,
    })
}

/// The engine address: the config's, else `DOCKER_HOST`, else the local socket.
fn docker_endpoint(configured: Option<&str>) -> String {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

async fn probe_docker(configured: Option<&str>) -> DockerFacts {
    let endpoint = docker_endpoint(configured);
    let result = match tokio::time::timeout(DOCKER_TIMEOUT, docker_version(&endpoint)).await {
        Ok(result) => result,
        Err(_) => Err(DockerError {
            kind: DockerErrorKind::Other,
            message: format!("no answer within {DOCKER_TIMEOUT:?}"),
        }),
    };
    DockerFacts { endpoint, result }
}

async fn docker_version(endpoint: &str) -> Result<DockerVersion, DockerError> {
    let connect_error = |e: std::io::Error| DockerError {
        kind: match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                DockerErrorKind::Missing
            }
            std::io::ErrorKind::PermissionDenied => DockerErrorKind::Denied,
            _ => DockerErrorKind::Other,
        },
        message: e.to_string(),
    };
    let response = if let Some(path) = endpoint.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(connect_error)?;
        http_get(stream, "docker", "/version").await
    } else if let Some(addr) = endpoint
        .strip_prefix("tcp://")
        .or_else(|| endpoint.strip_prefix("http://"))
    {
        let addr = addr.trim_end_matches('/');
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(connect_error)?;
        http_get(stream, addr, "/version").await
    } else {
        return Err(DockerError {
            kind: DockerErrorKind::Other,
            message: format!("the doctor speaks unix:// and tcp:// only, not {endpoint}"),
        });
    };
    let response = response.map_err(|e| DockerError {
        kind: DockerErrorKind::Other,
        message: e.to_string(),
    })?;
    parse_docker_version(&response).map_err(|message| DockerError {
        kind: DockerErrorKind::Other,
        message,
    })
}

/// One HTTP/1.0 GET; the whole response (the server closes the connection after it).
async fn http_get(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    host: &str,
    path: &str,
) -> std::io::Result<Vec<u8>> {
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: capstan-doctor\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response).await?;
    Ok(response)
}

/// The version from a Docker Engine `GET /version` response.
pub fn parse_docker_version(response: &[u8]) -> Result<DockerVersion, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Version {
        version: String,
        #[serde(default)]
        api_version: String,
    }
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the answer is not HTTP")?;
    let status = head.lines().next().unwrap_or("");
    let mut parts = status.split_whitespace();
    if !parts.next().is_some_and(|p| p.starts_with("HTTP/")) {
        return Err("the answer is not HTTP".to_owned());
    }
    if parts.next() != Some("200") {
        return Err(format!("GET /version answered {status:?}"));
    }
    // Tolerate a chunked body: the JSON object is everything between the outer braces.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start < end => &body[start..=end],
        _ => return Err("GET /version answered no JSON".to_owned()),
    };
    let v: Version = serde_json::from_str(json)
        .map_err(|e| format!("GET /version answered unexpected JSON: {e}"))?;
    Ok(DockerVersion {
        version: v.version,
        api_version: v.api_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_output_gives_available_bytes_and_the_mount() {
        // Captured on the project's machine (`df -P -k /var/lib/docker`).
        let text = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                    /dev/vda         264212084 16386352  78899536      18% /\n";
        assert_eq!(
            parse_df(text),
            Some(DiskSpace {
                avail_bytes: 78_899_536 * 1024,
                mount: "/".into()
            })
        );
        let spaces = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                      //nas/share 100 50 50 50% /mnt/my disk\n";
        assert_eq!(parse_df(spaces).unwrap().mount, "/mnt/my disk");
        assert_eq!(parse_df("Filesystem 1024-blocks\n"), None);
        assert_eq!(parse_df(""), None);
    }

    #[test]
    fn docker_version_reads_the_engine_answer() {
        let ok = b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n\r\n\
            {\"Platform\":{\"Name\":\"\"},\"Version\":\"20.10.24+dfsg1\",\"ApiVersion\":\"1.41\",\
            \"MinAPIVersion\":\"1.12\",\"Os\":\"linux\",\"Arch\":\"amd64\"}\n";
        assert_eq!(
            parse_docker_version(ok),
            Ok(DockerVersion {
                version: "20.10.24+dfsg1".into(),
                api_version: "1.41".into()
            })
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\n{\"Version\":\"26.1.5+dfsg1\"}\r\n0\r\n\r\n";
        assert_eq!(
            parse_docker_version(chunked).unwrap().version,
            "26.1.5+dfsg1"
        );
        let denied = b"HTTP/1.0 403 Forbidden\r\n\r\n{\"message\":\"no\"}";
        assert!(parse_docker_version(denied).unwrap_err().contains("403"));
        assert!(parse_docker_version(b"SSH-2.0-OpenSSH_9.2\r\n").is_err());
        assert!(parse_docker_version(b"HTTP/1.0 200 OK\r\n\r\n{\"Os\":\"linux\"}").is_err());
    }

    fn membership(role: Role) -> Membership {
        Membership {
            cluster_id: "c1".into(),
            name: "prod".into(),
            role,
            ca_fingerprint: "ab".into(),
            server: String::new(),
        }
    }

    #[test]
    fn node_context_defaults_from_the_config_and_the_membership() {
        let master = "cluster:\n  masters: [10.0.0.1, 10.0.0.2, 127.0.0.1]\n  advertise: 10.0.0.2\n\
                      log:\n  level: info\n";
        let ctx = NodeContext::from_parts(Some(master), None);
        assert_eq!(ctx.role, Some(Role::Master));
        assert_eq!(ctx.masters, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(ctx.advertise, "10.0.0.2".parse().ok());
        assert!(!ctx.installed);

        let agent = "cluster:\n  masters: [10.0.0.1]\n  advertise: 10.0.0.9\n\
                     agent:\n  docker:\n    host: unix:///run/docker.sock\n";
        let ctx = NodeContext::from_parts(Some(agent), Some(&membership(Role::Agent)));
        assert_eq!(ctx.role, Some(Role::Agent));
        assert_eq!(ctx.docker_host.as_deref(), Some("unix:///run/docker.sock"));
        assert!(ctx.installed);

        // The membership is what the node joined as, whatever the config says.
        let ctx = NodeContext::from_parts(Some(master), Some(&membership(Role::Agent)));
        assert_eq!(ctx.role, Some(Role::Agent));

        for none in [
            None,
            Some(""),
            Some("log:\n  level: info\n"),
            Some(": not yaml ["),
        ] {
            assert_eq!(
                NodeContext::from_parts(none, None),
                NodeContext::default(),
                "{none:?}"
            );
        }
    }

    #[test]
    fn the_shipped_default_config_is_a_one_node_master_with_nobody_to_compare_clocks_with() {
        let shipped = include_str!("../../../../packaging/config.yaml");
        let ctx = NodeContext::from_parts(Some(shipped), None);
        assert_eq!(ctx.role, Some(Role::Master));
        assert!(ctx.masters.is_empty());
    }

    #[tokio::test]
    async fn gathering_on_this_machine_reads_the_kernel_and_the_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let plan = Plan {
            role: Role::Master,
            masters: Vec::new(),
            node: NodeContext::default(),
        };
        let facts = gather(&plan).await;
        assert!(facts.kernel_release.is_ok(), "{:?}", facts.kernel_release);
        assert!(facts.docker.is_none());
        assert!(facts.clocks.is_empty());
        let sockets = facts.ports.sockets.unwrap();
        let ours = sockets
            .iter()
            .find(|s| s.socket.proto == Proto::Tcp && s.socket.local.port() == port)
            .expect("our listener is among the bound sockets");
        let owner = ours.owner.as_ref().expect("our own process is visible");
        assert_eq!(owner.pid, std::process::id(), "{owner:?}");
        assert!(!owner.is_capstan);
        assert_eq!(facts.disks.len(), 1);
    }
}
