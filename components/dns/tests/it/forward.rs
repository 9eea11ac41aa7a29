//! Names outside our zones go to upstream resolvers.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::support::*;

#[tokio::test]
async fn outside_names_are_forwarded_and_cached() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start(Some("1.2.3.4")).await?;
    let server = start(config(
        vec!["127.0.0.1:1".into()],
        vec![upstream.addr.to_string()],
    ))
    .await?;
    let addr = dns(&server);
    let m = ask(addr, "example.com.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&m), ["1.2.3.4"]);
    assert!(!m.metadata.authoritative);
    let m = tcp_query(addr, "Example.COM.", RecordType::A).await?;
    assert_eq!(ips(&m), ["1.2.3.4"]);
    assert!(m.answers[0].ttl <= 300);
    assert_eq!(
        upstream.queries(),
        1,
        "the second answer came from the cache"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_dead_upstream_does_not_delay_the_live_one() -> anyhow::Result<()> {
    let dead = FakeUpstream::start(None).await?;
    let live = FakeUpstream::start(Some("5.6.7.8")).await?;
    let mut cfg = config(
        vec!["127.0.0.1:1".into()],
        vec![dead.addr.to_string(), live.addr.to_string()],
    );
    cfg.forward_timeout = Duration::from_secs(30);
    let server = start(cfg).await?;
    let addr = dns(&server);
    // Both are asked at once, so the answer arrives long before the 30 s timeout.
    let m = tokio::time::timeout(
        Duration::from_secs(10),
        ask(addr, "a.example.", RecordType::A),
    )
    .await??;
    assert_eq!(ips(&m), ["5.6.7.8"]);
    capstan_testkit::wait_until("the dead upstream was asked too", WAIT, async || {
        dead.queries() == 1
    })
    .await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_failing_upstream_does_not_beat_a_working_one() -> anyhow::Result<()> {
    let failing = FakeUpstream::servfail().await?;
    let live = FakeUpstream::start(Some("5.6.7.9")).await?;
    let server = start(config(
        vec!["127.0.0.1:1".into()],
        vec![failing.addr.to_string(), live.addr.to_string()],
    ))
    .await?;
    let m = ask(dns(&server), "b.example.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&m), ["5.6.7.9"]);
    capstan_testkit::wait_until("the failing upstream was asked too", WAIT, async || {
        failing.queries() == 1
    })
    .await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn zone_resolvers_take_their_zones_and_silence_is_servfail() -> anyhow::Result<()> {
    let default = FakeUpstream::start(Some("1.1.1.1")).await?;
    let consul = FakeUpstream::start(Some("10.9.9.9")).await?;
    let silent = FakeUpstream::start(None).await?;
    let mut cfg = config(vec!["127.0.0.1:1".into()], vec![default.addr.to_string()]);
    cfg.zone_resolvers
        .insert("consul".into(), vec![consul.addr.to_string()]);
    cfg.zone_resolvers
        .insert("void".into(), vec![silent.addr.to_string()]);
    cfg.forward_timeout = Duration::from_millis(300);
    let server = start(cfg).await?;
    let addr = dns(&server);
    assert_eq!(
        ips(&ask(addr, "db.service.consul.", RecordType::A).await?),
        ["10.9.9.9"]
    );
    assert_eq!(
        ips(&ask(addr, "other.org.", RecordType::A).await?),
        ["1.1.1.1"]
    );
    let m = ask(addr, "x.void.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn forwarding_can_be_turned_off() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start(Some("1.2.3.4")).await?;
    let mut cfg = config(vec!["127.0.0.1:1".into()], vec![upstream.addr.to_string()]);
    cfg.external_on = false;
    let server = start(cfg).await?;
    let m = ask(dns(&server), "example.com.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(upstream.queries(), 0);
    server.shutdown().await;
    Ok(())
}

/// An agent's public address is no open resolver: outside names are forwarded only for
/// clients from `external_from`; names in our zones are answered for everyone.
#[tokio::test]
async fn outside_names_are_refused_to_clients_outside_external_from() -> anyhow::Result<()> {
    let upstream = FakeUpstream::start(Some("1.2.3.4")).await?;
    let mut cfg = config(vec!["127.0.0.1:1".into()], vec![upstream.addr.to_string()]);
    cfg.external_from = vec!["10.0.0.0/8".parse()?];
    let server = start(cfg).await?;
    let m = ask(dns(&server), "example.com.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(upstream.queries(), 0);
    server.shutdown().await;
    Ok(())
}
