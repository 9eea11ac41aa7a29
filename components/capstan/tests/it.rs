//! Tests of the real `capstan` binary: flags, config checking, exit codes, and the daemon
//! lifecycle (READY=1, signals) through testkit.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use capstan_testkit::{CapstanCommand, CapstanProcess, Signal, free_ports, wait_until};
use serde_json::json;

#[path = "it/cluster.rs"]
mod cluster;
#[path = "it/package.rs"]
mod package;
#[path = "it/packaging.rs"]
mod packaging;

const BIN: &str = env!("CARGO_BIN_EXE_capstan");
const EX_CONFIG: i32 = 78;

fn capstan(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("CAPSTAN_CONFIG")
        .output()
        .expect("run capstan")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `yaml` to a fresh temp file and runs `capstan <daemon> --config it --check-config`.
fn check_config(daemon: &str, yaml: &str) -> (Output, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yaml");
    std::fs::write(&path, yaml).unwrap();
    let path = path.display().to_string();
    let out = capstan(&["daemon", daemon, "--config", &path, "--check-config"]);
    (out, dir, path)
}

#[test]
fn version_prints_version_git_sha_and_build_date() {
    let out = capstan(&["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("capstan {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("(git "), "{text}");
    assert!(text.contains(", built 20"), "{text}");
}

#[test]
fn good_config_passes_check_config() {
    let yaml = "# a node\nlog:\n  level: capstan_master=debug,info\n  format: text\nmaster: {}\n";
    let (out, _dir, path) = check_config("master", yaml);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("config OK: {path}"));
}

#[test]
fn bad_value_names_the_file_and_field_and_exits_78() {
    let (out, _dir, path) = check_config("master", "log:\n  format: fancy\n");
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = stderr(&out);
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("`log.format`"), "{err}");
    assert!(err.contains("unknown variant `fancy`"), "{err}");
}

#[test]
fn invalid_value_is_reported_by_validation_with_its_field() {
    let (out, _dir, path) = check_config("coord", "log:\n  level: capstan=loud\n");
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = stderr(&out);
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("`log.level`"), "{err}");
}

#[test]
fn unknown_key_is_an_error_naming_the_key() {
    let (out, _dir, _) = check_config("master", "mastr:\n  listen: 127.0.0.1:5050\n");
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(stderr(&out).contains("`mastr`"), "{}", stderr(&out));

    let (out, _dir, _) = check_config("master", "log:\n  levle: debug\n");
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(stderr(&out).contains("`log.levle`"), "{}", stderr(&out));
}

#[test]
fn unknown_key_in_a_daemon_section_names_section_and_key() {
    let (out, _dir, path) = check_config("master", "master:\n  lisen: 127.0.0.1:5050\n");
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = stderr(&out);
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("`master.lisen`"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn every_daemon_section_rejects_unknown_keys() {
    for section in ["coord", "master", "agent", "apps", "dns"] {
        let yaml = format!("{section}:\n  bogus_key: 1\n");
        let (out, _dir, _) = check_config(section, &yaml);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{section}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("`{section}.bogus_key`")),
            "{section}: {err}"
        );
    }
}

#[test]
fn daemon_section_validation_problems_are_all_reported_with_their_fields() {
    let yaml = "coord:\n  id: 0\n  watch_history: 0\nlog:\n  level: x=loud\n";
    let (out, _dir, _) = check_config("coord", yaml);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = stderr(&out);
    for field in ["`coord.id`", "`coord.watch_history`", "`log.level`"] {
        assert!(err.contains(field), "{field} missing in: {err}");
    }
}

#[test]
fn missing_config_file_is_a_clear_error_and_exits_78() {
    let out = capstan(&[
        "daemon",
        "dns",
        "--config",
        "/nonexistent/capstan.yaml",
        "--check-config",
    ]);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = stderr(&out);
    assert!(
        err.contains("cannot read config file /nonexistent/capstan.yaml"),
        "{err}"
    );
}

#[test]
fn daemons_live_under_daemon_and_coord_is_only_the_cli() {
    let out = capstan(&["master", "--check-config"]);
    assert_eq!(out.status.code(), Some(2), "no top-level daemon commands");
    let out = capstan(&["coord"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("capstan daemon coord"),
        "{}",
        stderr(&out)
    );
    let out = capstan(&["daemon", "--help"]);
    assert!(out.status.success());
    for daemon in [
        "coord", "master", "agent", "apps", "dns", "router", "catalog",
    ] {
        assert!(stdout(&out).contains(daemon), "{}", stdout(&out));
    }
}

#[test]
fn the_cluster_section_fills_every_daemon_section() {
    // Several coord members authenticate each other: the one key a cluster section cannot
    // default (the installer points it at the cluster CA's key).
    let yaml = "cluster:\n  masters: [127.0.1.1, 127.0.1.2, 127.0.1.3]\n  advertise: 127.0.1.2\n\
                coord:\n  peer_secret_file: /var/lib/capstan/pki/ca.key\n";
    for daemon in [
        "coord", "master", "apps", "dns", "agent", "router", "catalog",
    ] {
        let (out, _dir, _) = check_config(daemon, yaml);
        assert!(out.status.success(), "{daemon}: {}", stderr(&out));
    }
    let (out, _dir, _) = check_config(
        "master",
        "cluster:\n  masters: []\n  advertise: 127.0.1.2\n",
    );
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(stderr(&out).contains("cluster.masters"), "{}", stderr(&out));
    let (out, _dir, _) = check_config("master", "cluster:\n  mastrs: []\n");
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(stderr(&out).contains("cluster"), "{}", stderr(&out));
    // A section's own keys still win, and are still checked.
    let (out, _dir, _) = check_config(
        "master",
        "cluster: {masters: [127.0.1.1], advertise: 127.0.1.1}\nmaster: {lisen: x}\n",
    );
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(stderr(&out).contains("master.lisen"), "{}", stderr(&out));
}

#[test]
fn the_packaged_default_config_is_valid_for_every_daemon() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/config.yaml");
    for daemon in [
        "coord", "master", "agent", "apps", "dns", "router", "catalog",
    ] {
        let out = capstan(&["daemon", daemon, "--config", path, "--check-config"]);
        assert!(out.status.success(), "{daemon}: {}", stderr(&out));
    }
}

#[test]
fn a_strict_cluster_section_gives_every_daemon_a_valid_secured_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "cluster:\n  masters: [10.0.0.1]\n  advertise: 10.0.0.1\n  security: {mode: strict}\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    for daemon in [
        "coord",
        "master",
        "agent",
        "apps",
        "dns",
        "l4lb",
        "router",
        "catalog",
        "swarm",
        "bootstrap",
    ] {
        let out = capstan(&["daemon", daemon, "--config", path, "--check-config"]);
        assert!(out.status.success(), "{daemon}: {}", stderr(&out));
    }
}

#[test]
fn config_path_can_come_from_capstan_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.yaml");
    std::fs::write(&path, "log: {level: warn}\n").unwrap();
    let out = Command::new(BIN)
        .args(["daemon", "apps", "--check-config"])
        .env("CAPSTAN_CONFIG", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&path.display().to_string()));
}

#[tokio::test]
async fn spawned_daemon_reports_ready_and_exits_cleanly_on_sigterm() {
    let mut idle = CapstanProcess::spawn(&["daemon", "idle"], "log: {level: debug}\n")
        .await
        .unwrap();
    assert!(idle.is_running());
    let status = idle.terminate().await.unwrap();
    assert!(status.success(), "{status}; log:\n{}", idle.log_tail());
    let log = idle.log_tail();
    assert!(log.contains("Received signal, shutting down"), "{log}");
    assert!(log.contains("Stopped"), "{log}");
}

#[tokio::test]
async fn sigint_also_shuts_a_daemon_down_cleanly() {
    let mut idle = CapstanProcess::spawn(&["daemon", "idle"], "")
        .await
        .unwrap();
    idle.signal(Signal::SIGINT).unwrap();
    let status = idle.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "{status}; log:\n{}", idle.log_tail());
    assert!(
        idle.log_tail().contains("signal=\"SIGINT\""),
        "{}",
        idle.log_tail()
    );
}

#[tokio::test]
async fn paused_daemon_still_runs_and_restart_brings_up_a_new_process() {
    let mut idle = CapstanProcess::spawn(
        &["daemon", "idle"],
        serde_json::json!({"log": {"format": "text"}}),
    )
    .await
    .unwrap();
    idle.pause().unwrap();
    assert!(idle.is_running());
    idle.resume().unwrap();
    let first = idle.pid();
    idle.restart().await.unwrap();
    assert_ne!(idle.pid(), first);
    assert!(idle.is_running());
    assert!(idle.log_tail().contains("start #2"), "{}", idle.log_tail());
}

#[tokio::test]
async fn killed_daemon_is_gone_and_can_be_restarted() {
    let mut idle = CapstanProcess::spawn(&["daemon", "idle"], "")
        .await
        .unwrap();
    let pid = idle.pid();
    idle.kill().unwrap();
    assert!(!idle.is_running());
    wait_until(
        "the killed pid to disappear",
        Duration::from_secs(10),
        async || !Path::new(&format!("/proc/{pid}")).exists(),
    )
    .await
    .unwrap();
    idle.restart().await.unwrap();
    assert!(idle.is_running());
}

#[tokio::test]
async fn daemon_with_a_bad_config_fails_to_spawn_with_its_log_tail() {
    let err = CapstanCommand::new(&["daemon", "idle"], "log: {lvl: debug}\n")
        .ready_timeout(Duration::from_secs(20))
        .spawn()
        .await
        .err()
        .expect("spawn must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("exited with"), "{msg}");
    assert!(msg.contains("`log.lvl`"), "{msg}");
}

#[tokio::test]
async fn master_subcommand_is_ready_once_its_port_accepts_connections() {
    let port = free_ports(1).unwrap()[0];
    let config = json!({"master": {"listen": format!("127.0.0.1:{port}")}});
    let mut master = CapstanProcess::spawn(&["daemon", "master"], config)
        .await
        .unwrap();
    // READY=1 is sent after the bind, so the port must answer at once.
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("master not listening: {e}; log:\n{}", master.log_tail()));
    let status = master.terminate().await.unwrap();
    assert!(status.success(), "{status}; log:\n{}", master.log_tail());
}

#[tokio::test]
async fn coord_subcommand_is_ready_once_its_port_accepts_connections() {
    let data = tempfile::tempdir().unwrap();
    let port = free_ports(1).unwrap()[0];
    let addr = format!("127.0.0.1:{port}");
    let config = json!({"coord": {
        "id": 1,
        "listen": addr,
        "data_dir": data.path(),
        "members": [{"id": 1, "addr": addr}],
    }});
    let mut coord = CapstanProcess::spawn(&["daemon", "coord"], config)
        .await
        .unwrap();
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("coord not listening: {e}; log:\n{}", coord.log_tail()));
    let status = coord.terminate().await.unwrap();
    assert!(status.success(), "{status}; log:\n{}", coord.log_tail());
}
