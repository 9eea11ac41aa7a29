//! The node config file: one YAML file per node, a section per daemon plus `log:` and the
//! optional `cluster:` section every daemon section defaults from
//! (`capstan_runtime::cluster`).

use capstan_runtime::{ConfigProblem, LogConfig, Validate};
use serde::Deserialize;

/// `/etc/capstan/config.yaml`. Unknown keys are errors, in every section; a daemon reads its
/// section and falls back to its `Config::default()` when the section is absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub log: LogConfig,
    /// Already applied to the daemon sections by the loader; kept for `--check-config`.
    pub cluster: Option<capstan_runtime::ClusterConfig>,
    pub coord: Option<capstan_coord::Config>,
    pub master: Option<capstan_master::Config>,
    pub agent: Option<capstan_agent::Config>,
    pub apps: Option<capstan_apps::Config>,
    pub dns: Option<capstan_dns::Config>,
    pub router: Option<capstan_router::Config>,
    pub catalog: Option<capstan_catalog::Config>,
    pub swarm: Option<capstan_swarm::Config>,
    pub l4lb: Option<capstan_l4lb::Config>,
    pub bootstrap: Option<capstan_install::bootstrap::Config>,
}

impl Validate for NodeConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        [
            section("log", &self.log),
            section("coord", &self.coord),
            section("master", &self.master),
            section("agent", &self.agent),
            section("apps", &self.apps),
            section("dns", &self.dns),
            section("router", &self.router),
            section("catalog", &self.catalog),
            section("swarm", &self.swarm),
            section("l4lb", &self.l4lb),
            section("bootstrap", &self.bootstrap),
        ]
        .concat()
    }
}

/// A section's problems with field paths relative to the file.
fn section(name: &str, config: &impl Validate) -> Vec<ConfigProblem> {
    config
        .validate()
        .into_iter()
        .map(|p| p.under(name))
        .collect()
}
