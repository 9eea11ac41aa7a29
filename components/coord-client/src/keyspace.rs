//! Coord's keyspace: every prefix a Capstan daemon keeps its state under, named once, so two
//! daemons can never collide and an operator can find any daemon's keys
//! (`docs/coord-api.md`, "Keyspace"). Each daemon's prefix is configurable (tests run several
//! clusters in one coord); these are the defaults and the layout under a prefix.

/// Root of everything Capstan keeps in coord.
pub const ROOT: &str = "/capstan";
/// The cluster itself: its identity and CA certificate (`info`), the CA key masters sign node
/// certificates with (`ca_key`), and join tokens (`tokens/<id>`), written by
/// `capstan cluster init` and `capstan cluster token`.
pub const CLUSTER: &str = "/capstan/cluster";
/// The masters: election and registry (admitted and gone agents, added and removed
/// frameworks).
pub const MASTER: &str = "/capstan/master";
/// apps (Marathon): election, apps, versions, groups, deployments, tasks, framework id.
pub const APPS: &str = "/capstan/apps";
/// The router: users, service accounts, token signing keys (reserved).
pub const ROUTER: &str = "/capstan/router";
/// The catalog: repositories and installs (reserved).
pub const CATALOG: &str = "/capstan/catalog";
/// Jobs: job definitions and runs (reserved).
pub const JOBS: &str = "/capstan/jobs";
/// swarm (the Docker-API front end): election (one leader among the masters' swarms, like
/// apps), containers, networks, framework id.
pub const SWARM: &str = "/capstan/swarm";

/// The leader election of the daemon whose state is under `prefix`: candidates' keys live
/// under `<prefix>/election/`.
pub fn election(prefix: &str) -> String {
    under(prefix, "election")
}

/// The master's registry under `prefix`: `<prefix>/registry/{agents,gone_agents,frameworks,
/// removed_frameworks}/<id>`.
pub fn registry(prefix: &str) -> String {
    under(prefix, "registry")
}

/// `<prefix>/<name>`, whether or not `prefix` ends in `/`.
pub fn under(prefix: &str, name: &str) -> String {
    format!("{}/{name}", prefix.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_valid_and_disjoint() {
        let all = [CLUSTER, MASTER, APPS, ROUTER, CATALOG, JOBS, SWARM];
        for p in all {
            crate::validate_key(p).unwrap();
            assert!(p.starts_with(ROOT));
            for q in all {
                assert!(
                    p == q || !q.starts_with(&format!("{p}/")),
                    "{p} contains {q}"
                );
            }
        }
        assert_eq!(election("/capstan/master/"), "/capstan/master/election");
        assert_eq!(registry(MASTER), "/capstan/master/registry");
    }
}
