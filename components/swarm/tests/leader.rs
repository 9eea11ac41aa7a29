//! Leader election of swarms sharing one coord (as the swarms of a 3-master cluster do),
//! with no reachable master: exactly one leads and serves the whole API; a standby answers
//! health, `/_ping` and `/version` and 503 naming the leader for everything else; a leader
//! whose lease ends stops with a failure (so systemd restarts it) and a standby takes over
//! with the records the old leader stored; a leader shut down hands over too.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Longest wait for a condition (a guard against hangs, not a timing assertion).
const DEADLINE: Duration = Duration::from_secs(60);

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not reached (last error: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until<F, Fut>(what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    wait_for(what, || {
        let done = f();
        async move { Ok(done.await?.then_some(())) }
    })
    .await
}

struct Swarm {
    handle: capstan_swarm::ServerHandle,
    addr: String,
}

async fn swarm(coord: &str, master: &str) -> anyhow::Result<Swarm> {
    let config = capstan_swarm::Config {
        masters: vec![master.to_owned()],
        coord_endpoints: vec![coord.to_owned()],
        leader_lease_ttl_secs: 2,
        ..capstan_swarm::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let handle =
        capstan_swarm::Server::start_on(config, listener, CancellationToken::new()).await?;
    let addr = handle.local_addr().to_string();
    Ok(Swarm { handle, addr })
}

/// `(status, body)` of a GET.
async fn get(http: &reqwest::Client, addr: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    let r = http.get(format!("http://{addr}{path}")).send().await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn leads(http: &reqwest::Client, addr: &str) -> anyhow::Result<bool> {
    let (status, health) = get(http, addr, "/_capstan/health").await?;
    // A standby is healthy once another swarm leads; the leader always is.
    ensure!(
        (status == 200) == (health["healthy"] == true),
        "health {status}: {health}"
    );
    Ok(status == 200 && health["leader"] == true)
}

/// Exactly one of `swarms` leads and every other one names it: its index.
async fn sole_leader(http: &reqwest::Client, swarms: &[&Swarm]) -> anyhow::Result<Option<usize>> {
    let mut leaders = Vec::new();
    for (i, s) in swarms.iter().enumerate() {
        if leads(http, &s.addr).await? {
            leaders.push(i);
        }
    }
    let [leader] = leaders[..] else {
        return Ok(None);
    };
    let want = format!(
        "this swarm is a standby; the leader is {}",
        swarms[leader].addr
    );
    for (i, s) in swarms.iter().enumerate() {
        if i == leader {
            continue;
        }
        let (status, body) = get(http, &s.addr, "/v1.51/containers/json").await?;
        if status != 503 || body["message"] != want.as_str() {
            return Ok(None);
        }
    }
    Ok(Some(leader))
}

async fn one_leader(http: &reqwest::Client, swarms: &[&Swarm]) -> anyhow::Result<usize> {
    wait_for("exactly one leader, named by the standbys", || {
        sole_leader(http, swarms)
    })
    .await
}

#[tokio::test]
async fn one_swarm_leads_and_a_standby_takes_over() -> anyhow::Result<()> {
    let dir = capstan_testkit::temp_dir()?;
    let coord_server =
        capstan_coord::Server::start_single(dir.path().join("coord"), CancellationToken::new())
            .await
            .context("coord starts")?;
    let coord_addr = coord_server.local_addr().to_string();
    let coord = capstan_coord_client::Client::new([coord_addr.clone()])?;
    // A master port nobody listens on: the leader's framework keeps retrying.
    let master = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let http = capstan_http_client::client();

    let a = swarm(&coord_addr, &master).await?;
    let b = swarm(&coord_addr, &master).await?;
    let first = one_leader(&http, &[&a, &b]).await?;
    let (leader, standby) = if first == 0 { (a, b) } else { (b, a) };

    // The standby still answers what health checks and `docker version` ask.
    let (status, health) = get(&http, &standby.addr, "/_capstan/health").await?;
    ensure!(
        status == 200 && health["leader"] == false && health["healthy"] == true,
        "{status}: {health}"
    );
    let ping = http
        .get(format!("http://{}/_ping", standby.addr))
        .send()
        .await?;
    ensure!(ping.status() == 200 && ping.headers()["api-version"] == "1.51");
    ensure!(ping.text().await? == "OK");
    let (status, version) = get(&http, &standby.addr, "/version").await?;
    ensure!(
        status == 200 && version["ApiVersion"] == "1.51",
        "{version}"
    );
    let refused = http
        .post(format!("http://{}/v1.51/containers/create", standby.addr))
        .json(&json!({"Image": "capstan/busybox"}))
        .send()
        .await?;
    ensure!(refused.status() == 503);
    ensure!(refused.headers()[reqwest::header::CONTENT_TYPE] == "application/json");

    // The leader serves the API; its record reaches coord.
    let created = http
        .post(format!(
            "http://{}/v1.51/containers/create?name=kept",
            leader.addr
        ))
        .json(&json!({"Image": "capstan/busybox"}))
        .send()
        .await?;
    ensure!(created.status() == 201, "{}", created.status());
    let id = created.json::<Value>().await?["Id"]
        .as_str()
        .context("Id")?
        .to_owned();
    let key = format!("{}/containers/{id}", capstan_coord_client::keyspace::SWARM);
    wait_until("the record is in coord", || async {
        Ok(coord.get(&key).await?.is_some())
    })
    .await?;

    // The leader's lease ends (as when coord cannot reach it for a TTL): it stops, failed.
    let election = capstan_coord_client::Election::new(
        coord.clone(),
        capstan_coord_client::keyspace::election(capstan_coord_client::keyspace::SWARM),
    );
    let held = election.leader().await?.context("a leader key")?;
    ensure!(held.value == leader.addr.as_bytes(), "{held:?}");
    coord
        .lease_revoke(held.lease.context("leader key has a lease")?)
        .await?;
    let exit = tokio::time::timeout(DEADLINE, leader.handle.wait())
        .await
        .context("the old leader stops")?;
    ensure!(!exit.is_requested(), "{exit:?}");
    ensure!(format!("{exit:?}").contains("LostLeadership"), "{exit:?}");

    // The standby leads, with the old leader's records.
    wait_until("the standby leads", || leads(&http, &standby.addr)).await?;
    let (status, listed) = get(&http, &standby.addr, "/v1.51/containers/json?all=1").await?;
    ensure!(status == 200, "{status}: {listed}");
    ensure!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["Id"] == id.as_str())),
        "{listed}"
    );

    // A third swarm stands by; shutting the leader down hands over at once.
    let c = swarm(&coord_addr, &master).await?;
    let now = one_leader(&http, &[&standby, &c]).await?;
    ensure!(now == 0, "the leader stays the leader");
    tokio::time::timeout(DEADLINE, standby.handle.shutdown())
        .await
        .context("the leader shuts down")?;
    wait_until("the third swarm leads", || leads(&http, &c.addr)).await?;
    let exit = tokio::time::timeout(DEADLINE, c.handle.shutdown()).await;
    ensure!(exit.is_ok(), "the last swarm shuts down");
    Ok(())
}

#[tokio::test]
async fn without_coord_the_one_swarm_leads() -> anyhow::Result<()> {
    let master = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let config = capstan_swarm::Config {
        masters: vec![master],
        ..capstan_swarm::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let stop = CancellationToken::new();
    let handle = capstan_swarm::Server::start_on(config, listener, stop.clone()).await?;
    let addr = handle.local_addr().to_string();
    let http = capstan_http_client::client();
    ensure!(leads(&http, &addr).await?);
    let (status, listed) = get(&http, &addr, "/v1.51/containers/json").await?;
    ensure!(status == 200 && listed == json!([]), "{status}: {listed}");
    stop.cancel();
    let exit = tokio::time::timeout(DEADLINE, handle.wait())
        .await
        .context("swarm stops")?;
    ensure!(exit.is_requested(), "{exit:?}");
    Ok(())
}
