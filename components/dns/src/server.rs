//! The I/O shell: binds UDP and TCP on the DNS port and the HTTP API, runs the stream
//! follower, and serves DNS through hickory-server, whose request handler hands every query
//! to the pure responder with the current snapshot.
//!
//! hickory-server owns the sockets: UDP receive and send, TCP framing with pipelining and the
//! idle timeout, FORMERR for an unreadable body, silence for runts and for responses.
//! [`Responder`] is the thin part between it and [`resolve::respond`]: it picks the
//! snapshot, the transport's size limit, forwards names outside our zones (bounding the
//! forwarded UDP queries in flight) and hands the cut answer back to hickory to encode.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capstan_runtime::auth::{Guard, Policy, SecurityMode};
use capstan_runtime::{ConfigProblem, TlsServing, Validate};
use hickory_proto::op::{Header, HeaderCounts};
use hickory_proto::serialize::binary::BinDecoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, parse_resolv_conf, parse_upstream};
use crate::follower::{self, FollowerConfig, MasterStatus};
use crate::forward::Forwarder;
use crate::labels::LabelSpec;
use crate::records::{DCOS_ZONE, L4LB_ZONE, RecordSet, SynthConfig};
use crate::resolve::{self, Outcome, ResponderConfig, Transport};
use crate::snapshot::{Producer, Snapshot, SoaParams, Zone};

/// Most forwarded UDP queries in flight at once; more are dropped (the client retries).
const MAX_INFLIGHT_FORWARDS: usize = 1024;
/// An idle DNS-over-TCP connection is closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Responses queued for one DNS-over-TCP connection (a pipelining client reads them in order).
const TCP_RESPONSE_BUFFER: usize = 64;

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
    #[error("cannot load the node's TLS identity")]
    Tls(#[source] capstan_runtime::tls::TlsError),
    #[error("cannot create the coord client")]
    Coord(#[source] capstan_coord_client::ClientError),
    #[error("cannot secure the HTTP API")]
    Security(#[source] capstan_iam::GuardError),
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
    pub async fn wait(mut self) -> capstan_runtime::Exit {
        while self.tasks.join_next().await.is_some() {}
        capstan_runtime::Exit::Requested
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
                Zone::new(&name, ttl, &soa)
                    .map_err(|source| StartError::Zone { name, source })?
                    .with_negative_ttl(config.soa_minttl),
            );
        }
        // DC/OS serves the Mesos-DNS names again under `mesos.thisdcos.directory`.
        let mirror = crate::records::MESOS_MIRROR_ZONE;
        if config.dcos_zone
            && zones
                .iter()
                .all(|z| !z.contains(&crate::snapshot::fqdn(mirror)))
        {
            let z = Zone::mirror(mirror, &config.domain, config.ttl, &soa)
                .map_err(|source| StartError::Zone {
                    name: mirror.to_owned(),
                    source,
                })?
                .with_negative_ttl(config.soa_minttl);
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
            l4lb_zone: config.l4lb_zone,
            vip: config.vip_config(),
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
            let responder = Responder {
                snapshots: snapshots.clone(),
                cfg: responder,
                forwarder: Arc::new(build_forwarder(&config)),
                udp_forwards: Arc::new(Semaphore::new(MAX_INFLIGHT_FORWARDS)),
                external_from: config.external_from.clone().into(),
            };
            let mut dns = hickory_server::Server::new(responder);
            dns.register_socket(udp);
            dns.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
            let (stop_dns, stop) = (dns.shutdown_token().clone(), shutdown.clone());
            tasks.spawn(async move {
                stop.cancelled().await;
                stop_dns.cancel();
            });
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = dns.block_until_done().await
                    && !stop.is_cancelled()
                {
                    warn!(error = %capstan_runtime::Chain(&e), "DNS server stopped");
                }
            });
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
            let (guard, tls) = secure_api(&config, &shutdown).await?;
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let limits = capstan_runtime::HttpLimits::default();
                let serve = capstan_runtime::serve_secured(listener, app, limits, guard, tls, stop);
                if let Err(e) = serve.await {
                    warn!(error = %capstan_runtime::Chain(&e), "HTTP API stopped");
                }
            });
        }
        let fcfg = FollowerConfig {
            masters: config.masters.clone(),
            timeout: config.master_timeout,
            missed_heartbeats: config.missed_heartbeats,
            backoff_max: config.reconnect_backoff_max,
            synth,
            tls: config.security.client_tls().map_err(StartError::Tls)?,
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

/// The HTTP API's guard and TLS as `config.security` says. In strict mode tokens and basic
/// credentials are verified against the identity records in coord when `coord_endpoints`
/// names it (the coord client presenting the node's certificate); without coord only the
/// cluster's node certificates may call, as on an agent.
async fn secure_api(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(Guard, Option<TlsServing>), StartError> {
    let policy: Policy = Arc::new(crate::http::access);
    if config.security.mode == SecurityMode::Strict && config.coord_endpoints.is_empty() {
        info!("No coord endpoints: only the cluster's node certificates may call the HTTP API");
        let node_tls = config.security.node_tls().map_err(StartError::Tls)?;
        let tls = config.security.serving(node_tls.as_ref());
        return Ok((Guard::strict("dns", None, policy), tls));
    }
    let coord = if config.security.mode == SecurityMode::Strict {
        let opts = capstan_coord_client::ClientOptions {
            tls: config.security.client_tls().map_err(StartError::Tls)?,
            ..capstan_coord_client::ClientOptions::default()
        };
        Some(
            capstan_coord_client::Client::with_options(&config.coord_endpoints, opts)
                .map_err(StartError::Coord)?,
        )
    } else {
        None
    };
    capstan_iam::secure_api("dns", &config.security, coord.as_ref(), policy, shutdown)
        .await
        .map_err(StartError::Security)
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

/// Capstan's responder as hickory-server's request handler.
struct Responder {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    cfg: ResponderConfig,
    forwarder: Arc<Forwarder>,
    /// Permits for forwarded UDP queries in flight (TCP connections wait for theirs in turn).
    udp_forwards: Arc<Semaphore>,
    /// Who may have outside names forwarded (`external_from`).
    external_from: Arc<[ipnet::IpNet]>,
}

impl Responder {
    async fn answer<R: ResponseHandler>(&self, request: &Request, mut reply: R) -> ResponseInfo {
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let view = resolve::Request {
            metadata: request.metadata,
            query_count: request.queries.len(),
            query: request.queries.queries().first().map(|q| q.original()),
            edns: request.edns.as_ref(),
        };
        let outcome = {
            let snap = self.snapshots.borrow().clone();
            resolve::respond(&view, transport, &snap, &self.cfg, &mut rand::rng())
        };
        let resp = match outcome {
            Outcome::Respond(resp) => resp,
            Outcome::Forward(_)
                if !resolve::may_forward(request.src().ip(), &self.external_from) =>
            {
                debug!(peer = %request.src(), "Refused to forward for a client outside external_from");
                resolve::refused(&view, transport, &self.cfg)
            }
            Outcome::Forward(req) => {
                let _permit = match transport {
                    Transport::Udp => match self.udp_forwards.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            debug!(peer = %request.src(), "Too many forwarded queries in flight; dropping one");
                            return unanswered(request);
                        }
                    },
                    Transport::Tcp => None,
                };
                let msg = self.forwarder.answer(&req).await;
                resolve::Response::from_message(msg).fit(view.query, req.max_size, &self.cfg)
            }
        };
        let no_question;
        let queries = if resp.echo_question {
            &request.queries
        } else {
            no_question = Queries::read(&mut BinDecoder::new(&[]), 0);
            match &no_question {
                Ok(q) => q,
                Err(_) => &request.queries,
            }
        };
        let message = MessageResponseBuilder::new(queries, resp.edns.as_ref()).build(
            resp.metadata,
            &resp.answers,
            &resp.authorities,
            [],
            &resp.additionals,
        );
        match reply.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                debug!(peer = %request.src(), error = %capstan_runtime::Chain(&e), "Sending a DNS response failed");
                unanswered(request)
            }
        }
    }
}

/// What hickory-server is told about a request we did not answer.
fn unanswered(request: &Request) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata: request.metadata,
        counts: HeaderCounts::default(),
    })
}

// `RequestHandler` is an `async_trait`; this is the signature that macro gives it.
impl RequestHandler for Responder {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: ResponseHandler + 'async_trait,
        T: Time + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.answer(request, response_handle))
    }
}
