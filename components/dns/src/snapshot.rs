//! What the responder answers from: the authoritative zones and the record sets of every
//! producer, frozen in one immutable [`Snapshot`] that the server swaps atomically.
//!
//! Records are keyed by producer so a second source (the load balancer's VIP names in
//! `l4lb.thisdcos.directory`) can publish without touching the Mesos records.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::SOA;

use crate::records::{NameRecords, RecordSet, Srv};

/// Who produced a record set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Producer {
    /// Records synthesised from the Mesos cluster state.
    Mesos,
    /// Records of another producer in `l4lb.thisdcos.directory` (named VIPs themselves are
    /// synthesised with the Mesos records).
    L4lb,
}

/// SOA fields shared by every zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoaParams {
    /// Primary name server, fully qualified (`ns1.mesos.`).
    pub mname: String,
    /// Responsible mailbox as a name (`root.ns1.mesos.`).
    pub rname: String,
    pub refresh: i32,
    pub retry: i32,
    pub expire: i32,
}

/// One zone we are authoritative for.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lower-cased apex with trailing dot (`mesos.`).
    pub apex: String,
    pub apex_name: Name,
    /// TTL of the SOA/NS records.
    pub ttl: u32,
    /// The SOA `minimum` and the TTL of the SOA sent with NXDOMAIN and NODATA: how long a
    /// resolver may cache a denial (RFC 2308). At most `ttl`.
    pub negative_ttl: u32,
    pub mname: Name,
    pub rname: Name,
    /// For a mirror zone, the apex of the zone whose records it serves under its own name
    /// (`mesos.thisdcos.directory.` mirrors `mesos.`, as DC/OS does).
    pub mirror_of: Option<String>,
}

impl Zone {
    /// A zone answering with the records of `target` (`x.<apex>` is `x.<target>`).
    pub fn mirror(
        apex: &str,
        target: &str,
        ttl: u32,
        soa: &SoaParams,
    ) -> Result<Zone, hickory_proto::ProtoError> {
        let mut z = Zone::new(apex, ttl, soa)?;
        z.mirror_of = Some(fqdn(target));
        Ok(z)
    }

    /// The name to look up for `name` in this zone (itself, unless this is a mirror).
    pub fn source_name<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.mirror_of {
            Some(target) if self.contains(name) => {
                let prefix = &name[..name.len() - self.apex.len()];
                std::borrow::Cow::Owned(format!("{prefix}{target}"))
            }
            _ => std::borrow::Cow::Borrowed(name),
        }
    }

    /// How a name from the source zone is shown in this zone (SRV targets of a mirror).
    pub fn shown_name<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.mirror_of {
            Some(target)
                if name == target
                    || (name.ends_with(target.as_str())
                        && name
                            .as_bytes()
                            .get(name.len().wrapping_sub(target.len() + 1))
                            == Some(&b'.')) =>
            {
                let prefix = &name[..name.len() - target.len()];
                std::borrow::Cow::Owned(format!("{prefix}{}", self.apex))
            }
            _ => std::borrow::Cow::Borrowed(name),
        }
    }
    /// The same zone with denials cacheable for at most `secs` (never longer than `ttl`;
    /// without this, as in Mesos-DNS, the negative-caching TTL is the zone's `ttl`).
    pub fn with_negative_ttl(mut self, secs: u32) -> Zone {
        self.negative_ttl = secs.min(self.ttl);
        self
    }

    /// Builds a zone; `apex` without trailing dot is accepted.
    pub fn new(apex: &str, ttl: u32, soa: &SoaParams) -> Result<Zone, hickory_proto::ProtoError> {
        let apex = fqdn(apex);
        Ok(Zone {
            apex_name: Name::from_ascii(&apex)?,
            apex,
            ttl,
            negative_ttl: ttl,
            mname: Name::from_ascii(fqdn(&soa.mname))?,
            rname: Name::from_ascii(fqdn(&soa.rname.replace('@', ".")))?,
            mirror_of: None,
        })
    }

    /// Whether `name` (lower case, trailing dot) lies in this zone.
    pub fn contains(&self, name: &str) -> bool {
        name == self.apex
            || (name.len() > self.apex.len()
                && name.ends_with(&self.apex)
                && name.as_bytes()[name.len() - self.apex.len() - 1] == b'.')
    }

    pub fn soa(&self, serial: u32, soa: &SoaParams) -> SOA {
        SOA::new(
            self.mname.clone(),
            self.rname.clone(),
            serial,
            soa.refresh,
            soa.retry,
            soa.expire,
            self.negative_ttl,
        )
    }
}

/// Lower-cases and appends the trailing dot if missing.
pub fn fqdn(name: &str) -> String {
    let mut s = name.trim().to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// Everything the responder reads; immutable once built.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Longest apex first, so the most specific zone wins.
    pub zones: Vec<Zone>,
    pub soa: SoaParams,
    pub serial: u32,
    pub producers: Vec<(Producer, Arc<RecordSet>)>,
}

/// The merged view of one name across producers.
#[derive(Debug, Default)]
pub struct Found<'a> {
    pub parts: Vec<&'a NameRecords>,
}

impl<'a> Found<'a> {
    pub fn exists(&self) -> bool {
        self.parts.iter().any(|p| !p.is_empty())
    }

    pub fn a(&self) -> impl Iterator<Item = (Ipv4Addr, u32)> + '_ {
        self.parts
            .iter()
            .flat_map(|p| p.a.iter().map(move |ip| (*ip, p.ttl)))
    }

    pub fn aaaa(&self) -> impl Iterator<Item = (Ipv6Addr, u32)> + '_ {
        self.parts
            .iter()
            .flat_map(|p| p.aaaa.iter().map(move |ip| (*ip, p.ttl)))
    }

    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.a()
            .map(|(ip, _)| IpAddr::V4(ip))
            .chain(self.aaaa().map(|(ip, _)| IpAddr::V6(ip)))
    }

    pub fn srv(&self) -> impl Iterator<Item = (&'a Srv, u32)> + '_ {
        self.parts
            .iter()
            .flat_map(|p| p.srv.iter().map(move |s| (s, p.ttl)))
    }
}

impl Snapshot {
    /// A snapshot with zones but no records yet.
    pub fn new(mut zones: Vec<Zone>, soa: SoaParams, serial: u32) -> Snapshot {
        zones.sort_by_key(|z| std::cmp::Reverse(z.apex.len()));
        Snapshot {
            zones,
            soa,
            serial,
            producers: Vec::new(),
        }
    }

    /// The zone containing `name` (lower case, trailing dot).
    pub fn zone_of(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.contains(name))
    }

    /// Everything every producer has for `name` (lower case, trailing dot).
    pub fn lookup(&self, name: &str) -> Found<'_> {
        Found {
            parts: self
                .producers
                .iter()
                .filter_map(|(_, rs)| rs.get(name))
                .collect(),
        }
    }

    /// A copy with `producer`'s records replaced and the serial bumped.
    pub fn with_records(&self, producer: Producer, records: Arc<RecordSet>) -> Snapshot {
        let mut next = self.clone();
        next.producers.retain(|(p, _)| *p != producer);
        next.producers.push((producer, records));
        next.producers.sort_by_key(|(p, _)| *p);
        next.serial = next.serial.wrapping_add(1);
        next
    }

    /// The record set of one producer.
    pub fn records(&self, producer: Producer) -> Option<&Arc<RecordSet>> {
        self.producers
            .iter()
            .find(|(p, _)| *p == producer)
            .map(|(_, rs)| rs)
    }
}
