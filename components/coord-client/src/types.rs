//! Wire types of the coord HTTP/JSON API (see `docs/coord-api.md`).
//!
//! Values are bytes and travel as standard base64 strings; everything else is plain JSON.

use serde::{Deserialize, Serialize};

/// Largest value accepted by `put` (1 MiB). Bigger values are answered with 413.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Largest key accepted (in bytes).
pub const MAX_KEY_BYTES: usize = 4096;
/// The longest lease coord grants, in milliseconds (one hour): a client that needs longer
/// keeps its lease alive instead.
pub const MAX_LEASE_TTL_MS: u64 = 3_600_000;
/// Default and maximum page size of `list`.
pub const DEFAULT_LIST_LIMIT: u32 = 1000;
/// Header a member sets on a response to say which member it believes leads.
pub const LEADER_HEADER: &str = "x-capstan-coord-leader";

/// Identifier of a lease, assigned by the cluster.
pub type LeaseId = u64;

/// Checks that `key` is a `/`-separated path: starts with `/`, has no empty segment, no
/// trailing `/`, no NUL byte, and at most [`MAX_KEY_BYTES`] bytes.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key must not be empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("key is longer than {MAX_KEY_BYTES} bytes"));
    }
    if !key.starts_with('/') {
        return Err(format!("key {key:?} must start with '/'"));
    }
    if key.len() > 1 && key.ends_with('/') {
        return Err(format!("key {key:?} must not end with '/'"));
    }
    if key == "/" {
        return Err("key \"/\" has no segment".into());
    }
    if key.contains("//") {
        return Err(format!("key {key:?} has an empty segment"));
    }
    if key.contains('\0') {
        return Err(format!("key {key:?} contains a NUL byte"));
    }
    Ok(())
}

/// Checks a prefix for `list` and `watch`: starts with `/`, at most [`MAX_KEY_BYTES`] bytes.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("prefix {prefix:?} must start with '/'"));
    }
    if prefix.len() > MAX_KEY_BYTES {
        return Err(format!("prefix is longer than {MAX_KEY_BYTES} bytes"));
    }
    Ok(())
}

/// serde helper: `Vec<u8>` as a base64 string.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("value is not valid base64: {e}")))
    }
}

/// A stored key with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    /// Cluster revision of the key's last change (its version).
    pub version: u64,
    /// Cluster revision at which the key was created.
    pub create_revision: u64,
    /// Lease the key is attached to; the key is deleted when the lease ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
}

/// `POST /v1/kv/get`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    pub key: String,
    /// Read the local member's state without a quorum round (may be stale).
    #[serde(default)]
    pub serializable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// Cluster revision the read observed.
    pub revision: u64,
    pub kv: Option<KeyValue>,
}

/// `POST /v1/kv/list`: keys starting with `prefix`, sorted, after `after` (exclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    pub prefix: String,
    /// Page size, at most [`DEFAULT_LIST_LIMIT`] (also the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Continuation: only keys strictly greater than this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default)]
    pub serializable: bool,
    /// Return keys and metadata only (values empty).
    #[serde(default)]
    pub keys_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    pub revision: u64,
    pub kvs: Vec<KeyValue>,
    /// More keys follow: ask again with `after` = the last key of `kvs`.
    pub more: bool,
}

/// `POST /v1/kv/put`. `if_version: 0` is create-if-absent; `if_version: N` is
/// compare-and-swap on the key's version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    pub key: String,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// Revision of this change, which is also the key's new version.
    pub revision: u64,
    /// The key as it was before, if it existed.
    #[serde(default)]
    pub prev: Option<KeyValue>,
}

/// `POST /v1/kv/delete`, optionally only if the key has version `if_version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// Cluster revision after the request (unchanged if nothing was deleted).
    pub revision: u64,
    /// The deleted key, or `None` if there was none.
    pub prev: Option<KeyValue>,
}

/// One comparison of a transaction: the key's version equals `version` (0 = absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    pub key: String,
    pub version: u64,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum TxnOp {
    Put {
        key: String,
        #[serde(with = "b64")]
        value: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
}

/// `POST /v1/kv/txn`: if every compare holds, apply `success`, else `failure`; atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    #[serde(default)]
    pub compares: Vec<Compare>,
    #[serde(default)]
    pub success: Vec<TxnOp>,
    #[serde(default)]
    pub failure: Vec<TxnOp>,
}

/// Result of one [`TxnOp`]: for put and delete the previous key, for get the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOpResult {
    pub kv: Option<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub revision: u64,
    pub results: Vec<TxnOpResult>,
}

/// `POST /v1/watch`: stream of [`WatchResponse`] lines (NDJSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    /// The key, or the prefix if `prefix` is true.
    pub key: String,
    #[serde(default)]
    pub prefix: bool,
    /// First revision to deliver; absent = changes after the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_revision: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv.value` is empty and `kv.version` is the deletion revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

impl Event {
    pub fn revision(&self) -> u64 {
        self.kv.version
    }
}

/// One line of a watch stream. `events` are all the matching changes of revisions up to and
/// including `revision` not sent before (a line never splits a revision); an empty `events` is
/// a progress notification. A line with `error` ends the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    pub revision: u64,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// `POST /v1/lease/grant`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseGrantRequest {
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    pub id: LeaseId,
    pub ttl_ms: u64,
}

/// `POST /v1/lease/keepalive` and `POST /v1/lease/revoke`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseIdRequest {
    pub id: LeaseId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeepAliveResponse {
    pub id: LeaseId,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevokeResponse {
    pub revision: u64,
}

/// A member of the coord cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    /// Voting member (false: learner, still catching up).
    pub voter: bool,
}

/// `GET /v1/members`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    pub leader: Option<u64>,
    pub members: Vec<Member>,
}

/// `POST /v1/members/add`: joins `addr` as learner, waits for it to catch up, then makes it vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub id: u64,
    pub addr: String,
}

/// `POST /v1/members/remove`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveMemberRequest {
    pub id: u64,
}

/// Health of one member as seen by the member answering `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    pub healthy: bool,
    pub is_leader: bool,
}

/// `GET /v1/status`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The member that answered.
    pub id: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub members: Vec<MemberStatus>,
}

/// Error body of every non-2xx answer: a stable `code` and a human `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// `bad_request`, `too_large`, `not_found`, `conflict`, `compacted`, `lease_not_found`,
    /// `not_leader`, `unavailable`, `outcome_unknown`, `internal`.
    pub code: String,
    pub message: String,
    /// Address of the leader, when known (for `not_leader`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Current version of the key (for `conflict`; 0 = absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// Oldest revision still watchable minus one (for `compacted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_revision: Option<u64>,
}

impl ApiError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            code: code.into(),
            message: message.into(),
            leader: None,
            current_version: None,
            compact_revision: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_slash_separated_paths() {
        for ok in ["/a", "/a/b", "/mesos/json.info_0000000001"] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "/", "/a/", "/a//b", "/a\0"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_travel_as_base64() {
        let req = PutRequest {
            key: "/a".into(),
            value: b"hi".to_vec(),
            ..Default::default()
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"key":"/a","value":"aGk="}"#);
        let back: PutRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn txn_ops_are_tagged() {
        let op: TxnOp = serde_json::from_str(r#"{"op":"delete","key":"/x"}"#).unwrap();
        assert_eq!(op, TxnOp::Delete { key: "/x".into() });
    }
}
