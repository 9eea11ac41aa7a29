//! The model's tasks as the shared VIP function sees them ([`capstan_types::vip::VipTask`]), so
//! `dns` and `l4lb` feed [`capstan_types::vip::VipTable::build`] from the same master data.
//!
//! A task is left out when its framework or agent is unknown (as for every other record): an
//! agent the master removed has its backends dropped at once.

use capstan_types::vip::{DiscoveredPort, MappedPort, VipConfig, VipTable, VipTask, is_vip_key};

use super::{ClusterState, Task, TaskState};

impl ClusterState {
    /// Every task that declares a VIP, in the shared function's terms (tasks without VIP
    /// labels are skipped before anything is copied: most tasks have none).
    pub fn vip_tasks(&self) -> Vec<VipTask> {
        self.tasks
            .values()
            .filter(|task| declares_vip(task))
            .filter_map(|task| {
                let framework = self.frameworks.get(&task.framework_id)?;
                let agent = self.agents.get(&task.agent_id)?;
                Some(vip_task(task, &framework.name, agent.ip))
            })
            .collect()
    }

    /// The VIP table of the current state.
    pub fn vip_table(&self, cfg: &VipConfig) -> VipTable {
        VipTable::build(&self.vip_tasks(), cfg)
    }
}

/// The task has a VIP port label or a legacy `VIP_PORT<n>` task label.
fn declares_vip(task: &Task) -> bool {
    let port_label = task
        .discovery
        .iter()
        .flat_map(|d| d.ports.iter())
        .flat_map(|p| p.labels.iter())
        .any(|(k, _)| is_vip_key(k));
    port_label || task.labels.iter().any(|(k, _)| k.starts_with("VIP_PORT"))
}

fn vip_task(task: &Task, framework: &str, agent_ip: Option<std::net::IpAddr>) -> VipTask {
    VipTask {
        framework: framework.to_owned(),
        state: task.state.unwrap_or(TaskState::Unknown),
        has_health_check: task.has_health_check,
        healthy: task.latest_status().and_then(|s| s.healthy),
        agent_ip,
        container_ips: task.container_ips(),
        labels: task.labels.clone(),
        ports: task.ports.clone(),
        discovery_ports: task
            .discovery
            .iter()
            .flat_map(|d| d.ports.iter())
            .map(|p| DiscoveredPort {
                number: p.number,
                protocol: p.protocol.clone(),
                labels: p.labels.clone(),
            })
            .collect(),
        port_mappings: task
            .port_mappings
            .iter()
            .map(|m| MappedPort {
                host_port: m.host_port,
                container_port: m.container_port,
                protocol: m.protocol.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use capstan_types::vip::{Backend, Protocol, VipAddr, VipKey};

    use super::*;
    use crate::model::{Agent, Discovery, DiscoveryPort, Framework, TaskKey, TaskStatus};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tasks_on_known_agents_of_known_frameworks_become_vip_tasks() {
        let mut st = ClusterState::default();
        st.agents.insert(
            "S0".into(),
            Agent {
                id: "S0".into(),
                hostname: "a".into(),
                ip: Some(ip("10.0.0.2")),
                port: 5051,
            },
        );
        st.frameworks.insert(
            "F".into(),
            Framework {
                id: "F".into(),
                name: "marathon".into(),
                hostname: String::new(),
                pid: None,
            },
        );
        let mut t = Task {
            id: "web.1".into(),
            framework_id: "F".into(),
            agent_id: "S0".into(),
            state: Some(TaskState::Running),
            has_health_check: true,
            discovery: Some(Discovery {
                name: "web".into(),
                ports: vec![DiscoveryPort {
                    number: 31000,
                    protocol: "tcp".into(),
                    labels: vec![
                        ("VIP_0".into(), "/web:80".into()),
                        ("network-scope".into(), "host".into()),
                    ],
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        t.push_status(TaskStatus {
            state: Some(TaskState::Running),
            timestamp: 1.0,
            healthy: Some(true),
            ..Default::default()
        });
        let mut orphan = t.clone();
        orphan.id = "web.2".into();
        orphan.agent_id = "gone".into();
        for t in [t, orphan] {
            st.tasks.insert(
                TaskKey {
                    framework_id: t.framework_id.clone(),
                    task_id: t.id.clone(),
                },
                t,
            );
        }
        let table = st.vip_table(&VipConfig::default());
        let key = VipKey {
            vip: VipAddr::Named {
                name: "web.marathon.l4lb.thisdcos.directory".into(),
                port: 80,
            },
            protocol: Protocol::Tcp,
        };
        let backends: Vec<Backend> = table.vips[&key].backends.iter().copied().collect();
        assert_eq!(
            backends,
            [Backend {
                ip: ip("10.0.0.2"),
                port: 31000
            }],
            "the orphan on an unknown agent is left out"
        );
    }
}
