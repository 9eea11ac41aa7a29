//! Who is calling and what they may do: the security mode of a cluster, the roles of users and
//! service accounts, the principals a daemon authenticates, and the rule that decides whether a
//! principal may make a call. Pure data and decisions; the daemons' HTTP guard
//! (`capstan_runtime::auth`) finds the credential and asks [`Principal::may`].
//!
//! Roles are ordered: `viewer` reads, `operator` also deploys, scales and kills (everything a
//! mutating call of the workload APIs does), `admin` also changes identities, keys and the
//! cluster itself. Nodes authenticate by the certificate the cluster CA issued them: a master
//! node acts as an administrator (its daemons drive the cluster), an agent node may read and
//! speak the agent protocol, nothing more.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a cluster's daemons treat their own ports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// The daemons' own ports trust the cluster network (`capstan dev`'s default, so plain
    /// `curl` to port 8080 works on a laptop). The router still requires a login.
    #[default]
    Permissive,
    /// Every call to a daemon carries a credential the daemon verifies itself.
    Strict,
}

impl SecurityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityMode::Permissive => "permissive",
            SecurityMode::Strict => "strict",
        }
    }
}

impl fmt::Display for SecurityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SecurityMode {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "permissive" => Ok(SecurityMode::Permissive),
            "strict" => Ok(SecurityMode::Strict),
            other => Err(UnknownName {
                what: "security mode",
                name: other.to_owned(),
                expected: "permissive, strict",
            }),
        }
    }
}

/// A name that is none of the expected ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?} (expected one of: {expected})")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub expected: &'static str,
}

/// What a user or service account may do. Ordered: each role may do all the lesser ones may.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Deploy, scale, restart and kill; no identity or cluster changes.
    Operator,
    /// Everything. Principals created before roles existed are administrators.
    #[default]
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "role",
                name: s.to_owned(),
                expected: "viewer, operator, admin",
            })
    }
}

/// The role a node's certificate names (its organizational unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Master,
    Agent,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Master => "master",
            NodeRole::Agent => "agent",
        }
    }

    /// The role a certificate's organizational unit names; a certificate without one (issued
    /// before roles were written into certificates) counts as an agent's, the lesser.
    pub fn from_unit(unit: Option<&str>) -> NodeRole {
        match unit {
            Some("master") => NodeRole::Master,
            _ => NodeRole::Agent,
        }
    }
}

/// Who made a call, once a daemon has verified the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user or service account, by a token or by HTTP basic authentication.
    Account { uid: String, role: Role },
    /// A node of this cluster, by the certificate the cluster CA issued it.
    Node { name: String, role: NodeRole },
    /// Nobody: no credential (permissive mode, or a public path).
    Anonymous,
}

impl Principal {
    /// A name for logs and the audit trail: the uid, `node:<name>` or `anonymous`.
    pub fn name(&self) -> String {
        match self {
            Principal::Account { uid, .. } => uid.clone(),
            Principal::Node { name, .. } => format!("node:{name}"),
            Principal::Anonymous => "anonymous".to_owned(),
        }
    }

    /// Whether this principal may make a call that needs `access`.
    pub fn may(&self, access: Access) -> bool {
        match (self, access) {
            (_, Access::Public) => true,
            (Principal::Anonymous, _) => false,
            (Principal::Account { role, .. }, Access::Role(needed)) => *role >= needed,
            (Principal::Account { role, .. }, Access::AgentProtocol) => *role == Role::Admin,
            (Principal::Node { role, .. }, Access::Role(needed)) => match role {
                NodeRole::Master => true,
                NodeRole::Agent => needed == Role::Viewer,
            },
            (Principal::Node { .. }, Access::AgentProtocol) => true,
        }
    }
}

/// The credential a client sends in its `Authorization` header. Its `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredential(String);

impl ClientCredential {
    /// HTTP basic authentication (a Mesos framework's principal and secret, or a user's uid and
    /// password).
    pub fn basic(principal: &str, secret: &str) -> ClientCredential {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{principal}:{secret}"));
        ClientCredential(format!("Basic {encoded}"))
    }

    /// A token the router issued, as DC/OS clients send it.
    pub fn token(token: &str) -> ClientCredential {
        ClientCredential(format!("token={token}"))
    }

    /// The `Authorization` header's value.
    pub fn header_value(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.0.split([' ', '=']).next().unwrap_or("");
        write!(f, "ClientCredential({scheme} …)")
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: health, version and the other paths anyone may read.
    Public,
    /// An account with at least this role, or a node allowed it (a master node: any role; an
    /// agent node: `viewer`).
    Role(Role),
    /// The protocol agents speak to masters and masters to agents: any node of the cluster,
    /// or an administrator.
    AgentProtocol,
}

impl Access {
    /// The usual rule of an HTTP API: reading needs `viewer`, anything else `operator`.
    pub fn by_method(method: &str) -> Access {
        if is_read(method) {
            Access::Role(Role::Viewer)
        } else {
            Access::Role(Role::Operator)
        }
    }
}

/// True for the methods that change nothing (`GET`, `HEAD`, `OPTIONS`).
pub fn is_read(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(role: Role) -> Principal {
        Principal::Account {
            uid: "u".into(),
            role,
        }
    }

    fn node(role: NodeRole) -> Principal {
        Principal::Node {
            name: "n".into(),
            role,
        }
    }

    #[test]
    fn who_may_do_what() {
        use Access::*;
        let viewer = Role(super::Role::Viewer);
        let operator = Role(super::Role::Operator);
        let admin = Role(super::Role::Admin);
        // (principal, access, allowed)
        let table = [
            (Principal::Anonymous, Public, true),
            (Principal::Anonymous, viewer, false),
            (Principal::Anonymous, AgentProtocol, false),
            (account(super::Role::Viewer), viewer, true),
            (account(super::Role::Viewer), operator, false),
            (account(super::Role::Viewer), admin, false),
            (account(super::Role::Operator), viewer, true),
            (account(super::Role::Operator), operator, true),
            (account(super::Role::Operator), admin, false),
            (account(super::Role::Operator), AgentProtocol, false),
            (account(super::Role::Admin), admin, true),
            (account(super::Role::Admin), AgentProtocol, true),
            (node(NodeRole::Master), admin, true),
            (node(NodeRole::Master), AgentProtocol, true),
            (node(NodeRole::Agent), viewer, true),
            (node(NodeRole::Agent), operator, false),
            (node(NodeRole::Agent), AgentProtocol, true),
        ];
        for (principal, access, allowed) in table {
            assert_eq!(
                principal.may(access),
                allowed,
                "{principal:?} needing {access:?}"
            );
        }
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_errors() {
        for role in super::Role::ALL {
            assert_eq!(role.as_str().parse::<super::Role>(), Ok(role));
            let json = format!("\"{role}\"");
            assert_eq!(serde_json::from_str::<super::Role>(&json).ok(), Some(role));
        }
        assert!("root".parse::<super::Role>().is_err());
        assert_eq!("strict".parse(), Ok(SecurityMode::Strict));
        assert!("lax".parse::<SecurityMode>().is_err());
        assert_eq!(SecurityMode::default(), SecurityMode::Permissive);
        assert_eq!(NodeRole::from_unit(Some("master")), NodeRole::Master);
        assert_eq!(NodeRole::from_unit(None), NodeRole::Agent);
        assert_eq!(NodeRole::from_unit(Some("other")), NodeRole::Agent);
    }

    #[test]
    fn client_credentials_are_header_values_that_debug_hides() {
        let b = ClientCredential::basic("fw", "s3cret");
        assert_eq!(b.header_value(), "Basic Znc6czNjcmV0");
        assert!(!format!("{b:?}").contains("Znc6"));
        let t = ClientCredential::token("abc");
        assert_eq!(t.header_value(), "token=abc");
        assert_eq!(format!("{t:?}"), "ClientCredential(token …)");
    }

    #[test]
    fn reads_need_a_viewer_and_writes_an_operator() {
        assert_eq!(Access::by_method("GET"), Access::Role(super::Role::Viewer));
        assert_eq!(Access::by_method("HEAD"), Access::Role(super::Role::Viewer));
        for m in ["POST", "PUT", "PATCH", "DELETE"] {
            assert_eq!(Access::by_method(m), Access::Role(super::Role::Operator));
        }
    }
}
