//! Filling the model from a Mesos `/master/state` document (the flattened JSON of §3.1).
//!
//! Decoding is lenient the way Mesos-DNS's is not: a field of the wrong type is skipped
//! instead of failing the whole document, and an unparsable pid just yields no address.

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::{
    Agent, ClusterState, Discovery, DiscoveryPort, Framework, PortMapping, Task, TaskKey,
    TaskState, TaskStatus, parse_port_ranges, parse_upid,
};

/// Why a `/master/state` document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateJsonError {
    #[error("master state is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("master state is not a JSON object")]
    NotAnObject,
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn num(v: &Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(t) => t.parse().ok(),
        _ => None,
    }
}

impl ClusterState {
    /// Builds the model from a `/master/state` document. `masters` is the configured master
    /// list (for `masterN` names); the leader comes from the document's `leader` pid.
    pub fn from_master_state_json(
        text: &str,
        masters: Vec<SocketAddr>,
    ) -> Result<ClusterState, StateJsonError> {
        let doc: Value = serde_json::from_str(text).map_err(StateJsonError::Json)?;
        if !doc.is_object() {
            return Err(StateJsonError::NotAnObject);
        }
        let mut state = ClusterState {
            masters,
            leader: parse_upid(s(&doc, "leader")),
            ..Default::default()
        };
        for slave in arr(&doc, "slaves") {
            let id = s(slave, "id").to_owned();
            if id.is_empty() {
                continue;
            }
            let pid = parse_upid(s(slave, "pid"));
            let hostname = s(slave, "hostname").to_owned();
            let ip = pid.map(|p| p.ip()).or_else(|| hostname.parse().ok());
            let port = pid
                .map(|p| p.port())
                .or_else(|| num(slave, "port").map(|p| p as u16))
                .unwrap_or(5051);
            state.agents.insert(
                id.clone(),
                Agent {
                    id,
                    hostname,
                    ip,
                    port,
                },
            );
        }
        for fw in arr(&doc, "frameworks") {
            let id = s(fw, "id").to_owned();
            state.frameworks.insert(
                id.clone(),
                Framework {
                    id: id.clone(),
                    name: s(fw, "name").to_owned(),
                    hostname: s(fw, "hostname").to_owned(),
                    pid: parse_upid(s(fw, "pid")),
                },
            );
            for t in arr(fw, "tasks") {
                let task = task_from_state_json(t, &id);
                if task.state.is_some_and(TaskState::is_terminal) {
                    continue;
                }
                state.tasks.insert(
                    TaskKey {
                        framework_id: task.framework_id.clone(),
                        task_id: task.id.clone(),
                    },
                    task,
                );
            }
        }
        Ok(state)
    }
}

fn task_from_state_json(t: &Value, framework_id: &str) -> Task {
    let fid = match s(t, "framework_id") {
        "" => framework_id,
        f => f,
    };
    let mut task = Task {
        id: s(t, "id").to_owned(),
        name: s(t, "name").to_owned(),
        framework_id: fid.to_owned(),
        agent_id: s(t, "slave_id").to_owned(),
        state: t
            .get("state")
            .and_then(Value::as_str)
            .map(TaskState::from_name_or_unknown),
        ports: t
            .get("resources")
            .and_then(|r| r.get("ports"))
            .and_then(Value::as_str)
            .map(parse_port_ranges)
            .unwrap_or_default(),
        has_health_check: t.get("health_check").is_some(),
        labels: labels_from_json(t.get("labels")),
        ..Default::default()
    };
    for st in arr(t, "statuses") {
        task.push_status(status_from_json(st));
    }
    if let Some(d) = t.get("discovery") {
        task.discovery = Some(discovery_from_json(d));
    }
    if let Some(c) = t.get("container") {
        task.port_mappings = container_port_mappings(c);
    }
    task
}

/// A TaskStatus in Mesos JSON (the same shape in `/master/state` and the operator API).
/// Label pairs: `/master/state` flattens labels into an array, proto JSON nests them in
/// `{"labels": [...]}`.
fn labels_from_json(v: Option<&Value>) -> Vec<(String, String)> {
    let labels = match v {
        Some(Value::Array(a)) => a.as_slice(),
        Some(v) => arr(v, "labels"),
        None => &[],
    };
    labels
        .iter()
        .map(|l| (s(l, "key").to_owned(), s(l, "value").to_owned()))
        .collect()
}

pub(crate) fn status_from_json(st: &Value) -> TaskStatus {
    TaskStatus {
        state: st
            .get("state")
            .and_then(Value::as_str)
            .map(TaskState::from_name_or_unknown),
        timestamp: num(st, "timestamp").unwrap_or(0.0),
        healthy: st.get("healthy").and_then(Value::as_bool),
        labels: labels_from_json(st.get("labels")),
        network_ips: st
            .get("container_status")
            .map(|cs| {
                arr(cs, "network_infos")
                    .iter()
                    .flat_map(|ni| {
                        let legacy = ni.get("ip_address").and_then(Value::as_str);
                        arr(ni, "ip_addresses")
                            .iter()
                            .filter_map(|ip| ip.get("ip_address").and_then(Value::as_str))
                            .chain(legacy)
                    })
                    .filter_map(|ip| ip.parse::<IpAddr>().ok())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn discovery_from_json(d: &Value) -> Discovery {
    Discovery {
        name: s(d, "name").to_owned(),
        ports: d
            .get("ports")
            .map(|p| {
                arr(p, "ports")
                    .iter()
                    .map(|port| DiscoveryPort {
                        number: num(port, "number").unwrap_or(0.0) as u32,
                        name: s(port, "name").to_owned(),
                        protocol: s(port, "protocol").to_owned(),
                        labels: labels_from_json(port.get("labels")),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn container_port_mappings(c: &Value) -> Vec<PortMapping> {
    let docker = c
        .get("docker")
        .map(|d| arr(d, "port_mappings"))
        .unwrap_or(&[]);
    let cni = arr(c, "network_infos")
        .iter()
        .flat_map(|ni| arr(ni, "port_mappings"));
    docker
        .iter()
        .chain(cni)
        .map(|m| PortMapping {
            host_port: num(m, "host_port").unwrap_or(0.0) as u32,
            container_port: num(m, "container_port").unwrap_or(0.0) as u32,
            protocol: s(m, "protocol").to_owned(),
        })
        .filter(|m| m.host_port != 0)
        .collect()
}

/// The §3.1 example document, shared by this crate's and `dns`'s tests.
#[doc(hidden)]
pub const EXAMPLE_FOR_TESTS: &str = r#"{"version":"1.11.0","id":"7d3c","pid":"master@10.0.0.1:5050","hostname":"m1",
     "leader":"master@10.0.0.1:5050","leader_info":{"id":"7d3c","pid":"master@10.0.0.1:5050","port":5050,"hostname":"m1"},
     "slaves":[{"id":"7d3c-S0","hostname":"a1","port":5051,"pid":"slave(1)@10.0.0.2:5051","active":true}],
     "frameworks":[{"id":"7d3c-0000","name":"marathon","hostname":"m1","pid":"scheduler-1@10.0.0.1:34567",
       "tasks":[{"id":"web.instance-5f._app.1","name":"web","framework_id":"7d3c-0000","executor_id":"",
          "slave_id":"7d3c-S0","state":"TASK_RUNNING",
          "resources":{"cpus":0.1,"gpus":0,"mem":32,"disk":0,"ports":"[31005-31005]"},
          "statuses":[{"state":"TASK_RUNNING","timestamp":1.6e9,
                       "labels":[{"key":"Docker.NetworkSettings.IPAddress","value":"172.17.0.3"}],
                       "container_status":{"container_id":{"value":"c1"},
                           "network_infos":[{"ip_addresses":[{"protocol":"IPv4","ip_address":"10.0.0.2"}]}]}}],
          "discovery":{"visibility":"FRAMEWORK","name":"web",
                       "ports":{"ports":[{"number":31005,"name":"default","protocol":"tcp"}]}}},
         {"id":"old","name":"old","slave_id":"7d3c-S0","state":"TASK_FINISHED","statuses":[]}],
       "completed_tasks":[]}]}"#;

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = EXAMPLE_FOR_TESTS;

    #[test]
    fn master_state_document_fills_the_model() {
        let st = ClusterState::from_master_state_json(EXAMPLE, vec![]).unwrap();
        assert_eq!(st.leader, Some("10.0.0.1:5050".parse().unwrap()));
        let agent = &st.agents["7d3c-S0"];
        assert_eq!(agent.ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(agent.port, 5051);
        assert_eq!(
            st.frameworks["7d3c-0000"].pid,
            Some("10.0.0.1:34567".parse().unwrap())
        );
        assert_eq!(st.tasks.len(), 1, "terminal tasks are dropped");
        let t = st.tasks.values().next().unwrap();
        assert_eq!(t.ports, vec![31005]);
        assert_eq!(t.state, Some(TaskState::Running));
        assert_eq!(t.discovery.as_ref().unwrap().ports[0].name, "default");
        let status = t.latest_running_status().unwrap();
        assert_eq!(
            status.network_ips,
            vec!["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(status.labels.len(), 1);
    }

    #[test]
    fn hostile_documents_are_errors_or_empty_not_panics() {
        assert!(ClusterState::from_master_state_json("[]", vec![]).is_err());
        assert!(ClusterState::from_master_state_json("{", vec![]).is_err());
        let st = ClusterState::from_master_state_json(
            r#"{"leader":7,"slaves":{"x":1},"frameworks":[1,{"tasks":[null,{"statuses":"x"}]}]}"#,
            vec![],
        )
        .unwrap();
        assert_eq!(st.leader, None);
        assert!(st.agents.is_empty());
    }
}
