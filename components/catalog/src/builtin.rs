//! The built-in repository, shipped inside the binary so a cluster with no network has a
//! catalog: a Universe-style source tree (`universe/packages/<L>/<name>/<rev>/...`, as the
//! public universe laid it out) embedded at compile time and built by the same code as
//! `capstan package build` ([`crate::source`]). Every package runs on the cluster's offline
//! images (`images/`).

use std::sync::{Arc, OnceLock};

use crate::source::{BuildError, build};
use crate::universe::Repository;

/// The URI of the built-in repository in the repository list and `DCOS_PACKAGE_SOURCE`.
pub const URI: &str = "builtin:universe";
/// Its name in the default repository list.
pub const NAME: &str = "Capstan";

/// The embedded source tree: `(packages/<L>/<name>/<rev>/<file>, contents)`.
pub const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_files.rs"));

/// Builds the built-in repository from its embedded sources.
pub fn build_builtin() -> Result<Repository, BuildError> {
    build(FILES)
}

/// The built-in repository, built once.
pub fn repository() -> Arc<Repository> {
    static REPO: OnceLock<Arc<Repository>> = OnceLock::new();
    REPO.get_or_init(|| match build_builtin() {
        Ok(r) => Arc::new(r),
        Err(e) => {
            // The sources are part of the binary and a test builds them: unreachable in a
            // released build. An empty catalog is better than a crash loop.
            tracing::error!(error = %e, "The built-in repository is invalid");
            Arc::new(Repository {
                packages: Vec::new(),
            })
        }
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::render;
    use serde_json::json;

    #[test]
    fn every_builtin_package_renders_with_defaults_into_a_valid_marathon_app() {
        let repo = build_builtin().unwrap();
        let names: Vec<&str> = repo.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hello-world",
                "memcached",
                "nginx",
                "postgresql",
                "prometheus",
                "redis"
            ]
        );
        for p in &repo.packages {
            let app = render(p, URI, Some(&json!({})), None).unwrap();
            let def: capstan_marathon::AppDefinition = serde_json::from_value(app.clone())
                .unwrap_or_else(|e| panic!("{}: {e}: {app}", p.name));
            let problems = def.validate();
            assert!(problems.is_empty(), "{}: {problems:?}", p.name);
            assert_eq!(def.id.to_string(), format!("/{}", p.name));
            assert!(
                def.container
                    .is_some_and(|c| c.docker.is_some_and(|d| d.image.starts_with("capstan/")))
            );
        }
    }

    #[test]
    fn redis_takes_its_sizes_and_name_from_options() {
        let repo = repository();
        let p = repo.versions_of("redis").next().unwrap();
        let app = render(
            p,
            URI,
            Some(&json!({"service": {"name": "cache"}, "redis": {"cpus": 1, "mem": 512}})),
            None,
        )
        .unwrap();
        assert_eq!(app["id"], "/cache");
        assert_eq!(app["cpus"], 1);
        assert_eq!(app["mem"], 512);
        assert!(app["cmd"].as_str().unwrap().contains("$(( 512 * 786432 ))"));
        assert_eq!(app["portDefinitions"][0]["labels"]["VIP_0"], "/cache:6379");
        let bad = render(p, URI, Some(&json!({"redis": {"mem": 1}})), None);
        assert!(matches!(
            bad,
            Err(crate::CosmosError::JsonSchemaMismatch { .. })
        ));
    }
}
