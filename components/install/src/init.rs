//! `capstan cluster init`: creating a cluster on its first master.
//!
//! Two steps, because the second needs coord, which the first configures:
//! [`prepare`] makes the CA, this master's certificate, the cluster id, the administrator's
//! password and the first two join tokens, and writes the node config; once the master's
//! daemons run, [`seed`] stores the cluster's records in coord. What `prepare` made is kept in
//! a 0600 file until `seed` has stored it, so an init interrupted between the two resumes with
//! the same cluster instead of making a second one.

use std::net::IpAddr;
use std::path::PathBuf;

use capstan_runtime::ClusterConfig;
use capstan_runtime::auth::SecurityMode;
use capstan_runtime::cluster::ClusterSecurity;
use serde::{Deserialize, Serialize};

use crate::layout::{Layout, Membership, write_file};
use crate::pki::{Ca, PkiError};
use crate::state::{AdminRecord, ClusterInfo, ClusterState, StateError, hash_password, now_ms};
use crate::token::{JoinToken, Role, ShortToken, TokenRecord};

/// The administrator `cluster init` creates.
pub const ADMIN_UID: &str = "admin";

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub name: String,
    /// This master's address, which every other node reaches it at.
    pub advertise: IpAddr,
    pub hostname: Option<String>,
    /// The package joining nodes download from this master.
    pub package: Option<PathBuf>,
    /// Join tokens chosen before the cluster existed (Terraform, a VM's user-data): the
    /// cluster takes these instead of making its own.
    pub master_token: Option<ShortToken>,
    pub agent_token: Option<ShortToken>,
    /// The cluster's security mode: strict gives every daemon TLS and authenticated calls
    /// only (`cluster.security`, which every joining node's config inherits).
    pub security: SecurityMode,
}

/// What [`prepare`] made: secrets included, so it lives only in a 0600 file until seeded.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepared {
    pub info: ClusterInfo,
    pub url: String,
    pub admin_password: String,
    pub master_token: String,
    pub agent_token: String,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("cluster_id", &self.info.cluster_id)
            .finish_non_exhaustive()
    }
}

/// What `cluster init --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitOutcome {
    pub url: String,
    pub cluster_id: String,
    pub admin: AdminCredentials,
    pub tokens: Tokens,
    pub ca_fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCredentials {
    pub uid: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub master: String,
    pub agent: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "this node already belongs to cluster {0}; to start over, purge the package (apt-get purge capstan) and install again"
    )]
    AlreadyInitialized(String),
    #[error("the cluster options are invalid: {0}")]
    Invalid(String),
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    State(#[from] StateError),
}

fn io(path: PathBuf) -> impl FnOnce(std::io::Error) -> InitError {
    move |source| InitError::Io { path, source }
}

fn pending(layout: &Layout) -> PathBuf {
    layout.state.join("cluster/init-pending.json")
}

/// Creates the cluster's files on this node, or returns what an interrupted earlier run made.
pub fn prepare(layout: &Layout, opts: &InitOptions) -> Result<Prepared, InitError> {
    if let Ok(bytes) = std::fs::read(pending(layout))
        && let Ok(prepared) = serde_json::from_slice::<Prepared>(&bytes)
    {
        return Ok(prepared);
    }
    if let Some(m) = Membership::read(layout).map_err(io(layout.membership()))? {
        return Err(InitError::AlreadyInitialized(m.cluster_id));
    }
    let cluster = ClusterConfig {
        name: opts.name.clone(),
        masters: vec![opts.advertise],
        advertise: opts.advertise,
        hostname: opts.hostname.clone(),
        containers: Default::default(),
        security: ClusterSecurity {
            mode: opts.security,
            ..Default::default()
        },
    };
    let mut problems: Vec<String> = cluster.problems().iter().map(ToString::to_string).collect();
    if let (Some(m), Some(a)) = (&opts.master_token, &opts.agent_token)
        && m.id == a.id
    {
        problems.push("the master and agent tokens need different ids".to_owned());
    }
    if !problems.is_empty() {
        return Err(InitError::Invalid(problems.join("; ")));
    }
    let cluster_id = uuid::Uuid::new_v4().to_string();
    let ca = Ca::generate(&opts.name, &cluster_id)?;
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| opts.advertise.to_string());
    let node = ca.issue_server(
        &hostname,
        capstan_types::access::NodeRole::Master,
        crate::pki::MASTER_NAMES,
        &[opts.advertise],
    )?;
    write_file(&layout.ca_cert(), ca.0.cert_pem.as_bytes(), 0o644).map_err(io(layout.ca_cert()))?;
    write_file(&layout.ca_key(), ca.0.key_pem.as_bytes(), 0o600).map_err(io(layout.ca_key()))?;
    write_file(&layout.node_cert(), node.cert_pem.as_bytes(), 0o644)
        .map_err(io(layout.node_cert()))?;
    write_file(&layout.node_key(), node.key_pem.as_bytes(), 0o600)
        .map_err(io(layout.node_key()))?;
    if let Some(package) = &opts.package {
        let dest = layout.packages().join(crate::bootstrap::PACKAGE_FILE);
        let data = std::fs::read(package).map_err(io(package.clone()))?;
        write_file(&dest, &data, 0o644).map_err(io(dest))?;
    }
    let config = crate::render_node_config(&cluster, Role::Master, crate::Written::Init);
    write_file(&layout.config, config.as_bytes(), 0o644).map_err(io(layout.config.clone()))?;

    let fingerprint = ca.fingerprint();
    let prepared = Prepared {
        info: ClusterInfo {
            cluster_id: cluster_id.clone(),
            name: opts.name.clone(),
            ca_pem: ca.0.cert_pem.clone(),
            ca_fingerprint: fingerprint.clone(),
            created_ms: now_ms(),
        },
        url: format!("https://{}", url_host(opts.advertise)),
        admin_password: crate::state::generate_password(),
        master_token: preset_or_new(opts.master_token.as_ref(), &fingerprint),
        agent_token: preset_or_new(opts.agent_token.as_ref(), &fingerprint),
    };
    let text = serde_json::to_vec_pretty(&prepared).expect("prepared serializes");
    write_file(&pending(layout), &text, 0o600).map_err(io(pending(layout)))?;
    Membership {
        cluster_id,
        name: opts.name.clone(),
        role: Role::Master,
        ca_fingerprint: fingerprint,
        server: String::new(),
    }
    .write(layout)
    .map_err(io(layout.membership()))?;
    Ok(prepared)
}

/// The full text of the preset token pinned to the new CA, or of a new token.
fn preset_or_new(preset: Option<&ShortToken>, fingerprint: &str) -> String {
    match preset {
        Some(t) => t.pin(fingerprint).to_string(),
        None => JoinToken::generate(fingerprint).to_string(),
    }
}

/// `host` for a URL: IPv6 addresses in brackets.
pub fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Stores the prepared cluster in coord and forgets the secrets on this node.
pub async fn seed(
    layout: &Layout,
    state: &ClusterState,
    prepared: &Prepared,
) -> Result<InitOutcome, InitError> {
    let admin = AdminRecord {
        uid: ADMIN_UID.to_owned(),
        password_hash: hash_password(&prepared.admin_password),
    };
    // The tokens are stored before the cluster record: a master serves `install.sh` as soon as
    // the record exists, and a node joining with a preset token at that moment must find it
    // (before the record exists, the CA proof of an unknown token answers "not initialized",
    // which `install.sh` waits out). A record of another cluster is refused before anything
    // is written.
    match state.info().await? {
        Some(existing) if existing.cluster_id != prepared.info.cluster_id => {
            return Err(StateError::OtherCluster(existing.cluster_id).into());
        }
        _ => {}
    }
    let now = now_ms();
    for (text, role) in [
        (&prepared.master_token, Role::Master),
        (&prepared.agent_token, Role::Agent),
    ] {
        let token: JoinToken = text
            .parse()
            .map_err(|e| InitError::Invalid(format!("{e}")))?;
        let mut record = TokenRecord::new(&token, role, now, None);
        record.description = format!("made by cluster init for {role} nodes");
        state.put_token(&record).await?;
    }
    state.create(&prepared.info, &admin).await?;
    let _ = std::fs::remove_file(pending(layout));
    Ok(InitOutcome {
        url: prepared.url.clone(),
        cluster_id: prepared.info.cluster_id.clone(),
        admin: AdminCredentials {
            uid: ADMIN_UID.to_owned(),
            password: prepared.admin_password.clone(),
        },
        tokens: Tokens {
            master: prepared.master_token.clone(),
            agent: prepared.agent_token.clone(),
        },
        ca_fingerprint: prepared.info.ca_fingerprint.clone(),
    })
}
