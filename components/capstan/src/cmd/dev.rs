//! `capstan dev`: a whole cluster on this machine (see `capstan_dev`).

use std::process::ExitCode;

use capstan_runtime::{LogConfig, init_logging};

pub fn run(cmd: capstan_dev::DevCommand) -> ExitCode {
    // The supervisor narrates (daemon ready, restarted, killed); the other commands stay quiet.
    let level = if matches!(cmd, capstan_dev::DevCommand::Up(_)) {
        "info"
    } else {
        "warn"
    };
    let log = LogConfig {
        level: Some(level.to_owned()),
        ..LogConfig::default()
    };
    if let Err(e) = init_logging(&log) {
        super::fail(&format!("error: {e}"));
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            super::fail(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    match runtime.block_on(capstan_dev::run(cmd, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::fail(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}
