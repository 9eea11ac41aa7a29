//! The Docker API of a swarm started on port 0 with no coord and no reachable master: what
//! every client sees before any container runs — ping and version headers, versioned paths,
//! Docker's error shapes (unknown endpoints, bad versions, name conflicts, missing
//! containers), create/list/inspect of recorded containers, and `wait` answering its headers
//! at once, before the container has exited.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn start() -> anyhow::Result<(capstan_swarm::ServerHandle, String)> {
    // A master port nobody listens on: the framework keeps retrying, the API still answers.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = capstan_swarm::Config {
        masters: vec![unused.to_string()],
        ..capstan_swarm::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server =
        capstan_swarm::Server::start_on(config, listener, CancellationToken::new()).await?;
    let base = format!("http://{}", server.local_addr());
    Ok((server, base))
}

fn json_error(v: &Value) -> String {
    v["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn ping_version_and_errors_look_like_dockers() -> anyhow::Result<()> {
    let (server, base) = start().await?;
    let http = capstan_http_client::client();
    let head = http.head(format!("{base}/_ping")).send().await?;
    ensure!(head.status() == 200);
    let h = head.headers();
    ensure!(
        h["api-version"] == "1.51" && h["ostype"] == "linux",
        "{h:?}"
    );
    ensure!(
        h["cache-control"] == "no-cache, no-store, must-revalidate",
        "{h:?}"
    );
    let ping = http.get(format!("{base}/v1.44/_ping")).send().await?;
    ensure!(ping.text().await? == "OK");
    let v: Value = http
        .get(format!("{base}/version"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        v["ApiVersion"] == "1.51" && v["MinAPIVersion"] == "1.24",
        "{v}"
    );

    for (method, path, status, needle) in [
        (
            "POST",
            "/v1.51/containers/x/update",
            501,
            "POST /containers/x/update is not supported by capstan",
        ),
        ("GET", "/nothing", 501, "not supported by capstan"),
        ("GET", "/v1.12/info", 400, "too old"),
        ("GET", "/v1.60/info", 400, "too new"),
        (
            "GET",
            "/v1.51/containers/nope/json",
            404,
            "No such container: nope",
        ),
        ("GET", "/v1.51/networks/n", 404, "network n not found"),
        ("GET", "/v1.51/images/unknown/json", 404, "No such image"),
    ] {
        let r = http
            .request(method.parse()?, format!("{base}{path}"))
            .send()
            .await?;
        ensure!(r.status() == status, "{method} {path}: {}", r.status());
        ensure!(r.headers()["content-type"] == "application/json", "{path}");
        let body: Value = r.json().await?;
        ensure!(json_error(&body).contains(needle), "{path}: {body}");
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn created_containers_are_listed_inspected_and_named_uniquely() -> anyhow::Result<()> {
    let (server, base) = start().await?;
    let http = capstan_http_client::client();
    let body = json!({"Image": "capstan/http", "Labels": {"app": "a"}, "Env": ["A=1"],
        "HostConfig": {"Memory": 67108864, "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": ""}]}}});
    let r = http
        .post(format!("{base}/v1.51/containers/create?name=web"))
        .json(&body)
        .send()
        .await?;
    ensure!(r.status() == 201);
    let created: Value = r.json().await?;
    let id = created["Id"].as_str().context("Id")?.to_owned();
    ensure!(
        id.len() == 64 && created["Warnings"] == json!([]),
        "{created}"
    );

    let again = http
        .post(format!("{base}/containers/create?name=web"))
        .json(&body)
        .send()
        .await?;
    ensure!(again.status() == 409, "{}", again.status());
    let bad = http
        .post(format!("{base}/containers/create?name=x/y"))
        .json(&body)
        .send()
        .await?;
    ensure!(bad.status() == 400);
    let refused = http
        .post(format!("{base}/containers/create"))
        .json(&json!({"Image": "x", "HostConfig": {"NetworkMode": "mynet"}}))
        .send()
        .await?;
    // A user network must exist (Docker's 404 and message).
    ensure!(refused.status() == 404);
    ensure!(json_error(&refused.json().await?).contains("network mynet not found"));

    // Created, not running: listed only with all=1 (and docker-py's limit=-1).
    let running: Value = http
        .get(format!("{base}/containers/json"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(running == json!([]), "{running}");
    let all: Value = http
        .get(format!(
            "{base}/containers/json?all=1&limit=-1&filters=%7B%22label%22%3A%5B%22app%3Da%22%5D%7D"
        ))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        all[0]["Id"] == id.as_str() && all[0]["Names"][0] == "/web",
        "{all}"
    );
    ensure!(
        all[0]["State"] == "created" && all[0]["Status"] == "Created",
        "{all}"
    );
    let by_prefix: Value = http
        .get(format!("{base}/containers/{}/json", &id[..12]))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        by_prefix["Name"] == "/web" && by_prefix["Config"]["Tty"] == false,
        "{by_prefix}"
    );
    ensure!(by_prefix["HostConfig"]["Memory"] == 67108864, "{by_prefix}");
    let image: Value = http
        .get(format!("{base}/images/capstan/http/json"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        image["Id"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{image}"
    );

    // wait: the headers at once (docker run needs them before it sends start), the body later.
    let wait = tokio::time::timeout(
        Duration::from_secs(10),
        http.post(format!(
            "{base}/v1.51/containers/web/wait?condition=next-exit"
        ))
        .send(),
    )
    .await
    .context("wait did not send its headers")??;
    ensure!(wait.status() == 200);
    let bad_condition = http
        .post(format!("{base}/containers/web/wait?condition=soon"))
        .send()
        .await?;
    ensure!(bad_condition.status() == 400);

    // rm: the waiting client gets its answer; the name is free again.
    let rm = http.delete(format!("{base}/containers/web")).send().await?;
    ensure!(rm.status() == 204, "{}", rm.status());
    let done: Value = tokio::time::timeout(Duration::from_secs(10), wait.json())
        .await
        .context("wait did not end at removal")??;
    ensure!(done["StatusCode"] == 0, "{done}");
    let r = http
        .post(format!("{base}/containers/create?name=web"))
        .json(&body)
        .send()
        .await?;
    ensure!(r.status() == 201);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn networks_attach_containers_with_aliases_and_events_replay() -> anyhow::Result<()> {
    let (server, base) = start().await?;
    let http = capstan_http_client::client();
    // compose's create body for its project network.
    let created = http
        .post(format!("{base}/v1.38/networks/create"))
        .json(&json!({"Name": "p_default", "Options": {}, "IPAM": null, "Internal": false,
            "Labels": {"com.docker.compose.project": "p"}, "Attachable": true, "CheckDuplicate": true}))
        .send()
        .await?;
    ensure!(created.status() == 201, "{}", created.status());
    let net: Value = created.json().await?;
    let net_id = net["Id"].as_str().context("network Id")?.to_owned();
    let dup = http
        .post(format!("{base}/networks/create"))
        .json(&json!({"Name": "p_default"}))
        .send()
        .await?;
    ensure!(dup.status() == 409, "{}", dup.status());
    let list: Value = http
        .get(format!(
            "{base}/networks?filters=%7B%22label%22%3A%5B%22com.docker.compose.project%3Dp%22%5D%7D"
        ))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        list.as_array().map(Vec::len) == Some(1) && list[0]["Name"] == "p_default",
        "{list}"
    );

    // A container on it, as compose creates one.
    let c: Value = http
        .post(format!("{base}/v1.38/containers/create?name=p_web_1"))
        .json(&json!({"Image": "capstan/http", "Labels": {"com.docker.compose.project": "p"},
            "HostConfig": {"NetworkMode": "p_default", "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}},
            "NetworkingConfig": {"EndpointsConfig": {"p_default": {"Aliases": ["web"]}}}}))
        .send()
        .await?
        .json()
        .await?;
    let id = c["Id"].as_str().context("container Id")?.to_owned();
    let i: Value = http
        .get(format!("{base}/containers/p_web_1/json"))
        .send()
        .await?
        .json()
        .await?;
    let ep = &i["NetworkSettings"]["Networks"]["p_default"];
    ensure!(ep["NetworkID"] == net_id.as_str(), "{i:#}");
    ensure!(ep["Aliases"] == json!(["web", &id[..12]]), "{i:#}");
    ensure!(i["HostConfig"]["NetworkMode"] == "p_default", "{i:#}");
    ensure!(
        i["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped",
        "{i:#}"
    );
    let filtered: Value = http
        .get(format!(
            "{base}/containers/json?all=1&filters=%7B%22network%22%3A%5B%22p_default%22%5D%7D"
        ))
        .send()
        .await?
        .json()
        .await?;
    ensure!(filtered[0]["Id"] == id.as_str(), "{filtered}");

    // disconnect, connect with compose's aliases.
    let r = http
        .post(format!("{base}/networks/p_default/disconnect"))
        .json(&json!({"Container": id}))
        .send()
        .await?;
    ensure!(r.status() == 200, "{}", r.status());
    let r = http
        .post(format!("{base}/networks/{net_id}/connect"))
        .json(&json!({"Container": "p_web_1", "EndpointConfig": {"Aliases": ["web", "extra"]}}))
        .send()
        .await?;
    ensure!(r.status() == 200, "{}", r.status());
    let i: Value = http
        .get(format!("{base}/containers/{id}/json"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        i["NetworkSettings"]["Networks"]["p_default"]["Aliases"]
            == json!(["web", "extra", &id[..12]]),
        "{i:#}"
    );

    // rename, then images "pulled" inspect as present.
    let r = http
        .post(format!(
            "{base}/containers/p_web_1/rename?name=p_web_renamed"
        ))
        .send()
        .await?;
    ensure!(r.status() == 204, "{}", r.status());
    let r = http
        .post(format!(
            "{base}/images/create?fromImage=capstan/redis&tag=latest"
        ))
        .send()
        .await?;
    ensure!(r.status() == 200);
    let img: Value = http
        .get(format!("{base}/images/capstan/redis/json"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        img["Id"].as_str().is_some_and(|i| i.starts_with("sha256:")),
        "{img}"
    );
    ensure!(img["ContainerConfig"].is_object(), "{img}");

    // Events so far, replayed and ended by until=: with the legacy fields.
    let until = capstan_swarm::time::now_secs() + 1;
    let events = http
        .get(format!("{base}/v1.41/events?since=0&until={until}"))
        .send()
        .await?
        .text()
        .await?;
    let actions: Vec<(String, String)> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            (
                e["Type"].as_str().unwrap_or_default().to_owned(),
                e["Action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("network", "create"),
        ("container", "create"),
        ("network", "disconnect"),
        ("network", "connect"),
        ("container", "rename"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    ensure!(actions == want, "{events}");
    let first_container = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["Type"] == "container")
        .context("a container event")?;
    ensure!(
        first_container["status"] == "create" && first_container["id"] == id.as_str(),
        "{first_container}"
    );

    // The network cannot go while ... it can: the container is not running. Predefined ones never.
    let r = http
        .delete(format!("{base}/networks/bridge"))
        .send()
        .await?;
    ensure!(r.status() == 403, "{}", r.status());
    let r = http
        .delete(format!("{base}/networks/p_default"))
        .send()
        .await?;
    ensure!(r.status() == 204, "{}", r.status());
    let r = http
        .get(format!("{base}/networks/p_default"))
        .send()
        .await?;
    ensure!(r.status() == 404, "{}", r.status());
    // exec needs a running container (its task's agent runs it): a 409 that says so.
    let r = http
        .post(format!("{base}/containers/{id}/exec"))
        .json(&json!({"Cmd": ["ls"]}))
        .send()
        .await?;
    ensure!(r.status() == 409, "{}", r.status());
    ensure!(json_error(&r.json().await?).contains("is not running"));
    let r = http
        .get(format!("{base}/exec/{}/json", "e".repeat(64)))
        .send()
        .await?;
    ensure!(r.status() == 404, "{}", r.status());
    ensure!(json_error(&r.json().await?).contains("No such exec instance"));
    server.shutdown().await;
    Ok(())
}
