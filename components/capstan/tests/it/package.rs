//! `capstan package build`: a Universe-style source tree into a repository file, refused with
//! the file and field of the problem.

use std::path::Path;

use serde_json::Value;

use super::{capstan, stderr, stdout};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn package_build_turns_the_builtin_source_tree_into_a_repository_file() {
    let tree = concat!(env!("CARGO_MANIFEST_DIR"), "/../catalog/universe");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("repo.json");
    let out = capstan(&["package", "build", tree, "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("redis 7.0-1"), "{}", stdout(&out));
    let repo: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let names: Vec<&str> = repo["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in [
        "hello-world",
        "memcached",
        "nginx",
        "postgresql",
        "prometheus",
        "redis",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    // Without -o the repository goes to stdout, the same document.
    let out = capstan(&["package", "build", tree]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(again, repo);
}

#[test]
fn package_build_refuses_a_bad_tree_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "repo/packages/D/demo/0/package.json",
        r#"{"packagingVersion": "4.0", "name": "demo", "version": "1.0",
            "maintainer": "m", "description": "d", "tags": "not-a-list"}"#,
    );
    write(
        root,
        "repo/packages/D/demo/0/marathon.json.mustache",
        r#"{"id": "/demo", "cmd": "sleep 1"}"#,
    );
    let out_file = root.join("out.json");
    let out = capstan(&[
        "package",
        "build",
        root.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("packages/D/demo/0/package.json: tags"),
        "{err}"
    );
    assert!(!out_file.exists(), "nothing written for a bad tree");

    // A template that does not render into an app names the template.
    write(
        root,
        "repo/packages/D/demo/0/package.json",
        r#"{"packagingVersion": "4.0", "name": "demo", "version": "1.0",
            "maintainer": "m", "description": "d", "tags": []}"#,
    );
    write(
        root,
        "repo/packages/D/demo/0/marathon.json.mustache",
        r#"{"id": "/demo", "cmd": "sleep 1", "cpus": "{{missing}}"}"#,
    );
    let out = capstan(&["package", "build", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("packages/D/demo/0/marathon.json.mustache"),
        "{}",
        stderr(&out)
    );

    let out = capstan(&["package", "build", "/nonexistent/tree"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/tree"),
        "{}",
        stderr(&out)
    );
}
