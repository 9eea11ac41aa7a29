//! Rendering a package into a Marathon app exactly as Cosmos 0.5.4 does: defaults from the
//! options schema, the user's options deep-merged over them, validation against the schema
//! (draft 4), Mustache with the merged options and the package's `resource`, then the
//! `DCOS_PACKAGE_*` labels that let `list` and `uninstall` find the install again.

use std::io::Write;

use base64::Engine;
use flate2::Compression;
use flate2::write::GzEncoder;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::{Map, Value, json};

use crate::error::CosmosError;
use crate::mustache::Template;
use crate::universe::Package;

pub const LABEL_METADATA: &str = "DCOS_PACKAGE_METADATA";
pub const LABEL_NAME: &str = "DCOS_PACKAGE_NAME";
pub const LABEL_VERSION: &str = "DCOS_PACKAGE_VERSION";
pub const LABEL_SOURCE: &str = "DCOS_PACKAGE_SOURCE";
pub const LABEL_OPTIONS: &str = "DCOS_PACKAGE_OPTIONS";
pub const LABEL_DEFINITION: &str = "DCOS_PACKAGE_DEFINITION";
pub const LABEL_FRAMEWORK_NAME: &str = "DCOS_PACKAGE_FRAMEWORK_NAME";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The defaults a schema's `properties` declare: each property's `default`, else, for a
/// property with `properties`, its nested defaults (possibly an empty object).
pub fn defaults(schema: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            if let Some(d) = p.get("default") {
                out.insert(k.clone(), d.clone());
            } else if p.get("properties").is_some() {
                out.insert(k.clone(), Value::Object(defaults(p)));
            }
        }
    }
    out
}

/// Deep-merges `over` into `base`: objects key by key, anything else in `over` replaces.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, over) => *slot = over.clone(),
    }
}

fn drop_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), drop_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(drop_nulls).collect()),
        other => other.clone(),
    }
}

fn type_names(kind: &TypeKind) -> Vec<String> {
    match kind {
        TypeKind::Single(t) => vec![t.to_string()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates `doc` against `schema` (draft 4); the errors in the json-schema-validator shape
/// `dcos package` formats (`instance.pointer`, `found`/`expected`, `missing`, `unwanted`,
/// `minimum`).
pub fn validate(schema: &Value, doc: &Value) -> Result<(), CosmosError> {
    let validator = jsonschema::draft4::new(schema).map_err(|e| CosmosError::InvalidTemplate {
        name: "config".into(),
        message: format!("the options schema is not a valid JSON schema: {e}"),
    })?;
    let errors: Vec<Value> = validator
        .iter_errors(doc)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let mut v = json!({
                "level": "error",
                "instance": {"pointer": pointer},
                "schema": {"loadingURI": "#", "pointer": e.schema_path().to_string()},
                "domain": "validation",
                "message": e.to_string(),
            });
            match e.kind() {
                ValidationErrorKind::Type { kind } => {
                    v["keyword"] = json!("type");
                    v["found"] = json!(json_type(e.instance()));
                    v["expected"] = json!(type_names(kind));
                }
                ValidationErrorKind::Required { property } => {
                    v["keyword"] = json!("required");
                    v["missing"] = json!([property]);
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    v["keyword"] = json!("additionalProperties");
                    v["unwanted"] = json!(unexpected);
                }
                ValidationErrorKind::Minimum { limit } => {
                    v["keyword"] = json!("minimum");
                    v["minimum"] = limit.clone();
                    v["found"] = e.instance().as_ref().clone();
                }
                ValidationErrorKind::Maximum { limit } => {
                    v["keyword"] = json!("maximum");
                    v["maximum"] = limit.clone();
                    v["found"] = e.instance().as_ref().clone();
                }
                ValidationErrorKind::Enum { options } => {
                    v["keyword"] = json!("enum");
                    v["enum"] = options.as_ref().clone();
                    v["value"] = e.instance().as_ref().clone();
                }
                _ => {}
            }
            v
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CosmosError::JsonSchemaMismatch { errors })
    }
}

/// The merged options a render uses: the schema's defaults with `options` over them, checked
/// against the schema. Options for a package without a schema are refused.
pub fn resolve_options(pkg: &Package, options: Option<&Value>) -> Result<Value, CosmosError> {
    let given = options.filter(|o| o.as_object().is_some_and(|m| !m.is_empty()));
    let Some(schema) = &pkg.config else {
        return match given {
            Some(_) => Err(CosmosError::OptionsNotAllowed(pkg.name.clone())),
            None => Ok(json!({})),
        };
    };
    let mut merged = Value::Object(defaults(schema));
    if let Some(o) = given {
        merge(&mut merged, o);
    }
    validate(schema, &merged)?;
    Ok(merged)
}

/// The `DCOS_PACKAGE_DEFINITION` label: a StorageEnvelope of the gzipped package JSON.
pub fn definition_label(pkg: &Package) -> String {
    let json = serde_json::to_vec(&pkg.to_json()).unwrap_or_default();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let zipped = gz
        .write_all(&json)
        .and_then(|()| gz.finish())
        .unwrap_or_default();
    let envelope = json!({
        "metadata": {
            "Content-Type": format!(
                "application/vnd.dcos.universe.package+json;charset=utf-8;version={}",
                pkg.packaging_version.media_version()
            ),
            "Content-Encoding": "gzip",
        },
        "data": b64(&zipped),
    });
    b64(envelope.to_string().as_bytes())
}

/// Reads a `DCOS_PACKAGE_DEFINITION` label back into the package JSON.
pub fn decode_definition(label: &str) -> Option<Value> {
    use std::io::Read;
    let engine = base64::engine::general_purpose::STANDARD;
    let envelope: Value = serde_json::from_slice(&engine.decode(label).ok()?).ok()?;
    let data = engine.decode(envelope.get("data")?.as_str()?).ok()?;
    let gzip = envelope
        .pointer("/metadata/Content-Encoding")
        .and_then(Value::as_str)
        == Some("gzip");
    let bytes = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&data[..])
            .read_to_end(&mut out)
            .ok()?;
        out
    } else {
        data
    };
    serde_json::from_slice(&bytes).ok()
}

/// Reads a base64 JSON label (`DCOS_PACKAGE_METADATA`, `DCOS_PACKAGE_OPTIONS`).
pub fn decode_json_label(label: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(label)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Renders `pkg` from repository `source` with the user's `options` into the Marathon app
/// JSON Cosmos would post; `app_id` replaces the template's `id`.
pub fn render(
    pkg: &Package,
    source: &str,
    options: Option<&Value>,
    app_id: Option<&str>,
) -> Result<Value, CosmosError> {
    let Some(template) = pkg.template() else {
        return Err(CosmosError::PackageHasNoMarathonTemplate {
            name: pkg.name.clone(),
            version: pkg.version.clone(),
        });
    };
    let merged = resolve_options(pkg, options)?;
    let mut context = merged;
    merge(
        &mut context,
        &json!({"resource": pkg.resource.clone().unwrap_or_else(|| json!({}))}),
    );
    let template = Template::parse(&template).map_err(|e| CosmosError::InvalidTemplate {
        name: pkg.name.clone(),
        message: e.to_string(),
    })?;
    let text = template.render(&context);
    let mut app: Value = match serde_json::from_str(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(CosmosError::MarathonTemplateMustBeJsonObject),
    };
    let mut labels = match app.get("labels") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) if m.values().all(Value::is_string) => m.clone(),
        Some(_) => {
            return Err(CosmosError::InvalidTemplate {
                name: pkg.name.clone(),
                message: "labels must be an object of strings".into(),
            });
        }
    };
    let user = options.map(drop_nulls).unwrap_or_else(|| json!({}));
    let set = [
        (LABEL_METADATA, b64(pkg.metadata().to_string().as_bytes())),
        (LABEL_NAME, pkg.name.clone()),
        (LABEL_VERSION, pkg.version.clone()),
        (LABEL_SOURCE, source.to_owned()),
        (LABEL_OPTIONS, b64(user.to_string().as_bytes())),
        (LABEL_DEFINITION, definition_label(pkg)),
    ];
    for (k, v) in set {
        labels.insert(k.to_owned(), Value::String(v));
    }
    app["labels"] = Value::Object(labels);
    if let Some(id) = app_id {
        app["id"] = Value::String(id.to_owned());
    }
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::universe::Repository;

    fn package(template: &str, config: Value) -> Package {
        let repo = json!({"packages": [{
            "packagingVersion": "4.0", "name": "demo", "version": "1.2", "releaseVersion": 3,
            "maintainer": "m", "description": "d", "tags": ["x"],
            "postUninstallNotes": "bye",
            "marathon": {"v2AppMustacheTemplate": b64(template.as_bytes())},
            "config": config,
            "resource": {"assets": {"container": {"docker": {"img": "capstan/redis"}}}},
        }]});
        Repository::parse(repo.to_string().as_bytes())
            .unwrap()
            .packages
            .remove(0)
    }

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "service": {"type": "object", "properties": {
                "name": {"type": "string", "default": "demo"},
                "cpus": {"type": "number", "default": 0.5, "minimum": 0.1},
                "bridge": {"type": "boolean", "default": true},
                "extra": {"type": "string"},
            }, "additionalProperties": false},
            "flat": {"type": "integer", "default": 2},
            "none": {"type": "object", "properties": {"x": {"type": "string"}}},
        }})
    }

    const T: &str = r#"{"id": "/{{service.name}}", "cpus": {{service.cpus}}, "instances": {{flat}},
        "container": {"docker": {"image": "{{resource.assets.container.docker.img}}",
        "network": "{{#service.bridge}}BRIDGE{{/service.bridge}}{{^service.bridge}}HOST{{/service.bridge}}"}},
        "labels": {"MINE": "1", "DCOS_PACKAGE_NAME": "spoofed"}}"#;

    #[test]
    fn defaults_walk_nested_properties() {
        let d = Value::Object(defaults(&schema()));
        assert_eq!(
            d,
            json!({"service": {"name": "demo", "cpus": 0.5, "bridge": true}, "flat": 2, "none": {}})
        );
    }

    #[test]
    fn merge_is_deep_and_replaces_leaves() {
        let cases = [
            (
                json!({"a": {"b": 1, "c": 2}}),
                json!({"a": {"b": 3}}),
                json!({"a": {"b": 3, "c": 2}}),
            ),
            (json!({"a": [1, 2]}), json!({"a": [3]}), json!({"a": [3]})),
            (json!({"a": {"b": 1}}), json!({"a": 5}), json!({"a": 5})),
            (json!({}), json!({"n": {"x": 1}}), json!({"n": {"x": 1}})),
        ];
        for (mut base, over, want) in cases {
            merge(&mut base, &over);
            assert_eq!(base, want);
        }
    }

    #[test]
    fn render_merges_options_over_defaults_and_sets_the_labels() {
        let p = package(T, schema());
        let opts = json!({"service": {"name": "mine", "bridge": false}, "gone": null});
        let app = render(&p, "builtin:universe", Some(&opts), None).unwrap();
        assert_eq!(app["id"], "/mine");
        assert_eq!(app["cpus"], 0.5);
        assert_eq!(app["instances"], 2);
        assert_eq!(app["container"]["docker"]["image"], "capstan/redis");
        assert_eq!(app["container"]["docker"]["network"], "HOST");
        let l = &app["labels"];
        assert_eq!(l["MINE"], "1");
        assert_eq!(l[LABEL_NAME], "demo");
        assert_eq!(l[LABEL_VERSION], "1.2");
        assert_eq!(l[LABEL_SOURCE], "builtin:universe");
        assert_eq!(
            decode_json_label(l[LABEL_OPTIONS].as_str().unwrap()).unwrap(),
            json!({"service": {"name": "mine", "bridge": false}})
        );
        let meta = decode_json_label(l[LABEL_METADATA].as_str().unwrap()).unwrap();
        assert_eq!(meta, p.metadata());
        let def = decode_definition(l[LABEL_DEFINITION].as_str().unwrap()).unwrap();
        assert_eq!(
            def,
            p.to_json(),
            "the definition label decodes back to the package"
        );
    }

    #[test]
    fn no_options_render_defaults_and_an_empty_options_label() {
        let p = package(T, schema());
        let app = render(&p, "s", Some(&json!({})), Some("/other")).unwrap();
        assert_eq!(app["id"], "/other");
        assert_eq!(app["container"]["docker"]["network"], "BRIDGE");
        assert_eq!(
            decode_json_label(app["labels"][LABEL_OPTIONS].as_str().unwrap()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn options_that_miss_the_schema_are_json_schema_mismatches() {
        let p = package(T, schema());
        let cases = [
            (
                json!({"service": {"cpus": "lots"}}),
                "/service/cpus",
                "found",
                json!("string"),
            ),
            (
                json!({"service": {"cpus": 0.01}}),
                "/service/cpus",
                "minimum",
                json!(0.1),
            ),
            (
                json!({"service": {"typo": 1}}),
                "/service",
                "unwanted",
                json!(["typo"]),
            ),
        ];
        for (opts, pointer, field, want) in cases {
            let Err(CosmosError::JsonSchemaMismatch { errors }) =
                render(&p, "s", Some(&opts), None)
            else {
                panic!("accepted {opts}");
            };
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0]["instance"]["pointer"], pointer);
            assert_eq!(errors[0][field], want, "{}", errors[0]);
        }
        let required = json!({"type": "object", "required": ["must"], "properties": {"must": {"type": "string"}}});
        let p = package("{}", required);
        let Err(CosmosError::JsonSchemaMismatch { errors }) = render(&p, "s", None, None) else {
            panic!("accepted");
        };
        assert_eq!(errors[0]["missing"], json!(["must"]));
    }

    #[test]
    fn templates_that_are_not_json_objects_are_errors() {
        for t in ["[1]", "{\"id\": ", "{{#a}}"] {
            let p = package(t, json!({"type": "object"}));
            let e = render(&p, "s", None, None).unwrap_err();
            assert!(
                matches!(
                    e,
                    CosmosError::MarathonTemplateMustBeJsonObject
                        | CosmosError::InvalidTemplate { .. }
                ),
                "{t}: {e:?}"
            );
        }
    }

    #[test]
    fn options_without_a_schema_are_not_allowed() {
        let mut p = package("{\"id\": \"/x\"}", json!({}));
        p.config = None;
        assert!(render(&p, "s", None, None).is_ok());
        assert_eq!(
            render(&p, "s", Some(&json!({"a": 1})), None),
            Err(CosmosError::OptionsNotAllowed("demo".into()))
        );
    }
}
