//! DNS: `capstan-dns` serving the records of N running tasks (built with the crate's pure
//! model + `synthesize`, published into a real server in a child process) against NSD
//! serving the same `mesos.` records from a zone file. Each server is pinned to core 0,
//! `dnsperf` runs on core 1 with the same query file for the same time.
//!
//! Freshness ([`freshness`]): a real master, simulated agents and a `capstan-dns` following
//! the master's event stream; each task's name is polled from the moment the scheduler hears
//! its TASK_RUNNING until it resolves. Mesos-DNS's polling interval is the anchor.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use capstan_dns::model::{Agent, ClusterState, Framework, Task, TaskKey, TaskState, TaskStatus};
use capstan_dns::{Producer, RecordSet, SynthConfig, synthesize};
use tokio_util::sync::CancellationToken;

use crate::child::{ensure_program, pinned, spawn_self};
use crate::report::{Row, Section};
use crate::stats::{mib, rss_kib, rss_tree_kib};

const TASKS_PER_AGENT: usize = 10;

/// The cluster the benchmark serves: `tasks` running Marathon tasks with one port each.
pub fn cluster(tasks: usize) -> ClusterState {
    let mut st = ClusterState::default();
    let fw = "bench-framework-0000";
    st.frameworks.insert(
        fw.into(),
        Framework {
            id: fw.into(),
            name: "marathon".into(),
            hostname: "localhost".into(),
            pid: None,
        },
    );
    let n_agents = tasks.div_ceil(TASKS_PER_AGENT).max(1);
    for a in 0..n_agents {
        let id = format!("bench-agent-S{a}");
        st.agents.insert(
            id.clone(),
            Agent {
                id,
                hostname: format!("agent-{a}"),
                ip: Some(IpAddr::V4(Ipv4Addr::new(
                    10,
                    1,
                    (a / 250) as u8,
                    (a % 250 + 1) as u8,
                ))),
                port: 5051,
            },
        );
    }
    for i in 0..tasks {
        let task = Task {
            id: format!("app-{i}.{i:08x}"),
            name: format!("app-{i}"),
            framework_id: fw.into(),
            agent_id: format!("bench-agent-S{}", i / TASKS_PER_AGENT),
            state: Some(TaskState::Running),
            statuses: vec![TaskStatus {
                state: Some(TaskState::Running),
                timestamp: 1.0,
                ..Default::default()
            }],
            ports: vec![31000 + (i % 1000) as u16],
            ..Default::default()
        };
        st.tasks.insert(
            TaskKey {
                framework_id: fw.into(),
                task_id: task.id.clone(),
            },
            task,
        );
    }
    st
}

fn records(tasks: usize) -> RecordSet {
    let synth = SynthConfig {
        self_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ..SynthConfig::default()
    };
    synthesize(&cluster(tasks), &synth)
}

/// Child side: a `capstan-dns` server on loopback serving `tasks` tasks' records.
pub async fn serve(tasks: usize, token: CancellationToken) -> anyhow::Result<String> {
    let cfg = capstan_dns::Config {
        dns_listen: ([127, 0, 0, 1], 0).into(),
        http_on: false,
        // Nobody listens there: the follower keeps retrying and the published records stay.
        masters: vec!["127.0.0.1:9".into()],
        external_on: false,
        ..capstan_dns::Config::default()
    };
    let handle = capstan_dns::Server::start(cfg, token)
        .await
        .context("starting capstan-dns")?;
    handle.publisher().publish(Producer::Mesos, records(tasks));
    let addr = handle.dns_addr().context("dns address")?.to_string();
    std::mem::forget(handle);
    Ok(addr)
}

/// The `mesos.` zone as an RFC 1035 zone file (what NSD serves).
pub fn zone_file(rs: &RecordSet) -> String {
    let mut out = String::from(
        "$ORIGIN mesos.\n$TTL 60\n@ IN SOA ns1.mesos. root.ns1.mesos. 1 60 600 86400 60\n@ IN NS ns1.mesos.\n",
    );
    let sorted: BTreeMap<&str, _> = rs.iter().filter(|(n, _)| n.ends_with(".mesos.")).collect();
    let mut have_ns1 = false;
    for (name, recs) in sorted {
        have_ns1 |= name == "ns1.mesos.";
        for a in &recs.a {
            let _ = writeln!(out, "{name} {} IN A {a}", recs.ttl);
        }
        for a in &recs.aaaa {
            let _ = writeln!(out, "{name} {} IN AAAA {a}", recs.ttl);
        }
        for s in &recs.srv {
            let _ = writeln!(
                out,
                "{name} {} IN SRV 0 {} {} {}",
                recs.ttl, s.weight, s.port, s.target
            );
        }
    }
    if !have_ns1 {
        out.push_str("ns1.mesos. 60 IN A 127.0.0.1\n");
    }
    out
}

/// dnsperf input: every task's A names (short and canonical) and its SRV name.
pub fn query_file(rs: &RecordSet) -> String {
    let mut names: Vec<(&str, &str)> = rs
        .iter()
        .filter_map(|(n, r)| {
            if n.starts_with("app-") && n.ends_with(".marathon.mesos.") && !r.a.is_empty() {
                Some((n, "A"))
            } else if n.starts_with("_app-")
                && n.ends_with("._tcp.marathon.mesos.")
                && !r.srv.is_empty()
            {
                Some((n, "SRV"))
            } else {
                None
            }
        })
        .collect();
    names.sort_unstable();
    let mut out = String::new();
    for (n, t) in names {
        let _ = writeln!(out, "{n} {t}");
    }
    out
}

/// dnsperf rounds per server, alternating between the servers.
const ROUNDS: usize = 4;

/// The round with the median rate, with loss summed over all rounds.
pub fn median_round(rounds: &[Perf]) -> Perf {
    let mut sorted = rounds.to_vec();
    sorted.sort_by(|a, b| a.qps.total_cmp(&b.qps));
    let mut m = sorted.get(sorted.len() / 2).cloned().unwrap_or_default();
    m.sent = rounds.iter().map(|r| r.sent).sum();
    m.lost = rounds.iter().map(|r| r.lost).sum();
    m
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Perf {
    pub qps: f64,
    pub sent: u64,
    pub lost: u64,
}

/// Reads dnsperf's summary.
pub fn parse_dnsperf(text: &str) -> Option<Perf> {
    let num = |key: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Perf {
        qps: num("Queries per second:")?,
        sent: num("Queries sent:")? as u64,
        lost: num("Queries lost:").unwrap_or(0.0) as u64,
    })
}

async fn dnsperf(addr: &str, queries: &std::path::Path, secs: u64) -> anyhow::Result<Perf> {
    let (host, port) = addr.rsplit_once(':').context("address")?;
    let out = pinned(Some(1), "dnsperf")
        .args(["-s", host, "-p", port, "-d"])
        .arg(queries)
        .args(["-l", &secs.to_string(), "-c", "4", "-q", "200", "-t", "2"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(secs + 30), out)
        .await
        .context("dnsperf did not stop")??;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_dnsperf(&text).with_context(|| format!("unexpected dnsperf output: {text}"))
}

async fn start_nsd(
    dir: &std::path::Path,
    zone: &str,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let port = capstan_testkit::free_port()?;
    std::fs::write(dir.join("mesos.zone"), zone)?;
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1\n  port: {port}\n  server-count: 1\n  username: \"\"\n  \
         chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  \
         xfrdfile: \"{d}/xfrd.state\"\n  pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\n  \
         verbosity: 0\n  hide-version: yes\nremote-control:\n  control-enable: no\n\
         zone:\n  name: \"mesos\"\n  zonefile: \"{d}/mesos.zone\"\n"
    );
    let conf_path = dir.join("nsd.conf");
    std::fs::write(&conf_path, conf)?;
    let check = std::process::Command::new("nsd-checkconf")
        .arg(&conf_path)
        .output();
    if let Ok(o) = check
        && !o.status.success()
    {
        bail!("nsd-checkconf: {}", String::from_utf8_lossy(&o.stderr));
    }
    let child = pinned(Some(0), "nsd")
        .arg("-d")
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting nsd")?;
    let addr = format!("127.0.0.1:{port}");
    // Ready when it answers over TCP... poll the zone's SOA with one dnsperf-free probe.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let probe = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        // Query: id 1, RD, one question "mesos. SOA".
        let q: [u8; 23] = [
            0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'm', b'e', b's', b'o', b's', 0, 0, 6, 0, 1,
        ];
        probe.send_to(&q, &addr).await?;
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), probe.recv(&mut buf)).await
            && n > 12
            && buf[3] & 0x0f == 0
            && buf[7] > 0
        {
            return Ok((child, addr));
        }
        if std::time::Instant::now() > deadline {
            bail!("nsd did not answer for the zone in 60 s (see {d}/nsd.log)");
        }
    }
}

pub async fn run(quick: bool) -> anyhow::Result<Section> {
    let mut section = match throughput(quick).await {
        Ok(s) => s,
        Err(e) => Section {
            notes: vec![format!("The query benchmark failed: {e:#}")],
            ..Default::default()
        },
    };
    section.title = "dns: queries per second, memory and freshness".into();
    let n = if quick { 40 } else { 200 };
    match freshness::measure(n).await {
        Ok(f) => freshness::report(&f, &mut section),
        Err(e) => section
            .notes
            .push(format!("The freshness benchmark failed: {e:#}")),
    }
    Ok(section)
}

async fn throughput(quick: bool) -> anyhow::Result<Section> {
    let tasks = if quick { 1_000 } else { 10_000 };
    // Seconds of load per server, split into ROUNDS rounds.
    let secs = if quick { 4 } else { 20 };
    let rs = records(tasks);
    let dir = tempfile::Builder::new()
        .prefix("capstan-bench-dns-")
        .tempdir()?;
    let qpath = dir.path().join("queries.txt");
    let queries = query_file(&rs);
    anyhow::ensure!(!queries.is_empty(), "no task names were synthesised");
    std::fs::write(&qpath, &queries)?;
    let mut section = Section {
        title: "dns: queries per second and memory".into(),
        ..Default::default()
    };
    if let Err(why) = ensure_program("dnsperf", &["dnsperf"]).await {
        section.notes.push(format!("Not measured: {why}"));
        return Ok(section);
    }

    let capstan = spawn_self(&format!("dns:{tasks}"), Some(0)).await?;
    let mut nsd = match ensure_program("nsd", &["nsd"]).await {
        Ok(()) => start_nsd(dir.path(), &zone_file(&rs))
            .await
            .map_err(|e| format!("{e:#}")),
        Err(why) => Err(why),
    };
    // Alternate short rounds so that background load on this shared machine hits both alike;
    // each server's result is its median round.
    let mut ours_rounds = Vec::new();
    let mut peer_rounds = Vec::new();
    let mut peer_err = None;
    for _ in 0..ROUNDS {
        ours_rounds.push(dnsperf(&capstan.addr, &qpath, secs / ROUNDS as u64).await?);
        if let Ok((_, addr)) = &nsd {
            match dnsperf(addr, &qpath, secs / ROUNDS as u64).await {
                Ok(p) => peer_rounds.push(p),
                Err(e) => peer_err = Some(format!("{e:#}")),
            }
        }
    }
    let our_rss = rss_kib(capstan.pid()).unwrap_or(0);
    drop(capstan);
    let ours = median_round(&ours_rounds);
    let peer = match &mut nsd {
        Ok((child, _)) => {
            let rss = rss_tree_kib(child.id().unwrap_or(0)).unwrap_or(0);
            let _ = child.kill().await;
            match peer_err {
                Some(e) => Err(e),
                None => Ok((median_round(&peer_rounds), rss)),
            }
        }
        Err(why) => Err(why.clone()),
    };

    let lines = queries.lines().count();
    let mut r = Row::new(format!(
        "UDP queries/s, {tasks} tasks (A + SRV, {lines} names), dnsperf 4 clients × 200 outstanding"
    ));
    r.capstan = format!("{:.0} q/s", ours.qps);
    r.goal = "≥ 0.8× NSD".into();
    let mut loss = Row::new("queries lost");
    loss.capstan = format!("{} of {}", ours.lost, ours.sent);
    let mut mem = Row::new(format!("RSS serving {tasks} tasks"));
    mem.capstan = mib(our_rss);
    mem.goal = "≤ 50 MiB".into();
    mem.met = Some(our_rss <= 50 * 1024);
    match &peer {
        Ok((p, rss)) => {
            r.peer = format!("{:.0} q/s", p.qps);
            r.ratio = Some(ours.qps / p.qps.max(1e-9));
            r.met = r.ratio.map(|x| x >= 0.8);
            loss.peer = format!("{} of {}", p.lost, p.sent);
            mem.peer = format!("{} (NSD, all processes)", mib(*rss));
            mem.ratio = Some(our_rss as f64 / (*rss).max(1) as f64);
        }
        Err(why) => {
            r.peer = "not measured".into();
            section.notes.push(format!("NSD not measured: {why}"));
        }
    }
    section.rows = vec![r, loss, mem];
    section.notes.insert(
        0,
        format!(
            "Setup: `capstan-dns` (child process) and {} (`server-count: 1`) both pinned to \
             core 0 (only the one under load is busy), serving the same {} names of the `mesos.` zone ({tasks} running \
             tasks on {} agents, synthesised by `capstan_dns::synthesize`); `dnsperf` pinned \
             to core 1 with the same query file, {ROUNDS} rounds of {} s per server alternating \
             between the servers; each rate is the server's median round, loss is summed. RSS is read after the load; Capstan's includes its cluster \
             model and the synthesised records of every zone (also `dcos.thisdcos.directory`).",
            nsd_version(),
            rs.iter().filter(|(n, _)| n.ends_with(".mesos.")).count(),
            tasks.div_ceil(TASKS_PER_AGENT),
            secs / ROUNDS as u64
        ),
    );
    Ok(section)
}

/// Freshness: how long after the scheduler hears TASK_RUNNING a task's name resolves. A
/// master in this process, simulated agents, one v1 scheduler launching tasks in small waves,
/// and a `capstan-dns` following the master's operator event stream; each task's A record is
/// polled over UDP every millisecond from the moment its TASK_RUNNING arrives.
mod freshness {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use capstan_proto::recordio::RecordIoDecoder;
    use capstan_testkit::sim_agent::{SimAgent, SimAgentConfig};
    use futures::StreamExt;
    use serde_json::{Value, json};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use crate::report::{Row, Section};
    use crate::stats::{ms, percentile};

    const FRAMEWORK: &str = "capstan-bench";
    /// Tasks launched per offer; the next wave waits until this one resolved.
    const WAVE: usize = 5;
    const AGENTS: usize = 2;
    /// How often a probe asks again while the name does not resolve.
    const POLL: Duration = Duration::from_millis(1);

    pub struct Freshness {
        pub n: usize,
        pub samples: Vec<Duration>,
        pub elapsed: Duration,
    }

    pub async fn measure(n: usize) -> anyhow::Result<Freshness> {
        let token = CancellationToken::new();
        let result = run_cluster(n, token.clone()).await;
        token.cancel();
        result
    }

    async fn run_cluster(n: usize, token: CancellationToken) -> anyhow::Result<Freshness> {
        let mcfg = capstan_master::Config {
            listen: ([127, 0, 0, 1], 0).into(),
            allocation_interval: Duration::from_millis(50),
            ..capstan_master::Config::default()
        };
        let master = capstan_master::Server::start(mcfg, token.clone())
            .await
            .context("starting the master")?;
        let maddr = master.local_addr();
        let base = format!("http://{maddr}");
        let mut agents = Vec::with_capacity(AGENTS);
        for _ in 0..AGENTS {
            // An IP as hostname gives every task an A record even without an agent pid.
            let mut cfg = SimAgentConfig::new(base.clone(), "127.0.0.1");
            cfg.cpus = 1000.0;
            cfg.mem = 1_000_000.0;
            cfg.update_retry = Duration::from_secs(30);
            agents.push(SimAgent::start_new(cfg));
        }
        let dcfg = capstan_dns::Config {
            dns_listen: ([127, 0, 0, 1], 0).into(),
            http_on: false,
            masters: vec![maddr.to_string()],
            external_on: false,
            ..capstan_dns::Config::default()
        };
        let dns = capstan_dns::Server::start(dcfg, token.clone())
            .await
            .context("starting capstan-dns")?;
        let dns_addr = dns.dns_addr().context("dns address")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(agents.iter().all(|a| a.connected()) && dns.master_status().borrow().subscribed) {
            if Instant::now() > deadline {
                bail!("the agents or the DNS follower did not connect to the master in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let result = schedule(&base, dns_addr, n).await;
        drop(agents);
        dns.shutdown().await;
        master.shutdown().await;
        result
    }

    async fn schedule(base: &str, dns: SocketAddr, n: usize) -> anyhow::Result<Freshness> {
        let client = capstan_http_client::client();
        let url = format!("{base}/api/v1/scheduler");
        let (stream_id, resp) =
            crate::master::subscribe_scheduler(&client, base, FRAMEWORK).await?;
        let mut body = resp.bytes_stream();
        let mut dec = RecordIoDecoder::default();
        let post = |call: Value| {
            let req = client
                .post(&url)
                .header("Content-Type", "application/json")
                .header("Mesos-Stream-Id", &stream_id)
                .body(call.to_string());
            async move {
                match req.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => bail!("call answered {}", r.status()),
                    Err(e) => Err(anyhow::Error::new(e)),
                }
            }
        };
        let (done_tx, mut done_rx) = mpsc::channel::<anyhow::Result<Duration>>(n.max(1));
        let mut framework_id = String::new();
        let mut launched = 0usize;
        let mut in_flight = 0usize;
        let mut running: HashSet<String> = HashSet::new();
        let mut samples = Vec::with_capacity(n);
        let t_start = Instant::now();
        let end = tokio::time::Instant::now() + Duration::from_secs(120);
        while samples.len() < n {
            let chunk = tokio::select! {
                c = body.next() => c,
                d = done_rx.recv() => {
                    samples.push(d.context("probe channel")??);
                    in_flight -= 1;
                    continue;
                }
                _ = tokio::time::sleep_until(end) => {
                    bail!("only {} of {n} names resolved in 120 s", samples.len())
                }
            };
            let Some(Ok(chunk)) = chunk else {
                bail!("the scheduler stream ended");
            };
            // Every event in this chunk counts as received now.
            let received = Instant::now();
            dec.push(&chunk);
            while let Ok(Some(rec)) = dec.next_record() {
                let ev: Value = serde_json::from_slice(&rec).context("event JSON")?;
                match ev["type"].as_str().unwrap_or("") {
                    "SUBSCRIBED" => {
                        framework_id = ev["subscribed"]["framework_id"]["value"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                    }
                    "OFFERS" => {
                        let offers = ev["offers"]["offers"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default();
                        let fid = json!({"value": framework_id});
                        for offer in offers {
                            let wave = if in_flight == 0 {
                                WAVE.min(n - launched)
                            } else {
                                0
                            };
                            let call = if wave == 0 {
                                json!({"type": "DECLINE", "framework_id": fid, "decline": {
                                    "offer_ids": [offer["id"]], "filters": {"refuse_seconds": 0.0}}})
                            } else {
                                let tasks: Vec<Value> = (launched..launched + wave)
                                    .map(|i| task_info(&offer, i))
                                    .collect();
                                launched += wave;
                                in_flight += wave;
                                json!({"type": "ACCEPT", "framework_id": fid, "accept": {
                                    "offer_ids": [offer["id"]],
                                    "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                                    "filters": {"refuse_seconds": 0.0}}})
                            };
                            post(call).await.context("ACCEPT/DECLINE")?;
                        }
                    }
                    "UPDATE" => {
                        let status = &ev["update"]["status"];
                        let state = status["state"].as_str().unwrap_or("");
                        let task = status["task_id"]["value"].as_str().unwrap_or("").to_owned();
                        if capstan_types::TaskState::is_terminal_name(state) {
                            bail!("task {task} ended {state}: {}", status["message"]);
                        }
                        if state == "TASK_RUNNING" && running.insert(task.clone()) {
                            let tx = done_tx.clone();
                            let name = format!("{task}.{FRAMEWORK}.mesos.");
                            tokio::spawn(async move {
                                let _ = tx.send(probe(dns, &name, received).await).await;
                            });
                        }
                        if let Some(uuid) = status.get("uuid") {
                            let call = json!({"type": "ACKNOWLEDGE",
                                "framework_id": {"value": framework_id},
                                "acknowledge": {"agent_id": status["agent_id"],
                                    "task_id": status["task_id"], "uuid": uuid}});
                            post(call).await.context("ACKNOWLEDGE")?;
                        }
                    }
                    "ERROR" => bail!("scheduler ERROR event: {ev}"),
                    _ => {}
                }
            }
        }
        Ok(Freshness {
            n,
            samples,
            elapsed: t_start.elapsed(),
        })
    }

    fn task_info(offer: &Value, i: usize) -> Value {
        let id = format!("fresh-{i}");
        json!({
            "name": id, "task_id": {"value": id}, "agent_id": offer["agent_id"],
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 16.0}},
            ],
            "command": {"value": "run", "shell": true},
        })
    }

    /// Asks for `name`'s A record every [`POLL`] until it answers; time since `t0`.
    async fn probe(dns: SocketAddr, name: &str, t0: Instant) -> anyhow::Result<Duration> {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        sock.connect(dns).await?;
        let mut buf = [0u8; 1500];
        let deadline = t0 + Duration::from_secs(10);
        let mut id: u16 = rand_id(name);
        loop {
            id = id.wrapping_add(1);
            sock.send(&query(id, name)).await?;
            let got = tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await;
            if let Ok(Ok(len)) = got
                && answers_a(&buf[..len], id)
            {
                return Ok(t0.elapsed());
            }
            if Instant::now() > deadline {
                bail!("{name} did not resolve within 10 s of TASK_RUNNING");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn rand_id(name: &str) -> u16 {
        name.bytes()
            .fold(0x1234u16, |h, b| h.rotate_left(5) ^ u16::from(b))
    }

    /// A recursion-desired query for `name`'s A record.
    pub fn query(id: u16, name: &str) -> Vec<u8> {
        let mut q = Vec::with_capacity(18 + name.len());
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    /// Skips a (possibly compressed) name at `at`; the offset after it.
    fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
        loop {
            let len = *msg.get(at)?;
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            if len == 0 {
                return Some(at + 1);
            }
            at += 1 + usize::from(len);
        }
    }

    /// Whether `msg` answers query `id` with NOERROR and at least one A record.
    pub fn answers_a(msg: &[u8], id: u16) -> bool {
        let check = || -> Option<bool> {
            let head = msg.get(..12)?;
            if u16::from_be_bytes([head[0], head[1]]) != id || head[2] & 0x80 == 0 {
                return Some(false);
            }
            if head[3] & 0x0f != 0 {
                return Some(false);
            }
            let qd = u16::from_be_bytes([head[4], head[5]]);
            let an = u16::from_be_bytes([head[6], head[7]]);
            let mut at = 12;
            for _ in 0..qd {
                at = skip_name(msg, at)? + 4;
            }
            for _ in 0..an {
                at = skip_name(msg, at)?;
                let rr = msg.get(at..at + 10)?;
                if u16::from_be_bytes([rr[0], rr[1]]) == 1 {
                    return Some(true);
                }
                at += 10 + usize::from(u16::from_be_bytes([rr[8], rr[9]]));
            }
            Some(false)
        };
        check().unwrap_or(false)
    }

    pub fn report(f: &Freshness, section: &mut Section) {
        let (Some(p50), Some(p99), Some(max)) = (
            percentile(&f.samples, 50.0),
            percentile(&f.samples, 99.0),
            percentile(&f.samples, 100.0),
        ) else {
            section.notes.push("Freshness: no samples".into());
            return;
        };
        let mut r = Row::new(format!(
            "freshness: TASK_RUNNING at the scheduler → name resolvable, p99 over {} tasks",
            f.n
        ));
        r.capstan = format!("{} (p50 {}, max {})", ms(p99), ms(p50), ms(max));
        r.peer = "60 s / 30 s (Mesos-DNS default / DC/OS poll interval; anchor)".into();
        r.goal = "≤ 100 ms".into();
        r.met = Some(p99 <= Duration::from_millis(100));
        section.rows.push(r);
        section.notes.push(format!(
            "Freshness setup: a `capstan-master`, {AGENTS} simulated agents and `capstan-dns` \
             (following the master's operator event stream) in the harness process; one v1 \
             scheduler launches {} tasks with distinct names in waves of {WAVE} (the next wave \
             after the previous one resolved), and from the moment it receives each task's \
             TASK_RUNNING it asks for `<task>.{FRAMEWORK}.mesos.` A over UDP every {} ms until \
             the answer has an A record ({:.1} s in all). The peer figure is not a same-run \
             measurement: Mesos-DNS polls the master's state every 60 s by default (DC/OS \
             configures 30 s), so its freshness is up to that interval.",
            f.n,
            POLL.as_millis(),
            f.elapsed.as_secs_f64()
        ));
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_query_and_its_a_answer_are_recognised() {
            let q = query(7, "app.fw.mesos.");
            assert_eq!(&q[12..], b"\x03app\x02fw\x05mesos\x00\x00\x01\x00\x01");
            let mut resp = q.clone();
            resp[2] |= 0x80;
            resp[7] = 1;
            resp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
            assert!(answers_a(&resp, 7));
            assert!(!answers_a(&resp, 8));
            let mut nx = q.clone();
            nx[2] |= 0x80;
            nx[3] |= 3;
            assert!(!answers_a(&nx, 7));
            let mut empty = q;
            empty[2] |= 0x80;
            assert!(!answers_a(&empty, 7));
            assert!(!answers_a(&resp[..20], 7));
        }
    }
}

fn nsd_version() -> String {
    std::process::Command::new("nsd")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            let t = String::from_utf8_lossy(&o.stderr).to_string()
                + &String::from_utf8_lossy(&o.stdout);
            t.lines().next().map(|l| l.trim().to_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsperf_summary_is_parsed() {
        let text = "Statistics:\n\n  Queries sent:         1000\n  Queries completed:    990 (99.00%)\n  \
                    Queries lost:         10 (1.00%)\n\n  Queries per second:   12345.678\n";
        assert_eq!(
            parse_dnsperf(text),
            Some(Perf {
                qps: 12345.678,
                sent: 1000,
                lost: 10
            })
        );
        assert_eq!(parse_dnsperf("nothing"), None);
    }

    #[test]
    fn the_median_round_is_reported_with_all_losses() {
        let p = |qps, lost| Perf {
            qps,
            sent: 100,
            lost,
        };
        let m = median_round(&[p(30.0, 1), p(10.0, 0), p(20.0, 2), p(40.0, 0)]);
        assert_eq!(
            m,
            Perf {
                qps: 30.0,
                sent: 400,
                lost: 3
            }
        );
        assert_eq!(median_round(&[]), Perf::default());
    }

    #[test]
    fn zone_and_queries_cover_every_task() {
        let rs = records(20);
        let q = query_file(&rs);
        // Each task has its short name and its canonical `<name>-<hash>-<agent>` name.
        assert_eq!(q.lines().filter(|l| l.ends_with(" A")).count(), 40);
        assert_eq!(q.lines().filter(|l| l.ends_with(" SRV")).count(), 20);
        let z = zone_file(&rs);
        assert!(z.contains("app-7.marathon.mesos. 60 IN A 10.1.0.1"), "{z}");
        assert!(z.contains("IN SRV 0 1 31007 "), "{z}");
    }
}
