//! The agent's resources and attributes: detection, config parsing, and the Mesos messages
//! that describe them. Detection reads `/proc` and `statvfs`; everything else is pure.

use std::path::Path;

use capstan_proto::mesos::v1::{Attribute, Resource, value};
use capstan_types::RangeSet;

use crate::config::Config;

/// Parses `[31000-32000]`, `31000-31999,33000-33010` or `[80-80, 443-443]`: ports, so every
/// value is at most 65535.
pub fn parse_port_ranges(text: &str) -> Result<RangeSet, String> {
    let ports = RangeSet::parse_mesos(text)?;
    match ports.ranges().last() {
        Some(&(_, end)) if end > 65535 => Err(format!("`{end}` is not a port (at most 65535)")),
        _ => Ok(ports),
    }
}

/// Parses `name:value` into an attribute: numbers become scalars, the rest text.
pub fn parse_attribute(text: &str) -> Result<Attribute, String> {
    let (name, val) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not name:value"))?;
    let (name, val) = (name.trim(), val.trim());
    if name.is_empty() || val.is_empty() {
        return Err(format!("`{text}` has an empty name or value"));
    }
    let attr = match val.parse::<f64>() {
        Ok(v) if v.is_finite() => Attribute {
            name: name.to_owned(),
            r#type: value::Type::Scalar as i32,
            scalar: Some(value::Scalar { value: v }),
            ..Default::default()
        },
        _ => Attribute {
            name: name.to_owned(),
            r#type: value::Type::Text as i32,
            text: Some(value::Text {
                value: val.to_owned(),
            }),
            ..Default::default()
        },
    };
    Ok(attr)
}

/// Resource totals after detection and overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentResources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub ports: RangeSet,
    pub role: String,
}

impl AgentResources {
    /// Detects what the config leaves unset.
    pub fn detect(config: &Config) -> Self {
        let cpus = config.resources.cpus.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0)
        });
        let mem = config.resources.mem.unwrap_or_else(|| {
            // Mesos leaves 1 GB (or half, on small hosts) for the system.
            let total = detect_mem_mb().unwrap_or(1024.0);
            if total >= 2048.0 {
                total - 1024.0
            } else {
                total / 2.0
            }
        });
        let disk = config.resources.disk.unwrap_or_else(|| {
            let total = detect_disk_mb(&config.work_dir).unwrap_or(1024.0);
            if total >= 10240.0 {
                total - 5120.0
            } else {
                total / 2.0
            }
        });
        AgentResources {
            cpus,
            mem: mem.floor(),
            disk: disk.floor(),
            ports: config.port_ranges(),
            role: if config.public { "slave_public" } else { "*" }.to_owned(),
        }
    }

    /// The resources as Mesos messages.
    #[allow(deprecated)] // `role` is still what pre-refinement consumers read.
    pub fn to_proto(&self) -> Vec<Resource> {
        let scalar = |name: &str, v: f64| Resource {
            name: name.to_owned(),
            r#type: value::Type::Scalar as i32,
            scalar: Some(value::Scalar { value: v }),
            role: Some(self.role.clone()),
            ..Default::default()
        };
        let mut out = vec![
            scalar("cpus", self.cpus),
            scalar("mem", self.mem),
            scalar("disk", self.disk),
        ];
        if !self.ports.is_empty() {
            out.push(Resource {
                name: "ports".to_owned(),
                r#type: value::Type::Ranges as i32,
                ranges: Some(value::Ranges {
                    range: self
                        .ports
                        .ranges()
                        .iter()
                        .map(|&(begin, end)| value::Range { begin, end })
                        .collect(),
                }),
                role: Some(self.role.clone()),
                ..Default::default()
            });
        }
        out
    }
}

fn detect_mem_mb() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn detect_disk_mb(dir: &Path) -> Option<f64> {
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent()?;
    }
    let st = nix::sys::statvfs::statvfs(probe).ok()?;
    Some(st.blocks() as f64 * st.fragment_size() as f64 / (1024.0 * 1024.0))
}

/// What a task asked for, summed over its resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskResources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    /// Host ports in the order the task's `ports` resource lists them.
    pub ports: Vec<u64>,
}

impl TaskResources {
    pub fn from_proto(resources: &[Resource]) -> Self {
        let mut out = TaskResources::default();
        for r in resources {
            let scalar = r.scalar.as_ref().map(|s| s.value).unwrap_or(0.0);
            match r.name.as_str() {
                "cpus" => out.cpus += scalar,
                "mem" => out.mem += scalar,
                "disk" => out.disk += scalar,
                "ports" => {
                    for range in r.ranges.iter().flat_map(|rs| rs.range.iter()) {
                        // A task never holds more than a handful; cap a malformed huge range.
                        let end = range.end.min(range.begin.saturating_add(1024));
                        out.ports.extend(range.begin..=end);
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// `name:value` attributes, for the flattened `/state` JSON.
pub fn attribute_json(attr: &Attribute) -> serde_json::Value {
    if let Some(s) = &attr.scalar {
        serde_json::json!(s.value)
    } else if let Some(t) = &attr.text {
        serde_json::json!(t.value)
    } else {
        serde_json::Value::Null
    }
}

/// Flattened `/state` resources: `{"cpus":1,"mem":128,"disk":0,"gpus":0,"ports":"[31000-31005]"}`.
pub fn flatten(cpus: f64, mem: f64, disk: f64, ports: &RangeSet) -> serde_json::Value {
    let mut obj = serde_json::json!({"cpus": cpus, "mem": mem, "disk": disk, "gpus": 0});
    if !ports.is_empty() {
        obj["ports"] = serde_json::json!(ports.to_mesos_string());
    }
    obj
}

/// The set of `ports`, as ranges.
pub fn ports_to_ranges(ports: &[u64]) -> RangeSet {
    RangeSet::of_values(ports.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_in_mesos_and_plain_forms() {
        let r = |ranges: &[(u64, u64)]| RangeSet::new(ranges.iter().copied());
        assert_eq!(
            parse_port_ranges("[31000-32000]").unwrap(),
            r(&[(31000, 32000)])
        );
        assert_eq!(
            parse_port_ranges("80, 443-444").unwrap(),
            r(&[(80, 80), (443, 444)])
        );
        assert_eq!(parse_port_ranges("[]").unwrap(), r(&[]));
        assert!(parse_port_ranges("[2-1]").is_err());
        assert!(parse_port_ranges("x-1").is_err());
        assert!(parse_port_ranges("70000").is_err());
    }

    #[test]
    fn attributes_are_scalar_or_text() {
        let a = parse_attribute("rack:r1").unwrap();
        assert_eq!(a.text.unwrap().value, "r1");
        let b = parse_attribute("level: 3").unwrap();
        assert_eq!(b.scalar.unwrap().value, 3.0);
        assert!(parse_attribute("rack").is_err());
        assert!(parse_attribute(":x").is_err());
    }

    #[test]
    fn public_agents_carry_the_slave_public_role_and_overrides_win() {
        let cfg = Config {
            public: true,
            resources: crate::config::ResourcesConfig {
                cpus: Some(3.0),
                mem: Some(1000.0),
                disk: Some(2000.0),
                ports: "[31000-31010]".into(),
            },
            ..Default::default()
        };
        let res = AgentResources::detect(&cfg);
        assert_eq!((res.cpus, res.mem, res.disk), (3.0, 1000.0, 2000.0));
        let proto = res.to_proto();
        assert_eq!(proto.len(), 4);
        #[allow(deprecated)]
        let roles_ok = proto
            .iter()
            .all(|r| r.role.as_deref() == Some("slave_public"));
        assert!(roles_ok);
    }

    #[test]
    fn detection_finds_some_cpus_and_memory() {
        let res = AgentResources::detect(&Config::default());
        assert!(res.cpus >= 1.0 && res.mem > 0.0 && res.disk > 0.0);
        assert_eq!(res.role, "*");
    }

    #[test]
    fn task_resources_sum_and_list_ports_in_order() {
        let res = vec![
            Resource {
                name: "cpus".into(),
                r#type: 0,
                scalar: Some(value::Scalar { value: 0.5 }),
                ..Default::default()
            },
            Resource {
                name: "ports".into(),
                r#type: 1,
                ranges: Some(value::Ranges {
                    range: vec![
                        value::Range {
                            begin: 31005,
                            end: 31006,
                        },
                        value::Range {
                            begin: 31000,
                            end: 31000,
                        },
                    ],
                }),
                ..Default::default()
            },
        ];
        let t = TaskResources::from_proto(&res);
        assert_eq!(t.cpus, 0.5);
        assert_eq!(t.ports, vec![31005, 31006, 31000]);
        assert_eq!(
            ports_to_ranges(&t.ports),
            RangeSet::new([(31000, 31000), (31005, 31006)])
        );
    }
}
