//! l4lb on a dev cluster with real Docker: every node (the master and both agents) runs
//! `capstan daemon l4lb` with the userspace data plane on the cluster's loopback VIP range
//! (`127.<net>.128.0/17`, local by definition: nothing reaches the network), and the
//! master's `dns` serves the same names. Tasks are `capstan/http` containers whose page is
//! their own task id, so every connection through a VIP says which backend took it.
//!
//! One cluster runs the scenarios in order: a named VIP over three instances resolved by
//! asking capstan's DNS server and reached at the address it gives, connections spread over
//! every backend; an instance killed → it gets no new connection and the VIP still answers;
//! two apps (host and bridge networking) sharing one VIP; an IP VIP; an l4lb killed with
//! SIGKILL → restarted by the supervisor, it rebuilds the whole table from the master's
//! stream; scaled to zero → connections are refused at once, and so are connections to an
//! address of the range no VIP has.
//!
//! Every wait polls a condition with a deadline; nothing asserts a duration.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use capstan_testkit::wait_until;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{DevCluster, ONE_AT_A_TIME, dig, text};

/// Deadline of a task start (image already built: `make images`) and of a cluster-wide change.
const START: Duration = Duration::from_secs(120);
const CHANGE: Duration = Duration::from_secs(30);
/// Bound of one connection through a VIP: a VIP that hangs fails the test instead of stalling it.
const CONNECT: Duration = Duration::from_secs(10);

/// A `capstan/http` command that serves the task's id on `port` (`$PORT0` for host networking).
fn serve_task_id(port: &str) -> String {
    format!(
        "mkdir -p /tmp/w && echo \"$MESOS_TASK_ID\" > /tmp/w/index.html && exec httpd -f -p {port} -h /tmp/w"
    )
}

/// A host-networking app whose one port carries `labels`.
fn host_app(id: &str, instances: u32, labels: Value) -> Value {
    json!({
        "id": id, "instances": instances, "cpus": 0.05, "mem": 16,
        "cmd": serve_task_id("$PORT0"),
        "portDefinitions": [{"port": 0, "protocol": "tcp", "labels": labels}],
        "container": {"type": "DOCKER", "docker": {"image": "capstan/http"}},
    })
}

struct Cluster {
    dev: DevCluster,
    http: reqwest::Client,
    /// `http://<master>:8080`.
    apps: String,
    master: String,
}

impl Cluster {
    async fn deploy(&self, app: &Value) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/v2/apps", self.apps))
            .json(app)
            .send()
            .await?;
        ensure!(
            resp.status().as_u16() == 201,
            "deploying {}: {} {}",
            app["id"],
            resp.status(),
            resp.text().await?
        );
        Ok(())
    }

    /// The app's running tasks: task id → `host:port` of its first port.
    async fn running(&self, app: &str) -> Option<BTreeMap<String, SocketAddr>> {
        let v: Value = self
            .http
            .get(format!("{}/v2/apps{app}/tasks", self.apps))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let mut out = BTreeMap::new();
        for t in v["tasks"].as_array()? {
            if t["state"] != "TASK_RUNNING" {
                continue;
            }
            let ip: IpAddr = t["host"].as_str()?.parse().ok()?;
            let port = u16::try_from(t["ports"][0].as_u64()?).ok()?;
            out.insert(t["id"].as_str()?.to_owned(), SocketAddr::new(ip, port));
        }
        Some(out)
    }

    /// Waits until `app` runs exactly `n` tasks.
    async fn wait_running(
        &self,
        app: &str,
        n: usize,
    ) -> anyhow::Result<BTreeMap<String, SocketAddr>> {
        wait_until(&format!("{n} running tasks of {app}"), START, async || {
            self.running(app).await.filter(|t| t.len() == n)
        })
        .await
        .with_context(|| self.dev.logs())
    }

    /// Every node's l4lb API, `http://<node>:62080`, from `capstan dev status --json`.
    fn l4lbs(&self) -> anyhow::Result<Vec<String>> {
        let status = self.dev.status()?;
        let mut out = Vec::new();
        for node in status["nodes"].as_array().context("nodes")? {
            for d in node["daemons"].as_array().context("daemons")? {
                if d["name"] == "l4lb" {
                    out.push(d["endpoint"].as_str().context("endpoint")?.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// One node's `/v1/vips` as `vip → backends`, if its data plane has applied it too (no
    /// table change pending in `/metrics`).
    async fn vips_applied(&self, l4lb: &str) -> Option<BTreeMap<String, BTreeSet<SocketAddr>>> {
        let v: Value = self
            .http
            .get(format!("{l4lb}/v1/vips"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let metrics = self
            .http
            .get(format!("{l4lb}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        if metric(&metrics, "capstan_l4lb_rules_pending")? != 0.0 {
            return None;
        }
        let mut out = BTreeMap::new();
        for vip in v.as_array()? {
            let mut backends = BTreeSet::new();
            for b in vip["backend"].as_array()? {
                let ip: IpAddr = b["ip"].as_str()?.parse().ok()?;
                backends.insert(SocketAddr::new(
                    ip,
                    u16::try_from(b["port"].as_u64()?).ok()?,
                ));
            }
            out.insert(vip["vip"].as_str()?.to_owned(), backends);
        }
        Some(out)
    }

    /// Waits until every node's l4lb has applied a table in which `vip` has exactly `backends`
    /// (`None`: the VIP is gone).
    async fn wait_everywhere(
        &self,
        vip: &str,
        backends: Option<BTreeSet<SocketAddr>>,
    ) -> anyhow::Result<()> {
        let nodes = self.l4lbs()?;
        ensure!(nodes.len() == 3, "an l4lb on every node: {nodes:?}");
        for node in &nodes {
            wait_until(
                &format!("{vip} → {backends:?} on {node}"),
                CHANGE,
                async || {
                    let vips = self.vips_applied(node).await?;
                    (vips.get(vip).cloned() == backends).then_some(())
                },
            )
            .await
            .with_context(|| self.dev.logs())?;
        }
        Ok(())
    }

    /// The address the master's DNS server gives `name`.
    async fn resolve(&self, name: &str) -> anyhow::Result<IpAddr> {
        let master = self.master.clone();
        let name = name.to_owned();
        wait_until(&format!("an A record for {name}"), CHANGE, async || {
            let (m, n) = (master.clone(), name.clone());
            let a = tokio::task::spawn_blocking(move || dig(&m, &[&n]))
                .await
                .ok()?
                .ok()?;
            a.first()?.parse().ok()
        })
        .await
    }
}

/// The value of an unlabelled series in Prometheus text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// One HTTP/1.0 request on a new connection through `vip`: the task id the backend served.
async fn who(vip: SocketAddr) -> anyhow::Result<String> {
    let exchange = async {
        let mut s = TcpStream::connect(vip).await?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n").await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(text(&buf))
    };
    let reply = tokio::time::timeout(CONNECT, exchange)
        .await
        .with_context(|| format!("{vip} hung"))??;
    let Some((head, body)) = reply.split_once("\r\n\r\n") else {
        bail!("{vip} answered {reply:?}");
    };
    ensure!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{vip}: {head}"
    );
    Ok(body.trim().to_owned())
}

/// `n` connections through `vip`: how many each task id took.
async fn spread(vip: SocketAddr, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(who(vip).await?).or_insert(0) += 1;
    }
    Ok(seen)
}

/// Waits until a connection to `addr` is refused (or closed before a byte) without hanging.
async fn wait_refused(addr: SocketAddr) -> anyhow::Result<()> {
    wait_until(
        &format!("connections to {addr} refused"),
        CHANGE,
        async || {
            let attempt = tokio::time::timeout(CONNECT, async {
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
                let mut buf = [0u8; 1];
                s.read(&mut buf).await
            })
            .await
            .ok()?;
            match attempt {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(()),
                Ok(0) => Some(()),
                _ => None,
            }
        },
    )
    .await
}

fn ids(tasks: &BTreeMap<String, SocketAddr>) -> BTreeSet<String> {
    tasks.keys().cloned().collect()
}

fn addrs(tasks: &BTreeMap<String, SocketAddr>) -> BTreeSet<SocketAddr> {
    tasks.values().copied().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn vips_resolve_spread_fail_over_share_and_survive_an_l4lb_restart() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let dev = tokio::task::spawn_blocking(|| DevCluster::up(1, 2, 1)).await??;
    let master = dev.master_ip(1);
    let net = dev.net;
    let c = Cluster {
        apps: format!("http://{master}:8080"),
        http: capstan_http_client::client(),
        master,
        dev,
    };
    let status = c.dev.status()?;
    for node in status["nodes"].as_array().context("nodes")? {
        ensure!(
            node["daemons"].as_array().is_some_and(|d| d
                .iter()
                .any(|d| d["name"] == "l4lb" && d["health"] == "healthy")),
            "every node runs a healthy l4lb: {status:#}"
        );
    }

    // A named VIP over three instances, by the name capstan's DNS server answers.
    let name = "l4web.marathon.l4lb.thisdcos.directory";
    c.deploy(&host_app("/l4web", 3, json!({"VIP_0": "/l4web:80"})))
        .await?;
    let web = c.wait_running("/l4web", 3).await?;
    c.wait_everywhere(&format!("{name}:80"), Some(addrs(&web)))
        .await?;
    let ip = c.resolve(name).await?;
    let IpAddr::V4(v4) = ip else {
        bail!("{name} has a v6 address {ip}");
    };
    ensure!(
        v4.octets()[..2] == [127, net] && v4.octets()[2] >= 128,
        "{name} = {ip}, outside the cluster's VIP range 127.{net}.128.0/17"
    );
    let vip = SocketAddr::new(ip, 80);
    // Each node's l4lb round-robins, and of 30 connections one l4lb takes at least 10.
    let seen = spread(vip, 30).await?;
    ensure!(
        seen.keys().cloned().collect::<BTreeSet<_>>() == ids(&web),
        "30 connections spread over {:?}: {seen:?}",
        ids(&web)
    );

    // Kill one instance: it takes no new connection, the others still answer.
    let (victim, victim_addr) = web.iter().next().context("a task")?;
    let resp = c
        .http
        .delete(format!(
            "{}/v2/apps/l4web/tasks/{victim}?scale=true",
            c.apps
        ))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "kill: {}", resp.text().await?);
    let rest: BTreeSet<SocketAddr> = addrs(&web)
        .into_iter()
        .filter(|a| a != victim_addr)
        .collect();
    c.wait_everywhere(&format!("{name}:80"), Some(rest)).await?;
    let seen = spread(vip, 20).await?;
    ensure!(
        !seen.contains_key(victim) && seen.len() == 2,
        "after killing {victim}: {seen:?}"
    );

    // Two apps, one on host and one on bridge networking, sharing a VIP; the first also has
    // an IP VIP (loopback, so it is local on this machine as the range is).
    let shared = "l4shared.marathon.l4lb.thisdcos.directory";
    let ip_vip: SocketAddr = format!("127.{net}.100.7:8080").parse()?;
    c.deploy(&host_app(
        "/l4a",
        2,
        json!({"VIP_0": "/l4shared:80", "VIP_1": ip_vip.to_string()}),
    ))
    .await?;
    c.deploy(&json!({
        "id": "/l4b", "instances": 1, "cpus": 0.05, "mem": 16,
        "cmd": serve_task_id("80"),
        "container": {"type": "DOCKER", "docker": {"image": "capstan/http", "network": "BRIDGE",
            "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp",
                              "labels": {"VIP_0": "l4shared:80"}}]}},
    }))
    .await?;
    let a = c.wait_running("/l4a", 2).await?;
    let b = c.wait_running("/l4b", 1).await?;
    let both: BTreeSet<SocketAddr> = addrs(&a).union(&addrs(&b)).copied().collect();
    c.wait_everywhere(&format!("{shared}:80"), Some(both))
        .await?;
    c.wait_everywhere(&ip_vip.to_string(), Some(addrs(&a)))
        .await?;
    let shared_vip = SocketAddr::new(c.resolve(shared).await?, 80);
    let seen = spread(shared_vip, 30).await?;
    let want: BTreeSet<String> = ids(&a).union(&ids(&b)).cloned().collect();
    ensure!(
        seen.keys().cloned().collect::<BTreeSet<_>>() == want,
        "the shared VIP reaches both apps' tasks {want:?}: {seen:?}"
    );
    let seen = spread(ip_vip, 10).await?;
    ensure!(
        seen.keys().cloned().collect::<BTreeSet<_>>() == ids(&a),
        "the IP VIP reaches /l4a's tasks {:?}: {seen:?}",
        ids(&a)
    );

    // SIGKILL one agent's l4lb: the supervisor starts it again and it rebuilds everything
    // from the master's stream (a full reconcile), serving every VIP address again.
    let before = c.dev.status()?;
    let agent = before["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "agent-1"))
        .context("agent-1")?;
    let l4lb = agent["daemons"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "l4lb"))
        .context("agent-1's l4lb")?;
    let pid = l4lb["pid"].as_i64().context("l4lb pid")?;
    let endpoint = l4lb["endpoint"].as_str().context("endpoint")?.to_owned();
    let want_vips = c.vips_applied(&endpoint).await.context("agent-1's VIPs")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_until("agent-1's l4lb restarted", CHANGE, async || {
        let s = c.dev.status().ok()?;
        let d = s["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == "agent-1")?["daemons"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == "l4lb")?
            .clone();
        (d["pid"].as_i64().is_some_and(|p| p != pid) && d["health"] == "healthy").then_some(())
    })
    .await
    .with_context(|| c.dev.logs())?;
    let metrics = wait_until("agent-1's l4lb rebuilt its table", CHANGE, async || {
        let vips = c.vips_applied(&endpoint).await?;
        let m = c
            .http
            .get(format!("{endpoint}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (vips == want_vips).then_some(m)
    })
    .await
    .with_context(|| c.dev.logs())?;
    // l4web, l4shared and the IP VIP: three addresses served again, none failed.
    ensure!(
        metric(&metrics, "capstan_l4lb_programmed_addresses") == Some(3.0),
        "{metrics}"
    );
    ensure!(
        metric(&metrics, "capstan_l4lb_subscribed") == Some(1.0),
        "{metrics}"
    );
    ensure!(spread(vip, 10).await?.len() == 2, "l4web still answers");

    // Scale to zero: the VIP goes and connections to its address are refused, not hung; an
    // address of the range that no VIP has is refused too (it is local, never routed out).
    let resp = c
        .http
        // force: the kill above may still be redeploying the instance.
        .put(format!("{}/v2/apps/l4web?force=true", c.apps))
        .json(&json!({"instances": 0}))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "scale: {}", resp.text().await?);
    c.wait_running("/l4web", 0).await?;
    c.wait_everywhere(&format!("{name}:80"), None).await?;
    wait_refused(vip).await?;
    let unused = [254u8, 253]
        .map(|last| IpAddr::from([127, net, 255, last]))
        .into_iter()
        .find(|a| *a != shared_vip.ip())
        .context("an unused address")?;
    wait_refused(SocketAddr::new(unused, 80)).await?;
    // The other VIPs are untouched.
    ensure!(
        !spread(shared_vip, 3).await?.is_empty(),
        "l4shared still answers"
    );
    Ok(())
}
