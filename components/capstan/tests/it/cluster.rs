//! Daemons of the real binary working together, as processes on loopback: what no single
//! crate's tests can show because daemon crates never depend on each other.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use capstan_coord_client::{Client, ListRequest};
use capstan_testkit::{CapstanProcess, ContainerCleanup, free_ports, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// An unmodified pymesos scheduler and pymesos custom executor from PyPI, on a master and an
/// agent started from config: the executor registers over the agent's executor API, runs its
/// task, exchanges framework messages with the scheduler both ways and reports the kill; a
/// Docker task of the offline image runs to completion beside it. No container is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_scheduler_and_custom_executor_run_on_a_master_and_a_docker_agent()
-> anyhow::Result<()> {
    let python = capstan_testkit::pymesos_python().await?;
    let docker = capstan_testkit::docker()?;
    capstan_testkit::ensure_image(&docker, "capstan/busybox").await?;
    let containers = ContainerCleanup::new();
    let work = capstan_testkit::temp_dir()?;
    let ports = free_ports(2)?;
    let (master_addr, agent_addr) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    );
    let mut master = CapstanProcess::spawn(
        &["daemon", "master"],
        json!({"master": {"listen": master_addr}}),
    )
    .await?;
    let mut agent = CapstanProcess::spawn(
        &["daemon", "agent"],
        json!({"agent": {
            "listen": agent_addr,
            "hostname": "127.0.0.1",
            "work_dir": work.path().join("agent"),
            "masters": [master_addr],
            "resources": {"cpus": 2, "mem": 1024, "ports": "[31000-31099]"},
            "docker": {"extra_labels": containers.labels()},
        }}),
    )
    .await?;

    let scheduler = tokio::process::Command::new(&python)
        .arg(tests_dir().join("pymesos/executor_scheduler.py"))
        .arg(&master_addr)
        .arg(&python)
        .arg(tests_dir().join("pymesos/executor.py"))
        .env("TEST_TIMEOUT", "60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = scheduler.wait_with_output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let explain = || {
        format!(
            "scheduler stdout:\n{stdout}\nscheduler stderr:\n{}\nagent log:\n{}\nmaster log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            agent.log_tail(),
            master.log_tail()
        )
    };
    assert!(
        out.status.success(),
        "pymesos scheduler failed\n{}",
        explain()
    );
    for line in [
        "REGISTERED",
        "UPDATE in-executor TASK_RUNNING",
        "DATA task-data",
        "MESSAGE pyexec pong:ping",
        "UPDATE in-executor TASK_KILLED",
        "UPDATE in-docker TASK_RUNNING",
        "UPDATE in-docker TASK_FINISHED",
        "RESULT OK",
    ] {
        assert!(stdout.contains(line), "missing {line:?}\n{}", explain());
    }
    // The executor's output went to its sandbox, and the Docker task's output to its own.
    let stdout_of = |needle: &str| {
        walk(&work.path().join("agent"))
            .into_iter()
            .filter(|p| p.ends_with("stdout") || p.ends_with("stderr"))
            .any(|p| std::fs::read_to_string(p).is_ok_and(|s| s.contains(needle)))
    };
    assert!(stdout_of("hello from docker"), "{}", explain());
    assert!(stdout_of("registered on"), "executor log\n{}", explain());

    // driver.stop() tears the framework down: the executor process and the container go.
    wait_until("no container left", WAIT, async || {
        capstan_testkit::remove_test_containers(&docker, containers.run_id())
            .await
            .is_ok_and(|n| n == 0)
    })
    .await?;
    agent.terminate().await?;
    master.terminate().await?;
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Three `capstan coord` processes; the leader is killed with SIGKILL (no chance to flush)
/// three times over while a client keeps writing: every acknowledged write is still there,
/// and the killed members come back from their data directories and catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coord_leaders_killed_with_sigkill_lose_no_acknowledged_write() -> anyhow::Result<()> {
    let data = capstan_testkit::temp_dir()?;
    let ports = free_ports(3)?;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let members: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"id": i + 1, "addr": a}))
        .collect();
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let config = json!({"coord": {
            "id": i + 1,
            "listen": addr,
            "data_dir": data.path().join(format!("m{}", i + 1)),
            "members": members,
            "peer_secret": "the sigkill test cluster's peer secret",
        }});
        nodes.push(CapstanProcess::spawn(&["daemon", "coord"], config).await?);
    }
    let client = Client::new(addrs.iter().map(String::as_str))?;
    let mut acknowledged = Vec::new();
    let mut n = 0;
    for round in 0..3 {
        // Write until some writes have landed in this round.
        let target = acknowledged.len() + 20;
        while acknowledged.len() < target {
            n += 1;
            let key = format!("/sigkill/{n:04}");
            if client.put(&key, format!("v{n}")).await.is_ok() {
                acknowledged.push(key);
            }
        }
        let leader = leader_of(&client).await?;
        let node = &mut nodes[leader - 1];
        node.kill()
            .with_context(|| format!("kill -9 member {leader}"))?;
        // A new leader takes writes again.
        wait_until(
            &format!("a new leader after killing member {leader} (round {round})"),
            WAIT,
            async || {
                n += 1;
                let key = format!("/sigkill/{n:04}");
                let ok = client.put(&key, format!("v{n}")).await.is_ok();
                if ok {
                    acknowledged.push(key);
                }
                ok
            },
        )
        .await?;
        node.restart().await?;
    }
    // Every acknowledged write is readable (linearizably) from the cluster...
    for key in &acknowledged {
        let kv = client.get(key).await?;
        assert!(kv.is_some(), "acknowledged write {key} was lost");
    }
    // ... and every member, restarted from its own data, holds them all.
    for (i, addr) in addrs.iter().enumerate() {
        let one = Client::new([addr.as_str()])?;
        wait_until(&format!("member {} caught up", i + 1), WAIT, async || {
            // A serializable read answers from this member's own state machine.
            let Ok(page) = one
                .list(ListRequest {
                    prefix: "/sigkill/".into(),
                    serializable: true,
                    keys_only: true,
                    ..Default::default()
                })
                .await
            else {
                return false;
            };
            let have: std::collections::BTreeSet<&str> =
                page.kvs.iter().map(|kv| kv.key.as_str()).collect();
            acknowledged.iter().all(|k| have.contains(k.as_str()))
        })
        .await?;
    }
    for node in &mut nodes {
        node.terminate().await?;
    }
    Ok(())
}

async fn leader_of(client: &Client) -> anyhow::Result<usize> {
    let mut leader = None;
    wait_until("a coord leader", WAIT, async || {
        leader = client.status().await.ok().and_then(|s| s.leader);
        leader.is_some()
    })
    .await?;
    Ok(leader.context("leader")? as usize)
}
