//! The Debian package and what goes into it (`packaging/`): the systemd units, the `.deb`
//! `packaging/build-deb.sh` makes (files, modes, control data, lintian), and the refusals of
//! `install.sh` that happen before it sends or installs anything.
//!
//! Needs the Debian tools the package is made with: dpkg-deb, dpkg-shlibdeps (dpkg-dev),
//! binutils, lintian, systemd (systemd-analyze), shellcheck, curl.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use anyhow::{Context as _, bail, ensure};
use capstan_testkit::capstan_bin;

/// Every daemon that ships a unit, and the role targets that start it.
const UNITS: [(&str, &[&str]); 10] = [
    ("coord", &["master"]),
    ("master", &["master"]),
    ("apps", &["master"]),
    ("dns", &["master"]),
    ("bootstrap", &["master", "agent"]),
    ("router", &["master"]),
    ("catalog", &["master"]),
    ("swarm", &["master"]),
    ("agent", &["agent"]),
    ("l4lb", &["master", "agent"]),
];

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging")
}

/// Runs `cmd`, failing with a clear message if the tool is not installed.
fn run(cmd: &mut Command, package: &str) -> anyhow::Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.output().with_context(|| {
        format!(
            "cannot run {program}: install the Debian package {package} (apt-get install {package})"
        )
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A unit file as section → key → values (a key may repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(path: &Path) -> anyhow::Result<Unit> {
    let body = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in body.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("{}: not a key=value line: {line}", path.display()))?;
        ensure!(
            !section.is_empty(),
            "{}: {key} outside a section",
            path.display()
        );
        unit.entry(section.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    Ok(unit)
}

/// The one value of `section.key`, or an error naming the file.
fn one<'a>(unit: &'a Unit, file: &str, section: &str, key: &str) -> anyhow::Result<&'a str> {
    match unit
        .get(section)
        .and_then(|s| s.get(key))
        .map(Vec::as_slice)
    {
        Some([value]) => Ok(value),
        Some(values) => bail!("{file}: [{section}] {key} is set {} times", values.len()),
        None => bail!("{file}: [{section}] has no {key}="),
    }
}

/// The space-separated words of every `section.key` line.
fn words(unit: &Unit, section: &str, key: &str) -> Vec<String> {
    unit.get(section)
        .and_then(|s| s.get(key))
        .into_iter()
        .flatten()
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

#[test]
fn every_unit_runs_its_daemon_the_way_the_design_says() -> anyhow::Result<()> {
    let bin = capstan_bin()?;
    let dir = packaging().join("systemd");
    let mut shipped: Vec<String> = std::fs::read_dir(&dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<_>>()?;
    shipped.sort();
    let mut expected: Vec<String> = UNITS
        .iter()
        .map(|(daemon, _)| format!("capstan-{daemon}.service"))
        .chain([
            "capstan-master.target".into(),
            "capstan-agent.target".into(),
            // `capstan cluster upgrade`'s installer, started when a package was uploaded.
            "capstan-upgrade.path".into(),
            "capstan-upgrade.service".into(),
        ])
        .collect();
    expected.sort();
    assert_eq!(shipped, expected, "the units in packaging/systemd");

    let config = packaging().join("config.yaml");
    for (daemon, roles) in UNITS {
        let file = format!("capstan-{daemon}.service");
        let unit = parse_unit(&dir.join(&file))?;
        let targets: Vec<String> = roles
            .iter()
            .map(|r| format!("capstan-{r}.target"))
            .collect();
        let service = |key| one(&unit, &file, "Service", key);
        assert_eq!(service("Type")?, "notify", "{file}");
        assert_eq!(service("NotifyAccess")?, "main", "{file}");
        assert_eq!(service("Restart")?, "on-failure", "{file}");
        assert_eq!(service("RestartSec")?, "2", "{file}");
        let start = format!("/usr/bin/capstan daemon {daemon} --config /etc/capstan/config.yaml");
        assert_eq!(service("ExecStart")?, start, "{file}");
        assert_eq!(
            service("ExecStartPre")?,
            format!("{start} --check-config"),
            "{file}"
        );
        assert_eq!(words(&unit, "Unit", "PartOf"), targets, "{file}");
        assert_eq!(words(&unit, "Install", "WantedBy"), targets, "{file}");
        for target in &targets {
            let wants = words(&parse_unit(&dir.join(target))?, "Unit", "Wants");
            assert!(
                wants.contains(&file),
                "{target} does not want {file}: {wants:?}"
            );
        }

        // Hardening: no new privileges, no home directories, a bounded capability set;
        // only dns and the router may bind low ports (bootstrap listens on loopback behind
        // the router).
        assert_eq!(service("NoNewPrivileges")?, "yes", "{file}");
        assert!(
            ["yes", "read-only"].contains(&service("ProtectHome")?),
            "{file}"
        );
        let caps = words(&unit, "Service", "CapabilityBoundingSet");
        let binds_low_ports = ["dns", "router"].contains(&daemon);
        assert_eq!(
            caps.contains(&"CAP_NET_BIND_SERVICE".to_owned()),
            binds_low_ports,
            "{file}: {caps:?}"
        );
        assert!(
            !caps.iter().any(|c| c == "CAP_SYS_ADMIN"),
            "{file}: {caps:?}"
        );
        // Only l4lb programs the network (nftables, its VIP device and routes), with
        // CAP_NET_ADMIN alone.
        if daemon == "l4lb" {
            assert_eq!(caps, ["CAP_NET_ADMIN"], "{file}");
            assert_eq!(service("AmbientCapabilities")?, "CAP_NET_ADMIN", "{file}");
        } else {
            assert!(
                !caps.iter().any(|c| c == "CAP_NET_ADMIN"),
                "{file}: {caps:?}"
            );
        }
        if binds_low_ports {
            assert_eq!(
                service("AmbientCapabilities")?,
                "CAP_NET_BIND_SERVICE",
                "{file}"
            );
        }
        if ["catalog", "swarm"].contains(&daemon) {
            // It needs nothing of root's: a user of its own and no capability at all.
            assert_eq!(service("DynamicUser")?, "yes", "{file}");
            assert!(caps.is_empty(), "{file}: {caps:?}");
            for key in ["After", "Wants"] {
                let deps = words(&unit, "Unit", key);
                assert!(
                    deps.contains(&"capstan-coord.service".to_owned()),
                    "{file} {key}: {deps:?}"
                );
            }
        }
        if daemon == "agent" {
            for key in ["After", "Wants"] {
                let deps = words(&unit, "Unit", key);
                assert!(
                    deps.contains(&"docker.service".to_owned()),
                    "{file} {key}: {deps:?}"
                );
            }
            assert_eq!(service("ProtectSystem")?, "full", "{file}");
        } else {
            assert_eq!(service("ProtectSystem")?, "strict", "{file}");
            assert_eq!(service("PrivateTmp")?, "yes", "{file}");
        }

        // The unit's commands exist in the binary and accept the shipped config.
        let out = Command::new(&bin)
            .args(["daemon", daemon, "--config"])
            .arg(&config)
            .arg("--check-config")
            .env_remove("CAPSTAN_CONFIG")
            .output()?;
        assert!(
            out.status.success(),
            "{file}: capstan daemon {daemon} --check-config on packaging/config.yaml: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    Ok(())
}

/// systemd's own parser accepts every unit without a complaint (unknown keys and bad values
/// are only warnings to systemd, so any output fails).
#[test]
fn systemd_analyze_verify_accepts_the_units() -> anyhow::Result<()> {
    let bin = capstan_bin()?;
    let tmp = tempfile::tempdir()?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(packaging().join("systemd"))? {
        let path = entry?.path();
        // The commands must exist where systemd looks: point them at the binary under test.
        let upgrade_node = packaging().join("upgrade-node");
        let body = std::fs::read_to_string(&path)?
            .replace("/usr/bin/capstan", &bin.display().to_string())
            .replace(
                "/usr/lib/capstan/upgrade-node",
                &upgrade_node.display().to_string(),
            );
        let copy = tmp.path().join(path.file_name().context("unit file name")?);
        std::fs::write(&copy, body)?;
        files.push(copy);
    }
    let out = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&files),
        "systemd",
    )?;
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "{report}");
    Ok(())
}

/// One quick package for the tests below (debug binary, no images), built once per run.
fn quick_deb() -> anyhow::Result<PathBuf> {
    static DEB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DEB.get_or_init(|| build_quick_deb().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build_quick_deb() -> anyhow::Result<PathBuf> {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging-deb");
    if out_dir.exists() {
        std::fs::remove_dir_all(&out_dir)?;
    }
    let out = run(
        Command::new(packaging().join("build-deb.sh"))
            .env("BIN", capstan_bin()?)
            .env("NO_IMAGES", "1")
            .env("OUT", &out_dir),
        "dpkg-dev",
    )?;
    ensure!(
        out.status.success(),
        "packaging/build-deb.sh failed:\n{}",
        text(&out.stderr)
    );
    let deb = PathBuf::from(text(&out.stdout).trim());
    let name = format!("capstan_{}-1_amd64.deb", env!("CARGO_PKG_VERSION"));
    ensure!(
        deb == out_dir.join(&name),
        "build-deb.sh printed {}, not OUT/{name}",
        deb.display()
    );
    ensure!(deb.is_file(), "{} is missing", deb.display());
    Ok(deb)
}

#[test]
fn the_deb_holds_the_files_of_an_installed_node_with_their_modes() -> anyhow::Result<()> {
    let deb = quick_deb()?;
    let out = run(Command::new("dpkg-deb").arg("-c").arg(&deb), "dpkg")?;
    ensure!(out.status.success(), "dpkg-deb -c: {}", text(&out.stderr));
    // "-rwxr-xr-x root/root 123 2026-12-02 13:37 ./usr/bin/capstan"
    let mut listing = BTreeMap::new();
    for line in text(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(fields.len() >= 6, "odd dpkg-deb -c line: {line}");
        assert_eq!(fields[1], "root/root", "{line}");
        let path = fields[5].trim_start_matches('.').to_owned();
        listing.insert(path, fields[0].to_owned());
    }
    let exe = "-rwxr-xr-x";
    let file = "-rw-r--r--";
    let mut expected = vec![
        ("/usr/bin/capstan", exe),
        ("/usr/sbin/capstan-uninstall", exe),
        ("/usr/share/capstan/install.sh", exe),
        ("/etc/capstan/config.yaml", file),
        ("/usr/share/doc/capstan/copyright", file),
        ("/usr/share/doc/capstan/changelog.Debian.gz", file),
        ("/usr/share/man/man1/capstan.1.gz", file),
        ("/usr/share/man/man8/capstan-uninstall.8.gz", file),
        ("/usr/share/lintian/overrides/capstan", file),
        ("/usr/lib/systemd/system/capstan-master.target", file),
        ("/usr/lib/systemd/system/capstan-agent.target", file),
    ];
    let units: Vec<String> = UNITS
        .iter()
        .map(|(daemon, _)| format!("/usr/lib/systemd/system/capstan-{daemon}.service"))
        .collect();
    expected.extend(units.iter().map(|u| (u.as_str(), file)));
    for (path, mode) in &expected {
        assert_eq!(
            listing.get(*path).map(String::as_str),
            Some(*mode),
            "{path} in {listing:#?}"
        );
    }
    for (path, mode) in &listing {
        if path.ends_with('/') {
            assert_eq!(mode, "drwxr-xr-x", "{path}");
        }
    }
    // State is made by postinst (0700), never shipped; NO_IMAGES=1 leaves the images out.
    assert!(
        !listing.keys().any(|p| p.starts_with("/var/")),
        "{listing:#?}"
    );
    assert!(
        !listing.keys().any(|p| p.contains("/images/")),
        "{listing:#?}"
    );

    // The shipped config is packaging/config.yaml, and the stripped binary still runs.
    let root = tempfile::tempdir()?;
    let out = run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(root.path()),
        "dpkg",
    )?;
    ensure!(out.status.success(), "dpkg-deb -x: {}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/capstan/config.yaml"))?,
        std::fs::read_to_string(packaging().join("config.yaml"))?
    );
    let out = Command::new(root.path().join("usr/bin/capstan"))
        .arg("version")
        .output()?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        Command::new("readelf")
            .arg("-S")
            .arg(root.path().join("usr/bin/capstan")),
        "binutils",
    )?;
    assert!(
        !text(&out.stdout).contains(".symtab"),
        "the packaged binary is not stripped"
    );
    Ok(())
}

#[test]
fn the_deb_control_data_is_sane() -> anyhow::Result<()> {
    let deb = quick_deb()?;
    let field = |name: &str| -> anyhow::Result<String> {
        let out = run(
            Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name),
            "dpkg",
        )?;
        ensure!(
            out.status.success(),
            "dpkg-deb -f {name}: {}",
            text(&out.stderr)
        );
        Ok(text(&out.stdout).trim().to_owned())
    };
    assert_eq!(field("Package")?, "capstan");
    assert_eq!(
        field("Version")?,
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(field("Architecture")?, "amd64");
    let depends = field("Depends")?;
    assert!(depends.starts_with("libc6 (>= 2."), "{depends}");
    assert!(depends.split(", ").any(|d| d == "systemd"), "{depends}");
    let recommends = field("Recommends")?;
    assert!(recommends.contains("docker.io"), "{recommends}");
    assert!(field("Installed-Size")?.parse::<u64>()? > 1000);
    assert!(field("Maintainer")?.contains('@'));
    assert!(!field("Description")?.is_empty());

    let control = tempfile::tempdir()?;
    let dir = control.path().join("DEBIAN");
    let out = run(
        Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&dir),
        "dpkg",
    )?;
    ensure!(out.status.success(), "dpkg-deb -e: {}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.join("conffiles"))?,
        "/etc/capstan/config.yaml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join(script))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{script}");
    }
    let postinst = std::fs::read_to_string(dir.join("postinst"))?;
    assert!(
        postinst.contains("chmod 0700 /var/lib/capstan"),
        "{postinst}"
    );
    let commands: Vec<&str> = postinst
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        !commands
            .iter()
            .any(|l| l.contains("enable") || l.contains(" start ") || l.contains(" restart ")),
        "postinst must never enable or start units, only try-restart them:\n{postinst}"
    );
    assert!(
        commands.iter().any(|l| l.contains("try-restart")),
        "{postinst}"
    );
    let postrm = std::fs::read_to_string(dir.join("postrm"))?;
    assert!(
        postrm.contains("rm -rf /etc/capstan /var/lib/capstan"),
        "{postrm}"
    );
    Ok(())
}

#[test]
fn the_deb_is_lintian_clean() -> anyhow::Result<()> {
    let deb = quick_deb()?;
    // lint-deb.sh says itself if lintian is missing.
    let out = Command::new(packaging().join("lint-deb.sh"))
        .arg(&deb)
        .output()?;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn the_shell_scripts_are_posix_and_shellcheck_clean() -> anyhow::Result<()> {
    let dir = packaging();
    let posix = [
        "install.sh",
        "capstan-uninstall",
        "debian/postinst",
        "debian/prerm",
        "debian/postrm",
    ];
    for script in posix {
        let out = Command::new("sh")
            .arg("-n")
            .arg(dir.join(script))
            .output()?;
        assert!(
            out.status.success(),
            "sh -n {script}: {}",
            text(&out.stderr)
        );
    }
    let out = run(
        Command::new("shellcheck")
            .args(["-s", "sh"])
            .args(posix.iter().map(|s| dir.join(s))),
        "shellcheck",
    )?;
    assert!(out.status.success(), "{}", text(&out.stdout));
    let out = run(
        Command::new("shellcheck").args(["build-deb.sh", "lint-deb.sh"].map(|s| dir.join(s))),
        "shellcheck",
    )?;
    assert!(out.status.success(), "{}", text(&out.stdout));

    // The bootstrap server rewrites this one line when it serves the script.
    let script = std::fs::read_to_string(dir.join("install.sh"))?;
    let placeholder = r#"CAPSTAN_SERVER="${CAPSTAN_SERVER:-}""#;
    assert_eq!(
        script.lines().filter(|l| *l == placeholder).count(),
        1,
        "install.sh must hold exactly one line {placeholder}"
    );
    Ok(())
}

/// Runs install.sh as `curl ... | sh -s -- ARGS` does: the script on stdin.
fn install_sh(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    use std::io::Write as _;
    let script = std::fs::read(packaging().join("install.sh"))?;
    let mut child = Command::new("sh")
        .arg("-s")
        .arg("--")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("CAPSTAN_SERVER")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("install.sh stdin")?
        .write_all(&script)?;
    Ok(child.wait_with_output()?)
}

const HASH: &str = "0f343b0931126a20f133d67c2b018a3b5f4c6c6d0ff0a54b2b3e4a2d18fb7c50";

#[test]
fn install_sh_refuses_a_malformed_token() -> anyhow::Result<()> {
    let id = "0123abcd";
    let secret = "0123456789abcdef0123456789abcdef";
    let cases = [
        ("K10abc::x.y".to_owned(), "it must start with CSTN1"),
        (format!("CSTN1{HASH}{id}{secret}"), "the form is"),
        (format!("CSTN1{}::{id}.{secret}", &HASH[1..]), "CA hash"),
        (
            format!("CSTN1{}::{id}.{secret}", HASH.to_uppercase()),
            "CA hash",
        ),
        (format!("CSTN1{HASH}::{}.{secret}", &id[1..]), "its id"),
        (format!("CSTN1{HASH}::{id}.{secret}0"), "its secret"),
    ];
    for (token, why) in cases {
        let out = install_sh(
            &[
                "--role",
                "agent",
                "--join",
                &token,
                "--server",
                "127.0.0.1:9",
            ],
            &[],
        )?;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{token}: {err}");
        assert!(
            err.contains("malformed join token") && err.contains(why),
            "{token}: {err}"
        );
        assert!(
            !err.contains("fetching"),
            "{token}: fetched before checking: {err}"
        );
    }
    Ok(())
}

#[test]
fn install_sh_refuses_a_master_that_cannot_prove_it_knows_a_short_token() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nsomeone's\n")?;
    // A proof for some other nonce: what a replaying or guessing middleman can offer.
    let proof = dir.path().join("proof");
    std::fs::write(&proof, format!("{}\n", "0".repeat(64)))?;
    let token = "CSTN1::0123abcd.0123456789abcdef0123456789abcdef";
    let ca_url = format!("file://{}", ca.display());
    let proof_url = format!("file://{}", proof.display());
    let out = install_sh(
        &[
            "--role",
            "agent",
            "--join",
            token,
            "--server",
            "127.0.0.1:9",
        ],
        // curl ignores the query install.sh adds to a file:// URL.
        &[
            ("CAPSTAN_CA_URL", &ca_url),
            ("CAPSTAN_PROOF_URL", &proof_url),
        ],
    )?;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("could not prove it knows this join token")
            && err.contains("Nothing was sent or installed"),
        "{err}"
    );
    assert!(
        !err.contains("installing") && !err.contains("downloading"),
        "{err}"
    );
    Ok(())
}

#[test]
fn install_sh_refuses_a_master_whose_ca_is_not_the_tokens() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nnot the cluster's\n")?;
    let token = format!("CSTN1{HASH}::0123abcd.0123456789abcdef0123456789abcdef");
    let url = format!("file://{}", ca.display());
    let out = install_sh(
        &[
            "--role",
            "agent",
            "--join",
            &token,
            "--server",
            "127.0.0.1:9",
        ],
        &[("CAPSTAN_CA_URL", &url)],
    )?;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not the one this token was made for")
            && err.contains("Nothing was sent or installed"),
        "{err}"
    );
    assert!(err.contains(HASH), "{err}");
    assert!(
        !err.contains("installing") && !err.contains("downloading"),
        "{err}"
    );
    Ok(())
}
