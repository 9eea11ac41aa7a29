//! Records follow the operator event stream of the leading master.

use capstan_testkit::wait_until;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use capstan_dns::Config;

use super::support::*;

#[tokio::test]
async fn a_task_that_starts_in_the_stream_is_resolvable_at_once_and_gone_when_killed()
-> anyhow::Result<()> {
    let master = FakeMaster::start(Mode::Leader(cluster_state(vec![]))).await?;
    let server = start(config(vec![master.host_port()], vec![])).await?;
    let addr = dns(&server);
    wait_until("leader.mesos resolves", WAIT, async || {
        resolves_to(addr, "leader.mesos.", &["127.0.0.1"]).await
    })
    .await?;
    assert_eq!(master.subscriptions(), 1);

    master.send(task_added(task(
        "web.1",
        "web",
        "TASK_STAGING",
        "9.0.0.7",
        &[31000],
    )));
    let m = ask(addr, "web.marathon.mesos.", RecordType::A).await?;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "not running yet"
    );

    master.send(task_updated("web.1", "TASK_RUNNING", "9.0.0.7"));
    wait_until("web.marathon.mesos resolves", WAIT, async || {
        resolves_to(addr, "web.marathon.mesos.", &["9.0.0.7"]).await
    })
    .await?;
    let srv = ask(addr, "_web._tcp.marathon.mesos.", RecordType::SRV).await?;
    assert_eq!(srv.answers.len(), 1);

    master.send(task_updated("web.1", "TASK_KILLED", "9.0.0.7"));
    wait_until("web.marathon.mesos is gone", WAIT, async || {
        is_nxdomain(addr, "web.marathon.mesos.").await
    })
    .await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_follower_follows_a_redirect_to_the_leader() -> anyhow::Result<()> {
    let leader = FakeMaster::start(Mode::Leader(cluster_state(vec![task(
        "api.1",
        "api",
        "TASK_RUNNING",
        "9.0.0.8",
        &[],
    )])))
    .await?;
    let follower = FakeMaster::start(Mode::RedirectTo(leader.addr)).await?;
    let server = start(config(
        vec![follower.host_port(), leader.host_port()],
        vec![],
    ))
    .await?;
    let addr = dns(&server);
    wait_until("api.marathon.mesos resolves", WAIT, async || {
        resolves_to(addr, "api.marathon.mesos.", &["9.0.0.8"]).await
    })
    .await?;
    let m = ask(addr, "_leader._tcp.mesos.", RecordType::SRV).await?;
    let ports: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect();
    assert_eq!(ports, [leader.addr.port()]);
    // Both configured masters are named; the leader is not listed twice.
    assert_eq!(
        ips(&ask(addr, "master1.mesos.", RecordType::A).await?),
        ["127.0.0.1"]
    );
    let m2 = ask(addr, "master2.mesos.", RecordType::A).await?;
    assert_eq!(m2.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn records_survive_while_no_master_answers_and_resync_when_one_does() -> anyhow::Result<()> {
    let master = FakeMaster::start(Mode::Leader(cluster_state(vec![task(
        "old.1",
        "old",
        "TASK_RUNNING",
        "9.0.0.1",
        &[],
    )])))
    .await?;
    let port_addr = master.addr;
    let server = start(config(vec![master.host_port()], vec![])).await?;
    let addr = dns(&server);
    wait_until("old.marathon.mesos resolves", WAIT, async || {
        resolves_to(addr, "old.marathon.mesos.", &["9.0.0.1"]).await
    })
    .await?;

    master.kill();
    drop(master);
    let status = server.master_status();
    wait_until(
        "the follower notices the master is gone",
        WAIT,
        async || !status.borrow().subscribed,
    )
    .await?;
    // With the master gone, the last known records are still served.
    let m = ask(addr, "old.marathon.mesos.", RecordType::A).await?;
    assert_eq!(ips(&m), ["9.0.0.1"]);

    // A master comes back on the same address with a different cluster: full resync.
    let back = wait_until("the master address is free again", WAIT, async || {
        FakeMaster::start_on(
            port_addr,
            Mode::Leader(cluster_state(vec![task(
                "new.1",
                "new",
                "TASK_RUNNING",
                "9.0.0.2",
                &[],
            )])),
        )
        .await
    })
    .await?;
    wait_until("new.marathon.mesos resolves", WAIT, async || {
        resolves_to(addr, "new.marathon.mesos.", &["9.0.0.2"]).await
    })
    .await?;
    let m = ask(addr, "old.marathon.mesos.", RecordType::A).await?;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "the resync dropped the old task: {m:?}"
    );
    assert!(back.subscriptions() >= 1);
    assert!(server.master_status().borrow().subscriptions >= 2);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_master_without_leader_is_skipped_for_the_next_one() -> anyhow::Result<()> {
    let down = FakeMaster::start(Mode::NoLeader).await?;
    let leader = FakeMaster::start(Mode::Leader(cluster_state(vec![]))).await?;
    let server = start(config(vec![down.host_port(), leader.host_port()], vec![])).await?;
    let addr = dns(&server);
    wait_until("slave.mesos resolves", WAIT, async || {
        resolves_to(addr, "slave.mesos.", &["10.0.0.2"]).await
    })
    .await?;
    let m = ask(addr, "agent.mesos.", RecordType::A).await?;
    assert_eq!(ips(&m), ["10.0.0.2"], "{m:?}");
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn health_changes_in_the_stream_update_records_when_health_is_required() -> anyhow::Result<()>
{
    let mut checked = task("db.1", "db", "TASK_RUNNING", "9.0.0.5", &[]);
    checked["health_check"] = serde_json::json!({"type": "TCP", "tcp": {"port": 5432}});
    let master = FakeMaster::start(Mode::Leader(cluster_state(vec![checked]))).await?;
    let mut cfg = config(vec![master.host_port()], vec![]);
    cfg.require_healthy = true;
    let server = start(cfg).await?;
    let addr = dns(&server);
    let status = server.master_status();
    wait_until("subscribed", WAIT, async || status.borrow().subscribed).await?;
    is_nxdomain(addr, "db.marathon.mesos.").await?;

    let mut healthy = task_updated("db.1", "TASK_RUNNING", "9.0.0.5");
    healthy["task_updated"]["status"]["healthy"] = true.into();
    master.send(healthy.clone());
    wait_until("db is named once healthy", WAIT, async || {
        resolves_to(addr, "db.marathon.mesos.", &["9.0.0.5"]).await
    })
    .await?;

    healthy["task_updated"]["status"]["healthy"] = false.into();
    healthy["task_updated"]["status"]["timestamp"] = 3.0.into();
    master.send(healthy);
    wait_until("db is dropped when unhealthy", WAIT, async || {
        is_nxdomain(addr, "db.marathon.mesos.").await
    })
    .await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_named_vip_resolves_while_its_app_runs() -> anyhow::Result<()> {
    let master = FakeMaster::start(Mode::Leader(cluster_state(vec![]))).await?;
    // A one-address range: the VIP's address is known without repeating the hash here.
    let cfg = Config {
        l4lb_named_ipv4: "198.18.0.1/32".into(),
        ..config(vec![master.host_port()], vec![])
    };
    let server = start(cfg).await?;
    let addr = dns(&server);
    wait_until("the master's stream is followed", WAIT, async || {
        resolves_to(addr, "leader.mesos.", &["127.0.0.1"]).await
    })
    .await?;
    let name = "mygroupmyapp.marathon.l4lb.thisdcos.directory.";
    let mut t = task(
        "app.1",
        "myapp.mygroup",
        "TASK_STAGING",
        "9.0.0.7",
        &[31000],
    );
    t["discovery"] = serde_json::json!({"visibility": "FRAMEWORK", "name": "myapp.mygroup",
        "ports": {"ports": [{"number": 31000, "protocol": "tcp", "labels": {"labels": [
            {"key": "VIP_0", "value": "/mygroup/myapp:80"},
            {"key": "network-scope", "value": "host"}]}}]}});
    master.send(task_added(t));
    assert!(is_nxdomain(addr, name).await.is_ok(), "not running yet");

    master.send(task_updated("app.1", "TASK_RUNNING", "9.0.0.7"));
    wait_until("the VIP name resolves", WAIT, async || {
        resolves_to(addr, name, &["198.18.0.1"]).await
    })
    .await?;
    let m = ask(addr, name, RecordType::A).await?;
    assert_eq!(m.answers[0].ttl, 5);

    master.send(task_updated("app.1", "TASK_KILLED", "9.0.0.7"));
    wait_until("the VIP name is gone", WAIT, async || {
        is_nxdomain(addr, name).await
    })
    .await?;
    server.shutdown().await;
    Ok(())
}
