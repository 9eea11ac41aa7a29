//! Log set-up: `tracing` events to stderr (human-readable), or to journald under systemd.
//!
//! Journald mode installs a `log` logger and deliberately no tracing subscriber: with the
//! `tracing/log` feature, events then arrive as `log` records carrying their target and level.

use std::ffi::OsStr;
use std::io::IsTerminal;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigProblem, Validate};

/// The `log:` section of a node's config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Filter directives, `info` or `capstan_master=debug,info`. `RUST_LOG` wins when set;
    /// the default is `info`.
    pub level: Option<String>,
    /// Where logs go.
    pub format: LogFormat,
}

/// Where logs go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Journald when systemd runs us (`JOURNAL_STREAM` or `INVOCATION_ID` set) and its socket
    /// is there, else text.
    #[default]
    Auto,
    /// Human-readable lines on stderr.
    Text,
    /// Native journald records.
    Journald,
}

/// What [`init_logging`] set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Journald,
}

#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error("invalid log filter {filter:?}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot connect to journald")]
    Journald(#[source] std::io::Error),
    #[error("a logger is already installed in this process")]
    AlreadyInstalled,
}

impl Validate for LogConfig {
    fn validate(&self) -> Vec<ConfigProblem> {
        match &self.level {
            Some(level) => match parse_env_filter(level) {
                Ok(_) => Vec::new(),
                Err(e) => vec![ConfigProblem::new(
                    "level",
                    format!(
                        "not a log filter ({e}); use e.g. `info` or `capstan_master=debug,info`"
                    ),
                )],
            },
            None => Vec::new(),
        }
    }
}

/// `info`, with openraft's per-RPC chatter (every vote, every failed replication attempt)
/// kept to warnings: coord narrates what matters itself.
const DEFAULT_FILTER: &str = "info,openraft=warn";

/// Installs the process-wide logger. Call once, early, from the binary.
pub fn init_logging(config: &LogConfig) -> Result<LogTarget, LogInitError> {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let filter = effective_filter(rust_log.as_deref(), config.level.as_deref());
    let systemd = under_systemd(
        std::env::var_os("JOURNAL_STREAM").as_deref(),
        std::env::var_os("INVOCATION_ID").as_deref(),
    );
    let target = match choose_target(config.format, systemd) {
        LogTarget::Journald => match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => return install_journald(journal, &filter),
            // Auto-detected journald that is not there: keep the logs on stderr.
            Err(_) if config.format == LogFormat::Auto => LogTarget::Stderr,
            Err(e) => return Err(LogInitError::Journald(e)),
        },
        LogTarget::Stderr => LogTarget::Stderr,
    };
    match target {
        LogTarget::Stderr => {
            let env_filter = parse_env_filter(&filter).map_err(|source| LogInitError::Filter {
                filter: filter.clone(),
                source,
            })?;
            tracing_subscriber::fmt()
                .with_env_filter(env_filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .try_init()
                .map_err(|_| LogInitError::AlreadyInstalled)?;
            Ok(LogTarget::Stderr)
        }
        LogTarget::Journald => {
            let journal =
                systemd_journal_logger::JournalLog::new().map_err(LogInitError::Journald)?;
            install_journald(journal, &filter)
        }
    }
}

fn install_journald(
    journal: systemd_journal_logger::JournalLog,
    filter: &str,
) -> Result<LogTarget, LogInitError> {
    let directives = Directives::parse(filter);
    let max_level = directives.max_level();
    let logger: &'static FilteredJournal = Box::leak(Box::new(FilteredJournal {
        journal,
        directives,
    }));
    log::set_logger(logger).map_err(|_| LogInitError::AlreadyInstalled)?;
    log::set_max_level(max_level);
    Ok(LogTarget::Journald)
}

fn parse_env_filter(
    filter: &str,
) -> Result<tracing_subscriber::EnvFilter, tracing_subscriber::filter::ParseError> {
    tracing_subscriber::EnvFilter::builder().parse(filter)
}

/// `RUST_LOG` beats the config's `log.level`, which beats `info`.
fn effective_filter(rust_log: Option<&str>, level: Option<&str>) -> String {
    rust_log
        .or(level.filter(|l| !l.trim().is_empty()))
        .unwrap_or(DEFAULT_FILTER)
        .to_owned()
}

fn under_systemd(journal_stream: Option<&OsStr>, invocation_id: Option<&OsStr>) -> bool {
    journal_stream.is_some_and(|s| !s.is_empty()) || invocation_id.is_some_and(|s| !s.is_empty())
}

fn choose_target(format: LogFormat, under_systemd: bool) -> LogTarget {
    match format {
        LogFormat::Text => LogTarget::Stderr,
        LogFormat::Journald => LogTarget::Journald,
        LogFormat::Auto if under_systemd => LogTarget::Journald,
        LogFormat::Auto => LogTarget::Stderr,
    }
}

/// The `target=level` / `level` subset of the filter syntax, for the `log` (journald) path.
/// As with `EnvFilter`, a directive's target matches every target it is a string prefix of
/// (`capstan` covers `capstan_master::http`), the longest match wins, and directives this
/// subset does not understand (span filters) are ignored.
#[derive(Debug, Clone, PartialEq)]
struct Directives {
    default: log::LevelFilter,
    targets: Vec<(String, log::LevelFilter)>,
}

impl Directives {
    fn parse(filter: &str) -> Directives {
        let mut out = Directives {
            default: log::LevelFilter::Info,
            targets: Vec::new(),
        };
        let mut saw_default = false;
        for part in filter.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((target, level)) => {
                    if let Some(level) = parse_level(level) {
                        out.targets.push((target.trim().to_owned(), level));
                    }
                }
                None => match parse_level(part) {
                    Some(level) => {
                        out.default = level;
                        saw_default = true;
                    }
                    // A bare target means "everything from it".
                    None => out.targets.push((part.to_owned(), log::LevelFilter::Trace)),
                },
            }
        }
        if !saw_default && !out.targets.is_empty() {
            // Like EnvFilter: with only target directives, everything else is off.
            out.default = log::LevelFilter::Error;
        }
        out
    }

    fn level_for(&self, target: &str) -> log::LevelFilter {
        self.targets
            .iter()
            .filter(|(t, _)| target.starts_with(t.as_str()))
            .max_by_key(|(t, _)| t.len())
            .map(|(_, level)| *level)
            .unwrap_or(self.default)
    }

    fn max_level(&self) -> log::LevelFilter {
        self.targets
            .iter()
            .map(|(_, l)| *l)
            .chain([self.default])
            .max()
            .unwrap_or(log::LevelFilter::Info)
    }
}

fn parse_level(s: &str) -> Option<log::LevelFilter> {
    match s.trim().to_ascii_lowercase().as_str() {
        "off" => Some(log::LevelFilter::Off),
        "error" => Some(log::LevelFilter::Error),
        "warn" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    }
}

struct FilteredJournal {
    journal: systemd_journal_logger::JournalLog,
    directives: Directives,
}

impl log::Log for FilteredJournal {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.directives.level_for(metadata.target())
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.journal.log(record);
        }
    }

    fn flush(&self) {
        self.journal.flush();
    }
}

#[cfg(test)]
mod tests {
    use log::LevelFilter::*;

    use super::*;

    #[test]
    fn rust_log_beats_config_level_which_beats_info() {
        assert_eq!(effective_filter(Some("debug"), Some("warn")), "debug");
        assert_eq!(effective_filter(None, Some("warn")), "warn");
        assert_eq!(effective_filter(None, Some("  ")), DEFAULT_FILTER);
        assert_eq!(effective_filter(None, None), DEFAULT_FILTER);
    }

    #[test]
    fn auto_format_uses_journald_only_under_systemd() {
        let some = Some(OsStr::new("8:1234"));
        assert!(under_systemd(some, None));
        assert!(under_systemd(None, some));
        assert!(!under_systemd(None, None));
        assert!(!under_systemd(Some(OsStr::new("")), None));
        assert_eq!(choose_target(LogFormat::Auto, true), LogTarget::Journald);
        assert_eq!(choose_target(LogFormat::Auto, false), LogTarget::Stderr);
        assert_eq!(choose_target(LogFormat::Text, true), LogTarget::Stderr);
        assert_eq!(
            choose_target(LogFormat::Journald, false),
            LogTarget::Journald
        );
    }

    #[test]
    fn journald_directives_pick_the_longest_matching_target() {
        let d = Directives::parse("capstan_master=debug,capstan_master::raft=trace,warn");
        let cases = [
            ("capstan_master", Debug),
            ("capstan_master::server", Debug),
            ("capstan_master::raft", Trace),
            ("capstan_master::raft::log", Trace),
            ("capstan_masterx", Debug),
            ("capstan_agent", Warn),
            ("hyper::proto", Warn),
        ];
        for (target, want) in cases {
            assert_eq!(d.level_for(target), want, "{target}");
        }
        assert_eq!(d.max_level(), Trace);
    }

    #[test]
    fn journald_directives_default_to_info_and_errors_only_beside_targets() {
        assert_eq!(Directives::parse("").level_for("x"), Info);
        assert_eq!(Directives::parse("debug").level_for("x"), Debug);
        assert_eq!(Directives::parse("a=debug").level_for("x"), Error);
        assert_eq!(Directives::parse("a=debug").level_for("a"), Debug);
    }

    #[test]
    fn log_level_is_validated() {
        let ok = LogConfig {
            level: Some("capstan_master=debug,info".into()),
            ..LogConfig::default()
        };
        assert!(ok.validate().is_empty());
        let bad = LogConfig {
            level: Some("capstan_master=loud".into()),
            ..LogConfig::default()
        };
        let problems = bad.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "level");
    }
}
