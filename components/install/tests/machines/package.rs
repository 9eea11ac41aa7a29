//! The package on its own, on one bare machine: `apt-get install ./capstan.deb` lays out the
//! files and units and starts nothing; `apt-get purge` leaves no file behind.

use anyhow::{Result, ensure};
use capstan_testkit::machines::{Machine, Net, NodeImage};

use crate::common::{deb, step};

/// Every file and folder of the package that a node must have after install.
const INSTALLED: &[&str] = &[
    "/usr/bin/capstan",
    "/etc/capstan/config.yaml",
    "/usr/share/capstan/install.sh",
    "/usr/sbin/capstan-uninstall",
    "/usr/lib/systemd/system/capstan-master.target",
    "/usr/lib/systemd/system/capstan-agent.target",
    "/usr/lib/systemd/system/capstan-coord.service",
    "/usr/lib/systemd/system/capstan-master.service",
    "/usr/lib/systemd/system/capstan-apps.service",
    "/usr/lib/systemd/system/capstan-dns.service",
    "/usr/lib/systemd/system/capstan-bootstrap.service",
    "/usr/lib/systemd/system/capstan-router.service",
    "/usr/lib/systemd/system/capstan-catalog.service",
    "/usr/lib/systemd/system/capstan-swarm.service",
    "/usr/lib/systemd/system/capstan-agent.service",
    "/usr/lib/systemd/system/capstan-l4lb.service",
    "/usr/lib/systemd/system/capstan-upgrade.path",
    "/usr/lib/systemd/system/capstan-upgrade.service",
    "/usr/lib/capstan/upgrade-node",
    "/usr/share/doc/capstan/copyright",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_package_installs_starts_nothing_and_purges_without_a_trace() -> Result<()> {
    let (image, deb) = step("node image and .deb", async {
        tokio::try_join!(NodeImage::ensure(), deb())
    })
    .await?;
    let net = step("network", Net::create("package")).await?;
    let node = step("boot", Machine::start(&net, "node1", &image)).await?;

    step("apt-get install ./capstan.deb", async {
        node.copy_in(&deb, "/root/capstan.deb").await?;
        node.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y /root/capstan.deb")
            .await?;
        Ok(())
    })
    .await?;

    step("files, units and the state folder are in place", async {
        for path in INSTALLED {
            node.exec_ok(&["test", "-e", path]).await?;
        }
        // `docker save` tars: their manifests name the images agents load.
        let tags = node
            .sh("for t in /usr/share/capstan/images/*.tar; do tar -xOf \"$t\" manifest.json; done")
            .await?;
        for image in ["capstan/busybox", "capstan/redis", "capstan/http"] {
            ensure!(tags.contains(image), "no {image} in the image tars: {tags}");
        }
        let mode = node
            .exec_ok(&["stat", "-c", "%a %U", "/var/lib/capstan"])
            .await?;
        ensure!(mode.trim() == "700 root", "/var/lib/capstan is {mode:?}");
        Ok(())
    })
    .await?;

    step(
        "the shipped config passes every daemon's --check-config",
        async {
            for daemon in [
                "coord",
                "master",
                "agent",
                "apps",
                "dns",
                "bootstrap",
                "router",
                "catalog",
            ] {
                node.exec_ok(&[
                    "capstan",
                    "daemon",
                    daemon,
                    "--config",
                    "/etc/capstan/config.yaml",
                    "--check-config",
                ])
                .await?;
            }
            Ok(())
        },
    )
    .await?;

    step("a fresh install enables and starts nothing", async {
        let units = node
            .sh("systemctl list-units --all --no-legend --plain 'capstan-*' | awk '$3 == \"active\"'")
            .await?;
        ensure!(units.trim().is_empty(), "active after install: {units}");
        let enabled = node
            .sh("systemctl list-unit-files --no-legend 'capstan-*' | awk '$2 == \"enabled\"'")
            .await?;
        ensure!(enabled.trim().is_empty(), "enabled after install: {enabled}");
        Ok(())
    })
    .await?;

    step("apt-get purge leaves no file behind", async {
        node.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y capstan")
            .await?;
        node.exec_ok(&["rm", "/root/capstan.deb"]).await?;
        assert_purged(&node).await
    })
    .await
}

/// After `apt-get purge capstan`: the package is gone from dpkg, and no file or folder with
/// "capstan" in its name remains (outside the nested Docker engine's own volume), no unit is
/// known to systemd, and no capstan process runs.
pub async fn assert_purged(node: &Machine) -> Result<()> {
    let status = node
        .sh("dpkg-query -W -f='${db:Status-Status}' capstan 2>/dev/null || echo absent")
        .await?;
    ensure!(
        matches!(status.trim(), "not-installed" | "absent" | ""),
        "dpkg still knows capstan: {status:?}"
    );
    let left = node
        .sh(
            "find / /run /tmp -xdev \\( -path /proc -o -path /sys -o -path /var/lib/docker \\) \
             -prune -o -iname '*capstan*' -print 2>/dev/null | grep -v '^/var/lib/docker' || true",
        )
        .await?;
    ensure!(left.trim().is_empty(), "left behind after purge:\n{left}");
    let units = node
        .sh(
            "systemctl list-units --all --no-legend --plain 'capstan-*'; \
             systemctl list-unit-files --no-legend 'capstan-*' || true",
        )
        .await?;
    ensure!(
        !units.lines().any(|l| l.trim().starts_with("capstan-")),
        "systemd still knows: {units}"
    );
    let procs = node.sh("pgrep -a capstan || true").await?;
    ensure!(procs.trim().is_empty(), "still running: {procs}");
    Ok(())
}
