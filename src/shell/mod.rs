//! `dcish`, the operator's shell: one-shot commands, or an interactive prompt when none is given.
//!
//! Every command is an envelope to the local agent's control socket ([`client`]); output is a table
//! on a terminal and JSON with `--json`, so scripts never parse tables.

pub mod backup;
pub mod client;
pub mod exec;
pub mod files;
pub mod moves;
pub mod msg;
pub mod nodeset;
pub mod package;
pub mod peerlets;
pub mod prompt;
pub mod task;
pub mod top;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use dci_proto::control::{
    counters_from_payload, events_from_payload, members_from_payload, seats_from_payload,
    ControlRequest, EventInfo, HandoverInfo, MemberInfo, SeatInfo,
};

use client::{Client, ClientError};

/// `dcish` arguments.
#[derive(Debug, Parser)]
#[command(name = "dcish", version, about = "The DCI distributed shell")]
pub struct Cli {
    /// The agent's control socket.
    #[arg(
        long,
        env = "DCI_AGENT",
        default_value = "./dci-data/dcid.sock",
        global = true
    )]
    pub agent: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Run the commands of this script, one per line (quotes as in sh, `#` starts a comment line),
    /// then exit; non-zero if any failed.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The command; none opens an interactive prompt.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The shell's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the members of the mesh: name, id, state, role, zone, addresses, last heard.
    Nodes {
        /// Also show resource figures and the heartbeat status table (each liveness channel).
        #[arg(long)]
        detail: bool,
    },
    /// This agent at a glance: members by state, its resources, and the heartbeat status table.
    Status,
    /// The recent membership events seen by this agent, oldest first.
    Events,
    /// The seat table: which node holds each blade, at which epoch, and in what state.
    Seats,
    /// Remove a dead or departed member for good: it no longer counts in election quorums.
    Forget {
        /// The member, by name or node id.
        node: String,
    },
    /// Declare a blade's holder failed: it hands the blade to a spare, which restores its data.
    /// Waits until the seat moved.
    Failover {
        /// The blade.
        blade: String,
        /// The node (by name) that takes it [default: the first spare in rank order].
        #[arg(long)]
        to: Option<String>,
        /// Return once the holder was asked, without waiting for the seat to move.
        #[arg(long)]
        no_wait: bool,
    },
    /// Move live blades to other nodes, each as a failover to a chosen node: one-to-one
    /// (`move BLADE --to NODE`) or a cascade (`move --cascade A:B,B:C`). Waits for every step.
    Move(moves::MoveArgs),
    /// Swap two live blades' nodes, through a spare that holds one of them in between.
    Swap {
        /// The first blade.
        blade1: String,
        /// The second blade.
        blade2: String,
        /// Start at this time of day, `HH:MM` or `HH:MM:SS` UTC (the next one to come).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Run a command on a set of blades and gather the output (`dcish exec @all -- uname -n`).
    Exec(exec::ExecArgs),
    /// Expand a node set against the mesh, or fold it (`blade-[01-03]`).
    Nodeset(exec::NodesetArgs),
    /// Send an envelope to a peerlet (a blade, node, group or everyone) and show the answers.
    Send(msg::SendArgs),
    /// Show the message log: envelopes this agent sent and received.
    Log(msg::LogArgs),
    /// Send logged envelopes again, with new ids, to the same or another destination.
    Replay(msg::ReplayArgs),
    /// Run a task document: steps sent to peerlets in order, outputs feeding later inputs.
    Run {
        /// The task document (XML, `urn:dci:task:1`).
        task: PathBuf,
    },
    /// Back a blade up now.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// A blade's archives: time, kind, size, files, completeness, holders.
    Archives {
        /// The blade.
        blade: String,
    },
    /// Restore a blade's archives, sequentially up to one, or only some paths.
    Restore(backup::RestoreCommand),
    /// A blade's backup settings, as the node acting as it applies them.
    Settings {
        /// The blade.
        blade: String,
    },
    /// Change a blade's backup settings on the node acting as it; kept there across restarts.
    Configure(backup::ConfigureCommand),
    /// Look for members again now (the agent dials its seeds afresh) and list them.
    Discover,
    /// The failure notices this agent received lately (its own too), oldest first.
    Notices,
    /// Read a password from standard input and print its argon2 hash, for a
    /// `[[console.users]]` entry of the config file.
    HashPassword,
    /// List a directory of the tree: `/blades/B/EXPORT/...` (exported folders) or
    /// `/archives/B/ID|latest/...` (archived trees).
    Ls {
        /// The directory [default: the working directory].
        path: Option<String>,
    },
    /// Change the working directory (kept for the prompt or script) [default: /].
    Cd {
        /// The directory.
        path: Option<String>,
    },
    /// Print the working directory.
    Pwd,
    /// Print a file of the tree.
    Cat {
        /// The file.
        path: String,
    },
    /// Copy a file of the tree to a local file.
    Get(files::GetArgs),
    /// Copy a local file into an exported folder of one blade, or of every blade of a set.
    Put(files::PutArgs),
    /// List what is under a directory of an exported folder, at any depth.
    Find(files::FindArgs),
    /// Count the bytes, files and directories under a path of an exported folder.
    Du {
        /// The path [default: the working directory].
        path: Option<String>,
    },
    /// Write a new package-signing key to FILE (mode 0600) and its public half to FILE.pub.
    Keygen {
        /// Where to write the secret key; refuses to overwrite.
        file: PathBuf,
    },
    /// Build a signed package.
    #[command(subcommand)]
    Package(package::PackageCommand),
    /// Install a package on a set of blades: each pulls it from its peers, verifies and installs.
    Deploy(package::DeployArgs),
    /// Remove a package (by name) from a set of blades, with its undo steps.
    Undeploy {
        /// The package name.
        name: String,
        /// The blades (a node set).
        #[arg(long)]
        from: String,
    },
    /// The peerlet types each blade of a set offers and the instances running [default: @all];
    /// `peerlets stop BLADE TYPE [--instance GUID]` stops them.
    Peerlets(peerlets::PeerletsArgs),
    /// A live view of the blades' resources (CPU, memory, disk, load), refreshed every interval;
    /// `q` or Ctrl-C leaves. One table when not on a terminal, or with `--once`.
    Top(top::TopArgs),
    /// The packages installed on a set of blades [default: @all].
    Packages {
        /// The blades (a node set).
        set: Option<String>,
    },
}

/// A command's failure: one line for the user.
pub type ShellError = ClientError;

/// Runs one command and prints its output; `session` holds the working directory.
pub async fn run(
    cli: &Cli,
    command: &Command,
    session: &mut files::Session,
) -> Result<(), ShellError> {
    // Commands on local files need no agent.
    let text = match command {
        Command::Keygen { file } => package::keygen(file, cli.json)?,
        Command::Package(c) => package::build(c, cli.json)?,
        Command::HashPassword => hash_password()?,
        _ => match with_agent(cli, command, session).await? {
            Some(text) => text,
            None => return Ok(()),
        },
    };
    // Nothing left to say (`exec --lines` printed as it went): no empty line either.
    if !text.is_empty() {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
    Ok(())
}

/// Runs a command through the agent; `None` when it printed its output itself.
async fn with_agent(
    cli: &Cli,
    command: &Command,
    session: &mut files::Session,
) -> Result<Option<String>, ShellError> {
    let mut client = Client::connect(&cli.agent).await?;
    let protocol = |e: dci_proto::ProtoError| ClientError::Protocol {
        path: cli.agent.clone(),
        reason: e.to_string(),
    };
    let color = color_enabled();
    let text = match command {
        Command::Status => {
            let payload = client.request(ControlRequest::Nodes.to_payload()).await?;
            let members = members_from_payload(&payload).map_err(protocol)?;
            let payload = client
                .request(ControlRequest::Counters.to_payload())
                .await?;
            let counters = counters_from_payload(&payload).map_err(protocol)?;
            let seats = fetch_seats(&mut client).await?;
            if cli.json {
                status_json(&members, &counters, &seats)
            } else {
                status_text(&members, &counters, &seats, color)
            }
        }
        Command::Nodes { .. } => {
            let payload = client.request(ControlRequest::Nodes.to_payload()).await?;
            let members = members_from_payload(&payload).map_err(protocol)?;
            match (command, cli.json) {
                (_, true) => nodes_json(&members),
                (Command::Nodes { detail: true }, false) => format!(
                    "{}\n\n{}",
                    nodes_table(&members, color, true),
                    channels_table(&members, color)
                ),
                (_, false) => nodes_table(&members, color, false),
            }
        }
        Command::Exec(args) => exec::exec(&mut client, args, cli.json).await?,
        Command::Peerlets(args) => peerlets::peerlets(&mut client, args, cli.json).await?,
        Command::Top(args) => match top::top(&mut client, args, cli.json, color).await? {
            Some(text) => text,
            None => return Ok(None),
        },
        Command::Nodeset(args) => exec::nodeset(&mut client, args, cli.json).await?,
        Command::Send(args) => msg::send(&mut client, args, cli.json).await?,
        Command::Log(args) => msg::log(&mut client, args, cli.json).await?,
        Command::Replay(args) => msg::replay(&mut client, args, cli.json).await?,
        Command::Run { task } => task::run(&mut client, task, cli.json).await?,
        Command::Backup(c) => backup::backup(&mut client, c, cli.json).await?,
        Command::Archives { blade } => backup::archives(&mut client, blade, cli.json).await?,
        Command::Restore(c) => backup::restore(&mut client, c, cli.json).await?,
        Command::Settings { blade } => backup::settings(&mut client, blade, cli.json).await?,
        Command::Configure(c) => backup::configure(&mut client, c, cli.json).await?,
        Command::HashPassword => hash_password()?,
        Command::Notices => {
            let payload = client.request(ControlRequest::Notices.to_payload()).await?;
            let notices = dci_proto::control::notices_from_payload(&payload).map_err(protocol)?;
            if cli.json {
                notices_json(&notices)
            } else {
                notices_table(&notices, color)
            }
        }
        Command::Discover => {
            let payload = client
                .request(ControlRequest::Discover.to_payload())
                .await?;
            let members = members_from_payload(&payload).map_err(protocol)?;
            if cli.json {
                nodes_json(&members)
            } else {
                nodes_table(&members, color, false)
            }
        }
        Command::Ls { path } => files::ls(&mut client, session, path.as_deref(), cli.json).await?,
        Command::Cd { path } => {
            return files::cd(&mut client, session, path.as_deref())
                .await
                .map(|()| None)
        }
        Command::Pwd if cli.json => serde_json::Value::from(session.cwd.clone()).to_string(),
        Command::Pwd => session.cwd.clone(),
        // Bytes as they are, with no line added: a file is not a table.
        Command::Cat { path } => {
            return files::cat(&mut client, session, path).await.map(|()| None)
        }
        Command::Get(args) => match files::get(&mut client, session, args, cli.json).await? {
            text if text.is_empty() => return Ok(None),
            text => text,
        },
        Command::Put(args) => files::put(&mut client, session, args, cli.json).await?,
        Command::Find(args) => files::find(&mut client, session, args, cli.json).await?,
        Command::Du { path } => files::du(&mut client, session, path.as_deref(), cli.json).await?,
        Command::Keygen { file } => package::keygen(file, cli.json)?,
        Command::Package(c) => package::build(c, cli.json)?,
        Command::Deploy(args) => package::deploy(&mut client, args, cli.json).await?,
        Command::Undeploy { name, from } => {
            package::undeploy(&mut client, name, from, cli.json).await?
        }
        Command::Packages { set } => {
            package::packages(&mut client, set.as_deref(), cli.json).await?
        }
        Command::Seats => {
            let payload = client.request(ControlRequest::Seats.to_payload()).await?;
            let seats = seats_from_payload(&payload).map_err(protocol)?;
            if cli.json {
                seats_json(&seats)
            } else {
                seats_table(&seats, color)
            }
        }
        Command::Forget { node } => {
            let request = ControlRequest::Forget { node: node.clone() };
            let payload = client.request(request.to_payload()).await?;
            let (id, name) =
                dci_proto::control::forgotten_from_payload(&payload).map_err(protocol)?;
            if cli.json {
                serde_json::json!({"id": id, "name": name}).to_string()
            } else {
                format!("forgot {name} ({id}): it no longer counts in election quorums")
            }
        }
        Command::Failover { blade, to, no_wait } => {
            failover(&mut client, blade, to.clone(), *no_wait, cli.json).await?
        }
        Command::Move(args) => moves::move_blades(&mut client, args, cli.json).await?,
        Command::Swap { blade1, blade2, at } => {
            moves::swap(&mut client, (blade1, blade2), at.as_deref(), cli.json).await?
        }
        Command::Events => {
            let payload = client.request(ControlRequest::Events.to_payload()).await?;
            let events = events_from_payload(&payload).map_err(protocol)?;
            if cli.json {
                events_json(&events)
            } else {
                events_table(&events, color)
            }
        }
    };
    Ok(Some(text))
}

/// `dcish hash-password`: the first line of standard input (no echo needed: pipe it, or type
/// it at a prompt that hides it, e.g. `read -rs`), hashed with argon2id and a random salt.
fn hash_password() -> Result<String, ShellError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| msg::usage(format!("cannot read the password from stdin: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(msg::usage(
            "give the password on standard input, e.g. read -rs P; printf '%s\\n' \"$P\" | dcish hash-password".into(),
        ));
    }
    crate::console::auth::hash_password(password).map_err(msg::usage)
}

fn color_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn resources_json(m: &MemberInfo) -> serde_json::Value {
    let [cpu, memory, disk, load] = m.resources;
    serde_json::json!({ "cpu": cpu, "memory": memory, "disk": disk, "load": load })
}

fn channels_json(m: &MemberInfo) -> serde_json::Value {
    m.channels
        .iter()
        .map(|c| {
            serde_json::json!({
                "channel": c.name,
                "enabled": c.enabled,
                "serial": c.serial,
                "last_ms": c.last_ms,
                "state": c.state,
            })
        })
        .collect()
}

/// The `nodes --json` document.
pub fn nodes_json(members: &[MemberInfo]) -> String {
    let rows: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "id": m.id,
                "state": m.state,
                "role": m.role,
                "zone": m.zone,
                "addresses": m.addrs,
                "last_heard_ms": m.last_heard_ms,
                "incarnation": m.incarnation,
                "version": m.version,
                "degraded": m.degraded,
                "resources": resources_json(m),
                "channels": channels_json(m),
                "blade": m.blade.as_ref().map(|(b, _)| b.clone()),
                "epoch": m.blade.as_ref().map(|(_, e)| *e),
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

/// Aligned columns; the cell in column `colored` is coloured by [`state_color`] when `color`.
fn table(header: &[&str], rows: &[Vec<String>], colored: Option<usize>, color: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String], paint: bool| {
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            match state_color(cell) {
                Some(code) if paint && color && colored == Some(i) => {
                    out.push_str(&format!("\x1b[{code}m{cell}\x1b[0m"))
                }
                _ => out.push_str(cell),
            }
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    };
    line(
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        false,
    );
    for row in rows {
        line(row, true);
    }
    out
}

fn state_color(state: &str) -> Option<&'static str> {
    match state {
        "alive" | "ok" | "joined" | "recovered" | "held" => Some("32"),
        "suspect" | "unreachable-link" | "link-unreachable" | "degraded" | "idle" | "restoring" => {
            Some("33")
        }
        "dead" | "failed" | "down" => Some("31"),
        "left" | "disabled" => Some("2"),
        _ => None,
    }
}

fn percent(v: Option<u8>) -> String {
    v.map_or("-".into(), |v| format!("{v}%"))
}

/// The `nodes` table, aligned, with states coloured when `color`; `detail` adds the resource
/// figures.
pub fn nodes_table(members: &[MemberInfo], color: bool, detail: bool) -> String {
    let mut header = vec![
        "NAME",
        "ID",
        "STATE",
        "ROLE",
        "ZONE",
        "ADDRESSES",
        "LAST HEARD",
    ];
    if detail {
        header.extend(["CPU", "MEM", "DISK", "LOAD", "DEGRADED"]);
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let mut row = vec![
                m.name.clone(),
                m.id.clone(),
                m.state.clone(),
                m.role.clone(),
                m.zone.clone(),
                m.addrs.join(","),
                format_age(m.last_heard_ms),
            ];
            if detail {
                row.extend(m.resources.map(percent));
                row.push(if m.degraded { "yes" } else { "no" }.into());
            }
            row
        })
        .collect();
    let mut out = table(&header, &rows, Some(2), color);
    let alive = members.iter().filter(|m| m.state == "alive").count();
    out.push_str(&format!("{} members, {alive} alive", members.len()));
    out
}

/// The heartbeat status table: one row per member and liveness channel.
pub fn channels_table(members: &[MemberInfo], color: bool) -> String {
    let header = [
        "MEMBER",
        "CHANNEL",
        "ENABLED",
        "SERIAL",
        "LAST VALID",
        "STATE",
    ];
    let rows: Vec<Vec<String>> = members
        .iter()
        .flat_map(|m| {
            m.channels.iter().map(|c| {
                vec![
                    m.name.clone(),
                    c.name.clone(),
                    if c.enabled { "yes" } else { "no" }.into(),
                    c.serial.to_string(),
                    c.last_ms.map_or("never".into(), format_age),
                    c.state.clone(),
                ]
            })
        })
        .collect();
    let mut out = String::from("Heartbeat status\n");
    out.push_str(&table(&header, &rows, Some(5), color));
    out.truncate(out.trim_end().len());
    out
}

fn count_states(members: &[MemberInfo]) -> Vec<(&'static str, usize)> {
    dci_proto::control::STATES
        .iter()
        .map(|s| (*s, members.iter().filter(|m| m.state == *s).count()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The takeovers this agent made of the blades it holds, each with its steps (see
/// [`crate::failover::steps`]).
fn takeovers(seats: &[SeatInfo]) -> impl Iterator<Item = &SeatInfo> {
    seats.iter().filter(|s| !s.steps.is_empty())
}

fn steps_json(seat: &SeatInfo) -> Vec<serde_json::Value> {
    seat.steps
        .iter()
        .map(|t| serde_json::json!({ "step": t.step, "what": t.what, "after_ms": t.after_ms }))
        .collect()
}

/// `status --json`: this agent, the counts by state, the heartbeat status table, the agent's
/// counters and its takeovers' steps.
pub fn status_json(
    members: &[MemberInfo],
    counters: &[(String, u64)],
    seats: &[SeatInfo],
) -> String {
    let me = members.iter().find(|m| m.channels.is_empty());
    let counts: serde_json::Map<String, serde_json::Value> = count_states(members)
        .into_iter()
        .map(|(s, n)| (s.to_string(), n.into()))
        .collect();
    let heartbeats: Vec<serde_json::Value> = members
        .iter()
        .filter(|m| !m.channels.is_empty())
        .map(|m| serde_json::json!({ "name": m.name, "id": m.id, "state": m.state, "channels": channels_json(m) }))
        .collect();
    let v = serde_json::json!({
        "name": me.map(|m| m.name.clone()),
        "id": me.map(|m| m.id.clone()),
        "degraded": me.map(|m| m.degraded),
        "resources": me.map(resources_json),
        "members": counts,
        "heartbeats": heartbeats,
        "counters": counters.iter().map(|(n, v)| (n.clone(), serde_json::Value::from(*v))).collect::<serde_json::Map<String, serde_json::Value>>(),
        "takeovers": takeovers(seats)
            .map(|s| serde_json::json!({ "blade": s.blade, "epoch": s.epoch, "state": s.state, "steps": steps_json(s) }))
            .collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into())
}

/// `status` for people.
pub fn status_text(
    members: &[MemberInfo],
    counters: &[(String, u64)],
    seats: &[SeatInfo],
    color: bool,
) -> String {
    let mut out = String::new();
    if let Some(me) = members.iter().find(|m| m.channels.is_empty()) {
        let [cpu, mem, disk, load] = me.resources.map(percent);
        out.push_str(&format!(
            "{} ({}) {} in zone {}: cpu {cpu}, memory {mem}, disk {disk}, load {load}{}\n",
            me.name,
            me.id,
            me.role,
            me.zone,
            if me.degraded { ", DEGRADED" } else { "" }
        ));
    }
    let counts: Vec<String> = count_states(members)
        .into_iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    out.push_str(&format!("members: {}\n", counts.join(", ")));
    let counted: Vec<String> = counters.iter().map(|(n, v)| format!("{n} {v}")).collect();
    out.push_str(&format!("counters: {}\n", counted.join(", ")));
    for seat in takeovers(seats) {
        out.push_str(&format!(
            "takeover of blade {} (epoch {}, {}):\n",
            seat.blade, seat.epoch, seat.state
        ));
        for t in &seat.steps {
            let after = t.after_ms as f64 / 1000.0;
            out.push_str(&format!("  {:<9}{after:>8.1} s  {}\n", t.step, t.what));
        }
    }
    out.push('\n');
    out.push_str(&channels_table(members, color));
    out
}

/// How long `dcish failover` (and each step of a move) waits for the seat to move.
const FAILOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn protocol_refusal(e: dci_proto::ProtoError) -> ShellError {
    ClientError::Refused {
        code: "protocol".into(),
        message: e.to_string(),
    }
}

/// The seat table, as the local agent knows it.
pub(crate) async fn fetch_seats(client: &mut Client) -> Result<Vec<SeatInfo>, ShellError> {
    let payload = client.request(ControlRequest::Seats.to_payload()).await?;
    seats_from_payload(&payload).map_err(protocol_refusal)
}

/// The member table, as the local agent knows it.
pub(crate) async fn fetch_members(client: &mut Client) -> Result<Vec<MemberInfo>, ShellError> {
    let payload = client.request(ControlRequest::Nodes.to_payload()).await?;
    members_from_payload(&payload).map_err(protocol_refusal)
}

/// Asks the local agent to have `blade`'s holder hand it to `to` (a node name; the best-ranked
/// spare when `None`): the path of `dcish failover` and of every step of `move` and `swap`.
pub(crate) async fn ask_hand_over(
    client: &mut Client,
    blade: &str,
    to: Option<String>,
) -> Result<HandoverInfo, ShellError> {
    let request = ControlRequest::Failover {
        blade: blade.into(),
        to,
    };
    let payload = client.request(request.to_payload()).await?;
    dci_proto::control::handover_from_payload(&payload).map_err(protocol_refusal)
}

/// Polls the seat table until the blade of `h` is held at a higher epoch than when it was
/// handed over (or [`FAILOVER_WAIT`] passes).
pub(crate) async fn wait_moved(
    client: &mut Client,
    h: &HandoverInfo,
) -> Result<SeatInfo, ShellError> {
    let deadline = std::time::Instant::now() + FAILOVER_WAIT;
    loop {
        let seats = fetch_seats(client).await?;
        if let Some(s) = seats
            .into_iter()
            .find(|s| s.blade == h.blade && s.epoch > h.epoch && s.state == "held")
        {
            return Ok(s);
        }
        if std::time::Instant::now() >= deadline {
            return Err(ClientError::Refused {
                code: "not-moved".into(),
                message: format!(
                    "{}, but the seat did not move within {} s",
                    asked(h),
                    FAILOVER_WAIT.as_secs()
                ),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn asked(h: &HandoverInfo) -> String {
    format!(
        "asked {} to hand {} (epoch {}) to {} ({})",
        h.holder, h.blade, h.epoch, h.to_name, h.to
    )
}

/// `dcish failover BLADE`: asks for the hand-over, then waits until the blade is held at a higher
/// epoch.
async fn failover(
    client: &mut Client,
    blade: &str,
    to: Option<String>,
    no_wait: bool,
    json: bool,
) -> Result<String, ShellError> {
    let h = ask_hand_over(client, blade, to).await?;
    if no_wait {
        return Ok(if json {
            serde_json::json!({"blade": h.blade, "holder": h.holder, "epoch": h.epoch, "to": h.to, "to_name": h.to_name}).to_string()
        } else {
            asked(&h)
        });
    }
    let s = wait_moved(client, &h).await?;
    Ok(if json {
        seats_json(std::slice::from_ref(&s))
    } else {
        format!(
            "{}; {} is held by {} ({}) at epoch {}",
            asked(&h),
            s.blade,
            s.holder_name,
            s.holder,
            s.epoch
        )
    })
}

/// `dcish --json seats`: an array of `{blade, holder, holder_name, epoch, state, helpers, steps}`,
/// each helper `{node, name}`, each step of this agent's takeover of the blade
/// `{step, what, after_ms}` (none for a blade it did not take over).
pub fn seats_json(seats: &[SeatInfo]) -> String {
    let rows: Vec<serde_json::Value> = seats
        .iter()
        .map(|s| {
            serde_json::json!({
                "blade": s.blade,
                "holder": s.holder,
                "holder_name": s.holder_name,
                "epoch": s.epoch,
                "state": s.state,
                "helpers": s.helpers.iter().map(|h| serde_json::json!({
                    "node": h.node,
                    "name": h.name,
                })).collect::<Vec<_>>(),
                "steps": steps_json(s),
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

/// `dcish seats`: one row per blade.
pub fn seats_table(seats: &[SeatInfo], color: bool) -> String {
    let rows: Vec<Vec<String>> = seats
        .iter()
        .map(|s| {
            vec![
                s.blade.clone(),
                s.holder_name.clone(),
                s.epoch.to_string(),
                s.state.clone(),
                if s.helpers.is_empty() {
                    "-".into()
                } else {
                    let names: Vec<&str> = s.helpers.iter().map(|h| h.name.as_str()).collect();
                    names.join(",")
                },
                s.holder.clone(),
            ]
        })
        .collect();
    table(
        &["BLADE", "HOLDER", "EPOCH", "STATE", "HELPERS", "HOLDER ID"],
        &rows,
        Some(3),
        color,
    )
}

/// The `notices --json` document.
pub fn notices_json(notices: &[dci_proto::control::NoticeInfo]) -> String {
    let rows: Vec<serde_json::Value> = notices
        .iter()
        .map(|n| {
            let f = &n.notice;
            serde_json::json!({
                "at_ms": f.at_ms, "level": f.level.as_str(), "part": f.part.as_str(), "id": f.id,
                "name": f.name, "address": f.address, "detail": f.detail, "from": n.from,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

fn notices_table(notices: &[dci_proto::control::NoticeInfo], color: bool) -> String {
    let rows: Vec<Vec<String>> = notices
        .iter()
        .map(|n| {
            let f = &n.notice;
            vec![
                format_clock(f.at_ms),
                f.level.as_str().to_owned(),
                format!("{} {}", f.part.as_str(), f.name.as_deref().unwrap_or(&f.id)),
                n.from.clone(),
                f.detail.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &["TIME (UTC)", "LEVEL", "PART", "FROM", "DETAIL"],
        &rows,
        Some(1),
        color,
    );
    out.push_str(&format!("{} notices", notices.len()));
    out
}

/// The `events --json` document.
pub fn events_json(events: &[EventInfo]) -> String {
    let rows: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::json!({ "at_ms": e.at_ms, "name": e.name, "id": e.id, "event": e.kind, "detail": e.detail }))
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

fn events_table(events: &[EventInfo], color: bool) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                format_clock(e.at_ms),
                e.name.clone(),
                e.kind.clone(),
                e.detail.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &["TIME (UTC)", "MEMBER", "EVENT", "DETAIL"],
        &rows,
        Some(2),
        color,
    );
    out.push_str(&format!("{} events", events.len()));
    out
}

/// `HH:MM:SS.mmm` of a Unix time in milliseconds.
fn format_clock(ms: u64) -> String {
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        (day_ms / 60_000) % 60,
        (day_ms / 1000) % 60,
        day_ms % 1000
    )
}

fn format_age(ms: u64) -> String {
    match ms {
        0 => "now".into(),
        1..=59_999 => format!("{:.1}s ago", ms as f64 / 1000.0),
        _ => format!("{}m{}s ago", ms / 60_000, (ms / 1000) % 60),
    }
}

/// The interactive prompt: reads commands line by line until `exit` or end of input; at a
/// terminal with line editing, history and completion ([`prompt`]).
pub async fn repl(cli: &Cli) -> bool {
    if let Some(path) = &cli.file {
        return match std::fs::File::open(path) {
            Ok(f) => commands(cli, Input::Lines(std::io::BufReader::new(f).lines())).await,
            Err(e) => {
                eprintln!("dcish: cannot read {}: {e}", path.display());
                false
            }
        };
    }
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    match terminal
        .then(|| prompt::Prompt::new(&cli.agent))
        .flatten()
        .map(Box::new)
    {
        Some(editor) => {
            commands(
                cli,
                Input::<std::io::Lines<std::io::StdinLock>>::Editor(editor),
            )
            .await
        }
        None => commands(cli, Input::Lines(std::io::stdin().lock().lines())).await,
    }
}

/// Where commands come from.
enum Input<L> {
    /// A script or piped standard input.
    Lines(L),
    /// A person at the terminal.
    Editor(Box<prompt::Prompt>),
}

impl<L: Iterator<Item = std::io::Result<String>>> Input<L> {
    /// The next line, `None` at the end.
    async fn next(&mut self, cli: &Cli, cwd: &str) -> Option<String> {
        match self {
            Input::Lines(lines) => lines.next()?.ok(),
            Input::Editor(editor) => {
                // Completion offers the blades of the mesh as it is now.
                if let Ok(mut client) = Client::connect(&cli.agent).await {
                    if let Ok(members) = exec::members(&mut client).await {
                        editor.set_members(&members);
                    }
                }
                editor.read(cwd)
            }
        }
    }
}

/// Runs commands line by line; false if any failed.
async fn commands<L: Iterator<Item = std::io::Result<String>>>(
    cli: &Cli,
    mut input: Input<L>,
) -> bool {
    let mut ok = true;
    let mut session = files::Session::default();
    loop {
        let Some(line) = input.next(cli, &session.cwd).await else {
            break;
        };
        if line.trim_start().starts_with('#') {
            continue;
        }
        let Some(words) = shlex::split(&line) else {
            eprintln!("dcish: unbalanced quotes in: {}", line.trim());
            ok = false;
            continue;
        };
        match words.first().map(String::as_str) {
            None => continue,
            Some("exit" | "quit") => break,
            Some(_) => {}
        }
        let argv = std::iter::once("dcish").chain(words.iter().map(String::as_str));
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Some(Command::Exec(args)),
                ..
            }) if args.stdin && cli.file.is_none() => {
                eprintln!("dcish: exec --stdin: standard input holds the commands here; use it in one-shot commands or with -f SCRIPT");
                ok = false;
            }
            Ok(Cli {
                command: Some(command),
                json,
                ..
            }) => {
                let one = Cli {
                    agent: cli.agent.clone(),
                    json: json || cli.json,
                    file: None,
                    command: None,
                };
                if let Err(e) = run(&one, &command, &mut session).await {
                    eprintln!("dcish: {e}");
                    ok = false;
                }
            }
            Ok(Cli { command: None, .. }) => {}
            Err(e) => {
                let _ = e.print();
                if e.use_stderr() {
                    ok = false;
                }
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, state: &str) -> MemberInfo {
        MemberInfo {
            id: format!("12D3Koo{name}"),
            name: name.into(),
            state: state.into(),
            role: "active".into(),
            zone: "default".into(),
            incarnation: 1,
            last_heard_ms: 1500,
            version: "0.1.0".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            degraded: false,
            resources: [Some(5), Some(40), None, Some(120)],
            channels: vec![dci_proto::control::ChannelInfo {
                name: "probe".into(),
                enabled: true,
                serial: 9,
                last_ms: Some(300),
                state: "ok".into(),
            }],
            blade: Some((name.into(), 1)),
        }
    }

    #[test]
    fn the_table_aligns_columns_and_counts_the_living() {
        let t = nodes_table(
            &[member("a", "alive"), member("blade-02", "dead")],
            false,
            false,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        let col = lines[0].find("ID").unwrap();
        assert_eq!(lines[1].find("12D3Koo").unwrap(), col);
        assert_eq!(lines[2].find("12D3Koo").unwrap(), col);
        assert!(lines[1].contains("1.5s ago"));
        assert_eq!(lines[3], "2 members, 1 alive");
    }

    #[test]
    fn json_rows_carry_the_documented_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&nodes_json(&[member("a", "left")])).unwrap();
        let row = &v[0];
        for field in [
            "name",
            "id",
            "state",
            "role",
            "zone",
            "addresses",
            "last_heard_ms",
        ] {
            assert!(row.get(field).is_some(), "missing {field}");
        }
        assert_eq!(row["state"], "left");
        assert_eq!(row["resources"]["load"], 120);
        assert_eq!(row["channels"][0]["serial"], 9);
        assert_eq!(
            (row["blade"].as_str(), row["epoch"].as_u64()),
            (Some("a"), Some(1))
        );
    }

    #[test]
    fn seat_json_rows_carry_the_documented_fields() {
        let seat = SeatInfo {
            blade: "b1".into(),
            holder: "12D3KooWs".into(),
            holder_name: "spare".into(),
            epoch: 2,
            state: "held".into(),
            helpers: vec![dci_proto::control::HelperInfo {
                node: "12D3KooWh".into(),
                name: "spare-2".into(),
            }],
            steps: vec![dci_proto::control::StepInfo {
                step: "restore".into(),
                what: "restoring the latest archive into /srv/b1".into(),
                after_ms: 1_500,
            }],
        };
        let seats = std::slice::from_ref(&seat);
        let v: serde_json::Value = serde_json::from_str(&seats_json(seats)).unwrap();
        assert_eq!(v[0]["steps"][0]["step"], "restore");
        assert_eq!(v[0]["steps"][0]["after_ms"], 1_500);
        // `status` shows the takeover's steps, one line each.
        let text = status_text(&[], &[], seats, false);
        assert!(
            text.contains("takeover of blade b1 (epoch 2, held):\n  restore       1.5 s  restoring the latest archive into /srv/b1\n"),
            "{text}"
        );
        let status: serde_json::Value =
            serde_json::from_str(&status_json(&[], &[], seats)).unwrap();
        assert_eq!(status["takeovers"][0]["blade"], "b1");
        assert_eq!(
            status["takeovers"][0]["steps"][0]["what"],
            seat.steps[0].what
        );
        assert_eq!(v[0]["helpers"][0]["name"], "spare-2");
        assert_eq!(v[0]["blade"], "b1");
        assert_eq!(v[0]["holder"], "12D3KooWs");
        assert_eq!(v[0]["holder_name"], "spare");
        assert_eq!(v[0]["epoch"], 2);
        assert_eq!(v[0]["state"], "held");
        assert!(seats_table(&[], false).starts_with("BLADE"));
    }

    #[test]
    fn detail_adds_resources_and_the_heartbeat_status_table() {
        let members = [member("a", "alive")];
        let t = nodes_table(&members, false, true);
        assert!(t.lines().next().unwrap().ends_with("DEGRADED"));
        assert!(t.lines().nth(1).unwrap().contains("5%  "));
        let h = channels_table(&members, true);
        let row = h.lines().nth(2).unwrap();
        assert!(row.starts_with("a ") && row.contains("probe") && row.contains("0.3s ago"));
        assert!(row.contains("\x1b[32mok"), "{row:?}");
    }

    #[test]
    fn clock_times_are_utc_of_day() {
        assert_eq!(format_clock(86_400_000 + 3_723_004), "01:02:03.004");
    }
}
