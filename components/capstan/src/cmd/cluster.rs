//! `capstan cluster …`: creating a cluster, joining nodes to it, and its join tokens. The
//! logic is in `capstan_install`; this is flags and output.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use capstan_install::init::{InitOptions, InitOutcome};
use capstan_install::join::{JoinOptions, JoinOutcome};
use capstan_install::state::{ClusterState, now_ms};
use capstan_install::token::{PresentedToken, ShortToken, TokenRecord};
use capstan_install::{JoinToken, Layout, Membership, Role, activate};
use capstan_runtime::auth::SecurityMode;

use super::{fail, say};

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster on its first master: CA, administrator, join tokens; start the
    /// master's daemons.
    Init(InitArgs),
    /// Join this node to a cluster (install.sh runs this once the package is installed).
    Join(JoinArgs),
    /// Take this node out of the cluster: an agent is drained first (its tasks move to other
    /// agents), then the node's units are stopped and disabled. Data is kept until the
    /// package is purged.
    Leave(LeaveArgs),
    /// Join tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// What this node knows about its cluster: its role, the masters, the security mode and,
    /// on a master, coord's members and leader.
    Status {
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Upgrade every node to a package, one node at a time: masters first (keeping coord's
    /// quorum), then agents (their tasks keep running); checks health between nodes and stops
    /// at the first failure. Run on a master.
    Upgrade(UpgradeArgs),
    /// Take a dead master out of coord's membership, so that a new machine (at any address)
    /// can join in its place with the one line. Run on another master; the rest must hold a
    /// quorum.
    RemoveMaster {
        /// The dead master's address.
        address: IpAddr,
    },
}

#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    /// The capstan .deb to install on every node.
    #[arg(long)]
    package: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// This master's address, which the other nodes reach it at (default: the address of
    /// the default route).
    #[arg(long)]
    advertise: Option<IpAddr>,
    /// The cluster's name.
    #[arg(long, default_value = "capstan")]
    name: String,
    /// This node's host name (default: the machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// The .deb joining nodes download from this master.
    #[arg(long)]
    package: Option<PathBuf>,
    /// Use this master join token instead of making one: a short token
    /// (`capstan cluster token generate`) chosen before the cluster existed, so that every
    /// machine can be given its join line at once (Terraform, a VM's user-data).
    #[arg(long, env = "CAPSTAN_MASTER_TOKEN", hide_env_values = true)]
    master_token: Option<ShortToken>,
    /// Use this agent join token instead of making one (see --master-token).
    #[arg(long, env = "CAPSTAN_AGENT_TOKEN", hide_env_values = true)]
    agent_token: Option<ShortToken>,
    /// `strict`: every daemon speaks TLS with its node's certificate and every call proves
    /// who makes it; `permissive`: plain HTTP inside the cluster, the router still asks for
    /// a login. Every node that joins inherits it.
    #[arg(long, default_value = "permissive", value_parser = parse_security)]
    security: SecurityMode,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// A master of the cluster: host, host:port or https://host[:port].
    #[arg(long)]
    server: String,
    /// The join token (`capstan cluster token create`).
    #[arg(long, env = "CAPSTAN_JOIN_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long)]
    role: Role,
    /// This node's address (default: the one it reaches the master from).
    #[arg(long)]
    advertise: Option<IpAddr>,
    #[arg(long)]
    hostname: Option<String>,
    /// The cluster CA certificate, already fetched and checked against the token.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Write the config and keys, but start nothing.
    #[arg(long)]
    no_start: bool,
    /// A public agent (role `slave_public`): for edge load balancers and services reached from
    /// outside the cluster.
    #[arg(long)]
    public: bool,
}

#[derive(Debug, clap::Args)]
pub struct LeaveArgs {
    /// Stop the units without draining the agent first.
    #[arg(long)]
    no_drain: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token; prints it alone on stdout.
    Create {
        #[arg(long)]
        role: Role,
        /// How long it is valid (`30m`, `24h`, `7d`); default: until revoked.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Make a short token for a cluster that does not exist yet, offline (for
    /// `cluster init --agent-token/--master-token`); prints it alone on stdout.
    Generate,
    /// List the tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

fn parse_security(s: &str) -> Result<SecurityMode, String> {
    s.parse::<SecurityMode>().map_err(|e| e.to_string())
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (s, m, h, d)"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a usable duration"))
}

pub fn run(command: ClusterCommand) -> ExitCode {
    let Some(runtime) = super::cli_runtime() else {
        return ExitCode::FAILURE;
    };
    let layout = Layout::default();
    let outcome = runtime.block_on(async {
        match command {
            ClusterCommand::Init(args) => init(&layout, args).await,
            ClusterCommand::Join(args) => join(&layout, args).await,
            ClusterCommand::Leave(args) => leave(&layout, args).await,
            ClusterCommand::Token(cmd) => token(&layout, cmd).await,
            ClusterCommand::Upgrade(args) => upgrade(&layout, args).await,
            ClusterCommand::Status { json } => status(&layout, json).await,
            ClusterCommand::RemoveMaster { address } => remove_master(&layout, address).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fail(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn default_advertise() -> anyhow::Result<IpAddr> {
    // A UDP connect sends nothing; it only asks the kernel which source address the default
    // route would use (192.0.2.1 is a documentation address, never reached).
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    socket
        .connect("192.0.2.1:9")
        .await
        .context("this machine has no default route; pass --advertise")?;
    Ok(socket.local_addr()?.ip())
}

async fn init(layout: &Layout, args: InitArgs) -> anyhow::Result<()> {
    let advertise = match args.advertise {
        Some(ip) => ip,
        None => default_advertise().await?,
    };
    let hostname = args
        .hostname
        .unwrap_or_else(capstan_install::join::system_hostname);
    let opts = InitOptions {
        name: args.name,
        advertise,
        hostname: Some(hostname),
        package: args.package,
        master_token: args.master_token,
        agent_token: args.agent_token,
        security: args.security,
    };
    let prepared = capstan_install::init::prepare(layout, &opts)?;
    if !args.json {
        say(&format!(
            "Cluster {} prepared; starting the master's daemons",
            prepared.info.cluster_id
        ));
    }
    activate::start_role(Role::Master)?;
    let security = super::read_cluster_section(layout)?.security;
    let endpoints = vec![activate::coord_endpoint(advertise)];
    activate::wait_for_coord(&security, &endpoints).await?;
    let coord = capstan_install::state::coord_client(&security, endpoints.iter())?;
    let outcome = capstan_install::init::seed(layout, &ClusterState::new(coord), &prepared).await?;
    print_init(&outcome, args.json)
}

fn print_init(outcome: &InitOutcome, json: bool) -> anyhow::Result<()> {
    if json {
        say(&serde_json::to_string(outcome)?);
        return Ok(());
    }
    let host = outcome.url.trim_start_matches("https://");
    say(&format!(
        "\nCapstan cluster {id} is up.\n\n\
         Console and API:  {url}\n\
         Administrator:    {uid} / {password}   (shown only this once)\n\
         CA fingerprint:   {fp}\n\n\
         Add an agent (run on the agent machine):\n  \
         curl -fsSL http://{host}/install.sh | sudo sh -s -- --role agent --join {agent}\n\n\
         Add a public agent (edge load balancers, services reached from outside):\n  \
         curl -fsSL http://{host}/install.sh | sudo sh -s -- --role agent --public --join {agent}\n\n\
         Add a master:\n  \
         curl -fsSL http://{host}/install.sh | sudo sh -s -- --role master --join {master}\n\n\
         More tokens: capstan cluster token create --role agent|master",
        id = outcome.cluster_id,
        url = outcome.url,
        uid = outcome.admin.uid,
        password = outcome.admin.password,
        fp = outcome.ca_fingerprint,
        agent = outcome.tokens.agent,
        master = outcome.tokens.master,
    ));
    Ok(())
}

async fn join(layout: &Layout, args: JoinArgs) -> anyhow::Result<()> {
    if args.public && args.role != Role::Agent {
        anyhow::bail!("--public is for agents: a master is never a public agent");
    }
    let token: PresentedToken = args.token.parse().context("the join token is malformed")?;
    let server = capstan_install::https::Server::parse(&args.server).map_err(anyhow::Error::msg)?;
    let opts = JoinOptions {
        server,
        token,
        role: args.role,
        advertise: args.advertise,
        hostname: args.hostname,
        ca_file: args.ca,
        public: args.public,
    };
    let membership = match capstan_install::join::join(layout, &opts).await? {
        JoinOutcome::AlreadyJoined(m) => {
            say(&format!(
                "This node already belongs to cluster {} as a {}; nothing to do.",
                m.cluster_id, m.role
            ));
            return Ok(());
        }
        JoinOutcome::Joined(m) => m,
    };
    say(&format!(
        "Joined cluster {} ({}) as a {}",
        membership.cluster_id, membership.name, membership.role
    ));
    if args.no_start {
        return Ok(());
    }
    let node = super::read_cluster_section(layout)?;
    if membership.role == Role::Agent {
        let n = activate::load_images(&layout.images())?;
        say(&format!("Loaded {n} image archive(s) into Docker"));
    }
    activate::start_role(membership.role)?;
    match membership.role {
        Role::Agent => {
            let hostname = node.hostname.clone().unwrap_or(node.advertise.to_string());
            let master = *node
                .masters
                .first()
                .context("the node config names no master")?;
            activate::wait_for_agent(&node.security, activate::master_api(master), &hostname)
                .await?;
            say(&format!("Agent {hostname} is registered with the masters."));
        }
        Role::Master => {
            say("Adding this master's coord member to the cluster (it catches up first)");
            capstan_install::join::join_coord(layout, &opts, node.advertise).await?;
            let endpoints = [activate::coord_endpoint(node.advertise)];
            activate::wait_for_coord(&node.security, &endpoints).await?;
            say("This master's daemons are up and its coord member votes.");
        }
    }
    say("Check it with: systemctl status 'capstan-*'");
    Ok(())
}

async fn leave(layout: &Layout, args: LeaveArgs) -> anyhow::Result<()> {
    let Some(membership) = Membership::read(layout)? else {
        say("This node belongs to no cluster; nothing to do.");
        return Ok(());
    };
    let node = super::read_cluster_section(layout)?;
    if membership.role == Role::Agent && !args.no_drain {
        let hostname = node.hostname.clone().unwrap_or(node.advertise.to_string());
        let mut drained = false;
        for master in &node.masters {
            let api = activate::master_api(*master);
            match activate::drain_agent(&node.security, api, &hostname).await {
                Ok(()) => {
                    drained = true;
                    break;
                }
                Err(e) => fail(&format!("warning: draining through {master}: {e}")),
            }
        }
        anyhow::ensure!(
            drained,
            "no master drained this agent; --no-drain stops it anyway"
        );
        say(&format!("Agent {hostname} is drained."));
    }
    if membership.role == Role::Master {
        say(
            "Note: this master's coord member stays in the membership; remove it with `capstan cluster remove-master <this address>` on another master.",
        );
    }
    activate::stop_role(membership.role)?;
    say(&format!("Stopped this {}'s units.", membership.role));
    Ok(())
}

async fn status(layout: &Layout, json: bool) -> anyhow::Result<()> {
    let Some(membership) = Membership::read(layout)? else {
        bail!("this node belongs to no cluster: run `capstan cluster init` or join one");
    };
    let node = super::read_cluster_section(layout)?;
    // This master's own coord first, then the others'.
    let own = activate::coord_endpoint(node.advertise);
    let others = node.masters.iter().map(|m| activate::coord_endpoint(*m));
    let endpoints: Vec<String> = std::iter::once(own.clone())
        .chain(others.filter(|e| *e != own))
        .collect();
    let report = capstan_install::status::gather(&membership, &node, &endpoints).await;
    if json {
        say(&serde_json::to_string(&report)?);
    } else {
        say(capstan_install::status::render(&report).trim_end());
    }
    Ok(())
}

async fn remove_master(layout: &Layout, address: IpAddr) -> anyhow::Result<()> {
    let node = super::read_cluster_section(layout)?;
    if address == node.advertise {
        bail!("{address} is this master; run `capstan cluster remove-master` on another master");
    }
    let node_coord = local_coord(layout, "masters")?;
    // A membership change: coord wants the peer token, derived from the CA key as every
    // master's coord derives it (only masters hold the key).
    let key = std::fs::read(layout.ca_key())
        .with_context(|| format!("cannot read {} (run as root)", layout.ca_key().display()))?;
    let token = capstan_coord_client::PeerToken::derive(&key)
        .map_err(|_| anyhow::anyhow!("{} is not a key", layout.ca_key().display()))?;
    let state = ClusterState::new(node_coord.with_peer_token(token));
    let id = state
        .remove_master(address)
        .await
        .with_context(|| format!("removing the master at {address} from coord"))?;
    say(&format!(
        "Removed the master at {address} (coord member {id}). A new master joins in its place \
         with the one line and a master token."
    ));
    Ok(())
}

async fn upgrade(layout: &Layout, args: UpgradeArgs) -> anyhow::Result<()> {
    use capstan_install::rolling::{self, Report};
    let package = rolling::read_package(&args.package)?;
    let node = super::read_cluster_section(layout)?;
    if Membership::read(layout)?.is_some_and(|m| m.role != Role::Master) {
        bail!("run `capstan cluster upgrade` on a master: it signs each upload with the CA key");
    }
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let endpoints: Vec<String> = node
        .masters
        .iter()
        .map(|m| activate::coord_endpoint(*m))
        .collect();
    // Every member, not only the masters this node's config names (those that joined before
    // it): the run must reach coord while any one master restarts.
    let coord = capstan_install::state::coord_client(&node.security, endpoints.iter())?;
    let mut all: Vec<String> = coord
        .members()
        .await
        .context("coord's membership")?
        .members
        .into_iter()
        .map(|m| m.addr)
        .collect();
    all.extend(endpoints);
    all.sort();
    all.dedup();
    let cluster = rolling::Cluster {
        coord: capstan_install::state::coord_client(&node.security, all.iter())?,
        security: node.security.clone(),
        ca_cert_pem: read(layout.ca_cert())?,
        ca_key_pem: read(layout.ca_key())?,
    };
    let nodes = rolling::discover(&cluster).await?;
    say(&format!(
        "Upgrading {} node(s) to {} ({}), one at a time:",
        nodes.len(),
        package.version,
        package.path.display()
    ));
    for (i, n) in nodes.iter().enumerate() {
        say(&format!("  {}. {} {} ({})", i + 1, n.role, n.name, n.addr));
    }
    if args.dry_run {
        return Ok(());
    }
    match rolling::run(&cluster, &package, &nodes, &mut |line| say(line)).await {
        Report::Done { upgraded, current } => {
            say(&format!(
                "Done: {upgraded} node(s) upgraded, {current} already ran {}.",
                package.version
            ));
            Ok(())
        }
        Report::Stopped {
            node,
            reason,
            upgraded,
            untouched,
        } => bail!(
            "stopped at {} {} ({}): {reason}\n{upgraded} node(s) were upgraded before it; \
             it and the {untouched} after it keep their package. Fix it and run the same \
             command again: nodes already upgraded are skipped.",
            node.role,
            node.name,
            node.addr,
            untouched = untouched.saturating_sub(1)
        ),
    }
}

/// The cluster state in the local node's coord (masters only; `what` is managed there).
fn local_state(layout: &Layout, what: &str) -> anyhow::Result<ClusterState> {
    Ok(ClusterState::new(local_coord(layout, what)?))
}

/// A client of the masters' coord, as this master reaches it.
fn local_coord(layout: &Layout, what: &str) -> anyhow::Result<capstan_coord_client::Client> {
    let node = super::read_cluster_section(layout)?;
    if Membership::read(layout)?.is_some_and(|m| m.role != Role::Master) {
        bail!("{what} are managed on a master");
    }
    let endpoints: Vec<String> = node
        .masters
        .iter()
        .map(|m| activate::coord_endpoint(*m))
        .collect();
    Ok(capstan_install::state::coord_client(
        &node.security,
        endpoints.iter(),
    )?)
}

async fn token(layout: &Layout, cmd: TokenCommand) -> anyhow::Result<()> {
    // Only a master holds the cluster's tokens; a short token is made anywhere, offline.
    let state = || local_state(layout, "tokens");
    match cmd {
        TokenCommand::Generate => say(&ShortToken::generate().to_string()),
        TokenCommand::Create {
            role,
            ttl,
            description,
        } => {
            let state = state()?;
            let info = state
                .info()
                .await?
                .context("the cluster is not initialized (capstan cluster init)")?;
            let token = JoinToken::generate(&info.ca_fingerprint);
            let ttl_ms = ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let mut record = TokenRecord::new(&token, role, now_ms(), ttl_ms);
            record.description = description;
            state.put_token(&record).await?;
            say(&token.to_string());
        }
        TokenCommand::List { json } => {
            let tokens = state()?.tokens().await?;
            if json {
                let view: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id, "role": t.role, "created_ms": t.created_ms,
                            "expires_ms": t.expires_ms, "revoked": t.revoked,
                            "description": t.description,
                        })
                    })
                    .collect();
                say(&serde_json::to_string_pretty(&view)?);
            } else {
                say(&format!(
                    "{:<10} {:<7} {:<9} DESCRIPTION",
                    "ID", "ROLE", "STATE"
                ));
                let now = now_ms();
                for t in tokens {
                    let status = if t.revoked {
                        "revoked"
                    } else if t.expires_ms.is_some_and(|e| now >= e) {
                        "expired"
                    } else {
                        "valid"
                    };
                    say(&format!(
                        "{:<10} {:<7} {:<9} {}",
                        t.id, t.role, status, t.description
                    ));
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let record = state()?.revoke(&id).await?;
            say(&format!(
                "Revoked token {} ({} nodes)",
                record.id, record.role
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "5", "h", "0s", "5w", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
