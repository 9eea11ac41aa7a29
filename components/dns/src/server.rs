//! The I/O shell: binds UDP and TCP on the DNS port and the HTTP API, runs the stream
//! follower, and hands every request to the pure responder with the current snapshot.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capstan_runtime::{ConfigProblem, Validate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, parse_resolv_conf, parse_upstream};
use crate::follower::{self, FollowerConfig, MasterStatus};
use crate::forward::Forwarder;
use crate::labels::LabelSpec;
use crate::records::{DCOS_ZONE, L4LB_ZONE, RecordSet, SynthConfig};
use crate::resolve::{self, ResponderConfig, Transport, Verdict};
use crate::snapshot::{Producer, Snapshot, SoaParams, Zone};

/// Most forwarded UDP queries in flight at once; more are dropped (the client retries).
const MAX_INFLIGHT_FORWARDS: usize = 1024;
/// Most open DNS-over-TCP connections.
const MAX_TCP_CONNECTIONS: usize = 512;
/// An idle DNS-over-TCP connection is closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigProblem>),
    #[error("cannot bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid zone name {name:?}")]
    Zone {
        name: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
}

/// Publishes record sets into the served snapshot; clone it to give another producer (the
/// load balancer) its own handle.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Publisher {
    /// Replaces `producer`'s records; queries see them at once.
    pub fn publish(&self, producer: Producer, records: RecordSet) {
        let records = Arc::new(records);
        self.tx
            .send_modify(|s| *s = Arc::new(s.with_records(producer, records)));
    }
}

/// The `capstan dns` daemon.
pub struct Server;

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    dns_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    publisher: Publisher,
    master_status: watch::Receiver<MasterStatus>,
}

impl ServerHandle {
    /// The stream follower's state; `changed()` wakes on every update.
    pub fn master_status(&self) -> watch::Receiver<MasterStatus> {
        self.master_status.clone()
    }

    /// The DNS address (UDP and TCP on the same port), if `dns_on`.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns_addr
    }

    /// The HTTP API address, if `http_on`.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// What queries are answered from right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// A handle for publishing another producer's records.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Waits until every task ended (after shutdown was requested).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops everything and waits for it.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

impl Server {
    /// Validates `config`, binds its sockets, and starts serving. Everything stops when
    /// `shutdown` is cancelled.
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, StartError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(StartError::Config(problems));
        }
        let shutdown = shutdown.child_token();
        let soa = SoaParams {
            mname: crate::snapshot::fqdn(&config.soa_mname),
            rname: crate::snapshot::fqdn(&config.soa_rname.replace('@', ".")),
            refresh: config.soa_refresh,
            retry: config.soa_retry,
            expire: config.soa_expire,
        };
        let mut zone_defs = vec![
            (config.domain.clone(), config.ttl),
            (L4LB_ZONE.to_owned(), config.dcos_ttl),
        ];
        if config.dcos_zone {
            zone_defs.push((DCOS_ZONE.to_owned(), config.dcos_ttl));
        }
        let mut zones = Vec::new();
        for (name, ttl) in zone_defs {
            zones.push(
                Zone::new(&name, ttl, &soa).map_err(|source| StartError::Zone { name, source })?,
            );
        }
        // DC/OS serves the Mesos-DNS names again under `mesos.thisdcos.directory`.
        let mirror = crate::records::MESOS_MIRROR_ZONE;
        if config.dcos_zone
            && zones
                .iter()
                .all(|z| !z.contains(&crate::snapshot::fqdn(mirror)))
        {
            let z = Zone::mirror(mirror, &config.domain, config.ttl, &soa).map_err(|source| {
                StartError::Zone {
                    name: mirror.to_owned(),
                    source,
                }
            })?;
            zones.push(z);
        }
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let (tx, snapshots) = watch::channel(Arc::new(Snapshot::new(zones, soa, serial)));
        let publisher = Publisher { tx: Arc::new(tx) };

        let self_ips: Vec<IpAddr> = if config.dns_listen.ip().is_unspecified() {
            primary_ip().into_iter().collect()
        } else {
            vec![config.dns_listen.ip()]
        };
        let synth = SynthConfig {
            domain: config.domain.to_ascii_lowercase(),
            spec: if config.enforce_rfc952 {
                LabelSpec::Rfc952
            } else {
                LabelSpec::Rfc1123
            },
            ip_sources: config.ip_sources.clone(),
            ttl: config.ttl,
            srv_weight: config.srv_weight,
            dcos_zone: config.dcos_zone,
            dcos_ttl: config.dcos_ttl,
            self_name: crate::snapshot::fqdn(&config.soa_mname),
            self_ips,
            require_healthy: config.require_healthy,
        };
        // Publish the self record (and nothing else) before any master answered.
        publisher.publish(
            Producer::Mesos,
            crate::records::synthesize(&Default::default(), &synth),
        );

        let mut tasks = JoinSet::new();
        let responder = ResponderConfig {
            recurse_on: config.recurse_on,
            external_on: config.external_on,
            set_truncate_bit: config.set_truncate_bit,
            max_udp_payload: config.max_udp_payload,
        };
        let mut dns_addr = None;
        if config.dns_on {
            let (udp, tcp) = bind_dns(config.dns_listen).await?;
            let addr = udp.local_addr().map_err(|source| StartError::Bind {
                what: "DNS (UDP)",
                addr: config.dns_listen,
                source,
            })?;
            info!(addr = %addr, "Serving DNS on UDP and TCP");
            dns_addr = Some(addr);
            let forwarder = Arc::new(build_forwarder(&config));
            let udp = Arc::new(udp);
            for _ in 0..2 {
                tasks.spawn(udp_loop(
                    udp.clone(),
                    snapshots.clone(),
                    responder,
                    forwarder.clone(),
                    shutdown.clone(),
                ));
            }
            tasks.spawn(tcp_loop(
                tcp,
                snapshots.clone(),
                responder,
                forwarder,
                shutdown.clone(),
            ));
        }
        let mut http_addr = None;
        if config.http_on {
            let listener = TcpListener::bind(config.http_listen)
                .await
                .map_err(|source| StartError::Bind {
                    what: "HTTP API",
                    addr: config.http_listen,
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| StartError::Bind {
                what: "HTTP API",
                addr: config.http_listen,
                source,
            })?;
            info!(addr = %addr, "Serving the HTTP API");
            http_addr = Some(addr);
            let app = crate::http::router(Arc::new(config.clone()), snapshots.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    warn!(error = %e, "HTTP API stopped");
                }
            });
        }
        let fcfg = FollowerConfig {
            masters: config.masters.clone(),
            timeout: config.master_timeout,
            missed_heartbeats: config.missed_heartbeats,
            backoff_max: config.reconnect_backoff_max,
            synth,
        };
        let (status_tx, master_status) = watch::channel(MasterStatus::default());
        tasks.spawn(follower::run(
            fcfg,
            publisher.clone(),
            status_tx,
            shutdown.clone(),
        ));
        Ok(ServerHandle {
            dns_addr,
            http_addr,
            shutdown,
            tasks,
            snapshots,
            publisher,
            master_status,
        })
    }
}

/// The address this host uses for outgoing traffic (what `ns1.<domain>` answers with when we
/// listen on every interface). A connected UDP socket sends nothing; it only asks the
/// kernel's routing table. `None` without a default route.
fn primary_ip() -> Option<IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:53").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// Runs the daemon until `shutdown` is cancelled: starts the server, tells systemd we are
/// ready, and waits. This is all `capstan dns` does after loading its config.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let handle = Server::start(config, shutdown).await?;
    capstan_runtime::notify_ready();
    handle.wait().await;
    capstan_runtime::notify_stopping();
    Ok(())
}

/// Binds UDP and TCP on the same port; with port 0, retries until both get the same one.
async fn bind_dns(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                what: "DNS (UDP)",
                addr,
                source,
            })?;
        let bound = udp.local_addr().map_err(|source| StartError::Bind {
            what: "DNS (UDP)",
            addr,
            source,
        })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) if addr.port() == 0 => last = Some(source),
            Err(source) => {
                return Err(StartError::Bind {
                    what: "DNS (TCP)",
                    addr: bound,
                    source,
                });
            }
        }
    }
    Err(StartError::Bind {
        what: "DNS (TCP)",
        addr,
        source: last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")),
    })
}

fn build_forwarder(config: &Config) -> Forwarder {
    let mut default: Vec<SocketAddr> = config
        .resolvers
        .iter()
        .filter_map(|r| parse_upstream(r))
        .collect();
    if default.is_empty() {
        default = std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default();
    }
    let zones = config
        .zone_resolvers
        .iter()
        .map(|(z, list)| {
            (
                z.clone(),
                list.iter().filter_map(|r| parse_upstream(r)).collect(),
            )
        })
        .collect();
    Forwarder::new(
        default,
        zones,
        config.forward_timeout,
        config.forward_cache_entries,
    )
}

async fn udp_loop(
    sock: Arc<UdpSocket>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    cfg: ResponderConfig,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
) {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_FORWARDS));
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "UDP receive failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let snap = snapshots.borrow().clone();
        let verdict = resolve::handle(&buf[..n], Transport::Udp, &snap, &cfg, &mut rand::rng());
        match verdict {
            Verdict::Respond(bytes) => {
                if let Err(e) = sock.send_to(&bytes, peer).await {
                    debug!(peer = %peer, error = %e, "UDP send failed");
                }
            }
            Verdict::Forward(req) => {
                let Ok(permit) = inflight.clone().try_acquire_owned() else {
                    debug!(peer = %peer, "Too many forwarded queries in flight; dropping one");
                    continue;
                };
                let (sock, forwarder) = (sock.clone(), forwarder.clone());
                tokio::spawn(async move {
                    let bytes = forwarder.forward(&req, &cfg).await;
                    let _ = sock.send_to(&bytes, peer).await;
                    drop(permit);
                });
            }
            Verdict::Drop => {}
        }
    }
}

async fn tcp_loop(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    cfg: ResponderConfig,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
) {
    let conns = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "TCP accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let (snapshots, forwarder, stop) = (snapshots.clone(), forwarder.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = tcp_conn(stream, snapshots, cfg, forwarder) => {
                    if let Err(e) = r {
                        debug!(peer = %peer, error = %e, "DNS-over-TCP connection ended");
                    }
                }
                _ = stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}

async fn tcp_conn(
    mut stream: TcpStream,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    cfg: ResponderConfig,
    forwarder: Arc<Forwarder>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        buf.resize(usize::from(len), 0);
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let verdict = {
            let snap = snapshots.borrow().clone();
            resolve::handle(&buf, Transport::Tcp, &snap, &cfg, &mut rand::rng())
        };
        let bytes = match verdict {
            Verdict::Respond(b) => b,
            Verdict::Forward(req) => forwarder.forward(&req, &cfg).await,
            Verdict::Drop => return Ok(()),
        };
        let Ok(n) = u16::try_from(bytes.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&bytes);
        stream.write_all(&out).await?;
    }
}
