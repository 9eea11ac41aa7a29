//! The Cosmos API end to end: the built-in catalog, describe with its v2 fallback, render,
//! install through apps, list and uninstall from the labels, errors, and the repository list
//! in coord.

use serde_json::{Value, json};

use crate::it::support::{Cluster, ERROR, media};

fn names(v: &Value) -> Vec<String> {
    v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_catalog_searches_and_describes_the_builtin_packages() {
    let c = Cluster::start().await;
    let a = c.call("search", "v1", json!({"query": ""})).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.content_type,
        "application/vnd.dcos.package.search-response+json;charset=utf-8;version=v1"
    );
    assert_eq!(
        names(&a.body),
        [
            "hello-world",
            "memcached",
            "nginx",
            "postgresql",
            "prometheus",
            "redis"
        ]
    );
    let a = c.call("search", "v1", json!({"query": "redis"})).await;
    assert_eq!(names(&a.body), ["redis"]);
    assert_eq!(a.body["packages"][0]["currentVersion"], "7.0-1");

    let a = c
        .call("describe", "v3", json!({"packageName": "redis"}))
        .await;
    assert_eq!(a.status, 200);
    let p = &a.body["package"];
    assert_eq!(p["name"], "redis");
    assert_eq!(p["packagingVersion"], "4.0");
    assert!(p["marathon"]["v2AppMustacheTemplate"].is_string());
    assert_eq!(
        p["config"]["properties"]["redis"]["properties"]["mem"]["default"],
        256
    );

    // v2 is the flattened package.
    let a = c
        .call("describe", "v2", json!({"packageName": "redis"}))
        .await;
    assert_eq!(a.body["name"], "redis");

    let a = c
        .call(
            "list-versions",
            "v1",
            json!({"packageName": "redis", "includePackageVersions": true}),
        )
        .await;
    assert_eq!(a.body, json!({"results": {"7.0-1": "0"}}));

    let a = c
        .call("describe", "v3", json!({"packageName": "nosuchpkg"}))
        .await;
    assert_eq!((a.status, a.content_type.as_str()), (400, ERROR));
    assert_eq!(a.body["type"], "PackageNotFound");
    assert_eq!(a.body["message"], "Package [nosuchpkg] not found");
    let a = c
        .call(
            "describe",
            "v3",
            json!({"packageName": "redis", "packageVersion": "0.1"}),
        )
        .await;
    assert_eq!(a.body["type"], "VersionNotFound");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_types_are_checked_like_cosmos() {
    let c = Cluster::start().await;
    // A wrong request type.
    let resp = c
        .http
        .post(format!("{}/package/search", c.url))
        .header("Content-Type", "text/plain")
        .header("Accept", media("package.search-response", "v1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.headers()["content-type"], ERROR);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "UnsupportedContentType");
    // An Accept we cannot satisfy.
    let a = c
        .call_with("search", &media("package.search-response", "v7"), json!({}))
        .await;
    assert_eq!(
        (a.status, a.body["type"].as_str()),
        (400, Some("NotAcceptable"))
    );
    // Not a JSON body.
    let resp = c
        .http
        .post(format!("{}/package/describe", c.url))
        .header("Content-Type", media("package.describe-request", "v1"))
        .header("Accept", media("package.describe-response", "v3"))
        .body("{\"packageName\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Capabilities, for direct clients.
    let resp = c
        .http
        .get(format!("{}/capabilities", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.dcos.capabilities+json;charset=utf-8;version=v1"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_list_and_uninstall_go_through_the_apps_api() {
    let c = Cluster::start().await;
    let a = c
        .call(
            "render",
            "v1",
            json!({"packageName": "redis", "packageVersion": "7.0-1"}),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["marathonJson"]["id"], "/redis");
    assert_eq!(
        a.body["marathonJson"]["labels"]["DCOS_PACKAGE_NAME"],
        "redis"
    );

    let bad = c
        .call(
            "render",
            "v1",
            json!({"packageName": "redis", "options": {"redis": {"mem": "lots"}}}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["type"], "JsonSchemaMismatch");
    assert_eq!(
        bad.body["data"]["errors"][0]["instance"]["pointer"],
        "/redis/mem"
    );

    let a = c
        .call(
            "install",
            "v2",
            json!({"packageName": "redis", "packageVersion": "7.0-1", "options": {}}),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["appId"], "/redis");
    assert_eq!(a.body["packageVersion"], "7.0-1");
    assert!(a.body["postInstallNotes"].is_string());
    let apps = c.marathon_apps().await;
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["container"]["docker"]["image"], "capstan/redis");
    assert_eq!(apps[0]["labels"]["DCOS_PACKAGE_SOURCE"], "builtin:universe");

    let again = c
        .call(
            "install",
            "v2",
            json!({"packageName": "redis", "options": {}}),
        )
        .await;
    assert_eq!(
        (again.status, again.body["type"].as_str()),
        (409, Some("PackageAlreadyInstalled"))
    );
    assert_eq!(again.body["message"], "Package is already installed");

    // A second install under another id, with options.
    let a = c
        .call(
            "install",
            "v2",
            json!({"packageName": "redis", "options": {"service": {"name": "cache"}, "redis": {"mem": 128}}}),
        )
        .await;
    assert_eq!(a.body["appId"], "/cache", "{a:?}");
    let hello = c
        .call(
            "install",
            "v2",
            json!({"packageName": "hello-world", "options": {}}),
        )
        .await;
    assert_eq!(hello.status, 200, "{hello:?}");

    let l = c.call("list", "v1", json!({})).await;
    let ids: Vec<&str> = l.body["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["appId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["/hello-world", "/cache", "/redis"],
        "sorted by (name, appId)"
    );
    let def = &l.body["packages"][1]["packageInformation"]["packageDefinition"];
    assert_eq!(
        (def["name"].as_str(), def["version"].as_str()),
        (Some("redis"), Some("7.0-1"))
    );
    let l = c
        .call(
            "list",
            "v1",
            json!({"packageName": "redis", "appId": "cache"}),
        )
        .await;
    assert_eq!(l.body["packages"].as_array().unwrap().len(), 1);

    // /cosmos/service/describe (the router strips /cosmos): the options it was installed with.
    let resp = c
        .http
        .post(format!("{}/service/describe", c.url))
        .header("Content-Type", media("service.describe-request", "v1"))
        .header("Accept", media("service.describe-response", "v1"))
        .body(json!({"appId": "/cache"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        media("service.describe-response", "v1").as_str()
    );
    let d: Value = resp.json().await.unwrap();
    assert_eq!(d["package"]["name"], "redis", "{d}");
    assert_eq!(
        d["userProvidedOptions"],
        json!({"service": {"name": "cache"}, "redis": {"mem": 128}})
    );
    assert_eq!(d["resolvedOptions"]["redis"]["cpus"], 0.5);
    assert_eq!(d["upgradesTo"], json!([]));

    let u = c
        .call("uninstall", "v1", json!({"packageName": "redis"}))
        .await;
    assert_eq!(u.body["type"], "AmbiguousAppId", "{u:?}");
    let u = c
        .call(
            "uninstall",
            "v1",
            json!({"packageName": "redis", "appId": "/cache"}),
        )
        .await;
    assert_eq!(u.status, 200, "{u:?}");
    assert_eq!(
        u.body["results"][0],
        json!({"packageName": "redis", "appId": "/cache", "packageVersion": "7.0-1",
               "postUninstallNotes": "Redis was removed; its data went with its task."})
    );
    let u = c
        .call(
            "uninstall",
            "v1",
            json!({"packageName": "redis", "all": true}),
        )
        .await;
    assert_eq!(u.body["results"].as_array().unwrap().len(), 1);
    let u = c
        .call("uninstall", "v1", json!({"packageName": "redis"}))
        .await;
    assert_eq!(u.body["type"], "PackageNotInstalled");
    let left: Vec<String> = c
        .marathon_apps()
        .await
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, ["/hello-world"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_are_kept_in_coord_and_checked_before_they_are_added() {
    let c = Cluster::start().await;
    let a = c.call("repository/list", "v1", json!({})).await;
    assert_eq!(
        a.body,
        json!({"repositories": [{"name": "Capstan", "uri": "builtin:universe"}]})
    );

    // A repository file written by hand in the public format.
    let template = r#"{"id": "/{{app.name}}", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32}"#;
    let repo = json!({"packages": [{
        "packagingVersion": "3.0", "name": "sleeper", "version": "1.0", "releaseVersion": 2,
        "maintainer": "me", "description": "sleeps", "tags": ["demo"],
        "marathon": {"v2AppMustacheTemplate": base64_encode(template)},
        "config": {"type": "object", "properties": {"app": {"type": "object",
            "properties": {"name": {"type": "string", "default": "sleeper"}}}}},
        "resource": {"images": {"icon-small": "http://127.0.0.1:1/icon.png"}},
    }]});
    let dir = capstan_testkit::temp_dir().unwrap();
    let path = dir.path().join("repo.json");
    std::fs::write(&path, repo.to_string()).unwrap();
    let uri = format!("file://{}", path.display());
    // `dcos package repo add --index=0` sends the index as a string.
    let a = c
        .call(
            "repository/add",
            "v1",
            json!({"name": "mine", "uri": uri, "index": "0"}),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["repositories"][0]["name"], "mine");
    assert_eq!(a.body["repositories"][1]["name"], "Capstan");

    // Stored in coord, where every master's catalog reads it.
    let coord = capstan_coord_client::Client::new([c.coord_url.as_str()]).unwrap();
    let kv = coord
        .get("/test/catalog/repositories")
        .await
        .unwrap()
        .expect("stored");
    let stored: Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(stored[0]["uri"], uri.as_str());

    let a = c.call("search", "v1", json!({"query": "sleep*"})).await;
    assert_eq!(names(&a.body), ["sleeper"]);
    let a = c
        .call(
            "install",
            "v2",
            json!({"packageName": "sleeper", "options": {}}),
        )
        .await;
    assert_eq!(a.body["appId"], "/sleeper", "{a:?}");
    let apps = c.marathon_apps().await;
    assert_eq!(apps[0]["labels"]["DCOS_PACKAGE_SOURCE"], uri.as_str());

    let dup = c
        .call(
            "repository/add",
            "v1",
            json!({"name": "mine", "uri": "builtin:universe"}),
        )
        .await;
    assert_eq!(dup.body["type"], "RepositoryAlreadyPresent");

    // A repository that fails the schema is refused with the path of the bad field.
    let bad = dir.path().join("bad.json");
    let mut broken = repo.clone();
    broken["packages"][0]["name"] = json!("Bad Name");
    std::fs::write(&bad, broken.to_string()).unwrap();
    let a = c
        .call(
            "repository/add",
            "v1",
            json!({"name": "bad", "uri": format!("file://{}", bad.display())}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["type"], "RepositoryInvalid");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("packages[0].name"),
        "{a:?}"
    );

    // Resource URLs point at the proxy of the host the client used.
    let a = c
        .call("describe", "v3", json!({"packageName": "sleeper"}))
        .await;
    let host = c.url.trim_start_matches("http://");
    assert_eq!(
        a.body["package"]["resource"]["images"]["icon-small"],
        format!("http://{host}/package/resource?url=http://127.0.0.1:1/icon.png")
    );
    // A URL of a configured repository is fetched (here: nothing listens, so 502) ...
    let resp = c
        .http
        .get(format!(
            "{}/package/resource?url=http://127.0.0.1:1/icon.png",
            c.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    // ... any other is refused.
    let resp = c
        .http
        .get(format!(
            "{}/package/resource?url=http://127.0.0.1:1/other.png",
            c.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);

    let a = c
        .call("repository/delete", "v1", json!({"name": "mine"}))
        .await;
    assert_eq!(a.body["repositories"].as_array().unwrap().len(), 1);
    let a = c
        .call("repository/delete", "v1", json!({"name": "mine"}))
        .await;
    assert_eq!(a.body["type"], "RepositoryNotPresent");
    c.stop().await;
}

/// POSTs `body` to `/cosmos/service/update` as the console does (the router keeps the path).
async fn service_update(c: &Cluster, body: Value) -> (u16, String, Value) {
    let resp = c
        .http
        .post(format!("{}/cosmos/service/update", c.url))
        .header("Content-Type", media("service.update-request", "v1"))
        .header("Accept", media("service.update-response", "v1"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_update_renders_the_install_again_with_merged_options() {
    let c = Cluster::start().await;
    let a = c
        .call(
            "install",
            "v2",
            json!({"packageName": "redis", "options": {"redis": {"mem": 128}}}),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let before = c.marathon_apps().await[0].clone();

    let (status, ct, body) = service_update(
        &c,
        json!({"appId": "/redis", "options": {"redis": {"maxmemory_policy": "noeviction"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, media("service.update-response", "v1"));
    assert_eq!(body["package"]["name"], "redis");
    assert!(body["marathonDeploymentId"].is_string(), "{body}");
    let resolved = &body["resolvedOptions"]["redis"];
    assert_eq!(
        (
            resolved["mem"].as_u64(),
            resolved["maxmemory_policy"].as_str()
        ),
        (Some(128), Some("noeviction")),
        "the new option merged over the installed ones: {body}"
    );
    let apps = c.marathon_apps().await;
    assert_eq!(apps.len(), 1);
    let app = &apps[0];
    let cmd = app["cmd"].as_str().unwrap();
    assert!(cmd.contains("--maxmemory-policy noeviction"), "{cmd}");
    assert!(cmd.contains("$(( 128 * 786432 ))"), "{cmd}");
    assert_ne!(
        app["version"], before["version"],
        "a new version of the app"
    );
    let stored = capstan_catalog::render::decode_json_label(
        app["labels"]["DCOS_PACKAGE_OPTIONS"].as_str().unwrap(),
    );
    assert_eq!(
        stored,
        Some(json!({"redis": {"mem": 128, "maxmemory_policy": "noeviction"}}))
    );

    // `replace`: the options given are all there is.
    let (status, _, body) = service_update(
        &c,
        json!({"appId": "/redis", "options": {}, "replace": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resolvedOptions"]["redis"]["mem"], 256);

    // Refused without touching the app: options the schema rejects, an unknown service,
    // another package's name, a version that does not exist.
    let unchanged = c.marathon_apps().await[0]["version"].clone();
    let (status, ct, body) = service_update(
        &c,
        json!({"appId": "/redis", "options": {"redis": {"mem": "lots"}}}),
    )
    .await;
    assert_eq!((status, ct.as_str()), (400, ERROR), "{body}");
    assert_eq!(body["type"], "JsonSchemaMismatch");
    assert_eq!(
        body["data"]["errors"][0]["instance"]["pointer"],
        "/redis/mem"
    );
    let (_, _, body) = service_update(&c, json!({"appId": "/nothing"})).await;
    assert_eq!(body["type"], "ServiceNotFound", "{body}");
    let (_, _, body) = service_update(&c, json!({"appId": "/redis", "packageName": "nginx"})).await;
    assert_eq!(body["type"], "MalformedRequest", "{body}");
    let (status, _, body) =
        service_update(&c, json!({"appId": "/redis", "packageVersion": "9.9"})).await;
    assert!(status >= 400, "{body}");
    assert_eq!(c.marathon_apps().await[0]["version"], unchanged);
    c.stop().await;
}

fn base64_encode(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
