//! What the v2 API answers with, besides definitions: an app with its counts, deployments and
//! tasks (`AppInfo`), tasks, deployments, groups, the `{deploymentId, version}` of a mutation,
//! `/v2/info` and error bodies. Fields a peer may leave out default, so a reader built on
//! these types also reads Marathon's own answers.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use capstan_types::TaskState;

use crate::app::{AppDefinition, Violation};
use crate::path::PathId;
use crate::time::Timestamp;

/// `{deploymentId, version}`: the answer to every mutation that starts a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentResult {
    pub deployment_id: String,
    pub version: Timestamp,
}

/// A deployment named by its id (`deployments[]` of an app).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRef {
    pub id: String,
}

/// An app as `GET /v2/apps` and `GET /v2/apps/{id}` show it (Marathon's `AppInfo`): the
/// definition's fields, then the task counts, the deployments touching it and what was
/// embedded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    #[serde(flatten)]
    pub definition: AppDefinition,
    #[serde(default)]
    pub tasks_staged: u64,
    #[serde(default)]
    pub tasks_running: u64,
    #[serde(default)]
    pub tasks_healthy: u64,
    #[serde(default)]
    pub tasks_unhealthy: u64,
    #[serde(default)]
    pub deployments: Vec<DeploymentRef>,
    /// Present when embedded (`apps.tasks`; always for a single app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<Task>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task_failure: Option<TaskFailure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readiness_check_results: Vec<Value>,
}

/// `state` as a [`TaskState`]; a name this build does not know is [`TaskState::Unknown`]
/// (a newer Marathon's state), not an error.
fn task_state<'de, D: Deserializer<'de>>(d: D) -> Result<TaskState, D::Error> {
    let name = String::deserialize(d)?;
    Ok(TaskState::from_name_or_unknown(&name))
}

fn unknown_state() -> TaskState {
    TaskState::Unknown
}

/// One task (`GET /v2/apps/{id}/tasks`, `GET /v2/tasks`, `tasks[]` of an app).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub app_id: PathId,
    #[serde(default)]
    pub host: String,
    /// The Mesos agent id (Marathon's `slaveId`).
    #[serde(default, rename = "slaveId")]
    pub agent_id: String,
    #[serde(deserialize_with = "task_state", default = "unknown_state")]
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// The app version the task was launched with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Timestamp>,
    #[serde(default)]
    pub ports: Vec<u32>,
    #[serde(default)]
    pub service_ports: Vec<u32>,
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
    #[serde(default)]
    pub local_volumes: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub health_check_results: Vec<HealthCheckResult>,
}

/// `ipAddresses[]` of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    pub ip_address: String,
    /// `IPv4` or `IPv6`.
    #[serde(default)]
    pub protocol: String,
}

/// `healthCheckResults[]` of a task: one app-run check (or Mesos' verdict).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    pub alive: bool,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_success: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_cause: Option<String>,
}

/// `lastTaskFailure` of an app: the latest task that failed and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFailure {
    pub app_id: PathId,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub message: String,
    #[serde(deserialize_with = "task_state", default = "unknown_state")]
    pub state: TaskState,
    pub task_id: String,
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Timestamp>,
    #[serde(default, rename = "slaveId")]
    pub agent_id: String,
}

/// What a deployment step does to one app (Marathon's action names; others are kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentActionKind {
    StartApplication,
    ScaleApplication,
    RestartApplication,
    StopApplication,
    ResolveArtifacts,
    #[serde(untagged)]
    Other(String),
}

/// One action of a deployment step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentAction {
    pub action: DeploymentActionKind,
    pub app: PathId,
}

/// A set of actions run together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeploymentStep {
    #[serde(default)]
    pub actions: Vec<DeploymentAction>,
}

/// An action of the step in progress, with the readiness of the tasks it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentAction {
    pub action: DeploymentActionKind,
    pub app: PathId,
    #[serde(default)]
    pub readiness_check_results: Vec<Value>,
}

/// A running deployment (`GET /v2/deployments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    pub version: Timestamp,
    #[serde(default)]
    pub affected_apps: Vec<PathId>,
    #[serde(default)]
    pub affected_pods: Vec<PathId>,
    #[serde(default)]
    pub steps: Vec<DeploymentStep>,
    #[serde(default)]
    pub current_actions: Vec<CurrentAction>,
    /// 1-based index of the step in progress.
    #[serde(default)]
    pub current_step: u32,
    #[serde(default)]
    pub total_steps: u32,
}

/// A group: what `GET /v2/groups/{id}` answers and what `POST`/`PUT /v2/groups` take. App and
/// group ids in a body may be relative to the group; answers carry absolute ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Group {
    pub id: PathId,
    #[serde(default)]
    pub apps: Vec<AppDefinition>,
    #[serde(default)]
    pub groups: Vec<Group>,
    /// Paths of apps or groups this group depends on, as written (possibly relative).
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Set in answers; ignored in requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<Value>,
}

/// `GET /v2/info`: who this Marathon is and how it is configured (the configuration
/// sections stay JSON: their fields are informational).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildref: Option<String>,
    #[serde(default)]
    pub elected: bool,
    /// `host:port` of the leader.
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default, rename = "frameworkId")]
    pub framework_id: Option<String>,
    #[serde(default)]
    pub marathon_config: Value,
    #[serde(default)]
    pub zookeeper_config: Value,
    #[serde(default)]
    pub http_config: Value,
}

/// Marathon's error body: a message, and for invalid input `details` (the violations of a
/// 422, a parser message of a 400); a 409 of a locked app names the `deployments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<DeploymentRef>,
}

impl ErrorBody {
    /// `details` as violations, if it is a list of `{path, errors}`.
    pub fn violations(&self) -> Option<Vec<Violation>> {
        serde_json::from_value(self.details.clone()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_app_info_reads_as_its_definition_plus_counts_and_tasks() {
        let v = json!({
            "id": "/grp/web", "cmd": "sleep 100", "instances": 2, "cpus": 0.5, "mem": 64,
            "labels": {"a": "b"}, "version": "2024-01-02T03:04:05.678Z",
            "versionInfo": {"lastScalingAt": "2024-01-02T03:04:05.678Z",
                "lastConfigChangeAt": "2024-01-01T00:00:00.000Z"},
            "tasksStaged": 0, "tasksRunning": 1, "tasksHealthy": 0, "tasksUnhealthy": 0,
            "deployments": [{"id": "d-1"}],
            "tasks": [{"id": "grp_web.instance-1._app.1", "appId": "/grp/web", "host": "h",
                "slaveId": "S0", "state": "TASK_RUNNING", "stagedAt": "2024-01-02T03:04:05.678Z",
                "version": "2024-01-02T03:04:05.678Z", "ports": [31000], "servicePorts": [10000],
                "ipAddresses": [{"ipAddress": "10.0.0.1", "protocol": "IPv4"}],
                "localVolumes": [], "role": "*",
                "healthCheckResults": [{"alive": true, "consecutiveFailures": 0,
                    "instanceId": "grp_web.instance-1", "taskId": "grp_web.instance-1._app.1"}]},
                {"id": "t2", "appId": "/grp/web", "state": "TASK_FROM_THE_FUTURE"}],
            "lastTaskFailure": {"appId": "/grp/web", "host": "h", "message": "boom",
                "state": "TASK_FAILED", "taskId": "t0", "timestamp": "2024-01-02T03:04:05.678Z",
                "version": "2024-01-02T03:04:05.678Z", "slaveId": "S0"}
        });
        let app: App = serde_json::from_value(v).expect("an AppInfo");
        assert_eq!(app.definition.id, PathId::parse("/grp/web"));
        assert_eq!(app.definition.instances, 2);
        assert_eq!(app.definition.labels["a"], "b");
        assert_eq!(app.tasks_running, 1);
        assert_eq!(app.deployments, [DeploymentRef { id: "d-1".into() }]);
        let tasks = app.tasks.as_deref().expect("tasks embedded");
        assert_eq!(tasks[0].state, TaskState::Running);
        assert_eq!(tasks[0].agent_id, "S0");
        assert_eq!(tasks[0].ip_addresses[0].ip_address, "10.0.0.1");
        assert!(tasks[0].health_check_results[0].alive);
        assert_eq!(tasks[1].state, TaskState::Unknown);
        let failure = app.last_task_failure.as_ref().expect("a failure");
        assert_eq!(failure.state, TaskState::Failed);
        // Written back, the counts sit next to the definition's fields, as Marathon has them.
        let out = serde_json::to_value(&app).expect("serializes");
        assert_eq!(out["id"], "/grp/web");
        assert_eq!(out["tasksRunning"], 1);
        assert_eq!(out["tasks"][0]["slaveId"], "S0");
        assert_eq!(out["tasks"][0]["state"], "TASK_RUNNING");
    }

    #[test]
    fn deployments_keep_unknown_action_names() {
        let v = json!([{
            "id": "d", "version": "2024-01-02T03:04:05.678Z", "affectedApps": ["/a"],
            "affectedPods": [], "steps": [{"actions": [{"action": "StartApplication", "app": "/a"},
                {"action": "StartPod", "app": "/p"}]}],
            "currentActions": [{"action": "ScaleApplication", "app": "/a",
                "readinessCheckResults": []}],
            "currentStep": 1, "totalSteps": 1
        }]);
        let ds: Vec<Deployment> = serde_json::from_value(v).expect("deployments");
        let actions = &ds[0].steps[0].actions;
        assert_eq!(actions[0].action, DeploymentActionKind::StartApplication);
        assert_eq!(
            actions[1].action,
            DeploymentActionKind::Other("StartPod".into())
        );
        assert_eq!(
            ds[0].current_actions[0].action,
            DeploymentActionKind::ScaleApplication
        );
        let out = serde_json::to_value(&ds[0].steps).expect("serializes");
        assert_eq!(out[0]["actions"][1]["action"], "StartPod");
    }

    #[test]
    fn groups_nest_and_error_bodies_yield_violations() {
        let g: Group = serde_json::from_value(json!({"id": "/g", "apps": [{"id": "/g/a",
            "cmd": "x"}], "groups": [{"id": "/g/h", "apps": [], "groups": [],
            "dependencies": ["/g"], "version": "2024-01-02T03:04:05.678Z"}],
            "dependencies": [], "version": "2024-01-02T03:04:05.678Z", "pods": []}))
        .expect("a group");
        assert_eq!(g.apps[0].id, PathId::parse("/g/a"));
        assert_eq!(g.groups[0].dependencies, ["/g"]);
        let body: ErrorBody = serde_json::from_value(json!({"message": "Object is not valid",
            "details": [{"path": "/cpus", "errors": ["got 0, expected 0.001 or more"]}]}))
        .expect("an error body");
        assert_eq!(
            body.violations(),
            Some(vec![Violation::new(
                "/cpus",
                "got 0, expected 0.001 or more"
            )])
        );
        let parser: ErrorBody =
            serde_json::from_value(json!({"message": "Invalid JSON", "details": "EOF"}))
                .expect("an error body");
        assert_eq!(parser.violations(), None);
    }
}
