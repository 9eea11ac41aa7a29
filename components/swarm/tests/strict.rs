//! Strict mode on the Docker API, against a strict master and a strict agent (a real coord
//! holds the identity records): swarm's port speaks TLS with its node certificate (plain HTTP
//! refused), `/_ping` and `/version` are open, everything else needs an operator's token (or
//! a master's certificate), the framework subscribes to the master over mutual TLS with
//! swarm's node certificate and reads the master's state with it; and this machine's
//! unmodified docker CLI (`--tlsverify --tlscacert`, a token in `HttpHeaders`)
//! runs a container on the strict agent and reads its logs, `top`, `stats`, runs execs in it
//! (one with stdin) and attached `run`s (one with stdin) — swarm's calls to the agent made over https with the node
//! certificate.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use capstan_iam::{Iam, Options};
use capstan_runtime::auth::{Role, SecurityMode};
use capstan_runtime::tls::NodeTls;
use capstan_runtime::{SecurityConfig, TlsFiles};
use capstan_testkit::pki::{NodeFiles, TestCa};
use capstan_testkit::wait_until;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn strict(files: &NodeFiles, ca_file: &Path) -> SecurityConfig {
    SecurityConfig {
        mode: SecurityMode::Strict,
        tls: Some(TlsFiles {
            cert_file: files.cert.clone(),
            key_file: files.key.clone(),
            ca_file: ca_file.to_path_buf(),
        }),
        allow_plaintext: false,
    }
}

fn tls_client(config: &rustls::ClientConfig) -> Result<reqwest::Client> {
    Ok(
        capstan_http_client::with_tls(capstan_http_client::builder(), config)
            .no_proxy()
            .build()?,
    )
}

/// The status of `GET <base><path>` with `auth`.
async fn status(http: &reqwest::Client, url: String, auth: Option<&str>) -> Result<u16> {
    let mut req = http.get(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    Ok(req.send().await?.status().as_u16())
}

/// The docker CLI against a TLS `host`, trusting `ca`, with `config` as its `DOCKER_CONFIG`
/// (which holds the token), `input` piped to its stdin (closed at the end, as a pipe does).
fn docker_with(
    host: &str,
    ca: &Path,
    config: &Path,
    args: &[&str],
    input: &[u8],
) -> Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .env("DOCKER_CERT_PATH", config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .args(["-H", host, "--tlsverify", "--tlscacert"])
        .arg(ca)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running docker")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(input)?;
    drop(stdin);
    let out = child.wait_with_output().context("waiting for docker")?;
    ensure!(
        out.status.success(),
        "docker {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_swarm_speaks_tls_guards_its_api_and_reaches_a_strict_master_and_agent()
-> Result<()> {
    let dir = capstan_testkit::temp_dir()?;
    let coord =
        capstan_coord::Server::start_single(dir.path().join("coord"), CancellationToken::new())
            .await
            .context("coord starts")?;
    let coord_url = format!("http://{}", coord.local_addr());
    let stop = CancellationToken::new();
    let iam = Iam::start(
        capstan_coord_client::Client::new([coord_url.clone()])?,
        Options::default(),
        stop.clone(),
    )
    .await?;
    iam.create_user("ops", "ops-pw", "", Role::Operator).await?;
    iam.create_user("vera", "vera-pw", "", Role::Viewer).await?;
    let operator = format!(
        "token={}",
        iam.login_password("ops", "ops-pw", "test").await?.token
    );
    let viewer = format!(
        "token={}",
        iam.login_password("vera", "vera-pw", "test").await?.token
    );

    let cluster = TestCa::new("cluster CA")?;
    let ca_file = cluster.write_cert(dir.path(), "ca.crt")?;
    let master_files = cluster.write_node(dir.path(), "master-1", "master")?;
    // swarm runs on the masters: a master's certificate.
    let swarm_files = cluster.write_node(dir.path(), "master-1-swarm", "master")?;
    let agent_files = cluster.write_node(dir.path(), "agent-1", "agent")?;

    let mut master_cfg = capstan_master::Config::for_tests();
    master_cfg.coord.endpoints = vec![coord_url.clone()];
    master_cfg.security = strict(&master_files, &ca_file);
    let master = capstan_master::Server::start(master_cfg, CancellationToken::new())
        .await
        .context("master starts")?;
    let master_base = format!("https://{}", master.local_addr());
    let user = tls_client(&capstan_http_client::trusting(&cluster.cert_pem)?)?;

    let cleanup = capstan_testkit::docker::ContainerCleanup::new();
    let agent_dir = capstan_testkit::temp_dir()?;
    let agent_cfg = capstan_agent::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        advertise_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        hostname: Some("strict-agent".into()),
        work_dir: agent_dir.path().to_path_buf(),
        masters: vec![master.local_addr().to_string()],
        coord_endpoints: vec![coord_url.clone()],
        security: strict(&agent_files, &ca_file),
        docker: capstan_agent::config::DockerConfig {
            extra_labels: cleanup.labels().into_iter().collect(),
            ..Default::default()
        },
        default_kill_grace: Duration::from_secs(1),
        ..capstan_agent::Config::default()
    };
    let agent = capstan_agent::Server::start(agent_cfg, CancellationToken::new())
        .await
        .context("agent starts")?;

    // A bare host:port master and coord endpoint: swarm speaks https to the master because it
    // is strict; coord here is a permissive one named by http://, which stays plain.
    let config = capstan_swarm::Config {
        masters: vec![master.local_addr().to_string()],
        coord_endpoints: vec![coord_url.clone()],
        framework_name: "swarm-strict".into(),
        auth: capstan_swarm::config::AuthConfig {
            required: true,
            iam_prefix: None,
        },
        security: strict(&swarm_files, &ca_file),
        ..capstan_swarm::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let swarm = capstan_swarm::Server::start_on(config, listener, CancellationToken::new())
        .await
        .context("swarm starts")?;
    let addr = swarm.local_addr();
    let base = format!("https://{addr}");

    // Open calls over TLS, without a credential; the rest an operator's.
    let ping = user.get(format!("{base}/_ping")).send().await?;
    ensure!(ping.status() == 200, "ping: {}", ping.status());
    ensure!(ping.text().await? == "OK");
    wait_until("swarm leads", WAIT, async || {
        let s = status(&user, format!("{base}/containers/json"), Some(&operator)).await?;
        ensure!(s == 200, "{s}");
        Ok(())
    })
    .await?;
    let agent_node = {
        let (cert, key) = cluster.issue("agent-2", "agent")?;
        tls_client(&NodeTls::from_pem(&cert, &key, &cluster.cert_pem)?.client_config())?
    };
    let master_node = {
        let (cert, key) = cluster.issue("master-2", "master")?;
        tls_client(&NodeTls::from_pem(&cert, &key, &cluster.cert_pem)?.client_config())?
    };
    let table: [(&reqwest::Client, &str, Option<&str>, u16); 10] = [
        (&user, "/_ping", None, 200),
        (&user, "/v1.44/version", None, 200),
        (&user, "/_capstan/health", None, 200),
        (&user, "/containers/json", None, 401),
        (&user, "/v1.44/info", Some("token=forged"), 401),
        (&user, "/containers/json", Some(&viewer), 403),
        (&user, "/containers/json", Some(&operator), 200),
        (&agent_node, "/containers/json", None, 403),
        (&master_node, "/containers/json", None, 200),
        (&user, "/containers/nope/json", Some(&operator), 404),
    ];
    for (i, (client, path, auth, want)) in table.into_iter().enumerate() {
        assert_eq!(
            status(client, format!("{base}{path}"), auth).await?,
            want,
            "row {i}: {path} {auth:?}"
        );
    }
    let refused: Value = user
        .get(format!("{base}/containers/json"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(refused["code"] == "unauthorized", "{refused}");
    // No plain HTTP on the strict port.
    let plain = capstan_http_client::client()
        .get(format!("http://{addr}/_ping"))
        .send()
        .await;
    ensure!(
        plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
        "plain HTTP answered"
    );
    // A client certificate of another CA fails the handshake.
    let other = TestCa::new("another CA")?;
    let (cert, key) = other.issue("intruder", "master")?;
    let intruder = tls_client(&NodeTls::from_pem(&cert, &key, &cluster.cert_pem)?.client_config())?;
    ensure!(
        intruder.get(format!("{base}/_ping")).send().await.is_err(),
        "another CA's certificate was accepted"
    );

    // The framework subscribed over mutual TLS: the master lists it.
    wait_until("swarm's framework is on the master", WAIT, async || {
        let state: Value = user
            .get(format!("{master_base}/master/state"))
            .header("authorization", &viewer)
            .send()
            .await?
            .json()
            .await?;
        let names: Vec<&str> = state["frameworks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str())
            .collect();
        ensure!(names.contains(&"swarm-strict"), "frameworks: {names:?}");
        ensure!(agent.master_connected(), "the agent is not registered yet");
        Ok(())
    })
    .await?;
    // /info reads the master's state summary with swarm's certificate: the agent is there.
    wait_until("info shows the agent", WAIT, async || {
        let info: Value = user
            .get(format!("{base}/info"))
            .header("authorization", &operator)
            .send()
            .await?
            .json()
            .await?;
        let agents = info["DriverStatus"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p[0] == "Agents")
            .cloned()
            .unwrap_or(Value::Null);
        ensure!(agents[1] == "1", "{info}");
        Ok(())
    })
    .await?;

    // The docker CLI through swarm to the strict agent's Docker engine.
    let image = "capstan/busybox";
    let engine = capstan_testkit::docker::docker()?;
    capstan_testkit::docker::ensure_image(&engine, image).await?;
    let config_dir = dir.path().join("docker");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(
        config_dir.join("config.json"),
        json!({"HttpHeaders": {"Authorization": operator}}).to_string(),
    )?;
    let host = format!("tcp://{addr}");
    let d = |args: &[&str]| docker_with(&host, &ca_file, &config_dir, args, b"");
    let piped =
        |args: &[&str], input: &[u8]| docker_with(&host, &ca_file, &config_dir, args, input);
    let version = d(&["version", "--format", "{{.Server.APIVersion}}"])?;
    ensure!(version.trim() == "1.51", "{version}");
    d(&[
        "run",
        "-d",
        "--name",
        "strict-echo",
        image,
        "sh",
        "-c",
        "echo hello-strict; sleep 60",
    ])?;
    // Logs come from the agent's sandbox files, over https with swarm's certificate.
    wait_until("the container's logs", WAIT, async || {
        let logs = d(&["logs", "strict-echo"])?;
        ensure!(logs.contains("hello-strict"), "{logs:?}");
        Ok(())
    })
    .await?;
    let out = d(&["exec", "strict-echo", "echo", "in-exec"])?;
    ensure!(out.contains("in-exec"), "{out:?}");
    let top = d(&["top", "strict-echo"])?;
    ensure!(top.contains("sleep"), "{top:?}");
    let stats = d(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}",
        "strict-echo",
    ])?;
    ensure!(stats.contains("strict-echo"), "{stats:?}");
    // An attached run: its output streams back through swarm.
    let out = d(&["run", "--rm", image, "echo", "attached-out"])?;
    ensure!(out.contains("attached-out"), "{out:?}");
    // Hijacked connections with stdin, relayed to the agent's hijacked https connection.
    let out = piped(&["exec", "-i", "strict-echo", "cat"], b"exec-stdin\n")?;
    ensure!(out.contains("exec-stdin"), "{out:?}");
    let out = piped(&["run", "-i", "--rm", image, "cat"], b"run-stdin\n")?;
    ensure!(out.contains("run-stdin"), "{out:?}");
    d(&["rm", "-f", "strict-echo"])?;

    swarm.shutdown().await;
    agent.shutdown().await;
    stop.cancel();
    master.shutdown().await;
    drop(coord);
    Ok(())
}
