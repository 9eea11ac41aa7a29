//! Filling the model from the operator API: `GET_STATE` (inside `SUBSCRIBED`) and the events
//! that follow it. [`ClusterState::apply_event`] is the incremental step the stream follower
//! runs for every event.

use std::net::IpAddr;

use capstan_proto::mesos::v1 as pb;
use capstan_proto::mesos::v1::master::event::Type as EventType;
use capstan_proto::mesos::v1::master::{Event, response};

use super::{
    Agent, ClusterState, Discovery, DiscoveryPort, Framework, PortMapping, Task, TaskKey,
    TaskState, TaskStatus, parse_upid, push_range,
};

impl ClusterState {
    /// Replaces agents, frameworks and tasks with the content of a `GET_STATE` response;
    /// masters and leader are kept (the operator API does not report them).
    pub fn reset_from_get_state(&mut self, state: &response::GetState) {
        self.agents.clear();
        self.frameworks.clear();
        self.tasks.clear();
        if let Some(agents) = &state.get_agents {
            for a in &agents.agents {
                self.add_agent(a);
            }
        }
        if let Some(fws) = &state.get_frameworks {
            for f in &fws.frameworks {
                self.add_framework(&f.framework_info);
            }
        }
        if let Some(tasks) = &state.get_tasks {
            for t in &tasks.tasks {
                self.add_task(t);
            }
        }
    }

    /// Applies one operator event; returns whether anything DNS can see may have changed
    /// (false for heartbeats and unknown events).
    pub fn apply_event(&mut self, event: &Event) -> bool {
        let kind = event.r#type.and_then(|t| EventType::try_from(t).ok());
        match kind {
            Some(EventType::Subscribed) => {
                if let Some(s) = event.subscribed.as_ref().and_then(|s| s.get_state.as_ref()) {
                    self.reset_from_get_state(s);
                } else {
                    self.reset_from_get_state(&response::GetState::default());
                }
                true
            }
            Some(EventType::TaskAdded) => match &event.task_added {
                Some(e) => {
                    self.add_task(&e.task);
                    true
                }
                None => false,
            },
            Some(EventType::TaskUpdated) => match &event.task_updated {
                Some(e) => self.update_task(&e.framework_id.value, &e.status, e.state),
                None => false,
            },
            Some(EventType::AgentAdded) => match &event.agent_added {
                Some(e) => {
                    self.add_agent(&e.agent);
                    true
                }
                None => false,
            },
            Some(EventType::AgentRemoved) => match &event.agent_removed {
                Some(e) => self.agents.remove(&e.agent_id.value).is_some(),
                None => false,
            },
            Some(EventType::FrameworkAdded) => match &event.framework_added {
                Some(e) => {
                    self.add_framework(&e.framework.framework_info);
                    true
                }
                None => false,
            },
            Some(EventType::FrameworkUpdated) => match &event.framework_updated {
                Some(e) => {
                    self.add_framework(&e.framework.framework_info);
                    true
                }
                None => false,
            },
            Some(EventType::FrameworkRemoved) => match &event.framework_removed {
                Some(e) => {
                    let id = e.framework_info.id.as_ref().map(|i| i.value.clone());
                    match id {
                        Some(id) => {
                            self.tasks.retain(|k, _| k.framework_id != id);
                            self.frameworks.remove(&id).is_some()
                        }
                        None => false,
                    }
                }
                None => false,
            },
            Some(EventType::Heartbeat) | Some(EventType::Unknown) | None => false,
        }
    }

    fn add_agent(&mut self, a: &response::get_agents::Agent) {
        let info = &a.agent_info;
        let Some(id) = info.id.as_ref().map(|i| i.value.clone()) else {
            return;
        };
        let pid = a.pid.as_deref().and_then(parse_upid);
        let ip = pid
            .map(|p| p.ip())
            .or_else(|| info.hostname.parse::<IpAddr>().ok());
        let port = pid
            .map(|p| p.port())
            .or_else(|| info.port.and_then(|p| u16::try_from(p).ok()))
            .unwrap_or(5051);
        self.agents.insert(
            id.clone(),
            Agent {
                id,
                hostname: info.hostname.clone(),
                ip,
                port,
            },
        );
    }

    fn add_framework(&mut self, info: &pb::FrameworkInfo) {
        let Some(id) = info.id.as_ref().map(|i| i.value.clone()) else {
            return;
        };
        self.frameworks.insert(
            id.clone(),
            Framework {
                id,
                name: info.name.clone(),
                hostname: info.hostname.clone().unwrap_or_default(),
                pid: None,
            },
        );
    }

    fn add_task(&mut self, t: &pb::Task) {
        let task = task_from_proto(t);
        let key = TaskKey {
            framework_id: task.framework_id.clone(),
            task_id: task.id.clone(),
        };
        if task.state.is_some_and(TaskState::is_terminal) {
            self.tasks.remove(&key);
        } else {
            self.tasks.insert(key, task);
        }
    }

    fn update_task(&mut self, framework_id: &str, status: &pb::TaskStatus, state: i32) -> bool {
        let key = TaskKey {
            framework_id: framework_id.to_owned(),
            task_id: status.task_id.value.clone(),
        };
        let state = TaskState::from_number(state);
        if state.is_terminal() {
            return self.tasks.remove(&key).is_some();
        }
        match self.tasks.get_mut(&key) {
            Some(task) => {
                task.state = Some(state);
                task.push_status(status_from_proto(status));
                if task.agent_id.is_empty()
                    && let Some(agent) = &status.agent_id
                {
                    task.agent_id = agent.value.clone();
                }
                true
            }
            // An update for a task we never saw added: nothing to name it by.
            None => false,
        }
    }
}

/// Converts an operator-API task into the model.
pub fn task_from_proto(t: &pb::Task) -> Task {
    let mut ports = Vec::new();
    for r in t.resources.iter().filter(|r| r.name == "ports") {
        for range in r.ranges.iter().flat_map(|rs| rs.range.iter()) {
            push_range(&mut ports, range.begin, range.end);
        }
    }
    let mut task = Task {
        id: t.task_id.value.clone(),
        name: t.name.clone(),
        framework_id: t.framework_id.value.clone(),
        agent_id: t.agent_id.value.clone(),
        state: Some(TaskState::from_number(t.state)),
        ports,
        discovery: t.discovery.as_ref().map(|d| Discovery {
            name: d.name.clone().unwrap_or_default(),
            ports: d
                .ports
                .iter()
                .flat_map(|p| p.ports.iter())
                .map(|p| DiscoveryPort {
                    number: p.number,
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_default(),
                })
                .collect(),
        }),
        port_mappings: t
            .container
            .as_ref()
            .map(|c| {
                let docker = c
                    .docker
                    .iter()
                    .flat_map(|d| d.port_mappings.iter())
                    .map(|m| PortMapping {
                        host_port: m.host_port,
                        container_port: m.container_port,
                        protocol: m.protocol.clone().unwrap_or_default(),
                    });
                let cni = c
                    .network_infos
                    .iter()
                    .flat_map(|n| n.port_mappings.iter())
                    .map(|m| PortMapping {
                        host_port: m.host_port,
                        container_port: m.container_port,
                        protocol: m.protocol.clone().unwrap_or_default(),
                    });
                docker.chain(cni).filter(|m| m.host_port != 0).collect()
            })
            .unwrap_or_default(),
        has_health_check: t.health_check.is_some(),
        statuses: Vec::new(),
    };
    for s in &t.statuses {
        task.push_status(status_from_proto(s));
    }
    task
}

/// Converts an operator-API task status into the model.
pub fn status_from_proto(s: &pb::TaskStatus) -> TaskStatus {
    TaskStatus {
        state: Some(TaskState::from_number(s.state)),
        timestamp: s.timestamp.unwrap_or(0.0),
        healthy: s.healthy,
        labels: s
            .labels
            .iter()
            .flat_map(|l| l.labels.iter())
            .map(|l| (l.key.clone(), l.value.clone().unwrap_or_default()))
            .collect(),
        network_ips: s
            .container_status
            .iter()
            .flat_map(|c| c.network_infos.iter())
            .flat_map(|n| n.ip_addresses.iter())
            .filter_map(|ip| ip.ip_address.as_deref())
            .filter_map(|ip| ip.parse().ok())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(json: &str) -> Event {
        capstan_proto::from_json_str(json).expect("valid event JSON")
    }

    const SUBSCRIBED: &str = r#"{"type":"SUBSCRIBED","subscribed":{"heartbeat_interval_seconds":15,
      "get_state":{
        "get_agents":{"agents":[{"agent_info":{"hostname":"10.0.0.2","port":5051,"id":{"value":"M-S0"}},
                                 "active":true,"version":"1.11.0","pid":"slave(1)@10.0.0.2:5051"}]},
        "get_frameworks":{"frameworks":[{"framework_info":{"user":"root","name":"marathon","id":{"value":"M-0000"}},
                                         "active":true,"connected":true,"recovered":false}]},
        "get_tasks":{"tasks":[]}}}}"#;

    const TASK_ADDED: &str = r#"{"type":"TASK_ADDED","task_added":{"task":{"name":"web",
      "task_id":{"value":"web.1"},"framework_id":{"value":"M-0000"},"agent_id":{"value":"M-S0"},
      "state":"TASK_STAGING",
      "resources":[{"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":31001}]}}],
      "discovery":{"visibility":"FRAMEWORK","name":"web","ports":{"ports":[{"number":31000,"name":"http","protocol":"tcp"}]}},
      "container":{"type":"DOCKER","docker":{"image":"x","port_mappings":[{"host_port":31000,"container_port":80}]}}}}}"#;

    fn task_updated(state: &str, healthy: Option<bool>) -> String {
        let healthy = healthy
            .map(|h| format!(r#","healthy":{h}"#))
            .unwrap_or_default();
        format!(
            r#"{{"type":"TASK_UPDATED","task_updated":{{"framework_id":{{"value":"M-0000"}},"state":"{state}",
              "status":{{"task_id":{{"value":"web.1"}},"state":"{state}","timestamp":2.0{healthy},
              "container_status":{{"network_infos":[{{"ip_addresses":[{{"ip_address":"9.0.0.1"}}]}}]}}}}}}}}"#
        )
    }

    #[test]
    fn operator_events_build_the_model_incrementally() {
        let mut st = ClusterState::default();
        assert!(st.apply_event(&ev(SUBSCRIBED)));
        assert_eq!(st.agents["M-S0"].ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(st.frameworks["M-0000"].name, "marathon");

        assert!(st.apply_event(&ev(TASK_ADDED)));
        let key = TaskKey {
            framework_id: "M-0000".into(),
            task_id: "web.1".into(),
        };
        let t = &st.tasks[&key];
        assert_eq!(t.state, Some(TaskState::Staging));
        assert_eq!(t.ports, vec![31000, 31001]);
        assert_eq!(t.port_mappings.len(), 1);
        assert_eq!(t.discovery.as_ref().unwrap().ports[0].name, "http");

        assert!(st.apply_event(&ev(&task_updated("TASK_RUNNING", Some(true)))));
        let t = &st.tasks[&key];
        assert_eq!(t.state, Some(TaskState::Running));
        assert_eq!(t.latest_running_status().unwrap().healthy, Some(true));
        assert_eq!(
            t.container_ips(),
            vec!["9.0.0.1".parse::<IpAddr>().unwrap()]
        );

        assert!(!st.apply_event(&ev(r#"{"type":"HEARTBEAT"}"#)));
        assert!(st.apply_event(&ev(&task_updated("TASK_KILLED", None))));
        assert!(st.tasks.is_empty(), "terminal tasks leave the model");

        assert!(st.apply_event(&ev(
            r#"{"type":"AGENT_REMOVED","agent_removed":{"agent_id":{"value":"M-S0"}}}"#
        )));
        assert!(st.agents.is_empty());
        assert!(st.apply_event(&ev(
            r#"{"type":"FRAMEWORK_REMOVED","framework_removed":{"framework_info":{"user":"u","name":"marathon","id":{"value":"M-0000"}}}}"#
        )));
        assert!(st.frameworks.is_empty());
    }

    #[test]
    fn updates_for_unknown_tasks_change_nothing() {
        let mut st = ClusterState::default();
        assert!(!st.apply_event(&ev(&task_updated("TASK_RUNNING", None))));
        assert!(st.tasks.is_empty());
    }
}
