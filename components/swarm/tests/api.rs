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
    let http = reqwest::Client::new();
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
            "/v1.51/containers/x/pause",
            501,
            "POST /containers/x/pause is not supported by capstan",
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
        ("GET", "/v1.51/networks/n", 404, "No such network"),
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
    let http = reqwest::Client::new();
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
    ensure!(refused.status() == 400);
    ensure!(json_error(&refused.json().await?).contains("NetworkMode"));

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
