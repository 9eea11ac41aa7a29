//! DNS protocol behaviour of a running server (api-compat §7.2).

use std::time::Duration;

use capstan_testkit::wait_until;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

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
        "the l4lb zone is ours: no VIP of that name"
    );
    server.shutdown().await;
    Ok(())
}

/// A query message's bytes, edited by `edit` first.
fn query_bytes(id: u16, name: &str, qtype: RecordType, edit: impl FnOnce(&mut Message)) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    edit(&mut m);
    m.to_vec().unwrap()
}

/// One datagram from `sock`, parsed, within a deadline.
async fn recv_message(sock: &UdpSocket) -> anyhow::Result<Message> {
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf)).await??;
    Ok(Message::from_vec(&buf[..n])?)
}

#[tokio::test]
async fn responses_and_runts_are_never_answered() -> anyhow::Result<()> {
    let (_master, server) = serving(1).await?;
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(dns(&server)).await?;
    // A well-formed response (QR=1): answering it would let anyone bounce traffic off us.
    let response = query_bytes(0x0001, "web.marathon.mesos.", RecordType::A, |m| {
        m.metadata.message_type = MessageType::Response;
    });
    sock.send(&response).await?;
    sock.send(&[0x00, 0x02, 0x01, 0x00, 0x00]).await?;
    sock.send(&query_bytes(
        0x0003,
        "web.marathon.mesos.",
        RecordType::A,
        |_| {},
    ))
    .await?;
    // Datagrams on loopback keep their order: the first reply is to the real query.
    let m = recv_message(&sock).await?;
    assert_eq!(m.metadata.id, 0x0003);
    assert_eq!(ips(&m), ["9.0.0.1"]);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn pipelined_tcp_queries_are_answered_in_order() -> anyhow::Result<()> {
    let (_master, server) = serving(2).await?;
    let mut tcp = TcpStream::connect(dns(&server)).await?;
    let names = [
        ("web.marathon.mesos.", RecordType::A),
        ("_web._tcp.marathon.mesos.", RecordType::SRV),
        ("missing.marathon.mesos.", RecordType::A),
        ("leader.mesos.", RecordType::A),
    ];
    // Every query in one write, before reading any answer.
    let mut framed = Vec::new();
    for (i, (name, qtype)) in names.iter().enumerate() {
        let q = query_bytes(100 + i as u16, name, *qtype, |_| {});
        framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
        framed.extend_from_slice(&q);
    }
    tcp.write_all(&framed).await?;
    let mut answers = Vec::new();
    for _ in &names {
        let read = async {
            let n = tcp.read_u16().await?;
            let mut buf = vec![0u8; usize::from(n)];
            tcp.read_exact(&mut buf).await?;
            anyhow::Ok(Message::from_vec(&buf)?)
        };
        answers.push(tokio::time::timeout(Duration::from_secs(5), read).await??);
    }
    let ids: Vec<u16> = answers.iter().map(|m| m.metadata.id).collect();
    assert_eq!(ids, [100, 101, 102, 103]);
    assert_eq!(ips(&answers[0]), ["9.0.0.1", "9.0.0.2"]);
    assert_eq!(answers[1].answers.len(), 2);
    assert_eq!(answers[2].metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ips(&answers[3]), ["127.0.0.1"]);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unsupported_requests_get_their_error_code_over_the_wire() -> anyhow::Result<()> {
    let (_master, server) = serving(1).await?;
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(dns(&server)).await?;
    let cases: [(u16, Vec<u8>, u16); 4] = [
        (
            1,
            query_bytes(1, "leader.mesos.", RecordType::A, |m| {
                m.metadata.op_code = OpCode::Status;
            }),
            u16::from(ResponseCode::NotImp),
        ),
        (
            2,
            query_bytes(2, "leader.mesos.", RecordType::A, |m| {
                m.add_query(Query::query(
                    Name::from_ascii("web.marathon.mesos.").unwrap(),
                    RecordType::A,
                ));
            }),
            u16::from(ResponseCode::FormErr),
        ),
        (
            3,
            query_bytes(3, "leader.mesos.", RecordType::A, |m| {
                let mut e = Edns::new();
                e.set_max_payload(1232);
                e.set_version(1);
                m.set_edns(e);
            }),
            // BADVERS (16): its high bits travel in the OPT record.
            16,
        ),
        (
            4,
            query_bytes(4, "version.bind.", RecordType::TXT, |m| {
                m.queries[0].set_query_class(DNSClass::CH);
            }),
            u16::from(ResponseCode::Refused),
        ),
    ];
    for (id, bytes, want) in cases {
        sock.send(&bytes).await?;
        let m = recv_message(&sock).await?;
        assert_eq!(m.metadata.id, id);
        assert_eq!(u16::from(m.metadata.response_code), want, "query {id}");
        assert_eq!(m.metadata.message_type, MessageType::Response);
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_open_tcp_connections() -> anyhow::Result<()> {
    let (_master, server) = serving(1).await?;
    let mut tcp = TcpStream::connect(dns(&server)).await?;
    // The connection is served (so accepted) before the shutdown.
    let q = query_bytes(7, "leader.mesos.", RecordType::A, |_| {});
    tcp.write_all(&(q.len() as u16).to_be_bytes()).await?;
    tcp.write_all(&q).await?;
    let n = tcp.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    tcp.read_exact(&mut buf).await?;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .map_err(|_| anyhow::anyhow!("shutdown waited for an idle TCP client"))?;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await?;
    assert!(
        read.is_err() || rest.is_empty(),
        "the connection ends without another message"
    );
    Ok(())
}

/// Hostile datagrams through the real server (hickory-server's parsing in front of the
/// responder): random bytes, random bodies behind a query header and mutated valid queries.
/// Every answer parses, is a response and carries the id of a datagram we sent, and the server
/// answers a real query afterwards. Forwarding is off, so no mutated name leaves the machine.
#[tokio::test]
async fn hostile_datagrams_get_a_well_formed_answer_or_none() -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let tasks = vec![task("web.0", "web", "TASK_RUNNING", "9.0.0.1", &[31000])];
    let master = FakeMaster::start(Mode::Leader(cluster_state(tasks))).await?;
    let server = start(capstan_dns::Config {
        external_on: false,
        ..config(vec![master.host_port()], vec![])
    })
    .await?;
    let addr = dns(&server);
    wait_until("the task resolves", WAIT, async || {
        resolves_to(addr, "web.marathon.mesos.", &["9.0.0.1"]).await
    })
    .await?;
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(dns(&server)).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let names = [
        "web.marathon.mesos.",
        "_web._tcp.marathon.mesos.",
        "leader.mesos.",
        "mesos.",
    ];
    let types = [
        RecordType::A,
        RecordType::SRV,
        RecordType::ANY,
        RecordType::SOA,
    ];
    for id in 1u16..=600 {
        let mut bytes = match id % 3 {
            0 => (0..rng.random_range(0..600))
                .map(|_| rng.random::<u8>())
                .collect(),
            1 => {
                let mut b: Vec<u8> = (0..rng.random_range(12..300))
                    .map(|_| rng.random::<u8>())
                    .collect();
                b[2] &= 0x7f;
                b
            }
            _ => {
                let name = names[rng.random_range(0..names.len())];
                let qtype = types[rng.random_range(0..types.len())];
                let mut b = query_bytes(id, name, qtype, |_| {});
                for _ in 0..rng.random_range(1..6) {
                    let i = rng.random_range(2..b.len());
                    b[i] ^= rng.random::<u8>();
                }
                b
            }
        };
        if bytes.len() >= 2 {
            bytes[..2].copy_from_slice(&id.to_be_bytes());
        }
        sock.send(&bytes).await?;
    }
    // The last datagram is a real query; what arrives before its answer is checked.
    sock.send(&query_bytes(
        0xffff,
        "web.marathon.mesos.",
        RecordType::A,
        |_| {},
    ))
    .await?;
    let mut buf = vec![0u8; 65535];
    let mut answered = 0;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf)).await??;
        let m = Message::from_vec(&buf[..n])
            .map_err(|e| anyhow::anyhow!("answer {answered} does not parse: {e}"))?;
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(n <= 4096, "{n} bytes");
        if m.metadata.id == 0xffff {
            assert_eq!(ips(&m), ["9.0.0.1"]);
            break;
        }
        assert!((1..=600).contains(&m.metadata.id), "id {}", m.metadata.id);
        answered += 1;
    }
    server.shutdown().await;
    Ok(())
}
