//! `capstan package build`: a Universe-style source tree, as the public universe repository
//! laid it out — `packages/<L>/<name>/<rev>/{package.json, config.json,
//! marathon.json.mustache, resource.json[, command.json]}` — merged into one repository
//! document the way Universe's generator did (the template base64-encoded into
//! `marathon.v2AppMustacheTemplate`, `<rev>` the `releaseVersion`), and checked hard on the
//! way: every error names the file and the field. The built-in repository is such a tree
//! compiled into the binary, built by this same code.
//!
//! Beyond the repository schema, a package must also work: its options schema must be a
//! valid draft-4 schema whose defaults it accepts, and its template must render with those
//! defaults into a valid Marathon app.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::universe::{Package, Repository};

/// Why a source tree did not build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `path` is the file (relative to the tree) and, after a `:`, the field.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl ToString) -> BuildError {
    BuildError::Invalid {
        path: path.into(),
        message: message.to_string(),
    }
}

/// The files a package revision may have.
const FILES: [&str; 5] = [
    "package.json",
    "config.json",
    "marathon.json.mustache",
    "resource.json",
    "command.json",
];

/// The fields `package.json` may hold (the rest come from the other files).
const PACKAGE_FIELDS: [&str; 21] = [
    "packagingVersion",
    "name",
    "version",
    "releaseVersion",
    "maintainer",
    "description",
    "tags",
    "scm",
    "website",
    "framework",
    "selected",
    "preInstallNotes",
    "postInstallNotes",
    "postUninstallNotes",
    "licenses",
    "minDcosReleaseVersion",
    "hasKnownIssues",
    "lastUpdated",
    "upgradesFrom",
    "downgradesTo",
    "manager",
];

/// Where the packages are under `dir`: `dir/packages`, or `dir/repo/packages` as in the
/// public universe repository.
pub fn packages_dir(dir: &Path) -> Option<PathBuf> {
    [dir.join("packages"), dir.join("repo").join("packages")]
        .into_iter()
        .find(|p| p.is_dir())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BuildError> {
    let io = |source| BuildError::Io {
        path: dir.to_owned(),
        source,
    };
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads the tree under `dir` as `(packages/<L>/<name>/<rev>/<file>, contents)`.
pub fn read_tree(dir: &Path) -> Result<Vec<(String, String)>, BuildError> {
    let root = packages_dir(dir).ok_or_else(|| {
        invalid(
            dir.display().to_string(),
            "has no packages/ (or repo/packages/) directory",
        )
    })?;
    let mut paths = Vec::new();
    walk(&root, &mut paths)?;
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let rel = p.strip_prefix(&root).unwrap_or(&p);
        let name = format!("packages/{}", rel.to_string_lossy().replace('\\', "/"));
        let bytes = std::fs::read(&p).map_err(|source| BuildError::Io {
            path: p.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| invalid(&name, "is not UTF-8"))?;
        out.push((name, text));
    }
    Ok(out)
}

/// Builds the repository from the tree at `dir`.
pub fn build_dir(dir: &Path) -> Result<Repository, BuildError> {
    let files = read_tree(dir)?;
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    build(&refs)
}

/// One package revision's directory: `packages/<L>/<name>/<rev>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RevDir {
    letter: String,
    name: String,
    rev: String,
}

impl RevDir {
    fn path(&self) -> String {
        format!("packages/{}/{}/{}", self.letter, self.name, self.rev)
    }
}

fn parse_json(path: &str, text: &str) -> Result<Value, BuildError> {
    serde_json::from_str(text).map_err(|e| invalid(path, format!("not JSON: {e}")))
}

fn object(path: &str, v: Value) -> Result<Map<String, Value>, BuildError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(invalid(path, "must be a JSON object")),
    }
}

/// Merges one revision's files into a package object, checking each.
fn package_object(dir: &RevDir, files: &BTreeMap<&str, &str>) -> Result<Value, BuildError> {
    let base = dir.path();
    let at = |f: &str| format!("{base}/{f}");
    let pj = at("package.json");
    let text = files
        .get("package.json")
        .ok_or_else(|| invalid(&pj, "is missing"))?;
    let mut p = object(&pj, parse_json(&pj, text)?)?;
    for k in p.keys() {
        if !PACKAGE_FIELDS.contains(&k.as_str()) {
            return Err(invalid(
                format!("{pj}: {k}"),
                "is not a package.json field (config, resource, marathon and command come from their own files)",
            ));
        }
    }
    let rev: u64 = dir.rev.parse().map_err(|_| {
        invalid(
            &base,
            "the revision directory must be a number (the releaseVersion)",
        )
    })?;
    match p.get("releaseVersion") {
        None => {
            p.insert("releaseVersion".into(), json!(rev));
        }
        Some(v) if v.as_u64() == Some(rev) => {}
        Some(v) => {
            return Err(invalid(
                format!("{pj}: releaseVersion"),
                format!("is {v} but the revision directory is {rev}"),
            ));
        }
    }
    if let Some(text) = files.get("config.json") {
        let path = at("config.json");
        let schema = parse_json(&path, text)?;
        object(&path, schema.clone())?;
        jsonschema::draft4::new(&schema)
            .map_err(|e| invalid(&path, format!("not a valid draft-4 JSON schema: {e}")))?;
        p.insert("config".into(), schema);
    }
    for (file, key) in [("resource.json", "resource"), ("command.json", "command")] {
        if let Some(text) = files.get(file) {
            let path = at(file);
            let v = parse_json(&path, text)?;
            object(&path, v.clone())?;
            p.insert(key.into(), v);
        }
    }
    if let Some(t) = files.get("marathon.json.mustache") {
        crate::mustache::Template::parse(t)
            .map_err(|e| invalid(at("marathon.json.mustache"), e))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(t);
        p.insert("marathon".into(), json!({ "v2AppMustacheTemplate": b64 }));
    }
    Ok(Value::Object(p))
}

/// Decodes and checks one merged package, naming the field of any problem.
fn check_package(dir: &RevDir, v: &Value) -> Result<Package, BuildError> {
    let pj = format!("{}/package.json", dir.path());
    let p: Package = serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        invalid(format!("{pj}: {field}"), e.into_inner())
    })?;
    let one = json!({ "packages": [v] });
    Repository::parse(one.to_string().as_bytes()).map_err(|e| {
        let crate::universe::RepositoryError::Invalid { path, message } = e;
        let field = path
            .strip_prefix("packages[0].")
            .unwrap_or(&path)
            .to_owned();
        invalid(format!("{pj}: {field}"), message)
    })?;
    if p.name != dir.name {
        return Err(invalid(
            format!("{pj}: name"),
            format!("is {:?} but the directory is {:?}", p.name, dir.name),
        ));
    }
    let letter: String = p
        .name
        .chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .collect();
    if letter != dir.letter {
        return Err(invalid(
            dir.path(),
            format!(
                "a package named {:?} belongs under packages/{letter}/",
                p.name
            ),
        ));
    }
    Ok(p)
}

/// The package must work: its defaults satisfy its schema and its template renders with
/// them into a valid Marathon app.
fn check_renders(dir: &RevDir, p: &Package) -> Result<(), BuildError> {
    if let Err(crate::CosmosError::JsonSchemaMismatch { errors }) =
        crate::render::resolve_options(p, None)
    {
        let first = errors.first();
        let field = first
            .and_then(|e| e["instance"]["pointer"].as_str())
            .unwrap_or("")
            .trim_start_matches('/')
            .replace('/', ".");
        let message = first
            .and_then(|e| e["message"].as_str())
            .unwrap_or("invalid");
        return Err(invalid(
            format!("{}/config.json: {field}", dir.path()),
            format!("the defaults do not satisfy the schema: {message}"),
        ));
    }
    if p.template().is_none() {
        return Ok(());
    }
    let path = format!("{}/marathon.json.mustache", dir.path());
    let app = crate::render::render(p, "build", Some(&json!({})), None).map_err(|e| {
        let detail = match e.data() {
            Some(d) => format!("{e}: {d}"),
            None => e.to_string(),
        };
        invalid(
            &path,
            format!("does not render with the defaults: {detail}"),
        )
    })?;
    let def: capstan_marathon::AppDefinition =
        serde_path_to_error::deserialize(&app).map_err(|e| {
            invalid(
                format!("{path}: {}", e.path()),
                format!("the rendered app is not a Marathon app: {}", e.into_inner()),
            )
        })?;
    if let Some(v) = def.validate().into_iter().next() {
        return Err(invalid(
            format!("{path}: {}", v.path),
            format!("the rendered app is not valid: {}", v.errors.join("; ")),
        ));
    }
    Ok(())
}

/// Builds a repository from `(path, contents)` files, paths as `packages/<L>/<name>/<rev>/<file>`;
/// files outside `packages/` are ignored.
pub fn build(files: &[(&str, &str)]) -> Result<Repository, BuildError> {
    let mut revs: BTreeMap<RevDir, BTreeMap<&str, &str>> = BTreeMap::new();
    for (path, text) in files {
        let Some(rest) = path.strip_prefix("packages/") else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let [letter, name, rev, file] = parts[..] else {
            return Err(invalid(
                *path,
                "not a package file: expected packages/<L>/<name>/<revision>/<file>",
            ));
        };
        if !FILES.contains(&file) {
            return Err(invalid(
                *path,
                format!("unexpected file (a revision has {})", FILES.join(", ")),
            ));
        }
        let dir = RevDir {
            letter: letter.to_owned(),
            name: name.to_owned(),
            rev: rev.to_owned(),
        };
        revs.entry(dir).or_default().insert(file, text);
    }
    if revs.is_empty() {
        return Err(invalid("packages", "holds no package"));
    }
    let mut packages = Vec::new();
    let mut versions: BTreeSet<(String, String)> = BTreeSet::new();
    for (dir, files) in &revs {
        let v = package_object(dir, files)?;
        let p = check_package(dir, &v)?;
        if !versions.insert((p.name.clone(), p.version.clone())) {
            return Err(invalid(
                format!("{}/package.json: version", dir.path()),
                format!(
                    "version {:?} of {:?} is in two revisions",
                    p.version, p.name
                ),
            ));
        }
        check_renders(dir, &p)?;
        packages.push(v);
    }
    let doc = json!({ "packages": packages });
    Repository::parse(doc.to_string().as_bytes()).map_err(|e| invalid("repository", e.to_string()))
}

/// The repository file `capstan package build` writes: the v4 repository document, packages
/// sorted by name then newest first.
pub fn to_json(repo: &Repository) -> String {
    serde_json::to_string_pretty(repo).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKG: &str = r#"{"packagingVersion": "4.0", "name": "demo", "version": "1.0",
        "maintainer": "m", "description": "d", "tags": ["x"]}"#;
    const CONFIG: &str = r#"{"type": "object", "properties": {"n": {"type": "integer", "default": 1, "minimum": 1}}}"#;
    const TEMPLATE: &str =
        r#"{"id": "/demo", "cmd": "sleep 1", "instances": {{n}}, "cpus": 0.1, "mem": 32}"#;

    fn tree(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut files: BTreeMap<&str, &str> = [
            ("packages/D/demo/0/package.json", PKG),
            ("packages/D/demo/0/config.json", CONFIG),
            ("packages/D/demo/0/marathon.json.mustache", TEMPLATE),
            ("packages/D/demo/0/resource.json", "{}"),
            ("README.md", "ignored"),
        ]
        .into_iter()
        .collect();
        for (k, v) in overrides {
            if v.is_empty() {
                files.remove(k);
            } else {
                files.insert(k, v);
            }
        }
        files.into_iter().collect()
    }

    #[test]
    fn a_tree_builds_into_a_repository_with_release_versions_from_the_directories() {
        let pkg2 = r#"{"packagingVersion": "4.0", "name": "demo", "version": "2.0",
            "maintainer": "m", "description": "d", "tags": [], "upgradesFrom": ["1.0"]}"#;
        let files = tree(&[
            ("packages/D/demo/1/package.json", pkg2),
            (
                "packages/D/demo/1/marathon.json.mustache",
                TEMPLATE.replace("{{n}}", "1").leak(),
            ),
        ]);
        let repo = build(&files).unwrap();
        let got: Vec<(&str, u64)> = repo
            .packages
            .iter()
            .map(|p| (p.version.as_str(), p.release_version))
            .collect();
        assert_eq!(got, [("2.0", 1), ("1.0", 0)]);
        let p = &repo.packages[1];
        assert_eq!(p.template().as_deref(), Some(TEMPLATE));
        assert_eq!(p.config.as_ref().unwrap()["properties"]["n"]["default"], 1);
        assert_eq!(p.resource, Some(json!({})));
        let again = Repository::parse(to_json(&repo).as_bytes()).unwrap();
        assert_eq!(again, repo, "the written file loads back");
    }

    #[test]
    fn bad_trees_are_refused_naming_the_file_and_field() {
        let cases: Vec<(Vec<(&'static str, &'static str)>, &str)> = vec![
            (
                tree(&[(
                    "packages/D/demo/0/package.json",
                    r#"{"packagingVersion": "4.0", "name": "demo", "version": "1.0", "maintainer": "m", "description": "d", "tags": "x"}"#,
                )]),
                "packages/D/demo/0/package.json: tags",
            ),
            (
                tree(&[(
                    "packages/D/demo/0/package.json",
                    r#"{"packagingVersion": "4.0", "name": "demo", "version": "1 0", "maintainer": "m", "description": "d", "tags": []}"#,
                )]),
                "packages/D/demo/0/package.json: version",
            ),
            (
                tree(&[(
                    "packages/D/demo/0/package.json",
                    r#"{"packagingVersion": "4.0", "name": "demo", "version": "1", "maintainer": "m", "description": "d", "tags": [], "upgradeFrom": ["*"]}"#,
                )]),
                "packages/D/demo/0/package.json: upgradeFrom",
            ),
            (
                tree(&[(
                    "packages/D/demo/0/package.json",
                    r#"{"packagingVersion": "9.0", "name": "demo", "version": "1", "maintainer": "m", "description": "d", "tags": []}"#,
                )]),
                "packages/D/demo/0/package.json: packagingVersion",
            ),
            (
                tree(&[(
                    "packages/D/demo/0/package.json",
                    r#"{"packagingVersion": "4.0", "name": "other", "version": "1", "maintainer": "m", "description": "d", "tags": []}"#,
                )]),
                "packages/D/demo/0/package.json: name",
            ),
            (
                tree(&[(
                    "packages/D/demo/0/package.json",
                    r#"{"packagingVersion": "4.0", "name": "demo", "version": "1", "releaseVersion": 4, "maintainer": "m", "description": "d", "tags": []}"#,
                )]),
                "packages/D/demo/0/package.json: releaseVersion",
            ),
            (
                tree(&[("packages/D/demo/0/package.json", "")]),
                "packages/D/demo/0/package.json",
            ),
            (
                tree(&[("packages/D/demo/0/config.json", "[1]")]),
                "packages/D/demo/0/config.json",
            ),
            (
                tree(&[(
                    "packages/D/demo/0/config.json",
                    r#"{"type": "object", "properties": {"n": {"type": "wat"}}}"#,
                )]),
                "packages/D/demo/0/config.json",
            ),
            (
                tree(&[(
                    "packages/D/demo/0/config.json",
                    r#"{"type": "object", "properties": {"n": {"type": "integer", "default": 0, "minimum": 1}}}"#,
                )]),
                "packages/D/demo/0/config.json: n",
            ),
            (
                tree(&[("packages/D/demo/0/marathon.json.mustache", "{\"id\": ")]),
                "packages/D/demo/0/marathon.json.mustache",
            ),
            (
                tree(&[(
                    "packages/D/demo/0/marathon.json.mustache",
                    r#"{"id": "/demo", "cmd": "x", "cpus": "lots"}"#,
                )]),
                "packages/D/demo/0/marathon.json.mustache: cpus",
            ),
            (
                tree(&[(
                    "packages/D/demo/0/marathon.json.mustache",
                    r#"{"id": "/demo", "cmd": "x", "args": ["y"]}"#,
                )]),
                "packages/D/demo/0/marathon.json.mustache: /",
            ),
            (
                tree(&[("packages/D/demo/0/resources.json", "{}")]),
                "packages/D/demo/0/resources.json",
            ),
            (
                tree(&[("packages/D/demo/x/package.json", PKG)]),
                "packages/D/demo/x",
            ),
            (
                tree(&[("packages/demo/0/package.json", PKG)]),
                "packages/demo/0/package.json",
            ),
            (
                vec![("packages/X/demo/0/package.json", PKG)],
                "packages/X/demo/0",
            ),
            (
                tree(&[("packages/D/demo/1/package.json", PKG)]),
                "packages/D/demo/1/package.json: version",
            ),
            (vec![("README.md", "x")], "packages"),
        ];
        for (files, want) in cases {
            match build(&files) {
                Ok(_) => panic!("accepted, want an error at {want}"),
                Err(e) => {
                    let BuildError::Invalid { path, .. } = &e else {
                        panic!("{e}");
                    };
                    assert!(path.starts_with(want), "{e} (want {want})");
                }
            }
        }
    }

    #[test]
    fn the_builtin_tree_on_disk_builds_into_the_embedded_repository() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("universe");
        let from_disk = build_dir(&dir).unwrap();
        assert_eq!(from_disk, crate::builtin::build_builtin().unwrap());
        assert_eq!(from_disk.packages.len(), 6);
    }

    #[test]
    fn errors_read_as_file_colon_field_and_problem() {
        let files = tree(&[(
            "packages/D/demo/0/config.json",
            r#"{"type": "object", "properties": {"n": {"type": "integer", "default": "one"}}}"#,
        )]);
        let e = build(&files).unwrap_err().to_string();
        assert!(
            e.starts_with("packages/D/demo/0/config.json: n: the defaults do not satisfy"),
            "{e}"
        );
        let files = tree(&[(
            "packages/D/demo/0/marathon.json.mustache",
            r#"{"id": "/demo", "cmd": "x", "mem": {{n}}, "cpus": -1}"#,
        )]);
        let e = build(&files).unwrap_err().to_string();
        assert!(
            e.starts_with("packages/D/demo/0/marathon.json.mustache: "),
            "{e}"
        );
        assert!(e.contains("cpus"), "{e}");
    }

    #[test]
    fn read_tree_finds_packages_or_repo_packages() {
        let d = tempfile::tempdir().unwrap();
        let rev = d.path().join("repo/packages/D/demo/0");
        std::fs::create_dir_all(&rev).unwrap();
        std::fs::write(rev.join("package.json"), PKG).unwrap();
        let repo = build_dir(d.path()).unwrap();
        assert_eq!(repo.packages[0].name, "demo");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            build_dir(empty.path()),
            Err(BuildError::Invalid { .. })
        ));
    }
}
