//! The catalog on a dev cluster, driven by its reference client: `dcos package` from the real
//! DC/OS CLI (`dcoscli` 0.6.1, unmodified) through the router. One cluster, one test (a
//! cluster is the slow part): the built-in repository listed, searched and described; every
//! built-in package installed with its defaults on its offline image until its app is
//! healthy, then reached with its own protocol (Redis `PING`, HTTP from nginx and
//! hello-world, memcached's `version`, a PostgreSQL startup handshake, Prometheus's
//! `/-/ready`, nginx also through the router's `/service/nginx/`); Redis updated with a new
//! option through `/cosmos/service/update` (no `dcos` command exists for it) until the new
//! version runs; and everything uninstalled with nothing left.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use capstan_testkit::python::{ClusterTls, DcosCli};
use capstan_testkit::wait_until;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{DevCluster, ONE_AT_A_TIME, redis_cli};

/// Every package of the built-in repository; each app is named after its package.
const PACKAGES: [&str; 6] = [
    "redis",
    "nginx",
    "hello-world",
    "memcached",
    "postgresql",
    "prometheus",
];

const UPDATE_REQUEST: &str =
    "application/vnd.dcos.service.update-request+json;charset=utf-8;version=v1";
const UPDATE_RESPONSE: &str =
    "application/vnd.dcos.service.update-response+json;charset=utf-8;version=v1";

async fn dcos_json(cli: &DcosCli, args: &[&str]) -> anyhow::Result<Value> {
    let out = cli.run(args).await?.ok()?;
    serde_json::from_str(&out.stdout).with_context(|| format!("dcos {args:?}: {out:?}"))
}

/// A token for `admin` from the router at `base`.
async fn login(http: &reqwest::Client, base: &str, password: &str) -> anyhow::Result<String> {
    let resp = http
        .post(format!("{base}/acs/api/v1/auth/login"))
        .json(&json!({"uid": "admin", "password": password}))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    ensure!(status == 200, "login answered {status}: {body}");
    Ok(body["token"]
        .as_str()
        .context("login: no token")?
        .to_owned())
}

/// The app at `apps` (`http://<master>:8080/v2/apps/<id>`) if it is healthy with no
/// deployment under way: a running task of the app's current version as `(host, port,
/// app version)`.
async fn healthy_now(http: &reqwest::Client, apps: &str) -> Option<(String, u16, String)> {
    let v: Value = http.get(apps).send().await.ok()?.json().await.ok()?;
    let app = &v["app"];
    let done = app["deployments"].as_array().is_some_and(Vec::is_empty);
    if !done || app["tasksHealthy"].as_u64()? < 1 {
        return None;
    }
    let version = app["version"].as_str()?.to_owned();
    let tasks: Value = http
        .get(format!("{apps}/tasks"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let task = tasks["tasks"].as_array()?.iter().find(|t| {
        t["state"] == "TASK_RUNNING" && t["version"].as_str().is_none_or(|v| v == version)
    })?;
    let port = u16::try_from(task["ports"][0].as_u64()?).ok()?;
    Some((task["host"].as_str()?.to_owned(), port, version))
}

/// memcached's text protocol: `version` answers `VERSION <v>`.
async fn memcached_version(host: &str, port: u16) -> anyhow::Result<String> {
    let mut s = TcpStream::connect((host, port)).await?;
    s.write_all(b"version\r\n").await?;
    let mut buf = vec![0u8; 128];
    let n = s.read(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
}

/// A PostgreSQL v3 startup as user `postgres`: the package's default (no password) trusts
/// it, so the server answers `AuthenticationOk` (`R`, length 8, code 0).
async fn postgres_startup(host: &str, port: u16) -> anyhow::Result<()> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0postgres\0database\0postgres\0\0");
    let len = u32::try_from(body.len() + 4)?;
    let mut msg = len.to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    let mut s = TcpStream::connect((host, port)).await?;
    s.write_all(&msg).await?;
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await?;
    ensure!(
        head == [b'R', 0, 0, 0, 8, 0, 0, 0, 0],
        "postgres answered {head:?}, not AuthenticationOk"
    );
    Ok(())
}

/// Reaches an installed package's task with the package's own protocol.
async fn reach(http: &reqwest::Client, name: &str, host: &str, port: u16) -> anyhow::Result<()> {
    match name {
        "redis" => {
            let pong = redis_cli(host, &port.to_string(), &["PING"])?;
            ensure!(pong == "PONG", "redis answered {pong:?}");
        }
        "nginx" | "hello-world" => {
            let r = http.get(format!("http://{host}:{port}/")).send().await?;
            ensure!(r.status() == 200, "{name} / answered {}", r.status());
        }
        "memcached" => {
            let v = memcached_version(host, port).await?;
            ensure!(v.starts_with("VERSION "), "memcached answered {v:?}");
        }
        "postgresql" => postgres_startup(host, port).await?,
        "prometheus" => {
            let r = http
                .get(format!("http://{host}:{port}/-/ready"))
                .send()
                .await?;
            ensure!(
                r.status() == 200,
                "prometheus /-/ready answered {}",
                r.status()
            );
        }
        other => bail!("no way to reach {other}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_builtin_package_installs_runs_is_reached_updates_and_uninstalls()
-> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    // Two agents: the packages' defaults together ask for 1.9 CPUs.
    let cluster = tokio::task::spawn_blocking(|| DevCluster::up(1, 2, 3)).await??;
    let status = cluster.status()?;
    let router = status["router"].as_str().context("router url")?.to_owned();
    let password = status["admin"]["password"]
        .as_str()
        .context("admin password")?
        .to_owned();
    let cli = DcosCli::new().await?;
    cli.cluster_setup(&router, "admin", &password, &ClusterTls::Default)
        .await?
        .ok()?;

    let repos = cli.run(&["package", "repo", "list"]).await?.ok()?;
    ensure!(
        repos.stdout.contains("builtin:universe"),
        "{repos:?}{}",
        cluster.logs()
    );
    let found = dcos_json(&cli, &["package", "search", "redis", "--json"]).await?;
    ensure!(found["packages"][0]["name"] == "redis", "{found:#}");
    let all = dcos_json(&cli, &["package", "search", "--json"]).await?;
    for name in PACKAGES {
        ensure!(
            all["packages"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == name)),
            "search lacks {name}: {all:#}"
        );
    }
    let described = dcos_json(&cli, &["package", "describe", "redis"]).await?;
    ensure!(described["package"]["name"] == "redis", "{described:#}");
    let rendered = cli
        .run(&["package", "describe", "redis", "--app", "--render"])
        .await?
        .ok()?;
    ensure!(rendered.stdout.contains("capstan/redis"), "{rendered:?}");
    let versions = cli
        .run(&["package", "describe", "redis", "--package-versions"])
        .await?
        .ok()?;
    ensure!(versions.stdout.contains("7.0-1"), "{versions:?}");

    // Every package, with its defaults, on the offline images.
    for name in PACKAGES {
        let installed = cli
            .run(&["package", "install", name, "--yes"])
            .await?
            .ok()
            .with_context(|| format!("installing {name}{}", cluster.logs()))?;
        if name == "redis" {
            ensure!(
                installed.stdout.contains("Redis is starting"),
                "{installed:?}"
            );
        }
    }
    let m = cluster.master_ip(1);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let apps_url = |name: &str| format!("http://{m}:8080/v2/apps/{name}");
    for name in PACKAGES {
        let url = apps_url(name);
        let (host, port, _) = wait_until(
            &format!("{name} healthy"),
            Duration::from_secs(180),
            async || healthy_now(&http, &url).await,
        )
        .await
        .with_context(|| cluster.logs())?;
        reach(&http, name, &host, port)
            .await
            .with_context(|| format!("reaching {name} at {host}:{port}"))?;
    }

    // A web UI through the router, by the app's DCOS_SERVICE_NAME.
    let token = login(&http, &router, &password).await?;
    wait_until(
        "nginx through /service/nginx/",
        Duration::from_secs(60),
        async || {
            let r = http
                .get(format!("{router}/service/nginx/"))
                .header("Authorization", format!("token={token}"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await
    .with_context(|| cluster.logs())?;

    let list = dcos_json(&cli, &["package", "list", "--json"]).await?;
    let listed: Vec<&str> = list
        .as_array()
        .context("list is an array")?
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in PACKAGES {
        ensure!(listed.contains(&name), "list lacks {name}: {list:#}");
    }
    let redis = list
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "redis"))
        .context("redis listed")?;
    ensure!(redis["apps"][0] == "/redis", "{list:#}");

    // A new option through /cosmos/service/update: the new version of the app runs with it.
    let redis_url = apps_url("redis");
    let (_, _, before) = healthy_now(&http, &redis_url)
        .await
        .context("redis healthy")?;
    let resp = http
        .post(format!("{router}/cosmos/service/update"))
        .header("Authorization", format!("token={token}"))
        .header("Content-Type", UPDATE_REQUEST)
        .header("Accept", UPDATE_RESPONSE)
        .json(&json!({"appId": "/redis", "options": {"redis": {"maxmemory_policy": "noeviction"}}}))
        .send()
        .await?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    ensure!(status == 200, "service/update answered {status}: {body:#}");
    ensure!(content_type == UPDATE_RESPONSE, "{content_type}");
    ensure!(
        body["resolvedOptions"]["redis"]["maxmemory_policy"] == "noeviction",
        "{body:#}"
    );
    ensure!(
        body["resolvedOptions"]["redis"]["mem"] == 256,
        "the installed options are kept: {body:#}"
    );
    ensure!(body["marathonDeploymentId"].is_string(), "{body:#}");
    let (host, port, after) = wait_until(
        "the updated redis healthy",
        Duration::from_secs(180),
        async || {
            let got = healthy_now(&http, &redis_url).await?;
            (got.2 != before).then_some(got)
        },
    )
    .await
    .with_context(|| cluster.logs())?;
    ensure!(after != before);
    let policy = redis_cli(
        &host,
        &port.to_string(),
        &["CONFIG", "GET", "maxmemory-policy"],
    )?;
    ensure!(policy.ends_with("noeviction"), "{policy:?}");

    // Uninstalled, with nothing left.
    let gone = cli
        .run(&["package", "uninstall", "redis", "--yes"])
        .await?
        .ok()?;
    ensure!(
        gone.stderr
            .contains("Uninstalled package [redis] version [7.0-1]"),
        "{gone:?}"
    );
    for name in PACKAGES.into_iter().skip(1) {
        cli.run(&["package", "uninstall", name, "--yes"])
            .await?
            .ok()
            .with_context(|| format!("uninstalling {name}"))?;
    }
    let list = dcos_json(&cli, &["package", "list", "--json"]).await?;
    ensure!(list == Value::Array(Vec::new()), "{list:#}");
    for name in PACKAGES {
        let url = apps_url(name);
        wait_until(
            &format!("the {name} app gone"),
            Duration::from_secs(60),
            async || {
                let r = http.get(&url).send().await.ok()?;
                (r.status() == 404).then_some(())
            },
        )
        .await?;
    }
    Ok(())
}
