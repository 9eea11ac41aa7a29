use std::time::Duration;

use capstan_proto::mesos::v1::TaskState;
use serde_json::Value;

use super::harness::*;

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn state_health_metrics_containers_and_files_endpoints_describe_the_agent() {
    let scope = Scope::new().await;
    let mut config = scope.config();
    config.attributes = vec!["rack:r1".into(), "level:2".into()];
    config.public = true;
    let agent = scope.start_with(config).await;
    let base = format!("http://{}", agent.local_addr());
    launch_docker(
        &agent,
        "svc",
        "capstan/busybox",
        Some("echo to-the-sandbox; sleep 600"),
    )
    .await;
    let view = wait_state(&agent, "svc", TaskState::TaskRunning).await;

    assert_eq!(
        reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .status(),
        200
    );

    let (code, state) = get_json(&format!("{base}/state")).await;
    assert_eq!(code, 200);
    assert_eq!(state["id"], agent.agent_id());
    assert_eq!(state["hostname"], "agent-under-test");
    assert_eq!(state["attributes"]["rack"], "r1");
    assert_eq!(state["attributes"]["level"], 2.0);
    assert_eq!(state["resources"]["ports"], "[31000-32000]");
    assert!(
        state["pid"]
            .as_str()
            .unwrap()
            .starts_with("slave(1)@127.0.0.1:")
    );
    let task = &state["frameworks"][0]["executors"][0]["tasks"][0];
    assert_eq!(task["id"], "svc");
    assert_eq!(task["state"], "TASK_RUNNING");
    assert_eq!(task["slave_id"], agent.agent_id());
    assert_eq!(task["statuses"][1]["state"], "TASK_RUNNING");
    let directory = state["frameworks"][0]["executors"][0]["directory"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(directory.ends_with(&format!(
        "/slaves/{}/frameworks/{FRAMEWORK}/executors/svc/runs/{}",
        agent.agent_id(),
        view.container.container_id
    )));

    let (_, metrics) = get_json(&format!("{base}/metrics/snapshot")).await;
    assert_eq!(metrics["slave/tasks_running"], 1);
    assert_eq!(metrics["containerizer/docker/up"], 1);

    let (_, containers) = get_json(&format!("{base}/containers")).await;
    assert_eq!(
        containers[0]["container_id"],
        view.container.container_id.as_str()
    );
    assert_eq!(containers[0]["framework_id"], FRAMEWORK);
    assert_eq!(
        containers[0]["statistics"]["mem_limit_bytes"],
        32 * 1024 * 1024
    );
    let (_, version) = get_json(&format!("{base}/version")).await;
    assert_eq!(version["version"], "1.11.0");

    let (code, browse) = get_json(&format!("{base}/files/browse?path={directory}")).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = browse
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(names.iter().any(|p| p.ends_with("/stdout")), "{names:?}");
    let read = capstan_testkit::wait_until("stdout served", DEADLINE, async || {
        let (_, r) = get_json(&format!(
            "{base}/files/read?path={directory}/stdout&offset=0"
        ))
        .await;
        (r["data"] == "to-the-sandbox\n").then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(read["offset"], 0);
    let (_, size) = get_json(&format!(
        "{base}/files/read?path={directory}/stdout&offset=-1"
    ))
    .await;
    assert_eq!(size["offset"], 15);
    // Nothing outside the agent's sandboxes is served.
    let (code, _) = get_json(&format!("{base}/files/read?path=/etc/passwd")).await;
    assert_eq!(code, 404);
    let (code, _) = get_json(&format!("{base}/files/read")).await;
    assert_eq!(code, 400);

    agent
        .tasks()
        .kill("svc", Some(Duration::ZERO))
        .await
        .unwrap();
    wait_state(&agent, "svc", TaskState::TaskKilled).await;
    let (_, state) = get_json(&format!("{base}/state")).await;
    let completed = &state["frameworks"][0]["completed_executors"][0]["completed_tasks"][0];
    assert_eq!(completed["state"], "TASK_KILLED");
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}
