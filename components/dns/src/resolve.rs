//! The DNS responder: a parsed request in, a response already cut to the transport's limit
//! (or "forward this") out. Pure and synchronous: [`respond`] is what the server's
//! hickory-server request handler calls on every query; [`handle`] wraps it with the wire
//! rules (bytes in, bytes out) for the table and fuzz tests.
//!
//! Behaviour follows Mesos-DNS (api-compat §7.2): authoritative for our zones, SOA in the
//! authority section on NXDOMAIN and NODATA, NOERROR for empty SRV answers, SOA/NS answers in
//! the authority section, shuffled answers, the first A/AAAA of each SRV target in the
//! additional section, EDNS0 payload sizes honoured and the TC bit set when a UDP answer had to
//! be cut. Malformed requests get FORMERR when they carry a readable header and are dropped
//! otherwise; responses are never answered.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
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
    /// The request (id, flags, question, EDNS).
    pub request: Message,
    /// Lower-cased query name with trailing dot.
    pub name: String,
    /// The most bytes the client can take over this transport.
    pub max_size: usize,
}

/// What to do with a request's bytes.
#[derive(Debug)]
pub enum Verdict {
    /// Send these bytes back.
    Respond(Vec<u8>),
    /// Ask upstream resolvers.
    Forward(Box<ForwardRequest>),
    /// Say nothing (unreadable header, or not a query).
    Drop,
}

/// A parsed request as the responder reads it, borrowed from whichever parser decoded it
/// (hickory-proto's [`Message`] here and in the tests, hickory-server's request in the server).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The header (id, opcode, flags).
    pub metadata: Metadata,
    /// How many questions the request carries.
    pub query_count: usize,
    /// The first question, if any.
    pub query: Option<&'a Query>,
    /// The request's EDNS OPT record, if any.
    pub edns: Option<&'a Edns>,
}

impl<'a> Request<'a> {
    /// The responder's view of a parsed message.
    pub fn of(message: &'a Message) -> Request<'a> {
        Request {
            metadata: message.metadata,
            query_count: message.queries.len(),
            query: message.queries.first(),
            edns: message.edns.as_ref(),
        }
    }

    /// The request as a message of its own (what a forwarded query carries along).
    fn to_message(self) -> Message {
        let mut m = Message::new(
            self.metadata.id,
            self.metadata.message_type,
            self.metadata.op_code,
        );
        m.metadata = self.metadata;
        m.queries.extend(self.query.cloned());
        m.edns = self.edns.cloned();
        m
    }

    /// The most bytes the client takes over `transport` (EDNS0 raises UDP's 512, up to our
    /// `max_udp_payload`).
    pub fn max_size(&self, transport: Transport, cfg: &ResponderConfig) -> usize {
        match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => {
                let offered = self.edns.map_or(512, Edns::max_payload);
                usize::from(offered.clamp(512, cfg.max_udp_payload.max(512)))
            }
        }
    }
}

/// An answer ready to encode: the header and the sections after the question, already cut
/// to what the transport takes (so an encoder honouring the same limit never cuts further).
#[derive(Debug, Clone)]
pub struct Response {
    pub metadata: Metadata,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    pub edns: Option<Edns>,
    /// Whether the request's question is echoed: always, unless even the bare question did
    /// not fit (a huge name over a tiny limit, which the 512-byte floor rules out in practice).
    pub echo_question: bool,
}

impl Response {
    /// The response with `question` echoed, as a message.
    pub fn into_message(self, question: Option<&Query>) -> Message {
        let mut m = Message::new(
            self.metadata.id,
            self.metadata.message_type,
            self.metadata.op_code,
        );
        m.metadata = self.metadata;
        if self.echo_question {
            m.queries.extend(question.cloned());
        }
        m.answers = self.answers;
        m.authorities = self.authorities;
        m.additionals = self.additionals;
        m.edns = self.edns;
        m
    }

    /// The sections of `msg` (its question is the request's and is not kept).
    pub fn from_message(msg: Message) -> Response {
        Response {
            echo_question: !msg.queries.is_empty(),
            metadata: msg.metadata,
            answers: msg.answers,
            authorities: msg.authorities,
            additionals: msg.additionals,
            edns: msg.edns,
        }
    }

    /// Cut to `max_size` as [`encode`] cuts (`question` is the request's). Most answers are
    /// far below the limit, which an upper bound of their size shows without encoding them.
    pub fn fit(self, question: Option<&Query>, max_size: usize, cfg: &ResponderConfig) -> Response {
        if size_bound(&self, question).is_some_and(|n| n <= max_size) {
            return self;
        }
        let mut msg = self.into_message(question);
        cut(&mut msg, max_size, cfg);
        Response::from_message(msg)
    }

    /// The wire form, with `question` echoed.
    pub fn into_bytes(self, question: Option<&Query>) -> Vec<u8> {
        let msg = self.into_message(question);
        msg.to_vec().unwrap_or_else(|_| server_failure(&msg))
    }
}

/// What the responder decided for a parsed request.
#[derive(Debug)]
pub enum Outcome {
    /// Send this answer back.
    Respond(Response),
    /// Ask upstream resolvers.
    Forward(Box<ForwardRequest>),
}

/// Loopback and the private ranges: who may have outside names forwarded by default.
pub fn private_networks() -> Vec<ipnet::IpNet> {
    [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .filter_map(|n| n.parse().ok())
    .collect()
}

/// Whether a client at `source` may have a name outside our zones forwarded. An IPv4 client
/// of a dual-stack socket (`::ffff:a.b.c.d`) is judged by its IPv4 address.
pub fn may_forward(source: std::net::IpAddr, allowed: &[ipnet::IpNet]) -> bool {
    let source = match source {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    allowed.iter().any(|net| net.contains(&source))
}

/// The REFUSED answer to `request` (a client that may not have it forwarded).
pub fn refused(request: &Request<'_>, transport: Transport, cfg: &ResponderConfig) -> Response {
    let mut resp = response_to(request, cfg);
    resp.metadata.response_code = ResponseCode::Refused;
    resp.fit(request.query, request.max_size(transport, cfg), cfg)
}

/// Handles one request message given as bytes: [`respond`] behind the parse, with the
/// wire-level rules of a server in front (runts and responses are dropped, an unreadable
/// body gets a bare FORMERR header).
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
    let message = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => return Verdict::Respond(formerr_header(bytes)),
    };
    let request = Request::of(&message);
    match respond(&request, transport, snap, cfg, rng) {
        Outcome::Respond(resp) => Verdict::Respond(resp.into_bytes(request.query)),
        Outcome::Forward(f) => Verdict::Forward(f),
    }
}

/// Answers one parsed request from `snap`, or says to forward it. Pure: the same request,
/// snapshot and random source give the same answer.
pub fn respond(
    request: &Request<'_>,
    transport: Transport,
    snap: &Snapshot,
    cfg: &ResponderConfig,
    rng: &mut impl Rng,
) -> Outcome {
    let max_size = request.max_size(transport, cfg);
    let mut resp = response_to(request, cfg);
    let fail = |mut resp: Response, code: ResponseCode| {
        resp.metadata.response_code = code;
        Outcome::Respond(resp.fit(request.query, max_size, cfg))
    };
    if request.metadata.op_code != OpCode::Query {
        return fail(resp, ResponseCode::NotImp);
    }
    let (1, Some(query)) = (request.query_count, request.query) else {
        return fail(resp, ResponseCode::FormErr);
    };
    if request.edns.is_some_and(|e| e.version() > 0) {
        return fail(resp, ResponseCode::BADVERS);
    }
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return fail(resp, ResponseCode::Refused);
    }
    let name = clean_name(query.name());
    let Some(zone) = snap.zone_of(&name) else {
        if cfg.external_on {
            return Outcome::Forward(Box::new(ForwardRequest {
                request: request.to_message(),
                name,
                max_size,
            }));
        }
        return fail(resp, ResponseCode::Refused);
    };
    answer(&mut resp, query, &name, zone, snap, rng);
    Outcome::Respond(resp.fit(Some(query), max_size, cfg))
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

/// The response skeleton: id, opcode, RD and CD echoed, EDNS if the client used it.
fn response_to(request: &Request<'_>, cfg: &ResponderConfig) -> Response {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.recursion_desired = request.metadata.recursion_desired;
    metadata.recursion_available = cfg.recurse_on;
    metadata.checking_disabled = request.metadata.checking_disabled;
    let edns = request.edns.map(|_| {
        let mut edns = Edns::new();
        edns.set_max_payload(cfg.max_udp_payload.max(512));
        edns
    });
    Response {
        metadata,
        answers: Vec::new(),
        authorities: Vec::new(),
        additionals: Vec::new(),
        edns,
        echo_question: true,
    }
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
    resp: &mut Response,
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
    // A denial carries the SOA with the negative-caching TTL, so resolvers honouring either
    // the record's TTL or its `minimum` (RFC 2308 §3 takes the smaller) cache it as briefly.
    let soa_record = |ttl: u32| {
        Record::from_rdata(
            zone.apex_name.clone(),
            ttl,
            RData::SOA(zone.soa(snap.serial, &snap.soa)),
        )
    };
    match qtype {
        RecordType::SOA => {
            resp.authorities.push(soa_record(zone.ttl));
        }
        RecordType::NS => {
            resp.authorities.push(Record::from_rdata(
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
            resp.authorities.push(soa_record(zone.negative_ttl));
        }
        _ => {
            if !found.exists() && name != zone.apex {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            resp.authorities.push(soa_record(zone.negative_ttl));
        }
    }
    resp.answers = answers;
    resp.additionals = extra;
}

/// An upper bound of the encoded size (names uncompressed); `None` for record types it does
/// not know.
fn size_bound(resp: &Response, question: Option<&Query>) -> Option<usize> {
    let name = |n: &Name| n.len() + 1;
    let record = |r: &Record| -> Option<usize> {
        let data = match &r.data {
            RData::A(_) => 4,
            RData::AAAA(_) => 16,
            RData::SRV(s) => 6 + name(&s.target),
            RData::NS(ns) => name(&ns.0),
            RData::SOA(s) => name(&s.mname) + name(&s.rname) + 20,
            _ => return None,
        };
        Some(name(&r.name) + 10 + data)
    };
    let mut n = 12;
    if resp.echo_question
        && let Some(q) = question
    {
        n += name(q.name()) + 4;
    }
    for r in resp
        .answers
        .iter()
        .chain(&resp.authorities)
        .chain(&resp.additionals)
    {
        n += record(r)?;
    }
    if let Some(edns) = &resp.edns {
        if !edns.options().options.is_empty() {
            return None;
        }
        n += 11;
    }
    Some(n)
}

/// Encodes `msg`, cutting it to `max_size`: additionals go first, then answers from the end;
/// TC is set when answers had to go (if configured).
pub fn encode(mut msg: Message, max_size: usize, cfg: &ResponderConfig) -> Vec<u8> {
    cut(&mut msg, max_size, cfg)
}

/// Cuts `msg` to `max_size` as [`encode`] describes, leaving it as sent; its wire form.
fn cut(msg: &mut Message, max_size: usize, cfg: &ResponderConfig) -> Vec<u8> {
    let full = match msg.to_vec() {
        Ok(b) => b,
        Err(_) => {
            let failure = server_failure(msg);
            if let Ok(m) = Message::from_vec(&failure) {
                *msg = m;
            }
            return failure;
        }
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
                best = Some((mid, b));
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
        Some((count, b)) => {
            msg.answers = answers;
            msg.answers.truncate(count);
            b
        }
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
mod fuzz;

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

    pub(super) fn snapshot(instances: usize) -> Snapshot {
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
    fn denials_are_cacheable_only_for_the_negative_ttl() {
        let base = snapshot(2);
        let zones = base
            .zones
            .iter()
            .cloned()
            .map(|z| z.with_negative_ttl(5))
            .collect();
        let snap = Snapshot::new(zones, soa(), 7).with_records(
            Producer::Mesos,
            base.records(Producer::Mesos).unwrap().clone(),
        );
        let ask = |name: &str, qtype| {
            ask_with(
                name,
                qtype,
                None,
                Transport::Udp,
                &ResponderConfig::default(),
                &snap,
            )
            .0
        };
        let authority_soa = |m: &Message| {
            m.authorities
                .iter()
                .find_map(|r| match &r.data {
                    RData::SOA(s) => Some((r.ttl, s.minimum)),
                    _ => None,
                })
                .expect("an SOA in authority")
        };
        let nx = ask("nope.marathon.mesos.", RecordType::A);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(authority_soa(&nx), (5, 5), "(record TTL, minimum)");
        let nodata = ask("web.marathon.mesos.", RecordType::AAAA);
        assert_eq!(authority_soa(&nodata), (5, 5));
        let mirror = ask("nope.marathon.mesos.thisdcos.directory.", RecordType::A);
        assert_eq!(authority_soa(&mirror), (5, 5));
        // Positive answers and the SOA itself keep the zone's TTL.
        let web = ask("web.marathon.mesos.", RecordType::A);
        assert!(web.answers.iter().all(|r| r.ttl == 60));
        assert_eq!(authority_soa(&ask("mesos.", RecordType::SOA)), (60, 5));
        // Never longer than the records' own TTL.
        let z = Zone::new("mesos", 3, &soa()).unwrap().with_negative_ttl(5);
        assert_eq!(z.negative_ttl, 3);
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

    fn respond_tcp(
        name: &str,
        qtype: RecordType,
        edns: Option<u16>,
        snap: &Snapshot,
    ) -> (Message, Response) {
        let msg = Message::from_vec(&query_bytes(name, qtype, edns)).unwrap();
        let outcome = super::respond(
            &Request::of(&msg),
            Transport::Tcp,
            snap,
            &ResponderConfig::default(),
            &mut StdRng::seed_from_u64(1),
        );
        let Outcome::Respond(resp) = outcome else {
            panic!("expected an answer for {name}")
        };
        (msg, resp)
    }

    #[test]
    fn the_size_bound_is_never_below_the_encoded_size() {
        let snap = snapshot(30);
        let cases = [
            ("web.marathon.mesos.", RecordType::A),
            ("web.marathon.mesos.", RecordType::ANY),
            ("_web._tcp.marathon.mesos.", RecordType::SRV),
            (
                "_web._tcp.marathon.mesos.thisdcos.directory.",
                RecordType::SRV,
            ),
            ("mesos.", RecordType::SOA),
            ("mesos.", RecordType::NS),
            ("nope.marathon.mesos.", RecordType::A),
            ("web.marathon.mesos.", RecordType::AAAA),
            ("_nothing._tcp.marathon.mesos.", RecordType::SRV),
        ];
        for (name, qtype) in cases {
            for edns in [None, Some(4096)] {
                let (msg, resp) = respond_tcp(name, qtype, edns, &snap);
                let question = msg.queries.first();
                let bound = size_bound(&resp, question).expect("known record types");
                let len = resp.into_bytes(question).len();
                assert!(
                    len <= bound,
                    "{name} {qtype}: {len} bytes over a bound of {bound}"
                );
            }
        }
    }

    #[test]
    fn a_parsed_request_gets_the_same_answer_as_its_bytes() {
        let snap = snapshot(3);
        let cfg = ResponderConfig::default();
        for (name, qtype) in [
            ("web.marathon.mesos.", RecordType::A),
            ("_web._tcp.marathon.mesos.", RecordType::SRV),
            ("nope.marathon.mesos.", RecordType::A),
        ] {
            let bytes = query_bytes(name, qtype, Some(1232));
            let Verdict::Respond(from_bytes) = verdict(&bytes, Transport::Udp, &snap, &cfg) else {
                panic!("expected an answer")
            };
            let msg = Message::from_vec(&bytes).unwrap();
            let Outcome::Respond(resp) = super::respond(
                &Request::of(&msg),
                Transport::Udp,
                &snap,
                &cfg,
                &mut StdRng::seed_from_u64(1),
            ) else {
                panic!("expected an answer")
            };
            assert_eq!(resp.into_bytes(msg.queries.first()), from_bytes);
        }
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
        fn answers_never_exceed_the_limit(
            instances in 1usize..150,
            srv in any::<bool>(),
            edns in proptest::option::of(0u16..5000),
            max_udp_payload in 0u16..5000,
            set_truncate_bit in any::<bool>(),
        ) {
            let snap = snapshot(instances);
            let cfg = ResponderConfig { max_udp_payload, set_truncate_bit, ..ResponderConfig::default() };
            let (name, qtype) = if srv {
                ("_web._tcp.marathon.mesos.", RecordType::SRV)
            } else {
                ("web.marathon.mesos.", RecordType::A)
            };
            let msg = Message::from_vec(&query_bytes(name, qtype, edns)).unwrap();
            let request = Request::of(&msg);
            let max = request.max_size(Transport::Udp, &cfg);
            prop_assert!(max >= 512);
            let Outcome::Respond(resp) = super::respond(&request, Transport::Udp, &snap, &cfg, &mut StdRng::seed_from_u64(0)) else {
                panic!("expected an answer")
            };
            let kept = resp.answers.len();
            let truncation = resp.metadata.truncation;
            let bytes = resp.into_bytes(request.query);
            prop_assert!(bytes.len() <= max, "{} bytes over {}", bytes.len(), max);
            prop_assert!(kept > 0);
            if kept < instances {
                prop_assert_eq!(truncation, set_truncate_bit);
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

    #[test]
    fn only_clients_from_allowed_networks_have_names_forwarded() {
        let private = private_networks();
        let only_ten: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // (source, allowed networks, may forward)
        let table: [(&str, &[ipnet::IpNet], bool); 10] = [
            ("127.0.0.1", &private, true),
            ("10.1.2.3", &private, true),
            ("172.31.255.1", &private, true),
            ("192.168.1.1", &private, true),
            ("100.64.0.9", &private, true),
            ("8.8.8.8", &private, false),
            ("2001:db8::1", &private, false),
            ("::ffff:10.0.0.1", &only_ten, true),
            ("127.0.0.1", &only_ten, false),
            ("10.0.0.1", &[], false),
        ];
        for (source, allowed, want) in table {
            let ip: std::net::IpAddr = source.parse().unwrap();
            assert_eq!(may_forward(ip, allowed), want, "{source} in {allowed:?}");
        }
    }
}
