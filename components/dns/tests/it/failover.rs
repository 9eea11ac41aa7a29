//! A master failover never denies a name that existed (reliability probe F8b).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::bail;
use capstan_testkit::wait_until;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use tokio_util::sync::CancellationToken;

use super::support::*;

/// The longest the continuous poll may run, whatever happens.
const POLL_DEADLINE: Duration = Duration::from_secs(60);

/// Asks for `name` back to back until `stop`, checking every answer is `want`; returns
/// what went wrong (empty when every answer was right).
fn poll_continuously(
    server: SocketAddr,
    name: &'static str,
    want: &'static [&'static str],
    asked: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let end = tokio::time::Instant::now() + POLL_DEADLINE;
        let mut wrong = Vec::new();
        while !stop.is_cancelled() && tokio::time::Instant::now() < end {
            match ask(server, name, RecordType::A).await {
                Ok(m) if m.metadata.response_code == ResponseCode::NoError && ips(&m) == want => {}
                Ok(m) => wrong.push(format!(
                    "query {}: {} {:?}",
                    asked.load(Ordering::SeqCst),
                    m.metadata.response_code,
                    ips(&m)
                )),
                Err(e) => wrong.push(format!("query {}: {e:#}", asked.load(Ordering::SeqCst))),
            }
            asked.fetch_add(1, Ordering::SeqCst);
        }
        wrong
    })
}

/// `Ok` once the poller has asked `more` questions after `since`.
async fn asked_more(asked: &AtomicUsize, since: usize, more: usize) -> anyhow::Result<()> {
    let now = asked.load(Ordering::SeqCst);
    if now >= since + more {
        Ok(())
    } else {
        bail!("{} of {more} more queries", now.saturating_sub(since))
    }
}

#[tokio::test]
async fn a_name_that_existed_never_answers_nxdomain_during_a_master_failover() -> anyhow::Result<()>
{
    let old = FakeMaster::start(Mode::Leader(cluster_state(vec![
        task("web.1", "web", "TASK_RUNNING", "9.0.0.7", &[]),
        task("gone.1", "gone", "TASK_RUNNING", "9.0.0.8", &[]),
    ])))
    .await?;
    let standby = FakeMaster::start(Mode::NoLeader).await?;
    // Nothing here leaves our zones; a silent loopback upstream proves it.
    let upstream = FakeUpstream::start(None).await?;
    let server = start(config(
        vec![old.host_port(), standby.host_port()],
        vec![upstream.addr.to_string()],
    ))
    .await?;
    let addr = dns(&server);
    let status = server.master_status();
    wait_until("web and gone resolve", WAIT, async || {
        resolves_to(addr, "web.marathon.mesos.", &["9.0.0.7"]).await?;
        resolves_to(addr, "gone.marathon.mesos.", &["9.0.0.8"]).await
    })
    .await?;

    let asked = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let poller = poll_continuously(
        addr,
        "web.marathon.mesos.",
        &["9.0.0.7"],
        asked.clone(),
        stop.clone(),
    );
    let result = async {
        wait_until("the poll runs", WAIT, async || {
            asked_more(&asked, 0, 3).await
        })
        .await?;

        // The leader's lease is revoked: it stops, and for a while no master leads.
        old.kill();
        wait_until("the follower loses the stream", WAIT, async || {
            !status.borrow().subscribed
        })
        .await?;
        let at = asked.load(Ordering::SeqCst);
        wait_until("the poll runs with no leader", WAIT, async || {
            asked_more(&asked, at, 3).await
        })
        .await?;

        // The standby is elected. It knows the agent from its registry only, so its
        // snapshot names none of the agent's tasks until the agent re-registers.
        standby.set_mode(Mode::Leader(recovering_cluster_state()));
        wait_until("the new master's snapshot is served", WAIT, async || {
            let m = ask(addr, "_leader._tcp.mesos.", RecordType::SRV).await?;
            let ports: Vec<u16> = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => Some(s.port),
                    _ => None,
                })
                .collect();
            anyhow::ensure!(ports == [standby.addr.port()], "leader ports {ports:?}");
            Ok(())
        })
        .await?;
        let at = asked.load(Ordering::SeqCst);
        wait_until("the poll runs against the new snapshot", WAIT, async || {
            asked_more(&asked, at, 3).await
        })
        .await?;
        resolves_to(addr, "gone.marathon.mesos.", &["9.0.0.8"]).await?;

        // The agent re-registers and reports web only: gone was lost with the old master.
        standby.send(task_added(task(
            "web.1",
            "web",
            "TASK_RUNNING",
            "9.0.0.7",
            &[],
        )));
        standby.send(agent_added());
        wait_until("gone is dropped once the agent is back", WAIT, async || {
            is_nxdomain(addr, "gone.marathon.mesos.").await
        })
        .await?;
        let at = asked.load(Ordering::SeqCst);
        wait_until("the poll runs after the agent is back", WAIT, async || {
            asked_more(&asked, at, 3).await
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    stop.cancel();
    let wrong = poller.await?;
    let total = asked.load(Ordering::SeqCst);
    if let Err(e) = result {
        bail!(
            "{e:#}; {} wrong answers for web among {total}, first: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
    assert!(
        wrong.is_empty(),
        "{} of {total} answers for web were wrong during the failover, first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(standby.subscriptions(), 1);
    assert_eq!(upstream.queries(), 0, "nothing was forwarded");
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn denials_are_cacheable_for_five_seconds_by_default() -> anyhow::Result<()> {
    let master = FakeMaster::start(Mode::Leader(cluster_state(vec![]))).await?;
    let upstream = FakeUpstream::start(None).await?;
    let server = start(config(
        vec![master.host_port()],
        vec![upstream.addr.to_string()],
    ))
    .await?;
    let addr = dns(&server);
    wait_until("leader.mesos resolves", WAIT, async || {
        resolves_to(addr, "leader.mesos.", &["127.0.0.1"]).await
    })
    .await?;
    for name in [
        "missing.marathon.mesos.",
        "missing.marathon.mesos.thisdcos.directory.",
        "missing.marathon.autoip.dcos.thisdcos.directory.",
    ] {
        let m = ask(addr, name, RecordType::A).await?;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        let soa = m.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(s) => Some((r.ttl, s.minimum)),
            _ => None,
        });
        assert_eq!(soa, Some((5, 5)), "{name}: (SOA TTL, minimum)");
    }
    // Positive answers keep the Mesos-DNS TTL.
    let m = ask(addr, "leader.mesos.", RecordType::A).await?;
    assert!(m.answers.iter().all(|r| r.ttl == 60));
    assert_eq!(upstream.queries(), 0);
    server.shutdown().await;
    Ok(())
}
