//! Property-based fuzzing of the responder's byte entry point ([`handle`]): arbitrary bytes and
//! mutated valid queries never panic, and every answer is a well-formed DNS response (it parses
//! back, carries the request's id with QR set, and fits the transport's limit) or a drop.
//! The case count is small for CI; `CAPSTAN_FUZZ_CASES=100000` raises it for a long run.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::tests::snapshot;
use super::{ResponderConfig, Transport, Verdict, handle};

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("CAPSTAN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

const NAMES: &[&str] = &[
    "web.marathon.mesos.",
    "_web._tcp.marathon.mesos.",
    "_web._udp.marathon.mesos.",
    "leader.mesos.",
    "master.mesos.",
    "mesos.",
    "*.marathon.mesos.",
    "web.marathon.mesos.thisdcos.directory.",
    "web.marathon.autoip.dcos.thisdcos.directory.",
    "l4lb.thisdcos.directory.",
    "nope.mesos.",
    "example.com.",
    ".",
];

const TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::ANY,
    RecordType::SOA,
    RecordType::NS,
    RecordType::TXT,
    RecordType::AXFR,
    RecordType::OPT,
    RecordType::PTR,
];

fn query(name: &str, qtype: RecordType, id: u16, edns: Option<(u16, u8)>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some((size, version)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_version(version);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Checks that `bytes`, sent over `transport`, are dropped, forwarded or answered well.
fn well_formed(
    bytes: &[u8],
    transport: Transport,
    cfg: &ResponderConfig,
) -> Result<(), TestCaseError> {
    let snap = snapshot(3);
    let verdict = handle(bytes, transport, &snap, cfg, &mut StdRng::seed_from_u64(7));
    match verdict {
        Verdict::Drop => {
            // Only runts and responses are dropped (no reflection of responses).
            prop_assert!(bytes.len() < 12 || bytes[2] & 0x80 != 0);
        }
        Verdict::Forward(f) => {
            prop_assert!(cfg.external_on, "forwarded with forwarding off");
            prop_assert!(
                snap.zone_of(&f.name).is_none(),
                "forwarded a name of our zones: {}",
                f.name
            );
            prop_assert_eq!(
                f.request.metadata.id,
                u16::from_be_bytes([bytes[0], bytes[1]])
            );
        }
        Verdict::Respond(out) => {
            prop_assert!(out.len() >= 12);
            prop_assert_eq!(&out[..2], &bytes[..2], "the id is echoed");
            prop_assert!(out[2] & 0x80 != 0, "QR is set");
            let limit = match transport {
                Transport::Tcp => usize::from(u16::MAX),
                Transport::Udp => usize::from(cfg.max_udp_payload.max(512)),
            };
            prop_assert!(
                out.len() <= limit,
                "{} bytes over a limit of {limit}",
                out.len()
            );
            let parsed = Message::from_vec(&out);
            prop_assert!(
                parsed.is_ok(),
                "our answer does not parse: {:?}",
                parsed.err()
            );
            let parsed = parsed.unwrap();
            prop_assert_eq!(parsed.metadata.message_type, MessageType::Response);
            // A request the responder could read is answered with at most its one question.
            prop_assert!(parsed.queries.len() <= 1);
        }
    }
    Ok(())
}

fn responder() -> impl Strategy<Value = ResponderConfig> {
    (any::<bool>(), any::<bool>(), any::<bool>(), 0u16..5000).prop_map(|(r, e, t, m)| {
        ResponderConfig {
            recurse_on: r,
            external_on: e,
            set_truncate_bit: t,
            max_udp_payload: m,
        }
    })
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Udp), Just(Transport::Tcp)]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_are_dropped_or_answered_well(
        bytes in proptest::collection::vec(any::<u8>(), 0..700),
        t in transport(),
        cfg in responder(),
    ) {
        well_formed(&bytes, t, &cfg)?;
    }

    #[test]
    fn arbitrary_bodies_behind_a_query_header_are_dropped_or_answered_well(
        id in any::<u16>(),
        flags in any::<u16>(),
        counts in proptest::collection::vec(0u16..4, 4),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        t in transport(),
        cfg in responder(),
    ) {
        let mut bytes = Vec::with_capacity(12 + body.len());
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(&(flags & 0x7fff).to_be_bytes());
        for c in counts {
            bytes.extend_from_slice(&c.to_be_bytes());
        }
        bytes.extend_from_slice(&body);
        well_formed(&bytes, t, &cfg)?;
    }

    #[test]
    fn valid_queries_are_answered_well(
        name in proptest::sample::select(NAMES),
        qtype in proptest::sample::select(TYPES),
        id in any::<u16>(),
        edns in proptest::option::of((any::<u16>(), 0u8..2)),
        t in transport(),
        cfg in responder(),
    ) {
        let bytes = query(name, qtype, id, edns);
        well_formed(&bytes, t, &cfg)?;
    }

    #[test]
    fn mutated_queries_are_dropped_or_answered_well(
        name in proptest::sample::select(NAMES),
        qtype in proptest::sample::select(TYPES),
        edns in proptest::option::of((any::<u16>(), 0u8..2)),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        t in transport(),
        cfg in responder(),
    ) {
        let mut bytes = query(name, qtype, 0x4242, edns);
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        well_formed(&bytes, t, &cfg)?;
    }
}

#[test]
fn a_compression_loop_is_answered_with_formerr() {
    // One question whose name is a pointer to itself.
    let mut bytes = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    bytes.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    match handle(
        &bytes,
        Transport::Udp,
        &snapshot(1),
        &ResponderConfig::default(),
        &mut StdRng::seed_from_u64(0),
    ) {
        Verdict::Respond(out) => {
            assert_eq!(&out[..2], &[0x12, 0x34]);
            assert_eq!(out[3] & 0x0f, 1, "FORMERR");
        }
        other => panic!("expected FORMERR, got {other:?}"),
    }
}
