//! The catalog on a dev cluster, driven by its reference client: `dcos package` from the real
//! DC/OS CLI (`dcoscli` 0.6.1, unmodified) through the router. One cluster, one test (a
//! cluster is the slow part): the built-in repository listed, searched and described; every
//! built-in package installed with its defaults on its offline image until its app is
//! healthy, then reached with its own protocol (Redis `PING`, HTTP from nginx and
//! hello-world, memcached's `version`, a PostgreSQL startup handshake, Prometheus's
//! `/-/ready`, nginx also through the router's `/service/nginx/`); Redis updated with a new
//! option through `/cosmos/service/update` (no `dcos` command exists for it) until the new
//! version runs; and everything uninstalled with nothing left. A second test moves a
//! package with a bundle: `capstan package bundle`, the image removed from the engine,
//! `capstan package import`, and the package installed and running with no registry.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use capstan_testkit::python::{ClusterTls, DcosCli};
use capstan_testkit::{capstan_bin, temp_dir, wait_until};
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
    let http = capstan_http_client::builder()
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

/// The bundled package's image: `capstan/http` under a tag only this test uses, so removing
/// it from the engine (which the dev cluster's agents share) breaks nothing else.
const BUNDLE_IMAGE: &str = "capstan/bundle-test:1";

fn docker(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("docker {args:?}"))
}

fn image_present(image: &str) -> anyhow::Result<bool> {
    Ok(docker(&["image", "inspect", image])?.status.success())
}

/// Removes the test tag however the test ends.
struct UntagOnDrop;

impl Drop for UntagOnDrop {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", BUNDLE_IMAGE]);
    }
}

/// `bundle-test`: the built-in hello-world package renamed, on [`BUNDLE_IMAGE`], as a
/// source tree under `dir`.
fn write_bundle_test_package(dir: &Path) -> anyhow::Result<()> {
    let from =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalog/universe/packages/H/hello-world/0");
    let to = dir.join("packages/B/bundle-test/0");
    std::fs::create_dir_all(&to)?;
    let read = |f: &str| -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&std::fs::read(from.join(f))?)?)
    };
    let mut package = read("package.json")?;
    package["name"] = json!("bundle-test");
    package["description"] = json!("hello-world, moved by a bundle");
    let mut config = read("config.json")?;
    config["properties"]["service"]["properties"]["name"]["default"] = json!("bundle-test");
    std::fs::write(to.join("package.json"), package.to_string())?;
    std::fs::write(to.join("config.json"), config.to_string())?;
    std::fs::write(
        to.join("resource.json"),
        json!({"assets": {"container": {"docker": {"http": BUNDLE_IMAGE}}}}).to_string(),
    )?;
    std::fs::copy(
        from.join("marathon.json.mustache"),
        to.join("marathon.json.mustache"),
    )?;
    Ok(())
}

fn capstan(args: &[&str]) -> anyhow::Result<std::process::Output> {
    let out = Command::new(capstan_bin()?)
        .args(args)
        .output()
        .with_context(|| format!("capstan {args:?}"))?;
    ensure!(
        out.status.success(),
        "capstan {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_moves_a_package_and_its_image_to_a_cluster_with_no_registry() -> anyhow::Result<()>
{
    let _one = ONE_AT_A_TIME.lock().await;
    let work = temp_dir()?;
    let _untag = UntagOnDrop;
    let tagged = docker(&["tag", "capstan/http", BUNDLE_IMAGE])?;
    ensure!(tagged.status.success(), "docker tag: {tagged:?}");
    let src = work.path().join("src");
    write_bundle_test_package(&src)?;
    let file = work.path().join("bundle-test.tar");
    let file_arg = file.to_str().context("utf-8 path")?;
    let out = capstan(&[
        "package",
        "bundle",
        src.to_str().context("utf-8 path")?,
        "-o",
        file_arg,
    ])?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        said.contains("bundle-test 1.0-1") && said.contains(BUNDLE_IMAGE),
        "{said}"
    );

    // The engine no longer has the image, and there is no registry to pull it from.
    let removed = docker(&["rmi", BUNDLE_IMAGE])?;
    ensure!(removed.status.success(), "docker rmi: {removed:?}");
    ensure!(!image_present(BUNDLE_IMAGE)?);

    let cluster = tokio::task::spawn_blocking(|| DevCluster::up(1, 1, 3)).await??;
    let status = cluster.status()?;
    let router = status["router"].as_str().context("router url")?.to_owned();
    let password = status["admin"]["password"]
        .as_str()
        .context("admin password")?
        .to_owned();
    let out = capstan(&[
        "package",
        "import",
        file_arg,
        "--router",
        &router,
        "--username",
        "admin",
        "--password",
        &password,
    ])
    .with_context(|| cluster.logs())?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(said.contains(BUNDLE_IMAGE), "{said}");

    let http = capstan_http_client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let m = cluster.master_ip(1);
    let stored: Value = http
        .get(format!("http://{m}:7070/package/images"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        stored["images"][0]["name"] == BUNDLE_IMAGE,
        "the image store: {stored:#}"
    );

    let cli = DcosCli::new().await?;
    cli.cluster_setup(&router, "admin", &password, &ClusterTls::Default)
        .await?
        .ok()?;
    let repos = cli.run(&["package", "repo", "list"]).await?.ok()?;
    ensure!(repos.stdout.contains("capstan:local"), "{repos:?}");
    let found = dcos_json(&cli, &["package", "search", "bundle-test", "--json"]).await?;
    ensure!(found["packages"][0]["name"] == "bundle-test", "{found:#}");
    cli.run(&["package", "install", "bundle-test", "--yes"])
        .await?
        .ok()
        .with_context(|| cluster.logs())?;
    let url = format!("http://{m}:8080/v2/apps/bundle-test");
    let (host, port, _) = wait_until(
        "bundle-test healthy",
        Duration::from_secs(180),
        async || healthy_now(&http, &url).await,
    )
    .await
    .with_context(|| cluster.logs())?;
    reach(&http, "hello-world", &host, port).await?;
    ensure!(
        image_present(BUNDLE_IMAGE)?,
        "the agent loaded the image from the masters' store"
    );
    // The agent says where the image came from: its masters' store, not a registry.
    let mut agent_logs = String::new();
    for node in std::fs::read_dir(cluster.state_dir.join("nodes"))?.flatten() {
        for log in std::fs::read_dir(node.path())?.flatten() {
            let p = log.path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("agent"))
            {
                agent_logs.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    ensure!(
        agent_logs.contains("Loaded the image from the cluster's image store")
            && !agent_logs.contains("Pulling image"),
        "agent logs: {agent_logs}"
    );

    cli.run(&["package", "uninstall", "bundle-test", "--yes"])
        .await?
        .ok()?;
    wait_until(
        "the bundle-test app gone",
        Duration::from_secs(60),
        async || {
            let r = http.get(&url).send().await.ok()?;
            (r.status() == 404).then_some(())
        },
    )
    .await?;
    Ok(())
}
