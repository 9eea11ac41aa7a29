//! `capstan l4lb` configuration (YAML, snake_case, unknown keys rejected).
//!
//! The named-VIP ranges must equal `dns`'s (`l4lb_named_ipv4`/`l4lb_named_ipv6`) on every node:
//! both compute the same table from them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use capstan_runtime::auth::SecurityMode;
use capstan_runtime::{ConfigProblem, SecurityConfig, Validate, duration_secs};
use capstan_types::vip::{AddrRange, VipConfig};
use serde::{Deserialize, Serialize};

/// How VIP traffic is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPlane {
    /// A tokio TCP proxy listening on each VIP address (which must be local).
    Userspace,
    /// nftables DNAT rules in the kernel ([`crate::nft`]), VIP addresses on `capstan-vip0`
    /// and blackhole routes over the named ranges; needs CAP_NET_ADMIN and `nft`.
    Nftables,
    /// Follow and serve `/v1/vips` only, forward nothing.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Masters' HTTP addresses (`host:port` or `http://host:port`).
    pub masters: Vec<String>,
    /// The operator API (`/v1/vips`), dcos-net's port.
    pub http_listen: SocketAddr,
    pub data_plane: DataPlane,
    /// Userspace mode: bind VIP listeners with `SO_REUSEPORT`, so the l4lb processes of
    /// several nodes sharing one network namespace (`capstan dev`) serve the VIPs together.
    pub reuse_port: bool,
    /// IPv4 named-VIP range, `first-last` or `addr/prefix` (DC/OS `11.0.0.0-11.255.255.254`).
    pub named_ipv4: String,
    /// IPv6 named-VIP range (DC/OS `fd01:c::/64`); empty: none.
    pub named_ipv6: String,
    /// Timeout of connecting to a backend, seconds; the next backend is tried after it.
    #[serde(with = "duration_secs")]
    pub backend_connect_timeout: Duration,
    /// Timeout of connecting to a master, seconds.
    #[serde(with = "duration_secs")]
    pub master_timeout: Duration,
    pub missed_heartbeats: u32,
    #[serde(with = "duration_secs")]
    pub reconnect_backoff_max: Duration,
    /// Who may call the operator API, and TLS (see `capstan_runtime::security`). In strict
    /// mode the API speaks TLS with the node's certificate behind the guard, and the stream
    /// from the masters is read over mutual TLS with the same certificate.
    pub security: SecurityConfig,
    /// Coord's endpoints, where the identity records are: in strict mode, tokens and basic
    /// credentials on the API are verified against them. Empty: only the cluster's node
    /// certificates may call.
    pub coord_endpoints: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            masters: vec!["127.0.0.1:5050".into()],
            http_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 62080),
            data_plane: DataPlane::Userspace,
            reuse_port: false,
            named_ipv4: capstan_types::vip::DEFAULT_NAMED_IPV4.into(),
            named_ipv6: capstan_types::vip::DEFAULT_NAMED_IPV6.into(),
            backend_connect_timeout: Duration::from_secs(2),
            master_timeout: Duration::from_secs(10),
            missed_heartbeats: 5,
            reconnect_backoff_max: Duration::from_secs(15),
            security: SecurityConfig::default(),
            coord_endpoints: Vec::new(),
        }
    }
}

impl Config {
    /// The VIP function's settings; invalid ranges (rejected by validation) fall back to the
    /// defaults.
    pub fn vip_config(&self) -> VipConfig {
        let d = VipConfig::default();
        VipConfig {
            ipv4: AddrRange::parse(&self.named_ipv4).unwrap_or(d.ipv4),
            ipv6: if self.named_ipv6.trim().is_empty() {
                None
            } else {
                AddrRange::parse(&self.named_ipv6).ok().or(d.ipv6)
            },
        }
    }
}

impl Config {
    /// The ranges the kernel data plane guards: the named-VIP ranges, whose addresses must
    /// never leave the node (IP VIPs elsewhere are made local one by one).
    pub fn guard(&self) -> crate::nft::Guard {
        let v = self.vip_config();
        crate::nft::Guard {
            ipv4: vec![v.ipv4],
            ipv6: v.ipv6.into_iter().collect(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.masters.is_empty() {
            p.push(ConfigProblem::new(
                "masters",
                "list at least one master as host:port",
            ));
        }
        for (i, m) in self.masters.iter().enumerate() {
            if capstan_mesos_client::Endpoint::parse(m).is_err() {
                p.push(ConfigProblem::new(
                    format!("masters[{i}]"),
                    format!("{m:?} is not host:port (or http://host:port)"),
                ));
            }
        }
        if let Err(e) = AddrRange::<Ipv4Addr>::parse(&self.named_ipv4) {
            p.push(ConfigProblem::new("named_ipv4", e.to_string()));
        }
        if !self.named_ipv6.trim().is_empty()
            && let Err(e) = AddrRange::<Ipv6Addr>::parse(&self.named_ipv6)
        {
            p.push(ConfigProblem::new("named_ipv6", e.to_string()));
        }
        for (field, d) in [
            ("backend_connect_timeout", self.backend_connect_timeout),
            ("master_timeout", self.master_timeout),
        ] {
            if d.is_zero() {
                p.push(ConfigProblem::new(field, "must be more than 0"));
            }
        }
        if self.missed_heartbeats == 0 {
            p.push(ConfigProblem::new(
                "missed_heartbeats",
                "must be at least 1",
            ));
        }
        p.extend(self.security.problems("security"));
        p.extend(
            self.security
                .listen_problems("http_listen", self.http_listen),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        assert!(Config::default().validate().is_empty());
        assert_eq!(Config::default().vip_config(), VipConfig::default());
        let bad = Config {
            masters: vec![],
            named_ipv4: "11.0.0.0".into(),
            named_ipv6: "x".into(),
            missed_heartbeats: 0,
            ..Config::default()
        };
        let fields: Vec<String> = bad.validate().iter().map(|p| p.field.clone()).collect();
        for f in ["masters", "named_ipv4", "named_ipv6", "missed_heartbeats"] {
            assert!(fields.iter().any(|x| x == f), "{f}: {fields:?}");
        }
        let no_v6 = Config {
            named_ipv6: String::new(),
            ..Config::default()
        };
        assert_eq!(no_v6.vip_config().ipv6, None);
    }

    #[test]
    fn strict_mode_needs_tls_a_cluster_address_and_tls_to_the_masters() {
        let c: Config = serde_json::from_str(
            r#"{"security":{"mode":"strict"},"masters":["http://10.0.0.1:5050"]}"#,
        )
        .unwrap();
        let fields: Vec<String> = c.validate().iter().map(|p| p.field.clone()).collect();
        for f in ["security.tls", "http_listen", "masters[0]"] {
            assert!(fields.iter().any(|x| x == f), "{f}: {fields:?}");
        }
        let ok: Config = serde_json::from_str(
            r#"{"security":{"mode":"strict","tls":{"cert_file":"/a","key_file":"/b","ca_file":"/c"}},
                "http_listen":"10.0.0.5:62080","masters":["10.0.0.1:5050"]}"#,
        )
        .unwrap();
        assert!(ok.validate().is_empty(), "{:?}", ok.validate());
    }

    #[test]
    fn yaml_keys_are_snake_case_and_unknown_ones_rejected() {
        let c: Config =
            serde_json::from_str(r#"{"data_plane":"none","named_ipv4":"198.18.0.0/24"}"#).unwrap();
        assert_eq!(c.data_plane, DataPlane::None);
        assert!(serde_json::from_str::<Config>(r#"{"nope":1}"#).is_err());
    }
}
