//! `capstan cluster join`: the node side of joining, which `install.sh` runs once the package
//! is installed.
//!
//! The CA certificate is fetched first — from `--ca FILE` (install.sh already fetched and
//! checked it) or from the master over an unverified connection — and its hash compared with
//! the token's before anything else happens (a short token names no CA: then the master must
//! prove it knows the token's secret, bound to that CA; see [`crate::token::ca_proof`]); from
//! then on only that CA is trusted. Then the token is presented, and the node certificate and
//! node config the master answers with are written. A node that has already joined this
//! cluster is left alone.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bootstrap::{ApiError, JoinRequest, JoinResponse};
use crate::https::{self, Server};
use crate::layout::{Layout, Membership, write_file};
use crate::pki;
use crate::token::{JoinToken, PresentedToken, Role, ShortToken};

#[derive(Debug, Clone)]
pub struct JoinOptions {
    pub server: Server,
    pub token: PresentedToken,
    pub role: Role,
    pub advertise: Option<IpAddr>,
    pub hostname: Option<String>,
    /// A CA certificate already fetched (and checked) by `install.sh`.
    pub ca_file: Option<PathBuf>,
    /// An agent for the public role (`slave_public`, DC/OS's public agents: edge load
    /// balancers and anything reachable from outside).
    pub public: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// This run joined the node.
    Joined(Membership),
    /// The node had already joined this cluster; nothing changed.
    AlreadyJoined(Membership),
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "the master's CA certificate does not match the join token (token expects {expected}, \
         the master presents {presented}): the token is for another cluster, or something \
         between this node and the master is not the master"
    )]
    CaMismatch { expected: String, presented: String },
    #[error(
        "this node already belongs to cluster {cluster_id} (CA {fingerprint}); uninstall it first (capstan-uninstall)"
    )]
    OtherCluster {
        cluster_id: String,
        fingerprint: String,
    },
    #[error("this node already joined as {joined}; uninstall it before joining as {asked}")]
    OtherRole { joined: Role, asked: Role },
    #[error(
        "the master could not prove it knows the join token {id}: the token is not this \
         cluster's, or something between this node and the master is not the master"
    )]
    NoProof { id: String },
    #[error("the master refused to join this node: {message} ({code})")]
    Refused { code: String, message: String },
    #[error("the master answered {status}: {body}")]
    Unexpected { status: u16, body: String },
    #[error(transparent)]
    Http(#[from] https::ClientError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("cannot tell this node's address towards {server}; pass --advertise")]
    Advertise {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: PathBuf) -> impl FnOnce(std::io::Error) -> JoinError {
    move |source| JoinError::Io { path, source }
}

/// The cluster's CA certificate and the token pinned to it: fetched from the master (or read
/// from `ca_file`) and checked against the token's CA hash, or for a short token against the
/// master's proof that it knows the token.
pub async fn pinned_ca(opts: &JoinOptions) -> Result<(String, JoinToken), JoinError> {
    let ca = match &opts.ca_file {
        Some(path) => std::fs::read_to_string(path).map_err(io(path.clone()))?,
        None => {
            String::from_utf8_lossy(&get_unverified(opts, "/v1/cluster/ca.pem").await?).into_owned()
        }
    };
    let presented = pki::fingerprint(&ca);
    match &opts.token {
        PresentedToken::Pinned(token) if token.ca_hash == presented => Ok((ca, token.clone())),
        PresentedToken::Pinned(token) => Err(JoinError::CaMismatch {
            expected: token.ca_hash.clone(),
            presented,
        }),
        PresentedToken::Short(token) => {
            check_proof(opts, token, &presented).await?;
            Ok((ca, token.pin(&presented)))
        }
    }
}

/// Asks the master to prove it knows `token`'s secret, for the CA hashing to `fingerprint`.
async fn check_proof(
    opts: &JoinOptions,
    token: &ShortToken,
    fingerprint: &str,
) -> Result<(), JoinError> {
    let nonce = crate::token::generate_nonce();
    let path = format!("/v1/cluster/ca-proof?token={}&nonce={nonce}", token.id);
    let proof = while_initializing(|| get_unverified(opts, &path)).await?;
    let proof = String::from_utf8_lossy(&proof);
    if crate::token::check_ca_proof(token, &nonce, fingerprint, &proof) {
        Ok(())
    } else {
        Err(JoinError::NoProof {
            id: token.id.clone(),
        })
    }
}

/// How long a join waits for a master whose `cluster init` is still running (it answers
/// `503 not_initialized` until the cluster's record is stored), and how often it asks.
const INIT_WAIT: Duration = Duration::from_secs(120);
const INIT_POLL: Duration = Duration::from_secs(2);

/// Runs `call` again while the master says its cluster is not initialized yet, for up to
/// [`INIT_WAIT`]: nodes started together with the first master's `cluster init` (one
/// Terraform apply, preset tokens) may ask before it is done.
async fn while_initializing<T, F, Fut>(mut call: F) -> Result<T, JoinError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, JoinError>>,
{
    let deadline = Instant::now() + INIT_WAIT;
    loop {
        match call().await {
            Err(JoinError::Refused { code, .. })
                if code == "not_initialized" && Instant::now() < deadline =>
            {
                tracing::info!("the master's cluster is not initialized yet; waiting");
                tokio::time::sleep(INIT_POLL).await;
            }
            other => return other,
        }
    }
}

/// A GET to the master before its CA is known: nothing secret goes over it.
async fn get_unverified(opts: &JoinOptions, path: &str) -> Result<Vec<u8>, JoinError> {
    let resp = https::request(
        &opts.server,
        https::accept_any_certificate(),
        http::Method::GET,
        path,
        None,
    )
    .await?;
    if !resp.status.is_success() {
        return Err(unexpected(&resp));
    }
    Ok(resp.body.to_vec())
}

fn unexpected(resp: &https::Response) -> JoinError {
    if let Ok(e) = serde_json::from_slice::<ApiError>(&resp.body) {
        return JoinError::Refused {
            code: e.code,
            message: e.message,
        };
    }
    JoinError::Unexpected {
        status: resp.status.as_u16(),
        body: String::from_utf8_lossy(&resp.body)
            .chars()
            .take(500)
            .collect(),
    }
}

/// The local address this node reaches `server` from.
pub async fn local_address_towards(server: &Server) -> Result<IpAddr, JoinError> {
    let err = |source| JoinError::Advertise {
        server: server.to_string(),
        source,
    };
    let target: SocketAddr = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .map_err(err)?
        .next()
        .ok_or_else(|| err(std::io::Error::other("the name has no address")))?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(err)?;
    // A UDP connect sends nothing: it only picks the route and so the source address.
    socket.connect(target).await.map_err(err)?;
    Ok(socket.local_addr().map_err(err)?.ip())
}

/// This machine's host name.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A master hands the package to the nodes that join through it: a joining master takes a
/// copy from the master it joins through.
async fn fetch_package(layout: &Layout, opts: &JoinOptions, ca: &str) -> Result<(), JoinError> {
    let tls = Arc::new(pki::client_config(ca)?);
    let path = format!("/v1/packages/{}", crate::bootstrap::PACKAGE_FILE);
    let resp = https::request(&opts.server, tls, http::Method::GET, &path, None).await?;
    if resp.status == http::StatusCode::NOT_FOUND {
        tracing::warn!(server = %opts.server, "The master has no package to copy; nodes cannot install through this master");
        return Ok(());
    }
    if !resp.status.is_success() {
        return Err(unexpected(&resp));
    }
    let dest = layout.packages().join(crate::bootstrap::PACKAGE_FILE);
    write_file(&dest, &resp.body, 0o644).map_err(io(dest))
}

/// A joined master whose coord member runs asks to be added to coord's membership
/// (`POST /v1/join/coord`); returns once it votes.
pub async fn join_coord(
    layout: &Layout,
    opts: &JoinOptions,
    advertise: IpAddr,
) -> Result<(), JoinError> {
    let ca = std::fs::read_to_string(layout.ca_cert()).map_err(io(layout.ca_cert()))?;
    let tls = Arc::new(pki::client_config(&ca)?);
    let body = serde_json::to_vec(&crate::bootstrap::JoinCoordRequest {
        token: opts.token.to_string(),
        advertise,
        member_id: configured_coord_id(layout),
    })
    .expect("request serializes");
    let resp = https::request(
        &opts.server,
        tls,
        http::Method::POST,
        "/v1/join/coord",
        Some(body),
    )
    .await?;
    if resp.status.is_success() {
        Ok(())
    } else {
        Err(unexpected(&resp))
    }
}

/// The coord member id this node's config gives it (`coord.id`, filled from `cluster:`).
fn configured_coord_id(layout: &Layout) -> Option<u64> {
    let text = std::fs::read_to_string(&layout.config).ok()?;
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    capstan_runtime::cluster::apply_cluster_defaults(&mut doc).ok()?;
    doc.get("coord")?.get("id")?.as_u64()
}

/// Joins this node to the cluster of `opts.token`, writing its config and keys under `layout`.
pub async fn join(layout: &Layout, opts: &JoinOptions) -> Result<JoinOutcome, JoinError> {
    if let Some(m) = Membership::read(layout).map_err(io(layout.membership()))? {
        // A short token names no CA: to compare with the cluster this node joined, learn the
        // CA (from the master's proof) first.
        let expected = match &opts.token {
            PresentedToken::Pinned(t) => t.ca_hash.clone(),
            PresentedToken::Short(_) => pinned_ca(opts).await?.1.ca_hash,
        };
        if m.ca_fingerprint != expected {
            return Err(JoinError::OtherCluster {
                cluster_id: m.cluster_id,
                fingerprint: m.ca_fingerprint,
            });
        }
        // A master is also an agent's superset only in tokens: the node runs one role.
        if m.role != opts.role {
            return Err(JoinError::OtherRole {
                joined: m.role,
                asked: opts.role,
            });
        }
        return Ok(JoinOutcome::AlreadyJoined(m));
    }
    let (ca, token) = pinned_ca(opts).await?;
    let tls = Arc::new(pki::client_config(&ca)?);
    let advertise = match opts.advertise {
        Some(ip) => ip,
        None => local_address_towards(&opts.server).await?,
    };
    let hostname = opts.hostname.clone().unwrap_or_else(system_hostname);
    let body = serde_json::to_vec(&JoinRequest {
        token: token.to_string(),
        role: opts.role,
        hostname,
        advertise,
    })
    .expect("join request serializes");
    let resp = while_initializing(|| async {
        let resp = https::request(
            &opts.server,
            tls.clone(),
            http::Method::POST,
            "/v1/join",
            Some(body.clone()),
        )
        .await?;
        if !resp.status.is_success() {
            return Err(unexpected(&resp));
        }
        Ok(resp)
    })
    .await?;
    let answer: JoinResponse =
        serde_json::from_slice(&resp.body).map_err(|e| JoinError::Unexpected {
            status: resp.status.as_u16(),
            body: format!("not a join answer: {e}"),
        })?;
    if answer.ca != ca {
        return Err(JoinError::CaMismatch {
            expected: token.ca_hash.clone(),
            presented: pki::fingerprint(&answer.ca),
        });
    }
    write_file(&layout.ca_cert(), answer.ca.as_bytes(), 0o644).map_err(io(layout.ca_cert()))?;
    write_file(&layout.node_cert(), answer.cert.as_bytes(), 0o644)
        .map_err(io(layout.node_cert()))?;
    write_file(&layout.node_key(), answer.key.as_bytes(), 0o600).map_err(io(layout.node_key()))?;
    if let Some(ca_key) = &answer.ca_key {
        write_file(&layout.ca_key(), ca_key.as_bytes(), 0o600).map_err(io(layout.ca_key()))?;
    }
    let config = if opts.public {
        crate::public_agent_config(&answer.config).map_err(|reason| JoinError::Unexpected {
            status: resp.status.as_u16(),
            body: format!("the node config from the master: {reason}"),
        })?
    } else {
        answer.config
    };
    write_file(&layout.config, config.as_bytes(), 0o644).map_err(io(layout.config.clone()))?;
    let membership = Membership {
        cluster_id: answer.cluster_id,
        name: answer.name,
        role: opts.role,
        ca_fingerprint: token.ca_hash.clone(),
        server: opts.server.to_string(),
    };
    if opts.role == Role::Master {
        fetch_package(layout, opts, &ca).await?;
    }
    membership.write(layout).map_err(io(layout.membership()))?;
    Ok(JoinOutcome::Joined(membership))
}
