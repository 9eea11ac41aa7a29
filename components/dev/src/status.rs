//! `capstan dev status`: the supervisor's view of the cluster joined with live probes of every
//! daemon's health and of who leads coord, master and apps. The JSON form is stable (documented
//! in `docs/dev.md`): tools and tests parse it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::identity::{self, AdminCredentials};
use crate::layout::{Daemon, Node, Role, node_by_ip};
use crate::paths::ClusterPaths;
use crate::supervisor::{ClusterSnapshot, DaemonState};

const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy,
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub name: Daemon,
    pub pid: Option<u32>,
    pub endpoint: String,
    pub state: DaemonState,
    pub health: Health,
    pub restarts: u32,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: Ipv4Addr,
    pub role: Role,
    pub down: bool,
    pub daemons: Vec<DaemonStatus>,
}

/// The node leading each replicated component, by node name; absent while none leads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaders {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coord: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apps: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub state_dir: PathBuf,
    pub supervisor_pid: u32,
    pub ready: bool,
    pub nodes: Vec<NodeStatus>,
    pub leaders: Leaders,
    /// The cluster id (`/metadata`'s `CLUSTER_ID`), a lowercase UUIDv4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The first administrator, as `dcos cluster setup --username --password` takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminCredentials>,
    /// The first master's router over plain HTTP, e.g. `http://127.0.1.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// The same router over HTTPS, e.g. `https://127.0.1.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_https: Option<String>,
    /// The cluster CA's certificate (PEM), which the routers' certificates chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl ClusterStatus {
    /// True when every daemon of every node that is not down answers its health probe.
    pub fn healthy(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| !n.down)
            .flat_map(|n| &n.daemons)
            .all(|d| d.health == Health::Healthy)
    }
}

/// Probes every daemon and the leaders.
pub async fn probe(snapshot: &ClusterSnapshot) -> ClusterStatus {
    let client = capstan_http_client::builder()
        .timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a plain HTTP client always builds");
    let nodes: Vec<Node> = snapshot.nodes.iter().map(|n| n.node.clone()).collect();
    let mut statuses = Vec::new();
    for n in &snapshot.nodes {
        let daemons = join_all(n.daemons.iter().map(|d| {
            let client = client.clone();
            let node = n.node.clone();
            async move {
                let health = if d.pid.is_none() {
                    Health::Stopped
                } else if get_ok(
                    &client,
                    &format!("http://{}{}", node.http_addr(d.name), d.name.health_path()),
                )
                .await
                {
                    Health::Healthy
                } else {
                    Health::Unhealthy
                };
                DaemonStatus {
                    name: d.name,
                    pid: d.pid,
                    endpoint: d.endpoint.clone(),
                    state: d.state,
                    health,
                    restarts: d.restarts,
                    log: d.log.clone(),
                }
            }
        }))
        .await;
        statuses.push(NodeStatus {
            name: n.node.name.clone(),
            address: n.node.address,
            role: n.node.role,
            down: n.down,
            daemons,
        });
    }
    let masters: Vec<&Node> = nodes.iter().filter(|n| n.role == Role::Master).collect();
    let (coord, master, apps) = tokio::join!(
        first_answer(&masters, |n| coord_leader(&client, n)),
        first_answer(&masters, |n| master_leader(&client, n)),
        first_answer(&masters, |n| apps_leader(&client, n)),
    );
    let name = |ip: Option<Ipv4Addr>| {
        ip.and_then(|ip| node_by_ip(&nodes, ip))
            .map(|n| n.name.clone())
    };
    let paths = ClusterPaths::new(&snapshot.state_dir);
    let identity = identity::read(&paths);
    let router = nodes.iter().find(|n| n.role == Role::Master && n.router);
    ClusterStatus {
        state_dir: snapshot.state_dir.clone(),
        supervisor_pid: snapshot.supervisor_pid,
        ready: snapshot.ready,
        nodes: statuses,
        leaders: Leaders {
            coord: name(coord),
            master: name(master),
            apps: name(apps),
        },
        cluster_id: identity.as_ref().map(|i| i.cluster_id.clone()),
        admin: identity.map(|i| AdminCredentials {
            uid: i.admin_uid,
            password: i.admin_password,
        }),
        router: router.map(|m| format!("http://{}", m.address)),
        router_https: router.map(|m| format!("https://{}", m.address)),
        ca: identity::ca_path(&paths),
    }
}

async fn first_answer<'a, F, Fut>(masters: &[&'a Node], ask: F) -> Option<Ipv4Addr>
where
    F: Fn(&'a Node) -> Fut,
    Fut: Future<Output = Option<Ipv4Addr>>,
{
    for m in masters {
        if let Some(ip) = ask(m).await {
            return Some(ip);
        }
    }
    None
}

async fn get_ok(client: &reqwest::Client, url: &str) -> bool {
    matches!(client.get(url).send().await, Ok(r) if r.status().is_success())
}

async fn get_json(client: &reqwest::Client, url: String) -> Option<serde_json::Value> {
    let resp = client.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// coord answers Exhibitor's cluster status: `[{"hostname": ..., "isLeader": true}, ...]`.
async fn coord_leader(client: &reqwest::Client, node: &Node) -> Option<Ipv4Addr> {
    let url = format!(
        "http://{}/exhibitor/v1/cluster/status",
        node.http_addr(Daemon::Coord)
    );
    let v = get_json(client, url).await?;
    v.as_array()?
        .iter()
        .find(|m| m.get("isLeader").and_then(|l| l.as_bool()) == Some(true))
        .and_then(|m| m.get("hostname")?.as_str().and_then(host_ip))
}

/// Every master answers `/master/redirect` with `307 Location: //<leader-ip>:<port>`.
async fn master_leader(client: &reqwest::Client, node: &Node) -> Option<Ipv4Addr> {
    let url = format!("http://{}/master/redirect", node.http_addr(Daemon::Master));
    let resp = client.get(url).send().await.ok()?;
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    host_ip(location.trim_start_matches("//").split('/').next()?)
}

/// Marathon's `/v2/leader` answers `{"leader": "host:port"}`.
async fn apps_leader(client: &reqwest::Client, node: &Node) -> Option<Ipv4Addr> {
    let url = format!("http://{}/v2/leader", node.http_addr(Daemon::Apps));
    let v = get_json(client, url).await?;
    host_ip(v.get("leader")?.as_str()?)
}

/// The IP in `name@ip:port`, `ip:port` or `ip`.
fn host_ip(s: &str) -> Option<Ipv4Addr> {
    let s = s.rsplit('@').next()?;
    let host = s.rsplit_once(':').map_or(s, |(h, _)| h);
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_addresses_parse_in_every_form_the_daemons_use() {
        let ip = Some(Ipv4Addr::new(127, 0, 1, 2));
        assert_eq!(host_ip("master@127.0.1.2:5050"), ip);
        assert_eq!(host_ip("127.0.1.2:8080"), ip);
        assert_eq!(host_ip("127.0.1.2"), ip);
        assert_eq!(host_ip("m1.example:5050"), None);
    }
}
