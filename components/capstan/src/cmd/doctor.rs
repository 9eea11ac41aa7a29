//! `capstan doctor`: the pre-flight checks (`capstan_install::doctor`); this is flags and
//! output.

use std::path::PathBuf;
use std::process::ExitCode;

use capstan_install::doctor::gather::NodeContext;
use capstan_install::doctor::{self, Plan};
use capstan_install::{Layout, Role};

use super::{fail, say};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The role to check for, agent or master (default: the role this node joined as, or
    /// that its config's cluster section gives it; else agent).
    #[arg(long)]
    role: Option<Role>,
    /// Print `{"ok": bool, "checks": [{id, status, message, fix}]}` instead of a table.
    #[arg(long)]
    json: bool,
    /// Masters to compare this node's clock with, comma-separated (host or host:port, port 80
    /// by default; default: the other masters in the config).
    #[arg(long, value_delimiter = ',')]
    masters: Option<Vec<String>>,
    /// The node's config file, read for the defaults above.
    #[arg(
        long,
        env = "CAPSTAN_CONFIG",
        default_value = "/etc/capstan/config.yaml"
    )]
    config: PathBuf,
}

/// Runs every check; exits 1 if one failed, 0 otherwise (warnings included).
pub fn run(args: DoctorArgs) -> ExitCode {
    let layout = Layout {
        config: args.config,
        ..Layout::default()
    };
    let node = NodeContext::load(&layout);
    let role = args.role.or(node.role).unwrap_or(Role::Agent);
    let masters = args
        .masters
        .unwrap_or_else(|| node.masters.iter().map(ToString::to_string).collect());
    let plan = Plan {
        role,
        masters,
        node,
    };
    let Some(runtime) = super::cli_runtime() else {
        return ExitCode::FAILURE;
    };
    let facts = runtime.block_on(doctor::gather(&plan));
    let report = doctor::evaluate(role, &facts);
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => say(&json),
            Err(e) => {
                fail(&format!("error: {e}"));
                return ExitCode::FAILURE;
            }
        }
    } else {
        say(doctor::render_table(role, &report).trim_end());
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
