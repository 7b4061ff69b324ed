//! `dcid`, the DCI agent: one per blade.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dci::agent::Agent;
use dci::config::{Config, LogFormat, Overrides};
use dci::membership::Role;

/// The DCI agent. Flags override the config file.
#[derive(Debug, Parser)]
#[command(
    name = "dcid",
    version,
    about = "The DCI agent: membership, messaging, backup and failover for one blade"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// TOML config file; every flag below may also be set there.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This blade's name [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Where identity, database and control socket live [default: ./dci-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Listen address, a multiaddr or HOST:PORT; repeatable [default: /ip4/0.0.0.0/tcp/7946].
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// Listen address for block transfers, which run on connections of their own (so that bulk
    /// data never delays heartbeats); repeatable [default: each --listen IP, a free port].
    #[arg(long, value_name = "ADDR")]
    data_listen: Vec<String>,
    /// Seed peer, a multiaddr or HOST:PORT; repeatable.
    #[arg(long, value_name = "ADDR")]
    join: Vec<String>,
    /// Whether this node holds a blade or waits as a spare [default: active].
    #[arg(long, value_enum)]
    role: Option<Role>,
    /// Failure-domain zone [default: default].
    #[arg(long)]
    zone: Option<String>,
    /// The cluster's private-network key file; only holders of the same key can connect.
    #[arg(long, value_name = "FILE")]
    cluster_key: Option<PathBuf>,
    /// Do not discover peers on the local subnet.
    #[arg(long)]
    no_mdns: bool,
    /// Log format [default: text]. Filter with RUST_LOG.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// The blade's data set, backed up onto other nodes.
    #[arg(long, value_name = "DIR")]
    backup_root: Option<PathBuf>,
    /// How many other nodes hold this blade's backups [default: 2].
    #[arg(long, value_name = "N")]
    replication_factor: Option<usize>,
    /// A public key file (`dcish keygen`'s FILE.pub) whose signed packages this agent installs;
    /// repeatable.
    #[arg(long, value_name = "PUBFILE")]
    trusted_key: Vec<PathBuf>,
    /// Serve the web console on this address, e.g. 127.0.0.1:8080 (users in [console] of the
    /// config file) [default: off].
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    #[command(subcommand)]
    command: Option<Tool>,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// Write a new random cluster key to FILE (mode 0600); refuses to overwrite.
    Keygen {
        /// Where to write the key.
        file: PathBuf,
    },
}

/// Exit code for bad input (flags, config, key, data dir, ports), as clap uses for flags.
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    if let Some(Tool::Keygen { file }) = &cli.command {
        return keygen(file);
    }
    let overrides = Overrides {
        config: cli.config,
        name: cli.name,
        data_dir: cli.data_dir,
        listen: cli.listen,
        data_listen: cli.data_listen,
        join: cli.join,
        role: cli.role,
        zone: cli.zone,
        cluster_key: cli.cluster_key,
        no_mdns: cli.no_mdns,
        log_format: cli.log_format,
        backup_root: cli.backup_root,
        replication_factor: cli.replication_factor,
        trusted_keys: cli.trusted_key,
        http: cli.http,
    };
    let config = match Config::load(&overrides) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_BAD_INPUT, &e),
    };
    init_logging(config.log_format);
    // One thread runs the event loop, the connections and the peerlets; disk work goes to
    // tokio's blocking pool. With a worker per core beside the event loop, every packet crossed
    // threads twice (connection task, then the loop), and a hundred idle agents on two cores
    // spent half their time waking each other's threads: at 50 members this runtime costs an
    // idle agent 0.9% of a core against 1.8%.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &e),
    };
    runtime.block_on(async {
        let agent = match Agent::start(config).await {
            Ok(a) => a,
            Err(e) => return fail(EXIT_BAD_INPUT, &e),
        };
        agent.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// glibc gives each thread that allocates its own arena; with the blocking threads that read and
/// write blocks, the fragments of many arenas doubled the agent's peak memory during a backup
/// (104 MB against 54 MB with two arenas, on a 2 GiB tree), and two arenas were also faster.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn fail(code: u8, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("dcid: {e}");
    ExitCode::from(code)
}

fn keygen(file: &std::path::Path) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| f.write_all(dci::net::generate_cluster_key().as_bytes()));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(
            EXIT_BAD_INPUT,
            &format!("cannot write {}: {e}", file.display()),
        ),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // libp2p's own start-up chatter would precede a one-line refusal; keep it at warn.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p_swarm=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files and container logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("cannot watch for signals ({e}); stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
    tracing::info!("stopping");
}
