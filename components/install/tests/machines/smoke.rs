//! The harness itself: machines boot systemd, reach each other by name, run a nested Docker
//! container from an image loaded into their own engine, restart units, survive a power
//! cycle, and leave nothing behind.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use capstan_testkit::machines::{Machine, Net, NodeImage};
use capstan_testkit::wait_until;

use crate::common::step;

#[tokio::test(flavor = "multi_thread")]
async fn two_machines_boot_systemd_and_run_nested_docker() -> Result<()> {
    let image = step("node image", NodeImage::ensure()).await?;
    let net = step("network", Net::create("smoke")).await?;
    let net_name = net.name().to_owned();
    let mut machines = step(
        "boot two machines",
        Machine::start_all(&net, &["m1", "m2"], &image),
    )
    .await?;
    let m2 = machines.pop().context("no m2")?;
    let m1 = machines.pop().context("no m1")?;

    step("machines resolve and reach each other by name", async {
        let hosts = m2.exec_ok(&["getent", "hosts", "m1"]).await?;
        ensure!(
            hosts.split_whitespace().next() == Some(m1.ip().to_string().as_str()),
            "m1 resolves to {hosts:?}, not {}",
            m1.ip()
        );
        m2.exec_ok(&["ping", "-c", "1", "-W", "5", "m1"]).await?;
        Ok(())
    })
    .await?;

    step("nested docker run of a loaded image", async {
        m1.wait_active("docker.service", Duration::from_secs(60))
            .await?;
        m1.load_image("capstan/busybox")
            .await
            .context("run `make images` to build capstan/busybox")?;
        let out = m1
            .exec_ok(&[
                "docker",
                "run",
                "--rm",
                "-m",
                "64m",
                "capstan/busybox",
                "echo",
                "nested-ok",
            ])
            .await;
        let out = m1.with_journal(&["docker.service"], out).await?;
        ensure!(out.trim() == "nested-ok", "nested run printed {out:?}");
        Ok(())
    })
    .await?;

    step("files go in with copy_in and write_file", async {
        let dir = capstan_testkit::temp_dir()?;
        let file = dir.path().join("hello.txt");
        std::fs::write(&file, "hello\n")?;
        m1.copy_in(&file, "/root/hello.txt").await?;
        m1.write_file("/tmp/written", b"written\n").await?;
        let both = m1.sh("cat /root/hello.txt /tmp/written").await?;
        ensure!(both == "hello\nwritten\n", "{both:?}");
        ensure!(
            m1.copy_in(&file, "/tmp/x").await.is_err(),
            "copy_in to /tmp must fail"
        );
        Ok(())
    })
    .await?;

    step(
        "systemd restarts a unit whose main process is killed",
        async {
            m1.exec_ok(&[
                "systemd-run",
                "--unit",
                "capstan-test-sleeper",
                "-p",
                "Restart=on-failure",
                "-p",
                "RestartSec=1",
                "sleep",
                "infinity",
            ])
            .await?;
            m1.wait_active("capstan-test-sleeper.service", Duration::from_secs(20))
                .await?;
            let before = m1.unit_restarts("capstan-test-sleeper.service").await?;
            let killed = m1.kill_unit_main("capstan-test-sleeper.service").await?;
            wait_until(
                "capstan-test-sleeper restarted",
                Duration::from_secs(30),
                async || -> Result<()> {
                    let n = m1.unit_restarts("capstan-test-sleeper.service").await?;
                    let pid = m1
                        .unit_property("capstan-test-sleeper.service", "MainPID")
                        .await?;
                    let state = m1.unit_state("capstan-test-sleeper.service").await?;
                    ensure!(
                        n > before && state == "active" && pid != killed.to_string() && pid != "0",
                        "NRestarts {n} (was {before}), {state}, MainPID {pid} (killed {killed})"
                    );
                    Ok(())
                },
            )
            .await?;
            let journal = m1.journal("capstan-test-sleeper.service").await;
            ensure!(journal.contains("sleep"), "{journal}");
            Ok(())
        },
    )
    .await?;

    step(
        "a machine powers off and boots again with its address",
        async {
            let ip = m2.ip();
            m2.stop().await?;
            let state = m2.exec(&["true"]).await?;
            ensure!(
                !state.status.success(),
                "a stopped machine still runs commands"
            );
            m2.start_again().await?;
            let addr = m2.sh("ip -4 -o addr show eth0").await?;
            ensure!(addr.contains(&format!("{ip}/24")), "{addr}");
            Ok(())
        },
    )
    .await?;

    step(
        "dropping the machines and network removes them all",
        async {
            drop((m1, m2));
            drop(net);
            let left = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "docker ps -aq --filter name={net_name}; \
                 docker volume ls -q --filter name={net_name}; \
                 docker network ls -q --filter name={net_name}"
                ))
                .output()?;
            let left = String::from_utf8_lossy(&left.stdout);
            ensure!(left.trim().is_empty(), "left behind: {left}");
            Ok(())
        },
    )
    .await
}
