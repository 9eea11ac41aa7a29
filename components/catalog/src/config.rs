//! `catalog:` section of the node config (snake_case, unknown keys rejected).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use capstan_runtime::auth::SecurityMode;
use capstan_runtime::{ConfigProblem, SecurityConfig, Validate};
use serde::{Deserialize, Serialize};

/// Configuration of the catalog daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the Cosmos API (the router proxies `/package/` here).
    pub listen: SocketAddr,
    /// Coord endpoints (`host:port` or `http://host:port`); the repository list is kept
    /// there. Empty: the list lives in memory (tests, a lone node).
    pub coord_endpoints: Vec<String>,
    /// The catalog's prefix in coord (default `/capstan/catalog`).
    pub coord_prefix: String,
    /// Endpoints of the apps (Marathon) API, tried in order; any instance proxies to its
    /// leader.
    pub apps: Vec<String>,
    /// Endpoints of the masters' HTTP API, tried in order: uninstall tears down the framework
    /// an app labelled `DCOS_PACKAGE_FRAMEWORK_NAME` ran. Empty: no teardown.
    pub masters: Vec<String>,
    /// How long a fetched remote repository is reused before it is fetched again, seconds.
    pub repository_cache_secs: u64,
    /// The image store: `docker save` archives imported bundles brought, served to agents
    /// that miss an image (`GET /package/images/<name>`). Created on the first upload.
    pub images_dir: PathBuf,
    /// The largest image archive an upload may be, bytes.
    pub max_image_bytes: u64,
    /// Who may call the API, and TLS (see `capstan_runtime::security`). Strict mode needs
    /// `coord_endpoints` (the identity records are there); the catalog's own calls to apps
    /// and the masters then present the node's certificate over https.
    pub security: SecurityConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7070),
            coord_endpoints: Vec::new(),
            coord_prefix: capstan_coord_client::keyspace::CATALOG.to_owned(),
            apps: vec!["127.0.0.1:8080".into()],
            masters: Vec::new(),
            repository_cache_secs: 60,
            images_dir: PathBuf::from("/var/lib/capstan-catalog/images"),
            max_image_bytes: 8 * 1024 * 1024 * 1024,
            security: SecurityConfig::default(),
        }
    }
}

/// `host:port` or `http://host:port` → `http://host:port`.
pub fn http_url(endpoint: &str) -> String {
    url_with_scheme(endpoint, "http")
}

/// `host:port` → `<scheme>://host:port`; an endpoint that names its scheme keeps it.
pub fn url_with_scheme(endpoint: &str, scheme: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.trim_end_matches('/').to_owned()
    } else {
        format!("{scheme}://{endpoint}")
    }
}

fn endpoint_ok(e: &str) -> bool {
    let hostport = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .unwrap_or(e)
        .trim_end_matches('/');
    hostport
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.apps.is_empty() {
            out.push(ConfigProblem::new(
                "apps",
                "must name at least one endpoint",
            ));
        }
        for (i, e) in self.apps.iter().enumerate() {
            if !endpoint_ok(e) {
                out.push(ConfigProblem::new(
                    format!("apps[{i}]"),
                    "must be host:port or http://host:port",
                ));
            }
        }
        for (i, e) in self.masters.iter().enumerate() {
            if !endpoint_ok(e) {
                out.push(ConfigProblem::new(
                    format!("masters[{i}]"),
                    "must be host:port or http://host:port",
                ));
            }
        }
        for (i, e) in self.coord_endpoints.iter().enumerate() {
            if !endpoint_ok(e) {
                out.push(ConfigProblem::new(
                    format!("coord_endpoints[{i}]"),
                    "must be host:port or http://host:port",
                ));
            }
        }
        if !self.images_dir.is_absolute() {
            out.push(ConfigProblem::new("images_dir", "must be an absolute path"));
        }
        if self.max_image_bytes == 0 {
            out.push(ConfigProblem::new("max_image_bytes", "must be at least 1"));
        }
        out.extend(self.security.problems("security"));
        out.extend(self.security.listen_problems("listen", self.listen));
        if self.security.mode == SecurityMode::Strict && self.coord_endpoints.is_empty() {
            out.push(ConfigProblem::new(
                "coord_endpoints",
                "strict mode verifies credentials against the identity records in coord: name its endpoints",
            ));
        }
        if capstan_coord_client::validate_key(&self.coord_prefix).is_err() {
            out.push(ConfigProblem::new(
                "coord_prefix",
                "must be a valid coord key",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_endpoints_are_named() {
        assert!(Config::default().validate().is_empty());
        let c = Config {
            apps: vec!["x:1".into(), "nope".into()],
            coord_endpoints: vec!["http://c:0".into()],
            coord_prefix: String::new(),
            ..Config::default()
        };
        let fields: Vec<String> = c.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["apps[1]", "coord_endpoints[0]", "coord_prefix"]);
        let c: Config = serde_json::from_str(r#"{"apps": ["10.0.0.1:8080"]}"#).unwrap();
        assert_eq!(c.apps, ["10.0.0.1:8080"]);
        assert!(serde_json::from_str::<Config>(r#"{"app": []}"#).is_err());
    }
}
