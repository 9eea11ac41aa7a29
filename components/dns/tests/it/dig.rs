//! A real DNS client: `dig` (Debian package `dnsutils`) against the running server.

use std::net::SocketAddr;

use capstan_testkit::wait_until;

use super::support::*;

async fn dig(server: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run dig (apt-get install dnsutils): {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "dig failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn dig_resolves_tasks_srv_records_and_falls_back_to_tcp() -> anyhow::Result<()> {
    let tasks = (0..40)
        .map(|i| {
            task(
                &format!("web.{i}"),
                "web",
                "TASK_RUNNING",
                &format!("9.0.0.{}", i + 1),
                &[31000 + i],
            )
        })
        .collect();
    let master = FakeMaster::start(Mode::Leader(cluster_state(tasks))).await?;
    let server = start(config(vec![master.host_port()], vec![])).await?;
    let addr = dns(&server);
    wait_until("the tasks resolve", WAIT, async || {
        resolves_to(addr, "leader.mesos.", &["127.0.0.1"]).await
    })
    .await?;

    let short = dig(addr, &["+short", "leader.mesos", "A"]).await?;
    assert_eq!(short.trim(), "127.0.0.1");

    let srv = dig(
        addr,
        &["_web._tcp.marathon.mesos", "SRV", "+noedns", "+tcp"],
    )
    .await?;
    assert!(srv.contains("status: NOERROR"), "{srv}");
    assert!(srv.contains("ANSWER: 40"), "{srv}");
    assert!(
        srv.contains("ADDITIONAL: 40"),
        "target addresses ride along: {srv}"
    );

    let nx = dig(addr, &["nothing.marathon.mesos", "A"]).await?;
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("AUTHORITY: 1"),
        "{nx}"
    );

    // 40 A records overflow 512 bytes: dig sees TC and retries over TCP by itself.
    let big = dig(addr, &["web.marathon.mesos", "A", "+noedns"]).await?;
    assert!(big.contains("ANSWER: 40"), "{big}");
    assert!(
        big.contains("Truncated, retrying in TCP mode") || big.contains("(TCP)"),
        "{big}"
    );
    server.shutdown().await;
    Ok(())
}
