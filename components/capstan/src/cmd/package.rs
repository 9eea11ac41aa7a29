//! `capstan package build DIR [-o FILE]`: a Universe-style source tree into a repository file
//! (`capstan_catalog::source` builds and checks it); `capstan package bundle` and `import`:
//! packages and their images in one file for a cluster with no registry
//! (`capstan_catalog::bundle`). This is flags, the `docker save` calls and output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use capstan_runtime::Chain;

use super::{fail, say};

#[derive(Debug, clap::Subcommand)]
pub enum PackageCommand {
    /// Build a repository file from a Universe-style source tree
    /// (`[repo/]packages/<L>/<name>/<revision>/{package.json, config.json,
    /// marathon.json.mustache, resource.json}`), checking every package: its fields, its
    /// options schema, and that its template renders with the defaults into a valid app.
    Build(BuildArgs),
    /// Write one file holding packages and every Docker image their resources name
    /// (`docker save`), for a cluster that reaches no registry (`capstan package import`).
    Bundle(BundleArgs),
    /// Upload a bundle to a cluster: its images into the masters' image store (agents load
    /// them from there), its packages into the cluster's local repository.
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// A source tree (as `package build` takes) or a repository JSON file.
    source: PathBuf,
    /// Only these packages of it (repeatable; default: all).
    #[arg(long = "package", value_name = "NAME")]
    packages: Vec<String>,
    /// The bundle file to write.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The bundle file.
    file: PathBuf,
    /// The cluster's router (`http://<master>`), or a master's catalog (`http://<master>:7070`).
    #[arg(long, env = "CAPSTAN_ROUTER")]
    router: String,
    /// An authentication token (`dcos config show core.dcos_acs_token`).
    #[arg(long, env = "CAPSTAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Log in as this user to get a token (with --password).
    #[arg(long)]
    username: Option<String>,
    #[arg(long, env = "CAPSTAN_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The source tree: a directory holding `packages/` or `repo/packages/`.
    dir: PathBuf,
    /// Where to write the repository JSON (default: stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Exits 0 with the repository written, 1 with the file and field of the first problem.
pub fn run(command: PackageCommand) -> ExitCode {
    match command {
        PackageCommand::Build(args) => build(&args),
        PackageCommand::Bundle(args) => finish(bundle(&args)),
        PackageCommand::Import(args) => finish(import(&args)),
    }
}

fn finish(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(line) => {
            say(&line);
            ExitCode::SUCCESS
        }
        Err(e) => {
            fail(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The packages at `source`: a source tree is built, a file is parsed as a repository.
fn load_source(source: &Path) -> anyhow::Result<capstan_catalog::universe::Repository> {
    use anyhow::Context as _;
    if source.is_dir() {
        return capstan_catalog::source::build_dir(source)
            .map_err(|e| anyhow::anyhow!("{}", Chain(&e)));
    }
    let bytes =
        std::fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
    capstan_catalog::universe::Repository::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", source.display()))
}

/// `docker save IMAGE -o FILE` with the docker CLI.
fn docker_save(image: &str, file: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let out = std::process::Command::new("docker")
        .arg("save")
        .arg("-o")
        .arg(file)
        .arg(image)
        .output()
        .context("cannot run the docker CLI")?;
    if !out.status.success() {
        anyhow::bail!(
            "docker save {image} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn bundle(args: &BundleArgs) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let mut repo = load_source(&args.source)?;
    if !args.packages.is_empty() {
        for name in &args.packages {
            if !repo.packages.iter().any(|p| &p.name == name) {
                anyhow::bail!("{} has no package {name}", args.source.display());
            }
        }
        repo.packages.retain(|p| args.packages.contains(&p.name));
    }
    if repo.packages.is_empty() {
        anyhow::bail!("{} holds no package", args.source.display());
    }
    let images = capstan_catalog::bundle::images_of(&repo)?;
    let work = args.output.with_extension("images.tmp");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let written = (|| -> anyhow::Result<capstan_catalog::bundle::Manifest> {
        let mut saved = Vec::new();
        for (i, image) in images.iter().enumerate() {
            let file = work.join(format!("{i}.tar"));
            docker_save(image, &file)?;
            saved.push((image.clone(), file));
        }
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("cannot write {}", args.output.display()))?,
        );
        let m = capstan_catalog::bundle::write(&mut out, &repo, &saved)?;
        std::io::Write::flush(&mut out)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        Ok(m)
    })();
    let _ = std::fs::remove_dir_all(&work);
    let m = written?;
    let packages: Vec<String> = m
        .packages
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    let images: Vec<String> = m
        .images
        .iter()
        .map(|i| format!("{} ({} bytes)", i.name, i.size))
        .collect();
    Ok(format!(
        "Wrote {}: package(s) {}; image(s) {}",
        args.output.display(),
        packages.join(", "),
        if images.is_empty() {
            "none".to_owned()
        } else {
            images.join(", ")
        }
    ))
}

fn import(args: &ImportArgs) -> anyhow::Result<String> {
    let bundle = capstan_catalog::bundle::Bundle::open(&args.file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let http = capstan_catalog::bundle::http_client();
        let token = match (&args.token, &args.username, &args.password) {
            (Some(t), _, _) => Some(t.clone()),
            (None, Some(u), Some(p)) => {
                Some(capstan_catalog::bundle::login(&http, &args.router, u, p).await?)
            }
            (None, Some(_), None) => anyhow::bail!("--username needs --password"),
            (None, None, _) => None,
        };
        let done =
            capstan_catalog::bundle::import(&http, &args.router, token.as_deref(), &bundle).await?;
        let packages: Vec<String> = bundle
            .repository
            .packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        Ok(format!(
            "Imported package(s) {} into the local repository and image(s) {} into the image store",
            packages.join(", "),
            if done.images.is_empty() {
                "none".to_owned()
            } else {
                done.images.join(", ")
            }
        ))
    })
}

fn build(args: &BuildArgs) -> ExitCode {
    let repo = match capstan_catalog::source::build_dir(&args.dir) {
        Ok(repo) => repo,
        Err(e) => {
            fail(&format!("error: {}", Chain(&e)));
            return ExitCode::FAILURE;
        }
    };
    let json = capstan_catalog::source::to_json(&repo);
    let Some(path) = &args.output else {
        say(&json);
        return ExitCode::SUCCESS;
    };
    if let Err(e) = std::fs::write(path, format!("{json}\n")) {
        fail(&format!("error: cannot write {}: {e}", path.display()));
        return ExitCode::FAILURE;
    }
    let names: Vec<String> = repo
        .packages
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    say(&format!(
        "Wrote {} package version(s) to {}: {}",
        repo.packages.len(),
        path.display(),
        names.join(", ")
    ));
    ExitCode::SUCCESS
}
