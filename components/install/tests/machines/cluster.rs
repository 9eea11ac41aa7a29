//! A real cluster installed the way an operator would: `install.sh --init` on the first master,
//! the one line (`curl -fsSL http://<master>/install.sh | sh -s -- --role agent --join <token>`)
//! on every other node, then seed 001's Redis app, failure drills, a harmless re-run, refused
//! tokens and a purge. Every HTTP(S) request to port 80/443 of a master goes through its router
//! (the bootstrap server behind it on loopback); one step uses the router as the `dcos` CLI
//! does: log in as the first administrator, then call the Mesos API with the token; another
//! searches the installed catalog (capstan-catalog.service) through the router with it.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use capstan_testkit::machines::{Machine, Net, NodeImage};
use capstan_testkit::wait_until;
use serde_json::Value;

use crate::common::{
    AGENT_UNITS, JOIN_TIMEOUT, MASTER_UNITS, all_active, deb, dig, install_with_one_line,
    json_from, note, one_line, repo_root, step, str_at, token_for_other_ca, token_id, upgrade_deb,
};
use crate::package::assert_purged;

/// Agents in both scenarios.
const AGENTS: usize = 2;
/// Masters in the HA scenario (the issue's 3; the first scenario has one).
const HA_MASTERS: usize = 3;

/// What `install.sh --init --json` printed: the facts of the new cluster.
struct Init {
    /// The agents' token, chosen before the cluster existed (`--agent-token`), in the short
    /// form the machines were given.
    agent_short: String,
    agent_token: String,
    master_token: String,
    admin_uid: String,
    admin_password: String,
}

/// `install.sh --init --package /root/capstan.deb --agent-token <short> --json` on the first
/// master: the agents' token is chosen beforehand, as Terraform and VM user-data do.
async fn init_first_master(master: &Machine) -> Result<Init> {
    let short = capstan_install::token::ShortToken::generate();
    let deb = deb().await?;
    master.copy_in(&deb, "/root/capstan.deb").await?;
    master
        .copy_in(
            &repo_root().join("packaging/install.sh"),
            "/root/install.sh",
        )
        .await?;
    let out = master
        .sh(&format!(
            "sh /root/install.sh --init --package /root/capstan.deb --agent-token {short} --json"
        ))
        .await;
    let out = master.with_journal(MASTER_UNITS, out).await?;
    let facts = json_from(&out)?;
    for key in ["url", "cluster_id", "ca_fingerprint"] {
        str_at(&facts, &[key])?;
    }
    str_at(&facts, &["admin", "uid"])?;
    str_at(&facts, &["admin", "password"])?;
    let agent_token = str_at(&facts, &["tokens", "agent"])?.to_owned();
    let fingerprint = str_at(&facts, &["ca_fingerprint"])?;
    ensure!(
        agent_token == short.pin(fingerprint).to_string(),
        "cluster init did not take the preset agent token: it printed {agent_token}"
    );
    Ok(Init {
        agent_short: short.to_string(),
        agent_token,
        master_token: str_at(&facts, &["tokens", "master"])?.to_owned(),
        admin_uid: str_at(&facts, &["admin", "uid"])?.to_owned(),
        admin_password: str_at(&facts, &["admin", "password"])?.to_owned(),
    })
}

/// Waits until `master`'s `/master/slaves` lists `n` active agents; returns their hostnames.
async fn wait_agents(from: &Machine, master: &Machine, n: usize) -> Result<Vec<String>> {
    let url = format!("http://{}:5050/master/slaves", master.ip());
    let r = wait_until(
        &format!("{n} agents in {url}"),
        JOIN_TIMEOUT,
        async || -> Result<Vec<String>> {
            let v = from.get_json(&url).await?;
            let slaves = v["slaves"]
                .as_array()
                .ok_or_else(|| anyhow!("no slaves array: {v}"))?;
            let active: Vec<String> = slaves
                .iter()
                .filter(|s| s["active"].as_bool().unwrap_or(true))
                .map(|s| s["hostname"].as_str().unwrap_or("?").to_owned())
                .collect();
            ensure!(
                active.len() == n,
                "{} active agents: {active:?}",
                active.len()
            );
            Ok(active)
        },
    )
    .await;
    master.with_journal(&["capstan-master.service"], r).await
}

/// Seed 001's call, with the app named `redis`, posted from `from` to `master`'s apps API.
async fn post_redis(from: &Machine, master: &Machine, id: &str, instances: usize) -> Result<()> {
    let body = serde_json::json!({
        "id": id, "instances": instances.to_string(), "mem": "64", "cpus": "0.5",
        "executor": "/var/lib/mesos/executors/docker", "cmd": "capstan/redis"
    });
    let url = format!("http://{}:8080/v1/apps/start", master.ip());
    let code = from.post_json(&url, &body).await?;
    ensure!(code == 204, "POST {url} answered {code}");
    Ok(())
}

/// Waits until `/v1/endpoints` on `master` lists `instances` endpoints of `id`; returns them.
async fn wait_endpoints(
    from: &Machine,
    master: &Machine,
    id: &str,
    instances: usize,
) -> Result<Vec<String>> {
    let url = format!("http://{}:8080/v1/endpoints", master.ip());
    wait_until(
        &format!("{instances} endpoints of {id}"),
        Duration::from_secs(120),
        async || -> Result<Vec<String>> {
            let body = from
                .exec_ok(&["curl", "-fsS", "--max-time", "10", &url])
                .await?;
            let line = body
                .lines()
                .find(|l| l.split_whitespace().next() == Some(id))
                .ok_or_else(|| anyhow!("no {id} line in {body:?}"))?;
            let endpoints: Vec<String> =
                line.split_whitespace().skip(2).map(str::to_owned).collect();
            ensure!(endpoints.len() == instances, "endpoints: {line}");
            Ok(endpoints)
        },
    )
    .await
}

/// The Redis app runs and answers, and `dig @master <id>.marathon.mesos` from `from` gives the
/// agents it runs on.
async fn redis_runs_and_resolves(
    from: &Machine,
    master: &Machine,
    agents: &[&Machine],
    id: &str,
    instances: usize,
) -> Result<()> {
    let endpoints = wait_endpoints(from, master, id, instances).await;
    let endpoints = with_agent_journals(agents, endpoints).await?;
    let (host, port) = endpoints[0]
        .rsplit_once(':')
        .with_context(|| format!("endpoint {:?} is not host:port", endpoints[0]))?;
    let set = from
        .exec_ok(&["redis-cli", "-h", host, "-p", port, "SET", "x", "7"])
        .await?;
    ensure!(set.trim() == "OK", "redis SET answered {set:?}");
    let name = format!("{id}.marathon.mesos");
    let agent_ips: Vec<String> = agents.iter().map(|a| a.ip().to_string()).collect();
    // Until every record names an agent of `agents` (a drained agent's record ages out).
    let ips = wait_until(
        &format!("dig @{} {name} naming only {agent_ips:?}", master.ip()),
        Duration::from_secs(30),
        async || -> Result<Vec<String>> {
            let ips = dig(from, &master.ip().to_string(), &[&name]).await?;
            ensure!(!ips.is_empty(), "no A records");
            ensure!(
                ips.iter().all(|ip| agent_ips.contains(ip)),
                "{name} resolves to {ips:?}, not only to agents {agent_ips:?}"
            );
            Ok(ips)
        },
    )
    .await;
    master.with_journal(&["capstan-dns.service"], ips).await?;
    Ok(())
}

async fn with_agent_journals<T>(agents: &[&Machine], r: Result<T>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(e) => {
            let mut message = format!("{e:#}");
            for a in agents {
                message.push('\n');
                message.push_str(&a.journal("capstan-agent.service").await);
            }
            Err(anyhow!(message))
        }
    }
}

/// `kill -9` of UNIT's main process on `node`: systemd restarts it (NRestarts grows, active).
async fn killed_daemon_is_restarted(node: &Machine, unit: &str) -> Result<()> {
    let before = node.unit_restarts(unit).await?;
    let killed = node.kill_unit_main(unit).await?;
    let r = wait_until(
        &format!("{unit} restarted by systemd"),
        Duration::from_secs(60),
        async || -> Result<()> {
            let n = node.unit_restarts(unit).await?;
            let state = node.unit_state(unit).await?;
            let pid = node.unit_property(unit, "MainPID").await?;
            ensure!(
                n > before && state == "active" && pid != "0" && pid != killed.to_string(),
                "NRestarts {n} (was {before}), {state}, MainPID {pid} (killed {killed})"
            );
            Ok(())
        },
    )
    .await;
    node.with_journal(&[unit], r).await
}

/// Re-running the one line on a joined agent exits 0 and changes nothing: same config, state
/// and certificate, and the agent was not restarted.
async fn rerun_changes_nothing(agent: &Machine, master: &Machine, token: &str) -> Result<()> {
    // The node's identity and config: every file the join wrote (the design names
    // cluster/cluster.json; whatever is under cluster/ counts).
    const FILES: &str = "find /etc/capstan /var/lib/capstan/cluster /var/lib/capstan/pki \
                         -type f | sort | xargs sha256sum";
    let before = agent.sh(FILES).await?;
    let pid = agent
        .unit_property("capstan-agent.service", "MainPID")
        .await?;
    install_with_one_line(agent, master, "agent", token, AGENT_UNITS).await?;
    let after = agent.sh(FILES).await?;
    ensure!(
        before == after,
        "the re-run changed files:\nbefore:\n{before}\nafter:\n{after}"
    );
    let pid_after = agent
        .unit_property("capstan-agent.service", "MainPID")
        .await?;
    ensure!(
        pid == pid_after,
        "the re-run restarted the agent (MainPID {pid} -> {pid_after})"
    );
    all_active(agent, AGENT_UNITS).await
}

/// The one line with `token` fails on `node`, saying something that contains one of `words`
/// (case-insensitive). Returns the line that says so.
async fn refused(node: &Machine, master: &Machine, token: &str, words: &[&str]) -> Result<String> {
    let out = node.sh_output(&one_line(master, "agent", token)).await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !out.status.success(),
        "the one line with token {token:?} succeeded:\n{text}"
    );
    // The line that says why, for the suite's log.
    let why = text.lines().find(|l| {
        let l = l.to_lowercase();
        words.iter().any(|w| l.contains(&w.to_lowercase()))
    });
    match why {
        Some(line) => Ok(line.to_owned()),
        None => Err(anyhow!(
            "the refusal of {token:?} does not say {words:?}:\n{text}"
        )),
    }
}

/// References to every machine of `machines`.
fn all(machines: &[Machine]) -> Vec<&Machine> {
    machines.iter().collect()
}

/// The ids of app `id`'s running tasks, sorted.
async fn running_tasks(from: &Machine, master: &Machine, id: &str) -> Result<Vec<String>> {
    let v = from
        .get_json(&format!("http://{}:8080/v2/apps/{id}/tasks", master.ip()))
        .await?;
    let mut ids: Vec<String> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

/// `capstan cluster upgrade --package FILE` on the master installs the next package revision
/// on the master, then on each agent, one node at a time: every unit comes back, the node
/// configs are kept, and the app's tasks are the same tasks, still running. A second run
/// finds nothing to do.
/// With several masters it runs on the first; coord's quorum is kept throughout.
async fn upgrade_keeps_tasks(masters: &[Machine], agents: &[Machine], id: &str) -> Result<()> {
    let master = &masters[0];
    let deb = upgrade_deb().await?;
    let before = running_tasks(&agents[0], master, id).await?;
    ensure!(
        !before.is_empty(),
        "no running {id} tasks before the upgrade"
    );
    let nodes: Vec<(&Machine, &[&str])> = masters
        .iter()
        .map(|m| (m, MASTER_UNITS))
        .chain(agents.iter().map(|a| (a, AGENT_UNITS)))
        .collect();
    let mut configs = Vec::new();
    for (node, _) in &nodes {
        configs.push(node.sh("sha256sum /etc/capstan/config.yaml").await?);
    }
    master.copy_in(&deb, "/root/capstan-upgrade.deb").await?;
    let out = master
        .sh("capstan cluster upgrade --package /root/capstan-upgrade.deb 2>&1")
        .await;
    let mut journals: Vec<&str> = MASTER_UNITS.to_vec();
    journals.push("capstan-upgrade.service");
    let out = master.with_journal(&journals, out).await;
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            let mut message = format!("{e:#}");
            for a in agents {
                message.push('\n');
                message.push_str(&a.journal("capstan-upgrade.service").await);
                message.push_str(&a.journal("capstan-bootstrap.service").await);
            }
            return Err(anyhow!(message));
        }
    };
    note("cluster upgrade", out.lines().last().unwrap_or(""));
    ensure!(
        out.contains(&format!("Done: {} node(s) upgraded", nodes.len())),
        "the upgrade did not upgrade every node:\n{out}"
    );
    for ((node, units), config) in nodes.iter().zip(&configs) {
        let installed = node.sh("dpkg-query -W -f='${Version}' capstan").await?;
        ensure!(
            installed.trim().ends_with("-2"),
            "{} runs {installed:?} after the upgrade",
            node.name()
        );
        all_active(node, units).await?;
        let after = node.sh("sha256sum /etc/capstan/config.yaml").await?;
        ensure!(
            *config == after,
            "the upgrade of {} changed its config",
            node.name()
        );
    }
    let again = master
        .sh("capstan cluster upgrade --package /root/capstan-upgrade.deb 2>&1")
        .await?;
    ensure!(
        again.contains(&format!(
            "Done: 0 node(s) upgraded, {} already ran",
            nodes.len()
        )),
        "a second upgrade run was not a no-op:\n{again}"
    );
    master.sh("rm /root/capstan-upgrade.deb").await?;
    wait_agents(&agents[0], master, agents.len()).await?;
    let after = wait_until(
        &format!("the {id} tasks running after the upgrade"),
        Duration::from_secs(60),
        async || -> Result<Vec<String>> {
            let now = running_tasks(&agents[0], master, id).await?;
            ensure!(
                now == before,
                "running {id} tasks {now:?}, before {before:?}"
            );
            Ok(now)
        },
    )
    .await;
    let after = match after {
        Ok(ids) => Ok(ids),
        Err(e) => {
            let url = format!("http://{}:8080/v2/apps/{id}/tasks", master.ip());
            let now = agents[0].sh(&format!("curl -sS --max-time 10 {url}")).await;
            Err(e.context(format!("before: {before:?}; {url} now answers {now:?}")))
        }
    };
    with_agent_journals(&agents.iter().collect::<Vec<_>>(), after).await?;
    Ok(())
}

/// `capstan cluster upgrade` on `on` while a master is powered off: it stops at the first
/// master (unreachable, or the quorum rule), fails with a message saying where, and no node
/// was changed.
async fn upgrade_stops_without_quorum(
    on: &Machine,
    masters: &[Machine],
    agents: &[Machine],
) -> Result<()> {
    let deb = upgrade_deb().await?;
    on.copy_in(&deb, "/root/capstan-upgrade.deb").await?;
    let out = on
        .sh_output("capstan cluster upgrade --package /root/capstan-upgrade.deb 2>&1")
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        !out.status.success(),
        "the upgrade went on with a master off:\n{text}"
    );
    let why = text
        .lines()
        .find(|l| l.contains("stopped at"))
        .with_context(|| format!("the refusal does not say where it stopped:\n{text}"))?;
    note("upgrade with a master off", why);
    ensure!(
        !text.contains("Upgrading master") && !text.contains("Upgrading agent"),
        "a node was upgraded with a master off:\n{text}"
    );
    for node in masters[1..].iter().chain(agents) {
        let v = node.sh("dpkg-query -W -f='${Version}' capstan").await?;
        ensure!(v.trim().ends_with("-1"), "{} runs {v:?}", node.name());
    }
    on.sh("rm /root/capstan-upgrade.deb").await?;
    Ok(())
}

/// Wrong tokens are refused with a clear message on a fresh node: a malformed one and one of
/// another CA before anything is installed, a revoked one at join.
async fn bad_tokens_are_refused(
    fresh: &Machine,
    master: &Machine,
    agent_token: &str,
) -> Result<()> {
    let malformed = refused(fresh, master, "not-a-token", &["token"]).await?;
    note("malformed token", &malformed);
    let other_ca = refused(
        fresh,
        master,
        &token_for_other_ca(agent_token)?,
        &[
            "another cluster",
            "fingerprint",
            "does not match",
            "mismatch",
        ],
    )
    .await?;
    note("token of another CA", &other_ca);
    let installed = fresh.exec(&["test", "-e", "/usr/bin/capstan"]).await?;
    ensure!(
        !installed.status.success(),
        "a refused token still installed the package"
    );
    let revoked = master
        .exec_ok(&["capstan", "cluster", "token", "create", "--role", "agent"])
        .await?;
    let revoked = revoked.trim().to_owned();
    master
        .exec_ok(&["capstan", "cluster", "token", "revoke", token_id(&revoked)?])
        .await?;
    let revoked = refused(fresh, master, &revoked, &["revoked"]).await?;
    note("revoked token", &revoked);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_master_and_two_agents_install_with_the_one_line() -> Result<()> {
    let (image, _, _) = step("node image and the .debs", async {
        tokio::try_join!(NodeImage::ensure(), deb(), upgrade_deb())
    })
    .await?;
    let net = step("network", Net::create("install")).await?;
    let mut names = vec!["master1".to_owned()];
    names.extend((1..=AGENTS).map(|i| format!("agent{i}")));
    names.push("fresh1".to_owned());
    let mut machines = step(
        "boot the machines",
        Machine::start_all(&net, &names, &image),
    )
    .await?;
    let fresh = machines.pop().context("no fresh machine")?;
    let master = machines.remove(0);
    let agents = machines;

    let init = step("install.sh --init on master1", init_first_master(&master)).await?;
    step(
        "every master unit is active",
        all_active(&master, MASTER_UNITS),
    )
    .await?;
    // One agent joins with the short token it was given before the cluster existed (the
    // master proves it knows the token), the other with the full one init printed.
    for (agent, token) in agents.iter().zip([&init.agent_short, &init.agent_token]) {
        step(&format!("the one line on {}", agent.name()), async {
            install_with_one_line(agent, &master, "agent", token, AGENT_UNITS).await?;
            all_active(agent, AGENT_UNITS).await
        })
        .await?;
    }
    step(
        "master1 lists the agents",
        wait_agents(&agents[0], &master, AGENTS),
    )
    .await?;
    let token = step(
        "dcos-style access through the router: login, then the Mesos state",
        dcos_through_the_router(&agents[0], &master, &init, AGENTS),
    )
    .await?;
    step(
        "the catalog through the router: /capabilities, then package search",
        catalog_through_the_router(&agents[0], &master, &token),
    )
    .await?;
    step("seed 001's Redis runs and resolves from an agent", async {
        post_redis(&agents[0], &master, "redis", AGENTS).await?;
        redis_runs_and_resolves(&agents[0], &master, &all(&agents), "redis", AGENTS).await
    })
    .await?;
    step(
        "kill -9 capstan-master: systemd restarts it",
        killed_daemon_is_restarted(&master, "capstan-master.service"),
    )
    .await?;
    step(
        "the agents register again after the master restart",
        wait_agents(&agents[0], &master, AGENTS),
    )
    .await?;
    step(
        "re-running the installer on a joined agent changes nothing",
        rerun_changes_nothing(&agents[0], &master, &init.agent_token),
    )
    .await?;
    step(
        "bad tokens are refused",
        bad_tokens_are_refused(&fresh, &master, &init.agent_token),
    )
    .await?;
    step(
        "the refused node did not join",
        wait_agents(&agents[0], &master, AGENTS),
    )
    .await?;
    step(
        "capstan cluster upgrade, node by node, with Redis running loses no task",
        upgrade_keeps_tasks(std::slice::from_ref(&master), &agents, "redis"),
    )
    .await?;
    step(
        "capstan-uninstall drains an agent, then leaves no file behind",
        async {
            // Uninstall an agent that runs a Redis instance, so the drain has work to do.
            let tasks = agents[0]
                .get_json(&format!("http://{}:8080/v2/apps/redis/tasks", master.ip()))
                .await?;
            let host = tasks["tasks"][0]["host"].as_str().unwrap_or("agent1");
            let victim = agents
                .iter()
                .find(|a| a.name().ends_with(host))
                .unwrap_or(&agents[0]);
            let rest: Vec<&Machine> = agents
                .iter()
                .filter(|a| a.name() != victim.name())
                .collect();
            victim.exec_ok(&["capstan-uninstall", "--purge"]).await?;
            assert_purged(victim).await?;
            wait_agents(rest[0], &master, AGENTS - 1).await?;
            // The drained agent's Redis instances were started again on the agents that remain.
            redis_runs_and_resolves(rest[0], &master, &rest, "redis", AGENTS).await
        },
    )
    .await?;
    drop(init.master_token);
    Ok(())
}

/// The issue's full shape: 3 masters (two join with the one line and a master token) and 2
/// agents; powering off a master leaves the cluster working.
#[tokio::test(flavor = "multi_thread")]
async fn three_masters_join_and_the_cluster_survives_a_master_power_off() -> Result<()> {
    let (image, _, _) = step("node image and the .debs", async {
        tokio::try_join!(NodeImage::ensure(), deb(), upgrade_deb())
    })
    .await?;
    let net = step("network", Net::create("ha")).await?;
    let mut names: Vec<String> = (1..=HA_MASTERS).map(|i| format!("master{i}")).collect();
    names.extend((1..=AGENTS).map(|i| format!("agent{i}")));
    let mut machines = step(
        "boot the machines",
        Machine::start_all(&net, &names, &image),
    )
    .await?;
    let agents = machines.split_off(HA_MASTERS);
    let masters = machines;

    let init = step(
        "install.sh --init on master1",
        init_first_master(&masters[0]),
    )
    .await?;
    step(
        "every unit is active on master1",
        all_active(&masters[0], MASTER_UNITS),
    )
    .await?;
    for m in &masters[1..] {
        step(&format!("the one line on {} (master)", m.name()), async {
            install_with_one_line(m, &masters[0], "master", &init.master_token, MASTER_UNITS)
                .await?;
            all_active(m, MASTER_UNITS).await
        })
        .await?;
    }
    step(
        "coord has 3 healthy voters",
        coord_voters(&agents[0], &masters[0], HA_MASTERS),
    )
    .await?;
    step("capstan cluster status on a joined master", async {
        let text = masters[1]
            .exec_ok(&["capstan", "cluster", "status"])
            .await?;
        let voters = format!("coord     {HA_MASTERS} member(s), {HA_MASTERS} voting, leader");
        for line in ["Security  permissive", " (master, ", &voters] {
            ensure!(text.contains(line), "no {line:?} in:\n{text}");
        }
        Ok(())
    })
    .await?;
    for agent in &agents {
        step(&format!("the one line on {}", agent.name()), async {
            install_with_one_line(agent, &masters[1], "agent", &init.agent_token, AGENT_UNITS)
                .await?;
            all_active(agent, AGENT_UNITS).await
        })
        .await?;
    }
    step(
        "the masters list the agents",
        wait_agents(&agents[0], &masters[1], AGENTS),
    )
    .await?;
    step("seed 001's Redis runs and resolves", async {
        post_redis(&agents[0], &masters[0], "redis", AGENTS).await?;
        redis_runs_and_resolves(&agents[0], &masters[1], &all(&agents), "redis", AGENTS).await
    })
    .await?;
    step("power off master1", masters[0].stop()).await?;
    step("the cluster keeps working without master1", async {
        redis_runs_and_resolves(&agents[0], &masters[1], &all(&agents), "redis", AGENTS).await?;
        wait_agents(&agents[0], &masters[1], AGENTS).await?;
        post_redis(&agents[0], &masters[1], "redis-after", 1).await?;
        redis_runs_and_resolves(&agents[0], &masters[2], &all(&agents), "redis-after", 1).await
    })
    .await?;
    step(
        "with master1 off, capstan cluster upgrade refuses to take another master down",
        upgrade_stops_without_quorum(&masters[1], &masters, &agents),
    )
    .await?;
    step("master1 boots again and rejoins", async {
        masters[0].start_again().await?;
        all_active(&masters[0], MASTER_UNITS).await
    })
    .await?;
    step(
        "/v1/cluster lists 3 masters",
        cluster_lists_masters(&agents[0], &masters[0], HA_MASTERS),
    )
    .await?;
    step(
        "coord has 3 healthy voters again",
        coord_voters(&agents[0], &masters[0], HA_MASTERS),
    )
    .await?;
    step(
        "capstan cluster upgrade: 3 masters one at a time, then the agents; no task lost",
        upgrade_keeps_tasks(&masters, &agents, "redis"),
    )
    .await?;
    replace_a_dead_master(&net, &image, &masters, &agents, &init.master_token).await
}

/// master3 dies for good; a new machine at a new address takes its place: `cluster
/// remove-master` on master1, then the one line on master4, which becomes coord member 4
/// (member 3's id is never given again) and serves the cluster.
async fn replace_a_dead_master(
    net: &Net,
    image: &NodeImage,
    masters: &[Machine],
    agents: &[Machine],
    master_token: &str,
) -> Result<()> {
    let dead = &masters[2];
    step("power off master3 for good", dead.stop()).await?;
    step("capstan cluster remove-master on master1", async {
        let ip = dead.ip().to_string();
        let out = masters[0]
            .exec_ok(&["capstan", "cluster", "remove-master", &ip])
            .await?;
        ensure!(out.contains("coord member 3"), "{out}");
        Ok(())
    })
    .await?;
    let fresh = step("boot master4", Machine::start(net, "master4", image)).await?;
    ensure!(fresh.ip() != dead.ip(), "master4 must have a new address");
    step("the one line on master4 (master)", async {
        install_with_one_line(&fresh, &masters[0], "master", master_token, MASTER_UNITS).await?;
        all_active(&fresh, MASTER_UNITS).await
    })
    .await?;
    step(
        "coord has 3 healthy voters, master4 among them",
        coord_voters(&agents[0], &fresh, HA_MASTERS),
    )
    .await?;
    step(
        "master4 is coord member 4 (capstan coord members, from its node config)",
        async {
            let listed = fresh.exec_ok(&["capstan", "coord", "members"]).await?;
            let line = format!("4 {}:8181 ", fresh.ip());
            ensure!(listed.contains(&line), "no {line:?} in:\n{listed}");
            let status = agents[0]
                .get_json(&format!("http://{}:8181/v1/members", fresh.ip()))
                .await?;
            let addr = format!("{}:8181", fresh.ip());
            let ids: Vec<(u64, String)> = status["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    (
                        m["id"].as_u64().unwrap_or(0),
                        m["addr"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            ensure!(ids.contains(&(4, addr)), "members: {status}");
            ensure!(
                ids.iter().all(|(id, _)| *id != 3),
                "member 3 is gone: {status}"
            );
            Ok(())
        },
    )
    .await?;
    step(
        "/v1/cluster on master4 lists 3 masters",
        cluster_lists_masters(&agents[0], &fresh, HA_MASTERS),
    )
    .await?;
    step("an app posted through master4 runs and resolves", async {
        post_redis(&agents[0], &fresh, "redis-m4", 1).await?;
        redis_runs_and_resolves(&agents[0], &fresh, &all(agents), "redis-m4", 1).await
    })
    .await?;
    fresh.stop().await
}

/// `curl` from `from` to `https://<name>/<path>` on `master`'s router, trusting only the
/// cluster CA (the node's `/var/lib/capstan/pki/ca.pem`) and checking the certificate for
/// `name` (`--resolve` sends it to the master's address). Returns the status and the body.
async fn router_https(
    from: &Machine,
    master: &Machine,
    name: &str,
    path: &str,
    extra: &[&str],
) -> Result<(u16, String)> {
    let url = format!("https://{name}{path}");
    let resolve = format!("{name}:443:{}", master.ip());
    let mut args = vec![
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        "/var/lib/capstan/pki/ca.pem",
        "--resolve",
        &resolve,
        "-w",
        "\n%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = from.exec_ok(&args).await?;
    let (body, code) = out
        .trim_end()
        .rsplit_once('\n')
        .with_context(|| format!("{url}: no status in {out:?}"))?;
    let code = code
        .trim()
        .parse()
        .with_context(|| format!("{url}: status {code:?}"))?;
    Ok((code, body.to_owned()))
}

/// The `dcos` CLI's way in on an installed master: the router's TLS certificate verifies
/// against the cluster CA for the master's address and for `master.mesos` / `leader.mesos`;
/// the Mesos API needs a token (401 `acsjwt` without); the first administrator logs in with
/// the password `cluster init` printed; `GET /mesos/master/state` with the token lists the
/// agents. Returns the token.
async fn dcos_through_the_router(
    from: &Machine,
    master: &Machine,
    init: &Init,
    agents: usize,
) -> Result<String> {
    let ip = master.ip().to_string();
    // A join over plain HTTP is refused whatever the client claims: the router sets
    // X-Forwarded-Proto itself, and the bootstrap server believes it only from loopback.
    let url = format!("http://{ip}/v1/join");
    let code = from
        .exec_ok(&[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "-X",
            "POST",
            "-H",
            "X-Forwarded-Proto: https",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{}",
            &url,
        ])
        .await?;
    ensure!(code.trim() == "403", "POST {url} answered {code}, not 403");
    // The bootstrap server itself listens on the master's loopback only.
    let direct = format!("http://{ip}:8090/v1/cluster");
    let out = from
        .exec(&["curl", "-sS", "--max-time", "5", &direct])
        .await?;
    ensure!(
        !out.status.success(),
        "{direct} answers from {}: the bootstrap server is not on loopback only",
        from.name()
    );
    for name in [ip.as_str(), "master.mesos", "leader.mesos"] {
        let (code, body) =
            router_https(from, master, name, "/dcos-metadata/dcos-version.json", &[]).await?;
        ensure!(
            code == 200,
            "https://{name}/dcos-metadata/dcos-version.json: {code} {body}"
        );
    }
    let (code, body) = router_https(from, master, &ip, "/mesos/master/state", &[]).await?;
    ensure!(
        code == 401,
        "/mesos/master/state without a token answered {code}: {body}"
    );
    let login = serde_json::json!({"uid": init.admin_uid, "password": init.admin_password});
    let login = login.to_string();
    let r = wait_until(
        "the first administrator logs in through the router",
        Duration::from_secs(60),
        async || -> Result<String> {
            let (code, body) = router_https(
                from,
                master,
                &ip,
                "/acs/api/v1/auth/login",
                &[
                    "-X",
                    "POST",
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    &login,
                ],
            )
            .await?;
            ensure!(code == 200, "login answered {code}: {body}");
            let v: Value = serde_json::from_str(&body)?;
            Ok(str_at(&v, &["token"])?.to_owned())
        },
    )
    .await;
    let token = master.with_journal(&["capstan-router.service"], r).await?;
    let auth = format!("Authorization: token={token}");
    let r = wait_until(
        &format!("{agents} agents in /mesos/master/state through the router"),
        Duration::from_secs(60),
        async || -> Result<()> {
            let (code, body) =
                router_https(from, master, &ip, "/mesos/master/state", &["-H", &auth]).await?;
            ensure!(code == 200, "/mesos/master/state answered {code}: {body}");
            let v: Value = serde_json::from_str(&body)?;
            let n = v["slaves"].as_array().map_or(0, Vec::len);
            ensure!(n == agents, "{n} agents in the state: {v}");
            Ok(())
        },
    )
    .await;
    master.with_journal(&["capstan-router.service"], r).await?;
    Ok(token)
}

/// The Cosmos search request and response types (`dcos package search` sends these).
const SEARCH_REQUEST: &str =
    "application/vnd.dcos.package.search-request+json;charset=utf-8;version=v1";
const SEARCH_RESPONSE: &str =
    "application/vnd.dcos.package.search-response+json;charset=utf-8;version=v1";

/// The installed master's catalog as the `dcos` CLI finds it through the router with the
/// administrator's `token`: `/capabilities` names `PACKAGE_MANAGEMENT` (the router lists it
/// only when its `catalog` upstream is configured), and `POST /package/search` answers with
/// the built-in repository's `redis`.
async fn catalog_through_the_router(from: &Machine, master: &Machine, token: &str) -> Result<()> {
    let ip = master.ip().to_string();
    let auth = format!("Authorization: token={token}");
    let (code, body) = router_https(from, master, &ip, "/capabilities", &["-H", &auth]).await?;
    ensure!(code == 200, "/capabilities answered {code}: {body}");
    let caps: Value = serde_json::from_str(&body)?;
    let names: Vec<&str> = caps["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    ensure!(
        names.contains(&"PACKAGE_MANAGEMENT"),
        "/capabilities names no PACKAGE_MANAGEMENT: {caps}"
    );
    let content_type = format!("Content-Type: {SEARCH_REQUEST}");
    let accept = format!("Accept: {SEARCH_RESPONSE}");
    let r = wait_until(
        "package search lists redis through the router",
        Duration::from_secs(60),
        async || -> Result<()> {
            let (code, body) = router_https(
                from,
                master,
                &ip,
                "/package/search",
                &[
                    "-X",
                    "POST",
                    "-H",
                    &auth,
                    "-H",
                    &content_type,
                    "-H",
                    &accept,
                    "-d",
                    r#"{"query":"redis"}"#,
                ],
            )
            .await?;
            ensure!(code == 200, "/package/search answered {code}: {body}");
            let v: Value = serde_json::from_str(&body)?;
            let found = v["packages"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "redis"));
            ensure!(found, "no redis in the search: {v}");
            Ok(())
        },
    )
    .await;
    master
        .with_journal(&["capstan-catalog.service", "capstan-router.service"], r)
        .await
}

/// `GET /v1/cluster` on `master` lists `n` masters.
async fn cluster_lists_masters(from: &Machine, master: &Machine, n: usize) -> Result<()> {
    let url = format!("http://{}/v1/cluster", master.ip());
    let r = wait_until(
        &format!("{n} masters in {url}"),
        Duration::from_secs(60),
        async || -> Result<()> {
            let v: Value = from.get_json(&url).await?;
            let got = v["masters"].as_array().map_or(0, Vec::len);
            ensure!(got == n, "{got} masters: {v}");
            Ok(())
        },
    )
    .await;
    let r = match r {
        Ok(()) => Ok(()),
        // wait_until keeps only the last check's error: quote what the API says now.
        Err(e) => {
            let now = from
                .exec_ok(&["curl", "-sS", "--max-time", "10", &url])
                .await
                .unwrap_or_else(|e| format!("{e:#}"));
            Err(e.context(format!("{url} now answers {now}")))
        }
    };
    master.with_journal(&["capstan-bootstrap.service"], r).await
}

/// coord's `/v1/status` on `master` shows `n` healthy voters.
async fn coord_voters(from: &Machine, master: &Machine, n: usize) -> Result<()> {
    let url = format!("http://{}:8181/v1/status", master.ip());
    let r = wait_until(
        &format!("{n} healthy coord voters in {url}"),
        Duration::from_secs(60),
        async || -> Result<()> {
            let status = from.get_json(&url).await?;
            let healthy = status["members"].as_array().map_or(0, |m| {
                m.iter()
                    .filter(|m| m["healthy"] == true && m["voter"] == true)
                    .count()
            });
            ensure!(healthy == n, "{healthy} healthy voters: {status}");
            Ok(())
        },
    )
    .await;
    master
        .with_journal(&["capstan-coord.service", "capstan-bootstrap.service"], r)
        .await
}
