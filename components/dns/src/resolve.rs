//! The DNS responder: request bytes in, response bytes (or "forward this") out. Pure and
//! synchronous; the server's UDP/TCP loops and the fuzz tests call the same [`handle`].
//!
//! Behaviour follows Mesos-DNS (api-compat §7.2): authoritative for our zones, SOA in the
//! authority section on NXDOMAIN and NODATA, NOERROR for empty SRV answers, SOA/NS answers in
//! the authority section, shuffled answers, the first A/AAAA of each SRV target in the
//! additional section, EDNS0 payload sizes honoured and the TC bit set when a UDP answer had to
//! be cut. Malformed requests get FORMERR when they carry a readable header and are dropped
//! otherwise; responses are never answered.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::snapshot::{Snapshot, Zone};

/// Settings of the responder that are not part of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponderConfig {
    /// Value of the RA flag (Mesos-DNS `recurseOn`).
    pub recurse_on: bool,
    /// Forward names outside our zones (Mesos-DNS `externalOn`); else REFUSED.
    pub external_on: bool,
    /// Set TC when a UDP answer was cut (Mesos-DNS `SetTruncateBit`).
    pub set_truncate_bit: bool,
    /// The largest UDP payload we send, whatever a client's EDNS0 offers.
    pub max_udp_payload: u16,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            recurse_on: true,
            external_on: true,
            set_truncate_bit: true,
            max_udp_payload: 4096,
        }
    }
}

/// How the request arrived; decides the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A query for a name outside our zones.
#[derive(Debug, Clone)]
pub struct ForwardRequest {
    /// The parsed request (id, flags, question, EDNS).
    pub request: Message,
    /// Lower-cased query name with trailing dot.
    pub name: String,
    /// The most bytes the client can take over this transport.
    pub max_size: usize,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Verdict {
    /// Send these bytes back.
    Respond(Vec<u8>),
    /// Ask upstream resolvers.
    Forward(Box<ForwardRequest>),
    /// Say nothing (unreadable header, or not a query).
    Drop,
}

/// Handles one request message.
pub fn handle(
    bytes: &[u8],
    transport: Transport,
    snap: &Snapshot,
    cfg: &ResponderConfig,
    rng: &mut impl Rng,
) -> Verdict {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return Verdict::Drop;
    }
    let request = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => return Verdict::Respond(formerr_header(bytes)),
    };
    let max_size = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => {
            let offered = request.edns.as_ref().map_or(512, Edns::max_payload);
            usize::from(offered.clamp(512, cfg.max_udp_payload.max(512)))
        }
    };
    let mut resp = response_to(&request, cfg);
    if request.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return Verdict::Respond(encode(resp, max_size, cfg));
    }
    if request.queries.len() != 1 {
        resp.metadata.response_code = ResponseCode::FormErr;
        return Verdict::Respond(encode(resp, max_size, cfg));
    }
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        resp.metadata.response_code = ResponseCode::BADVERS;
        return Verdict::Respond(encode(resp, max_size, cfg));
    }
    let query = request.queries[0].clone();
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        resp.metadata.response_code = ResponseCode::Refused;
        return Verdict::Respond(encode(resp, max_size, cfg));
    }
    let name = clean_name(query.name());
    let Some(zone) = snap.zone_of(&name) else {
        if cfg.external_on {
            return Verdict::Forward(Box::new(ForwardRequest {
                request,
                name,
                max_size,
            }));
        }
        resp.metadata.response_code = ResponseCode::Refused;
        return Verdict::Respond(encode(resp, max_size, cfg));
    };
    answer(&mut resp, &query, &name, zone, snap, rng);
    Verdict::Respond(encode(resp, max_size, cfg))
}

/// Lower-cased name with trailing dot, with the Mesos-DNS wildcard hack (`.*` removed).
pub fn clean_name(name: &Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if s.contains(".*") {
        s = s.replace(".*", "");
    }
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// The response skeleton: id, opcode, RD echoed, question echoed, EDNS if the client used it.
fn response_to(request: &Message, cfg: &ResponderConfig) -> Message {
    let mut resp = Message::response(request.metadata.id, request.metadata.op_code);
    resp.metadata.recursion_desired = request.metadata.recursion_desired;
    resp.metadata.recursion_available = cfg.recurse_on;
    resp.metadata.checking_disabled = request.metadata.checking_disabled;
    resp.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(cfg.max_udp_payload.max(512));
        resp.set_edns(edns);
    }
    resp
}

/// A bare FORMERR header for a message whose body could not be parsed.
fn formerr_header(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[0] = bytes[0];
    out[1] = bytes[1];
    // QR=1, opcode and RD copied.
    out[2] = 0x80 | (bytes[2] & 0x79);
    out[3] = ResponseCode::FormErr.low();
    out
}

fn answer(
    resp: &mut Message,
    query: &Query,
    name: &str,
    zone: &Zone,
    snap: &Snapshot,
    rng: &mut impl Rng,
) {
    resp.metadata.authoritative = true;
    let owner = query.name().clone();
    let source = zone.source_name(name);
    let found = snap.lookup(&source);
    let qtype = query.query_type();
    let mut answers = Vec::new();
    let mut extra = Vec::new();
    let want = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    if want(RecordType::A) {
        for (ip, ttl) in found.a() {
            answers.push(Record::from_rdata(owner.clone(), ttl, RData::A(A(ip))));
        }
    }
    if want(RecordType::AAAA) {
        for (ip, ttl) in found.aaaa() {
            answers.push(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::AAAA(AAAA(ip)),
            ));
        }
    }
    if want(RecordType::SRV) {
        let mut targets: Vec<&str> = Vec::new();
        for (srv, ttl) in found.srv() {
            let Ok(target) = Name::from_ascii(zone.shown_name(&srv.target).as_ref()) else {
                continue;
            };
            answers.push(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::SRV(SRV::new(0, srv.weight, srv.port, target)),
            ));
            if !targets.contains(&&*srv.target) {
                targets.push(&srv.target);
            }
        }
        for t in targets {
            let Ok(tname) = Name::from_ascii(zone.shown_name(t).as_ref()) else {
                continue;
            };
            let tf = snap.lookup(t);
            if let Some((ip, ttl)) = tf.a().next() {
                extra.push(Record::from_rdata(tname.clone(), ttl, RData::A(A(ip))));
            }
            if let Some((ip, ttl)) = tf.aaaa().next() {
                extra.push(Record::from_rdata(tname, ttl, RData::AAAA(AAAA(ip))));
            }
        }
    }
    answers.shuffle(rng);
    let soa_record = || {
        Record::from_rdata(
            zone.apex_name.clone(),
            zone.ttl,
            RData::SOA(zone.soa(snap.serial, &snap.soa)),
        )
    };
    match qtype {
        RecordType::SOA => {
            resp.add_authority(soa_record());
        }
        RecordType::NS => {
            resp.add_authority(Record::from_rdata(
                zone.apex_name.clone(),
                zone.ttl,
                RData::NS(NS(zone.mname.clone())),
            ));
            let ns = snap.lookup(&zone.mname.to_ascii().to_ascii_lowercase());
            for (ip, ttl) in ns.a() {
                extra.push(Record::from_rdata(zone.mname.clone(), ttl, RData::A(A(ip))));
            }
        }
        _ if !answers.is_empty() => {}
        RecordType::SRV => {
            resp.add_authority(soa_record());
        }
        _ => {
            if !found.exists() && name != zone.apex {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            resp.add_authority(soa_record());
        }
    }
    resp.insert_answers(answers);
    resp.add_additionals(extra);
}

/// Encodes `msg`, cutting it to `max_size`: additionals go first, then answers from the end;
/// TC is set when answers had to go (if configured).
pub fn encode(mut msg: Message, max_size: usize, cfg: &ResponderConfig) -> Vec<u8> {
    let full = match msg.to_vec() {
        Ok(b) => b,
        Err(_) => return server_failure(&msg),
    };
    if full.len() <= max_size {
        return full;
    }
    msg.additionals.clear();
    if let Ok(b) = msg.to_vec()
        && b.len() <= max_size
    {
        return b;
    }
    msg.authorities.clear();
    msg.metadata.truncation = cfg.set_truncate_bit;
    let answers = std::mem::take(&mut msg.answers);
    // Largest prefix of answers that fits: binary search on the count.
    let (mut lo, mut hi) = (0usize, answers.len());
    let mut best = None;
    while lo <= hi {
        let mid = (lo + hi) / 2;
        msg.answers = answers[..mid].to_vec();
        match msg.to_vec() {
            Ok(b) if b.len() <= max_size => {
                best = Some(b);
                lo = mid + 1;
            }
            _ => {
                if mid == 0 {
                    break;
                }
                hi = mid - 1;
            }
        }
    }
    match best {
        Some(b) => b,
        None => {
            // Even the bare question does not fit (a huge name over a tiny limit): header only.
            msg.answers.clear();
            msg.queries.clear();
            msg.edns = None;
            msg.metadata.truncation = true;
            msg.to_vec().unwrap_or_default()
        }
    }
}

fn server_failure(msg: &Message) -> Vec<u8> {
    let mut m = Message::error_msg(
        msg.metadata.id,
        msg.metadata.op_code,
        ResponseCode::ServFail,
    );
    m.metadata.message_type = MessageType::Response;
    m.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use hickory_proto::rr::rdata::SOA;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::model::{Agent, ClusterState, Framework, Task, TaskKey, TaskState, TaskStatus};
    use crate::records::{RecordSet, SynthConfig, synthesize};
    use crate::snapshot::{Producer, Snapshot, SoaParams, Zone};

    fn soa() -> SoaParams {
        SoaParams {
            mname: "ns1.mesos.".into(),
            rname: "root.ns1.mesos.".into(),
            refresh: 60,
            retry: 600,
            expire: 86400,
        }
    }

    fn cluster(instances: usize) -> ClusterState {
        let mut st = ClusterState {
            masters: vec!["10.0.0.1:5050".parse().unwrap()],
            leader: Some("10.0.0.1:5050".parse().unwrap()),
            ..Default::default()
        };
        st.agents.insert(
            "M-S0".into(),
            Agent {
                id: "M-S0".into(),
                hostname: "a1".into(),
                ip: Some("10.0.0.2".parse().unwrap()),
                port: 5051,
            },
        );
        st.frameworks.insert(
            "M-0000".into(),
            Framework {
                id: "M-0000".into(),
                name: "marathon".into(),
                hostname: "m1".into(),
                pid: None,
            },
        );
        for i in 0..instances {
            let mut t = Task {
                id: format!("web.{i}"),
                name: "web".into(),
                framework_id: "M-0000".into(),
                agent_id: "M-S0".into(),
                state: Some(TaskState::Running),
                ports: vec![31000 + i as u16],
                ..Default::default()
            };
            let ip: IpAddr = format!("9.0.{}.{}", i / 250, i % 250 + 1).parse().unwrap();
            t.push_status(TaskStatus {
                state: Some(TaskState::Running),
                timestamp: 1.0,
                network_ips: vec![ip],
                ..Default::default()
            });
            st.tasks.insert(
                TaskKey {
                    framework_id: "M-0000".into(),
                    task_id: t.id.clone(),
                },
                t,
            );
        }
        st
    }

    fn snapshot(instances: usize) -> Snapshot {
        let mut zones: Vec<Zone> = [
            "mesos",
            "dcos.thisdcos.directory",
            "l4lb.thisdcos.directory",
        ]
        .iter()
        .map(|z| Zone::new(z, 60, &soa()).unwrap())
        .collect();
        zones.push(Zone::mirror("mesos.thisdcos.directory", "mesos", 60, &soa()).unwrap());
        let cfg = SynthConfig {
            self_ips: vec!["10.0.0.53".parse().unwrap()],
            ..Default::default()
        };
        Snapshot::new(zones, soa(), 7).with_records(
            Producer::Mesos,
            Arc::new(synthesize(&cluster(instances), &cfg)),
        )
    }

    fn query_bytes(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn verdict(
        bytes: &[u8],
        transport: Transport,
        snap: &Snapshot,
        cfg: &ResponderConfig,
    ) -> Verdict {
        handle(bytes, transport, snap, cfg, &mut StdRng::seed_from_u64(1))
    }

    fn ask_with(
        name: &str,
        qtype: RecordType,
        edns: Option<u16>,
        transport: Transport,
        cfg: &ResponderConfig,
        snap: &Snapshot,
    ) -> (Message, usize) {
        match verdict(&query_bytes(name, qtype, edns), transport, snap, cfg) {
            Verdict::Respond(b) => (Message::from_vec(&b).unwrap(), b.len()),
            other => panic!("expected an answer for {name}, got {other:?}"),
        }
    }

    fn ask(name: &str, qtype: RecordType) -> Message {
        ask_with(
            name,
            qtype,
            None,
            Transport::Udp,
            &ResponderConfig::default(),
            &snapshot(2),
        )
        .0
    }

    fn ips(m: &Message) -> Vec<String> {
        let mut v: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                RData::AAAA(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    fn has_soa(m: &Message) -> bool {
        m.authorities
            .iter()
            .any(|r| matches!(r.data, RData::SOA(_)))
    }

    #[test]
    fn a_queries_get_authoritative_answers_with_the_ttl() {
        let m = ask("web.marathon.mesos.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert!(m.metadata.recursion_available);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(ips(&m), ["9.0.0.1", "9.0.0.2"]);
        assert!(m.answers.iter().all(|r| r.ttl == 60));
        assert_eq!(ips(&ask("leader.mesos.", RecordType::A)), ["10.0.0.1"]);
        assert_eq!(
            ips(&ask(
                "web.marathon.autoip.dcos.thisdcos.directory.",
                RecordType::A
            )),
            ["9.0.0.1", "9.0.0.2"]
        );
    }

    #[test]
    fn names_match_case_insensitively_and_keep_the_asked_case() {
        let m = ask("WEB.Marathon.MESOS.", RecordType::A);
        assert_eq!(ips(&m), ["9.0.0.1", "9.0.0.2"]);
        assert_eq!(m.answers[0].name.to_ascii(), "WEB.Marathon.MESOS.");
    }

    #[test]
    fn the_wildcard_hack_strips_dot_star() {
        assert_eq!(
            ips(&ask("web.*.marathon.mesos.", RecordType::A)),
            ["9.0.0.1", "9.0.0.2"]
        );
    }

    #[test]
    fn unknown_names_are_nxdomain_with_soa_in_authority() {
        let m = ask("nope.marathon.mesos.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.answers.is_empty());
        assert!(has_soa(&m));
        let soa = m.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(s) => Some(s.clone()),
            _ => None,
        });
        let soa: SOA = soa.unwrap();
        assert_eq!(soa.serial, 8, "serial bumps with each record update");
        assert_eq!(soa.minimum, 60);
        assert_eq!(soa.mname.to_ascii(), "ns1.mesos.");
    }

    #[test]
    fn existing_names_without_the_type_are_nodata_with_soa() {
        let m = ask("web.marathon.mesos.", RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert!(has_soa(&m));
        let m = ask("web.marathon.mesos.", RecordType::TXT);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let m = ask("mesos.", RecordType::A);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "the apex exists"
        );
    }

    #[test]
    fn srv_answers_carry_target_addresses_in_additional() {
        let m = ask("_web._tcp.marathon.mesos.", RecordType::SRV);
        assert_eq!(m.answers.len(), 2);
        for r in &m.answers {
            let RData::SRV(srv) = &r.data else {
                panic!("not SRV")
            };
            assert_eq!(srv.priority, 0);
            assert_eq!(srv.weight, 1);
            assert!(srv.target.to_ascii().ends_with(".marathon.slave.mesos."));
            assert!(
                m.additionals
                    .iter()
                    .any(|a| a.name == srv.target && matches!(a.data, RData::A(_)))
            );
        }
        let m = ask("_leader._tcp.mesos.", RecordType::SRV);
        assert_eq!(m.additionals.len(), 1);
    }

    #[test]
    fn empty_srv_answers_are_noerror() {
        let m = ask("_nothing._tcp.marathon.mesos.", RecordType::SRV);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert!(has_soa(&m));
    }

    #[test]
    fn soa_and_ns_answers_go_in_the_authority_section() {
        let m = ask("mesos.", RecordType::SOA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty() && has_soa(&m));
        let m = ask("mesos.", RecordType::NS);
        assert!(m.authorities.iter().any(|r| matches!(r.data, RData::NS(_))));
        assert_eq!(m.additionals.len(), 1, "A of ns1.mesos.");
        let m = ask("dcos.thisdcos.directory.", RecordType::SOA);
        assert_eq!(m.authorities[0].name.to_ascii(), "dcos.thisdcos.directory.");
    }

    #[test]
    fn the_dcos_mirror_zone_serves_the_mesos_records_under_its_own_name() {
        let m = ask("leader.mesos.thisdcos.directory.", RecordType::A);
        assert_eq!(ips(&m), ["10.0.0.1"]);
        let m = ask(
            "_web._tcp.marathon.mesos.thisdcos.directory.",
            RecordType::SRV,
        );
        assert_eq!(m.answers.len(), 2);
        for r in &m.answers {
            let RData::SRV(srv) = &r.data else {
                panic!("not SRV")
            };
            assert!(
                srv.target
                    .to_ascii()
                    .ends_with(".marathon.slave.mesos.thisdcos.directory."),
                "{}",
                srv.target
            );
            assert!(m.additionals.iter().any(|a| a.name == srv.target));
        }
        let m = ask("nothing.mesos.thisdcos.directory.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            m.authorities[0].name.to_ascii(),
            "mesos.thisdcos.directory."
        );
    }

    #[test]
    fn any_returns_every_type_of_the_name() {
        let m = ask("leader.mesos.", RecordType::ANY);
        assert_eq!(ips(&m), ["10.0.0.1"]);
    }

    #[test]
    fn answers_are_shuffled() {
        let snap = snapshot(20);
        let cfg = ResponderConfig::default();
        let bytes = query_bytes("web.marathon.mesos.", RecordType::A, None);
        let orders: std::collections::HashSet<Vec<String>> = (0..10)
            .map(|seed| {
                let Verdict::Respond(b) = handle(
                    &bytes,
                    Transport::Udp,
                    &snap,
                    &cfg,
                    &mut StdRng::seed_from_u64(seed),
                ) else {
                    panic!()
                };
                let m = Message::from_vec(&b).unwrap();
                m.answers.iter().map(|r| r.data.to_string()).collect()
            })
            .collect();
        assert!(orders.len() > 1);
    }

    #[test]
    fn big_udp_answers_are_truncated_and_tcp_gets_everything() {
        let snap = snapshot(100);
        let cfg = ResponderConfig::default();
        let (m, len) = ask_with(
            "web.marathon.mesos.",
            RecordType::A,
            None,
            Transport::Udp,
            &cfg,
            &snap,
        );
        assert!(len <= 512);
        assert!(m.metadata.truncation);
        assert!(m.answers.len() < 100 && !m.answers.is_empty());
        let (m, len) = ask_with(
            "web.marathon.mesos.",
            RecordType::A,
            Some(4096),
            Transport::Udp,
            &cfg,
            &snap,
        );
        assert!(len > 512 && len <= 4096);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 100);
        assert!(m.edns.is_some(), "EDNS0 answered with EDNS0");
        let (m, _) = ask_with(
            "web.marathon.mesos.",
            RecordType::A,
            None,
            Transport::Tcp,
            &cfg,
            &snap,
        );
        assert_eq!(m.answers.len(), 100);
        assert!(!m.metadata.truncation);
        let no_tc = ResponderConfig {
            set_truncate_bit: false,
            ..cfg
        };
        let (m, len) = ask_with(
            "web.marathon.mesos.",
            RecordType::A,
            None,
            Transport::Udp,
            &no_tc,
            &snap,
        );
        assert!(len <= 512 && !m.metadata.truncation);
        let small = ResponderConfig {
            max_udp_payload: 1024,
            ..cfg
        };
        let (_, len) = ask_with(
            "web.marathon.mesos.",
            RecordType::A,
            Some(4096),
            Transport::Udp,
            &small,
            &snap,
        );
        assert!(len <= 1024);
    }

    #[test]
    fn names_outside_our_zones_are_forwarded_or_refused() {
        let snap = snapshot(1);
        let cfg = ResponderConfig::default();
        match verdict(
            &query_bytes("example.com.", RecordType::A, None),
            Transport::Udp,
            &snap,
            &cfg,
        ) {
            Verdict::Forward(f) => assert_eq!(f.name, "example.com."),
            other => panic!("{other:?}"),
        }
        let cfg = ResponderConfig {
            external_on: false,
            ..cfg
        };
        let (m, _) = ask_with(
            "example.com.",
            RecordType::A,
            None,
            Transport::Udp,
            &cfg,
            &snap,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        // `notmesos.` must not match the `mesos.` zone.
        let (m, _) = ask_with(
            "notmesos.",
            RecordType::A,
            None,
            Transport::Udp,
            &cfg,
            &snap,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn a_second_producer_serves_the_l4lb_zone() {
        let mut b = RecordSet::builder();
        b.ip(
            "web.marathon.l4lb.thisdcos.directory.",
            "11.0.0.1".parse().unwrap(),
            5,
        );
        let snap = snapshot(1).with_records(Producer::L4lb, Arc::new(b.build()));
        let cfg = ResponderConfig::default();
        let (m, _) = ask_with(
            "web.marathon.l4lb.thisdcos.directory.",
            RecordType::A,
            None,
            Transport::Udp,
            &cfg,
            &snap,
        );
        assert_eq!(ips(&m), ["11.0.0.1"]);
        let (m, _) = ask_with(
            "web.marathon.mesos.",
            RecordType::A,
            None,
            Transport::Udp,
            &cfg,
            &snap,
        );
        assert_eq!(ips(&m), ["9.0.0.1"], "mesos records untouched");
        let (m, _) = ask_with(
            "x.l4lb.thisdcos.directory.",
            RecordType::A,
            None,
            Transport::Udp,
            &cfg,
            &snap,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    fn respond(bytes: &[u8]) -> Option<Message> {
        match verdict(
            bytes,
            Transport::Udp,
            &snapshot(1),
            &ResponderConfig::default(),
        ) {
            Verdict::Respond(b) => Some(Message::from_vec(&b).unwrap()),
            Verdict::Drop => None,
            Verdict::Forward(_) => panic!("unexpected forward"),
        }
    }

    #[test]
    fn hostile_packets_get_formerr_or_are_dropped() {
        assert!(respond(&[]).is_none());
        assert!(
            respond(&[0x12, 0x34, 0x01]).is_none(),
            "shorter than a header"
        );
        let mut resp = query_bytes("web.marathon.mesos.", RecordType::A, None);
        resp[2] |= 0x80;
        assert!(respond(&resp).is_none(), "responses are never answered");
        // Header says one question, body is garbage.
        let mut garbage = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        garbage.extend_from_slice(&[0xff; 7]);
        let m = respond(&garbage).unwrap();
        assert_eq!(m.metadata.id, 0xabcd);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // A compression pointer pointing at itself.
        let looped = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        assert_eq!(
            respond(&looped).unwrap().metadata.response_code,
            ResponseCode::FormErr
        );
        // 65535 questions announced, none present.
        let many = vec![0, 2, 1, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            respond(&many).unwrap().metadata.response_code,
            ResponseCode::FormErr
        );
        // No question at all.
        let none = vec![0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            respond(&none).unwrap().metadata.response_code,
            ResponseCode::FormErr
        );
    }

    #[test]
    fn unsupported_requests_get_the_right_error() {
        let mut two = Message::new(9, MessageType::Query, OpCode::Query);
        two.add_query(Query::query(
            Name::from_ascii("a.mesos.").unwrap(),
            RecordType::A,
        ));
        two.add_query(Query::query(
            Name::from_ascii("b.mesos.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(
            respond(&two.to_vec().unwrap())
                .unwrap()
                .metadata
                .response_code,
            ResponseCode::FormErr
        );
        let mut update = query_bytes("leader.mesos.", RecordType::A, None);
        update[2] = (update[2] & 0x87) | (5 << 3);
        assert_eq!(
            respond(&update).unwrap().metadata.response_code,
            ResponseCode::NotImp
        );
        let mut chaos = Message::new(9, MessageType::Query, OpCode::Query);
        let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        chaos.add_query(q);
        assert_eq!(
            respond(&chaos.to_vec().unwrap())
                .unwrap()
                .metadata
                .response_code,
            ResponseCode::Refused
        );
        let mut v1 =
            Message::from_vec(&query_bytes("leader.mesos.", RecordType::A, Some(1232))).unwrap();
        if let Some(e) = v1.edns.as_mut() {
            e.set_version(1);
        }
        // BADVERS and BADSIG share code 16.
        assert_eq!(
            u16::from(
                respond(&v1.to_vec().unwrap())
                    .unwrap()
                    .metadata
                    .response_code
            ),
            16
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let snap = snapshot(3);
            let cfg = ResponderConfig::default();
            for t in [Transport::Udp, Transport::Tcp] {
                if let Verdict::Respond(b) = handle(&bytes, t, &snap, &cfg, &mut StdRng::seed_from_u64(0)) {
                    prop_assert!(b.len() >= 12);
                    prop_assert_eq!(&b[..2], &bytes[..2]);
                }
            }
        }

        #[test]
        fn mutated_queries_never_panic(
            qtype in any::<u16>(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        ) {
            let mut bytes = query_bytes("_web._tcp.marathon.mesos.", RecordType::from(qtype), Some(512));
            for (i, x) in flips {
                let n = bytes.len();
                bytes[i % n] ^= x;
            }
            let _ = handle(&bytes, Transport::Udp, &snapshot(3), &ResponderConfig::default(), &mut StdRng::seed_from_u64(0));
        }
    }
}
