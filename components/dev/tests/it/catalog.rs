//! The catalog on a dev cluster, driven by its reference client: `dcos package` from the real
//! DC/OS CLI (`dcoscli` 0.6.1, unmodified) through the router — the built-in repository
//! listed, searched and described, Redis installed with one command on the offline
//! `capstan/redis` image until it is healthy, listed, and uninstalled with nothing left.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use capstan_testkit::python::{ClusterTls, DcosCli};
use capstan_testkit::wait_until;
use serde_json::Value;

use super::{DevCluster, ONE_AT_A_TIME};

async fn dcos_json(cli: &DcosCli, args: &[&str]) -> anyhow::Result<Value> {
    let out = cli.run(args).await?.ok()?;
    serde_json::from_str(&out.stdout).with_context(|| format!("dcos {args:?}: {out:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn dcos_package_installs_redis_from_the_builtin_catalog_and_uninstalls_it()
-> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = tokio::task::spawn_blocking(|| DevCluster::up(1, 1, 3)).await??;
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

    let installed = cli
        .run(&["package", "install", "redis", "--yes"])
        .await?
        .ok()
        .with_context(|| cluster.logs())?;
    ensure!(
        installed.stdout.contains("Redis is starting"),
        "{installed:?}"
    );
    let apps_url = format!("http://{}:8080/v2/apps/redis", cluster.master_ip(1));
    let http = reqwest::Client::new();
    wait_until("redis healthy", Duration::from_secs(120), async || {
        let v: Value = http.get(&apps_url).send().await.ok()?.json().await.ok()?;
        (v["app"]["tasksHealthy"].as_u64()? >= 1).then_some(())
    })
    .await
    .with_context(|| cluster.logs())?;

    let list = dcos_json(&cli, &["package", "list", "--json"]).await?;
    ensure!(list[0]["name"] == "redis", "{list:#}");
    ensure!(list[0]["apps"][0] == "/redis", "{list:#}");

    let gone = cli
        .run(&["package", "uninstall", "redis", "--yes"])
        .await?
        .ok()?;
    ensure!(
        gone.stderr
            .contains("Uninstalled package [redis] version [7.0-1]"),
        "{gone:?}"
    );
    let list = dcos_json(&cli, &["package", "list", "--json"]).await?;
    ensure!(list == Value::Array(Vec::new()), "{list:#}");
    wait_until("the redis app gone", Duration::from_secs(30), async || {
        let r = http.get(&apps_url).send().await.ok()?;
        (r.status() == 404).then_some(())
    })
    .await?;
    Ok(())
}
