//! The cluster's identity records kept in coord under `keyspace::CLUSTER` (`/capstan/cluster`):
//! `info` (who the cluster is: id, name, CA) and `admin` (the first administrator). They live
//! here, not in the installer, because the installer writes them and the router reads them
//! (`/metadata`'s `CLUSTER_ID`, `/ca/dcos-ca.crt`, the first login), and both must agree on the
//! JSON shape. Unknown fields are refused so a record from a newer writer is noticed, not
//! silently half-read.

use serde::{Deserialize, Serialize};

/// The cluster's identity (`/capstan/cluster/info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub name: String,
    /// The CA certificate, PEM, exactly as `GET /v1/cluster/ca.pem` serves it.
    pub ca_pem: String,
    pub ca_fingerprint: String,
    pub created_ms: u64,
}

/// The first administrator (`/capstan/cluster/admin`), imported once into the router's
/// identity store (`capstan-iam`), which owns users from then on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminRecord {
    pub uid: String,
    /// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`.
    pub password_hash: String,
}
