//! Regression tests of the reliability probe's input findings (F2 sizes, F7, F12): every bad
//! value is a 422 naming the field, wrong methods are 405, and a rejected request stores
//! nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::fake_master::FakeMaster;
use crate::support::Apps;

/// The `details[].path`s of a Marathon 422 body.
fn paths(v: &Value) -> Vec<String> {
    v["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["path"].as_str().map(str::to_string))
        .collect()
}

async fn app_ids(apps: &Apps) -> Vec<String> {
    apps.get("/v2/apps").await["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// POSTs `extra` merged into a small valid app and expects a 422 naming `path`.
async fn rejects(apps: &Apps, extra: Value, path: &str) {
    let mut app = json!({"id": "/probe", "cmd": "sleep 1", "cpus": 0.1, "mem": 16, "instances": 0});
    for (k, v) in extra.as_object().unwrap() {
        app[k] = v.clone();
    }
    let (s, v) = apps.post("/v2/apps", app).await;
    assert_eq!(s, 422, "{extra}: {v}");
    assert_eq!(v["message"], "Object is not valid", "{extra}");
    assert!(
        paths(&v).contains(&path.to_string()),
        "{extra}: {path} not in {v}"
    );
    assert!(v["details"][0]["errors"][0].is_string(), "{v}");
}

async fn send_raw(apps: &Apps, method: Method, path: &str, body: &str) -> (u16, Value) {
    let resp = apps
        .http
        .request(method, format!("{}{path}", apps.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn instances_above_the_maximum_are_rejected_instead_of_truncated() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    for n in [
        json!(4_294_967_297_i64),
        json!(1_000_000_000_000_i64),
        json!(i64::MAX),
        json!(1_000_001),
    ] {
        rejects(&apps, json!({ "instances": n }), "/instances").await;
    }
    // A scale through PUT and a group scaleBy are bounded as well; the app keeps its count.
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": "/g/a", "cmd": "sleep 1", "instances": 0}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = apps
        .put("/v2/apps/g/a", json!({"instances": 4_294_967_297_i64}))
        .await;
    assert_eq!((s, paths(&v)), (422, vec!["/instances".to_string()]), "{v}");
    let (s, v) = apps.put("/v2/apps/g/a", json!({"instances": 3})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = apps.put("/v2/groups/g", json!({"scaleBy": 1e12})).await;
    assert_eq!((s, paths(&v)), (422, vec!["/scaleBy".to_string()]), "{v}");
    assert_eq!(apps.get("/v2/apps/g/a").await["app"]["instances"], 3);
    assert_eq!(app_ids(&apps).await, ["/g/a"]);
}

#[tokio::test]
async fn ports_above_65535_are_rejected_naming_the_exact_field() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    rejects(
        &apps,
        json!({"portDefinitions": [{"port": 80}, {"port": 70000}]}),
        "/portDefinitions(1)/port",
    )
    .await;
    rejects(&apps, json!({"ports": [70000]}), "/portDefinitions(0)/port").await;
    let docker = |mappings: Value| {
        json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/http",
            "network": "BRIDGE", "portMappings": mappings}}})
    };
    for (mapping, path) in [
        (
            json!({"containerPort": 80, "hostPort": 70000}),
            "/container/portMappings(0)/hostPort",
        ),
        (
            json!({"containerPort": 70000}),
            "/container/portMappings(0)/containerPort",
        ),
        (
            json!({"containerPort": 80, "servicePort": 70000}),
            "/container/portMappings(0)/servicePort",
        ),
    ] {
        rejects(&apps, docker(json!([mapping])), path).await;
    }
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": "/ok", "cmd": "x", "instances": 0, "portDefinitions": [{"port": 65535}]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(app_ids(&apps).await, ["/ok"]);
}

#[tokio::test]
async fn unknown_docker_networks_and_network_modes_are_rejected() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    for net in ["WORMHOLE", "NONE", "bridge", ""] {
        rejects(
            &apps,
            json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox", "network": net}}}),
            "/container/docker/network",
        )
        .await;
    }
    rejects(
        &apps,
        json!({"networks": [{"mode": "wormhole"}]}),
        "/networks(0)/mode",
    )
    .await;
    assert!(app_ids(&apps).await.is_empty());
    for (i, (net, mode)) in [
        ("HOST", "host"),
        ("BRIDGE", "container/bridge"),
        ("USER", "container"),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, v) = apps
            .post(
                "/v2/apps",
                json!({"id": format!("/n{i}"), "instances": 0, "container": {"type": "DOCKER",
                    "docker": {"image": "capstan/busybox", "network": net}}}),
            )
            .await;
        assert_eq!(s, 201, "{net}: {v}");
        assert_eq!(v["networks"][0]["mode"], mode, "{net}: {v}");
    }
}

#[tokio::test]
async fn docker_images_that_are_not_references_are_rejected() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    for image in [
        "../../x; rm -rf /",
        "Capstan/Redis",
        "redis:",
        "a b",
        "redis@sha256:1",
    ] {
        rejects(
            &apps,
            json!({"container": {"type": "DOCKER", "docker": {"image": image}}}),
            "/container/docker/image",
        )
        .await;
    }
    assert!(app_ids(&apps).await.is_empty());
    for (i, image) in [
        "capstan/redis",
        "capstan/busybox:latest",
        "localhost:5000/team/app:v1.2",
    ]
    .into_iter()
    .enumerate()
    {
        let (s, v) = apps
            .post(
                "/v2/apps",
                json!({"id": format!("/i{i}"), "instances": 0,
                    "container": {"type": "DOCKER", "docker": {"image": image}}}),
            )
            .await;
        assert_eq!(s, 201, "{image}: {v}");
    }
}

#[tokio::test]
async fn dependency_cycles_and_self_dependencies_are_rejected_before_anything_changes() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    rejects(
        &apps,
        json!({"id": "/probe", "dependencies": ["/probe"]}),
        "/dependencies(0)",
    )
    .await;
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": "/a", "cmd": "x", "instances": 0, "dependencies": ["/b"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": "/b", "cmd": "x", "instances": 0, "dependencies": ["/a"]}),
        )
        .await;
    assert_eq!(
        (s, paths(&v)),
        (422, vec!["/dependencies".to_string()]),
        "{v}"
    );
    assert!(
        v["details"][0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("/a -> /b -> /a")
            || v["details"][0]["errors"][0]
                .as_str()
                .unwrap()
                .contains("/b -> /a -> /b"),
        "{v}"
    );
    // The same cycle through a bulk update and through group dependencies.
    let (s, v) = apps
        .req(
            Method::PUT,
            "/v2/apps",
            Some(json!([{"id": "/b", "cmd": "x", "instances": 0, "dependencies": ["/a"]}])),
        )
        .await
        .into_status_body();
    assert_eq!(
        (s, paths(&v)),
        (422, vec!["/dependencies".to_string()]),
        "{v}"
    );
    let (s, v) = apps
        .post(
            "/v2/groups",
            json!({"id": "/shop", "groups": [
                {"id": "db", "dependencies": ["/shop/fe"], "apps": [{"id": "pg", "cmd": "x", "instances": 0}]},
                {"id": "fe", "dependencies": ["/shop/db"], "apps": [{"id": "web", "cmd": "x", "instances": 0}]}
            ]}),
        )
        .await;
    assert_eq!(
        (s, paths(&v)),
        (422, vec!["/dependencies".to_string()]),
        "{v}"
    );
    let (s, _, _) = apps.req(Method::GET, "/v2/groups/shop", None).await;
    assert_eq!(s, 404, "the group was not created");
    let (s, _, _) = apps.req(Method::GET, "/v2/groups/shop/db", None).await;
    assert_eq!(s, 404, "no subgroup was created");
    assert_eq!(app_ids(&apps).await, ["/a"]);
    let deployments = apps.get("/v2/deployments").await;
    assert!(
        deployments
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["affectedApps"] == json!(["/a"])),
        "{deployments}"
    );
}

#[tokio::test]
async fn resources_backoffs_and_check_timings_above_their_bounds_are_rejected() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    let table = [
        (json!({"cpus": 1e308}), "/cpus"),
        (json!({"mem": 1e308}), "/mem"),
        (json!({"disk": 1e308}), "/disk"),
        (json!({"gpus": 4_000_000_000_u32}), "/gpus"),
        (json!({"backoffSeconds": u64::MAX}), "/backoffSeconds"),
        (
            json!({"maxLaunchDelaySeconds": u64::MAX}),
            "/maxLaunchDelaySeconds",
        ),
        (json!({"backoffFactor": 1e308}), "/backoffFactor"),
        (
            json!({"taskKillGracePeriodSeconds": u64::MAX}),
            "/taskKillGracePeriodSeconds",
        ),
        (
            json!({"healthChecks": [{"protocol": "TCP", "intervalSeconds": u64::MAX}]}),
            "/healthChecks(0)/intervalSeconds",
        ),
        (
            json!({"healthChecks": [{"protocol": "TCP", "timeoutSeconds": u64::MAX}]}),
            "/healthChecks(0)/timeoutSeconds",
        ),
        (
            json!({"healthChecks": [{"protocol": "TCP", "gracePeriodSeconds": u64::MAX}]}),
            "/healthChecks(0)/gracePeriodSeconds",
        ),
        (
            json!({"healthChecks": [{"protocol": "MESOS_TCP", "delaySeconds": u64::MAX}]}),
            "/healthChecks(0)/delaySeconds",
        ),
        (
            json!({"healthChecks": [{"protocol": "TCP", "maxConsecutiveFailures": u32::MAX}]}),
            "/healthChecks(0)/maxConsecutiveFailures",
        ),
        (
            json!({"portDefinitions": [{"port": 0, "name": "http-api"}],
                "readinessChecks": [{"intervalSeconds": u64::MAX}]}),
            "/readinessChecks(0)/intervalSeconds",
        ),
        (
            json!({"unreachableStrategy": {"inactiveAfterSeconds": u64::MAX, "expungeAfterSeconds": u64::MAX}}),
            "/unreachableStrategy/expungeAfterSeconds",
        ),
    ];
    for (extra, path) in table {
        rejects(&apps, extra, path).await;
    }
    assert!(app_ids(&apps).await.is_empty());
}

#[tokio::test]
async fn oversized_ids_and_definitions_are_rejected_before_they_are_acknowledged() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    let long_id = format!("/{}", "a".repeat(10_000));
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": long_id, "cmd": "x", "instances": 0}),
        )
        .await;
    assert_eq!((s, paths(&v)), (422, vec!["/id".to_string()]), "{v}");
    assert!(
        v["details"][0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("1024"),
        "{v}"
    );
    let big = "a".repeat(600 * 1024);
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": "/big", "cmd": big, "instances": 0}),
        )
        .await;
    assert_eq!((s, paths(&v)), (422, vec!["/".to_string()]), "{v}");
    assert!(
        v["details"][0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("524288"),
        "the limit is named: {v}"
    );
    // Growing an existing app past the limit is refused too, and the app is unchanged.
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": "/big", "cmd": "small", "instances": 0}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = apps.put("/v2/apps/big", json!({"cmd": big})).await;
    assert_eq!((s, paths(&v)), (422, vec!["/".to_string()]), "{v}");
    assert_eq!(apps.get("/v2/apps/big").await["app"]["cmd"], "small");
    assert_eq!(app_ids(&apps).await, ["/big"]);
}

#[tokio::test]
async fn group_bodies_that_are_not_objects_or_have_unknown_fields_create_nothing() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    for body in ["", "  ", "null", "\"s\"", "123", "[]", "true"] {
        for (method, path) in [
            (Method::PUT, "/v2/groups/probe-g"),
            (Method::POST, "/v2/groups"),
        ] {
            let (s, v) = send_raw(&apps, method.clone(), path, body).await;
            assert_eq!(s, 422, "{method} {path} {body:?}: {v}");
            assert_eq!(paths(&v), ["/"], "{body:?}: {v}");
        }
    }
    let (s, v) = send_raw(&apps, Method::PUT, "/v2/groups/probe-g", "{nope").await;
    assert_eq!(s, 400, "{v}");
    let (s, _, _) = apps.req(Method::GET, "/v2/groups/probe-g", None).await;
    assert_eq!(s, 404, "the group was never created");
    let (s, v) = apps
        .post(
            "/v2/groups",
            json!({"id": "/g2", "bogus": 1, "groups": [{"id": "x", "nope": true}]}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(paths(&v), ["/bogus", "/groups(0)/nope"], "{v}");
    let (s, v) = apps
        .post("/v2/groups", json!({"id": "/g2", "apps": {}}))
        .await;
    assert_eq!((s, paths(&v)), (422, vec!["/apps".to_string()]), "{v}");
    let (s, v) = apps.post("/v2/groups", json!({"id": "/Bad_Group"})).await;
    assert_eq!((s, paths(&v)), (422, vec!["/id".to_string()]), "{v}");
    let (s, _, _) = apps.req(Method::GET, "/v2/groups/g2", None).await;
    assert_eq!(s, 404);
    // An empty bulk update is not a deployment.
    for method in [Method::PUT, Method::PATCH] {
        let (s, v) = apps
            .req(method.clone(), "/v2/apps", Some(json!([])))
            .await
            .into_status_body();
        assert_eq!(
            (s, paths(&v)),
            (422, vec!["/".to_string()]),
            "{method}: {v}"
        );
    }
    assert!(
        apps.get("/v2/deployments")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Known fields are accepted, as marathon-python sends them.
    let (s, v) = apps
        .post(
            "/v2/groups",
            json!({"id": "/g3", "apps": [], "groups": [], "dependencies": [], "pods": [], "version": null}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn an_unknown_method_on_a_known_path_is_405_with_allow_and_unknown_paths_stay_404() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": "/x", "cmd": "sleep 1", "instances": 0}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    for (method, path, allow) in [
        (Method::DELETE, "/v2/info", "GET"),
        (Method::POST, "/v2/leader", "GET, DELETE"),
        (Method::DELETE, "/v2/apps", "GET, POST, PUT, PATCH"),
        (Method::POST, "/v2/apps/x", "GET, PUT, PATCH, DELETE"),
        (Method::GET, "/v2/apps/x/restart", "POST"),
        (Method::PUT, "/v2/apps/x/tasks", "GET, DELETE"),
        (Method::DELETE, "/v2/apps/x/versions", "GET"),
        (Method::GET, "/v2/tasks/delete", "POST"),
        (Method::GET, "/v2/deployments/abc", "DELETE"),
        (Method::PUT, "/v2/groups/x/versions", "GET"),
        (Method::POST, "/v2/queue", "GET"),
        (Method::GET, "/v1/apps/start", "POST"),
        (
            Method::from_bytes(b"FOO").unwrap(),
            "/v2/apps",
            "GET, POST, PUT, PATCH",
        ),
    ] {
        let (s, headers, v) = apps.req(method.clone(), path, None).await;
        assert_eq!(s, 405, "{method} {path}: {v}");
        assert_eq!(
            headers.get("allow").and_then(|h| h.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        assert!(v["message"].as_str().unwrap().contains(path), "{v}");
    }
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::POST, "/v2/nope"),
        (Method::GET, "/v3/apps"),
    ] {
        let (s, headers, _) = apps.req(method.clone(), path, None).await;
        assert_eq!(s, 404, "{method} {path}");
        assert!(headers.get("allow").is_none());
    }
    assert_eq!(app_ids(&apps).await, ["/x"]);
}

trait StatusBody {
    fn into_status_body(self) -> (u16, Value);
}

impl StatusBody for (u16, reqwest::header::HeaderMap, Value) {
    fn into_status_body(self) -> (u16, Value) {
        (self.0, self.2)
    }
}

/// F3: with the default (least-privilege) container policy, a definition that would give its
/// containers the host is a 422 naming the field — on create, on update and inside a group —
/// and nothing is stored.
#[tokio::test]
async fn containers_that_would_own_the_host_are_refused_by_the_default_policy() {
    let master = FakeMaster::start(1).await;
    let apps = Apps::start(&master).await;
    let docker = |docker: Value, volumes: Value| json!({"container": {"type": "DOCKER", "docker": docker, "volumes": volumes}});
    let image = json!({"image": "capstan/busybox"});
    rejects(
        &apps,
        docker(
            json!({"image": "capstan/busybox", "privileged": true}),
            json!([]),
        ),
        "/container/docker/privileged",
    )
    .await;
    rejects(
        &apps,
        docker(
            image.clone(),
            json!([{"containerPath": "/host", "hostPath": "/", "mode": "RW"}]),
        ),
        "/container/volumes(0)/hostPath",
    )
    .await;
    rejects(
        &apps,
        docker(
            image.clone(),
            json!([{"containerPath": "/s", "hostPath": "/var/run/docker.sock", "mode": "RW"}]),
        ),
        "/container/volumes(0)/hostPath",
    )
    .await;
    rejects(
        &apps,
        docker(
            json!({"image": "capstan/busybox", "parameters": [{"key": "cap-add", "value": "ALL"}]}),
            json!([]),
        ),
        "/container/docker/parameters(0)",
    )
    .await;
    rejects(
        &apps,
        json!({"fetch": [{"uri": "file:///etc/shadow"}]}),
        "/fetch(0)/uri",
    )
    .await;

    // A sandbox-relative volume is fine; making that app privileged by update is not.
    let (s, v) = apps
        .post(
            "/v2/apps",
            json!({"id": "/web", "cmd": "sleep 1", "instances": 0,
                   "container": {"type": "DOCKER", "docker": image,
                                 "volumes": [{"containerPath": "/data", "hostPath": "data", "mode": "RW"}]}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = apps
        .put(
            "/v2/apps/web",
            json!({"container": {"type": "DOCKER", "docker": {"image": "capstan/busybox", "privileged": true}}}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        paths(&v).contains(&"/container/docker/privileged".to_owned()),
        "{v}"
    );
    let (s, v) = apps
        .post(
            "/v2/groups",
            json!({"id": "/g", "apps": [{"id": "root", "cmd": "sleep 1", "instances": 0,
                "container": {"type": "DOCKER", "docker": {"image": "capstan/busybox"},
                              "volumes": [{"containerPath": "/h", "hostPath": "/etc", "mode": "RO"}]}}]}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        paths(&v).contains(&"/g/root/container/volumes(0)/hostPath".to_owned()),
        "{v}"
    );
    assert_eq!(app_ids(&apps).await, ["/web"]);
    let web = apps.get("/v2/apps/web").await;
    assert_eq!(
        web["app"]["container"]["docker"]["privileged"], false,
        "{web}"
    );
}
