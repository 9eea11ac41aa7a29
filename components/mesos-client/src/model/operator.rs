//! Filling the model from the operator API: `GET_STATE` (inside `SUBSCRIBED`) and the events
//! that follow it. [`ClusterState::apply_event`] is the incremental step the stream follower
//! runs for every event.

use std::collections::BTreeSet;
use std::net::IpAddr;

use capstan_proto::mesos::v1 as pb;
use capstan_proto::mesos::v1::master::event::Type as EventType;
use capstan_proto::mesos::v1::master::{Event, response};

use super::{
    Agent, ClusterState, Discovery, DiscoveryPort, Framework, HeldOver, PortMapping, Task, TaskKey,
    TaskState, TaskStatus, parse_upid, push_range,
};

impl ClusterState {
    /// Replaces agents, frameworks and tasks with the content of a `GET_STATE` response;
    /// masters and leader are kept (the operator API does not report them).
    ///
    /// Agents the response lists as `recovered_agents` (known to a newly elected master from
    /// its registry, not re-registered yet) keep their previous entry and tasks, recorded in
    /// [`ClusterState::held`]: the new master reports those tasks only once the agent is back,
    /// and until then their names must keep answering. See [`ClusterState::release_held`].
    pub fn reset_from_get_state(&mut self, state: &response::GetState) {
        let mut old_agents = std::mem::take(&mut self.agents);
        let mut old_frameworks = std::mem::take(&mut self.frameworks);
        let old_tasks = std::mem::take(&mut self.tasks);
        self.held = HeldOver::default();
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
        let recovering: BTreeSet<String> = state
            .get_agents
            .iter()
            .flat_map(|a| a.recovered_agents.iter())
            .filter_map(|info| info.id.as_ref().map(|id| id.value.clone()))
            .filter(|id| !self.agents.contains_key(id))
            .collect();
        if recovering.is_empty() {
            return;
        }
        for id in &recovering {
            if let Some(agent) = old_agents.remove(id) {
                self.agents.insert(id.clone(), agent);
                self.held.agents.insert(id.clone());
            }
        }
        for (key, task) in old_tasks {
            if !recovering.contains(&task.agent_id) || self.tasks.contains_key(&key) {
                continue;
            }
            if !self.frameworks.contains_key(&key.framework_id)
                && let Some(fw) = old_frameworks.remove(&key.framework_id)
            {
                self.held.frameworks.insert(fw.id.clone());
                self.frameworks.insert(fw.id.clone(), fw);
            }
            self.held
                .tasks
                .entry(task.agent_id.clone())
                .or_default()
                .insert(key.clone());
            self.tasks.insert(key, task);
        }
    }

    /// Drops everything a resync held over (the follower stopped waiting for those agents to
    /// re-register); returns whether anything was dropped.
    pub fn release_held(&mut self) -> bool {
        if self.held.is_empty() {
            return false;
        }
        let held = std::mem::take(&mut self.held);
        for id in &held.agents {
            self.agents.remove(id);
        }
        for key in held.tasks.values().flatten() {
            self.tasks.remove(key);
        }
        self.drop_unused_held_frameworks(held.frameworks);
        true
    }

    /// Drops what a resync held over for one agent: the new master now knows it (it
    /// re-registered and its tasks were added before its `AGENT_ADDED`), or removed it.
    fn release_held_agent(&mut self, agent_id: &str) -> bool {
        if self.held.is_empty() {
            return false;
        }
        let mut changed =
            self.held.agents.remove(agent_id) && self.agents.remove(agent_id).is_some();
        if let Some(keys) = self.held.tasks.remove(agent_id) {
            for key in keys {
                changed |= self.tasks.remove(&key).is_some();
            }
        }
        if self.held.tasks.is_empty() && !self.held.frameworks.is_empty() {
            let frameworks = std::mem::take(&mut self.held.frameworks);
            changed |= self.drop_unused_held_frameworks(frameworks);
        }
        changed
    }

    /// Removes the held frameworks no task refers to any more; a framework still named by a
    /// task stays as a plain entry (`FRAMEWORK_ADDED` or `FRAMEWORK_REMOVED` settle it).
    fn drop_unused_held_frameworks(&mut self, frameworks: BTreeSet<String>) -> bool {
        if frameworks.is_empty() {
            return false;
        }
        let used: BTreeSet<&str> = self.tasks.keys().map(|k| k.framework_id.as_str()).collect();
        let unused: Vec<String> = frameworks
            .into_iter()
            .filter(|id| !used.contains(id.as_str()))
            .collect();
        for id in &unused {
            self.frameworks.remove(id);
        }
        !unused.is_empty()
    }

    /// The master reported this task itself: it is no longer only held over.
    fn unhold_task(&mut self, key: &TaskKey) {
        if self.held.tasks.is_empty() {
            return;
        }
        let Some(agent) = self.tasks.get(key).map(|t| t.agent_id.clone()) else {
            return;
        };
        if let Some(keys) = self.held.tasks.get_mut(&agent) {
            keys.remove(key);
            if keys.is_empty() {
                self.held.tasks.remove(&agent);
            }
        }
    }

    /// Applies one operator event; returns whether anything a follower can see may have changed
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
                    if let Some(id) = &e.agent.agent_info.id {
                        self.release_held_agent(&id.value);
                    }
                    self.add_agent(&e.agent);
                    true
                }
                None => false,
            },
            Some(EventType::AgentRemoved) => match &event.agent_removed {
                Some(e) => {
                    let id = &e.agent_id.value;
                    self.release_held_agent(id) | self.agents.remove(id).is_some()
                }
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
                            for keys in self.held.tasks.values_mut() {
                                keys.retain(|k| k.framework_id != id);
                            }
                            self.held.tasks.retain(|_, keys| !keys.is_empty());
                            self.held.frameworks.remove(&id);
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
        self.held.frameworks.remove(&id);
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
        self.unhold_task(&key);
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
        let state = TaskState::from_number_or_unknown(state);
        self.unhold_task(&key);
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
        state: Some(TaskState::from_number_or_unknown(t.state)),
        ports,
        labels: labels_from_proto(t.labels.as_ref()),
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
                    labels: labels_from_proto(p.labels.as_ref()),
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

/// Label pairs; a label without value has the empty value.
fn labels_from_proto(labels: Option<&pb::Labels>) -> Vec<(String, String)> {
    labels
        .iter()
        .flat_map(|l| l.labels.iter())
        .map(|l| (l.key.clone(), l.value.clone().unwrap_or_default()))
        .collect()
}

/// Converts an operator-API task status into the model.
pub fn status_from_proto(s: &pb::TaskStatus) -> TaskStatus {
    TaskStatus {
        state: Some(TaskState::from_number_or_unknown(s.state)),
        timestamp: s.timestamp.unwrap_or(0.0),
        healthy: s.healthy,
        labels: labels_from_proto(s.labels.as_ref()),
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

    /// A `SUBSCRIBED` event: registered agents, agents still recovering, frameworks and tasks
    /// as `(task id, agent id, framework id)`, all running.
    fn resync(
        registered: &[&str],
        recovering: &[&str],
        frameworks: &[&str],
        tasks: &[(&str, &str, &str)],
    ) -> Event {
        let agents: Vec<serde_json::Value> = registered
            .iter()
            .enumerate()
            .map(|(i, id)| {
                serde_json::json!({
                    "agent_info": {"hostname": format!("10.0.0.{}", i + 2), "id": {"value": id}},
                    "active": true, "version": "1.11.0"})
            })
            .collect();
        let recovered: Vec<serde_json::Value> = recovering
            .iter()
            .map(|id| serde_json::json!({"hostname": "10.0.1.1", "id": {"value": id}}))
            .collect();
        let fws: Vec<serde_json::Value> = frameworks
            .iter()
            .map(|id| {
                serde_json::json!({"framework_info": {"user": "root", "name": format!("fw-{id}"),
                    "id": {"value": id}}, "active": true, "connected": true, "recovered": true})
            })
            .collect();
        let tasks: Vec<serde_json::Value> =
            tasks.iter().map(|(t, a, f)| running(t, a, f)).collect();
        let v = serde_json::json!({"type": "SUBSCRIBED", "subscribed": {"get_state": {
            "get_agents": {"agents": agents, "recovered_agents": recovered},
            "get_frameworks": {"frameworks": fws},
            "get_tasks": {"tasks": tasks}}}});
        capstan_proto::from_json_str(&v.to_string()).expect("valid event JSON")
    }

    fn running(task: &str, agent: &str, framework: &str) -> serde_json::Value {
        serde_json::json!({"name": task, "task_id": {"value": task},
            "framework_id": {"value": framework}, "agent_id": {"value": agent},
            "state": "TASK_RUNNING",
            "statuses": [{"task_id": {"value": task}, "state": "TASK_RUNNING", "timestamp": 1.0}]})
    }

    fn added(task: &str, agent: &str, framework: &str) -> Event {
        let v = serde_json::json!({"type": "TASK_ADDED",
            "task_added": {"task": running(task, agent, framework)}});
        capstan_proto::from_json_str(&v.to_string()).expect("valid event JSON")
    }

    fn agent_added(agent: &str) -> Event {
        ev(&format!(
            r#"{{"type":"AGENT_ADDED","agent_added":{{"agent":{{"agent_info":{{"hostname":"10.0.1.1","id":{{"value":"{agent}"}}}},"active":true,"version":"1.11.0"}}}}}}"#
        ))
    }

    fn task_ids(st: &ClusterState) -> Vec<&str> {
        st.tasks.keys().map(|k| k.task_id.as_str()).collect()
    }

    /// Two agents, one framework, tasks a and b on S0 and c on S1.
    fn before_the_failover() -> ClusterState {
        let mut st = ClusterState::default();
        st.apply_event(&resync(
            &["S0", "S1"],
            &[],
            &["F0"],
            &[("a", "S0", "F0"), ("b", "S0", "F0"), ("c", "S1", "F0")],
        ));
        assert!(
            st.held.is_empty(),
            "a first subscription holds nothing over"
        );
        st
    }

    #[test]
    fn a_resync_keeps_the_tasks_of_agents_the_new_master_has_not_heard_from() {
        let mut st = before_the_failover();
        let s0 = st.agents["S0"].clone();
        // The new master knows S1 already and S0 only from its registry.
        assert!(st.apply_event(&resync(&["S1"], &["S0"], &["F0"], &[("c", "S1", "F0")])));
        assert_eq!(task_ids(&st), ["a", "b", "c"]);
        assert_eq!(
            st.agents.get("S0"),
            Some(&s0),
            "the previous entry, with its IP"
        );
        assert_eq!(st.held.agents.iter().collect::<Vec<_>>(), ["S0"]);
        assert_eq!(st.held.task_count(), 2);

        // S0 re-registers: its tasks come first, then AGENT_ADDED; b was not reported.
        assert!(st.apply_event(&added("a", "S0", "F0")));
        assert_eq!(st.held.task_count(), 1, "a is the new master's now");
        assert!(st.apply_event(&agent_added("S0")));
        assert_eq!(task_ids(&st), ["a", "c"]);
        assert!(st.held.is_empty());
        assert_eq!(st.agents["S0"].ip, Some("10.0.1.1".parse().unwrap()));
    }

    #[test]
    fn a_resync_drops_what_the_new_master_knows_is_gone() {
        let mut st = before_the_failover();
        // S0 is registered with no tasks; S1 is neither registered nor recovering.
        assert!(st.apply_event(&resync(&["S0"], &[], &["F0"], &[])));
        assert!(st.tasks.is_empty());
        assert_eq!(st.agents.keys().collect::<Vec<_>>(), ["S0"]);
        assert!(st.held.is_empty());

        // A recovering agent we never knew brings nothing back.
        let mut st = ClusterState::default();
        st.apply_event(&resync(&[], &["S9"], &["F0"], &[]));
        assert!(st.agents.is_empty() && st.held.is_empty());
    }

    #[test]
    fn held_records_go_when_the_agent_is_removed_or_the_wait_ends() {
        let mut st = before_the_failover();
        st.apply_event(&resync(&["S1"], &["S0"], &["F0"], &[("c", "S1", "F0")]));
        assert!(st.apply_event(&ev(
            r#"{"type":"AGENT_REMOVED","agent_removed":{"agent_id":{"value":"S0"}}}"#
        )));
        assert_eq!(task_ids(&st), ["c"]);
        assert!(!st.agents.contains_key("S0") && st.held.is_empty());

        let mut st = before_the_failover();
        st.apply_event(&resync(&[], &["S0", "S1"], &["F0"], &[]));
        assert_eq!(task_ids(&st), ["a", "b", "c"]);
        // A resync from yet another master while still waiting keeps holding.
        st.apply_event(&resync(&["S1"], &["S0"], &["F0"], &[]));
        assert_eq!(task_ids(&st), ["a", "b"]);
        assert_eq!(st.held.task_count(), 2);
        assert!(st.release_held());
        assert!(st.tasks.is_empty());
        assert_eq!(st.agents.keys().collect::<Vec<_>>(), ["S1"]);
        assert!(!st.release_held(), "nothing left to drop");
    }

    #[test]
    fn a_held_task_keeps_its_framework_until_no_task_needs_it() {
        let mut st = before_the_failover();
        // The new master does not list F0 (yet).
        st.apply_event(&resync(&[], &["S0"], &[], &[]));
        assert_eq!(task_ids(&st), ["a", "b"]);
        assert_eq!(st.frameworks["F0"].name, "fw-F0");
        assert!(st.held.frameworks.contains("F0"));
        assert!(st.apply_event(&agent_added("S0")));
        assert!(st.tasks.is_empty());
        assert!(st.frameworks.is_empty(), "no task needs F0 any more");

        // A framework the new master reports is its own again, whatever happens to the tasks.
        let mut st = before_the_failover();
        st.apply_event(&resync(&[], &["S0"], &[], &[]));
        st.apply_event(&ev(
            r#"{"type":"FRAMEWORK_ADDED","framework_added":{"framework":{"framework_info":{"user":"u","name":"fw-F0","id":{"value":"F0"}},"active":true,"connected":true,"recovered":false}}}"#,
        ));
        assert!(st.held.frameworks.is_empty());
        st.apply_event(&agent_added("S0"));
        assert_eq!(st.frameworks.keys().collect::<Vec<_>>(), ["F0"]);
        assert!(st.held.is_empty());
    }
}
