//! `capstan cluster status`: what this node knows about its cluster (its membership and the
//! `cluster:` section of its config, security mode included) and, on a master, what coord
//! says about its members. [`gather`] asks; [`render`] is the pure text the command prints.

use std::net::IpAddr;

use capstan_runtime::ClusterConfig;
use capstan_runtime::auth::SecurityMode;
use serde::Serialize;

use crate::layout::Membership;
use crate::token::Role;

/// The status report (`--json` prints it as it is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub cluster_id: String,
    pub name: String,
    pub role: Role,
    pub hostname: String,
    pub advertise: IpAddr,
    pub masters: Vec<IpAddr>,
    pub security: SecurityMode,
    pub ca_fingerprint: String,
    /// coord as this master sees it; `None` on an agent (it runs no coord).
    pub coord: Option<CoordStatus>,
}

/// coord's membership, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CoordStatus {
    Members {
        /// `(id, address, voter)` of each member.
        members: Vec<(u64, String, bool)>,
        leader: Option<u64>,
    },
    Unreachable(String),
}

/// The report from the node's files and, on a master, coord at `coord_endpoints`.
pub async fn gather(
    membership: &Membership,
    cluster: &ClusterConfig,
    coord_endpoints: &[String],
) -> Status {
    let coord = match membership.role {
        Role::Agent => None,
        Role::Master => Some(coord_status(cluster, coord_endpoints).await),
    };
    Status {
        cluster_id: membership.cluster_id.clone(),
        name: membership.name.clone(),
        role: membership.role,
        hostname: cluster
            .hostname
            .clone()
            .unwrap_or_else(|| cluster.advertise.to_string()),
        advertise: cluster.advertise,
        masters: cluster.masters.clone(),
        security: cluster.security.mode,
        ca_fingerprint: membership.ca_fingerprint.clone(),
        coord,
    }
}

async fn coord_status(cluster: &ClusterConfig, endpoints: &[String]) -> CoordStatus {
    let client = match crate::state::coord_client(&cluster.security, endpoints.iter()) {
        Ok(c) => c,
        Err(e) => return CoordStatus::Unreachable(capstan_types::Chain(&e).to_string()),
    };
    match client.members().await {
        Ok(m) => CoordStatus::Members {
            members: m
                .members
                .into_iter()
                .map(|m| (m.id, m.addr, m.voter))
                .collect(),
            leader: m.leader,
        },
        Err(e) => CoordStatus::Unreachable(capstan_types::Chain(&e).to_string()),
    }
}

/// The report as the command prints it.
pub fn render(s: &Status) -> String {
    let list = |ips: &[IpAddr]| {
        ips.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let security = match s.security {
        SecurityMode::Strict => "strict (every daemon speaks TLS; every call is authenticated)",
        SecurityMode::Permissive => {
            "permissive (plain HTTP inside the cluster; the router still asks for a login)"
        }
    };
    let mut out = format!(
        "Cluster   {} ({})\nNode      {} ({}, {})\nMasters   {}\nSecurity  {security}\nCA        {}\n",
        s.name,
        s.cluster_id,
        s.hostname,
        s.role,
        s.advertise,
        list(&s.masters),
        s.ca_fingerprint,
    );
    match &s.coord {
        None => {}
        Some(CoordStatus::Unreachable(why)) => {
            out.push_str(&format!("coord     unreachable: {why}\n"));
        }
        Some(CoordStatus::Members { members, leader }) => {
            let voters = members.iter().filter(|m| m.2).count();
            let leader = leader
                .and_then(|id| members.iter().find(|m| m.0 == id))
                .map_or_else(|| "no leader".to_owned(), |m| format!("leader {}", m.1));
            out.push_str(&format!(
                "coord     {} member(s), {voters} voting, {leader}\n",
                members.len()
            ));
            for (id, addr, voter) in members {
                let what = if *voter { "voter" } else { "learner" };
                out.push_str(&format!("          {id}  {addr}  {what}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(security: SecurityMode, coord: Option<CoordStatus>) -> Status {
        Status {
            cluster_id: "c-1".into(),
            name: "prod".into(),
            role: if coord.is_some() {
                Role::Master
            } else {
                Role::Agent
            },
            hostname: "m1".into(),
            advertise: "10.0.0.1".parse().unwrap(),
            masters: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            security,
            ca_fingerprint: "sha256:ab".into(),
            coord,
        }
    }

    #[test]
    fn the_report_names_the_mode_and_coords_members() {
        let members = CoordStatus::Members {
            members: vec![
                (1, "10.0.0.1:8181".into(), true),
                (2, "10.0.0.2:8181".into(), false),
            ],
            leader: Some(1),
        };
        // (status, lines the text must hold, lines it must not)
        let table: [(Status, &[&str], &[&str]); 3] = [
            (
                status(SecurityMode::Strict, Some(members)),
                &[
                    "Cluster   prod (c-1)",
                    "Node      m1 (master, 10.0.0.1)",
                    "Masters   10.0.0.1, 10.0.0.2",
                    "Security  strict",
                    "coord     2 member(s), 1 voting, leader 10.0.0.1:8181",
                    "          2  10.0.0.2:8181  learner",
                ],
                &["permissive"],
            ),
            (
                status(
                    SecurityMode::Permissive,
                    Some(CoordStatus::Unreachable("connection refused".into())),
                ),
                &[
                    "Security  permissive",
                    "coord     unreachable: connection refused",
                ],
                &["strict"],
            ),
            (
                status(SecurityMode::Permissive, None),
                &["Node      m1 (agent, 10.0.0.1)"],
                &["coord"],
            ),
        ];
        for (s, has, lacks) in table {
            let text = render(&s);
            for line in has {
                assert!(text.contains(line), "{line:?} in:\n{text}");
            }
            for word in lacks {
                assert!(!text.contains(word), "{word:?} not in:\n{text}");
            }
        }
    }
}
