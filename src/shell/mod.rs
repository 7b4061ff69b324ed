//! `dcish`, the operator's shell: one-shot commands, or an interactive prompt when none is given.
//!
//! Every command is an envelope to the local agent's control socket ([`client`]); output is a table
//! on a terminal and JSON with `--json`, so scripts never parse tables.

pub mod client;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use dci_proto::control::{members_from_payload, ControlRequest, MemberInfo};

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
    /// The command; none opens an interactive prompt.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The shell's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the members of the mesh: name, id, state, role, zone, addresses, last heard.
    Nodes,
}

/// A command's failure: one line for the user.
pub type ShellError = ClientError;

/// Runs one command and prints its output.
pub async fn run(cli: &Cli, command: &Command) -> Result<(), ShellError> {
    let mut client = Client::connect(&cli.agent).await?;
    match command {
        Command::Nodes => {
            let payload = client.request(ControlRequest::Nodes.to_payload()).await?;
            let members = members_from_payload(&payload).map_err(|e| ClientError::Protocol {
                path: cli.agent.clone(),
                reason: e.to_string(),
            })?;
            let mut out = std::io::stdout().lock();
            let text = if cli.json {
                nodes_json(&members)
            } else {
                nodes_table(&members, color_enabled())
            };
            let _ = writeln!(out, "{text}");
        }
    }
    Ok(())
}

fn color_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
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
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

/// The `nodes` table, aligned, with states coloured when `color`.
pub fn nodes_table(members: &[MemberInfo], color: bool) -> String {
    let header = [
        "NAME",
        "ID",
        "STATE",
        "ROLE",
        "ZONE",
        "ADDRESSES",
        "LAST HEARD",
    ];
    let rows: Vec<[String; 7]> = members
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.id.clone(),
                m.state.clone(),
                m.role.clone(),
                m.zone.clone(),
                m.addrs.join(","),
                format_age(m.last_heard_ms),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String, state_color: Option<&str>| {
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            match (i, state_color) {
                (2, Some(code)) => out.push_str(&format!("\x1b[{code}m{cell}\x1b[0m")),
                _ => out.push_str(cell),
            }
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    };
    line(&header.map(String::from), &mut out, None);
    for row in &rows {
        let code = color.then(|| match row[2].as_str() {
            "alive" => "32",
            "suspect" => "33",
            "dead" => "31",
            _ => "2",
        });
        line(row, &mut out, code);
    }
    let alive = members.iter().filter(|m| m.state == "alive").count();
    out.push_str(&format!("{} members, {alive} alive", members.len()));
    out
}

fn format_age(ms: u64) -> String {
    match ms {
        0 => "now".into(),
        1..=59_999 => format!("{:.1}s ago", ms as f64 / 1000.0),
        _ => format!("{}m{}s ago", ms / 60_000, (ms / 1000) % 60),
    }
}

/// The interactive prompt: reads commands line by line until `exit` or end of input.
pub async fn repl(cli: &Cli) -> bool {
    let interactive = std::io::stdin().is_terminal();
    let mut ok = true;
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            print!("dcish> ");
            let _ = std::io::stdout().flush();
        }
        let Some(Ok(line)) = lines.next() else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            None => continue,
            Some("exit" | "quit") => break,
            Some(_) => {}
        }
        let argv = std::iter::once("dcish").chain(words.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Some(command),
                json,
                ..
            }) => {
                let one = Cli {
                    agent: cli.agent.clone(),
                    json: json || cli.json,
                    command: None,
                };
                if let Err(e) = run(&one, &command).await {
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
        }
    }

    #[test]
    fn the_table_aligns_columns_and_counts_the_living() {
        let t = nodes_table(&[member("a", "alive"), member("blade-02", "dead")], false);
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
    }
}
