//! DNS protocol behaviour of a running server (api-compat §7.2).

use capstan_testkit::wait_until;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use super::support::*;

/// A server following a master with `n` running instances of `web` (ports 31000+i).
async fn serving(n: usize) -> anyhow::Result<(FakeMaster, capstan_dns::ServerHandle)> {
    let tasks = (0..n)
        .map(|i| {
            task(
                &format!("web.{i}"),
                "web",
                "TASK_RUNNING",
                &format!("9.0.{}.{}", i / 200, i % 200 + 1),
                &[31000 + i as u64],
            )
        })
        .collect();
    let master = FakeMaster::start(Mode::Leader(cluster_state(tasks))).await?;
    let server = start(config(vec![master.host_port()], vec![])).await?;
    let addr = dns(&server);
    wait_until("all instances resolve", WAIT, async || {
        tcp_query(addr, "web.marathon.mesos.", RecordType::A)
            .await
            .and_then(|m| {
                anyhow::ensure!(m.answers.len() == n, "{} of {n} answers", m.answers.len());
                Ok(())
            })
    })
    .await?;
    Ok((master, server))
}

#[tokio::test]
async fn a_and_srv_queries_answer_with_additional_addresses() -> anyhow::Result<()> {
    let (_master, server) = serving(2).await?;
    let addr = dns(&server);
    let m = ask(addr, "web.marathon.mesos.", RecordType::A).await?;
    assert!(m.metadata.authoritative);
    assert_eq!(ips(&m), ["9.0.0.1", "9.0.0.2"]);
    assert!(m.answers.iter().all(|r| r.ttl == 60));

    let m = ask(addr, "_web._tcp.marathon.mesos.", RecordType::SRV).await?;
    assert_eq!(m.answers.len(), 2);
    for r in &m.answers {
        let RData::SRV(srv) = &r.data else {
            panic!("not an SRV answer")
        };
        assert!((31000..31002).contains(&srv.port));
        let extra = m
            .additionals
            .iter()
            .find(|a| a.name == srv.target)
            .expect("target address in additional");
        assert_eq!(
            extra.data.to_string(),
            "10.0.0.2",
            "slave target resolves to the agent"
        );
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn nxdomain_and_nodata_are_told_apart() -> anyhow::Result<()> {
    let (_master, server) = serving(1).await?;
    let addr = dns(&server);
    let m = ask(addr, "missing.marathon.mesos.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        m.authorities
            .iter()
            .any(|r| matches!(r.data, RData::SOA(_)))
    );
    let m = ask(addr, "web.marathon.mesos.", RecordType::AAAA).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(
        m.authorities
            .iter()
            .any(|r| matches!(r.data, RData::SOA(_)))
    );
    let m = ask(addr, "_missing._tcp.marathon.mesos.", RecordType::SRV).await?;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "empty SRV is NOERROR"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_truncated_udp_answer_is_complete_over_tcp() -> anyhow::Result<()> {
    let (_master, server) = serving(60).await?;
    let addr = dns(&server);
    let (m, len) = udp_query(addr, "web.marathon.mesos.", RecordType::A, None).await?;
    assert!(m.metadata.truncation, "60 A records do not fit 512 bytes");
    assert!(len <= 512);
    let (m, len) = udp_query(addr, "web.marathon.mesos.", RecordType::A, Some(4096)).await?;
    assert!(
        !m.metadata.truncation && m.answers.len() == 60 && len > 512,
        "EDNS0 raises the limit"
    );
    let m = tcp_query(addr, "web.marathon.mesos.", RecordType::A).await?;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn hostile_packets_do_not_stop_the_server() -> anyhow::Result<()> {
    let (_master, server) = serving(1).await?;
    let addr = dns(&server);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(addr).await?;
    // Garbage after a header announcing one question gets FORMERR with our id.
    let mut garbage = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xc0, 0x0c, 0xff]);
    sock.send(&garbage).await?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv(&mut buf)).await??;
    assert!(n >= 12);
    assert_eq!(&buf[..2], &[0xbe, 0xef]);
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
    // Runts are dropped; TCP with a lying length is closed; the server keeps answering.
    sock.send(&[1, 2, 3]).await?;
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &[0xff, 0xff, 1, 2]).await?;
    drop(tcp);
    let m = ask(addr, "leader.mesos.", RecordType::A).await?;
    assert_eq!(ips(&m), ["127.0.0.1"]);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn dcos_names_resolve() -> anyhow::Result<()> {
    let (_master, server) = serving(1).await?;
    let addr = dns(&server);
    let m = ask(
        addr,
        "web.marathon.autoip.dcos.thisdcos.directory.",
        RecordType::A,
    )
    .await?;
    assert_eq!(ips(&m), ["9.0.0.1"]);
    assert!(m.answers.iter().all(|r| r.ttl == 5));
    let m = ask(
        addr,
        "web.marathon.agentip.dcos.thisdcos.directory.",
        RecordType::A,
    )
    .await?;
    assert_eq!(ips(&m), ["10.0.0.2"]);
    let m = ask(
        addr,
        "web.marathon.mesos.thisdcos.directory.",
        RecordType::A,
    )
    .await?;
    assert_eq!(ips(&m), ["9.0.0.1"], "the mesos.thisdcos.directory mirror");
    let m = ask(addr, "nothing.l4lb.thisdcos.directory.", RecordType::A).await?;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "the l4lb zone is ours, empty for now"
    );
    server.shutdown().await;
    Ok(())
}
