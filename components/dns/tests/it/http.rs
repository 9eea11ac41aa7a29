//! The Mesos-DNS HTTP API (api-compat §7.3).

use capstan_testkit::wait_until;
use serde_json::{Value, json};

use super::support::*;

async fn get(base: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    let resp = reqwest::get(format!("{base}{path}")).await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

#[tokio::test]
async fn the_http_api_serves_hosts_services_enumerate_axfr_and_config() -> anyhow::Result<()> {
    let master = FakeMaster::start(Mode::Leader(cluster_state(vec![task(
        "web.1",
        "web",
        "TASK_RUNNING",
        "9.0.0.7",
        &[31000],
    )])))
    .await?;
    let server = start(config(vec![master.host_port()], vec![])).await?;
    let base = format!("http://{}", server.http_addr().expect("HTTP is on"));
    wait_until("the task is served over HTTP", WAIT, async || {
        get(&base, "/v1/hosts/web.marathon.mesos")
            .await
            .and_then(|(_, v)| {
                anyhow::ensure!(v[0]["ip"] == "9.0.0.7", "got {v}");
                Ok(())
            })
    })
    .await?;

    let (status, v) = get(&base, "/v1/version").await?;
    assert_eq!(status, 200);
    assert_eq!(v["Service"], "Mesos-DNS");

    let (_, v) = get(&base, "/v1/hosts/web.marathon.mesos.").await?;
    assert_eq!(v, json!([{"host": "web.marathon.mesos.", "ip": "9.0.0.7"}]));
    let (_, v) = get(&base, "/v1/hosts/web.marathon.mesos.thisdcos.directory").await?;
    assert_eq!(v[0]["ip"], "9.0.0.7", "the DC/OS mirror name");
    let (status, v) = get(&base, "/v1/hosts/nothing.mesos").await?;
    assert_eq!((status, v), (200, json!([{"host": "", "ip": ""}])));

    let (_, v) = get(&base, "/v1/services/_web._tcp.marathon.mesos").await?;
    assert_eq!(v[0]["service"], "_web._tcp.marathon.mesos");
    assert_eq!(v[0]["port"], "31000");
    assert_eq!(v[0]["ip"], "10.0.0.2");
    assert!(
        v[0]["host"]
            .as_str()
            .unwrap()
            .ends_with(".marathon.slave.mesos.")
    );
    let (_, v) = get(&base, "/v1/services/_nothing._tcp.mesos").await?;
    assert_eq!(
        v,
        json!([{"service": "", "host": "", "ip": "", "port": ""}])
    );

    let (_, v) = get(&base, "/v1/enumerate").await?;
    assert_eq!(v["frameworks"][0]["name"], "marathon");
    assert_eq!(v["frameworks"][0]["tasks"][0]["id"], "web.1");
    assert!(
        v["frameworks"][0]["tasks"][0]["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rtype"] == "SRV")
    );

    let (_, v) = get(&base, "/v1/axfr").await?;
    assert_eq!(v["Domain"], "mesos");
    assert_eq!(
        v["Records"]["As"]["web.marathon.mesos."],
        json!(["9.0.0.7"])
    );
    assert_eq!(
        v["Records"]["SRVs"]["_leader._tcp.mesos."],
        json!([format!("leader.mesos.:{}", master.addr.port())])
    );
    assert!(
        v["Records"]["As"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| k.ends_with(".mesos."))
    );

    let (_, v) = get(&base, "/v1/config").await?;
    assert_eq!(v["Domain"], "mesos");
    assert_eq!(v["TTL"], 60);
    assert_eq!(v["Masters"], json!([master.host_port()]));

    let (status, _) = get(&base, "/v1/hosts/x/ports").await?;
    assert_eq!(status, 501);
    let (status, _) = get(&base, "/v1/nothing").await?;
    assert_eq!(status, 404);
    server.shutdown().await;
    Ok(())
}

/// The HTTP API serves through `capstan_runtime::http::serve` (issue #19, probe F11): a head
/// that never ends is closed, and a body over the ceiling is 413 before it is sent.
#[tokio::test]
async fn the_http_api_closes_a_slowloris_and_refuses_a_huge_body() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let master = FakeMaster::start(Mode::Leader(cluster_state(vec![]))).await?;
    let server = start(config(vec![master.host_port()], vec![])).await?;
    let addr = server.http_addr().expect("HTTP is on");

    let mut slow = tokio::net::TcpStream::connect(addr).await?;
    slow.write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\nX-a: ")
        .await?;
    let mut buf = [0u8; 256];
    // The guard only keeps a failing test from hanging; the header timeout is 10 s.
    let n = tokio::time::timeout(std::time::Duration::from_secs(120), slow.read(&mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("the partial head was not closed"))?;
    assert!(
        matches!(n, Ok(0) | Err(_)) || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408")
    );

    let mut big = tokio::net::TcpStream::connect(addr).await?;
    big.write_all(
        b"POST /v1/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n",
    )
    .await?;
    let mut out = Vec::new();
    big.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    Ok(())
}
