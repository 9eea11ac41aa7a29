//! Creating a cluster and joining nodes to it, in process: a real coord, the real bootstrap
//! server on loopback (HTTP and HTTPS), and the join client, with each node's files under its
//! own temporary directory. No systemd here: the machine-container suite (`tests/machines.rs`)
//! runs the same flow through the package and the units.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use capstan_install::bootstrap::{self, SERVER_LINE};
use capstan_install::https::{self, Server};
use capstan_install::init::{InitError, InitOptions, InitOutcome};
use capstan_install::join::{JoinError, JoinOptions, JoinOutcome};
use capstan_install::state::ClusterState;
use capstan_install::token::{ShortToken, TokenRecord, check_ca_proof, generate_nonce};
use capstan_install::{JoinToken, Layout, Role};
use capstan_runtime::ClusterConfig;
use capstan_runtime::auth::SecurityMode;
use capstan_runtime::cluster::ClusterSecurity;
use tokio_util::sync::CancellationToken;

struct Cluster {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    _coord: capstan_coord::ServerHandle,
    state: ClusterState,
    outcome: InitOutcome,
    bootstrap: bootstrap::ServerHandle,
    package: Vec<u8>,
}

const MASTER: &str = "127.0.0.1";

/// A one-member coord; strict with the master's certificate when `security` says so.
async fn start_coord(
    dir: &std::path::Path,
    security: &ClusterSecurity,
) -> (capstan_coord::ServerHandle, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = capstan_coord::Config {
        id: 1,
        listen: addr,
        data_dir: dir.join("coord"),
        members: vec![capstan_coord::MemberConfig {
            id: 1,
            addr: addr.to_string(),
        }],
        security: capstan_runtime::SecurityConfig {
            mode: security.mode,
            tls: (security.mode == SecurityMode::Strict).then(|| security.files()),
            allow_plaintext: false,
        },
        ..capstan_coord::Config::default()
    };
    let coord = capstan_coord::Server::start_on(config, listener, CancellationToken::new())
        .await
        .expect("coord starts");
    (coord, addr.to_string())
}

fn read_cluster(layout: &Layout) -> ClusterConfig {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&layout.config).unwrap()).unwrap();
    serde_yaml_ng::from_value(doc["cluster"].clone()).unwrap()
}

async fn cluster() -> Cluster {
    cluster_with(None, None).await
}

/// A cluster whose `init` was given these join tokens (chosen before it existed).
async fn cluster_with(
    master_token: Option<ShortToken>,
    agent_token: Option<ShortToken>,
) -> Cluster {
    let c = unseeded(master_token, agent_token).await;
    c.seed().await
}

/// A master whose `cluster init` has prepared the cluster and started serving, but has not
/// stored it in coord yet ([`Unseeded::seed`] does).
struct Unseeded {
    dir: tempfile::TempDir,
    coord: capstan_coord::ServerHandle,
    state: ClusterState,
    prepared: capstan_install::init::Prepared,
    bootstrap: bootstrap::ServerHandle,
    package: Vec<u8>,
}

async fn unseeded(master_token: Option<ShortToken>, agent_token: Option<ShortToken>) -> Unseeded {
    unseeded_in(master_token, agent_token, SecurityMode::Permissive).await
}

async fn unseeded_in(
    master_token: Option<ShortToken>,
    agent_token: Option<ShortToken>,
    security: SecurityMode,
) -> Unseeded {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let master = Layout::under(&root.join("master"));
    let package_file = root.join("capstan_test.deb");
    let package = b"not really a package".to_vec();
    std::fs::write(&package_file, &package).unwrap();
    std::fs::create_dir_all(&master.share).unwrap();
    std::fs::write(
        master.install_script(),
        format!("#!/bin/sh\nset -eu\n{SERVER_LINE}\necho \"$CAPSTAN_SERVER\"\n"),
    )
    .unwrap();
    let opts = InitOptions {
        name: "test".into(),
        advertise: MASTER.parse().unwrap(),
        hostname: Some("master-1".into()),
        package: Some(package_file),
        master_token,
        agent_token,
        security,
    };
    let prepared = capstan_install::init::prepare(&master, &opts).unwrap();
    let again = capstan_install::init::prepare(&master, &opts).unwrap();
    assert_eq!(
        prepared, again,
        "an unfinished init resumes with the same cluster"
    );
    // The master's own files (the package's layout is /var/lib/capstan; here a temporary one).
    let mut cluster = read_cluster(&master);
    cluster.security.pki_dir = master.pki();
    let (coord, endpoint) = start_coord(&root, &cluster.security).await;
    let state = ClusterState::new(
        capstan_install::state::coord_client(&cluster.security, [endpoint.clone()]).unwrap(),
    );
    let config = bootstrap::Config {
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        https_listen: Some("127.0.0.1:0".parse().unwrap()),
        coord_endpoints: vec![endpoint],
        state_dir: master.state.clone(),
        share_dir: master.share.clone(),
        node_listen: Some("127.0.0.1:0".parse().unwrap()),
    };
    let bootstrap = bootstrap::Server::start(config, Some(cluster), CancellationToken::new())
        .await
        .unwrap();
    Unseeded {
        dir,
        coord,
        state,
        prepared,
        bootstrap,
        package,
    }
}

impl Unseeded {
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().to_owned()
    }

    async fn seed(self) -> Cluster {
        let root = self.root();
        let master = Layout::under(&root.join("master"));
        let outcome = capstan_install::init::seed(&master, &self.state, &self.prepared)
            .await
            .unwrap();
        Cluster {
            _dir: self.dir,
            root,
            _coord: self.coord,
            state: self.state,
            outcome,
            bootstrap: self.bootstrap,
            package: self.package,
        }
    }
}

impl Cluster {
    fn server(&self) -> Server {
        let addr = self.bootstrap.https_addr().unwrap();
        Server {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    fn node(&self, name: &str) -> Layout {
        Layout::under(&self.root.join(name))
    }

    fn opts(&self, token: &str, role: Role, ip: &str, hostname: &str) -> JoinOptions {
        JoinOptions {
            public: false,
            server: self.server(),
            token: token.parse().unwrap(),
            role,
            advertise: Some(ip.parse().unwrap()),
            hostname: Some(hostname.into()),
            ca_file: None,
        }
    }

    async fn join(&self, name: &str, token: &str, role: Role) -> Result<JoinOutcome, JoinError> {
        let layout = self.node(name);
        let opts = self.opts(token, role, "127.0.0.2", name);
        capstan_install::join::join(&layout, &opts).await
    }

    async fn http_get(&self, path: &str) -> (u16, String) {
        let addr: SocketAddr = self.bootstrap.http_addr().unwrap();
        let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn https(&self, method: http::Method, path: &str) -> https::Response {
        let ca =
            std::fs::read_to_string(Layout::under(&self.root.join("master")).ca_cert()).unwrap();
        let tls = Arc::new(capstan_install::pki::client_config(&ca).unwrap());
        https::request(&self.server(), tls, method, path, None)
            .await
            .unwrap()
    }
}

fn refused_code(e: JoinError) -> String {
    match e {
        JoinError::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_with_its_token_and_a_second_join_changes_nothing() {
    let c = cluster().await;
    assert_eq!(c.outcome.url, format!("https://{MASTER}"));
    assert_eq!(c.outcome.admin.uid, "admin");
    let admin = c.state.admin().await.unwrap().unwrap();
    assert!(capstan_install::state::verify_password(
        &c.outcome.admin.password,
        &admin.password_hash
    ));

    let joined = c
        .join("agent-1", &c.outcome.tokens.agent, Role::Agent)
        .await
        .unwrap();
    let JoinOutcome::Joined(m) = joined else {
        panic!("a fresh node joins: {joined:?}")
    };
    assert_eq!(m.cluster_id, c.outcome.cluster_id);
    assert_eq!(m.role, Role::Agent);
    let layout = c.node("agent-1");
    let cluster = read_cluster(&layout);
    assert_eq!(cluster.masters, vec![MASTER.parse::<IpAddr>().unwrap()]);
    assert_eq!(cluster.advertise, "127.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(cluster.hostname.as_deref(), Some("agent-1"));
    assert!(!layout.ca_key().exists(), "agents never get the CA key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(layout.node_key())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The config the master wrote loads and validates as every daemon will load it.
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&layout.config).unwrap()).unwrap();
    capstan_runtime::cluster::apply_cluster_defaults(&mut doc).unwrap();
    assert_eq!(
        doc["agent"]["masters"][0],
        serde_yaml_ng::Value::from("127.0.0.1:5050")
    );
    assert!(doc.get("coord").is_none(), "an agent runs no coord");

    let config_before = std::fs::read(&layout.config).unwrap();
    let again = c
        .join("agent-1", &c.outcome.tokens.agent, Role::Agent)
        .await
        .unwrap();
    assert!(matches!(again, JoinOutcome::AlreadyJoined(_)), "{again:?}");
    assert_eq!(std::fs::read(&layout.config).unwrap(), config_before);
    let as_master = c
        .join("agent-1", &c.outcome.tokens.master, Role::Master)
        .await;
    assert!(
        matches!(as_master, Err(JoinError::OtherRole { .. })),
        "{as_master:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_cluster_is_created_and_joined_through_a_coord_that_takes_only_node_certificates()
{
    let c = unseeded_in(None, None, SecurityMode::Strict)
        .await
        .seed()
        .await;
    // coord refuses a client without a certificate: init and the bootstrap server reached it
    // with the master's.
    let master = c.node("master");
    let anonymous = capstan_coord_client::Client::with_options(
        [c._coord.local_addr().to_string()],
        capstan_coord_client::ClientOptions {
            tls: Some(Arc::new(
                capstan_http_client::trusting(&std::fs::read_to_string(master.ca_cert()).unwrap())
                    .unwrap(),
            )),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(anonymous.get("/capstan/cluster/info").await.is_err());
    assert!(
        c.state.info().await.unwrap().is_some(),
        "init stored the cluster"
    );
    // `capstan cluster status` on the master: the mode, and coord read with its certificate.
    let membership = capstan_install::Membership::read(&master).unwrap().unwrap();
    let mut cluster = read_cluster(&master);
    cluster.security.pki_dir = master.pki();
    let endpoints = [c._coord.local_addr().to_string()];
    let status = capstan_install::status::gather(&membership, &cluster, &endpoints).await;
    let text = capstan_install::status::render(&status);
    assert!(text.contains("Security  strict"), "{text}");
    assert!(
        text.contains("coord     1 member(s), 1 voting, leader"),
        "{text}"
    );

    let joined = c
        .join("agent-1", &c.outcome.tokens.agent, Role::Agent)
        .await
        .unwrap();
    assert!(matches!(joined, JoinOutcome::Joined(_)), "{joined:?}");
    // The joined node is strict too: every daemon of its config speaks TLS.
    let layout = c.node("agent-1");
    assert_eq!(read_cluster(&layout).security.mode, SecurityMode::Strict);
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&layout.config).unwrap()).unwrap();
    capstan_runtime::cluster::apply_cluster_defaults(&mut doc).unwrap();
    assert_eq!(
        doc["agent"]["security"]["mode"],
        serde_yaml_ng::Value::from("strict")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_revoked_expired_and_foreign_tokens_are_refused_before_anything_is_written() {
    let c = cluster().await;
    let agent: JoinToken = c.outcome.tokens.agent.parse().unwrap();

    // A token for another CA: refused by the node itself, before it sends the token.
    let mut foreign = agent.clone();
    foreign.ca_hash = "ab".repeat(32);
    let e = c
        .join("n1", &foreign.to_string(), Role::Agent)
        .await
        .unwrap_err();
    assert!(matches!(e, JoinError::CaMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("another cluster"), "{e}");
    assert!(!c.node("n1").config.exists() && !c.node("n1").pki().exists());

    // The right CA, a secret the cluster never made.
    let mut wrong = agent.clone();
    wrong.secret = "0".repeat(32);
    let e = c
        .join("n2", &wrong.to_string(), Role::Agent)
        .await
        .unwrap_err();
    assert_eq!(refused_code(e), "token_invalid");
    assert!(!c.node("n2").config.exists());

    // An agent token cannot make a master.
    let e = c
        .join("n3", &agent.to_string(), Role::Master)
        .await
        .unwrap_err();
    assert_eq!(refused_code(e), "token_role");

    // Expired.
    let short = JoinToken::generate(&agent.ca_hash);
    let mut record = TokenRecord::new(&short, Role::Agent, 0, Some(1));
    record.description = "expired".into();
    c.state.put_token(&record).await.unwrap();
    let e = c
        .join("n4", &short.to_string(), Role::Agent)
        .await
        .unwrap_err();
    assert_eq!(refused_code(e), "token_expired");

    // Revoked: the same token that worked a moment ago.
    let fresh = JoinToken::generate(&agent.ca_hash);
    c.state
        .put_token(&TokenRecord::new(
            &fresh,
            Role::Agent,
            capstan_install::state::now_ms(),
            None,
        ))
        .await
        .unwrap();
    assert!(c.join("n5", &fresh.to_string(), Role::Agent).await.is_ok());
    c.state.revoke(&fresh.id).await.unwrap();
    let e = c
        .join("n6", &fresh.to_string(), Role::Agent)
        .await
        .unwrap_err();
    assert_eq!(refused_code(e), "token_revoked");
    let listed = c.state.tokens().await.unwrap();
    assert!(listed.iter().any(|t| t.id == fresh.id && t.revoked));
    assert!(c.state.revoke("00000000").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_chosen_before_the_cluster_join_once_the_master_proves_it_knows_them() {
    let agent = ShortToken::generate();
    let master = ShortToken::generate();
    let c = cluster_with(Some(master.clone()), Some(agent.clone())).await;
    // The cluster took the preset tokens, pinned to its new CA.
    let fingerprint = c.outcome.ca_fingerprint.clone();
    assert_eq!(
        c.outcome.tokens.agent.parse::<JoinToken>().unwrap(),
        agent.pin(&fingerprint)
    );
    assert_eq!(
        c.outcome.tokens.master.parse::<JoinToken>().unwrap(),
        master.pin(&fingerprint)
    );

    // A node given only the short token joins, trusting the CA the master proved; a second
    // run changes nothing.
    let joined = c
        .join("agent-1", &agent.to_string(), Role::Agent)
        .await
        .unwrap();
    let JoinOutcome::Joined(m) = joined else {
        panic!("a fresh node joins: {joined:?}")
    };
    assert_eq!(m.ca_fingerprint, fingerprint);
    let again = c
        .join("agent-1", &agent.to_string(), Role::Agent)
        .await
        .unwrap();
    assert!(matches!(again, JoinOutcome::AlreadyJoined(_)), "{again:?}");

    // A short token the cluster never had: no proof, so the node sends nothing and writes
    // nothing.
    let stranger = ShortToken::generate();
    let e = c
        .join("n1", &stranger.to_string(), Role::Agent)
        .await
        .unwrap_err();
    assert!(matches!(e, JoinError::NoProof { .. }), "{e:?}");
    assert!(!c.node("n1").config.exists() && !c.node("n1").pki().exists());

    // The endpoint itself, over plain HTTP as install.sh asks it.
    let nonce = generate_nonce();
    let proof_of = |id: &str, nonce: &str| format!("/v1/cluster/ca-proof?token={id}&nonce={nonce}");
    let (status, body) = c.http_get(&proof_of(&agent.id, &nonce)).await;
    assert_eq!(status, 200, "{body}");
    assert!(check_ca_proof(&agent, &nonce, &fingerprint, &body));
    // Unknown ids are answered alike, with a proof that checks for no one.
    let (status, body) = c.http_get(&proof_of(&stranger.id, &nonce)).await;
    assert_eq!(status, 200, "{body}");
    assert!(!check_ca_proof(&stranger, &nonce, &fingerprint, &body));
    for bad in [
        proof_of(&agent.id, "xyz"),
        "/v1/cluster/ca-proof".to_owned(),
    ] {
        let (status, body) = c.http_get(&bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Both roles cannot share one token id.
    let fresh = tempfile::tempdir().unwrap();
    let e = capstan_install::init::prepare(
        &Layout::under(fresh.path()),
        &InitOptions {
            name: "twins".into(),
            advertise: MASTER.parse().unwrap(),
            hostname: None,
            package: None,
            master_token: Some(agent.clone()),
            agent_token: Some(agent),
            security: SecurityMode::Permissive,
        },
    )
    .unwrap_err();
    assert!(matches!(e, InitError::Invalid(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_while_cluster_init_runs_waits_for_it_instead_of_failing_the_proof() {
    let agent = ShortToken::generate();
    let u = unseeded(None, Some(agent.clone())).await;
    // Before the cluster is stored, the proof of any token is "not initialized", not a proof
    // that fails (which would read as someone in the middle).
    let addr: SocketAddr = u.bootstrap.http_addr().unwrap();
    let nonce = generate_nonce();
    let url = format!(
        "http://{addr}/v1/cluster/ca-proof?token={}&nonce={nonce}",
        agent.id
    );
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "not_initialized", "{body}");

    // A node that starts joining now waits, and joins once init has stored the cluster.
    let root = u.root();
    let server = {
        let a = u.bootstrap.https_addr().unwrap();
        Server {
            host: a.ip().to_string(),
            port: a.port(),
        }
    };
    let opts = JoinOptions {
        public: false,
        server,
        token: agent.to_string().parse().unwrap(),
        role: Role::Agent,
        advertise: Some("127.0.0.2".parse().unwrap()),
        hostname: Some("early".into()),
        ca_file: None,
    };
    let layout = Layout::under(&root.join("early"));
    let joining = tokio::spawn(async move { capstan_install::join::join(&layout, &opts).await });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!joining.is_finished(), "the join waits for the cluster");
    let c = u.seed().await;
    let joined = tokio::time::timeout(std::time::Duration::from_secs(60), joining)
        .await
        .expect("the join ends once the cluster exists")
        .unwrap()
        .unwrap();
    let JoinOutcome::Joined(m) = joined else {
        panic!("the early node joins: {joined:?}")
    };
    assert_eq!(m.ca_fingerprint, c.outcome.ca_fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_joins_with_the_ca_key_and_waits_to_be_added_to_coord() {
    let c = cluster().await;
    let layout = c.node("master-2");
    let opts = c.opts(
        &c.outcome.tokens.master,
        Role::Master,
        "127.0.0.3",
        "master-2",
    );
    let joined = capstan_install::join::join(&layout, &opts).await.unwrap();
    assert!(matches!(joined, JoinOutcome::Joined(_)));
    assert!(
        layout.ca_key().exists(),
        "a master signs node certificates too"
    );
    let cluster = read_cluster(&layout);
    let masters: Vec<IpAddr> = ["127.0.0.1", "127.0.0.3"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    assert_eq!(cluster.masters, masters);
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&layout.config).unwrap()).unwrap();
    capstan_runtime::cluster::apply_cluster_defaults(&mut doc).unwrap();
    assert_eq!(doc["coord"]["id"], serde_yaml_ng::Value::from(2));
    assert_eq!(
        doc["coord"]["members"].as_sequence().map(Vec::len),
        Some(0),
        "a joining master's coord does not found a cluster of its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_server_serves_the_script_ca_and_package_and_keeps_joins_off_plain_http() {
    let c = cluster().await;
    let (status, script) = c.http_get("/install.sh").await;
    assert_eq!(status, 200);
    assert!(
        script.contains("CAPSTAN_SERVER=\"${CAPSTAN_SERVER:-127.0.0.1}\""),
        "{script}"
    );
    let (status, ca) = c.http_get("/v1/cluster/ca.pem").await;
    assert_eq!(status, 200);
    assert_eq!(
        capstan_install::pki::fingerprint(&ca),
        c.outcome.ca_fingerprint
    );
    let (status, facts) = c.http_get("/v1/cluster").await;
    assert_eq!(status, 200);
    let facts: serde_json::Value = serde_json::from_str(&facts).unwrap();
    assert_eq!(facts["cluster_id"], c.outcome.cluster_id.as_str());
    assert_eq!(facts["masters"][0], MASTER);

    let (status, body) = c.http_get("/v1/packages/capstan.deb").await;
    assert_eq!(status, 403, "the package only over HTTPS: {body}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["code"], "https_required");
    let addr = c.bootstrap.http_addr().unwrap();
    let post_join = |proto: Option<&'static str>| {
        let mut req = capstan_http_client::client()
            .post(format!("http://{addr}/v1/join"))
            .body("{}");
        if let Some(p) = proto {
            req = req.header("x-forwarded-proto", p);
        }
        req.send()
    };
    let resp = post_join(None).await.unwrap();
    assert_eq!(resp.status(), 403, "joins only over HTTPS");
    let resp = post_join(Some("http")).await.unwrap();
    assert_eq!(resp.status(), 403, "the router saying http");
    // The router on this master (a loopback peer) saying its client came over https: the
    // request is handled (and refused for its body, not its transport).
    let resp = post_join(Some("https")).await.unwrap();
    assert_eq!(resp.status(), 415, "a join is JSON");
    let resp = capstan_http_client::client()
        .get(format!("http://{addr}/v1/packages/capstan.deb"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), c.package.as_slice());

    let deb = c.https(http::Method::GET, "/v1/packages/capstan.deb").await;
    assert_eq!(deb.status, 200);
    assert_eq!(deb.body.as_ref(), c.package.as_slice());
    let bad = c.https(http::Method::POST, "/v1/join").await;
    assert_eq!(bad.status, 415, "a join is JSON: {:?}", bad.body);
    let e: serde_json::Value = serde_json::from_slice(&bad.body).unwrap();
    assert_eq!(e["code"], "bad_request");

    // A second init on the master refuses to make another cluster.
    let master = c.node("master");
    let e = capstan_install::init::prepare(
        &master,
        &InitOptions {
            name: "again".into(),
            advertise: MASTER.parse().unwrap(),
            hostname: None,
            package: None,
            master_token: None,
            agent_token: None,
            security: SecurityMode::Permissive,
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, InitError::AlreadyInitialized(ref id) if *id == c.outcome.cluster_id),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_endpoint_reports_the_node_and_takes_only_a_package_the_ca_signed_for_it() {
    use capstan_install::upgrade::{GRANT_HEADER, Grant, NodeStatus, PENDING_FILE, UPGRADE_DIR};
    let c = cluster().await;
    let master = c.node("master");
    let ca = std::fs::read_to_string(master.ca_cert()).unwrap();
    let ca_key = std::fs::read_to_string(master.ca_key()).unwrap();
    let addr = c.bootstrap.node_addr().expect("the node endpoint listens");
    let server = Server {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let tls = Arc::new(capstan_install::pki::client_config(&ca).unwrap());
    let call = |method: http::Method,
                path: &'static str,
                headers: Vec<(&'static str, String)>,
                body: &'static [u8]| {
        let server = server.clone();
        let tls = tls.clone();
        async move {
            https::request_with(
                &server,
                tls,
                method,
                path,
                &headers,
                bytes::Bytes::from_static(body),
            )
            .await
            .unwrap()
        }
    };
    let r = call(http::Method::GET, "/v1/node", vec![], b"").await;
    assert_eq!(r.status, 200);
    let status: NodeStatus = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(status.role, Role::Master);
    assert_eq!(status.hostname, "master-1");
    assert!(!status.upgrade_pending);
    assert_eq!(
        status.units.len(),
        capstan_install::activate::units(Role::Master).len()
    );

    let package: &'static [u8] = b"a new package";
    let code = |r: &https::Response| {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["code"].as_str().unwrap_or_default().to_owned()
    };
    let r = call(http::Method::PUT, "/v1/node/upgrade", vec![], package).await;
    assert_eq!(
        (r.status.as_u16(), code(&r).as_str()),
        (401, "grant_missing")
    );
    let now = capstan_install::state::now_ms();
    let me: IpAddr = MASTER.parse().unwrap();
    // Signed by another CA, for another node, for another package: refused, nothing kept.
    let other = capstan_install::pki::Ca::generate("x", "y").unwrap();
    let bad = [
        Grant::for_package(me, package, now)
            .sign(&other.0.key_pem)
            .unwrap(),
        Grant::for_package("10.9.9.9".parse().unwrap(), package, now)
            .sign(&ca_key)
            .unwrap(),
        Grant::for_package(me, b"something else", now)
            .sign(&ca_key)
            .unwrap(),
    ];
    for grant in bad {
        let r = call(
            http::Method::PUT,
            "/v1/node/upgrade",
            vec![(GRANT_HEADER, grant)],
            package,
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), code(&r).as_str()),
            (403, "grant_refused")
        );
    }
    let dir = master.state.join(UPGRADE_DIR);
    assert!(!dir.join(PENDING_FILE).exists());
    let grant = Grant::for_package(me, package, now).sign(&ca_key).unwrap();
    let r = call(
        http::Method::PUT,
        "/v1/node/upgrade",
        vec![(GRANT_HEADER, grant.clone())],
        package,
    )
    .await;
    assert_eq!(
        r.status.as_u16(),
        202,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(std::fs::read(dir.join(PENDING_FILE)).unwrap(), package);
    let r = call(http::Method::GET, "/v1/node", vec![], b"").await;
    let status: NodeStatus = serde_json::from_slice(&r.body).unwrap();
    assert!(status.upgrade_pending);
    // One upgrade at a time.
    let r = call(
        http::Method::PUT,
        "/v1/node/upgrade",
        vec![(GRANT_HEADER, grant)],
        package,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), code(&r).as_str()),
        (409, "upgrade_running")
    );
}
