//! The Ansible role against real systemd machines (the testkit's machine containers, as in the
//! install suite): `ansible-playbook site.yml` converges one master and two agents from this
//! tree's `.deb` (`capstan_package`), the master's `/master/slaves` then lists both agents as
//! active, an app posted to the master's Marathon API runs a task on each agent, and a second
//! run reports `changed=0` on every host and leaves those tasks running. Then an upgrade run:
//! `capstan_package` points at a newer package of the same tree (Debian revision 2), every
//! host changes and ends up with that version installed, and the agents and the app's tasks
//! are back.
//!
//! Needs the Docker engine, mmdebstrap (the node image) and the Ansible virtualenv
//! (`ansible/tools/env.sh`, made here if missing); `.ci/run` provides all three.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use capstan_testkit::machines::{Machine, Net, NodeImage, check};
use capstan_testkit::wait_until;
use tokio::process::Command;

mod common;
use common::{deb, newer_deb, repo, step, target_dir, work_dir};

/// The master's daemons, whose journals a failed converge quotes.
const MASTER_UNITS: &[&str] = &[
    "capstan-coord.service",
    "capstan-master.service",
    "capstan-apps.service",
    "capstan-dns.service",
    "capstan-bootstrap.service",
    "capstan-router.service",
    "capstan-catalog.service",
    "capstan-swarm.service",
    "capstan-l4lb.service",
];

/// How long the agents may take to show up in the master's state after the converge.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(120);

/// The Ansible virtualenv's bin folder (`ansible/tools/env.sh`, a no-op when it is current).
async fn ansible_bin() -> Result<PathBuf> {
    let venv = target_dir().join("ansible-env");
    let output = Command::new("bash")
        .arg(repo().join("ansible/tools/env.sh"))
        .arg(&venv)
        .output()
        .await
        .context("cannot run ansible/tools/env.sh")?;
    check("ansible/tools/env.sh", output)?;
    Ok(venv.join("bin"))
}

/// The inventory: hosts named as their containers (the docker connection), each advertising its
/// address on the test network (which has no default route to take one from).
fn inventory(master: &Machine, agents: &[Machine], deb: &Path) -> String {
    let host = |m: &Machine| {
        format!(
            "{} capstan_advertise={} capstan_hostname={}\n",
            m.container(),
            m.ip(),
            m.name()
        )
    };
    let mut inv = format!("[masters]\n{}\n[agents]\n", host(master));
    for a in agents {
        inv.push_str(&host(a));
    }
    inv.push_str(&format!(
        "\n[all:vars]\nansible_connection=community.docker.docker\n\
         ansible_python_interpreter=/usr/bin/python3\ncapstan_package={}\n",
        deb.display()
    ));
    inv
}

/// Where every playbook run of the test is logged in full (failures quote only its end).
fn log_path() -> PathBuf {
    work_dir("ansible.log")
}

/// The `changed=` count of every host in a PLAY RECAP.
fn recap_changed(stdout: &str) -> Vec<(String, u32)> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .skip(1)
        .filter_map(|l| {
            let host = l.split_whitespace().next()?.to_owned();
            let changed = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("changed="))?
                .parse()
                .ok()?;
            Some((host, changed))
        })
        .collect()
}

/// `ansible-playbook -i inventory site.yml`; returns the PLAY RECAP's `changed=` per host.
async fn converge(bin: &Path, inventory: &Path, home: &Path) -> Result<Vec<(String, u32)>> {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(bin.join("ansible-playbook"))
        .arg("-i")
        .arg(inventory)
        .arg("site.yml")
        .current_dir(repo().join("ansible"))
        .env("PATH", path)
        .env("ANSIBLE_CONFIG", repo().join("ansible/ansible.cfg"))
        .env("ANSIBLE_HOME", home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_STDOUT_CALLBACK", "default")
        .env("ANSIBLE_LOG_PATH", log_path())
        .output()
        .await
        .context("cannot run ansible-playbook")?;
    let what = format!(
        "ansible-playbook -i inventory.ini site.yml (whole log: {})",
        log_path().display()
    );
    let stdout = check(&what, output)?;
    let recap = recap_changed(&stdout);
    if recap.is_empty() {
        bail!("no PLAY RECAP in:\n{stdout}");
    }
    Ok(recap)
}

/// The app the converged cluster must run: a command task per agent (no image needed).
const APP: &str = "ansible-sleeper";

/// Posts [`APP`] with two instances, one per agent, from `from` to `master`'s Marathon API.
async fn post_app(from: &Machine, master: &Machine) -> Result<()> {
    let body = serde_json::json!({
        "id": format!("/{APP}"), "cmd": "sleep 3600", "cpus": 0.1, "mem": 32, "instances": 2,
        "constraints": [["hostname", "UNIQUE"]]
    });
    let url = format!("http://{}:8080/v2/apps", master.ip());
    let code = from.post_json(&url, &body).await?;
    ensure!(code == 201, "POST {url} answered {code}");
    Ok(())
}

/// The ids and hosts of [`APP`]'s running tasks, sorted, asked from `from`.
async fn running_tasks(from: &Machine, master: &Machine) -> Result<Vec<(String, String)>> {
    let url = format!("http://{}:8080/v2/apps/{APP}/tasks", master.ip());
    let v = from.get_json(&url).await?;
    let mut tasks: Vec<(String, String)> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .map(|t| {
            let field = |k: &str| t[k].as_str().unwrap_or("?").to_owned();
            (field("id"), field("host"))
        })
        .collect();
    tasks.sort();
    Ok(tasks)
}

/// The hostnames of the active agents in `master`'s `/master/slaves`, asked from `from`.
async fn active_agents(from: &Machine, master: &Machine) -> Result<Vec<String>> {
    let url = format!("http://{}:5050/master/slaves", master.ip());
    let v = from.get_json(&url).await?;
    let slaves = v["slaves"]
        .as_array()
        .ok_or_else(|| anyhow!("no slaves array in {v}"))?;
    Ok(slaves
        .iter()
        .filter(|s| s["active"].as_bool().unwrap_or(true))
        .map(|s| s["hostname"].as_str().unwrap_or("?").to_owned())
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn ansible_converges_one_master_and_two_agents_and_a_rerun_changes_nothing() -> Result<()> {
    let bin = step("ansible virtualenv", ansible_bin()).await?;
    std::fs::create_dir_all(work_dir(""))?;
    let _ = std::fs::remove_file(log_path());
    let image = step("node image", NodeImage::ensure()).await?;
    let deb = step("package", deb()).await?;
    let net = Net::create("ansible").await?;
    let mut machines = step(
        "3 machines",
        Machine::start_all(&net, &["master1", "agent1", "agent2"], &image),
    )
    .await?;
    let agents = machines.split_off(1);
    let master = machines.pop().context("no master machine")?;

    let work = tempfile::tempdir()?;
    let inv = work.path().join("inventory.ini");
    std::fs::write(&inv, inventory(&master, &agents, &deb))?;

    let first = step("first converge", converge(&bin, &inv, work.path())).await;
    let first = master.with_journal(MASTER_UNITS, first).await?;
    ensure!(first.len() == 3, "a recap of 3 hosts expected: {first:?}");
    ensure!(
        first.iter().all(|(_, changed)| *changed > 0),
        "the first run changes every host: {first:?}"
    );

    let registered = step(
        "both agents registered",
        wait_until(
            "2 active agents in /master/slaves",
            REGISTER_TIMEOUT,
            async || -> Result<Vec<String>> {
                let mut active = active_agents(&agents[0], &master).await?;
                active.sort();
                ensure!(active == ["agent1", "agent2"], "active agents: {active:?}");
                Ok(active)
            },
        ),
    )
    .await;
    master
        .with_journal(&["capstan-master.service"], registered)
        .await?;

    let running = step("a task runs on each agent", async {
        post_app(&agents[0], &master).await?;
        wait_until(
            &format!("2 running tasks of {APP}"),
            REGISTER_TIMEOUT,
            async || -> Result<Vec<(String, String)>> {
                let tasks = running_tasks(&agents[0], &master).await?;
                let hosts: std::collections::BTreeSet<&str> =
                    tasks.iter().map(|(_, h)| h.as_str()).collect();
                ensure!(tasks.len() == 2 && hosts.len() == 2, "running: {tasks:?}");
                Ok(tasks)
            },
        )
        .await
    })
    .await;
    let running = master
        .with_journal(&["capstan-apps.service", "capstan-master.service"], running)
        .await?;

    let second = step("second converge", converge(&bin, &inv, work.path())).await?;
    ensure!(second.len() == 3, "a recap of 3 hosts expected: {second:?}");
    ensure!(
        second.iter().all(|(_, changed)| *changed == 0),
        "a second run changes nothing: {second:?}"
    );
    let after = running_tasks(&agents[0], &master).await?;
    ensure!(
        after == running,
        "the second converge disturbed the tasks: {running:?} before, {after:?} after"
    );

    // The upgrade run: one node at a time (site.yml), to the newer package.
    let newer = step("newer package (revision 2)", newer_deb(&deb, 2)).await?;
    std::fs::write(&inv, inventory(&master, &agents, &newer))?;
    let upgrade = step("upgrade converge", converge(&bin, &inv, work.path())).await;
    let upgrade = master.with_journal(MASTER_UNITS, upgrade).await?;
    ensure!(
        upgrade.len() == 3 && upgrade.iter().all(|(_, changed)| *changed > 0),
        "the upgrade run changes every host: {upgrade:?}"
    );
    for m in std::iter::once(&master).chain(&agents) {
        let version = m
            .exec_ok(&["dpkg-query", "-W", "-f=${Version}", "capstan"])
            .await?;
        ensure!(
            version.trim().ends_with("-2"),
            "{} runs capstan {version} after the upgrade, not revision 2",
            m.name()
        );
    }
    let back = step("agents and tasks back after the upgrade", async {
        wait_until(
            &format!("2 active agents and 2 running tasks of {APP}"),
            REGISTER_TIMEOUT,
            async || -> Result<()> {
                let mut active = active_agents(&agents[0], &master).await?;
                active.sort();
                ensure!(active == ["agent1", "agent2"], "active agents: {active:?}");
                let tasks = running_tasks(&agents[0], &master).await?;
                let hosts: std::collections::BTreeSet<&str> =
                    tasks.iter().map(|(_, h)| h.as_str()).collect();
                ensure!(tasks.len() == 2 && hosts.len() == 2, "running: {tasks:?}");
                Ok(())
            },
        )
        .await
    })
    .await;
    master
        .with_journal(&["capstan-master.service", "capstan-apps.service"], back)
        .await?;

    net.cleanup().await?;
    Ok(())
}

#[test]
fn the_recap_gives_every_hosts_changed_count() {
    let out = "PLAY [x]\nok: [a]\n\nPLAY RECAP *****\n\
               a : ok=5 changed=2 unreachable=0 failed=0\n\
               b : ok=4 changed=0 unreachable=0 failed=0\n";
    assert_eq!(
        recap_changed(out),
        [("a".to_owned(), 2), ("b".to_owned(), 0)]
    );
}
