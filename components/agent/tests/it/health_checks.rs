use capstan_proto::mesos::v1::{TaskState, task_status::Reason};
use capstan_testkit::{free_port, wait_until};
use serde_json::json;

use super::harness::*;

fn fast(mut check: serde_json::Value) -> serde_json::Value {
    for (k, v) in [
        ("delay_seconds", json!(0)),
        ("interval_seconds", json!(0.2)),
        ("timeout_seconds", json!(2)),
        ("grace_period_seconds", json!(0)),
        ("consecutive_failures", json!(2)),
    ] {
        check[k] = v;
    }
    check
}

#[tokio::test]
async fn http_tcp_and_command_health_checks_report_health_and_kill_failing_tasks() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let host_port = free_port().unwrap();
    let http = task(
        "http-ok",
        json!({
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                ports_resource(&[host_port])
            ],
            "container": {"type": "DOCKER", "docker": {"image": "capstan/http", "network": "BRIDGE",
                "port_mappings": [{"host_port": host_port, "container_port": 80}]}},
            "health_check": fast(json!({"type": "HTTP", "http": {"port": host_port, "path": "/health"}}))
        }),
    );
    let command = task(
        "cmd-ok",
        json!({
            "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
            "command": {"value": "touch /tmp/alive; sleep 600"},
            "health_check": fast(json!({"type": "COMMAND", "command": {"value": "test -f /tmp/alive"}}))
        }),
    );
    let tcp_bad = task(
        "tcp-bad",
        json!({
            "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox", "network": "BRIDGE"}},
            "command": {"value": "sleep 600"},
            "health_check": fast(json!({"type": "TCP", "tcp": {"port": 9}}))
        }),
    );
    for t in [http, command, tcp_bad] {
        agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    }
    for id in ["http-ok", "cmd-ok"] {
        wait_until(&format!("{id} healthy"), DEADLINE, async || {
            let snap = agent.tasks().snapshot();
            let t = snap.task(id)?;
            let s = t.statuses.last()?;
            (s.healthy == Some(true)
                && s.state == TaskState::TaskRunning as i32
                && s.reason == Some(Reason::TaskHealthCheckStatusUpdated as i32))
            .then_some(())
        })
        .await
        .unwrap();
    }
    // Nothing listens on port 9: unhealthy, then killed after two failures.
    let bad = wait_state(&agent, "tcp-bad", TaskState::TaskKilled).await;
    assert!(bad.statuses.iter().any(|s| s.healthy == Some(false)));

    for id in ["http-ok", "cmd-ok"] {
        agent
            .tasks()
            .kill(id, Some(std::time::Duration::ZERO))
            .await
            .unwrap();
        wait_state(&agent, id, TaskState::TaskKilled).await;
    }
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}
