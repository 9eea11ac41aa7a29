//! Record synthesis: a pure function from a [`ClusterState`] to a [`RecordSet`], following
//! Mesos-DNS's generator (`records/generator.go`) for the `mesos` domain and dcos-net for the
//! DC/OS `dcos.thisdcos.directory` zone (api-compat §7.1, §7.5), and the named VIPs of
//! `l4lb.thisdcos.directory` from the shared VIP function ([`capstan_types::vip`]), the very
//! function the load balancer programs its data plane from, so both agree on every name and
//! address without talking to each other.
//!
//! A [`RecordSet`] maps lower-cased fully qualified names (trailing dot) to their A, AAAA and
//! SRV data, so a lookup is one hash probe. It also keeps the per-task enumeration behind
//! `/v1/enumerate`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use capstan_types::vip::{VIP_TTL, VipConfig};

use crate::labels::{LabelSpec, task_hash};
use crate::model::{ClusterState, IpSource, Task, TaskState};

/// The DC/OS task zone.
pub const DCOS_ZONE: &str = "dcos.thisdcos.directory";
/// DC/OS's mirror of the Mesos-DNS domain (`leader.mesos.thisdcos.directory`).
pub const MESOS_MIRROR_ZONE: &str = "mesos.thisdcos.directory";
/// The DC/OS load-balancer zone: named VIPs, synthesised with the rest.
pub const L4LB_ZONE: &str = capstan_types::vip::L4LB_ZONE;

/// What synthesis needs to know beyond the cluster state.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// The Mesos-DNS domain, lower case, without dots at the ends (`mesos`).
    pub domain: String,
    pub spec: LabelSpec,
    pub ip_sources: Vec<IpSource>,
    /// TTL of records in `domain`.
    pub ttl: u32,
    /// Weight of every SRV record.
    pub srv_weight: u16,
    /// Also build the `dcos.thisdcos.directory` zone.
    pub dcos_zone: bool,
    /// TTL of records in the DC/OS zone.
    pub dcos_ttl: u32,
    /// Fully qualified name of this server (`ns1.mesos.`) and the addresses it answers with.
    pub self_name: String,
    pub self_ips: Vec<IpAddr>,
    /// Leave out tasks that have a health check and are not reported healthy (off in
    /// Mesos-DNS, which ignores health).
    pub require_healthy: bool,
    /// Serve named VIPs in `l4lb.thisdcos.directory` (A/AAAA, TTL 5 s).
    pub l4lb_zone: bool,
    /// Address ranges of named VIPs; must equal the load balancer's on every node.
    pub vip: VipConfig,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            domain: "mesos".into(),
            spec: LabelSpec::Rfc1123,
            ip_sources: vec![IpSource::Netinfo, IpSource::Mesos, IpSource::Host],
            ttl: 60,
            srv_weight: 1,
            dcos_zone: true,
            dcos_ttl: 5,
            self_name: "ns1.mesos.".into(),
            self_ips: Vec::new(),
            require_healthy: false,
            l4lb_zone: true,
            vip: VipConfig::default(),
        }
    }
}

/// One SRV record's data (priority is always 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Srv {
    /// Fully qualified target name with trailing dot, shared by every record naming it.
    pub target: Arc<str>,
    pub port: u16,
    pub weight: u16,
}

/// Everything one name resolves to. Boxed slices, not vectors: a cluster has hundreds of
/// thousands of names, and each slice is exactly as long as its records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameRecords {
    pub ttl: u32,
    pub a: Box<[Ipv4Addr]>,
    pub aaaa: Box<[Ipv6Addr]>,
    pub srv: Box<[Srv]>,
}

impl NameRecords {
    pub fn is_empty(&self) -> bool {
        self.a.is_empty() && self.aaaa.is_empty() && self.srv.is_empty()
    }
}

/// A task in `/v1/enumerate`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnumTask {
    pub name: String,
    pub id: String,
    pub records: Vec<EnumRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct EnumRecord {
    pub name: String,
    pub host: String,
    pub rtype: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnumFramework {
    pub name: String,
    pub tasks: Vec<EnumTask>,
}

/// Synthesised records, keyed by lower-cased FQDN.
#[derive(Debug, Clone, Default)]
pub struct RecordSet {
    names: HashMap<Box<str>, NameRecords>,
    /// What the records were made from, for the (rare) `/v1/enumerate`: listing every
    /// task's records eagerly would double the cost of each update.
    source: Option<(Arc<ClusterState>, Arc<SynthConfig>)>,
}

impl RecordSet {
    /// Records of `fqdn` (lower case, trailing dot).
    pub fn get(&self, fqdn: &str) -> Option<&NameRecords> {
        self.names.get(fqdn)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &NameRecords)> {
        self.names.iter().map(|(k, v)| (&**k, v))
    }

    /// Frameworks, their running tasks and each task's records (`/v1/enumerate`).
    pub fn enumeration(&self) -> Vec<EnumFramework> {
        match &self.source {
            Some(src) => generate(&src.0, &src.1, true).1,
            None => Vec::new(),
        }
    }

    /// Starts an empty set for another producer (e.g. the load balancer's VIP names).
    pub fn builder() -> RecordSetBuilder {
        RecordSetBuilder::default()
    }
}

/// A name's records while building: plain vectors (sorted and deduplicated once, in
/// [`RecordSetBuilder::build`]); a set per name would cost a tree node per record.
#[derive(Debug, Default)]
struct Building {
    ttl: u32,
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    srv: Vec<Srv>,
}

/// Sorts and drops duplicates.
fn settle<T: Ord>(mut v: Vec<T>) -> Box<[T]> {
    v.sort_unstable();
    v.dedup();
    v.into_boxed_slice()
}

/// Accumulates records; duplicates collapse.
#[derive(Debug, Default)]
pub struct RecordSetBuilder {
    names: HashMap<String, Building>,
    /// SRV targets, interned (a task's host name is the target of several SRV names).
    targets: HashSet<Arc<str>>,
}

impl RecordSetBuilder {
    fn entry(&mut self, name: &str, ttl: u32) -> &mut Building {
        let key = lower(name);
        // Look up by reference first: most names repeat (one per instance of an app).
        if self.names.contains_key(key.as_ref()) {
            return self.names.get_mut(key.as_ref()).expect("checked above");
        }
        self.names
            .entry(key.into_owned())
            .or_insert_with(|| Building {
                ttl,
                ..Default::default()
            })
    }

    /// Adds an A or AAAA record.
    pub fn ip(&mut self, name: &str, ip: IpAddr, ttl: u32) {
        let e = self.entry(name, ttl);
        match ip {
            IpAddr::V4(v4) => e.a.push(v4),
            IpAddr::V6(v6) => e.aaaa.push(v6),
        }
    }

    /// Adds an SRV record.
    pub fn srv(&mut self, name: &str, target: &str, port: u16, weight: u16, ttl: u32) {
        let target = lower(target);
        let target = match self.targets.get(target.as_ref()) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = target.into();
                self.targets.insert(t.clone());
                t
            }
        };
        self.entry(name, ttl).srv.push(Srv {
            target,
            port,
            weight,
        });
    }

    pub fn build(self) -> RecordSet {
        RecordSet {
            names: self
                .names
                .into_iter()
                .map(|(k, b)| {
                    (
                        k.into_boxed_str(),
                        NameRecords {
                            ttl: b.ttl,
                            a: settle(b.a),
                            aaaa: settle(b.aaaa),
                            srv: settle(b.srv),
                        },
                    )
                })
                .collect(),
            source: None,
        }
    }
}

/// `s` in lower case, borrowed when it already is.
fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// The last `-`-separated part of an agent id, lower-cased (`…-S3` → `s3`).
pub fn slave_id_tail(agent_id: &str) -> String {
    agent_id
        .rsplit('-')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Builds every record of the cluster.
pub fn synthesize(state: &ClusterState, cfg: &SynthConfig) -> RecordSet {
    synthesize_shared(Arc::new(state.clone()), Arc::new(cfg.clone()))
}

/// [`synthesize`] for a state the caller already shares; the set keeps a reference to it.
pub fn synthesize_shared(state: Arc<ClusterState>, cfg: Arc<SynthConfig>) -> RecordSet {
    let mut set = generate(&state, &cfg, false).0.build();
    set.source = Some((state, cfg));
    set
}

/// Runs the generator; with `collect`, also lists every task's records.
fn generate(
    state: &ClusterState,
    cfg: &SynthConfig,
    collect: bool,
) -> (RecordSetBuilder, Vec<EnumFramework>) {
    let mut g = Gen {
        cfg,
        b: RecordSetBuilder::default(),
        tail: format!(".{}.", cfg.domain),
        collect,
    };
    g.masters(state);
    g.agents(state);
    g.frameworks(state);
    for ip in &cfg.self_ips {
        g.b.ip(&cfg.self_name, *ip, cfg.ttl);
    }
    let mut enumeration: Vec<EnumFramework> = state
        .frameworks
        .values()
        .map(|f| EnumFramework {
            name: f.name.clone(),
            tasks: Vec::new(),
        })
        .collect();
    let fw_index: HashMap<&str, usize> = state
        .frameworks
        .keys()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for task in state.tasks.values() {
        if task.state != Some(TaskState::Running) {
            continue;
        }
        if cfg.require_healthy
            && task.has_health_check
            && task.latest_status().and_then(|s| s.healthy) != Some(true)
        {
            continue;
        }
        let Some(&fi) = fw_index.get(task.framework_id.as_str()) else {
            continue;
        };
        let Some(fw) = state.frameworks.get(&task.framework_id) else {
            continue;
        };
        let Some(agent) = state.agents.get(&task.agent_id) else {
            continue;
        };
        let mut records = Vec::new();
        g.task(task, &fw.name, agent.ip, &mut records);
        if cfg.dcos_zone {
            g.dcos_task(task, &fw.name, agent.ip);
        }
        if collect {
            records.sort();
            records.dedup();
            enumeration[fi].tasks.push(EnumTask {
                name: task.name.clone(),
                id: task.id.clone(),
                records,
            });
        }
    }
    if cfg.dcos_zone {
        g.dcos_masters(state);
    }
    if cfg.l4lb_zone {
        g.l4lb(state);
    }
    (g.b, enumeration)
}

struct Gen<'a> {
    cfg: &'a SynthConfig,
    b: RecordSetBuilder,
    /// `.<domain>.`
    tail: String,
    /// Also list each task's records (for `/v1/enumerate`).
    collect: bool,
}

impl Gen<'_> {
    fn a(&mut self, name: &str, ip: IpAddr) {
        self.b.ip(name, ip, self.cfg.ttl);
    }

    fn srv(&mut self, name: &str, target: &str, port: u16) {
        self.b
            .srv(name, target, port, self.cfg.srv_weight, self.cfg.ttl);
    }

    fn masters(&mut self, state: &ClusterState) {
        let d = &self.cfg.domain;
        let master = format!("master.{d}.");
        if let Some(leader) = state.leader {
            let name = format!("leader.{d}.");
            self.a(&name, leader.ip());
            self.a(&master, leader.ip());
            self.srv(&format!("_leader._tcp.{d}."), &name, leader.port());
            self.srv(&format!("_leader._udp.{d}."), &name, leader.port());
        }
        let mut leader_listed = false;
        let mut idx = 0;
        for m in &state.masters {
            leader_listed |= Some(*m) == state.leader;
            self.a(&format!("master{idx}.{d}."), m.ip());
            self.a(&master, m.ip());
            idx += 1;
        }
        if let (false, Some(leader)) = (leader_listed, state.leader) {
            self.a(&format!("master{idx}.{d}."), leader.ip());
        }
    }

    fn agents(&mut self, state: &ClusterState) {
        let d = self.cfg.domain.clone();
        for agent in state.agents.values() {
            let Some(ip) = agent.ip else { continue };
            for alias in ["slave", "agent"] {
                let name = format!("{alias}.{d}.");
                self.a(&name, ip);
                self.srv(&format!("_{alias}._tcp.{d}."), &name, agent.port);
            }
        }
    }

    fn frameworks(&mut self, state: &ClusterState) {
        for fw in state.frameworks.values() {
            let fname = self.cfg.spec.domain_frag(&fw.name);
            if fname.is_empty() {
                continue;
            }
            let name = format!("{fname}{}", self.tail);
            match fw.pid {
                Some(pid) => {
                    self.a(&name, pid.ip());
                    self.srv(&format!("_framework._tcp.{name}"), &name, pid.port());
                }
                None => {
                    if let Ok(ip) = fw.hostname.parse::<IpAddr>() {
                        self.a(&name, ip);
                    }
                }
            }
        }
    }

    /// Task records in the Mesos-DNS domain; `records` collects them for `/v1/enumerate`.
    fn task(
        &mut self,
        task: &Task,
        framework_name: &str,
        agent_ip: Option<IpAddr>,
        records: &mut Vec<EnumRecord>,
    ) {
        let spec = self.cfg.spec;
        let fname = spec.domain_frag(framework_name);
        if fname.is_empty() {
            return;
        }
        let hash = task_hash(&task.id);
        let slave = slave_id_tail(&task.agent_id);
        match task.discovery.as_ref().filter(|d| !d.name.is_empty()) {
            Some(d) => {
                // Like Mesos-DNS: once with the raw DiscoveryInfo name ("legacy"), once sanitised.
                let raw = d.name.to_ascii_lowercase();
                let clean = spec.label(&d.name);
                if raw != clean && is_dns_safe(&raw) {
                    self.task_ctx(task, &raw, &fname, &hash, &slave, agent_ip, records);
                }
                self.task_ctx(task, &clean, &fname, &hash, &slave, agent_ip, records);
            }
            None => {
                let clean = spec.label(&task.name);
                self.task_ctx(task, &clean, &fname, &hash, &slave, agent_ip, records);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn task_ctx(
        &mut self,
        task: &Task,
        tname: &str,
        fname: &str,
        hash: &str,
        slave: &str,
        agent_ip: Option<IpAddr>,
        records: &mut Vec<EnumRecord>,
    ) {
        if tname.is_empty() {
            return;
        }
        let tail = self.tail.clone();
        let canonical = format!("{tname}-{hash}-{slave}.{fname}");
        let arec = format!("{tname}.{fname}");
        let collect = self.collect;
        // Only built for `/v1/enumerate`: the strings are not free.
        macro_rules! rec {
            ($name:expr, $host:expr, $rtype:expr $(,)?) => {
                if collect {
                    records.push(EnumRecord {
                        name: $name,
                        host: $host,
                        rtype: $rtype.to_owned(),
                    });
                }
            };
        }
        for ip in task.ips(&self.cfg.ip_sources, agent_ip) {
            for n in [&arec, &canonical] {
                let name = format!("{n}{tail}");
                self.a(&name, ip);
                rec!(
                    name,
                    ip.to_string(),
                    if ip.is_ipv4() { "A" } else { "AAAA" },
                );
            }
        }
        if let Some(ip) = agent_ip {
            for n in [&arec, &canonical] {
                let name = format!("{n}.slave{tail}");
                self.a(&name, ip);
                rec!(
                    name,
                    ip.to_string(),
                    if ip.is_ipv4() { "A" } else { "AAAA" },
                );
            }
        }
        let discovery = task.discovery.as_ref().filter(|d| !d.name.is_empty());
        let slave_host = format!("{canonical}.slave{tail}");
        for &port in &task.ports {
            for proto in ["tcp", "udp"] {
                let base = format!("_{tname}._{proto}.{fname}");
                let mut names = vec![format!("{base}.slave{tail}")];
                if discovery.is_none() {
                    names.push(format!("{base}{tail}"));
                }
                for name in names {
                    self.srv(&name, &slave_host, port);
                    rec!(name, format!("{slave_host}:{port}"), "SRV");
                }
            }
        }
        let Some(discovery) = discovery else { return };
        let target = format!("{canonical}{tail}");
        for dp in &discovery.ports {
            let Ok(port) = u16::try_from(dp.number) else {
                continue;
            };
            if port == 0 {
                continue;
            }
            let protocols: Vec<String> = if dp.protocol.is_empty() {
                vec!["tcp".into(), "udp".into()]
            } else {
                vec![self.cfg.spec.label(&dp.protocol)]
            };
            for proto in protocols {
                let base = format!("_{tname}._{proto}.{fname}{tail}");
                let mut names = vec![base.clone()];
                let pname = self.cfg.spec.label(&dp.name);
                if !pname.is_empty() {
                    names.push(format!("_{pname}.{base}"));
                }
                for name in names {
                    self.srv(&name, &target, port);
                    rec!(name, format!("{target}:{port}"), "SRV");
                }
            }
        }
    }

    fn dcos_task(&mut self, task: &Task, framework_name: &str, agent_ip: Option<IpAddr>) {
        let spec = self.cfg.spec;
        let raw = task
            .discovery
            .as_ref()
            .map(|d| d.name.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or(&task.name);
        let (tname, fname) = (spec.label(raw), spec.label(framework_name));
        if tname.is_empty() || fname.is_empty() {
            return;
        }
        let ttl = self.cfg.dcos_ttl;
        let base = format!("{tname}.{fname}");
        let container = task.container_ips();
        if let Some(ip) = agent_ip {
            self.b.ip(&format!("{base}.agentip.{DCOS_ZONE}."), ip, ttl);
        }
        for ip in &container {
            self.b
                .ip(&format!("{base}.containerip.{DCOS_ZONE}."), *ip, ttl);
        }
        let auto: Vec<IpAddr> = if !task.port_mappings.is_empty() || container.is_empty() {
            agent_ip.into_iter().collect()
        } else {
            container
        };
        for ip in auto {
            self.b.ip(&format!("{base}.autoip.{DCOS_ZONE}."), ip, ttl);
        }
    }

    /// `<vip>.<framework>.l4lb.thisdcos.directory` A/AAAA = the named VIP's address. The
    /// names exist while the VIP has a running or killing task, healthy or not (the load
    /// balancer refuses new connections when none is healthy), so they do not flap.
    fn l4lb(&mut self, state: &ClusterState) {
        let table = state.vip_table(&self.cfg.vip);
        for (name, ips) in table.named_addresses() {
            let fqdn = format!("{name}.");
            for ip in ips {
                self.b.ip(&fqdn, ip, VIP_TTL);
            }
        }
    }

    fn dcos_masters(&mut self, state: &ClusterState) {
        let ttl = self.cfg.dcos_ttl;
        let master = format!("master.{DCOS_ZONE}.");
        if let Some(leader) = state.leader {
            self.b.ip(&format!("leader.{DCOS_ZONE}."), leader.ip(), ttl);
            self.b.ip(&master, leader.ip(), ttl);
        }
        for m in &state.masters {
            self.b.ip(&master, m.ip(), ttl);
        }
    }
}

/// A raw (unsanitised) name can still be used as DNS labels if it is plain ASCII
/// letters, digits, `-`, `_` and dots without empty labels.
fn is_dns_safe(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::model::{
        Agent, Discovery, DiscoveryPort, Framework, PortMapping, TaskKey, TaskStatus,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn cluster() -> ClusterState {
        let mut st = ClusterState {
            masters: vec![sa("10.0.0.1:5050"), sa("10.0.0.11:5050")],
            leader: Some(sa("10.0.0.1:5050")),
            ..Default::default()
        };
        st.agents.insert(
            "M-S0".into(),
            Agent {
                id: "M-S0".into(),
                hostname: "a1".into(),
                ip: Some(ip("10.0.0.2")),
                port: 5051,
            },
        );
        st.frameworks.insert(
            "M-0000".into(),
            Framework {
                id: "M-0000".into(),
                name: "marathon".into(),
                hostname: "m1".into(),
                pid: Some(sa("10.0.0.1:34567")),
            },
        );
        st
    }

    fn running(id: &str, name: &str, netinfo: &[&str]) -> Task {
        let mut t = Task {
            id: id.into(),
            name: name.into(),
            framework_id: "M-0000".into(),
            agent_id: "M-S0".into(),
            state: Some(TaskState::Running),
            ..Default::default()
        };
        t.push_status(TaskStatus {
            state: Some(TaskState::Running),
            timestamp: 1.0,
            network_ips: netinfo.iter().map(|s| ip(s)).collect(),
            ..Default::default()
        });
        t
    }

    fn add(st: &mut ClusterState, t: Task) {
        st.tasks.insert(
            TaskKey {
                framework_id: t.framework_id.clone(),
                task_id: t.id.clone(),
            },
            t,
        );
    }

    fn a(rs: &RecordSet, name: &str) -> Vec<String> {
        rs.get(name)
            .map(|r| {
                r.a.iter()
                    .map(ToString::to_string)
                    .chain(r.aaaa.iter().map(ToString::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn srv(rs: &RecordSet, name: &str) -> Vec<String> {
        rs.get(name)
            .map(|r| {
                r.srv
                    .iter()
                    .map(|s| format!("{}:{}", s.target, s.port))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn masters_leader_agents_and_frameworks_get_their_names() {
        let mut st = cluster();
        st.leader = Some(sa("10.0.0.99:5050"));
        let rs = synthesize(&st, &SynthConfig::default());
        let table: &[(&str, &[&str])] = &[
            ("leader.mesos.", &["10.0.0.99"]),
            ("master.mesos.", &["10.0.0.1", "10.0.0.11", "10.0.0.99"]),
            ("master0.mesos.", &["10.0.0.1"]),
            ("master1.mesos.", &["10.0.0.11"]),
            // The leader is not in the configured list: it gets the next index.
            ("master2.mesos.", &["10.0.0.99"]),
            ("slave.mesos.", &["10.0.0.2"]),
            ("agent.mesos.", &["10.0.0.2"]),
            ("marathon.mesos.", &["10.0.0.1"]),
        ];
        for (name, want) in table {
            assert_eq!(a(&rs, name), *want, "{name}");
        }
        assert_eq!(srv(&rs, "_leader._tcp.mesos."), ["leader.mesos.:5050"]);
        assert_eq!(srv(&rs, "_leader._udp.mesos."), ["leader.mesos.:5050"]);
        assert_eq!(srv(&rs, "_slave._tcp.mesos."), ["slave.mesos.:5051"]);
        assert_eq!(srv(&rs, "_agent._tcp.mesos."), ["agent.mesos.:5051"]);
        assert_eq!(
            srv(&rs, "_framework._tcp.marathon.mesos."),
            ["marathon.mesos.:34567"]
        );
        assert!(rs.get("_master._tcp.mesos.").is_none());
    }

    #[test]
    fn a_leader_in_the_master_list_gets_no_extra_index() {
        let rs = synthesize(&cluster(), &SynthConfig::default());
        assert_eq!(a(&rs, "master0.mesos."), ["10.0.0.1"]);
        assert!(rs.get("master2.mesos.").is_none());
    }

    #[test]
    fn raw_names_are_kept_only_when_every_label_is_valid() {
        for (name, safe) in [
            ("web", true),
            ("my_web-1", true),
            ("a.b", true),
            ("-", false),
            ("-web", false),
            ("web-", false),
            ("a..b", false),
            ("web app", false),
            ("", false),
        ] {
            assert_eq!(is_dns_safe(name), safe, "{name:?}");
        }
    }

    #[test]
    fn a_task_without_discovery_info_gets_mesos_dns_names() {
        let mut st = cluster();
        let mut t = running("web.1", "Web_Server", &["9.0.0.5"]);
        t.ports = vec![31000, 31001];
        add(&mut st, t);
        let rs = synthesize(&st, &SynthConfig::default());
        let hash = task_hash("web.1");
        let canonical = format!("web-server-{hash}-s0.marathon");
        let table: Vec<(String, &[&str])> = vec![
            ("web-server.marathon.mesos.".into(), &["9.0.0.5"]),
            (format!("{canonical}.mesos."), &["9.0.0.5"]),
            ("web-server.marathon.slave.mesos.".into(), &["10.0.0.2"]),
            (format!("{canonical}.slave.mesos."), &["10.0.0.2"]),
        ];
        for (name, want) in &table {
            assert_eq!(a(&rs, name), *want, "{name}");
        }
        let target = format!("{canonical}.slave.mesos.");
        let want = vec![format!("{target}:31000"), format!("{target}:31001")];
        for name in [
            "_web-server._tcp.marathon.mesos.",
            "_web-server._udp.marathon.mesos.",
            "_web-server._tcp.marathon.slave.mesos.",
            "_web-server._udp.marathon.slave.mesos.",
        ] {
            assert_eq!(srv(&rs, name), want, "{name}");
        }
    }

    #[test]
    fn a_marathon_app_resolves_by_its_reversed_path_and_discovery_ports() {
        let mut st = cluster();
        let mut t = running("a_b.instance-1", "b.a", &[]);
        t.ports = vec![31005];
        t.discovery = Some(Discovery {
            name: "b.a".into(),
            ports: vec![
                DiscoveryPort {
                    number: 31005,
                    name: "http".into(),
                    protocol: "tcp".into(),
                    ..Default::default()
                },
                DiscoveryPort {
                    number: 31006,
                    ..Default::default()
                },
            ],
        });
        add(&mut st, t);
        let rs = synthesize(&st, &SynthConfig::default());
        let hash = task_hash("a_b.instance-1");
        // IP sources netinfo, mesos, host: no container IP, so the agent IP.
        assert_eq!(a(&rs, "b-a.marathon.mesos."), ["10.0.0.2"]);
        assert_eq!(
            a(&rs, "b.a.marathon.mesos."),
            ["10.0.0.2"],
            "legacy raw name"
        );
        let target = format!("b-a-{hash}-s0.marathon.mesos.");
        assert_eq!(
            srv(&rs, "_b-a._tcp.marathon.mesos."),
            [format!("{target}:31005"), format!("{target}:31006")]
        );
        assert_eq!(
            srv(&rs, "_b-a._udp.marathon.mesos."),
            [format!("{target}:31006")]
        );
        assert_eq!(
            srv(&rs, "_http._b-a._tcp.marathon.mesos."),
            [format!("{target}:31005")]
        );
        // Ports-resource SRVs only under .slave. when DiscoveryInfo is present.
        let slave_target = format!("b-a-{hash}-s0.marathon.slave.mesos.:31005");
        assert_eq!(
            srv(&rs, "_b-a._tcp.marathon.slave.mesos."),
            std::slice::from_ref(&slave_target)
        );
        assert_eq!(srv(&rs, "_b-a._udp.marathon.slave.mesos."), [slave_target]);
        let enumerated = &rs.enumeration()[0];
        assert_eq!(enumerated.name, "marathon");
        assert!(
            enumerated.tasks[0]
                .records
                .iter()
                .any(|r| r.name == "b-a.marathon.mesos." && r.rtype == "A")
        );
    }

    #[test]
    fn only_running_tasks_on_known_agents_get_records() {
        let mut st = cluster();
        let mut staging = running("s.1", "staging", &["9.0.0.1"]);
        staging.state = Some(TaskState::Staging);
        add(&mut st, staging);
        let mut lost_agent = running("o.1", "orphan", &["9.0.0.2"]);
        lost_agent.agent_id = "M-S9".into();
        add(&mut st, lost_agent);
        let mut no_fw = running("n.1", "nofw", &["9.0.0.3"]);
        no_fw.framework_id = "other".into();
        add(&mut st, no_fw);
        let rs = synthesize(&st, &SynthConfig::default());
        assert!(rs.get("staging.marathon.mesos.").is_none());
        assert!(rs.get("orphan.marathon.mesos.").is_none());
        assert!(rs.iter().all(|(n, _)| !n.starts_with("nofw")));
    }

    #[test]
    fn ip_sources_choose_the_task_address() {
        let mut st = cluster();
        let mut t = running("w.1", "w", &["9.0.0.5", "fd00::5"]);
        t.statuses[0].labels = vec![(
            "MesosContainerizer.NetworkSettings.IPAddress".into(),
            "172.16.0.9".into(),
        )];
        add(&mut st, t);
        let table: &[(&[IpSource], &[&str])] = &[
            (
                &[IpSource::Netinfo, IpSource::Mesos, IpSource::Host],
                &["9.0.0.5", "fd00::5"],
            ),
            (&[IpSource::Mesos, IpSource::Netinfo], &["172.16.0.9"]),
            (&[IpSource::Docker, IpSource::Host], &["10.0.0.2"]),
            (&[IpSource::Docker], &[]),
        ];
        for (sources, want) in table {
            let cfg = SynthConfig {
                ip_sources: sources.to_vec(),
                ..Default::default()
            };
            let rs = synthesize(&st, &cfg);
            assert_eq!(a(&rs, "w.marathon.mesos."), *want, "{sources:?}");
        }
    }

    #[test]
    fn rfc952_and_dotted_framework_names_are_respected() {
        let mut st = cluster();
        st.frameworks.get_mut("M-0000").unwrap().name = "Marathon.Prod".into();
        add(&mut st, running("x.1", "1st-task", &["9.0.0.7"]));
        let rs = synthesize(&st, &SynthConfig::default());
        assert_eq!(a(&rs, "1st-task.marathon.prod.mesos."), ["9.0.0.7"]);
        let cfg = SynthConfig {
            spec: LabelSpec::Rfc952,
            ..Default::default()
        };
        let rs = synthesize(&st, &cfg);
        assert_eq!(a(&rs, "st-task.marathon.prod.mesos."), ["9.0.0.7"]);
        let cfg = SynthConfig {
            domain: "cluster.local".into(),
            ..Default::default()
        };
        let rs = synthesize(&st, &cfg);
        assert_eq!(a(&rs, "1st-task.marathon.prod.cluster.local."), ["9.0.0.7"]);
        assert_eq!(a(&rs, "leader.cluster.local."), ["10.0.0.1"]);
    }

    #[test]
    fn dcos_names_follow_dcos_net() {
        let mut st = cluster();
        let mut overlay = running("o.1", "overlay", &["9.0.0.8"]);
        overlay.discovery = Some(Discovery {
            name: "b.a".into(),
            ports: vec![],
        });
        add(&mut st, overlay);
        let mut bridged = running("b.1", "bridged", &["172.17.0.2"]);
        bridged.port_mappings = vec![PortMapping {
            host_port: 31000,
            container_port: 80,
            protocol: "tcp".into(),
        }];
        add(&mut st, bridged);
        add(&mut st, running("h.1", "host", &[]));
        let rs = synthesize(&st, &SynthConfig::default());
        let table: &[(&str, &[&str])] = &[
            ("b-a.marathon.autoip.dcos.thisdcos.directory.", &["9.0.0.8"]),
            (
                "b-a.marathon.containerip.dcos.thisdcos.directory.",
                &["9.0.0.8"],
            ),
            (
                "b-a.marathon.agentip.dcos.thisdcos.directory.",
                &["10.0.0.2"],
            ),
            (
                "bridged.marathon.autoip.dcos.thisdcos.directory.",
                &["10.0.0.2"],
            ),
            (
                "bridged.marathon.containerip.dcos.thisdcos.directory.",
                &["172.17.0.2"],
            ),
            (
                "host.marathon.autoip.dcos.thisdcos.directory.",
                &["10.0.0.2"],
            ),
            ("host.marathon.containerip.dcos.thisdcos.directory.", &[]),
            ("leader.dcos.thisdcos.directory.", &["10.0.0.1"]),
            (
                "master.dcos.thisdcos.directory.",
                &["10.0.0.1", "10.0.0.11"],
            ),
        ];
        for (name, want) in table {
            assert_eq!(a(&rs, name), *want, "{name}");
        }
        assert_eq!(rs.get("leader.dcos.thisdcos.directory.").unwrap().ttl, 5);
        assert_eq!(rs.get("leader.mesos.").unwrap().ttl, 60);
        let cfg = SynthConfig {
            dcos_zone: false,
            ..Default::default()
        };
        assert!(
            synthesize(&st, &cfg)
                .iter()
                .all(|(n, _)| !n.ends_with("thisdcos.directory."))
        );
    }

    #[test]
    fn the_master_state_example_synthesises_the_documented_names() {
        let st = ClusterState::from_master_state_json(
            crate::model::state_json::EXAMPLE_FOR_TESTS,
            vec![sa("10.0.0.1:5050")],
        )
        .unwrap();
        let rs = synthesize(&st, &SynthConfig::default());
        assert_eq!(a(&rs, "web.marathon.mesos."), ["10.0.0.2"]);
        assert_eq!(a(&rs, "leader.mesos."), ["10.0.0.1"]);
        let hash = task_hash("web.instance-5f._app.1");
        assert_eq!(
            srv(&rs, "_default._web._tcp.marathon.mesos."),
            [format!("web-{hash}-s0.marathon.mesos.:31005")]
        );
    }

    #[test]
    fn unhealthy_tasks_are_left_out_only_when_asked() {
        let mut st = cluster();
        let mut t = running("h.1", "checked", &["9.0.0.9"]);
        t.has_health_check = true;
        add(&mut st, t.clone());
        let strict = SynthConfig {
            require_healthy: true,
            ..Default::default()
        };
        assert!(
            synthesize(&st, &strict)
                .get("checked.marathon.mesos.")
                .is_none(),
            "health unknown"
        );
        assert_eq!(
            a(
                &synthesize(&st, &SynthConfig::default()),
                "checked.marathon.mesos."
            ),
            ["9.0.0.9"]
        );
        for (healthy, present) in [(Some(true), true), (Some(false), false)] {
            let mut t = t.clone();
            t.push_status(TaskStatus {
                state: Some(TaskState::Running),
                timestamp: 2.0,
                healthy,
                network_ips: vec![ip("9.0.0.9")],
                ..Default::default()
            });
            add(&mut st, t);
            assert_eq!(
                synthesize(&st, &strict)
                    .get("checked.marathon.mesos.")
                    .is_some(),
                present,
                "{healthy:?}"
            );
        }
        let mut unchecked = running("u.1", "unchecked", &["9.0.0.10"]);
        unchecked.statuses[0].healthy = Some(false);
        add(&mut st, unchecked);
        assert!(
            synthesize(&st, &strict)
                .get("unchecked.marathon.mesos.")
                .is_some(),
            "no health check: always in"
        );
    }

    #[test]
    fn self_name_answers_with_the_listener_address() {
        let cfg = SynthConfig {
            self_ips: vec![ip("10.0.0.53")],
            ..Default::default()
        };
        let rs = synthesize(&ClusterState::default(), &cfg);
        assert_eq!(a(&rs, "ns1.mesos."), ["10.0.0.53"]);
    }

    fn vip_port(number: u32, pairs: &[(&str, &str)]) -> DiscoveryPort {
        DiscoveryPort {
            number,
            protocol: "tcp".into(),
            labels: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn named_vips_resolve_in_the_l4lb_zone() {
        let mut st = cluster();
        let mut web = running("web.1", "web", &[]);
        web.discovery = Some(Discovery {
            name: "web".into(),
            ports: vec![vip_port(
                31000,
                &[
                    ("VIP_0", "/mygroup/myapp:80"),
                    ("VIP_1", "198.51.100.7:80"),
                    ("network-scope", "host"),
                ],
            )],
        });
        add(&mut st, web);
        // A second app on the same VIP, unhealthy: the name stays, with the same address.
        let mut other = running("other.1", "other", &["9.0.0.4"]);
        other.has_health_check = true;
        other.discovery = Some(Discovery {
            name: "other".into(),
            ports: vec![vip_port(
                8080,
                &[("vip", "mygroup/myapp:80"), ("VIP_1", "/solo:9")],
            )],
        });
        add(&mut st, other);
        let cfg = SynthConfig::default();
        let rs = synthesize(&st, &cfg);
        let table = st.vip_table(&cfg.vip);
        let want = |name: &str| -> Vec<String> {
            table.named_addresses()[name]
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let myapp = "mygroupmyapp.marathon.l4lb.thisdcos.directory";
        let solo = "solo.marathon.l4lb.thisdcos.directory";
        let got = a(&rs, &format!("{myapp}."));
        assert_eq!(got, want(myapp));
        assert!(got[0].starts_with("11."), "{got:?}");
        assert_eq!(
            a(&rs, &format!("{solo}.")),
            want(solo),
            "unhealthy: named, no backend"
        );
        assert_ne!(want(myapp), want(solo));
        assert_eq!(rs.get(&format!("{myapp}.")).unwrap().ttl, 5);
        // IP VIPs have no name.
        let l4lb: Vec<&str> = rs
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.ends_with(".l4lb.thisdcos.directory."))
            .collect();
        assert_eq!(l4lb.len(), 2, "{l4lb:?}");
        // The range is the configured one.
        let narrow = SynthConfig {
            vip: capstan_types::vip::VipConfig {
                ipv4: capstan_types::vip::AddrRange::parse("198.18.0.0/30").unwrap(),
                ipv6: None,
            },
            ..Default::default()
        };
        for n in [myapp, solo] {
            let got = a(&synthesize(&st, &narrow), &format!("{n}."));
            assert_eq!(got.len(), 1);
            assert!(got[0].starts_with("198.18.0."), "{got:?}");
        }
        let off = SynthConfig {
            l4lb_zone: false,
            ..Default::default()
        };
        assert!(
            synthesize(&st, &off)
                .iter()
                .all(|(n, _)| !n.ends_with("l4lb.thisdcos.directory."))
        );
    }

    #[test]
    fn a_vip_without_running_tasks_has_no_name() {
        let mut st = cluster();
        let mut t = running("web.1", "web", &[]);
        t.state = Some(TaskState::Staging);
        t.discovery = Some(Discovery {
            name: "web".into(),
            ports: vec![vip_port(31000, &[("VIP_0", "/web:80")])],
        });
        add(&mut st, t.clone());
        let rs = synthesize(&st, &SynthConfig::default());
        assert!(rs.get("web.marathon.l4lb.thisdcos.directory.").is_none());
        t.state = Some(TaskState::Killing);
        add(&mut st, t);
        let rs = synthesize(&st, &SynthConfig::default());
        assert!(
            rs.get("web.marathon.l4lb.thisdcos.directory.").is_some(),
            "a killing task drains: its VIP keeps its name"
        );
    }

    #[test]
    fn vip_labels_from_master_state_json_are_read() {
        let doc = r#"{"leader":"master@10.0.0.1:5050",
          "slaves":[{"id":"S0","hostname":"a1","pid":"slave(1)@10.0.0.2:5051"}],
          "frameworks":[{"id":"F0","name":"marathon","tasks":[{"id":"app.1","name":"app","slave_id":"S0",
            "state":"TASK_RUNNING","resources":{"ports":"[31000-31001]"},
            "labels":[{"key":"VIP_PORT1","value":"tcp://10.9.9.9:5000"}],
            "statuses":[{"state":"TASK_RUNNING","timestamp":1.0}],
            "discovery":{"visibility":"FRAMEWORK","name":"app","ports":{"ports":[
              {"number":31000,"protocol":"tcp","labels":{"labels":[{"key":"VIP_0","value":"/abc:80"},
                                                                  {"key":"VIP_1","value":"/cbd:80"}]}}]}}}]}]}"#;
        let st = ClusterState::from_master_state_json(doc, vec![]).unwrap();
        let rs = synthesize(&st, &SynthConfig::default());
        for n in ["abc", "cbd"] {
            assert_eq!(
                a(&rs, &format!("{n}.marathon.l4lb.thisdcos.directory.")).len(),
                1,
                "{n}"
            );
        }
        let table = st.vip_table(&capstan_types::vip::VipConfig::default());
        let legacy = capstan_types::vip::VipKey {
            vip: capstan_types::vip::VipAddr::Ip("10.9.9.9:5000".parse().unwrap()),
            protocol: capstan_types::vip::Protocol::Tcp,
        };
        let backends: Vec<String> = table.vips[&legacy]
            .backends
            .iter()
            .map(|b| b.addr().to_string())
            .collect();
        assert_eq!(backends, ["10.0.0.2:31001"]);
    }

    proptest::proptest! {
        #[test]
        fn synthesised_names_are_lower_case_fqdns_that_parse(
            task_name in ".{0,80}",
            discovery_name in proptest::option::of(".{0,40}"),
            framework_name in ".{0,40}",
            port_name in ".{0,20}",
            protocol in "(tcp|udp|TCP|sctp|)",
            rfc952 in proptest::bool::ANY,
        ) {
            let mut st = cluster();
            st.frameworks.get_mut("M-0000").unwrap().name = framework_name;
            let mut t = running("t.1", &task_name, &["9.0.0.1"]);
            t.ports = vec![31000];
            t.discovery = discovery_name.map(|name| Discovery {
                name,
                ports: vec![DiscoveryPort { number: 80, name: port_name, protocol, ..Default::default() }],
            });
            add(&mut st, t);
            let spec = if rfc952 { LabelSpec::Rfc952 } else { LabelSpec::Rfc1123 };
            let rs = synthesize(&st, &SynthConfig { spec, ..Default::default() });
            for (name, recs) in rs.iter() {
                proptest::prop_assert!(name.ends_with('.'));
                proptest::prop_assert_eq!(name.to_ascii_lowercase(), name);
                proptest::prop_assert!(!name.contains(".."), "{}", name);
                if name.len() <= 254 {
                    proptest::prop_assert!(hickory_proto::rr::Name::from_ascii(name).is_ok(), "{}", name);
                }
                for srv in &recs.srv {
                    proptest::prop_assert!(srv.target.ends_with('.'));
                }
            }
        }
    }
}
