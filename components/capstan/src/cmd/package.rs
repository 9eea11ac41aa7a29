//! `capstan package build DIR [-o FILE]`: a Universe-style source tree into a repository file
//! (`capstan_catalog::source` builds and checks it); this is flags and output.

use std::path::PathBuf;
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
    }
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
