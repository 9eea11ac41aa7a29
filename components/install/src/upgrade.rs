//! Rolling upgrades: `capstan cluster upgrade --package FILE`.
//!
//! Key decisions:
//! - **How the package reaches a node, without ssh.** Every node's bootstrap server (masters
//!   and agents alike) listens on `https://<advertise>:8091` ([`NODE_PORT`]) with the node's
//!   certificate and serves `GET /v1/node` (package version, the role's units, the last
//!   upgrade's result) and `PUT /v1/node/upgrade` (the `.deb`). The daemon only writes the
//!   file to `<state>/upgrade/capstan.deb`; `capstan-upgrade.path` sees it and starts
//!   `capstan-upgrade.service`, which runs `dpkg -i` in a unit of its own, so the upgrade
//!   outlives the restart of every Capstan daemon (the bootstrap server included) that the
//!   package's postinst does.
//! - **Who may upload.** An upload carries a [`Grant`]: the node's address, the package's
//!   SHA-256 and the time, signed with the cluster CA's key, which only masters hold. A node
//!   checks it against the CA certificate every node has (`pki/ca.pem`), so no new secret is
//!   handed out at join and nodes joined before this existed can be upgraded.
//! - **The plan** ([`plan`], [`may_take_down`], [`next`]) is pure: masters first, coord's
//!   leader last among them (one election, not one per master); then agents. A master is
//!   taken down only when the other healthy voters still make a quorum (a single master is
//!   the one exception: it cannot keep a quorum, the cluster's API pauses while it restarts).
//!   The first failure stops the run; every node after it keeps its old package.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::token::{Role, sha256_hex};

/// The port of every node's node endpoint (HTTPS with the node's certificate).
pub const NODE_PORT: u16 = 8091;
/// The folder under the state directory where an uploaded package waits for
/// `capstan-upgrade.service`.
pub const UPGRADE_DIR: &str = "upgrade";
/// The uploaded package: `capstan-upgrade.path` starts the upgrade when it appears.
pub const PENDING_FILE: &str = "capstan.deb";
/// What `capstan-upgrade.service` leaves behind: `ok <version>` or `failed <status>`.
pub const RESULT_FILE: &str = "result";
/// How old a grant may be (either way: clocks of nodes differ a little).
pub const GRANT_MAX_AGE_MS: u64 = 10 * 60 * 1000;
/// The largest package a node accepts.
pub const MAX_PACKAGE: usize = 512 << 20;
/// The header an upload's grant travels in.
pub const GRANT_HEADER: &str = "x-capstan-upgrade-grant";

/// A node of the cluster as the upgrade sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Host name (or the address, when the cluster knows no name).
    pub name: String,
    pub addr: IpAddr,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the cluster lists no master")]
    NoMasters,
    #[error("{0} is listed twice")]
    Duplicate(IpAddr),
    #[error("{name} ({addr}) is listed as a {listed} but is a {role}")]
    WrongRole {
        name: String,
        addr: IpAddr,
        listed: Role,
        role: Role,
    },
}

/// The order nodes are upgraded in: masters (coord's leader last), then agents, each group
/// sorted by name so a re-run walks the same order.
pub fn plan(
    masters: &[Node],
    coord_leader: Option<IpAddr>,
    agents: &[Node],
) -> Result<Vec<Node>, PlanError> {
    if masters.is_empty() {
        return Err(PlanError::NoMasters);
    }
    for (list, listed) in [(masters, Role::Master), (agents, Role::Agent)] {
        if let Some(n) = list.iter().find(|n| n.role != listed) {
            return Err(PlanError::WrongRole {
                name: n.name.clone(),
                addr: n.addr,
                listed,
                role: n.role,
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for n in masters.iter().chain(agents) {
        if !seen.insert(n.addr) {
            return Err(PlanError::Duplicate(n.addr));
        }
    }
    let mut m = masters.to_vec();
    m.sort_by(|a, b| {
        let leader = |n: &Node| Some(n.addr) == coord_leader;
        (leader(a), &a.name, a.addr).cmp(&(leader(b), &b.name, b.addr))
    });
    let mut a = agents.to_vec();
    a.sort_by(|x, y| (&x.name, x.addr).cmp(&(&y.name, y.addr)));
    m.extend(a);
    Ok(m)
}

/// One coord member as `/v1/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub addr: IpAddr,
    pub voter: bool,
    pub healthy: bool,
}

/// Why a master may go down now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumVerdict {
    /// The other healthy voters are a quorum.
    Kept {
        healthy_others: usize,
        quorum: usize,
    },
    /// The cluster has one master: no quorum can be kept; coord pauses while it restarts.
    SingleMaster,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumRefused {
    #[error("coord reports no voting member")]
    NoVoters,
    #[error(
        "taking {target} down would leave {healthy_others} healthy voter(s) of {voters}, fewer \
         than the quorum of {quorum}: bring the unhealthy masters back first"
    )]
    Lost {
        target: IpAddr,
        healthy_others: usize,
        voters: usize,
        quorum: usize,
    },
}

/// Whether the master at `target` may be stopped now without coord losing its quorum.
pub fn may_take_down(members: &[Voter], target: IpAddr) -> Result<QuorumVerdict, QuorumRefused> {
    let voters: Vec<&Voter> = members.iter().filter(|m| m.voter).collect();
    if voters.is_empty() {
        return Err(QuorumRefused::NoVoters);
    }
    if let [only] = voters.as_slice()
        && only.addr == target
    {
        return Ok(QuorumVerdict::SingleMaster);
    }
    let quorum = voters.len() / 2 + 1;
    let healthy_others = voters
        .iter()
        .filter(|v| v.healthy && v.addr != target)
        .count();
    if healthy_others >= quorum {
        Ok(QuorumVerdict::Kept {
            healthy_others,
            quorum,
        })
    } else {
        Err(QuorumRefused::Lost {
            target,
            healthy_others,
            voters: voters.len(),
            quorum,
        })
    }
}

/// How one node's step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It runs the new package and is healthy again.
    Upgraded,
    /// It already ran the package's version: nothing was done.
    Current,
    /// The step failed (or was refused before anything happened): the run stops here.
    Failed(String),
}

/// What the run does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<'a> {
    Upgrade(&'a Node),
    Done,
    Stopped { node: &'a Node, reason: &'a str },
}

/// The next step, given the plan and the outcomes so far (in plan order).
pub fn next<'a>(plan: &'a [Node], outcomes: &'a [Outcome]) -> Next<'a> {
    for (node, outcome) in plan.iter().zip(outcomes) {
        if let Outcome::Failed(reason) = outcome {
            return Next::Stopped { node, reason };
        }
    }
    match plan.get(outcomes.len()) {
        Some(node) => Next::Upgrade(node),
        None => Next::Done,
    }
}

/// The permission to upgrade one node with one package, signed by the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The node's address (a grant for one node is refused by every other).
    pub node: IpAddr,
    /// SHA-256 of the package, hex.
    pub sha256: String,
    pub issued_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("the upgrade grant is malformed")]
    Malformed,
    #[error("the upgrade grant is for {0}, not this node")]
    OtherNode(IpAddr),
    #[error("the upgrade grant is for another package (SHA-256 {0})")]
    OtherPackage(String),
    #[error("the upgrade grant is too old or from the future (check the clocks)")]
    Stale,
    #[error("the upgrade grant is not signed by this cluster's CA")]
    BadSignature,
    #[error("cannot sign with the CA key: {0}")]
    Key(String),
}

impl Grant {
    fn message(&self) -> Vec<u8> {
        format!(
            "capstan-upgrade-v1\n{}\n{}\n{}",
            self.node, self.sha256, self.issued_ms
        )
        .into_bytes()
    }

    /// The header value: `v1 <node> <sha256> <issued_ms> <signature hex>`, signed with the CA
    /// key (PEM, PKCS#8, ECDSA P-256).
    pub fn sign(&self, ca_key_pem: &str) -> Result<String, GrantError> {
        use rustls::pki_types::PrivatePkcs8KeyDer;
        use rustls::pki_types::pem::PemObject;
        let der = PrivatePkcs8KeyDer::from_pem_slice(ca_key_pem.as_bytes())
            .map_err(|e| GrantError::Key(e.to_string()))?;
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| GrantError::Key(e.to_string()))?;
        let sig = key
            .sign(&rng, &self.message())
            .map_err(|e| GrantError::Key(e.to_string()))?;
        Ok(format!(
            "v1 {} {} {} {}",
            self.node,
            self.sha256,
            self.issued_ms,
            hex::encode(sig.as_ref())
        ))
    }

    /// Checks a header value for the node at `me`, the package whose SHA-256 is `sha256`, at
    /// `now_ms`, against the CA certificate (PEM).
    pub fn verify(
        header: &str,
        ca_cert_pem: &str,
        me: IpAddr,
        sha256: &str,
        now_ms: u64,
    ) -> Result<Grant, GrantError> {
        let parts: Vec<&str> = header.split_ascii_whitespace().collect();
        let ["v1", node, hash, issued, sig] = parts.as_slice() else {
            return Err(GrantError::Malformed);
        };
        let grant = Grant {
            node: node.parse().map_err(|_| GrantError::Malformed)?,
            sha256: (*hash).to_owned(),
            issued_ms: issued.parse().map_err(|_| GrantError::Malformed)?,
        };
        let sig = hex::decode(sig).map_err(|_| GrantError::Malformed)?;
        let public = ca_public_key(ca_cert_pem).ok_or(GrantError::BadSignature)?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public)
            .verify(&grant.message(), &sig)
            .map_err(|_| GrantError::BadSignature)?;
        if grant.node != me {
            return Err(GrantError::OtherNode(grant.node));
        }
        if grant.sha256 != sha256 {
            return Err(GrantError::OtherPackage(grant.sha256));
        }
        if grant.issued_ms.abs_diff(now_ms) > GRANT_MAX_AGE_MS {
            return Err(GrantError::Stale);
        }
        Ok(grant)
    }

    /// A grant for `package` on `node`, now.
    pub fn for_package(node: IpAddr, package: &[u8], now_ms: u64) -> Grant {
        Grant {
            node,
            sha256: sha256_hex(package),
            issued_ms: now_ms,
        }
    }
}

/// One DER element at the start of `der`: (tag, contents, rest).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject public key (the BIT STRING's bytes) of the first certificate in `cert_pem`:
/// Certificate → tbsCertificate → [version], serial, signature, issuer, validity, subject,
/// subjectPublicKeyInfo → (algorithm, subjectPublicKey).
pub fn ca_public_key(cert_pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).ok()?;
    let (0x30, cert, _) = der_element(der.as_ref())? else {
        return None;
    };
    let (0x30, tbs, _) = der_element(cert)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after; // the explicit version
    }
    for _ in 0..5 {
        let (_, _, after) = der_element(rest)?; // serial, signature, issuer, validity, subject
        rest = after;
    }
    let (0x30, spki, _) = der_element(rest)? else {
        return None;
    };
    let (0x30, _, after) = der_element(spki)? else {
        return None;
    };
    let (0x03, bits, _) = der_element(after)? else {
        return None;
    };
    let (&unused, key) = bits.split_first()?;
    (unused == 0).then(|| key.to_vec())
}

/// `GET /v1/node`: what a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub role: Role,
    pub hostname: String,
    pub advertise: IpAddr,
    /// The installed package's version (`dpkg-query`), empty if unknown.
    pub package_version: String,
    /// Each unit of the role and its `systemctl is-active` state.
    pub units: Vec<(String, String)>,
    /// An uploaded package still waits for (or is being installed by) capstan-upgrade.service.
    pub upgrade_pending: bool,
    /// The last upgrade's result line (`ok <version>`, `failed <status>`), if any.
    pub last_result: Option<String>,
}

impl NodeStatus {
    /// Units that are not active.
    pub fn inactive_units(&self) -> Vec<String> {
        self.units
            .iter()
            .filter(|(_, state)| state != "active")
            .map(|(u, s)| format!("{u} ({s})"))
            .collect()
    }
}

/// What a node's status says about an upgrade to `target` it was handed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeVerdict {
    /// It runs `target` and every unit of its role is active.
    Done,
    /// Still installing or restarting.
    Waiting(String),
    /// The installation failed: stop.
    Failed(String),
}

/// Judges a node's status after its upload of the package of version `target`.
pub fn judge(status: &NodeStatus, target: &str) -> NodeVerdict {
    if status.upgrade_pending {
        return NodeVerdict::Waiting("the package is being installed".into());
    }
    if let Some(result) = &status.last_result
        && result.starts_with("failed")
    {
        return NodeVerdict::Failed(format!("the package did not install: {result}"));
    }
    if status.package_version != target {
        return NodeVerdict::Waiting(format!(
            "it runs {:?}, not {target:?} yet",
            status.package_version
        ));
    }
    let inactive = status.inactive_units();
    if !inactive.is_empty() {
        return NodeVerdict::Waiting(format!("not active yet: {}", inactive.join(", ")));
    }
    NodeVerdict::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Ca;

    fn node(name: &str, addr: &str, role: Role) -> Node {
        Node {
            name: name.into(),
            addr: addr.parse().unwrap(),
            role,
        }
    }

    fn names(plan: &[Node]) -> Vec<&str> {
        plan.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn masters_go_first_with_the_coord_leader_last_then_agents() {
        let m = |n, a| node(n, a, Role::Master);
        let a = |n, a| node(n, a, Role::Agent);
        let masters = [
            m("m2", "10.0.0.2"),
            m("m1", "10.0.0.1"),
            m("m3", "10.0.0.3"),
        ];
        let agents = [a("b", "10.0.1.2"), a("a", "10.0.1.1")];
        let cases: &[(Option<&str>, &[&str])] = &[
            (None, &["m1", "m2", "m3", "a", "b"]),
            (Some("10.0.0.1"), &["m2", "m3", "m1", "a", "b"]),
            (Some("10.0.0.2"), &["m1", "m3", "m2", "a", "b"]),
            (Some("10.9.9.9"), &["m1", "m2", "m3", "a", "b"]),
        ];
        for (leader, want) in cases {
            let leader = leader.map(|l| l.parse().unwrap());
            let p = plan(&masters, leader, &agents).unwrap();
            assert_eq!(names(&p), *want, "leader {leader:?}");
        }
        assert_eq!(names(&plan(&masters[..1], None, &[]).unwrap()), ["m2"]);
    }

    #[test]
    fn bad_node_lists_are_refused() {
        let m = node("m1", "10.0.0.1", Role::Master);
        let a = node("a1", "10.0.1.1", Role::Agent);
        assert_eq!(
            plan(&[], None, std::slice::from_ref(&a)),
            Err(PlanError::NoMasters)
        );
        let twin = node("a2", "10.0.0.1", Role::Agent);
        assert_eq!(
            plan(std::slice::from_ref(&m), None, &[twin]),
            Err(PlanError::Duplicate("10.0.0.1".parse().unwrap()))
        );
        assert!(matches!(
            plan(std::slice::from_ref(&a), None, &[]),
            Err(PlanError::WrongRole { .. })
        ));
        assert!(matches!(
            plan(std::slice::from_ref(&m), None, std::slice::from_ref(&m)),
            Err(PlanError::WrongRole { .. })
        ));
    }

    #[test]
    fn a_master_goes_down_only_when_the_others_keep_a_quorum() {
        let v = |addr: &str, voter, healthy| Voter {
            addr: addr.parse().unwrap(),
            voter,
            healthy,
        };
        let t: IpAddr = "10.0.0.1".parse().unwrap();
        let kept = |healthy_others, quorum| {
            Ok(QuorumVerdict::Kept {
                healthy_others,
                quorum,
            })
        };
        let lost = |healthy_others, voters, quorum| {
            Err(QuorumRefused::Lost {
                target: t,
                healthy_others,
                voters,
                quorum,
            })
        };
        let cases: Vec<(Vec<Voter>, Result<QuorumVerdict, QuorumRefused>)> = vec![
            // One master: nothing to keep.
            (
                vec![v("10.0.0.1", true, true)],
                Ok(QuorumVerdict::SingleMaster),
            ),
            (
                vec![v("10.0.0.1", true, false)],
                Ok(QuorumVerdict::SingleMaster),
            ),
            // Three: both others must be healthy.
            (
                vec![
                    v("10.0.0.1", true, true),
                    v("10.0.0.2", true, true),
                    v("10.0.0.3", true, true),
                ],
                kept(2, 2),
            ),
            (
                vec![
                    v("10.0.0.1", true, true),
                    v("10.0.0.2", true, false),
                    v("10.0.0.3", true, true),
                ],
                lost(1, 3, 2),
            ),
            // The target itself unhealthy: the others still decide.
            (
                vec![
                    v("10.0.0.1", true, false),
                    v("10.0.0.2", true, true),
                    v("10.0.0.3", true, true),
                ],
                kept(2, 2),
            ),
            // Two voters: one down is no quorum.
            (
                vec![v("10.0.0.1", true, true), v("10.0.0.2", true, true)],
                lost(1, 2, 2),
            ),
            // A learner does not count.
            (
                vec![
                    v("10.0.0.1", true, true),
                    v("10.0.0.2", true, true),
                    v("10.0.0.3", false, true),
                ],
                lost(1, 2, 2),
            ),
            // Five: one other may be down.
            (
                vec![
                    v("10.0.0.1", true, true),
                    v("10.0.0.2", true, false),
                    v("10.0.0.3", true, true),
                    v("10.0.0.4", true, true),
                    v("10.0.0.5", true, true),
                ],
                kept(3, 3),
            ),
            (
                vec![
                    v("10.0.0.1", true, true),
                    v("10.0.0.2", true, false),
                    v("10.0.0.3", true, false),
                    v("10.0.0.4", true, true),
                    v("10.0.0.5", true, true),
                ],
                lost(2, 5, 3),
            ),
            (
                vec![v("10.0.0.2", false, true)],
                Err(QuorumRefused::NoVoters),
            ),
            (vec![], Err(QuorumRefused::NoVoters)),
        ];
        for (members, want) in cases {
            assert_eq!(may_take_down(&members, t), want, "{members:?}");
        }
    }

    #[test]
    fn the_run_stops_at_the_first_failure() {
        let p = [
            node("m1", "10.0.0.1", Role::Master),
            node("m2", "10.0.0.2", Role::Master),
            node("a1", "10.0.1.1", Role::Agent),
        ];
        let failed = Outcome::Failed("units failed".into());
        let cases: Vec<(Vec<Outcome>, Next<'_>)> = vec![
            (vec![], Next::Upgrade(&p[0])),
            (vec![Outcome::Upgraded], Next::Upgrade(&p[1])),
            (
                vec![Outcome::Current, Outcome::Upgraded],
                Next::Upgrade(&p[2]),
            ),
            (
                vec![Outcome::Upgraded, Outcome::Current, Outcome::Upgraded],
                Next::Done,
            ),
            (
                vec![failed.clone()],
                Next::Stopped {
                    node: &p[0],
                    reason: "units failed",
                },
            ),
            (
                vec![Outcome::Upgraded, failed.clone()],
                Next::Stopped {
                    node: &p[1],
                    reason: "units failed",
                },
            ),
        ];
        for (outcomes, want) in &cases {
            assert_eq!(&next(&p, outcomes), want, "{outcomes:?}");
        }
        assert_eq!(next(&[], &[]), Next::Done);
    }

    #[test]
    fn a_grant_is_checked_against_the_ca_node_package_and_time() {
        let ca = Ca::generate("t", "c1").unwrap();
        let other = Ca::generate("t", "c2").unwrap();
        let me: IpAddr = "10.0.1.1".parse().unwrap();
        let pkg = b"the package";
        let now = 1_700_000_000_000;
        let grant = Grant::for_package(me, pkg, now);
        let header = grant.sign(&ca.0.key_pem).unwrap();
        let sha = sha256_hex(pkg);
        let check = |h: &str, cert: &str, me: IpAddr, sha: &str, at: u64| {
            Grant::verify(h, cert, me, sha, at)
        };
        assert_eq!(
            check(&header, &ca.0.cert_pem, me, &sha, now + 1000),
            Ok(grant.clone())
        );
        assert_eq!(
            check(&header, &other.0.cert_pem, me, &sha, now),
            Err(GrantError::BadSignature)
        );
        let other_header = grant.sign(&other.0.key_pem).unwrap();
        assert_eq!(
            check(&other_header, &ca.0.cert_pem, me, &sha, now),
            Err(GrantError::BadSignature)
        );
        let elsewhere: IpAddr = "10.0.1.2".parse().unwrap();
        assert_eq!(
            check(&header, &ca.0.cert_pem, elsewhere, &sha, now),
            Err(GrantError::OtherNode(me))
        );
        assert_eq!(
            check(&header, &ca.0.cert_pem, me, &sha256_hex(b"x"), now),
            Err(GrantError::OtherPackage(sha.clone()))
        );
        for at in [now + GRANT_MAX_AGE_MS + 1, now - GRANT_MAX_AGE_MS - 1] {
            assert_eq!(
                check(&header, &ca.0.cert_pem, me, &sha, at),
                Err(GrantError::Stale)
            );
        }
        // Tampering with any signed field breaks the signature.
        let tampered = header.replacen(&now.to_string(), &(now + 1).to_string(), 1);
        assert_eq!(
            check(&tampered, &ca.0.cert_pem, me, &sha, now),
            Err(GrantError::BadSignature)
        );
        for bad in [
            "",
            "v1",
            "v2 a b c d",
            "v1 10.0.1.1 x 1 zz",
            "v1 nope x 1 00",
        ] {
            assert_eq!(
                check(bad, &ca.0.cert_pem, me, &sha, now),
                Err(GrantError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_public_key_is_read_from_the_ca_certificate() {
        let ca = Ca::generate("t", "c1").unwrap();
        let key = rcgen::KeyPair::from_pem(&ca.0.key_pem).unwrap();
        assert_eq!(
            ca_public_key(&ca.0.cert_pem).as_deref(),
            Some(key.public_key_raw())
        );
        assert_eq!(ca_public_key("not pem"), None);
        assert_eq!(der_element(&[0x30, 0x82, 0x01]), None);
        assert_eq!(der_element(&[0x30, 0x02, 0x01]), None);
        assert_eq!(
            der_element(&[0x04, 0x81, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
    }

    #[test]
    fn a_node_is_done_when_it_runs_the_version_with_every_unit_active() {
        let status = |version: &str, pending, result: Option<&str>, states: &[&str]| NodeStatus {
            role: Role::Agent,
            hostname: "a1".into(),
            advertise: "10.0.1.1".parse().unwrap(),
            package_version: version.into(),
            units: states
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("u{i}.service"), (*s).to_owned()))
                .collect(),
            upgrade_pending: pending,
            last_result: result.map(str::to_owned),
        };
        let t = "0.1.0-2";
        let cases = [
            (
                status(t, false, Some("ok 0.1.0-2"), &["active", "active"]),
                "done",
            ),
            (status(t, false, None, &["active"]), "done"),
            (status("0.1.0-1", true, None, &["active"]), "waiting"),
            (status("0.1.0-1", false, None, &["active"]), "waiting"),
            (
                status(t, false, Some("ok 0.1.0-2"), &["active", "activating"]),
                "waiting",
            ),
            (
                status("0.1.0-1", false, Some("failed 1"), &["active"]),
                "failed",
            ),
        ];
        for (s, want) in cases {
            let got = match judge(&s, t) {
                NodeVerdict::Done => "done",
                NodeVerdict::Waiting(_) => "waiting",
                NodeVerdict::Failed(_) => "failed",
            };
            assert_eq!(got, want, "{s:?}");
        }
    }
}
