//! The built-in repository, shipped inside the binary so a cluster with no network has a
//! catalog: Universe-style package sources (`package.json`, `config.json`, `resource.json`,
//! `marathon.json.mustache` per package, as the public universe laid them out) under
//! `universe/packages/`, merged into one repository document the way Universe's generator
//! did (the template base64-encoded into `marathon.v2AppMustacheTemplate`). Every package
//! runs on the cluster's offline images (`images/`).

use std::sync::{Arc, OnceLock};

use base64::Engine;
use serde_json::Value;

use crate::universe::{Repository, RepositoryError};

/// The URI of the built-in repository in the repository list and `DCOS_PACKAGE_SOURCE`.
pub const URI: &str = "builtin:universe";
/// Its name in the default repository list.
pub const NAME: &str = "Capstan";

/// One package's source files.
#[derive(Debug, Clone, Copy)]
pub struct PackageSource<'a> {
    pub package: &'a str,
    pub config: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub marathon_template: Option<&'a str>,
}

macro_rules! source {
    ($dir:literal) => {
        PackageSource {
            package: include_str!(concat!("../universe/packages/", $dir, "/package.json")),
            config: Some(include_str!(concat!(
                "../universe/packages/",
                $dir,
                "/config.json"
            ))),
            resource: Some(include_str!(concat!(
                "../universe/packages/",
                $dir,
                "/resource.json"
            ))),
            marathon_template: Some(include_str!(concat!(
                "../universe/packages/",
                $dir,
                "/marathon.json.mustache"
            ))),
        }
    };
}

/// The built-in packages' sources.
pub fn sources() -> Vec<PackageSource<'static>> {
    vec![source!("redis"), source!("hello-world")]
}

fn invalid(path: String, message: impl ToString) -> RepositoryError {
    RepositoryError::Invalid {
        path,
        message: message.to_string(),
    }
}

/// Merges package sources into a repository document and checks it.
pub fn build(sources: &[PackageSource<'_>]) -> Result<Repository, RepositoryError> {
    let mut packages = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let at = |file: &str| format!("packages[{i}] ({file})");
        let mut p: Value =
            serde_json::from_str(s.package).map_err(|e| invalid(at("package.json"), e))?;
        let Some(obj) = p.as_object_mut() else {
            return Err(invalid(at("package.json"), "must be an object"));
        };
        for (key, file, text) in [
            ("config", "config.json", s.config),
            ("resource", "resource.json", s.resource),
        ] {
            if let Some(text) = text {
                let v: Value = serde_json::from_str(text).map_err(|e| invalid(at(file), e))?;
                obj.insert(key.into(), v);
            }
        }
        if let Some(t) = s.marathon_template {
            let b64 = base64::engine::general_purpose::STANDARD.encode(t);
            obj.insert(
                "marathon".into(),
                serde_json::json!({ "v2AppMustacheTemplate": b64 }),
            );
        }
        packages.push(p);
    }
    let doc = serde_json::json!({ "packages": packages });
    Repository::parse(doc.to_string().as_bytes())
}

/// The built-in repository, built once.
pub fn repository() -> Arc<Repository> {
    static REPO: OnceLock<Arc<Repository>> = OnceLock::new();
    REPO.get_or_init(|| match build(&sources()) {
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
        let repo = build(&sources()).unwrap();
        let names: Vec<&str> = repo.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["hello-world", "redis"]);
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
