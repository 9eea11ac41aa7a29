//! Daemon scaffolding shared by every Capstan daemon: loading and validating the YAML config
//! (one error names the file, the field path and the problem; unknown keys are errors), setting
//! up logs (human-readable on stderr, or journald when systemd runs us), turning SIGTERM/SIGINT
//! into a [`CancellationToken`](tokio_util::sync::CancellationToken), and telling systemd we are
//! ready; plus the one HTTP accept loop with the request limits every API needs ([`http`]) and
//! the permission checks of state directories and secret files ([`secrets`]). Key decision:
//! no daemon logic lives here and nothing here owns a task beyond the signal watcher and the
//! connections of a server a daemon asked for, so a daemon's `Server::start` stays testable
//! without any of it.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod notify;
pub mod retry;
pub mod secrets;
pub mod security;
pub mod shutdown;
pub mod tls;

pub use capstan_types::Chain;
pub use cluster::ClusterConfig;
pub use config::{
    ConfigProblem, EX_CONFIG, LoadConfigError, Validate, duration_millis, duration_secs,
    load_config, parse_config,
};
pub use http::{HttpLimits, TlsServing, serve, serve_tls};
pub use lifecycle::{Exit, Lifecycle, OwnRuntime, SystemdLifecycle};
pub use logging::{LogConfig, LogFormat, LogInitError, LogTarget, init_logging};
pub use notify::{notify_ready, notify_status, notify_stopping};
pub use retry::retry_until_cancelled;
pub use secrets::{
    PermissionError, check_private_dir, check_secret_file, create_private_dir, prepare_state_dir,
};
pub use security::{SecurityConfig, serve_secured};
pub use shutdown::shutdown_on_signals;
pub use tls::{NodeTls, PeerCert, TlsFiles, Transport};
