//! `POST /cosmos/service/update`, as Cosmos's service update: an installed package gets new
//! options (merged over the ones it was installed with, or replacing them) and/or another
//! version of the package, rendered again and put in place of the app through the apps API.
//! Pure: which version an update may move to, how options combine, and the app it renders.
//!
//! Open Cosmos refused every version change (`VersionUpgradeNotSupportedInOpen`); Capstan
//! allows exactly the moves the packages declare: to a version whose `upgradesFrom` names
//! the installed version (or `*`), or to one the installed version's `downgradesTo` names
//! (or `*`). Anything else is `VersionChangeNotAllowed`, with the allowed moves in `data`.

use capstan_marathon::PathId;
use serde_json::{Value, json};

use crate::catalog::{Collection, Found, moves};
use crate::error::CosmosError;
use crate::render::{merge, render, resolve_options};
use crate::universe::Package;

/// The options an update renders with: `provided` alone with `replace`, else `provided`
/// deep-merged over the `stored` ones (the install's `DCOS_PACKAGE_OPTIONS`), which must
/// exist.
pub fn merge_options(
    stored: Option<&Value>,
    provided: Option<&Value>,
    replace: bool,
) -> Result<Value, CosmosError> {
    let provided = provided.filter(|v| !v.is_null());
    if replace {
        return Ok(provided.cloned().unwrap_or_else(|| json!({})));
    }
    let Some(stored) = stored else {
        return Err(CosmosError::OptionsNotStored);
    };
    let mut out = stored.clone();
    if let Some(p) = provided {
        merge(&mut out, p);
    }
    Ok(out)
}

/// Whether an install of `current` may move to `requested` (the same version always may).
pub fn check_move(c: &Collection, current: &Package, requested: &str) -> Result<(), CosmosError> {
    if requested == current.version {
        return Ok(());
    }
    let (up, down) = moves(c, current);
    if up.iter().chain(&down).any(|v| v == requested) {
        return Ok(());
    }
    Err(CosmosError::VersionChangeNotAllowed {
        name: current.name.clone(),
        current: current.version.clone(),
        requested: requested.to_owned(),
        upgrades_to: up,
        downgrades_to: down,
    })
}

/// The package an update renders: `requested` of the installed package's name if given and
/// allowed, else the installed version as the collection has it, else (its repository
/// gone) the installed definition itself from `installed_source`.
pub fn target<'a>(
    c: &'a Collection,
    current: &'a Package,
    installed_source: &'a str,
    requested: Option<&str>,
) -> Result<Found<'a>, CosmosError> {
    match requested.filter(|v| *v != current.version) {
        Some(v) => {
            let found = c.find(&current.name, Some(v))?;
            check_move(c, current, v)?;
            Ok(found)
        }
        None => Ok(c
            .find(&current.name, Some(&current.version))
            .unwrap_or(Found {
                package: current,
                source: installed_source,
            })),
    }
}

/// The app an update puts in place of `app_id`, and the resolved options it answers: the
/// rendered template must keep the app's id.
pub fn plan(
    target: Found<'_>,
    options: &Value,
    app_id: &PathId,
) -> Result<(Value, Value), CosmosError> {
    let app = render(target.package, target.source, Some(options), None)?;
    if let Some(id) = app.get("id").and_then(Value::as_str) {
        let id = PathId::parse(id);
        if id != *app_id {
            return Err(CosmosError::AppIdChanged {
                new: id.to_string(),
                old: app_id.to_string(),
            });
        }
    }
    let mut app = app;
    app["id"] = Value::String(app_id.to_string());
    let resolved = resolve_options(target.package, Some(options))?;
    Ok((app, resolved))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::Engine;

    use super::*;
    use crate::catalog::Loaded;
    use crate::render::{LABEL_OPTIONS, LABEL_VERSION, decode_json_label};
    use crate::universe::Repository;

    fn pkg(version: &str, release: u64, up: Option<&[&str]>, down: Option<&[&str]>) -> Value {
        let t = r#"{"id": "/{{service.name}}", "cmd": "run {{version}} {{service.mem}}", "cpus": 0.1, "mem": {{service.mem}}}"#
            .replace("{{version}}", version);
        let mut p = json!({
            "packagingVersion": "4.0", "name": "db", "version": version,
            "releaseVersion": release, "maintainer": "m", "description": "d", "tags": [],
            "marathon": {"v2AppMustacheTemplate":
                base64::engine::general_purpose::STANDARD.encode(t)},
            "config": {"type": "object", "properties": {"service": {"type": "object",
                "properties": {"name": {"type": "string", "default": "db"},
                               "mem": {"type": "integer", "default": 64, "minimum": 32}},
                "additionalProperties": false}}},
        });
        if let Some(u) = up {
            p["upgradesFrom"] = json!(u);
        }
        if let Some(d) = down {
            p["downgradesTo"] = json!(d);
        }
        p
    }

    /// db 1 (downgrades to nothing), 2 (upgrades from 1, downgrades to 1), 3 (upgrades
    /// from 2 only), 4 (upgrades from anything).
    fn collection() -> Collection {
        let doc = json!({"packages": [
            pkg("1", 0, None, None),
            pkg("2", 1, Some(&["1"]), Some(&["1"])),
            pkg("3", 2, Some(&["2"]), None),
            pkg("4", 3, Some(&["*"]), Some(&["*"])),
        ]});
        Collection {
            repos: vec![Loaded {
                name: "r".into(),
                uri: "file:///r.json".into(),
                repo: Arc::new(Repository::parse(doc.to_string().as_bytes()).unwrap()),
            }],
        }
    }

    fn package(c: &Collection, v: &str) -> Package {
        c.find("db", Some(v)).unwrap().package.clone()
    }

    #[test]
    fn versions_move_only_where_upgrades_from_or_downgrades_to_allow() {
        let c = collection();
        let cases = [
            ("1", "1", true),
            ("1", "2", true),
            ("1", "3", false),
            ("1", "4", true),
            ("2", "1", true),
            ("2", "3", true),
            ("3", "2", false),
            ("3", "1", false),
            ("3", "4", true),
            ("4", "1", true),
            ("4", "3", true),
        ];
        for (from, to, ok) in cases {
            let current = package(&c, from);
            assert_eq!(check_move(&c, &current, to).is_ok(), ok, "{from} -> {to}");
        }
        let current = package(&c, "3");
        let Err(CosmosError::VersionChangeNotAllowed {
            upgrades_to,
            downgrades_to,
            ..
        }) = check_move(&c, &current, "1")
        else {
            panic!("3 -> 1 allowed");
        };
        assert_eq!((upgrades_to, downgrades_to), (vec!["4".to_owned()], vec![]));
    }

    #[test]
    fn provided_options_merge_over_stored_ones_unless_replaced() {
        let stored = json!({"service": {"name": "a", "mem": 128}});
        let provided = json!({"service": {"mem": 256}});
        let cases = [
            (
                Some(&stored),
                Some(&provided),
                false,
                Ok(json!({"service": {"name": "a", "mem": 256}})),
            ),
            (Some(&stored), None, false, Ok(stored.clone())),
            (Some(&stored), Some(&provided), true, Ok(provided.clone())),
            (Some(&stored), None, true, Ok(json!({}))),
            (None, Some(&provided), true, Ok(provided.clone())),
            (
                None,
                Some(&provided),
                false,
                Err(CosmosError::OptionsNotStored),
            ),
        ];
        for (s, p, replace, want) in cases {
            assert_eq!(merge_options(s, p, replace), want, "{s:?} {p:?} {replace}");
        }
    }

    #[test]
    fn an_update_renders_the_target_version_with_the_merged_options() {
        let c = collection();
        let current = package(&c, "1");
        let id = PathId::parse("/db");
        let t = target(&c, &current, "x", Some("2")).unwrap();
        let opts = merge_options(
            Some(&json!({"service": {"mem": 128}})),
            Some(&json!({"service": {"mem": 256}})),
            false,
        )
        .unwrap();
        let (app, resolved) = plan(t, &opts, &id).unwrap();
        assert_eq!(app["cmd"], "run 2 256");
        assert_eq!(app["labels"][LABEL_VERSION], "2");
        assert_eq!(
            decode_json_label(app["labels"][LABEL_OPTIONS].as_str().unwrap()).unwrap(),
            json!({"service": {"mem": 256}})
        );
        assert_eq!(resolved, json!({"service": {"name": "db", "mem": 256}}));

        assert!(matches!(
            target(&c, &current, "x", Some("3")),
            Err(CosmosError::VersionChangeNotAllowed { .. })
        ));
        assert!(matches!(
            target(&c, &current, "x", Some("9")),
            Err(CosmosError::VersionNotFound { .. })
        ));
        let renamed = json!({"service": {"name": "other"}});
        assert_eq!(
            plan(target(&c, &current, "x", None).unwrap(), &renamed, &id),
            Err(CosmosError::AppIdChanged {
                new: "/other".into(),
                old: "/db".into()
            })
        );
        let bad = json!({"service": {"mem": 1}});
        assert!(matches!(
            plan(target(&c, &current, "x", None).unwrap(), &bad, &id),
            Err(CosmosError::JsonSchemaMismatch { .. })
        ));
    }

    #[test]
    fn an_install_whose_repository_is_gone_updates_from_its_own_definition() {
        let c = collection();
        let mut gone = package(&c, "1");
        gone.version = "0.9".into();
        let t = target(&c, &gone, "file:///old.json", None).unwrap();
        assert_eq!(
            (t.package.version.as_str(), t.source),
            ("0.9", "file:///old.json")
        );
    }
}
