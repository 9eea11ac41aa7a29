//! The I/O of `capstan cluster upgrade`: it finds the nodes (coord's members, the masters'
//! agent list), walks the pure plan of [`crate::upgrade`], hands each node the package through
//! its node endpoint and waits until the node and the cluster are healthy again before the
//! next one. The first failure stops the run.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::https::{Server, request, request_with};
use crate::token::Role;
use crate::upgrade::{
    GRANT_HEADER, Grant, NODE_PORT, Next, Node, NodeStatus, NodeVerdict, Outcome, QuorumVerdict,
    Voter, judge, may_take_down, next, plan,
};

/// How long one node may take to install the package and bring its units back.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the cluster may take to be healthy again after a node came back.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RollingError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a capstan package: {why}")]
    NotAPackage { path: PathBuf, why: String },
    #[error("coord")]
    Coord(#[from] capstan_coord_client::ClientError),
    #[error(transparent)]
    Plan(#[from] crate::upgrade::PlanError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error("no master answered /master/slaves: {0}")]
    Agents(String),
}

/// The package to roll out.
pub struct Package {
    pub path: PathBuf,
    pub version: String,
    pub bytes: Bytes,
}

/// Reads `path` and its control fields (`dpkg-deb -f`): it must be the `capstan` package.
pub fn read_package(path: &Path) -> Result<Package, RollingError> {
    let not = |why: String| RollingError::NotAPackage {
        path: path.to_owned(),
        why,
    };
    let out = std::process::Command::new("dpkg-deb")
        .arg("-f")
        .arg(path)
        .args(["Package", "Version"])
        .output()
        .map_err(|source| RollingError::Read {
            path: path.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(not(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().to_owned())
    };
    match field("Package").as_deref() {
        Some("capstan") => {}
        other => return Err(not(format!("its Package field is {other:?}"))),
    }
    let version = field("Version").ok_or_else(|| not("it has no Version field".into()))?;
    let bytes = std::fs::read(path).map_err(|source| RollingError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Package {
        path: path.to_owned(),
        version,
        bytes: Bytes::from(bytes),
    })
}

/// What the run needs: coord, the masters' addresses, the CA, and how this node's clients
/// reach the masters (`cluster.security`).
pub struct Cluster {
    pub coord: capstan_coord_client::Client,
    pub security: capstan_runtime::cluster::ClusterSecurity,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
}

fn host_of(addr: &str) -> Option<IpAddr> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// coord's members as the quorum rule sees them, and the leader's address.
async fn voters(cluster: &Cluster) -> Result<(Vec<Voter>, Option<IpAddr>), RollingError> {
    let status = cluster.coord.status().await?;
    let leader = status.leader_addr.as_deref().and_then(host_of);
    let voters = status
        .members
        .iter()
        .filter_map(|m| {
            Some(Voter {
                addr: host_of(&m.addr)?,
                voter: m.voter,
                healthy: m.healthy,
            })
        })
        .collect();
    Ok((voters, leader))
}

/// The active agents a master lists: (hostname, address from its `pid`).
async fn agents(masters: &[IpAddr]) -> Result<Vec<Node>, RollingError> {
    let http = capstan_http_client::client();
    let mut last = String::from("no master");
    for m in masters {
        let url = format!("http://{}/master/slaves", crate::activate::master_api(*m));
        let answer = async {
            http.get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await?
                .error_for_status()?
                .json::<serde_json::Value>()
                .await
        };
        match answer.await {
            Ok(v) => {
                return Ok(v["slaves"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["active"] != false)
                    .filter_map(|a| {
                        let pid = a["pid"].as_str()?;
                        let addr = host_of(pid.rsplit_once('@').map_or(pid, |(_, a)| a))?;
                        Some(Node {
                            name: a["hostname"].as_str().unwrap_or(pid).to_owned(),
                            addr,
                            role: Role::Agent,
                        })
                    })
                    .collect());
            }
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(RollingError::Agents(last))
}

/// The nodes in upgrade order.
pub async fn discover(cluster: &Cluster) -> Result<Vec<Node>, RollingError> {
    let (voters, leader) = voters(cluster).await?;
    let masters: Vec<Node> = voters
        .iter()
        .map(|v| Node {
            name: v.addr.to_string(),
            addr: v.addr,
            role: Role::Master,
        })
        .collect();
    let addrs: Vec<IpAddr> = masters.iter().map(|m| m.addr).collect();
    let agents = agents(&addrs).await?;
    Ok(plan(&masters, leader, &agents)?)
}

/// A node's endpoint, trusted through the cluster CA.
struct NodeClient {
    server: Server,
    tls: Arc<rustls::ClientConfig>,
}

impl NodeClient {
    fn new(addr: IpAddr, ca_pem: &str) -> Result<NodeClient, RollingError> {
        Ok(NodeClient {
            server: Server {
                host: addr.to_string(),
                port: NODE_PORT,
            },
            tls: Arc::new(crate::pki::client_config(ca_pem)?),
        })
    }

    async fn status(&self) -> Result<NodeStatus, String> {
        let r = request(
            &self.server,
            self.tls.clone(),
            http::Method::GET,
            "/v1/node",
            None,
        )
        .await
        .map_err(|e| capstan_types::Chain(&e).to_string())?;
        if !r.status.is_success() {
            return Err(format!(
                "{}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("GET /v1/node: {e}"))
    }

    async fn upload(&self, grant: String, package: Bytes) -> Result<(), String> {
        let headers = [
            (GRANT_HEADER, grant),
            (
                http::header::CONTENT_TYPE.as_str(),
                "application/vnd.debian.binary-package".to_owned(),
            ),
        ];
        let r = request_with(
            &self.server,
            self.tls.clone(),
            http::Method::PUT,
            "/v1/node/upgrade",
            &headers,
            package,
        )
        .await
        .map_err(|e| capstan_types::Chain(&e).to_string())?;
        if r.status != http::StatusCode::ACCEPTED {
            return Err(format!(
                "the upload answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        Ok(())
    }
}

/// Waits until every coord voter is healthy and there is a leader.
async fn coord_healthy(cluster: &Cluster) -> Result<(), String> {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    let mut last: String;
    loop {
        match cluster.coord.status().await {
            Ok(s) => {
                let sick: Vec<String> = s
                    .members
                    .iter()
                    .filter(|m| m.voter && !m.healthy)
                    .map(|m| m.addr.clone())
                    .collect();
                if s.leader.is_some() && sick.is_empty() {
                    return Ok(());
                }
                last = format!("leader {:?}, unhealthy voters {sick:?}", s.leader);
            }
            Err(e) => last = capstan_types::Chain(&e).to_string(),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "coord is not healthy after {HEALTH_TIMEOUT:?}: {last}"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One node's step.
async fn step(
    cluster: &Cluster,
    package: &Package,
    node: &Node,
    say: &mut dyn FnMut(&str),
) -> Outcome {
    let client = match NodeClient::new(node.addr, &cluster.ca_cert_pem) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(capstan_types::Chain(&e).to_string()),
    };
    let before = match client.status().await {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failed(format!(
                "its node endpoint https://{}:{NODE_PORT} does not answer: {e}",
                node.addr
            ));
        }
    };
    if judge(&before, &package.version) == NodeVerdict::Done {
        say(&format!(
            "{} ({}) already runs {}",
            before.hostname, node.addr, package.version
        ));
        return Outcome::Current;
    }
    if before.role != node.role {
        return Outcome::Failed(format!(
            "it says it is a {}, the cluster lists it as a {}",
            before.role, node.role
        ));
    }
    if node.role == Role::Master {
        match voters(cluster).await {
            Ok((v, _)) => match may_take_down(&v, node.addr) {
                Ok(QuorumVerdict::Kept { .. }) => {}
                Ok(QuorumVerdict::SingleMaster) => say(
                    "The only master restarts: the cluster's API pauses until it is back; tasks keep running",
                ),
                Err(e) => return Outcome::Failed(e.to_string()),
            },
            Err(e) => return Outcome::Failed(capstan_types::Chain(&e).to_string()),
        }
    }
    say(&format!(
        "Upgrading {} {} ({}) from {} to {}",
        node.role, before.hostname, node.addr, before.package_version, package.version
    ));
    let grant = Grant::for_package(node.addr, &package.bytes, crate::state::now_ms());
    let header = match grant.sign(&cluster.ca_key_pem) {
        Ok(h) => h,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if let Err(e) = client.upload(header, package.bytes.clone()).await {
        return Outcome::Failed(e);
    }
    let deadline = Instant::now() + NODE_TIMEOUT;
    let mut last: String;
    loop {
        tokio::time::sleep(POLL).await;
        match client.status().await {
            Ok(s) => match judge(&s, &package.version) {
                NodeVerdict::Done => break,
                NodeVerdict::Failed(why) => return Outcome::Failed(why),
                NodeVerdict::Waiting(why) => last = why,
            },
            // Its bootstrap server restarts with the package: not an answer yet.
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Outcome::Failed(format!(
                "it was not upgraded and healthy within {NODE_TIMEOUT:?}: {last}"
            ));
        }
    }
    let healthy = match node.role {
        Role::Master => coord_healthy(cluster).await,
        Role::Agent => {
            let masters = match voters(cluster).await {
                Ok((v, _)) => v.into_iter().map(|v| v.addr).collect::<Vec<_>>(),
                Err(e) => return Outcome::Failed(capstan_types::Chain(&e).to_string()),
            };
            let mut r = Err("no master".to_owned());
            for m in masters {
                r = crate::activate::wait_for_agent(
                    &cluster.security,
                    SocketAddr::new(m, capstan_runtime::cluster::ports::MASTER),
                    &node.name,
                )
                .await
                .map_err(|e| e.to_string());
                if r.is_ok() {
                    break;
                }
            }
            r
        }
    };
    match healthy {
        Ok(()) => {
            say(&format!(
                "{} ({}) runs {} and the cluster is healthy",
                before.hostname, node.addr, package.version
            ));
            Outcome::Upgraded
        }
        Err(e) => Outcome::Failed(e),
    }
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Every node runs the package (`upgraded` of them were upgraded now).
    Done { upgraded: usize, current: usize },
    /// Stopped at `node`; the nodes after it were not touched.
    Stopped {
        node: Node,
        reason: String,
        upgraded: usize,
        untouched: usize,
    },
}

/// Upgrades every node of `nodes` (in that order) to `package`, one at a time.
pub async fn run(
    cluster: &Cluster,
    package: &Package,
    nodes: &[Node],
    say: &mut dyn FnMut(&str),
) -> Report {
    let mut outcomes: Vec<Outcome> = Vec::new();
    loop {
        match next(nodes, &outcomes) {
            Next::Upgrade(node) => {
                let outcome = step(cluster, package, node, say).await;
                outcomes.push(outcome);
            }
            Next::Done => {
                let upgraded = outcomes.iter().filter(|o| **o == Outcome::Upgraded).count();
                return Report::Done {
                    upgraded,
                    current: outcomes.len() - upgraded,
                };
            }
            Next::Stopped { node, reason } => {
                return Report::Stopped {
                    node: node.clone(),
                    reason: reason.to_owned(),
                    upgraded: outcomes.iter().filter(|o| **o == Outcome::Upgraded).count(),
                    untouched: nodes.len() - outcomes.len(),
                };
            }
        }
    }
}
