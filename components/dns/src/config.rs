//! `capstan dns` configuration: YAML (snake_case, unknown keys rejected), or a Mesos-DNS
//! `config.json` through [`Config::from_mesos_dns_json`].

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use capstan_runtime::auth::SecurityMode;
use capstan_runtime::{ConfigProblem, SecurityConfig, Validate, duration_secs};
use capstan_types::vip::{AddrRange, VipConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::IpSource;

/// Configuration of the DNS daemon. Every field has a default; names follow Mesos-DNS's
/// settings where one exists (api-compat §7.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Mesos-DNS domain (`mesos`).
    pub domain: String,
    /// DNS address, UDP and TCP on the same port.
    pub dns_listen: SocketAddr,
    /// HTTP API address.
    pub http_listen: SocketAddr,
    pub dns_on: bool,
    pub http_on: bool,
    /// Masters' HTTP addresses (`host:port`), in `masterN` order; the leader is found by
    /// following redirects.
    pub masters: Vec<String>,
    /// TTL of records in the Mesos domain, seconds.
    pub ttl: u32,
    pub srv_weight: u16,
    pub soa_mname: String,
    pub soa_rname: String,
    pub soa_refresh: i32,
    pub soa_retry: i32,
    pub soa_expire: i32,
    /// Negative-caching TTL, seconds: the SOA `minimum` of our zones and the TTL of the SOA
    /// sent with NXDOMAIN/NODATA, capped at each zone's record TTL. Mesos-DNS accepts the
    /// key (`SOAMinttl`, default 60) but answers with `ttl` as the minimum, so a denial
    /// could stay cached for a minute; Capstan honours the key and defaults to 5 s (as
    /// dcos-dns's short negative answers), so a name that appears, or reappears after a
    /// brief gap, is found again within seconds.
    pub soa_minttl: u32,
    /// Where task IPs come from, first source with any address wins.
    pub ip_sources: Vec<IpSource>,
    pub enforce_rfc952: bool,
    pub set_truncate_bit: bool,
    /// Enables `/v1/enumerate` and `/v1/axfr`.
    pub enumeration_on: bool,
    /// The RA flag in answers.
    pub recurse_on: bool,
    /// Forward names outside our zones.
    pub external_on: bool,
    /// Who may have names outside our zones forwarded (so an agent's public address is no
    /// open resolver): clients from other addresses get REFUSED. Default: loopback and the
    /// private ranges (RFC 1918, CGNAT, IPv6 ULA and link-local), where cluster nodes and
    /// containers are. Names in our zones are answered for everyone.
    pub external_from: Vec<ipnet::IpNet>,
    /// Upstream resolvers (`ip` or `ip:port`); empty means the `nameserver`s of
    /// `/etc/resolv.conf`.
    pub resolvers: Vec<String>,
    /// Upstreams for particular zones (`consul: ["10.0.0.5:8600"]`).
    pub zone_resolvers: BTreeMap<String, Vec<String>>,
    /// Upstream query timeout, seconds.
    #[serde(with = "duration_secs")]
    pub forward_timeout: Duration,
    /// Most forwarded answers kept in the cache.
    pub forward_cache_entries: usize,
    /// Largest UDP response we send (and advertise with EDNS0).
    pub max_udp_payload: u16,
    /// Serve `<task>.<framework>.autoip|agentip|containerip.dcos.thisdcos.directory`.
    pub dcos_zone: bool,
    pub dcos_ttl: u32,
    /// Only name tasks with a health check once they are reported healthy (Mesos-DNS names
    /// every running task; so does the default).
    pub require_healthy: bool,
    /// Serve named VIPs in `l4lb.thisdcos.directory`, computed from the tasks' VIP labels.
    pub l4lb_zone: bool,
    /// Addresses of IPv4 named VIPs, `first-last` or `addr/prefix`; must equal the load
    /// balancer's setting on every node (DC/OS: `11.0.0.0-11.255.255.254`).
    pub l4lb_named_ipv4: String,
    /// Addresses of IPv6 named VIPs (DC/OS: `fd01:c::/64`); empty: no IPv6 named VIPs.
    pub l4lb_named_ipv6: String,
    /// Timeout of connecting to a master and of non-streaming calls, seconds.
    #[serde(with = "duration_secs")]
    pub master_timeout: Duration,
    /// Reconnect after this many heartbeat intervals without a byte from the master.
    pub missed_heartbeats: u32,
    /// Longest wait between reconnection attempts, seconds.
    #[serde(with = "duration_secs")]
    pub reconnect_backoff_max: Duration,
    /// Who may call the HTTP API, and TLS (see `capstan_runtime::security`). In strict mode
    /// the HTTP API speaks TLS with the node's certificate behind the guard, and the stream
    /// from the masters is read over mutual TLS with the same certificate. The DNS port
    /// stays plain DNS.
    pub security: SecurityConfig,
    /// Coord's endpoints, where the identity records are: in strict mode, tokens and basic
    /// credentials on the HTTP API are verified against them. Empty: only the cluster's node
    /// certificates may call.
    pub coord_endpoints: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "mesos".into(),
            dns_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53),
            http_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8123),
            dns_on: true,
            http_on: true,
            masters: vec!["127.0.0.1:5050".into()],
            ttl: 60,
            srv_weight: 1,
            soa_mname: "ns1.mesos".into(),
            soa_rname: "root.ns1.mesos".into(),
            soa_refresh: 60,
            soa_retry: 600,
            soa_expire: 86400,
            soa_minttl: DEFAULT_SOA_MINTTL,
            ip_sources: vec![IpSource::Netinfo, IpSource::Mesos, IpSource::Host],
            enforce_rfc952: false,
            set_truncate_bit: true,
            enumeration_on: true,
            recurse_on: true,
            external_on: true,
            external_from: crate::resolve::private_networks(),
            resolvers: Vec::new(),
            zone_resolvers: BTreeMap::new(),
            forward_timeout: Duration::from_secs(5),
            forward_cache_entries: 10_000,
            max_udp_payload: 4096,
            dcos_zone: true,
            dcos_ttl: 5,
            require_healthy: false,
            l4lb_zone: true,
            l4lb_named_ipv4: DEFAULT_NAMED_IPV4.into(),
            l4lb_named_ipv6: DEFAULT_NAMED_IPV6.into(),
            master_timeout: Duration::from_secs(10),
            missed_heartbeats: 5,
            reconnect_backoff_max: Duration::from_secs(15),
            security: SecurityConfig::default(),
            coord_endpoints: Vec::new(),
        }
    }
}

/// Defaults of [`Config::l4lb_named_ipv4`] and [`Config::l4lb_named_ipv6`], DC/OS's (shared
/// with `l4lb`, which must use the same ranges).
pub use capstan_types::vip::{DEFAULT_NAMED_IPV4, DEFAULT_NAMED_IPV6};

/// Default negative-caching TTL (see [`Config::soa_minttl`]).
pub const DEFAULT_SOA_MINTTL: u32 = 5;

/// Parses an upstream as `ip` (port 53) or `ip:port` / `[v6]:port`.
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    s.parse().ok()
}

/// Checks a `host:port` master address; returns it normalised.
/// `host:port` or `http://host:port`, the one endpoint syntax of every Capstan config.
fn valid_master(s: &str) -> bool {
    capstan_mesos_client::Endpoint::parse(s).is_ok_and(|e| e.port() != 0)
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if !valid_domain(&self.domain) {
            p.push(ConfigProblem::new(
                "domain",
                "must be dot-separated labels of letters, digits and '-'",
            ));
        }
        if !self.dns_on && !self.http_on {
            p.push(ConfigProblem::new(
                "dns_on",
                "at least one of dns_on and http_on must be true",
            ));
        }
        if self.masters.is_empty() {
            p.push(ConfigProblem::new(
                "masters",
                "list at least one master as host:port",
            ));
        }
        let mut seen = HashSet::new();
        for (i, m) in self.masters.iter().enumerate() {
            if !valid_master(m) {
                p.push(ConfigProblem::new(
                    format!("masters[{i}]"),
                    format!("{m:?} is not host:port (or http://host:port)"),
                ));
            } else if !seen.insert(m.to_ascii_lowercase()) {
                p.push(ConfigProblem::new(
                    format!("masters[{i}]"),
                    format!("{m:?} is listed twice"),
                ));
            }
        }
        if self.ttl == 0 {
            p.push(ConfigProblem::new("ttl", "must be at least 1"));
        }
        if self.ip_sources.is_empty() {
            p.push(ConfigProblem::new(
                "ip_sources",
                "list at least one of netinfo, mesos, docker, host",
            ));
        }
        let mut seen = HashSet::new();
        for (i, s) in self.ip_sources.iter().enumerate() {
            if !seen.insert(*s) {
                p.push(ConfigProblem::new(
                    format!("ip_sources[{i}]"),
                    format!("{} is listed twice", s.as_str()),
                ));
            }
        }
        for (field, name) in [
            ("soa_mname", &self.soa_mname),
            ("soa_rname", &self.soa_rname),
        ] {
            if !valid_domain(name.trim_end_matches('.').replace('@', ".").as_str()) {
                p.push(ConfigProblem::new(
                    field,
                    format!("{name:?} is not a domain name"),
                ));
            }
        }
        for (i, r) in self.resolvers.iter().enumerate() {
            if parse_upstream(r).is_none() {
                p.push(ConfigProblem::new(
                    format!("resolvers[{i}]"),
                    format!("{r:?} is not ip or ip:port"),
                ));
            }
        }
        let ours = self.domain.to_ascii_lowercase();
        for (zone, list) in &self.zone_resolvers {
            let z = zone.trim_end_matches('.').to_ascii_lowercase();
            if z == ours || z.ends_with(&format!(".{ours}")) {
                p.push(ConfigProblem::new(
                    format!("zone_resolvers.{zone}"),
                    "cannot forward our own domain",
                ));
            }
            if list.is_empty() {
                p.push(ConfigProblem::new(
                    format!("zone_resolvers.{zone}"),
                    "list at least one resolver",
                ));
            }
            for (i, r) in list.iter().enumerate() {
                if parse_upstream(r).is_none() {
                    p.push(ConfigProblem::new(
                        format!("zone_resolvers.{zone}[{i}]"),
                        format!("{r:?} is not ip or ip:port"),
                    ));
                }
            }
        }
        if self.forward_timeout.is_zero() {
            p.push(ConfigProblem::new("forward_timeout", "must be more than 0"));
        }
        if self.master_timeout.is_zero() {
            p.push(ConfigProblem::new("master_timeout", "must be more than 0"));
        }
        if self.max_udp_payload < 512 {
            p.push(ConfigProblem::new(
                "max_udp_payload",
                "must be at least 512",
            ));
        }
        if self.missed_heartbeats == 0 {
            p.push(ConfigProblem::new(
                "missed_heartbeats",
                "must be at least 1",
            ));
        }
        if let Err(e) = AddrRange::<Ipv4Addr>::parse(&self.l4lb_named_ipv4) {
            p.push(ConfigProblem::new("l4lb_named_ipv4", e.to_string()));
        }
        if !self.l4lb_named_ipv6.trim().is_empty()
            && let Err(e) = AddrRange::<Ipv6Addr>::parse(&self.l4lb_named_ipv6)
        {
            p.push(ConfigProblem::new("l4lb_named_ipv6", e.to_string()));
        }
        p.extend(self.security.problems("security"));
        if self.http_on {
            p.extend(
                self.security
                    .listen_problems("http_listen", self.http_listen),
            );
        }
        if self.security.mode == SecurityMode::Strict {
            for (i, m) in self.masters.iter().enumerate() {
                if m.trim().to_ascii_lowercase().starts_with("http://") {
                    p.push(ConfigProblem::new(
                        format!("masters[{i}]"),
                        format!("{m:?}: strict mode speaks TLS to the masters; write host:port or https://host:port"),
                    ));
                }
            }
        }
        for (i, e) in self.coord_endpoints.iter().enumerate() {
            if e.trim().is_empty() {
                p.push(ConfigProblem::new(
                    format!("coord_endpoints[{i}]"),
                    "must not be empty",
                ));
            }
        }
        p
    }
}

impl Config {
    /// The named-VIP ranges; invalid settings (rejected by validation) fall back to the
    /// defaults.
    pub fn vip_config(&self) -> VipConfig {
        let d = VipConfig::default();
        VipConfig {
            ipv4: AddrRange::parse(&self.l4lb_named_ipv4).unwrap_or(d.ipv4),
            ipv6: if self.l4lb_named_ipv6.trim().is_empty() {
                None
            } else {
                AddrRange::parse(&self.l4lb_named_ipv6).ok().or(d.ipv6)
            },
        }
    }
}

/// Why a Mesos-DNS `config.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MesosDnsConfigError {
    #[error("Mesos-DNS config is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("Mesos-DNS config is not a JSON object")]
    NotAnObject,
    #[error("Mesos-DNS config has {} problem(s): {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigProblem>),
}

impl Config {
    /// Loads a config file: a Mesos-DNS `config.json` when the name ends in `.json`, else
    /// Capstan YAML. Either way the result is validated.
    pub fn load(
        path: impl AsRef<std::path::Path>,
    ) -> Result<Config, capstan_runtime::LoadConfigError> {
        use capstan_runtime::LoadConfigError;
        let path = path.as_ref();
        if path
            .extension()
            .is_none_or(|e| !e.eq_ignore_ascii_case("json"))
        {
            return capstan_runtime::load_config(path);
        }
        let text = std::fs::read_to_string(path).map_err(|source| LoadConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_mesos_dns_json(&text).map_err(|e| match e {
            MesosDnsConfigError::Invalid(problems) => LoadConfigError::Invalid {
                path: path.to_owned(),
                problems,
            },
            MesosDnsConfigError::Json(err) => LoadConfigError::Parse {
                path: path.to_owned(),
                field: String::new(),
                line: Some(err.line()),
                column: Some(err.column()),
                message: err.to_string(),
            },
            MesosDnsConfigError::NotAnObject => LoadConfigError::Parse {
                path: path.to_owned(),
                field: String::new(),
                line: None,
                column: None,
                message: "expected a JSON object".into(),
            },
        })
    }

    /// Reads a Mesos-DNS `config.json` (keys matched case-insensitively, unknown keys ignored,
    /// like Go's decoder). Settings we cannot honour (ZooKeeper-only detection, HTTPS or
    /// authentication to masters) are problems; polling settings are ignored because we
    /// stream. The result is validated.
    pub fn from_mesos_dns_json(text: &str) -> Result<Config, MesosDnsConfigError> {
        let doc: Value = serde_json::from_str(text).map_err(MesosDnsConfigError::Json)?;
        let Value::Object(obj) = doc else {
            return Err(MesosDnsConfigError::NotAnObject);
        };
        let m: Map<String, Value> = obj
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let mut c = Config {
            masters: Vec::new(),
            // Mesos-DNS's default upstream when the key is absent.
            resolvers: vec!["8.8.8.8".into()],
            ..Config::default()
        };
        let mut problems = Vec::new();
        let mut dns_ip = c.dns_listen.ip();
        let mut dns_port = 53u16;
        let mut http_ip = c.http_listen.ip();
        let mut http_port = 8123u16;
        for (key, v) in &m {
            let bad = |what: &str| ConfigProblem::new(key.clone(), format!("expected {what}"));
            macro_rules! get {
                ($conv:expr, $what:expr) => {
                    match $conv(v) {
                        Some(x) => x,
                        None => {
                            problems.push(bad($what));
                            continue;
                        }
                    }
                };
            }
            match key.as_str() {
                "masters" => c.masters = get!(strings, "a list of strings"),
                "zk" => {
                    let zk: String = get!(string, "a string");
                    if !zk.is_empty() && !m.contains_key("masters") {
                        problems.push(ConfigProblem::new(
                            "zk",
                            "ZooKeeper leader detection is not supported; list the masters in \"masters\"",
                        ));
                    }
                }
                "refreshseconds"
                | "statetimeoutseconds"
                | "zkdetectiontimeout"
                | "file"
                | "iamconfigfile"
                | "cacertfile"
                | "certfile"
                | "keyfile"
                | "ns" => {}
                "ttl" => c.ttl = get!(uint::<u32>, "a positive integer"),
                "domain" => c.domain = get!(string, "a string").to_ascii_lowercase(),
                "port" => dns_port = get!(uint::<u16>, "a port number"),
                "httpport" => http_port = get!(uint::<u16>, "a port number"),
                "listener" => dns_ip = get!(ip, "an IP address"),
                "httplistener" => http_ip = get!(ip, "an IP address"),
                "resolvers" => c.resolvers = get!(strings, "a list of strings"),
                "zoneresolvers" => {
                    let obj = get!(Value::as_object, "an object of zone to resolver lists");
                    c.zone_resolvers.clear();
                    for (zone, list) in obj {
                        match strings(list) {
                            Some(l) => {
                                c.zone_resolvers.insert(zone.clone(), l);
                            }
                            None => problems.push(ConfigProblem::new(
                                format!("zoneResolvers.{zone}"),
                                "expected a list of strings",
                            )),
                        }
                    }
                }
                "timeout" => c.forward_timeout = Duration::from_secs(get!(uint::<u64>, "seconds")),
                "dnson" => c.dns_on = get!(Value::as_bool, "true or false"),
                "httpon" => c.http_on = get!(Value::as_bool, "true or false"),
                "externalon" => c.external_on = get!(Value::as_bool, "true or false"),
                "recurseon" => c.recurse_on = get!(Value::as_bool, "true or false"),
                "enforcerfc952" => c.enforce_rfc952 = get!(Value::as_bool, "true or false"),
                "settruncatebit" => c.set_truncate_bit = get!(Value::as_bool, "true or false"),
                "enumerationon" => c.enumeration_on = get!(Value::as_bool, "true or false"),
                "soamname" => c.soa_mname = get!(string, "a string"),
                "soarname" => c.soa_rname = get!(string, "a string"),
                "soarefresh" => c.soa_refresh = get!(uint::<i32>, "seconds"),
                "soaretry" => c.soa_retry = get!(uint::<i32>, "seconds"),
                "soaexpire" => c.soa_expire = get!(uint::<i32>, "seconds"),
                "soaminttl" => c.soa_minttl = get!(uint::<u32>, "seconds"),
                "srvrecorddefaultweight" => c.srv_weight = get!(uint::<u16>, "an integer"),
                "ipsources" => {
                    let names: Vec<String> = get!(strings, "a list of strings");
                    let mut sources = Vec::new();
                    for n in names {
                        match serde_json::from_value::<IpSource>(Value::String(n.to_ascii_lowercase())) {
                            Ok(s) => sources.push(s),
                            Err(_) => problems.push(ConfigProblem::new(
                                "IPSources",
                                format!("unknown IP source {n:?}; expected host, mesos, docker or netinfo"),
                            )),
                        }
                    }
                    c.ip_sources = sources;
                }
                "mesoshttpson" => {
                    let on: bool = get!(Value::as_bool, "true or false");
                    if on {
                        problems.push(ConfigProblem::new(
                            "MesosHTTPSOn",
                            "HTTPS to masters is not supported",
                        ));
                    }
                }
                "mesosauthentication" => {
                    let how: String = get!(string, "a string");
                    if !how.is_empty() {
                        problems.push(ConfigProblem::new(
                            "mesosAuthentication",
                            "authentication to masters is not supported",
                        ));
                    }
                }
                "mesoscredentials" => {}
                _ => {}
            }
        }
        c.dns_listen = SocketAddr::new(dns_ip, dns_port);
        c.http_listen = SocketAddr::new(http_ip, http_port);
        // Our SOA defaults follow the domain, as Mesos-DNS's do.
        if !m.contains_key("soamname") {
            c.soa_mname = format!("ns1.{}", c.domain);
        }
        if !m.contains_key("soarname") {
            c.soa_rname = format!("root.ns1.{}", c.domain);
        }
        problems.extend(c.validate());
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(MesosDnsConfigError::Invalid(problems))
        }
    }

    /// The Mesos-DNS shaped view served at `/v1/config` (Go field names).
    pub fn mesos_dns_view(&self) -> Value {
        let ip_sources: Vec<&str> = self.ip_sources.iter().map(|s| s.as_str()).collect();
        json!({
            "RefreshSeconds": 0,
            "Port": self.dns_listen.port(),
            "Timeout": self.forward_timeout.as_secs(),
            "StateTimeoutSeconds": self.master_timeout.as_secs(),
            "ZkDetectionTimeout": 0,
            "HttpPort": self.http_listen.port(),
            "TTL": self.ttl,
            "SRVRecordDefaultWeight": self.srv_weight,
            "SOASerial": 0,
            "SOARefresh": self.soa_refresh,
            "SOARetry": self.soa_retry,
            "SOAExpire": self.soa_expire,
            "SOAMinttl": self.soa_minttl,
            "SOAMname": crate::snapshot::fqdn(&self.soa_mname),
            "SOARname": crate::snapshot::fqdn(&self.soa_rname.replace('@', ".")),
            "Masters": self.masters,
            "ZoneResolvers": self.zone_resolvers,
            "Resolvers": self.resolvers,
            "IPSources": ip_sources,
            "Zk": "",
            "Domain": self.domain,
            "File": "",
            "Listener": self.dns_listen.ip().to_string(),
            "HTTPListener": self.http_listen.ip().to_string(),
            "RecurseOn": self.recurse_on,
            "DnsOn": self.dns_on,
            "HttpOn": self.http_on,
            "ExternalOn": self.external_on,
            "EnforceRFC952": self.enforce_rfc952,
            "SetTruncateBit": self.set_truncate_bit,
            "EnumerationOn": self.enumeration_on,
            "MesosHTTPSOn": false,
            "CACertFile": "",
            "CertFile": "",
            "KeyFile": "",
            "MesosCredentials": {"Principal": "", "Secret": ""},
            "IAMConfigFile": "",
            "MesosAuthentication": "",
        })
    }
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(a) => a.iter().map(string).collect(),
        _ => None,
    }
}

fn uint<T: TryFrom<u64>>(v: &Value) -> Option<T> {
    v.as_u64().and_then(|n| T::try_from(n).ok())
}

fn ip(v: &Value) -> Option<IpAddr> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// The `nameserver` addresses of a resolv.conf text (port 53).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => {
                    // Drop an IPv6 zone (`fe80::1%eth0`): we cannot use it portably.
                    addr.split('%').next()?.parse::<IpAddr>().ok()
                }
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, capstan_runtime::LoadConfigError> {
        capstan_runtime::parse_config("dns.yaml", yaml)
    }

    #[test]
    fn empty_yaml_means_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.dns_listen.port(), 53);
        assert_eq!(c.http_listen.port(), 8123);
    }

    #[test]
    fn strict_mode_needs_tls_a_cluster_address_and_tls_to_the_masters() {
        let err =
            parse("security: {mode: strict}\nmasters: ['http://10.0.0.1:5050']\n").unwrap_err();
        let fields = err.fields();
        for f in ["security.tls", "http_listen", "masters[0]"] {
            assert!(fields.contains(&f), "{f} missing in {fields:?}");
        }
        let ok = parse(
            "security: {mode: strict, tls: {cert_file: /a, key_file: /b, ca_file: /c}}\n\
             http_listen: 10.0.0.5:8123\nmasters: ['10.0.0.1:5050']\n\
             coord_endpoints: ['https://10.0.0.1:2379']\n",
        )
        .unwrap();
        assert_eq!(ok.security.mode, SecurityMode::Strict);
        // The DNS port may bind every address: it is not the guarded HTTP API.
        assert!(ok.dns_listen.ip().is_unspecified());
        // Without the HTTP API, its address does not matter.
        assert!(
            parse(
                "security: {mode: strict, tls: {cert_file: /a, key_file: /b, ca_file: /c}}\n\
                 http_on: false\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse("domian: x\n").unwrap_err();
        assert_eq!(err.fields(), vec!["domian"]);
    }

    #[test]
    fn validation_reports_every_problem() {
        let err = parse(
            "domain: 'bad domain'\nmasters: []\nttl: 0\nip_sources: [host, host]\nresolvers: ['x']\n\
             zone_resolvers: {consul: []}\ndns_on: false\nhttp_on: false\n",
        )
        .unwrap_err();
        let fields = err.fields();
        for f in [
            "domain",
            "masters",
            "ttl",
            "ip_sources[1]",
            "resolvers[0]",
            "zone_resolvers.consul",
            "dns_on",
        ] {
            assert!(fields.contains(&f), "{f} missing in {fields:?}");
        }
    }

    #[test]
    fn mesos_dns_config_json_is_accepted_case_insensitively() {
        let c = Config::from_mesos_dns_json(
            r#"{"zk":"zk://10.0.0.1:2181/mesos","masters":["10.0.0.1:5050","10.0.0.2:5050"],
                "refreshSeconds":60,"ttl":30,"domain":"Mesos","port":5353,"resolvers":["10.0.0.53"],
                "timeout":3,"httpon":true,"dnson":true,"httpport":8124,"externalon":false,
                "listener":"127.0.0.1","SOAMname":"ns1.mesos","SOARname":"root.ns1.mesos",
                "SOARefresh":60,"SOARetry":600,"SOAExpire":86400,"SOAMinttl":60,
                "IPSources":["netinfo","host"],"EnforceRFC952":true,"SetTruncateBit":false,
                "zoneResolvers":{"consul":["10.0.0.9:8600"]},"SomethingNew":1}"#,
        )
        .unwrap();
        assert_eq!(c.masters, vec!["10.0.0.1:5050", "10.0.0.2:5050"]);
        assert_eq!(c.ttl, 30);
        assert_eq!(c.domain, "mesos");
        assert_eq!(c.dns_listen, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(c.http_listen.port(), 8124);
        assert_eq!(c.forward_timeout, Duration::from_secs(3));
        assert!(!c.external_on && c.enforce_rfc952 && !c.set_truncate_bit);
        assert_eq!(c.ip_sources, vec![IpSource::Netinfo, IpSource::Host]);
        assert_eq!(c.zone_resolvers["consul"], vec!["10.0.0.9:8600"]);
        assert_eq!(c.resolvers, vec!["10.0.0.53"]);
    }

    #[test]
    fn the_negative_ttl_defaults_to_five_seconds_and_soaminttl_sets_it() {
        assert_eq!(Config::default().soa_minttl, 5);
        let c = parse("soa_minttl: 30\n").unwrap();
        assert_eq!(c.soa_minttl, 30);
        let c =
            Config::from_mesos_dns_json(r#"{"masters":["10.0.0.1:5050"],"SOAMinttl":60}"#).unwrap();
        assert_eq!(c.soa_minttl, 60, "an explicit Mesos-DNS setting is kept");
        let c = Config::from_mesos_dns_json(r#"{"masters":["10.0.0.1:5050"]}"#).unwrap();
        assert_eq!(c.soa_minttl, 5);
        assert_eq!(c.mesos_dns_view()["SOAMinttl"], 5);
    }

    #[test]
    fn mesos_dns_config_json_problems_are_named() {
        let err = Config::from_mesos_dns_json(
            r#"{"zk":"zk://h:2181/mesos","ttl":"x","IPSources":["bogus"],"MesosHTTPSOn":true}"#,
        )
        .unwrap_err();
        let MesosDnsConfigError::Invalid(problems) = err else {
            panic!("{err}")
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in ["zk", "ttl", "IPSources", "MesosHTTPSOn"] {
            assert!(fields.contains(&f), "{f} missing in {fields:?}");
        }
        assert!(Config::from_mesos_dns_json("[]").is_err());
    }

    #[test]
    fn config_files_load_by_extension() {
        let dir = std::env::temp_dir().join(format!("capstan-dns-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("config.json");
        std::fs::write(&json, r#"{"masters":["10.0.0.1:5050"],"ttl":7}"#).unwrap();
        assert_eq!(Config::load(&json).unwrap().ttl, 7);
        std::fs::write(&json, r#"{"masters":[],"zk":""}"#).unwrap();
        assert_eq!(Config::load(&json).unwrap_err().fields(), vec!["masters"]);
        let yaml = dir.join("dns.yaml");
        std::fs::write(&yaml, "ttl: 9\n").unwrap();
        assert_eq!(Config::load(&yaml).unwrap().ttl, 9);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resolv_conf_nameservers_are_read() {
        let got = parse_resolv_conf(
            "# c\nnameserver 10.0.0.2\nsearch x\nnameserver fe80::1%eth0\nnameserver junk\n",
        );
        assert_eq!(
            got,
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn upstreams_parse_with_and_without_port() {
        assert_eq!(
            parse_upstream("8.8.8.8"),
            Some("8.8.8.8:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_upstream("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_upstream("nope"), None);
    }
}
