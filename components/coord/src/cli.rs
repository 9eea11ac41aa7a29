//! The operator CLI: `capstan coord get|put|del|list|watch|members|status|member|snapshot`.
//! The binary parses [`CliArgs`] and calls [`run_cli`] with stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use capstan_coord_client::{Client, ListRequest, WatchRequest};

/// `capstan coord COMMAND` (the daemon itself is `capstan daemon coord`); it runs
/// the operator command against the cluster at `--endpoints`.
#[derive(Debug, Clone, clap::Args)]
pub struct CliArgs {
    /// Comma-separated members to talk to (any of them may be down). Default: on a node,
    /// the masters of its config; elsewhere 127.0.0.1:8181.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        env = "CAPSTAN_COORD_ENDPOINTS"
    )]
    pub endpoints: Vec<String>,
    #[command(subcommand)]
    pub command: Option<CliCommand>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CliCommand {
    /// Print the value of KEY alone.
    Get {
        key: String,
        /// Read the contacted member's local state (may be stale).
        #[arg(long)]
        serializable: bool,
    },
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Delete KEY.
    Del { key: String },
    /// List keys under PREFIX, one `key value` line each.
    List {
        prefix: String,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
    },
    /// Print every change under PREFIX as it happens (one JSON event per line).
    Watch {
        prefix: String,
        /// First revision to print (default: changes from now on).
        #[arg(long)]
        from: Option<u64>,
    },
    /// List the members.
    Members,
    /// Leader, term, commit index and per-member health.
    Status,
    /// Add or remove a member.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Save or restore a snapshot.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MemberCommand {
    /// Add member ID at ADDR (it catches up as a learner, then votes).
    Add {
        id: u64,
        addr: String,
        #[command(flatten)]
        secret: PeerSecretArg,
    },
    /// Remove member ID.
    Remove {
        id: u64,
        /// Ignored; accepted for symmetry with `add`.
        addr: Option<String>,
        #[command(flatten)]
        secret: PeerSecretArg,
    },
}

/// Membership changes need the cluster's peer secret (coord's `peer_secret_file`).
#[derive(Debug, Clone, clap::Args)]
pub struct PeerSecretArg {
    /// The cluster's peer secret (0600); on an installed master, the cluster CA's key.
    #[arg(
        long,
        default_value = "/var/lib/capstan/pki/ca.key",
        env = "CAPSTAN_COORD_PEER_SECRET_FILE"
    )]
    pub peer_secret_file: PathBuf,
}

impl PeerSecretArg {
    fn token(&self) -> anyhow::Result<capstan_coord_client::PeerToken> {
        capstan_coord_client::PeerToken::from_file(&self.peer_secret_file).with_context(|| {
            "membership changes need the cluster's peer secret (--peer-secret-file)".to_string()
        })
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent backup of all keys and leases to FILE.
    Save { file: PathBuf },
    /// Write the backup FILE as the initial state of the fresh data directory DIR (offline).
    Restore {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Runs one operator command against `endpoints`, writing its output to `out`.
/// Runs `command` against `endpoints` (`tls`: the node's certificate, for a strict cluster,
/// whose members answer only node certificates).
pub async fn run_cli(
    endpoints: &[String],
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    command: CliCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if let CliCommand::Snapshot(SnapshotCommand::Restore { file, data_dir }) = &command {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let backup = crate::snapshot::restore(&bytes, data_dir)?;
        writeln!(
            out,
            "Restored {} keys at revision {} into {}",
            backup.state.len(),
            backup.revision,
            data_dir.display()
        )?;
        return Ok(());
    }
    let client = Client::with_options(
        endpoints,
        capstan_coord_client::ClientOptions {
            tls,
            ..capstan_coord_client::ClientOptions::default()
        },
    )?;
    match command {
        CliCommand::Get { key, serializable } => {
            let resp = client
                .get_with(capstan_coord_client::GetRequest {
                    key: key.clone(),
                    serializable,
                })
                .await?;
            let kv = resp.kv.with_context(|| format!("key {key} not found"))?;
            out.write_all(&kv.value)?;
            writeln!(out)?;
        }
        CliCommand::Put { key, value } => {
            let r = client.put(&key, value.into_bytes()).await?;
            writeln!(out, "OK revision {}", r.revision)?;
        }
        CliCommand::Del { key } => {
            let r = client.delete(&key).await?;
            match r.prev {
                Some(_) => writeln!(out, "Deleted {key} at revision {}", r.revision)?,
                None => writeln!(out, "{key} did not exist")?,
            }
        }
        CliCommand::List { prefix, keys_only } => {
            let mut after = None;
            loop {
                let page = client
                    .list(ListRequest {
                        prefix: prefix.clone(),
                        after: after.clone(),
                        keys_only,
                        ..Default::default()
                    })
                    .await?;
                for kv in &page.kvs {
                    if keys_only {
                        writeln!(out, "{}", kv.key)?;
                    } else {
                        writeln!(out, "{} {}", kv.key, String::from_utf8_lossy(&kv.value))?;
                    }
                }
                after = page.kvs.last().map(|kv| kv.key.clone());
                if !page.more || after.is_none() {
                    break;
                }
            }
        }
        CliCommand::Watch { prefix, from } => {
            let mut w = client.watch(WatchRequest {
                key: prefix,
                prefix: true,
                start_revision: from,
            });
            loop {
                let batch = match w.next().await {
                    Ok(b) => b,
                    Err(capstan_coord_client::ClientError::Unavailable(_)) => continue,
                    Err(e) => return Err(e.into()),
                };
                for e in batch.events {
                    writeln!(out, "{}", serde_json::to_string(&e)?)?;
                }
                out.flush()?;
            }
        }
        CliCommand::Members => {
            let m = client.members().await?;
            for mem in m.members {
                let role = if m.leader == Some(mem.id) {
                    "leader"
                } else if mem.voter {
                    "voter"
                } else {
                    "learner"
                };
                writeln!(out, "{} {} {role}", mem.id, mem.addr)?;
            }
        }
        CliCommand::Status => {
            let s = client.status().await?;
            let leader = s.leader.map_or("none".to_string(), |l| l.to_string());
            writeln!(out, "leader: {leader}")?;
            writeln!(out, "term: {}", s.term)?;
            writeln!(out, "commit_index: {}", s.commit_index)?;
            writeln!(out, "applied_index: {}", s.applied_index)?;
            writeln!(out, "revision: {}", s.revision)?;
            for m in s.members {
                writeln!(
                    out,
                    "member {} {} {} {}",
                    m.id,
                    m.addr,
                    if m.voter { "voter" } else { "learner" },
                    if m.healthy { "healthy" } else { "unhealthy" }
                )?;
            }
        }
        CliCommand::Member(MemberCommand::Add { id, addr, secret }) => {
            let client = client.with_peer_token(secret.token()?);
            client.member_add(id, &addr).await?;
            writeln!(out, "Added member {id} at {addr}")?;
        }
        CliCommand::Member(MemberCommand::Remove { id, secret, .. }) => {
            let client = client.with_peer_token(secret.token()?);
            client.member_remove(id).await?;
            writeln!(out, "Removed member {id}")?;
        }
        CliCommand::Snapshot(SnapshotCommand::Save { file }) => {
            let bytes = client.snapshot().await?;
            std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
            writeln!(out, "Saved snapshot to {}", file.display())?;
        }
        CliCommand::Snapshot(SnapshotCommand::Restore { .. }) => unreachable!("handled above"),
    }
    Ok(())
}
