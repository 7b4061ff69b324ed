//! Agent configuration: an optional TOML file, overridden flag by flag by the command line.
//!
//! Everything is validated here, before the agent touches the disk or the network, so that a bad
//! setting ends in one line on stderr naming the field, and nothing is written to the data dir.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use libp2p::{multiaddr::Protocol, pnet::PreSharedKey, Multiaddr};
use serde::Deserialize;

use crate::degradation::DegradationConfig;
use crate::failover::degraded::OnDegraded;
use crate::membership::swim::SwimConfig;
use crate::membership::Role;
use crate::notice::PageConfig;
use crate::replication::settings::{BackupConfig, BackupFile};
use crate::resources::Metric;

/// The port the agent listens on when no `--listen` is given.
pub const DEFAULT_PORT: u16 = 7946;

/// A configuration that is unusable, with the field and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or a field has the wrong type or an unknown name.
    #[error("invalid config file {path}: {reason}")]
    Parse {
        /// The file named by `--config`.
        path: PathBuf,
        /// Where and why, on one line.
        reason: String,
    },
    /// One setting has a value the agent cannot use.
    #[error("invalid {field} '{value}': {reason}")]
    Invalid {
        /// The setting, as spelled on the command line or in the file.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The cluster key file is missing, unreadable or malformed.
    #[error("cluster key {path}: {reason}")]
    ClusterKey {
        /// The file named by `--cluster-key`.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `[membership]` table of the config file; every timing of the membership protocol.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipFile {
    /// Time between probes.
    pub probe_interval_ms: Option<u64>,
    /// How long a direct probe waits for its ack.
    pub probe_timeout_ms: Option<u64>,
    /// How long the indirect probes get.
    pub indirect_timeout_ms: Option<u64>,
    /// Time between gossip rounds.
    pub gossip_interval_ms: Option<u64>,
    /// Members gossiped to per round.
    pub gossip_fanout: Option<usize>,
    /// Minimum suspicion timeout, in probe intervals per log10 of the mesh size.
    pub suspicion_mult: Option<u32>,
    /// Whether announcements relayed by others keep a member whose probes fail at
    /// `unreachable-link` (the second liveness channel).
    pub relay_channel: Option<bool>,
}

/// The `[notices]` table: what to do with failure notices.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticesFile {
    /// Program and arguments run for `system-down` and `serious` notices.
    pub page_command: Option<Vec<String>>,
    /// How long the paging command may run.
    pub page_timeout_ms: Option<u64>,
}

/// The `[moves]` table: the operator's commands around a hand-over (seed 003's scriptable
/// move process).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovesFile {
    /// Program and arguments run on a holder before it hands its blade over.
    pub pre_command: Option<Vec<String>>,
    /// Program and arguments run on a new holder once its takeover's restore is done.
    pub post_command: Option<Vec<String>>,
    /// How long either may run.
    pub hook_timeout_ms: Option<u64>,
}

/// Most blades an active node may be allowed beyond its own: each is a restore, a data set and
/// peerlets on one node.
pub const MAX_EXTRA_BLADES: u8 = 8;

/// The `[failover]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverFile {
    /// What a blade's holder does on its own sustained degradation: `none`, `move` or `helper`.
    pub on_degraded: Option<OnDegraded>,
    /// Blades an active node may take beyond its own when no spare can (default 0).
    pub extra_blades: Option<u8>,
}

/// The `[degradation]` table: the sustained-degradation detector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DegradationFile {
    /// Figures watched: `cpu`, `memory`, `disk`, `load`.
    pub metrics: Option<Vec<Metric>>,
    /// High mark, percent.
    pub high_pct: Option<u8>,
    /// Low mark, percent.
    pub low_pct: Option<u8>,
    /// How long above the high mark raises `degraded`.
    pub raise_after_s: Option<u64>,
    /// How long below the low mark raises `recovered`.
    pub clear_after_s: Option<u64>,
    /// Time between readings.
    pub sample_interval_ms: Option<u64>,
}

/// The config file, as written by the operator. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Blade name.
    pub name: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Listen addresses.
    pub listen: Option<Vec<String>>,
    /// Listen addresses for block transfers (default: each listen IP, any free port).
    pub data_listen: Option<Vec<String>>,
    /// Seed peers.
    pub join: Option<Vec<String>>,
    /// `active` or `spare`.
    pub role: Option<Role>,
    /// Zone name.
    pub zone: Option<String>,
    /// Cluster key file.
    pub cluster_key: Option<PathBuf>,
    /// Local-subnet discovery.
    pub mdns: Option<bool>,
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// Membership timings.
    #[serde(default)]
    pub membership: MembershipFile,
    /// Failure notices.
    #[serde(default)]
    pub notices: NoticesFile,
    /// Sustained degradation.
    #[serde(default)]
    pub degradation: DegradationFile,
    /// Hand-over hooks.
    #[serde(default)]
    pub moves: MovesFile,
    /// Fail-over policies.
    #[serde(default)]
    pub failover: FailoverFile,
    /// `[messaging]`: groups, message log, peerlets.
    #[serde(default)]
    pub messaging: crate::router::MessagingConfig,
    /// Backup and replication.
    #[serde(default)]
    pub backup: BackupFile,
    /// `[fs]`: folders exported to operators.
    #[serde(default)]
    pub fs: FsFile,
    /// Software packages.
    #[serde(default)]
    pub packages: PackagesFile,
    /// `[console]`.
    #[serde(default)]
    pub console: ConsoleFile,
}

/// `[fs]`: the folders this blade exports through the `fs` peerlet, and who may use them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsFile {
    /// `export = [{ name = "logs", path = "/var/log/app", mode = "ro" }, ...]`.
    #[serde(default)]
    pub export: Vec<ExportFile>,
    /// Blade names or node ids whose operators may use the exports.
    #[serde(default)]
    pub operators: Vec<String>,
}

/// One `[[fs.export]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFile {
    /// The name, the first component of its paths in `dcish`.
    pub name: String,
    /// The folder, absolute.
    pub path: PathBuf,
    /// `ro` (the default) or `rw`.
    #[serde(default)]
    pub mode: ExportMode,
}

/// Whether an export may be written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportMode {
    /// Read-only.
    #[default]
    Ro,
    /// Read-write.
    Rw,
}

fn fs_policy(file: FsFile) -> Result<dci_peerlet_fs::Policy, ConfigError> {
    let mut exports: Vec<dci_peerlet_fs::Export> = Vec::new();
    for e in file.export {
        let bad_name = e.name.is_empty() || e.name.contains('/') || e.name == "." || e.name == "..";
        if bad_name {
            return Err(invalid(
                "fs.export.name",
                &e.name,
                "must be one path component",
            ));
        }
        if exports.iter().any(|x| x.name == e.name) {
            return Err(invalid("fs.export.name", &e.name, "is exported twice"));
        }
        if !e.path.is_absolute() {
            return Err(invalid(
                "fs.export.path",
                &e.path.display().to_string(),
                "must be absolute",
            ));
        }
        exports.push(dci_peerlet_fs::Export {
            name: e.name,
            path: e.path,
            writable: e.mode == ExportMode::Rw,
        });
    }
    Ok(dci_peerlet_fs::Policy {
        exports,
        operators: file.operators,
    })
}

/// `[console]` as written: the web console and who may log in to it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleFile {
    /// Serve the console on this address (`HOST:PORT`); off when absent.
    pub http: Option<String>,
    /// How long a session lasts without use, e.g. `30m`.
    pub session_idle: Option<String>,
    /// The operators.
    #[serde(default)]
    pub users: Vec<UserFile>,
}

/// One `[[console.users]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    /// The login name.
    pub name: String,
    /// An argon2 hash in PHC form (`dcish hash-password` makes one).
    pub password_hash: String,
}

/// The web console, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsoleConfig {
    /// Where to serve it; `None`: no console.
    pub http: Option<std::net::SocketAddr>,
    /// A session unused this long is over.
    pub session_idle: Duration,
    /// (name, argon2 PHC hash) of each operator.
    pub users: Vec<(String, String)>,
}

fn console_config(file: ConsoleFile, http: Option<&str>) -> Result<ConsoleConfig, ConfigError> {
    let http = match http.map(str::to_owned).or(file.http) {
        None => None,
        Some(a) => Some(a.parse().map_err(|_| {
            invalid(
                "console.http",
                &a,
                "expected HOST:PORT with an IP address, like 127.0.0.1:8080",
            )
        })?),
    };
    let session_idle = match &file.session_idle {
        None => Duration::from_secs(1800),
        Some(d) => crate::replication::settings::parse_duration(d)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| invalid("console.session_idle", d, "not a duration like 30m or 8h"))?,
    };
    let mut users: Vec<(String, String)> = Vec::new();
    for u in file.users {
        if u.name.is_empty() || u.name.len() > 64 || u.name.chars().any(|c| c.is_control()) {
            return Err(invalid(
                "console.users.name",
                &u.name,
                "1 to 64 printable characters",
            ));
        }
        if users.iter().any(|(n, _)| *n == u.name) {
            return Err(invalid("console.users.name", &u.name, "given twice"));
        }
        if argon2::PasswordHash::new(&u.password_hash).is_err() {
            return Err(invalid(
                "console.users.password_hash",
                &u.name,
                "not an argon2 hash in PHC form (make one with dcish hash-password)",
            ));
        }
        users.push((u.name, u.password_hash));
    }
    if http.is_some() && users.is_empty() {
        return Err(invalid(
            "console.users",
            "",
            "the console needs at least one [[console.users]] entry (make a hash with dcish hash-password)",
        ));
    }
    Ok(ConsoleConfig {
        http,
        session_idle,
        users,
    })
}

/// `[packages]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesFile {
    /// Public key files (`dcish keygen`'s `FILE.pub`) whose packages this agent installs.
    pub trusted_keys: Option<Vec<PathBuf>>,
    /// The longest any install command may run, in milliseconds.
    pub max_step_ms: Option<u64>,
    /// Retrieve and install, from a peer, the package providing a peerlet type an envelope
    /// asks for that is not installed here.
    pub on_demand: Option<bool>,
    /// Fingerprints of the trusted keys whose packages on-demand retrieval installs; none: any
    /// trusted key.
    pub on_demand_signers: Option<Vec<String>>,
    /// Where packages are installed.
    pub root: Option<PathBuf>,
    /// The user install commands run as.
    pub run_as: Option<String>,
}

/// Software packages, validated.
#[derive(Debug, Clone)]
pub struct PackagesConfig {
    /// The keys whose packages are installed; none trusted means none installed.
    pub trusted: Vec<ed25519_dalek::VerifyingKey>,
    /// The longest any install command may run.
    pub max_step: Duration,
    /// On-demand retrieval of missing peerlets.
    pub on_demand: bool,
    /// The signers on-demand retrieval accepts (empty: any trusted).
    pub on_demand_signers: Vec<String>,
    /// Where packages are installed.
    pub root: PathBuf,
    /// The user install commands run as (none: dcid's own).
    pub run_as: Option<crate::package::install::RunAs>,
}

/// What the command line says; `None` means "not given, use the file or the default".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--name`.
    pub name: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen` (repeatable; replaces the file's list when given).
    pub listen: Vec<String>,
    /// `--data-listen` (repeatable; replaces the file's list when given).
    pub data_listen: Vec<String>,
    /// `--join` (repeatable; replaces the file's list when given).
    pub join: Vec<String>,
    /// `--role`.
    pub role: Option<Role>,
    /// `--zone`.
    pub zone: Option<String>,
    /// `--cluster-key`.
    pub cluster_key: Option<PathBuf>,
    /// `--no-mdns`.
    pub no_mdns: bool,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--backup-root`.
    pub backup_root: Option<PathBuf>,
    /// `--replication-factor`.
    pub replication_factor: Option<usize>,
    /// `--trusted-key` (repeatable; replaces the file's list when given).
    pub trusted_keys: Vec<PathBuf>,
    /// `--http`.
    pub http: Option<String>,
}

/// A complete, validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This blade's name.
    pub name: String,
    /// Where identity, database and control socket live.
    pub data_dir: PathBuf,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Addresses to listen on for block transfers, which run on connections of their own.
    pub data_listen: Vec<Multiaddr>,
    /// Seed peers to dial at start and whenever the mesh is lost.
    pub join: Vec<Multiaddr>,
    /// Active blade or spare.
    pub role: Role,
    /// Zone, for placement across failure domains.
    pub zone: String,
    /// The private-network key; `None` runs an open mesh.
    pub cluster_key: Option<PreSharedKey>,
    /// Whether to discover peers on the local subnet with mDNS.
    pub mdns: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Membership protocol settings.
    pub membership: SwimConfig,
    /// The operator's paging command for the worst failure notices.
    pub page: PageConfig,
    /// The sustained-degradation detector.
    pub degradation: DegradationConfig,
    /// The commands run around a hand-over.
    pub moves: crate::hook::MoveHooks,
    /// What a holder does on its own sustained degradation.
    pub on_degraded: OnDegraded,
    /// Blades this node may take beyond its own when no spare can (active nodes only).
    pub extra_blades: u8,
    /// The config file, re-read for [`Config::reload_live`].
    pub config_file: Option<PathBuf>,
    /// Envelope routing, peerlets and the message log.
    pub messaging: crate::router::MessagingConfig,
    /// Backup and replication.
    pub backup: BackupConfig,
    /// The exported folders and their operators.
    pub fs: dci_peerlet_fs::Policy,
    /// Software packages.
    pub packages: PackagesConfig,
    /// The web console.
    pub console: ConsoleConfig,
}

impl Config {
    /// Reads the file named in `cli` (if any), applies the command line over it, and validates.
    pub fn load(cli: &Overrides) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::merge(file, cli)
    }

    /// Re-reads what an agent applies while it runs (on SIGHUP): `[degradation]` and
    /// `[failover]` from the config file; `None` when it was started without one.
    pub fn reload_live(&self) -> Result<Option<Live>, ConfigError> {
        let Some(path) = &self.config_file else {
            return Ok(None);
        };
        let file = read_file(path)?;
        Ok(Some(Live {
            degradation: degradation_config(&file.degradation, &duration_ms)?,
            on_degraded: file.failover.on_degraded.unwrap_or_default(),
        }))
    }

    fn merge(file: FileConfig, cli: &Overrides) -> Result<Config, ConfigError> {
        let name = match cli.name.clone().or(file.name) {
            Some(name) => name,
            None => host_name().ok_or_else(|| ConfigError::Invalid {
                field: "name",
                value: String::new(),
                reason: "the host name cannot be read; give --name".into(),
            })?,
        };
        validate_name("name", &name)?;
        let zone = cli
            .zone
            .clone()
            .or(file.zone)
            .unwrap_or_else(|| "default".into());
        validate_name("zone", &zone)?;
        let extra_blades = file.failover.extra_blades.unwrap_or(0);
        if extra_blades > MAX_EXTRA_BLADES {
            return Err(invalid(
                "failover.extra_blades",
                &extra_blades.to_string(),
                &format!("at most {MAX_EXTRA_BLADES}"),
            ));
        }

        let listen_src = if cli.listen.is_empty() {
            file.listen
                .unwrap_or_else(|| vec![format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}")])
        } else {
            cli.listen.clone()
        };
        let listen = listen_src
            .iter()
            .map(|a| parse_listen_addr(a))
            .collect::<Result<Vec<_>, _>>()?;
        if listen.is_empty() {
            return Err(invalid(
                "listen",
                "",
                "at least one listen address is needed",
            ));
        }
        let data_listen = match (cli.data_listen.is_empty(), file.data_listen) {
            (false, _) => parse_listen_list("data_listen", &cli.data_listen)?,
            (true, Some(list)) => parse_listen_list("data_listen", &list)?,
            (true, None) => listen.iter().map(crate::net::data_listen_addr).collect(),
        };
        if data_listen.is_empty() {
            return Err(invalid(
                "data_listen",
                "",
                "at least one data listen address is needed",
            ));
        }
        let join_src = if cli.join.is_empty() {
            file.join.unwrap_or_default()
        } else {
            cli.join.clone()
        };
        let join = join_src
            .iter()
            .map(|a| parse_peer_addr(a))
            .collect::<Result<Vec<_>, _>>()?;

        let cluster_key = match cli.cluster_key.clone().or(file.cluster_key) {
            Some(path) => Some(read_cluster_key(&path)?),
            None => None,
        };

        let defaults = SwimConfig::default();
        let m = &file.membership;
        let ms = duration_ms;
        let positive = |field: &'static str, v: Option<u64>, d: u64| -> Result<u64, ConfigError> {
            match v {
                Some(0) => Err(invalid(field, "0", "must be at least 1")),
                Some(n) => Ok(n),
                None => Ok(d),
            }
        };
        let membership = SwimConfig {
            probe_interval: ms(
                "membership.probe_interval_ms",
                m.probe_interval_ms,
                defaults.probe_interval,
            )?,
            probe_timeout: ms(
                "membership.probe_timeout_ms",
                m.probe_timeout_ms,
                defaults.probe_timeout,
            )?,
            indirect_timeout: ms(
                "membership.indirect_timeout_ms",
                m.indirect_timeout_ms,
                defaults.indirect_timeout,
            )?,
            gossip_interval: ms(
                "membership.gossip_interval_ms",
                m.gossip_interval_ms,
                defaults.gossip_interval,
            )?,
            gossip_fanout: positive(
                "membership.gossip_fanout",
                m.gossip_fanout.map(|n| n as u64),
                defaults.gossip_fanout as u64,
            )? as usize,
            suspicion_mult: positive(
                "membership.suspicion_mult",
                m.suspicion_mult.map(u64::from),
                u64::from(defaults.suspicion_mult),
            )? as u32,
            relay_channel: m.relay_channel.unwrap_or(defaults.relay_channel),
            ..defaults
        };
        if membership.probe_timeout >= membership.probe_interval {
            return Err(invalid(
                "membership.probe_timeout_ms",
                &membership.probe_timeout.as_millis().to_string(),
                "must be shorter than probe_interval_ms",
            ));
        }

        let page = PageConfig {
            command: file.notices.page_command.unwrap_or_default(),
            timeout: ms(
                "notices.page_timeout_ms",
                file.notices.page_timeout_ms,
                Duration::from_secs(30),
            )?,
        };
        if page.command.first().is_some_and(|p| p.is_empty()) {
            return Err(invalid(
                "notices.page_command",
                "",
                "the program name is empty",
            ));
        }
        let moves = crate::hook::MoveHooks {
            pre: file.moves.pre_command.unwrap_or_default(),
            post: file.moves.post_command.unwrap_or_default(),
            timeout: ms(
                "moves.hook_timeout_ms",
                file.moves.hook_timeout_ms,
                Duration::from_secs(60),
            )?,
        };
        for (field, command) in [
            ("moves.pre_command", &moves.pre),
            ("moves.post_command", &moves.post),
        ] {
            if command.first().is_some_and(|p| p.is_empty()) {
                return Err(invalid(field, "", "the program name is empty"));
            }
        }
        let degradation = degradation_config(&file.degradation, &ms)?;
        let backup = BackupConfig::from_file(
            &file.backup,
            cli.backup_root.clone(),
            cli.replication_factor,
        )
        .map_err(|(field, value, reason)| invalid(field, &value, &reason))?;

        let data_dir = cli
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./dci-data"));
        let key_paths = if cli.trusted_keys.is_empty() {
            file.packages.trusted_keys.unwrap_or_default()
        } else {
            cli.trusted_keys.clone()
        };
        let packages = PackagesConfig {
            trusted: key_paths
                .iter()
                .map(|p| {
                    crate::package::keys::read_public(p)
                        .map_err(|e| invalid("packages.trusted_keys", &p.display().to_string(), &e))
                })
                .collect::<Result<_, _>>()?,
            max_step: ms(
                "packages.max_step_ms",
                file.packages.max_step_ms,
                Duration::from_secs(600),
            )?,
            on_demand: file.packages.on_demand.unwrap_or(false),
            on_demand_signers: file.packages.on_demand_signers.unwrap_or_default(),
            root: file
                .packages
                .root
                .unwrap_or_else(|| data_dir.join("packages")),
            run_as: file
                .packages
                .run_as
                .map(|user| {
                    crate::package::install::RunAs::lookup(&user)
                        .map_err(|e| invalid("packages.run_as", &user, &e))
                })
                .transpose()?,
        };
        if packages.run_as.is_some() && resolved(&packages.root).starts_with(resolved(&data_dir)) {
            return Err(invalid(
                "packages.root",
                &packages.root.display().to_string(),
                "must be outside the data dir when run_as is set (the data dir holds the \
                 identity key and database, and is never opened to another user)",
            ));
        }

        Ok(Config {
            name,
            data_dir,
            listen,
            data_listen,
            join,
            role: cli.role.or(file.role).unwrap_or(Role::Active),
            zone,
            cluster_key,
            mdns: !cli.no_mdns && file.mdns.unwrap_or(true),
            log_format: cli
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            membership,
            page,
            degradation,
            moves,
            on_degraded: file.failover.on_degraded.unwrap_or_default(),
            extra_blades,
            config_file: cli.config.clone(),
            messaging: file.messaging,
            backup,
            fs: fs_policy(file.fs)?,
            packages,
            console: console_config(file.console, cli.http.as_deref())?,
        })
    }
}

/// The settings an agent re-reads on SIGHUP.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// The detector's marks and windows.
    pub degradation: DegradationConfig,
    /// The holder's policy on degradation.
    pub on_degraded: OnDegraded,
}

/// A duration in milliseconds from the file, `d` when absent; 0 is refused.
fn duration_ms(field: &'static str, v: Option<u64>, d: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(d),
        Some(0) => Err(invalid(field, "0", "must be greater than zero")),
        Some(v) => Ok(Duration::from_millis(v)),
    }
}

fn degradation_config(
    d: &DegradationFile,
    ms: &dyn Fn(&'static str, Option<u64>, Duration) -> Result<Duration, ConfigError>,
) -> Result<DegradationConfig, ConfigError> {
    let defaults = DegradationConfig::default();
    let secs = |v: Option<u64>| v.map(|s| s.saturating_mul(1000));
    let pct = |field: &'static str, v: Option<u8>, d: u8| match v {
        Some(p) if p > 100 => Err(invalid(field, &p.to_string(), "must be at most 100")),
        Some(p) => Ok(p),
        None => Ok(d),
    };
    let config = DegradationConfig {
        metrics: d.metrics.clone().unwrap_or(defaults.metrics),
        high: pct("degradation.high_pct", d.high_pct, defaults.high)?,
        low: pct("degradation.low_pct", d.low_pct, defaults.low)?,
        raise_after: ms(
            "degradation.raise_after_s",
            secs(d.raise_after_s),
            defaults.raise_after,
        )?,
        clear_after: ms(
            "degradation.clear_after_s",
            secs(d.clear_after_s),
            defaults.clear_after,
        )?,
        sample_interval: ms(
            "degradation.sample_interval_ms",
            d.sample_interval_ms,
            defaults.sample_interval,
        )?,
    };
    if config.low > config.high {
        return Err(invalid(
            "degradation.low_pct",
            &config.low.to_string(),
            "must not exceed high_pct",
        ));
    }
    Ok(config)
}

/// `path` absolute, `.` and `..` folded, and symlinks resolved as far as it exists (it may not
/// exist yet), so that two spellings of one place compare equal.
fn resolved(path: &Path) -> PathBuf {
    let mut plain = PathBuf::new();
    for part in std::path::absolute(path)
        .unwrap_or_else(|_| path.into())
        .components()
    {
        match part {
            std::path::Component::ParentDir => {
                plain.pop();
            }
            std::path::Component::CurDir => {}
            part => plain.push(part),
        }
    }
    let mut missing = Vec::new();
    let mut at = plain.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return missing.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                at = parent;
            }
            _ => return plain,
        }
    }
}

fn invalid(field: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.into(),
        reason: reason.into(),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| {
        // toml's message may not name the key (e.g. a type error); the line it points at does.
        let at = e
            .span()
            .map(|span| {
                let start = span.start.min(text.len());
                let line_no = text[..start].matches('\n').count() + 1;
                let line = text.lines().nth(line_no - 1).unwrap_or("");
                match line.split_once('=') {
                    Some((key, _)) => format!("line {line_no} ({}): ", key.trim()),
                    None => format!("line {line_no}: "),
                }
            })
            .unwrap_or_default();
        ConfigError::Parse {
            path: path.into(),
            reason: format!("{at}{}", one_line(e.message())),
        }
    })
}

/// Folds a possibly multi-line message onto one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn host_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = raw.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Blade and zone names: 1 to 63 of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn validate_name(field: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            name,
            "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ))
    }
}

/// A listen address: a multiaddr `/ip4|ip6/ADDR/tcp/PORT`, or `HOST:PORT` with an IP or `localhost`.
pub fn parse_listen_addr(s: &str) -> Result<Multiaddr, ConfigError> {
    parse_listen_field("listen", s)
}

fn parse_listen_list(field: &'static str, list: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    list.iter().map(|a| parse_listen_field(field, a)).collect()
}

fn parse_listen_field(field: &'static str, s: &str) -> Result<Multiaddr, ConfigError> {
    let addr = parse_any_addr(field, s)?;
    let mut parts = addr.iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Protocol::Ip4(_) | Protocol::Ip6(_)), Some(Protocol::Tcp(_)), None) => Ok(addr),
        _ => Err(invalid(
            field,
            s,
            "expected /ip4/ADDR/tcp/PORT, /ip6/ADDR/tcp/PORT or IP:PORT",
        )),
    }
}

/// A peer address: `/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT[/p2p/ID]`, or `HOST:PORT`.
pub fn parse_peer_addr(s: &str) -> Result<Multiaddr, ConfigError> {
    let addr = parse_any_addr("join", s)?;
    let mut parts = addr.iter();
    let host_ok = matches!(
        parts.next(),
        Some(
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
        )
    );
    let tcp_ok = matches!(parts.next(), Some(Protocol::Tcp(_)));
    let rest_ok = matches!(parts.next(), None | Some(Protocol::P2p(_))) && parts.next().is_none();
    if host_ok && tcp_ok && rest_ok {
        Ok(addr)
    } else {
        Err(invalid(
            "join",
            s,
            "expected HOST:PORT or /ip4|ip6|dns/HOST/tcp/PORT[/p2p/PEER-ID]",
        ))
    }
}

fn parse_any_addr(field: &'static str, s: &str) -> Result<Multiaddr, ConfigError> {
    if s.starts_with('/') {
        return s
            .parse::<Multiaddr>()
            .map_err(|e| invalid(field, s, &one_line(&e.to_string())));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| invalid(field, s, "expected HOST:PORT or a multiaddr"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(field, s, "the port must be a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut addr = Multiaddr::empty();
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => addr.push(Protocol::Ip4(ip)),
        Ok(IpAddr::V6(ip)) => addr.push(Protocol::Ip6(ip)),
        Err(_) if host == "localhost" => addr.push(Protocol::Ip4([127, 0, 0, 1].into())),
        Err(_) if is_dns_name(host) => addr.push(Protocol::Dns(host.to_string().into())),
        Err(_) => {
            return Err(invalid(
                field,
                s,
                "the host is neither an IP address nor a DNS name",
            ))
        }
    }
    addr.push(Protocol::Tcp(port));
    Ok(addr)
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Reads a cluster key in the libp2p private-network key format (`dcid keygen` writes one).
pub fn read_cluster_key(path: &Path) -> Result<PreSharedKey, ConfigError> {
    let err = |reason: String| ConfigError::ClusterKey {
        path: path.into(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    text.trim().parse::<PreSharedKey>().map_err(|e| {
        err(format!(
            "malformed ({}); expected the '/key/swarm/psk/1.0.0/' format, make one with `dcid keygen FILE`",
            one_line(&e.to_string())
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Overrides {
        Overrides {
            name: Some("blade-01".into()),
            ..Overrides::default()
        }
    }

    #[test]
    fn plain_host_port_becomes_a_multiaddr() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:7000").unwrap().to_string(),
            "/ip4/127.0.0.1/tcp/7000"
        );
        assert_eq!(
            parse_peer_addr("blade-02:7946").unwrap().to_string(),
            "/dns/blade-02/tcp/7946"
        );
        assert_eq!(
            parse_peer_addr("[::1]:7946").unwrap().to_string(),
            "/ip6/::1/tcp/7946"
        );
    }

    #[test]
    fn listen_refuses_names_and_missing_ports() {
        for bad in [
            "blade-02:7946",
            "127.0.0.1",
            "/ip4/1.2.3.4",
            "1.2.3.4:99999",
            "/dns/x/tcp/1",
            "::",
        ] {
            assert!(parse_listen_addr(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn command_line_overrides_the_file() {
        let file: FileConfig = toml::from_str(
            "name = 'from-file'\nzone = 'z1'\nlisten = ['127.0.0.1:1']\n[membership]\nprobe_interval_ms = 900\n",
        )
        .unwrap();
        let mut o = cli();
        o.listen = vec!["127.0.0.1:2".into()];
        let c = Config::merge(file, &o).unwrap();
        assert_eq!(c.name, "blade-01");
        assert_eq!(c.zone, "z1");
        assert_eq!(c.listen[0].to_string(), "/ip4/127.0.0.1/tcp/2");
        assert_eq!(c.membership.probe_interval, Duration::from_millis(900));
    }

    #[test]
    fn unknown_fields_in_the_file_are_refused_by_name() {
        let err = toml::from_str::<FileConfig>("nmae = 'x'").unwrap_err();
        assert!(err.message().contains("nmae"), "{}", err.message());
    }

    #[test]
    fn exports_are_read_only_unless_said_and_bad_ones_are_refused() {
        let file: FileConfig = toml::from_str(
            "[fs]\noperators = ['b1']\nexport = [{ name = 'logs', path = '/var/log' }, { name = 'up', path = '/srv/up', mode = 'rw' }]\n",
        )
        .unwrap();
        let c = Config::merge(file, &cli()).unwrap();
        let modes: Vec<(&str, bool)> =
            c.fs.exports
                .iter()
                .map(|e| (e.name.as_str(), e.writable))
                .collect();
        assert_eq!(modes, [("logs", false), ("up", true)]);
        assert_eq!(c.fs.operators, ["b1"]);
        for (bad, says) in [
            ("export = [{ name = 'a/b', path = '/x' }]", "fs.export.name"),
            ("export = [{ name = 'a', path = 'rel' }]", "fs.export.path"),
            (
                "export = [{ name = 'a', path = '/x' }, { name = 'a', path = '/y' }]",
                "exported twice",
            ),
        ] {
            let file: FileConfig = toml::from_str(&format!("[fs]\n{bad}\n")).unwrap();
            let err = Config::merge(file, &cli()).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(toml::from_str::<FileConfig>(
            "[fs]\nexport = [{ name = 'a', path = '/x', mode = 'rwx' }]"
        )
        .is_err());
    }

    #[test]
    fn the_probe_timeout_must_be_shorter_than_the_probe_interval() {
        let file: FileConfig =
            toml::from_str("[membership]\nprobe_interval_ms = 100\nprobe_timeout_ms = 100\n")
                .unwrap();
        let err = Config::merge(file, &cli()).unwrap_err().to_string();
        assert!(err.contains("probe_timeout_ms"), "{err}");
    }

    #[test]
    fn extra_blades_default_to_none_and_are_bounded() {
        let c = Config::merge(FileConfig::default(), &cli()).unwrap();
        assert_eq!(c.extra_blades, 0);
        let file: FileConfig = toml::from_str("[failover]\nextra_blades = 2\n").unwrap();
        assert_eq!(Config::merge(file, &cli()).unwrap().extra_blades, 2);
        let file: FileConfig = toml::from_str("[failover]\nextra_blades = 9\n").unwrap();
        let err = Config::merge(file, &cli()).unwrap_err().to_string();
        assert_eq!(err, "invalid failover.extra_blades '9': at most 8");
        assert!(toml::from_str::<FileConfig>("[failover]\nextra_blades = -1\n").is_err());
    }

    #[test]
    fn the_degradation_policy_defaults_to_none_and_is_re_read_from_the_file() {
        let c = Config::merge(FileConfig::default(), &cli()).unwrap();
        assert_eq!(c.on_degraded, OnDegraded::None);
        assert_eq!(c.reload_live().unwrap(), None, "no file to re-read");
        assert!(toml::from_str::<FileConfig>(
            "[failover]
on_degraded = 'spread'
"
        )
        .is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dcid.toml");
        std::fs::write(
            &path,
            "[failover]
on_degraded = 'helper'
",
        )
        .unwrap();
        let mut o = cli();
        o.config = Some(path.clone());
        let c = Config::load(&o).unwrap();
        assert_eq!(c.on_degraded, OnDegraded::Helper);
        std::fs::write(
            &path,
            "[failover]
on_degraded = 'move'
[degradation]
high_pct = 50
",
        )
        .unwrap();
        let live = c.reload_live().unwrap().unwrap();
        assert_eq!(
            (live.on_degraded, live.degradation.high),
            (OnDegraded::Move, 50)
        );
        std::fs::write(
            &path,
            "[degradation]
high_pct = 10
low_pct = 20
",
        )
        .unwrap();
        assert!(c.reload_live().is_err(), "a bad file changes nothing");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "-x", "a b", "é", &"x".repeat(64)] {
            assert!(validate_name("name", bad).is_err(), "{bad:?} was accepted");
        }
        validate_name("name", "blade-01.rack_2").unwrap();
    }

    #[test]
    fn run_as_needs_a_known_user_and_a_root_outside_the_data_dir() {
        let load = |packages: &str| {
            let file: FileConfig = toml::from_str(&format!(
                "data_dir = \"/srv/dci\"\n[packages]\n{packages}\n"
            ))
            .unwrap();
            Config::merge(file, &cli()).map(|c| c.packages)
        };
        let p = load("").unwrap();
        assert_eq!(
            (p.root, p.run_as),
            (PathBuf::from("/srv/dci/packages"), None)
        );

        let err = load("run_as = \"no-such-user-here\"")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid packages.run_as 'no-such-user-here': no such user"
        );
        for inside in [
            "",
            "root = \"/srv/dci/pkgs\"",
            "root = \"/srv/other/../dci/./x\"",
        ] {
            let err = load(&format!("run_as = \"nobody\"\n{inside}"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("invalid packages.root"), "{inside}: {err}");
            assert!(err.contains("outside the data dir"), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }

        let p = load("run_as = \"nobody\"\nroot = \"/srv/dci-packages\"").unwrap();
        assert_eq!(p.root, PathBuf::from("/srv/dci-packages"));
        let u = p.run_as.unwrap();
        assert_eq!((u.user.as_str(), u.uid), ("nobody", 65534));
    }
}
