//! Strict mode (issue #19): members serve TLS with their node certificate and dial each other
//! over https with it; every request but `/health` and `/metrics` needs a node certificate of
//! the cluster CA — a master's for raft RPCs, membership changes and backups (which still
//! need the peer token too), any node's for the client API. No certificate is `401`, an
//! agent's on raft `403` (and changes nothing), a certificate of another CA fails the TLS
//! handshake.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use capstan_coord::raft::TypeConfig;
use capstan_coord::sm::Command;
use capstan_coord::{Server, StartError};
use capstan_coord_client::{
    Client, ClientOptions, GetRequest, PEER_TOKEN_HEADER, PutRequest, RemoveMemberRequest,
};
use capstan_runtime::auth::SecurityMode;
use capstan_runtime::{NodeTls, SecurityConfig, TlsFiles};
use capstan_testkit::pki::TestCa;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use serde_json::{Value, json};

use super::harness::{Cluster, peer_token, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const FORGED_TERM: u64 = 1000;

/// The cluster CA and the files of its certificates.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    ca_file: PathBuf,
}

impl Pki {
    fn new() -> anyhow::Result<Pki> {
        let dir = tempfile::tempdir()?;
        let ca = TestCa::new("coord test cluster CA")?;
        let ca_file = ca.write_cert(dir.path(), "ca.crt")?;
        Ok(Pki { dir, ca, ca_file })
    }

    /// A strict `security` section with a new certificate for `name` in role `unit`.
    fn strict(&self, name: &str, unit: &str) -> anyhow::Result<SecurityConfig> {
        let files = self.ca.write_node(self.dir.path(), name, unit)?;
        Ok(SecurityConfig {
            mode: SecurityMode::Strict,
            tls: Some(TlsFiles {
                cert_file: files.cert,
                key_file: files.key,
                ca_file: self.ca_file.clone(),
            }),
            allow_plaintext: false,
        })
    }

    /// What a daemon of node `name` presents to coord.
    fn node(&self, name: &str, unit: &str) -> anyhow::Result<NodeTls> {
        let (cert, key) = self.ca.issue(name, unit)?;
        Ok(NodeTls::from_pem(&cert, &key, &self.ca.cert_pem)?)
    }

    /// A client that trusts the cluster CA and presents no certificate.
    fn anonymous(&self) -> anyhow::Result<reqwest::Client> {
        let trust = capstan_http_client::trusting(&self.ca.cert_pem)?;
        Ok(capstan_http_client::with_tls(capstan_http_client::builder(), &trust).build()?)
    }
}

/// A three-member strict cluster, every member with a master node's certificate.
async fn strict_cluster(pki: &Pki) -> anyhow::Result<Cluster> {
    let mut security = BTreeMap::new();
    for id in 1..=3 {
        security.insert(id, pki.strict(&format!("master-{id}"), "master")?);
    }
    Ok(Cluster::build_secured(3, false, 10_000, 60, security).await)
}

/// A coord client of every member speaking https with `tls`.
fn client_of(c: &Cluster, tls: &NodeTls) -> anyhow::Result<Client> {
    let opts = ClientOptions {
        tls: Some(tls.client_config()),
        ..ClientOptions::default()
    };
    Ok(Client::with_options(
        c.addrs.values().map(ToString::to_string),
        opts,
    )?)
}

fn http_with(tls: &NodeTls) -> anyhow::Result<reqwest::Client> {
    Ok(
        capstan_http_client::with_tls(capstan_http_client::builder(), &tls.client_config())
            .build()?,
    )
}

async fn answer(r: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let r = r.send().await.context("request sent")?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or_default()
}

/// Waits until every member has applied a write and holds `key` as `want` (`None`: absent).
async fn every_member_holds(
    c: &Cluster,
    tls: &NodeTls,
    key: &str,
    want: Option<&[u8]>,
) -> anyhow::Result<()> {
    for id in c.handles.keys() {
        let local = Client::with_options(
            [c.endpoint(*id)],
            ClientOptions {
                tls: Some(tls.client_config()),
                ..ClientOptions::default()
            },
        )?;
        wait_until(
            &format!("member {id} to hold {key} as {want:?}"),
            WAIT,
            || async {
                let got = local
                    .get_with(GetRequest {
                        key: key.into(),
                        serializable: true,
                    })
                    .await
                    .ok()?;
                (got.kv.as_ref().map(|kv| kv.value.as_slice()) == want).then_some(())
            },
        )
        .await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_cluster_replicates_over_mutual_tls_and_answers_only_node_certificates()
-> anyhow::Result<()> {
    let pki = Pki::new()?;
    let c = strict_cluster(&pki).await?;
    let leader = c.wait_leader().await;

    // A write through coord-client with an agent's certificate reaches every member.
    let agent = pki.node("agent-1", "agent")?;
    let client = client_of(&c, &agent)?;
    client.put("/strict/key", "replicated").await?;
    every_member_holds(&c, &agent, "/strict/key", Some(b"replicated")).await?;
    assert_eq!(client.status().await?.leader, Some(leader));
    // Through a follower: the write is forwarded to the leader and the linearizable read asks
    // it for its read index, both member to member over mutual TLS.
    let follower = *c
        .handles
        .keys()
        .find(|id| **id != leader)
        .context("a follower")?;
    let via_follower = Client::with_options(
        [c.endpoint(follower)],
        ClientOptions {
            tls: Some(agent.client_config()),
            ..ClientOptions::default()
        },
    )?;
    via_follower.put("/strict/forwarded", "yes").await?;
    let kv = via_follower.get("/strict/forwarded").await?;
    assert_eq!(kv.map(|kv| kv.value), Some(b"yes".to_vec()));

    // `capstan coord` on a node of a strict cluster presents the node's certificate.
    let mut out = Vec::new();
    let get = capstan_coord::cli::CliCommand::Get {
        key: "/strict/key".into(),
        serializable: false,
    };
    capstan_coord::cli::run_cli(
        &[c.endpoint(leader)],
        Some(agent.client_config()),
        get.clone(),
        &mut out,
    )
    .await?;
    assert_eq!(String::from_utf8(out)?.trim(), "replicated");
    let refused =
        capstan_coord::cli::run_cli(&[c.endpoint(leader)], None, get, &mut Vec::new()).await;
    assert!(refused.is_err(), "no certificate, no answer");

    // Without a certificate: the client API and the status calls are 401 (a token does not
    // help: coord takes node certificates only); health and metrics stay open.
    let anonymous = pki.anonymous()?;
    let base = format!("https://{}", c.endpoint(leader));
    let (status, body) = answer(
        anonymous
            .post(format!("{base}/v1/kv/get"))
            .json(&json!({"key": "/strict/key"})),
    )
    .await?;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    let (status, body) = answer(
        anonymous
            .post(format!("{base}/v1/kv/put"))
            .header("authorization", "token=some-router-token")
            .json(&json!({"key": "/strict/key", "value": "YW5vbnltb3Vz"})),
    )
    .await?;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    for path in ["/v1/status", "/v1/members", "/v1/snapshot"] {
        let (status, body) = answer(anonymous.get(format!("{base}{path}"))).await?;
        assert_eq!(
            (status, code(&body)),
            (401, "unauthorized"),
            "{path}: {body}"
        );
    }
    let (status, body) = answer(anonymous.get(format!("{base}/health"))).await?;
    assert_eq!(
        (status, body["healthy"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let metrics = anonymous.get(format!("{base}/metrics")).send().await?;
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await?;
    assert!(
        text.contains("capstan_coord_certificate_refused_total"),
        "{text}"
    );

    // Plain HTTP is not spoken on a strict port.
    let (status, body) = answer(
        capstan_http_client::client()
            .post(format!("http://{}/v1/kv/get", c.endpoint(leader)))
            .json(&json!({"key": "/strict/key"})),
    )
    .await?;
    assert_eq!((status, code(&body)), (400, "tls_required"), "{body}");

    // The value is still the one written with a certificate.
    let kv = client.get("/strict/key").await?.context("the key")?;
    assert_eq!(kv.value, b"replicated");
    // A master node's certificate may take the full backup.
    let master = http_with(&pki.node("master-9", "master")?)?;
    let backup = master.get(format!("{base}/v1/snapshot")).send().await?;
    assert_eq!(backup.status().as_u16(), 200);
    c.stop().await;
    Ok(())
}

fn forged_log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(FORGED_TERM, 99), index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_certificate_may_not_speak_raft_or_change_members_and_changes_nothing()
-> anyhow::Result<()> {
    let pki = Pki::new()?;
    let c = strict_cluster(&pki).await?;
    let leader = c.wait_leader().await;
    let agent_tls = pki.node("agent-1", "agent")?;
    let agent = http_with(&agent_tls)?;
    let client = client_of(&c, &agent_tls)?;
    client.put("/before", "x").await?;
    let follower = *c
        .handles
        .keys()
        .find(|id| **id != leader)
        .context("a follower")?;
    let base = format!("https://{}", c.endpoint(follower));
    let last = c.handles[&follower].status().applied_index;
    let term = c.handles[&leader].status().term;

    // With the peer token, but an agent's certificate: a forged committed put, a vote of a
    // far higher term, a member removal and a backup are all 403 before anything is read.
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(FORGED_TERM, 99),
        prev_log_id: Some(forged_log_id(last)),
        leader_commit: Some(forged_log_id(last + 1)),
        entries: vec![Entry {
            log_id: forged_log_id(last + 1),
            payload: EntryPayload::Normal(Command::Put(PutRequest {
                key: "/t/INJECTED".into(),
                value: b"forged".to_vec(),
                ..Default::default()
            })),
        }],
    };
    let vote = VoteRequest::new(Vote::new(FORGED_TERM, 99), Some(forged_log_id(1_000_000)));
    let requests = [
        ("/raft/append", serde_json::to_vec(&append)?),
        ("/raft/vote", serde_json::to_vec(&vote)?),
        (
            "/v1/members/remove",
            serde_json::to_vec(&RemoveMemberRequest { id: follower })?,
        ),
        ("/raft/read-index", b"{}".to_vec()),
    ];
    for (path, body) in requests {
        let (status, answer) = answer(
            agent
                .post(format!("{base}{path}"))
                .header(PEER_TOKEN_HEADER, peer_token().as_str())
                .header("content-type", "application/json")
                .body(body),
        )
        .await?;
        assert_eq!(
            (status, code(&answer)),
            (403, "forbidden"),
            "{path}: {answer}"
        );
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains("node:agent-1"), "{message}");
    }
    let (status, answer) = answer(agent.get(format!("{base}/v1/snapshot"))).await?;
    assert_eq!((status, code(&answer)), (403, "forbidden"), "{answer}");

    // Nothing changed: same leader and term, three members, no forged key anywhere.
    client.put("/after", "written").await?;
    every_member_holds(&c, &agent_tls, "/after", Some(b"written")).await?;
    every_member_holds(&c, &agent_tls, "/t/INJECTED", None).await?;
    let members = client.members().await?;
    assert_eq!(members.members.len(), 3, "{members:?}");
    assert_eq!(members.leader, Some(leader));
    for h in c.handles.values() {
        let s = h.status();
        assert!(s.term < FORGED_TERM, "member {} took the forged term", s.id);
        assert_eq!(s.term, term, "member {} changed term", s.id);
    }
    c.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_ca_fails_the_handshake() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let c = strict_cluster(&pki).await?;
    let leader = c.wait_leader().await;
    let addr = c.endpoint(leader);

    // A master's certificate, but from another CA; the client itself trusts the cluster's.
    let other = TestCa::new("another cluster's CA")?;
    let (cert, key) = other.issue("intruder", "master")?;
    let intruder = NodeTls::from_pem(&cert, &key, &pki.ca.cert_pem)?;
    let http = http_with(&intruder)?;
    for path in ["/health", "/v1/status", "/raft/read-index"] {
        let sent = http
            .post(format!("https://{addr}{path}"))
            .header(PEER_TOKEN_HEADER, peer_token().as_str())
            .send()
            .await;
        assert!(
            sent.is_err(),
            "{path} answered a foreign certificate: {sent:?}"
        );
    }
    let foreign = Client::with_options(
        [addr.clone()],
        ClientOptions {
            tls: Some(intruder.client_config()),
            request_timeout: Duration::from_secs(1),
            retry_deadline: Duration::from_secs(1),
        },
    )?;
    let err = foreign
        .put("/t/foreign", "x")
        .await
        .expect_err("a write with a foreign certificate");
    tracing::debug!(error = %err, "foreign write refused");

    // A node of this cluster still gets in, and the foreign write is nowhere.
    let agent = pki.node("agent-1", "agent")?;
    let client = client_of(&c, &agent)?;
    client.put("/after", "written").await?;
    every_member_holds(&c, &agent, "/after", Some(b"written")).await?;
    every_member_holds(&c, &agent, "/t/foreign", None).await?;
    c.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_member_needs_its_certificate_and_a_private_key() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let pki = Pki::new()?;
    let data = tempfile::tempdir()?;
    let security = pki.strict("master-1", "master")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = capstan_coord::Config {
        listen: addr,
        data_dir: data.path().join("member-1"),
        security: security.clone(),
        ..capstan_coord::Config::default()
    };
    let token = tokio_util::sync::CancellationToken::new();
    // Strict mode without the files is a configuration error, found before anything starts.
    let without = capstan_coord::Config {
        security: SecurityConfig {
            tls: None,
            ..security.clone()
        },
        ..config.clone()
    };
    let err = Server::start_on(without, listener, token.clone())
        .await
        .err()
        .context("strict mode without certificates started")?;
    assert!(err.to_string().contains("security.tls"), "{err}");
    // A key others may read is refused.
    let key = security.tls.as_ref().context("tls")?.key_file.clone();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    match Server::start_on(config, listener, token).await {
        Err(StartError::Tls(e)) => {
            let chain = format!("{e}: {:?}", std::error::Error::source(&e));
            assert!(
                chain.contains("node.key") || chain.contains("master-1.key"),
                "{chain}"
            );
        }
        Err(e) => anyhow::bail!("expected a TLS error, got {e}"),
        Ok(_) => anyhow::bail!("a key readable by others was accepted"),
    }
    Ok(())
}
