use std::time::Duration;

use capstan_proto::mesos::v1::{TaskState, task_status::Reason};
use capstan_testkit::{free_port, wait_until};
use serde_json::json;

use super::harness::*;

#[tokio::test]
async fn bridge_task_publishes_its_port_mapping_and_is_reachable() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let host_port = free_port().unwrap();
    let t = task(
        "web",
        json!({
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                ports_resource(&[host_port])
            ],
            "container": {"type": "DOCKER", "docker": {
                "image": "capstan/http", "network": "BRIDGE",
                "port_mappings": [{"host_port": host_port, "container_port": 80, "protocol": "tcp"}]
            }}
        }),
    );
    agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    let view = wait_state(&agent, "web", TaskState::TaskRunning).await;

    // The container's bridge IP is reported in the RUNNING status.
    let running = view
        .statuses
        .iter()
        .find(|s| s.state == TaskState::TaskRunning as i32)
        .unwrap();
    let nets = &running.container_status.as_ref().unwrap().network_infos;
    let ip = nets[0].ip_addresses[0].ip_address.clone().unwrap();
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok() && ip != "127.0.0.1",
        "{ip}"
    );

    let url = format!("http://127.0.0.1:{host_port}/");
    wait_until("the published port answers", DEADLINE, async || {
        let r = reqwest::get(&url).await?;
        anyhow::ensure!(r.status() == 200, "status {}", r.status());
        Ok(())
    })
    .await
    .unwrap();

    agent.tasks().kill("web", None).await.unwrap();
    wait_state(&agent, "web", TaskState::TaskKilled).await;
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn host_network_task_listens_on_its_offered_port() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let port = free_port().unwrap();
    let t = task(
        "host-web",
        json!({
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                ports_resource(&[port])
            ],
            "container": {"type": "DOCKER", "docker": {"image": "capstan/http", "network": "HOST"}}
        }),
    );
    agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    let view = wait_state(&agent, "host-web", TaskState::TaskRunning).await;
    // A host-networked task is reachable on the agent's IP, and says so.
    let running = view.statuses.last().unwrap();
    let nets = &running.container_status.as_ref().unwrap().network_infos;
    assert_eq!(
        nets[0].ip_addresses[0].ip_address.as_deref(),
        Some("127.0.0.1")
    );
    let url = format!("http://127.0.0.1:{port}/health");
    wait_until("the task answers on PORT0", DEADLINE, async || {
        let r = reqwest::get(&url).await?;
        anyhow::ensure!(r.status() == 200, "status {}", r.status());
        Ok(())
    })
    .await
    .unwrap();
    agent
        .tasks()
        .kill("host-web", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    wait_state(&agent, "host-web", TaskState::TaskKilled).await;
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn shell_args_and_image_default_commands_follow_mesos_semantics() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let shell = docker_task(
        "shell",
        "capstan/busybox",
        Some("echo hello world | tr a-z A-Z; echo oops >&2"),
    );
    let args = task(
        "args",
        json!({
            "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
            "command": {"shell": false, "value": "echo", "arguments": ["a  b", "$HOME|x"]}
        }),
    );
    // capstan/busybox's own CMD is `sh`, which exits at once without a terminal.
    let default = docker_task("default", "capstan/busybox", None);
    for t in [shell, args, default] {
        agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    }
    let shell = wait_state(&agent, "shell", TaskState::TaskFinished).await;
    assert_eq!(sandbox_file(&shell, "stdout"), "HELLO WORLD\n");
    assert_eq!(sandbox_file(&shell, "stderr"), "oops\n");
    let args = wait_state(&agent, "args", TaskState::TaskFinished).await;
    // No shell: arguments arrive verbatim, nothing is expanded or split.
    assert_eq!(sandbox_file(&args, "stdout"), "a  b $HOME|x\n");
    let default = wait_state(&agent, "default", TaskState::TaskFinished).await;
    assert_eq!(last_message(&default), "Command exited with status 0");
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn exit_codes_become_finished_or_failed_with_the_status_in_the_message() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    launch_docker(&agent, "ok", "capstan/busybox", Some("exit 0")).await;
    launch_docker(
        &agent,
        "bad",
        "capstan/busybox",
        Some("echo failing; exit 3"),
    )
    .await;
    wait_state(&agent, "ok", TaskState::TaskFinished).await;
    let bad = wait_state(&agent, "bad", TaskState::TaskFailed).await;
    assert!(
        last_message(&bad).contains("status 3"),
        "{}",
        last_message(&bad)
    );
    let last = bad.statuses.last().unwrap();
    assert_eq!(last.reason, Some(Reason::CommandExecutorFailed as i32));
    assert_eq!(sandbox_file(&bad, "stdout"), "failing\n");
    // STARTING, RUNNING, FAILED, each with a uuid to acknowledge.
    let states: Vec<i32> = bad.statuses.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        vec![
            TaskState::TaskStarting as i32,
            TaskState::TaskRunning as i32,
            TaskState::TaskFailed as i32
        ]
    );
    assert!(
        bad.statuses
            .iter()
            .all(|s| s.uuid.as_ref().is_some_and(|u| u.len() == 16))
    );
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn kill_sends_sigterm_then_sigkill_after_the_grace_period() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let polite = task(
        "polite",
        json!({
            "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
            "command": {"value": "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done"},
            "kill_policy": {"grace_period": {"nanoseconds": 30_000_000_000i64}}
        }),
    );
    let stubborn = docker_task(
        "stubborn",
        "capstan/busybox",
        Some("trap '' TERM; echo ready; while true; do sleep 0.1; done"),
    );
    agent.tasks().launch(FRAMEWORK, polite).await.unwrap();
    agent.tasks().launch(FRAMEWORK, stubborn).await.unwrap();
    for id in ["polite", "stubborn"] {
        let t = wait_state(&agent, id, TaskState::TaskRunning).await;
        wait_until("the trap is installed", DEADLINE, async || {
            sandbox_file(&t, "stdout").contains("ready")
        })
        .await
        .unwrap();
    }
    agent.tasks().kill("polite", None).await.unwrap();
    agent
        .tasks()
        .kill("stubborn", Some(Duration::from_millis(500)))
        .await
        .unwrap();
    let polite = wait_state(&agent, "polite", TaskState::TaskKilled).await;
    assert!(sandbox_file(&polite, "stdout").contains("got-term"));
    let stubborn = wait_state(&agent, "stubborn", TaskState::TaskKilled).await;
    // It ignored SIGTERM, so SIGKILL ended it.
    assert!(
        last_message(&stubborn).contains("137"),
        "{}",
        last_message(&stubborn)
    );
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn a_container_killed_by_the_oom_killer_fails_with_the_memory_limitation_reason() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let t = task(
        "hog",
        json!({
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 16}}
            ],
            "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
            // dd's 256 MB block buffer is filled from /dev/zero: far above 16 MB.
            "command": {"value": "dd if=/dev/zero of=/dev/null bs=256M count=4"}
        }),
    );
    agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    let hog = wait_state(&agent, "hog", TaskState::TaskFailed).await;
    let last = hog.statuses.last().unwrap();
    assert_eq!(
        last.reason,
        Some(Reason::ContainerLimitationMemory as i32),
        "{}",
        last_message(&hog)
    );
    assert!(
        last_message(&hog).contains("Memory limit"),
        "{}",
        last_message(&hog)
    );
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn a_missing_image_fails_the_launch_naming_the_image_and_leaves_no_container() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let started = std::time::Instant::now();
    launch_docker(&agent, "ghost", "capstan/does-not-exist:1", Some("true")).await;
    let ghost = wait_state(&agent, "ghost", TaskState::TaskFailed).await;
    let last = ghost.statuses.last().unwrap();
    assert_eq!(last.reason, Some(Reason::ContainerLaunchFailed as i32));
    assert!(
        last_message(&ghost).contains("capstan/does-not-exist:1"),
        "{}",
        last_message(&ghost)
    );
    // Bounded by the configured pull timeout (20 s), never hanging.
    assert!(started.elapsed() < Duration::from_secs(50));
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn invalid_tasks_end_in_error_or_failure_without_hurting_the_agent() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let privileged = task(
        "priv",
        json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox", "privileged": true}},
               "command": {"value": "true"}}),
    );
    let bad_volume = task(
        "vol",
        json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"},
                             "volumes": [{"container_path": "/x", "host_path": "/tmp/../etc", "mode": "RW"}]},
               "command": {"value": "true"}}),
    );
    let bad_param = task(
        "param",
        json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox",
                             "parameters": [{"key": "pid", "value": "host"}]}},
               "command": {"value": "true"}}),
    );
    // The host's root and the engine socket: the container policy allows no host path by
    // default (F3 of the reliability probe: root on every agent through `volumes`).
    let host_root = task(
        "root",
        json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"},
                             "volumes": [{"container_path": "/host", "host_path": "/", "mode": "RW"}]},
               "command": {"value": "true"}}),
    );
    let engine = task(
        "sock",
        json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"},
                             "volumes": [{"container_path": "/s", "host_path": "/var/run/docker.sock", "mode": "RW"}]},
               "command": {"value": "true"}}),
    );
    let shadow = task(
        "shadow",
        json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
               "command": {"value": "true", "uris": [{"value": "file:///etc/shadow"}]}}),
    );
    let unknown_net = task(
        "net",
        json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox", "network": "USER"},
                             "network_infos": [{"name": "capstan-no-such-network"}]},
               "command": {"value": "true"}}),
    );
    for t in [
        privileged,
        bad_volume,
        bad_param,
        host_root,
        engine,
        shadow,
        unknown_net,
    ] {
        agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    }
    for (id, needle) in [
        ("priv", "privileged"),
        ("vol", ".."),
        ("param", "pid"),
        ("root", "would give the container the host"),
        ("sock", "docker.sock"),
    ] {
        let t = wait_state(&agent, id, TaskState::TaskError).await;
        assert!(
            last_message(&t).contains(needle),
            "{id}: {}",
            last_message(&t)
        );
        assert_eq!(
            t.statuses.last().unwrap().reason,
            Some(Reason::TaskInvalid as i32)
        );
    }
    let shadow = wait_state(&agent, "shadow", TaskState::TaskFailed).await;
    assert!(
        last_message(&shadow).contains("/etc/shadow")
            && last_message(&shadow).contains("not allowed"),
        "{}",
        last_message(&shadow)
    );
    let net = wait_state(&agent, "net", TaskState::TaskFailed).await;
    assert!(
        last_message(&net).contains("capstan-no-such-network"),
        "{}",
        last_message(&net)
    );

    // A duplicate id of a live task is refused; the agent still runs good tasks.
    launch_docker(&agent, "good", "capstan/busybox", Some("sleep 30")).await;
    let dup = agent
        .tasks()
        .launch(
            FRAMEWORK,
            docker_task("good", "capstan/busybox", Some("true")),
        )
        .await;
    assert!(dup.is_err());
    wait_state(&agent, "good", TaskState::TaskRunning).await;
    agent
        .tasks()
        .kill("good", Some(Duration::ZERO))
        .await
        .unwrap();
    wait_state(&agent, "good", TaskState::TaskKilled).await;
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn environment_volumes_and_live_resource_updates_reach_the_container() {
    let scope = Scope::new().await;
    let host_dir = scope.work_dir().join("shared");
    std::fs::create_dir_all(&host_dir).unwrap();
    let mut config = scope.config();
    config.docker.allowed_host_paths = vec![host_dir.to_string_lossy().into_owned()];
    let agent = scope.start_with(config).await;
    std::fs::write(host_dir.join("in.txt"), "from-host").unwrap();
    let port = free_port().unwrap();
    let t = task(
        "env",
        json!({
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.2}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                ports_resource(&[port])
            ],
            "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"},
                          "volumes": [{"container_path": "/data", "host_path": host_dir.to_str().unwrap(), "mode": "RO"}]},
            "command": {"value": "echo \"$MESOS_TASK_ID $HOST $PORT0 $PORTS $MY_VAR $MESOS_SANDBOX\"; cat /data/in.txt; echo; touch /data/x 2>/dev/null || echo read-only; sleep 300",
                        "environment": {"variables": [{"name": "MY_VAR", "value": "mine"}]}}
        }),
    );
    agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    let view = wait_state(&agent, "env", TaskState::TaskRunning).await;
    let out = wait_until("output", DEADLINE, async || {
        let s = sandbox_file(&view, "stdout");
        s.contains("read-only").then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(
        out,
        format!(
            "env agent-under-test {port} {port} mine /mnt/mesos/sandbox\nfrom-host\nread-only\n"
        )
    );

    agent
        .tasks()
        .update_resources("env", 0.5, 64.0)
        .await
        .unwrap();
    let inspect = scope
        .docker
        .inspect_container(&view.container.name, None)
        .await
        .unwrap();
    let hc = inspect.host_config.unwrap();
    assert_eq!(hc.memory, Some(64 << 20));
    assert_eq!(hc.cpu_shares, Some(512));
    // Least privilege by default: no setuid escalation, a process cap, not privileged.
    assert_eq!(
        hc.security_opt.as_deref(),
        Some(&["no-new-privileges:true".to_owned()][..])
    );
    assert_eq!(hc.pids_limit, Some(4096));
    assert_eq!(hc.privileged, Some(false));
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels["capstan.task_id"], "env");
    assert_eq!(labels["capstan.framework_id"], FRAMEWORK);
    assert_eq!(labels["capstan.agent_id"], agent.agent_id());
    assert_eq!(
        view.container.name,
        format!("mesos-{}.{}", agent.agent_id(), view.container.container_id)
    );

    agent
        .tasks()
        .kill("env", Some(Duration::ZERO))
        .await
        .unwrap();
    wait_state(&agent, "env", TaskState::TaskKilled).await;
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn frameworks_with_the_task_killing_state_capability_see_task_killing() {
    let scope = Scope::new().await;
    let agent = scope.start().await;
    let framework: capstan_proto::mesos::v1::FrameworkInfo = capstan_proto::from_json(&json!({
        "user": "root", "name": "aware", "id": {"value": FRAMEWORK},
        "capabilities": [{"type": "TASK_KILLING_STATE"}]
    }))
    .unwrap();
    let t = docker_task("aware", "capstan/busybox", Some("sleep 600"));
    agent
        .tasks()
        .launch_with_framework(framework, t)
        .await
        .unwrap();
    wait_state(&agent, "aware", TaskState::TaskRunning).await;
    agent
        .tasks()
        .kill("aware", Some(Duration::ZERO))
        .await
        .unwrap();
    let killed = wait_state(&agent, "aware", TaskState::TaskKilled).await;
    let states: Vec<i32> = killed.statuses.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        vec![
            TaskState::TaskStarting as i32,
            TaskState::TaskRunning as i32,
            TaskState::TaskKilling as i32,
            TaskState::TaskKilled as i32
        ]
    );
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn user_network_tasks_join_the_named_network_and_report_its_address() {
    let scope = Scope::new().await;
    let network = format!("capstan-test-net-{}", std::process::id());
    scope
        .docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            labels: Some(scope.cleanup.labels()),
            ..Default::default()
        })
        .await
        .unwrap();
    let agent = scope.start().await;
    let t = task(
        "on-net",
        json!({
            "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox", "network": "USER"},
                          "network_infos": [{"name": network}]},
            "command": {"value": "sleep 600"}
        }),
    );
    agent.tasks().launch(FRAMEWORK, t).await.unwrap();
    let view = wait_state(&agent, "on-net", TaskState::TaskRunning).await;
    let nets = &view
        .statuses
        .last()
        .unwrap()
        .container_status
        .as_ref()
        .unwrap()
        .network_infos;
    assert_eq!(nets[0].name.as_deref(), Some(network.as_str()));
    let ip = nets[0].ip_addresses[0].ip_address.clone().unwrap();
    let inspect = scope.docker.inspect_network(&network, None).await.unwrap();
    let subnet = inspect.ipam.unwrap().config.unwrap()[0]
        .subnet
        .clone()
        .unwrap();
    let prefix = subnet.split('.').take(2).collect::<Vec<_>>().join(".");
    assert!(ip.starts_with(&prefix), "{ip} not in {subnet}");
    agent
        .tasks()
        .kill("on-net", Some(Duration::ZERO))
        .await
        .unwrap();
    wait_state(&agent, "on-net", TaskState::TaskKilled).await;
    scope.assert_no_containers_left().await;
    scope.docker.remove_network(&network).await.unwrap();
    agent.shutdown().await;
}

#[tokio::test]
async fn command_uris_are_fetched_into_the_sandbox_before_launch() {
    let scope = Scope::new().await;
    let app = axum::Router::new().route(
        "/files/greeting.txt",
        axum::routing::get(async || "fetched!\n"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let files = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let agent = scope.start().await;
    let good = task(
        "fetching",
        json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
               "command": {"value": "cat $MESOS_SANDBOX/greeting.txt",
                           "uris": [{"value": format!("http://{files}/files/greeting.txt")}]}}),
    );
    let bad = task(
        "fetch-fails",
        json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"}},
               "command": {"value": "true", "uris": [{"value": format!("http://{files}/files/missing.tgz")}]}}),
    );
    agent.tasks().launch(FRAMEWORK, good).await.unwrap();
    agent.tasks().launch(FRAMEWORK, bad).await.unwrap();
    let done = wait_state(&agent, "fetching", TaskState::TaskFinished).await;
    assert_eq!(sandbox_file(&done, "stdout"), "fetched!\n");
    let failed = wait_state(&agent, "fetch-fails", TaskState::TaskFailed).await;
    assert!(
        last_message(&failed).contains("missing.tgz"),
        "{}",
        last_message(&failed)
    );
    assert_eq!(
        failed.statuses.last().unwrap().reason,
        Some(Reason::ContainerLaunchFailed as i32)
    );
    scope.assert_no_containers_left().await;
    agent.shutdown().await;
}
