//! The package collection: the configured repositories in order, and what Cosmos answers
//! over them — search, the package a describe or install picks, its versions. Pure: the
//! repositories are already loaded.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::CosmosError;
use crate::universe::{Package, Repository};

/// One loaded repository.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub uri: String,
    pub repo: Arc<Repository>,
}

/// The repositories in their configured order (the first has priority).
#[derive(Debug, Clone, Default)]
pub struct Collection {
    pub repos: Vec<Loaded>,
}

/// A package and the URI of the repository it came from.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub package: &'a Package,
    pub source: &'a str,
}

fn glob_match(pattern: &str, text: &str) -> bool {
    // `*` matches any run; the match is anchored at both ends.
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn matches(p: &Package, query: &str) -> bool {
    let q = query.to_lowercase();
    if q.is_empty() {
        return true;
    }
    let fields = std::iter::once(p.name.to_lowercase())
        .chain(std::iter::once(p.description.to_lowercase()))
        .chain(p.tags.iter().map(|t| t.to_lowercase()));
    let mut fields = fields;
    if q.contains('*') {
        fields.any(|f| glob_match(&q, &f))
    } else {
        fields.any(|f| f.contains(&q))
    }
}

impl Collection {
    /// Every package in merged order: repositories in order, each by name then newest first.
    pub fn packages(&self) -> impl Iterator<Item = Found<'_>> {
        self.repos.iter().flat_map(|l| {
            l.repo.packages.iter().map(move |p| Found {
                package: p,
                source: &l.uri,
            })
        })
    }

    /// `POST /package/search`: one entry per name (its first package in merged order),
    /// sorted by (not selected, name).
    pub fn search(&self, query: &str, origin: &str) -> Value {
        let mut first: BTreeMap<&str, Found<'_>> = BTreeMap::new();
        let mut versions: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for f in self.packages() {
            let name = f.package.name.as_str();
            first.entry(name).or_insert(f);
            versions
                .entry(name)
                .or_default()
                .entry(&f.package.version)
                .or_insert(f.package.release_version);
        }
        let mut hits: Vec<Found<'_>> = first
            .into_values()
            .filter(|f| matches(f.package, query))
            .collect();
        hits.sort_by(|a, b| {
            (!a.package.is_selected(), &a.package.name)
                .cmp(&(!b.package.is_selected(), &b.package.name))
        });
        let packages: Vec<Value> = hits
            .iter()
            .map(|f| {
                let p = f.package;
                let mut v = json!({
                    "name": p.name,
                    "currentVersion": p.version,
                    "versions": versions.get(p.name.as_str()),
                    "description": p.description,
                    "framework": p.is_framework(),
                    "tags": p.tags,
                    "selected": p.is_selected(),
                });
                if let Some(images) = p.images() {
                    let r = rewrite_resource(&json!({ "images": images }), origin);
                    v["images"] = r["images"].clone();
                }
                v
            })
            .collect();
        json!({ "packages": packages })
    }

    /// The package describe, render and install pick: `version` of `name` from the first
    /// repository that has it, or, without a version, the first `name` in merged order.
    pub fn find(&self, name: &str, version: Option<&str>) -> Result<Found<'_>, CosmosError> {
        let mut any = false;
        for f in self.packages().filter(|f| f.package.name == name) {
            any = true;
            if version.is_none_or(|v| v == f.package.version) {
                return Ok(f);
            }
        }
        match (any, version) {
            (true, Some(v)) => Err(CosmosError::VersionNotFound {
                name: name.to_owned(),
                version: v.to_owned(),
            }),
            _ => Err(CosmosError::PackageNotFound(name.to_owned())),
        }
    }

    /// `POST /package/list-versions`: version → releaseVersion (as a string) of every
    /// package named `name`.
    pub fn list_versions(&self, name: &str) -> Result<Value, CosmosError> {
        let mut results = serde_json::Map::new();
        for f in self.packages().filter(|f| f.package.name == name) {
            results
                .entry(f.package.version.clone())
                .or_insert_with(|| Value::String(f.package.release_version.to_string()));
        }
        if results.is_empty() {
            return Err(CosmosError::PackageNotFound(name.to_owned()));
        }
        Ok(json!({ "results": results }))
    }

    /// Whether `url` is a resource URL some package of some repository names (the only URLs
    /// `/package/resource` serves).
    pub fn has_resource_url(&self, url: &str) -> bool {
        fn walk(v: &Value, url: &str) -> bool {
            match v {
                Value::String(s) => s == url,
                Value::Array(a) => a.iter().any(|x| walk(x, url)),
                Value::Object(m) => m.values().any(|x| walk(x, url)),
                _ => false,
            }
        }
        self.packages()
            .any(|f| f.package.resource.as_ref().is_some_and(|r| walk(r, url)))
    }
}

/// The versions an install of `current` may upgrade to (packages of its name whose
/// `upgradesFrom` names its version or `*`) and downgrade to (versions its own
/// `downgradesTo` names, or any with `*`), in merged order.
pub fn moves(c: &Collection, current: &Package) -> (Vec<String>, Vec<String>) {
    let names = |list: &Option<Vec<String>>, v: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|x| x == "*" || x == v))
    };
    let mut up = Vec::new();
    let mut down = Vec::new();
    for f in c.packages().filter(|f| f.package.name == current.name) {
        let v = &f.package.version;
        if *v == current.version || up.contains(v) || down.contains(v) {
            continue;
        }
        if names(&f.package.upgrades_from, &current.version) {
            up.push(v.clone());
        } else if names(&current.downgrades_to, v) {
            down.push(v.clone());
        }
    }
    (up, down)
}

/// A package's `resource` with every URL a client downloads (images, asset URIs, CLI
/// binaries) pointed at the resource proxy of `origin` (`http://host`), as Cosmos answers
/// them: `<origin>/package/resource?url=<original>`, the original unencoded.
pub fn rewrite_resource(resource: &Value, origin: &str) -> Value {
    let proxy = |v: &mut Value| {
        if let Some(u) = v.as_str()
            && (u.starts_with("http://") || u.starts_with("https://"))
        {
            *v = Value::String(format!("{origin}/package/resource?url={u}"));
        }
    };
    let mut r = resource.clone();
    if let Some(images) = r.get_mut("images").and_then(Value::as_object_mut) {
        for (k, v) in images.iter_mut() {
            if k == "screenshots" {
                v.as_array_mut().into_iter().flatten().for_each(proxy);
            } else {
                proxy(v);
            }
        }
    }
    if let Some(uris) = r.pointer_mut("/assets/uris").and_then(Value::as_object_mut) {
        uris.values_mut().for_each(proxy);
    }
    if let Some(binaries) = r
        .pointer_mut("/cli/binaries")
        .and_then(Value::as_object_mut)
    {
        for os in binaries.values_mut().filter_map(Value::as_object_mut) {
            for b in os.values_mut() {
                if let Some(u) = b.get_mut("url") {
                    proxy(u);
                }
            }
        }
    }
    r
}

/// `describe` v3: `{"package": <package>}`; v2: the package object itself.
pub fn describe(p: &Package, v3: bool, origin: &str) -> Value {
    let mut pkg = p.to_json();
    if let Some(r) = &p.resource {
        pkg["resource"] = rewrite_resource(r, origin);
    }
    if v3 { json!({ "package": pkg }) } else { pkg }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(uri: &str, pkgs: Value) -> Loaded {
        let doc = json!({ "packages": pkgs });
        Loaded {
            name: uri.into(),
            uri: uri.into(),
            repo: Arc::new(Repository::parse(doc.to_string().as_bytes()).unwrap()),
        }
    }

    fn p(name: &str, version: &str, release: u64, selected: bool, tags: &[&str]) -> Value {
        json!({"packagingVersion": "3.0", "name": name, "version": version,
            "releaseVersion": release, "maintainer": "m", "description": format!("the {name} db"),
            "tags": tags, "selected": selected})
    }

    fn collection() -> Collection {
        Collection {
            repos: vec![
                repo(
                    "a",
                    json!([
                        p("redis", "4.0", 1, false, &["cache"]),
                        p("redis", "3.2", 0, false, &["cache"]),
                        p("zeta", "1", 0, true, &["z"]),
                    ]),
                ),
                repo(
                    "b",
                    json!([
                        p("redis", "5.0", 7, false, &[]),
                        p("nginx", "1", 0, false, &["web"])
                    ]),
                ),
            ],
        }
    }

    fn names(v: &Value) -> Vec<String> {
        v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn search_matches_names_descriptions_and_tags() {
        let c = collection();
        let cases = [
            ("", vec!["zeta", "nginx", "redis"]),
            ("RED", vec!["redis"]),
            ("cache", vec!["redis"]),
            ("db", vec!["zeta", "nginx", "redis"]),
            ("web", vec!["nginx"]),
            ("r*s", vec!["redis"]),
            ("*ginx", vec!["nginx"]),
            ("r*", vec!["redis"]),
            ("nothing", vec![]),
        ];
        for (q, want) in cases {
            assert_eq!(names(&c.search(q, "http://o")), want, "query {q:?}");
        }
        let all = c.search("redis", "http://o");
        assert_eq!(all["packages"][0]["currentVersion"], "4.0");
        assert_eq!(
            all["packages"][0]["versions"],
            json!({"4.0": 1, "3.2": 0, "5.0": 7})
        );
    }

    #[test]
    fn find_prefers_the_first_repository_and_names_a_missing_version() {
        let c = collection();
        let f = c.find("redis", None).unwrap();
        assert_eq!((f.package.version.as_str(), f.source), ("4.0", "a"));
        let f = c.find("redis", Some("5.0")).unwrap();
        assert_eq!(f.source, "b");
        assert_eq!(
            c.find("redis", Some("9")).unwrap_err(),
            CosmosError::VersionNotFound {
                name: "redis".into(),
                version: "9".into()
            }
        );
        assert_eq!(
            c.find("nope", None).unwrap_err(),
            CosmosError::PackageNotFound("nope".into())
        );
    }

    #[test]
    fn list_versions_answers_release_versions_as_strings() {
        let v = collection().list_versions("redis").unwrap();
        assert_eq!(v, json!({"results": {"4.0": "1", "3.2": "0", "5.0": "7"}}));
    }

    #[test]
    fn resource_urls_point_at_the_resource_proxy() {
        let r = json!({
            "images": {"icon-small": "http://x/s.png", "screenshots": ["https://x/1.png"]},
            "assets": {"uris": {"jar": "http://x/a.jar"}, "container": {"docker": {"d": "capstan/redis"}}},
            "cli": {"binaries": {"linux": {"x86-64": {"kind": "executable", "url": "http://x/dcos-a"}}}},
        });
        let got = rewrite_resource(&r, "https://h");
        let p = "https://h/package/resource?url=";
        assert_eq!(got["images"]["icon-small"], format!("{p}http://x/s.png"));
        assert_eq!(
            got["images"]["screenshots"][0],
            format!("{p}https://x/1.png")
        );
        assert_eq!(got["assets"]["uris"]["jar"], format!("{p}http://x/a.jar"));
        assert_eq!(got["assets"]["container"]["docker"]["d"], "capstan/redis");
        assert_eq!(
            got["cli"]["binaries"]["linux"]["x86-64"]["url"],
            format!("{p}http://x/dcos-a")
        );
    }

    #[test]
    fn describe_v2_is_the_flattened_package() {
        let c = collection();
        let f = c.find("zeta", None).unwrap();
        assert_eq!(
            describe(f.package, true, "http://o")["package"]["name"],
            "zeta"
        );
        assert_eq!(describe(f.package, false, "http://o")["name"], "zeta");
    }
}
