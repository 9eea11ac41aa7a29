//! `capstan version`.

use std::process::ExitCode;

pub fn run() -> ExitCode {
    super::say(&format!("capstan {}", crate::LONG_VERSION));
    ExitCode::SUCCESS
}
