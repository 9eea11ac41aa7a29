//! The Universe repository format Cosmos consumes: a repository is `{"packages": [...]}`, each
//! package one version of one package (packaging versions 2.0 to 5.0), with its Marathon
//! template (base64 Mustache), its options schema (`config`) and its `resource` (images,
//! assets, CLI binaries).
//!
//! Packages are typed, but the parts Cosmos passes through untouched (`config`, `resource`,
//! `command`, `licenses`) stay JSON values: describe answers them byte for byte as the
//! repository had them.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Universe repository document (`repo-up-to-<dcos>.json`, schema v3, v4 or v5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub packages: Vec<Package>,
}

/// One version of one package, as the repository lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub packaging_version: PackagingVersion,
    pub name: String,
    pub version: String,
    /// Required from 3.0 on; 2.0 packages may omit it (then 0).
    #[serde(default)]
    pub release_version: u64,
    pub maintainer: String,
    pub description: String,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_install_notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_install_notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_uninstall_notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licenses: Option<Vec<License>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_dcos_release_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_known_issues: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrades_from: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrades_to: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marathon: Option<Marathon>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Value>,
}

/// `{name, url}` of a package's license.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct License {
    pub name: String,
    pub url: String,
}

/// The package's Marathon app template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marathon {
    /// base64 of the `marathon.json.mustache` file.
    pub v2_app_mustache_template: String,
}

/// `packagingVersion`: which schema a package follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PackagingVersion {
    #[serde(rename = "2.0")]
    V2,
    #[serde(rename = "3.0")]
    V3,
    #[serde(rename = "4.0")]
    V4,
    #[serde(rename = "5.0")]
    V5,
}

impl PackagingVersion {
    /// The `version=` of `application/vnd.dcos.universe.package+json` for this packaging.
    pub fn media_version(self) -> &'static str {
        match self {
            PackagingVersion::V2 => "v2",
            PackagingVersion::V3 => "v3",
            PackagingVersion::V4 => "v4",
            PackagingVersion::V5 => "v5",
        }
    }
}

/// Why a repository document was refused, with the path of the bad field.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("repository is not valid: {path}: {message}")]
    Invalid { path: String, message: String },
}

impl RepositoryError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> RepositoryError {
        RepositoryError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl Repository {
    /// Parses and checks a repository document, then sorts its packages as Cosmos does: by
    /// name, then newest (highest `releaseVersion`) first.
    pub fn parse(bytes: &[u8]) -> Result<Repository, RepositoryError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let mut repo: Repository = serde_path_to_error_free(de)?;
        for (i, p) in repo.packages.iter().enumerate() {
            p.check().map_err(|(field, message)| {
                RepositoryError::at(format!("packages[{i}].{field}"), message)
            })?;
        }
        repo.packages.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(b.release_version.cmp(&a.release_version))
        });
        Ok(repo)
    }

    /// The versions of `name`, newest first.
    pub fn versions_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Package> + 'a {
        self.packages.iter().filter(move |p| p.name == name)
    }
}

/// Decodes without a path-tracking crate: serde_json's own message names line and column,
/// and the field check below names the path of the fields that matter.
fn serde_path_to_error_free(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
) -> Result<Repository, RepositoryError> {
    Repository::deserialize(de).map_err(|e| RepositoryError::at("packages", e.to_string()))
}

fn name_ok(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

fn version_ok(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
}

impl Package {
    /// The schema rules serde cannot express; `Err((field, problem))`.
    fn check(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: &str| Err((f.to_owned(), m.to_owned()));
        if self.packaging_version >= PackagingVersion::V3 {
            if !name_ok(&self.name) {
                return bad("name", "must match ^[a-z][a-z0-9-]*[a-z0-9]$");
            }
            if !version_ok(&self.version) {
                return bad("version", "must match ^[-a-zA-Z0-9.]+$");
            }
        } else if self.name.is_empty() {
            return bad("name", "must not be empty");
        }
        if let Some((i, _)) = self
            .tags
            .iter()
            .enumerate()
            .find(|(_, t)| t.is_empty() || t.chars().any(char::is_whitespace))
        {
            return Err((format!("tags[{i}]"), "must match ^[^\\s]+$".into()));
        }
        if let Some(m) = &self.marathon
            && self.template_from(m).is_none()
        {
            return bad(
                "marathon.v2AppMustacheTemplate",
                "must be base64 of a UTF-8 template",
            );
        }
        if let Some(c) = &self.config
            && !c.is_object()
        {
            return bad("config", "must be a JSON schema object");
        }
        if let Some(r) = &self.resource
            && !r.is_object()
        {
            return bad("resource", "must be an object");
        }
        if self.packaging_version < PackagingVersion::V4
            && (self.upgrades_from.is_some() || self.downgrades_to.is_some())
        {
            return bad("upgradesFrom", "needs packagingVersion 4.0 or later");
        }
        Ok(())
    }

    fn template_from(&self, m: &Marathon) -> Option<String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(m.v2_app_mustache_template.trim())
            .ok()?;
        String::from_utf8(bytes).ok()
    }

    /// The decoded Marathon template, if the package has one.
    pub fn template(&self) -> Option<String> {
        self.marathon.as_ref().and_then(|m| self.template_from(m))
    }

    pub fn is_framework(&self) -> bool {
        self.framework.unwrap_or(false)
    }

    pub fn is_selected(&self) -> bool {
        self.selected.unwrap_or(false)
    }

    /// The package as JSON, as the repository had it (sorted keys aside).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The package's `resource.images`, if any.
    pub fn images(&self) -> Option<&Value> {
        self.resource.as_ref().and_then(|r| r.get("images"))
    }

    /// The metadata Cosmos stores in `DCOS_PACKAGE_METADATA` and answers in `package list`
    /// (`packageDefinition`): the package without its template, config, resource and command.
    pub fn metadata(&self) -> Value {
        let mut v = serde_json::json!({
            "packagingVersion": self.packaging_version,
            "name": self.name,
            "version": self.version,
            "maintainer": self.maintainer,
            "description": self.description,
            "tags": self.tags,
            "selected": self.is_selected(),
            "framework": self.is_framework(),
        });
        let opt = |v: &mut Value, k: &str, x: Option<Value>| {
            if let Some(x) = x {
                v[k] = x;
            }
        };
        opt(&mut v, "scm", self.scm.clone().map(Value::from));
        opt(&mut v, "website", self.website.clone().map(Value::from));
        opt(
            &mut v,
            "preInstallNotes",
            self.pre_install_notes.clone().map(Value::from),
        );
        opt(
            &mut v,
            "postInstallNotes",
            self.post_install_notes.clone().map(Value::from),
        );
        opt(
            &mut v,
            "postUninstallNotes",
            self.post_uninstall_notes.clone().map(Value::from),
        );
        opt(
            &mut v,
            "licenses",
            self.licenses
                .as_ref()
                .and_then(|l| serde_json::to_value(l).ok()),
        );
        opt(&mut v, "images", self.images().cloned());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pkg(name: &str, version: &str, release: u64) -> Value {
        json!({
            "packagingVersion": "4.0", "name": name, "version": version,
            "releaseVersion": release, "maintainer": "m", "description": "d", "tags": ["t"],
            "marathon": {"v2AppMustacheTemplate": base64::engine::general_purpose::STANDARD.encode("{}")},
        })
    }

    fn parse(v: Value) -> Result<Repository, RepositoryError> {
        Repository::parse(v.to_string().as_bytes())
    }

    #[test]
    fn packages_sort_by_name_then_newest_first() {
        let r =
            parse(json!({"packages": [pkg("bb", "1", 0), pkg("aa", "1", 0), pkg("aa", "2", 1)]}))
                .unwrap();
        let got: Vec<(&str, u64)> = r
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.release_version))
            .collect();
        assert_eq!(got, [("aa", 1), ("aa", 0), ("bb", 0)]);
        assert_eq!(r.packages[0].template().as_deref(), Some("{}"));
    }

    #[test]
    fn bad_packages_are_refused_with_the_path_of_the_field() {
        let cases = [
            (json!({"packages": [pkg("A", "1", 0)]}), "packages[0].name"),
            (
                json!({"packages": [pkg("ok", "1", 0), pkg("ok", "1 0", 1)]}),
                "packages[1].version",
            ),
            (
                {
                    let mut p = pkg("ok", "1", 0);
                    p["tags"] = json!(["a b"]);
                    json!({"packages": [p]})
                },
                "packages[0].tags[0]",
            ),
            (
                {
                    let mut p = pkg("ok", "1", 0);
                    p["marathon"]["v2AppMustacheTemplate"] = json!("!!");
                    json!({"packages": [p]})
                },
                "packages[0].marathon.v2AppMustacheTemplate",
            ),
            (
                {
                    let mut p = pkg("ok", "1", 0);
                    p["packagingVersion"] = json!("9.0");
                    json!({"packages": [p]})
                },
                "packages",
            ),
            (json!({"packages": [], "extra": 1}), "packages"),
        ];
        for (doc, want) in cases {
            match parse(doc.clone()) {
                Err(RepositoryError::Invalid { path, .. }) => assert_eq!(path, want, "{doc}"),
                Ok(_) => panic!("accepted {doc}"),
            }
        }
    }

    #[test]
    fn packaging_2_0_needs_no_release_version() {
        let mut p = pkg("Old_Name", "x y", 0);
        p["packagingVersion"] = json!("2.0");
        p["version"] = json!("1.0");
        p.as_object_mut().unwrap().remove("releaseVersion");
        let r = parse(json!({"packages": [p]})).unwrap();
        assert_eq!(r.packages[0].release_version, 0);
    }

    #[test]
    fn metadata_has_the_label_fields_only() {
        let mut p = pkg("aa", "1", 0);
        p["resource"] = json!({"images": {"icon-small": "http://x/i.png"}});
        p["postUninstallNotes"] = json!("bye");
        let r = parse(json!({"packages": [p]})).unwrap();
        let m = r.packages[0].metadata();
        assert_eq!(m["images"]["icon-small"], "http://x/i.png");
        assert_eq!(m["postUninstallNotes"], "bye");
        assert!(m.get("marathon").is_none());
        assert!(m.get("scm").is_none());
    }
}
