//! The `router:` section of the node config (docs/router.md, "Config").
//!
//! Every field has a default, unknown keys are errors, and [`Validate`] reports every problem
//! at once. Upstreams are `host:port` (or `http://host:port`), the one endpoint syntax of every
//! Capstan config. The masters and apps lists are only fallbacks: the leaders are followed
//! through coord's elections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use capstan_runtime::{ConfigProblem, Validate};
use serde::{Deserialize, Serialize};

/// Configuration of the router daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Plain HTTP listener (`None`: none).
    pub http_listen: Option<SocketAddr>,
    /// HTTPS listener (`None`: none); needs `tls`.
    pub https_listen: Option<SocketAddr>,
    /// The plain listener answers every request with a 301 to https.
    pub redirect_http: bool,
    /// `PUBLIC_IPV4` of `/metadata`.
    pub public_ip: IpAddr,
    /// coord members (`host:port`).
    pub coord_endpoints: Vec<String>,
    /// Masters (`host:port`): fallback when coord names no leader.
    pub masters: Vec<String>,
    /// apps daemons (`host:port`): fallback when coord names no leader.
    pub apps: Vec<String>,
    /// The dns daemon's HTTP API (`/mesos_dns/`, SRV lookups of `/service/`).
    pub dns_http: String,
    /// Cosmos-compatible catalog (`/package/`, `/capabilities`); unset: 503.
    pub catalog: Option<String>,
    /// Metronome-compatible jobs (`/service/metronome/`); unset: 503.
    pub jobs: Option<String>,
    /// dcos-log compatible logs (`/system/v1/logs/`); unset: 503.
    pub logs: Option<String>,
    /// Metrics (`/system/v1/metrics/`); unset: 503.
    pub metrics: Option<String>,
    /// This master's bootstrap server (`/install.sh`, `/v1/cluster`, `/v1/join`,
    /// `/v1/packages/`), plain HTTP on loopback; unset: 503. It trusts the
    /// `X-Forwarded-Proto` the router sets only because the router connects from loopback.
    pub bootstrap: Option<String>,
    /// Certificate, key and CA files of the HTTPS listener (reloaded when they change).
    pub tls: Option<TlsFiles>,
    /// The node's certificate, its key and the cluster CA the router presents to the
    /// cluster's own daemons when they run in strict mode. Set: masters, apps, agents, dns,
    /// the catalog, jobs, logs, metrics and coord are reached over TLS with it, their
    /// certificates checked against the CA; unset: plain HTTP (permissive mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_tls: Option<capstan_runtime::TlsFiles>,
    /// A directory of console files that replaces the built-in console (`capstan-ui`); unset:
    /// the console built into the binary.
    pub ui_dir: Option<PathBuf>,
    /// Lifetime of the tokens `POST /acs/api/v1/auth/login` issues, seconds.
    pub token_ttl_secs: u64,
    pub limits: Limits,
}

/// PEM files of the HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain (leaf first).
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster CA, served at `/ca/dcos-ca.crt` when coord has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// Guardrails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Request line plus headers; larger: 431.
    pub max_header_bytes: usize,
    /// Request body (declared or streamed); larger: 413.
    pub max_body_bytes: u64,
    /// Longest wait for each read from the client (body) and for the next keep-alive request.
    pub client_header_timeout_ms: u64,
    /// Longest wait for a TCP (and TLS) connection to an upstream.
    pub upstream_connect_timeout_ms: u64,
    /// Requests in flight per route family (mesos, agent, service, ...); more: 503.
    pub max_requests_per_route: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            max_body_bytes: 1024 * 1024 * 1024,
            client_header_timeout_ms: 60_000,
            upstream_connect_timeout_ms: 5_000,
            max_requests_per_route: 1024,
        }
    }
}

impl Limits {
    pub fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.client_header_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }
}

/// The installer's node certificate (`/var/lib/capstan/pki`).
const DEFAULT_PKI: &str = "/var/lib/capstan/pki";

impl Default for Config {
    fn default() -> Self {
        Config {
            http_listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80)),
            https_listen: None,
            redirect_http: false,
            public_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            coord_endpoints: vec!["127.0.0.1:8181".into()],
            masters: vec!["127.0.0.1:5050".into()],
            apps: vec!["127.0.0.1:8080".into()],
            dns_http: "127.0.0.1:8123".into(),
            catalog: None,
            jobs: None,
            logs: None,
            metrics: None,
            bootstrap: None,
            tls: Some(TlsFiles {
                cert: PathBuf::from(DEFAULT_PKI).join("node.pem"),
                key: PathBuf::from(DEFAULT_PKI).join("node.key"),
                ca: Some(PathBuf::from(DEFAULT_PKI).join("ca.pem")),
            }),
            cluster_tls: None,
            ui_dir: None,
            token_ttl_secs: 5 * 24 * 3600,
            limits: Limits::default(),
        }
    }
}

/// `host:port` (or `http://host:port`) with a non-zero port, returned as `host:port`.
pub fn authority(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    if s.is_empty() || s.contains('/') || s.contains('@') || s.contains(char::is_whitespace) {
        return None;
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    };
    (host_ok && port != 0).then(|| s.to_owned())
}

fn check_list(out: &mut Vec<ConfigProblem>, field: &str, list: &[String]) {
    if list.is_empty() {
        out.push(ConfigProblem::new(field, "list at least one host:port"));
    }
    for (i, e) in list.iter().enumerate() {
        if authority(e).is_none() {
            out.push(ConfigProblem::new(
                format!("{field}[{i}]"),
                format!("{e:?} is not host:port (or http://host:port)"),
            ));
        }
    }
}

fn check_one(out: &mut Vec<ConfigProblem>, field: &str, value: Option<&String>) {
    if let Some(e) = value
        && authority(e).is_none()
    {
        out.push(ConfigProblem::new(
            field,
            format!("{e:?} is not host:port (or http://host:port)"),
        ));
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.http_listen.is_none() && self.https_listen.is_none() {
            out.push(ConfigProblem::new(
                "http_listen",
                "at least one of http_listen and https_listen must be set",
            ));
        }
        if self.https_listen.is_some() && self.tls.is_none() {
            out.push(ConfigProblem::new(
                "tls",
                "https_listen needs tls: {cert, key}",
            ));
        }
        if self.redirect_http && (self.http_listen.is_none() || self.https_listen.is_none()) {
            out.push(ConfigProblem::new(
                "redirect_http",
                "redirecting to https needs both http_listen and https_listen",
            ));
        }
        if let (Some(a), Some(b)) = (self.http_listen, self.https_listen)
            && a == b
        {
            out.push(ConfigProblem::new(
                "https_listen",
                "must differ from http_listen",
            ));
        }
        check_list(&mut out, "coord_endpoints", &self.coord_endpoints);
        check_list(&mut out, "masters", &self.masters);
        check_list(&mut out, "apps", &self.apps);
        check_one(&mut out, "dns_http", Some(&self.dns_http));
        check_one(&mut out, "catalog", self.catalog.as_ref());
        check_one(&mut out, "jobs", self.jobs.as_ref());
        check_one(&mut out, "logs", self.logs.as_ref());
        check_one(&mut out, "metrics", self.metrics.as_ref());
        check_one(&mut out, "bootstrap", self.bootstrap.as_ref());
        if self.token_ttl_secs == 0 {
            out.push(ConfigProblem::new("token_ttl_secs", "must be at least 1"));
        }
        let l = &self.limits;
        if l.max_header_bytes < 1024 {
            out.push(ConfigProblem::new(
                "limits.max_header_bytes",
                "must be at least 1024",
            ));
        }
        if l.max_body_bytes == 0 {
            out.push(ConfigProblem::new(
                "limits.max_body_bytes",
                "must be at least 1",
            ));
        }
        if l.client_header_timeout_ms == 0 {
            out.push(ConfigProblem::new(
                "limits.client_header_timeout_ms",
                "must be at least 1",
            ));
        }
        if l.upstream_connect_timeout_ms == 0 {
            out.push(ConfigProblem::new(
                "limits.upstream_connect_timeout_ms",
                "must be at least 1",
            ));
        }
        if l.max_requests_per_route == 0 {
            out.push(ConfigProblem::new(
                "limits.max_requests_per_route",
                "must be at least 1",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        assert_eq!(Config::default().validate(), vec![]);
    }

    #[test]
    fn the_spec_example_parses() {
        let yaml = r#"
http_listen: 127.0.1.1:80
https_listen: 127.0.1.1:443
redirect_http: false
public_ip: 127.0.1.1
coord_endpoints: ["127.0.1.1:8181"]
masters: ["127.0.1.1:5050"]
apps: ["127.0.1.1:8080"]
dns_http: 127.0.1.1:8123
catalog: null
jobs: null
logs: null
metrics: null
bootstrap: 127.0.0.1:8090
tls: { cert: /x/node.pem, key: /x/node.key, ca: /x/ca.pem }
ui_dir: null
token_ttl_secs: 432000
limits: { max_header_bytes: 32768, max_body_bytes: 1073741824, client_header_timeout_ms: 60000, upstream_connect_timeout_ms: 5000, max_requests_per_route: 1024 }
"#;
        let c: Config = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(c.validate(), vec![]);
        assert_eq!(c.https_listen, Some("127.0.1.1:443".parse().unwrap()));
        assert_eq!(c.bootstrap.as_deref(), Some("127.0.0.1:8090"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(serde_yaml_ng::from_str::<Config>("htp_listen: 1.2.3.4:80").is_err());
        assert!(serde_yaml_ng::from_str::<Config>("limits: {max_headers: 1}").is_err());
    }

    #[test]
    fn every_problem_is_reported() {
        let c = Config {
            http_listen: None,
            https_listen: Some("127.0.0.1:443".parse().unwrap()),
            tls: None,
            masters: vec![],
            apps: vec!["nope".into()],
            catalog: Some("x:0".into()),
            bootstrap: Some("127.0.0.1".into()),
            ..Config::default()
        };
        let fields: Vec<String> = c.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["tls", "masters", "apps[0]", "catalog", "bootstrap"]
        );
    }

    #[test]
    fn authorities() {
        assert_eq!(authority("http://a.b:80/").as_deref(), Some("a.b:80"));
        assert_eq!(authority("[::1]:8080").as_deref(), Some("[::1]:8080"));
        assert_eq!(authority("a:0"), None);
        assert_eq!(authority("a/b:1"), None);
        assert_eq!(authority("u@a:1"), None);
    }
}
