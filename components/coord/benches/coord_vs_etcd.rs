//! Side-by-side benchmark: a 3-member `capstan coord` cluster and a 3-member etcd cluster
//! (Debian `etcd-server`, 3.4) on this machine, driven through their HTTP/JSON APIs with the
//! same client code (coord: `/v1/kv/*`; etcd: the v3 JSON gateway `/v3/kv/*`), leader
//! addressed directly. Prints a markdown table (one row per workload, both systems and the
//! ratio). Run: `cargo bench -p capstan-coord --bench coord_vs_etcd`.
//! `COORD_BENCH_OPS` scales the operation counts.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use capstan_coord::{Config, MemberConfig, Server, ServerHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy)]
enum System {
    Coord,
    Etcd,
}

#[derive(Clone, Copy)]
enum Kind {
    Put,
    Get,
}

struct Target {
    system: System,
    base: String,
    http: reqwest::Client,
}

impl Target {
    async fn op(&self, kind: Kind, key: &str, value: &[u8]) {
        let (path, body) = match (self.system, kind) {
            (System::Coord, Kind::Put) => (
                "/v1/kv/put",
                serde_json::json!({"key": key, "value": B64.encode(value)}),
            ),
            (System::Coord, Kind::Get) => ("/v1/kv/get", serde_json::json!({"key": key})),
            (System::Etcd, Kind::Put) => (
                "/v3/kv/put",
                serde_json::json!({"key": B64.encode(key), "value": B64.encode(value)}),
            ),
            (System::Etcd, Kind::Get) => {
                ("/v3/kv/range", serde_json::json!({"key": B64.encode(key)}))
            }
        };
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let _ = r.bytes().await;
    }
}

struct Sample {
    ops_per_sec: f64,
    mean_ms: f64,
    p99_ms: f64,
}

async fn run(target: Arc<Target>, kind: Kind, clients: usize, ops_per_client: usize) -> Sample {
    let value = vec![b'x'; 256];
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let t = target.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(ops_per_client);
                for i in 0..ops_per_client {
                    let key = format!("/bench/{c}/{}", i % 100);
                    let s = Instant::now();
                    t.op(kind, &key, &value).await;
                    lat.push(s.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = start.elapsed();
    all.sort();
    let mean = all.iter().sum::<Duration>() / all.len() as u32;
    let p99 = all[(all.len() * 99 / 100).min(all.len() - 1)];
    Sample {
        ops_per_sec: all.len() as f64 / total.as_secs_f64(),
        mean_ms: mean.as_secs_f64() * 1e3,
        p99_ms: p99.as_secs_f64() * 1e3,
    }
}

async fn start_coord(dir: &std::path::Path) -> (Vec<ServerHandle>, String) {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let members: Vec<MemberConfig> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| MemberConfig {
            id: i as u64 + 1,
            addr: l.local_addr().unwrap().to_string(),
        })
        .collect();
    let token = CancellationToken::new();
    let mut handles = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let cfg = Config {
            id: i as u64 + 1,
            data_dir: dir.join(format!("coord-{}", i + 1)),
            members: members.clone(),
            peer_secret: Some("the benchmark cluster's peer secret".into()),
            ..Config::default()
        };
        handles.push(Server::start_on(cfg, l, token.clone()).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(h) = handles.iter().find(|h| h.status().is_leader) {
            let addr = h.local_addr().to_string();
            return (handles, format!("http://{addr}"));
        }
        assert!(Instant::now() < deadline, "coord elected no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Etcd {
    children: Vec<Child>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_etcd(dir: &std::path::Path) -> Option<(Etcd, String)> {
    let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("n{}=http://127.0.0.1:{peer}", i + 1))
        .collect();
    let mut etcd = Etcd {
        children: Vec::new(),
    };
    for (i, (client, peer)) in ports.iter().enumerate() {
        let child = Command::new(bin)
            .args([
                "--name",
                &format!("n{}", i + 1),
                "--data-dir",
                &dir.join(format!("etcd-{}", i + 1)).display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &cluster.join(","),
                "--initial-cluster-state",
                "new",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        etcd.children.push(child);
    }
    let http = capstan_http_client::client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (client, _) in &ports {
            let url = format!("http://127.0.0.1:{client}/v3/maintenance/status");
            if let Ok(r) = http.post(&url).json(&serde_json::json!({})).send().await
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["leader"].as_str().is_some()
                && v["leader"] == v["header"]["member_id"]
            {
                return Some((etcd, format!("http://127.0.0.1:{client}")));
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let scale: usize = std::env::var("COORD_BENCH_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let (coord_handles, coord_base) = start_coord(dir.path()).await;
    let etcd = start_etcd(dir.path()).await;
    if etcd.is_none() {
        eprintln!(
            "etcd not found or did not start: install Debian's etcd-server; printing coord only"
        );
    }
    let http = capstan_http_client::client();
    let coord = Arc::new(Target {
        system: System::Coord,
        base: coord_base,
        http: http.clone(),
    });
    let etcd_target = etcd.as_ref().map(|(_, base)| {
        Arc::new(Target {
            system: System::Etcd,
            base: base.clone(),
            http: http.clone(),
        })
    });

    let workloads: [(&str, Kind, usize, usize); 4] = [
        ("put, 1 client", Kind::Put, 1, 300 * scale),
        ("put, 32 clients", Kind::Put, 32, 50 * scale),
        ("linearizable get, 1 client", Kind::Get, 1, 500 * scale),
        ("linearizable get, 32 clients", Kind::Get, 32, 100 * scale),
    ];
    println!(
        "| workload (256 B values, 3 members, leader) | coord ops/s | coord mean / p99 ms | etcd 3.4 ops/s | etcd mean / p99 ms | coord/etcd throughput |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, kind, clients, ops) in workloads {
        // Warm up both (connections, first writes).
        run(coord.clone(), Kind::Put, 1, 20).await;
        let c = run(coord.clone(), kind, clients, ops).await;
        let e = match &etcd_target {
            Some(t) => {
                run(t.clone(), Kind::Put, 1, 20).await;
                Some(run(t.clone(), kind, clients, ops).await)
            }
            None => None,
        };
        let (eo, el, ratio) = match &e {
            Some(e) => (
                format!("{:.0}", e.ops_per_sec),
                format!("{:.2} / {:.2}", e.mean_ms, e.p99_ms),
                format!("{:.2}", c.ops_per_sec / e.ops_per_sec),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {name} | {:.0} | {:.2} / {:.2} | {eo} | {el} | {ratio} |",
            c.ops_per_sec, c.mean_ms, c.p99_ms
        );
    }
    for h in coord_handles {
        let _ = h.shutdown().await;
    }
    drop(etcd);
}
