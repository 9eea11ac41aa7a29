//! The dev cluster's identity, made once per state directory the first time `capstan dev up`
//! runs there, as `capstan cluster init` makes an installed cluster's: a cluster id (a
//! lowercase UUIDv4, which the DC/OS CLI insists on), the cluster CA, a certificate per master
//! for the router, and the first administrator (`admin`) with a generated password.
//!
//! Key decisions: the CA, the certificates and the records in coord come from
//! `capstan-install` (the same code an installed cluster runs), so the two cannot drift; the
//! password is kept in the 0600 `identity.json` (coord holds only its hash) so `capstan dev
//! status` can show it for as long as the cluster exists; the supervisor stores the records in
//! coord ([`seed`]) before it lets any router start, so a router never comes up without them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_install::pki::{Ca, CertifiedKey};
use capstan_install::state::{
    AdminRecord, ClusterInfo, ClusterState, StateError, generate_password, hash_password, now_ms,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::DevError;
use crate::layout::{Node, Role};
use crate::paths::{ClusterPaths, write_atomic_mode};

/// The first administrator's uid (as `capstan cluster init` names it).
pub const ADMIN_UID: &str = capstan_install::init::ADMIN_UID;
/// The cluster name dev clusters carry.
pub const CLUSTER_NAME: &str = "capstan-dev";
/// DNS names every master's router certificate carries besides its address.
pub const MASTER_NAMES: [&str; 2] = ["master.mesos", "leader.mesos"];

/// What `identity.json` holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub cluster_id: String,
    pub name: String,
    pub admin_uid: String,
    pub admin_password: String,
    pub created_ms: u64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cluster_id", &self.cluster_id)
            .field("admin_uid", &self.admin_uid)
            .finish_non_exhaustive()
    }
}

/// Reads `identity.json`, if the cluster has one.
pub fn read(paths: &ClusterPaths) -> Option<Identity> {
    let bytes = std::fs::read(paths.identity()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn read_text(path: &Path) -> Result<String, DevError> {
    std::fs::read_to_string(path).map_err(|source| DevError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The cluster's identity and CA: those of an earlier `up` in this state directory (coord
/// remembers the cluster across `down` and `up`), else new ones. Then (re)issues every
/// router's certificate from the CA, as config files are rewritten at every `up`.
pub fn ensure(nodes: &[Node], paths: &ClusterPaths) -> Result<(Identity, Ca), DevError> {
    let existing = match (
        read(paths),
        std::fs::read_to_string(paths.ca_cert()),
        std::fs::read_to_string(paths.ca_key()),
    ) {
        (Some(identity), Ok(cert_pem), Ok(key_pem)) => {
            Some((identity, Ca(CertifiedKey { cert_pem, key_pem })))
        }
        _ => None,
    };
    let (identity, ca) = match existing {
        Some(found) => found,
        None => {
            let identity = Identity {
                cluster_id: uuid::Uuid::new_v4().to_string(),
                name: CLUSTER_NAME.to_owned(),
                admin_uid: ADMIN_UID.to_owned(),
                admin_password: generate_password(),
                created_ms: now_ms(),
            };
            let ca = Ca::generate(&identity.name, &identity.cluster_id)?;
            write_atomic_mode(&paths.ca_key(), ca.0.key_pem.as_bytes(), 0o600)?;
            write_atomic_mode(&paths.ca_cert(), ca.0.cert_pem.as_bytes(), 0o644)?;
            let json = serde_json::to_vec_pretty(&identity).expect("an identity serialises");
            write_atomic_mode(&paths.identity(), &json, 0o600)?;
            info!(cluster_id = %identity.cluster_id, "Created the cluster's identity");
            (identity, ca)
        }
    };
    for node in nodes.iter().filter(|n| n.role == Role::Master && n.router) {
        write_router_cert(&ca, node, paths)?;
    }
    Ok((identity, ca))
}

/// Issues `node`'s router certificate (its address, `master.mesos`, `leader.mesos`,
/// `localhost`, `127.0.0.1`) and writes it, the key first and 0600.
pub fn write_router_cert(ca: &Ca, node: &Node, paths: &ClusterPaths) -> Result<(), DevError> {
    let address = IpAddr::V4(node.address);
    let cert = ca.issue_server(
        &address.to_string(),
        capstan_types::access::NodeRole::Master,
        &MASTER_NAMES,
        &[address],
    )?;
    write_atomic_mode(&paths.node_key(&node.name), cert.key_pem.as_bytes(), 0o600)?;
    write_atomic_mode(
        &paths.node_cert(&node.name),
        cert.cert_pem.as_bytes(),
        0o644,
    )
}

/// The cluster's records as coord keeps them.
pub fn records(identity: &Identity, ca_pem: &str) -> (ClusterInfo, AdminRecord) {
    let info = ClusterInfo {
        cluster_id: identity.cluster_id.clone(),
        name: identity.name.clone(),
        ca_pem: ca_pem.to_owned(),
        ca_fingerprint: capstan_install::pki::fingerprint(ca_pem),
        created_ms: identity.created_ms,
    };
    let admin = AdminRecord {
        uid: identity.admin_uid.clone(),
        password_hash: hash_password(&identity.admin_password),
    };
    (info, admin)
}

/// How long to wait between attempts while coord has no leader yet.
const SEED_RETRY: Duration = Duration::from_millis(300);

/// Stores the cluster's records in coord (`/capstan/cluster/{info,admin}`), retrying until
/// coord answers; storing them again at a later `up` is a no-op. `Ok(false)` if `shutdown`
/// came first.
pub async fn seed(
    coord_endpoints: Vec<String>,
    paths: ClusterPaths,
    shutdown: CancellationToken,
) -> Result<bool, DevError> {
    let identity = read(&paths).ok_or_else(|| {
        DevError::Refused(format!(
            "{} is missing: run `capstan dev up` again",
            paths.identity().display()
        ))
    })?;
    let ca_pem = read_text(&paths.ca_cert())?;
    // The hash is deliberately slow (PBKDF2, 600k rounds): off the async threads.
    let (info, admin) = tokio::task::spawn_blocking(move || records(&identity, &ca_pem))
        .await
        .map_err(|e| DevError::Refused(format!("hashing the admin password: {e}")))?;
    let coord = capstan_coord_client::Client::new(coord_endpoints.iter())
        .map_err(|e| DevError::Seed(StateError::Coord(e)))?;
    let state = ClusterState::new(coord);
    let mut attempts = 0u32;
    loop {
        match state.create(&info, &admin).await {
            Ok(()) => {
                info!(cluster_id = %info.cluster_id, "Cluster identity stored in coord");
                return Ok(true);
            }
            Err(e @ (StateError::OtherCluster(_) | StateError::Corrupt { .. })) => {
                return Err(DevError::Seed(e));
            }
            Err(e) => {
                attempts += 1;
                if attempts.is_multiple_of(20) {
                    warn!(error = %capstan_runtime::Chain(&e), "Still waiting for coord to store the cluster identity");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(SEED_RETRY) => {}
        }
    }
}

/// What `capstan dev status` shows of the identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCredentials {
    pub uid: String,
    pub password: String,
}

/// The CA certificate's path, if the cluster has one.
pub fn ca_path(paths: &ClusterPaths) -> Option<PathBuf> {
    let p = paths.ca_cert();
    p.exists().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::layout;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn identity_is_made_once_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::new(dir.path());
        let nodes = layout(3, 1, 0).unwrap();
        let (first, ca) = ensure(&nodes, &paths).unwrap();
        assert_eq!(first.admin_uid, "admin");
        let id = uuid::Uuid::parse_str(&first.cluster_id).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(first.cluster_id, first.cluster_id.to_lowercase());
        for secret in [
            paths.identity(),
            paths.ca_key(),
            paths.node_key("master-1"),
            paths.node_key("master-3"),
        ] {
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", secret.display());
        }
        assert!(!paths.node_cert("agent-1").exists());
        let (again, ca2) = ensure(&nodes, &paths).unwrap();
        assert_eq!(again, first);
        assert_eq!(ca2.0, ca.0);
        let (info, admin) = records(&again, &ca.0.cert_pem);
        assert_eq!(info.cluster_id, first.cluster_id);
        assert_eq!(info.ca_fingerprint, ca.fingerprint());
        assert!(capstan_install::state::verify_password(
            &first.admin_password,
            &admin.password_hash
        ));
    }

    #[test]
    fn a_router_certificate_names_the_master_and_its_mesos_names() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::new(dir.path());
        let nodes = layout(1, 1, 7).unwrap();
        let (_, ca) = ensure(&nodes, &paths).unwrap();
        let cert_pem = std::fs::read_to_string(paths.node_cert("master-1")).unwrap();
        let key_pem = std::fs::read_to_string(paths.node_key("master-1")).unwrap();
        let node = CertifiedKey { cert_pem, key_pem };
        assert!(capstan_install::pki::server_config(&node).is_ok());
        assert!(capstan_install::pki::client_config(&ca.0.cert_pem).is_ok());
        // The names are in the certificate's subjectAltName (DER strings, readable as bytes).
        let der = pem_der(&node.cert_pem);
        for name in ["master.mesos", "leader.mesos", "localhost"] {
            assert!(
                der.windows(name.len()).any(|w| w == name.as_bytes()),
                "{name} missing"
            );
        }
        assert!(
            der.windows(4).any(|w| w == [127, 7, 1, 1]),
            "address missing"
        );
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }
}
