//! The cluster-state model that following a master yields: masters, the leader, agents,
//! frameworks and live tasks with their statuses, discovery info, ports and container network
//! addresses. Pure data, no I/O.
//!
//! It is shared by every daemon that follows the operator stream (`dns` synthesises records
//! from it, `l4lb` its VIP table), so they apply the same events the same way and see the
//! same tasks. It is filled either from a `/master/state` document
//! ([`ClusterState::from_master_state_json`], in `state_json`) or from the operator API
//! (`GET_STATE` plus events, in `operator`: [`ClusterState::apply_event`]). Terminal tasks are
//! dropped from the model at once, so it only ever holds live tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

pub mod operator;
pub mod state_json;
pub mod vip;

pub use state_json::StateJsonError;

pub use capstan_types::TaskState;

/// How long a follower keeps the entries of agents a newly elected master has not heard from
/// yet (see [`HeldOver`], [`ClusterState::release_held`]). A live agent re-registers within
/// its ping interval and reconnect backoff (the master's agent timeout is 15 s by default);
/// one that is not back within a minute is treated as gone, about as long as a DNS record's
/// TTL keeps it in caches anyway.
pub const HOLD_OVER_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Identifies a task: task ids are unique within a framework.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub framework_id: String,
    pub task_id: String,
}

/// The whole cluster as a stream follower sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    /// Masters in configured order (`masterN` names follow this order).
    pub masters: Vec<SocketAddr>,
    /// The leading master, if known.
    pub leader: Option<SocketAddr>,
    /// Agents by agent id.
    pub agents: BTreeMap<String, Agent>,
    /// Frameworks by framework id.
    pub frameworks: BTreeMap<String, Framework>,
    /// Non-terminal tasks.
    pub tasks: BTreeMap<TaskKey, Task>,
    /// Entries of the three maps above that a resync kept from the previous master's view
    /// because the new master has not heard from their agents yet.
    pub held: HeldOver,
}

/// What a resync carried over (see [`ClusterState::reset_from_get_state`]): a newly elected
/// master knows the agents of its registry but learns their tasks only when each agent
/// re-registers, so its first `GET_STATE` lists those agents as `recovered_agents` and none
/// of their tasks. Their names existed a moment ago and must not be denied because the master
/// changed, so the previous view of them is kept until the agent re-registers (it then
/// reports every task it still runs), is removed, or the follower gives up waiting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldOver {
    /// Agents kept from the previous view (not yet re-registered with the new master).
    pub agents: BTreeSet<String>,
    /// Tasks kept from the previous view, by agent id.
    pub tasks: BTreeMap<String, BTreeSet<TaskKey>>,
    /// Frameworks kept because a held task needs its name and the new master omitted it.
    pub frameworks: BTreeSet<String>,
}

impl HeldOver {
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty() && self.tasks.is_empty() && self.frameworks.is_empty()
    }

    /// How many tasks are held.
    pub fn task_count(&self) -> usize {
        self.tasks.values().map(BTreeSet::len).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    /// The agent's IP: from its pid (`slave(1)@IP:port`), else its hostname if that is an IP.
    pub ip: Option<IpAddr>,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framework {
    pub id: String,
    pub name: String,
    pub hostname: String,
    /// Address of a PID-based (libprocess) framework; `None` for HTTP frameworks.
    pub pid: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Task {
    pub id: String,
    pub name: String,
    pub framework_id: String,
    pub agent_id: String,
    pub state: Option<TaskState>,
    /// Status history, oldest first (bounded: see [`MAX_STATUSES`]).
    pub statuses: Vec<TaskStatus>,
    /// Every port of the task's `ports` resource.
    pub ports: Vec<u16>,
    /// Task labels (`TaskInfo.labels`; the load balancer's legacy `VIP_PORT<n>`).
    pub labels: Vec<(String, String)>,
    pub discovery: Option<Discovery>,
    /// Host-port mappings (Docker bridge or CNI port mappings); any means "port-mapped".
    pub port_mappings: Vec<PortMapping>,
    pub has_health_check: bool,
}

/// How many statuses a task keeps; only the latest ones matter for DNS.
pub const MAX_STATUSES: usize = 8;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskStatus {
    pub state: Option<TaskState>,
    /// Seconds since the epoch.
    pub timestamp: f64,
    pub healthy: Option<bool>,
    pub labels: Vec<(String, String)>,
    /// `container_status.network_infos[].ip_addresses[].ip_address`.
    pub network_ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Discovery {
    /// `DiscoveryInfo.name`; records use it instead of the task name when non-empty.
    pub name: String,
    pub ports: Vec<DiscoveryPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveryPort {
    pub number: u32,
    pub name: String,
    /// `tcp`, `udp`, or empty for both.
    pub protocol: String,
    /// Port labels (`VIP_0`, `network-scope`, ...).
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    pub protocol: String,
}

/// Where task IP addresses come from, in configured order (Mesos-DNS `IPSources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpSource {
    /// Container network infos of the latest running status.
    Netinfo,
    /// Status label `MesosContainerizer.NetworkSettings.IPAddress`.
    Mesos,
    /// Status label `Docker.NetworkSettings.IPAddress`.
    Docker,
    /// The agent's IP.
    Host,
}

impl IpSource {
    pub fn as_str(self) -> &'static str {
        match self {
            IpSource::Netinfo => "netinfo",
            IpSource::Mesos => "mesos",
            IpSource::Docker => "docker",
            IpSource::Host => "host",
        }
    }
}

impl Task {
    /// The latest `TASK_RUNNING` status (greatest timestamp; the later one on ties).
    pub fn latest_running_status(&self) -> Option<&TaskStatus> {
        self.statuses
            .iter()
            .filter(|s| s.state == Some(TaskState::Running))
            .fold(None, |best: Option<&TaskStatus>, s| match best {
                Some(b) if b.timestamp > s.timestamp => Some(b),
                _ => Some(s),
            })
    }

    /// The most recent status of any state.
    pub fn latest_status(&self) -> Option<&TaskStatus> {
        self.statuses
            .iter()
            .fold(None, |best: Option<&TaskStatus>, s| match best {
                Some(b) if b.timestamp > s.timestamp => Some(b),
                _ => Some(s),
            })
    }

    /// Task IPs from the first IP source that yields any (`agent_ip` serves `host`).
    pub fn ips(&self, sources: &[IpSource], agent_ip: Option<IpAddr>) -> Vec<IpAddr> {
        let status = self.latest_running_status();
        for source in sources {
            let ips: Vec<IpAddr> = match source {
                IpSource::Netinfo => status.map(|s| s.network_ips.clone()).unwrap_or_default(),
                IpSource::Mesos => {
                    label_ips(status, "MesosContainerizer.NetworkSettings.IPAddress")
                }
                IpSource::Docker => label_ips(status, "Docker.NetworkSettings.IPAddress"),
                IpSource::Host => agent_ip.into_iter().collect(),
            };
            if !ips.is_empty() {
                return ips;
            }
        }
        Vec::new()
    }

    /// Container IPs of the latest status carrying any (DC/OS `containerip`).
    pub fn container_ips(&self) -> Vec<IpAddr> {
        self.latest_running_status()
            .map(|s| s.network_ips.clone())
            .filter(|ips| !ips.is_empty())
            .or_else(|| self.latest_status().map(|s| s.network_ips.clone()))
            .unwrap_or_default()
    }

    /// Records a new status, keeping the history bounded.
    pub fn push_status(&mut self, status: TaskStatus) {
        self.statuses.push(status);
        if self.statuses.len() > MAX_STATUSES {
            // Keep the newest by timestamp; statuses usually arrive in order.
            self.statuses
                .sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
            let excess = self.statuses.len() - MAX_STATUSES;
            // Never drop the latest running status: it carries the IPs.
            let keep_running = self
                .latest_running_status()
                .map(|s| s.timestamp)
                .unwrap_or(f64::NAN);
            let mut dropped = 0;
            self.statuses.retain(|s| {
                if dropped < excess && s.timestamp != keep_running {
                    dropped += 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

fn label_ips(status: Option<&TaskStatus>, key: &str) -> Vec<IpAddr> {
    status
        .into_iter()
        .flat_map(|s| s.labels.iter())
        .filter(|(k, _)| k == key)
        .filter_map(|(_, v)| v.trim().parse().ok())
        .collect()
}

/// Parses a libprocess pid `name@host:port` into an address when the host is a literal IP.
pub fn parse_upid(pid: &str) -> Option<SocketAddr> {
    let (_, addr) = pid.split_once('@')?;
    addr.parse().ok()
}

/// Expands a flattened ports resource (`"[31000-31002, 31010-31010]"`) into ports.
pub fn parse_port_ranges(text: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for range in text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
    {
        let range = range.trim();
        if range.is_empty() {
            continue;
        }
        let (b, e) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(b), Ok(e)) = (b.trim().parse::<u64>(), e.trim().parse::<u64>()) {
            push_range(&mut out, b, e);
        }
    }
    out
}

/// Appends the ports `begin..=end` (clamped to valid ports).
pub fn push_range(out: &mut Vec<u16>, begin: u64, end: u64) {
    let begin = begin.min(65535);
    let end = end.min(65535);
    for p in begin..=end {
        if p > 0 {
            out.push(p as u16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_expand() {
        assert_eq!(
            parse_port_ranges("[31000-31002, 31010-31010]"),
            vec![31000, 31001, 31002, 31010]
        );
        assert_eq!(parse_port_ranges("[]"), Vec::<u16>::new());
        assert_eq!(parse_port_ranges("garbage"), Vec::<u16>::new());
        assert_eq!(parse_port_ranges("[70000-70001]"), vec![65535]);
    }

    #[test]
    fn upids_parse_only_with_literal_ips() {
        assert_eq!(
            parse_upid("slave(1)@10.0.0.2:5051"),
            Some("10.0.0.2:5051".parse().unwrap())
        );
        assert_eq!(parse_upid("master@host:5050"), None);
        assert_eq!(parse_upid(""), None);
    }

    #[test]
    fn ip_sources_are_tried_in_order() {
        let mut t = Task::default();
        t.push_status(TaskStatus {
            state: Some(TaskState::Running),
            timestamp: 1.0,
            labels: vec![(
                "Docker.NetworkSettings.IPAddress".into(),
                "172.17.0.2".into(),
            )],
            ..Default::default()
        });
        let agent: IpAddr = "10.0.0.2".parse().unwrap();
        let got = t.ips(
            &[IpSource::Netinfo, IpSource::Mesos, IpSource::Host],
            Some(agent),
        );
        assert_eq!(got, vec![agent]);
        let got = t.ips(&[IpSource::Docker, IpSource::Host], Some(agent));
        assert_eq!(got, vec!["172.17.0.2".parse::<IpAddr>().unwrap()]);
        assert!(t.ips(&[IpSource::Netinfo], Some(agent)).is_empty());
    }

    #[test]
    fn only_the_latest_running_status_counts() {
        let mut t = Task::default();
        for (ts, ip) in [(2.0, "10.0.0.9"), (1.0, "10.0.0.8")] {
            t.push_status(TaskStatus {
                state: Some(TaskState::Running),
                timestamp: ts,
                network_ips: vec![ip.parse().unwrap()],
                ..Default::default()
            });
        }
        assert_eq!(
            t.ips(&[IpSource::Netinfo], None),
            vec!["10.0.0.9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn status_history_stays_bounded_and_keeps_the_running_one() {
        let mut t = Task::default();
        t.push_status(TaskStatus {
            state: Some(TaskState::Running),
            timestamp: 0.5,
            network_ips: vec!["10.1.1.1".parse().unwrap()],
            ..Default::default()
        });
        for i in 0..20 {
            t.push_status(TaskStatus {
                state: Some(TaskState::Killing),
                timestamp: 1.0 + f64::from(i),
                ..Default::default()
            });
        }
        assert_eq!(t.statuses.len(), MAX_STATUSES);
        assert!(t.latest_running_status().is_some());
    }
}
