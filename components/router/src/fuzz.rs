//! Property-based fuzzing of the router's pure request handling beyond `routes`' own
//! properties: any method and target through the matcher, `/service/` resolution over
//! hostile Marathon and Mesos state, and `Location` rewriting. No panic, deterministic
//! answers, nothing outside the prefix. The case count is small for CI;
//! `CAPSTAN_FUZZ_CASES=100000` raises it for a long local run.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::plan::rewrite_location;
use crate::routes::route;
use crate::service::{Resolved, Snapshot, resolve};

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("CAPSTAN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

fn method() -> impl Strategy<Value = http::Method> {
    prop_oneof![
        Just(http::Method::GET),
        Just(http::Method::POST),
        Just(http::Method::PUT),
        Just(http::Method::DELETE),
        Just(http::Method::HEAD),
        Just(http::Method::OPTIONS),
        Just(http::Method::PATCH),
        Just(http::Method::CONNECT),
        Just(http::Method::TRACE),
        "[A-Z]{1,10}".prop_map(|m| http::Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

/// Hostile values where the state has strings: names with dots, slashes, `..`, URLs.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("web".to_owned()),
        Just("a/b".to_owned()),
        Just("..".to_owned()),
        Just("http://10.0.0.1:80/ui/".to_owned()),
        Just("https://evil.example:443".to_owned()),
        Just("//x".to_owned()),
        Just("".to_owned()),
        "[a-z0-9./:%@-]{0,16}",
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        (0u32..70_000).prop_map(Value::from),
        text().prop_map(Value::String),
    ]
}

fn state() -> impl Strategy<Value = (Value, Value)> {
    let task = (
        text(),
        proptest::collection::vec(json_leaf(), 0..3),
        json_leaf(),
    )
        .prop_map(|(host, ports, state)| json!({"host": host, "ports": ports, "state": state}));
    let app = (
        text(),
        text(),
        json_leaf(),
        json_leaf(),
        proptest::collection::vec(task, 0..3),
    )
        .prop_map(|(id, name, scheme, index, tasks)| {
            json!({
                "id": id,
                "labels": {"DCOS_SERVICE_NAME": name, "DCOS_SERVICE_SCHEME": scheme,
                           "DCOS_SERVICE_PORT_INDEX": index},
                "tasks": tasks,
            })
        });
    let framework = (text(), text(), json_leaf(), text()).prop_map(|(id, name, url, pid)| {
        json!({"id": id, "name": name, "webui_url": url, "pid": pid, "hostname": "h"})
    });
    let agent = (text(), text(), json_leaf())
        .prop_map(|(id, host, port)| json!({"id": id, "hostname": host, "port": port}));
    (
        proptest::collection::vec(app, 0..4),
        proptest::collection::vec(framework, 0..4),
        proptest::collection::vec(agent, 0..3),
        any::<bool>(),
    )
        .prop_map(|(apps, frameworks, agents, wrap)| {
            let apps = if wrap {
                json!({"apps": apps})
            } else {
                Value::Array(apps)
            };
            (apps, json!({"frameworks": frameworks, "slaves": agents}))
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_method_and_target_route_the_same_way_twice(m in method(), target in "\\PC{0,80}") {
        let a = format!("{:?}", route(&m, &target));
        let b = format!("{:?}", route(&m, &target));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn service_resolution_survives_hostile_state(
        (apps, summary) in state(),
        rest in proptest::collection::vec(text(), 0..6),
        query in proptest::option::of("[ -~]{0,12}"),
    ) {
        let snapshot = Snapshot::from_json(&apps, &summary);
        let rest = rest.join("/");
        let resolved = resolve(&rest, query.as_deref(), &snapshot);
        if let Resolved::Proxy(p) = &resolved {
            // Whatever is proxied to stays under the /service/ prefix it was asked for.
            let shown = format!("{p:?}");
            prop_assert!(shown.contains("/service/"), "{shown}");
        }
        // Resolution goes through the matcher first in the server; the same target again
        // resolves the same way.
        prop_assert_eq!(
            format!("{resolved:?}"),
            format!("{:?}", resolve(&rest, query.as_deref(), &snapshot))
        );
        let _ = route(&http::Method::GET, &format!("/service/{rest}"));
    }

    #[test]
    fn rewritten_locations_stay_under_the_prefix(
        location in prop_oneof![
            "/[ -~]{0,20}",
            "https?://[a-z0-9.:]{0,12}(/[ -~]{0,10})?",
            "[ -~]{0,20}",
        ],
        prefix in "/service/[a-z/]{0,10}",
        upstream in "[a-z0-9.:]{0,12}",
    ) {
        if let Some(out) = rewrite_location(&location, &prefix, &upstream) {
            prop_assert!(out.starts_with(prefix.trim_end_matches('/')), "{out}");
        }
    }
}

#[test]
fn a_service_path_with_dot_segments_is_not_found() {
    let snapshot = Snapshot::default();
    for rest in ["..", "a/../b", "./x"] {
        assert!(
            matches!(resolve(rest, None, &snapshot), Resolved::NotFound),
            "{rest}"
        );
    }
}
