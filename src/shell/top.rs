//! `dcish top [SET]`: the blades' resources at a glance, redrawn every interval like `top`.
//!
//! The figures travel with membership (each member's metadata carries CPU, memory, disk, load
//! and the degraded flag), so one member-table request to the local agent per refresh is all it
//! costs: no blade is asked anything. On a terminal the screen is cleared and redrawn until `q`
//! or Ctrl-C; otherwise (or with `--once` or `--json`) one table is printed.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Args, ValueEnum};
use dci_proto::control::MemberInfo;

use super::client::{Client, ClientError};
use super::exec::{members, resolve};
use super::msg::usage;
use super::{percent, table};

/// `dcish top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The blades (a node set) [default: @all].
    pub set: Option<String>,
    /// Leave these out (a node set).
    #[arg(short = 'x', long)]
    pub exclude: Option<String>,
    /// Seconds between refreshes (0.2 to 3600).
    #[arg(short, long, default_value_t = 2.0)]
    pub interval: f64,
    /// Print one table and exit (the default when stdout is not a terminal).
    #[arg(long)]
    pub once: bool,
    /// The column to sort by, highest first (`name` sorts alphabetically).
    #[arg(long, value_enum, default_value_t = SortKey::Cpu)]
    pub sort: SortKey,
}

/// What `top` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    /// CPU use.
    Cpu,
    /// Memory use.
    Mem,
    /// Disk use.
    Disk,
    /// Load per core.
    Load,
    /// The member's name, alphabetically.
    Name,
}

/// Runs `dcish top`; `None` when it drew the live view itself.
pub async fn top(
    client: &mut Client,
    args: &TopArgs,
    json: bool,
    color: bool,
) -> Result<Option<String>, ClientError> {
    if !(0.2..=3600.0).contains(&args.interval) {
        return Err(usage(format!(
            "--interval must be between 0.2 and 3600 seconds, not {}",
            args.interval
        )));
    }
    let rows = snapshot(client, args).await?;
    if json {
        return Ok(Some(top_json(&rows)));
    }
    if args.once || !std::io::stdout().is_terminal() {
        return Ok(Some(top_table(&rows, color)));
    }
    live(client, args, rows, color).await.map(|()| None)
}

/// The selected members, sorted.
async fn snapshot(client: &mut Client, args: &TopArgs) -> Result<Vec<MemberInfo>, ClientError> {
    let all = members(client).await?;
    let names = resolve(
        &all,
        args.set.as_deref().unwrap_or("@all"),
        args.exclude.as_deref(),
    )?;
    let mut rows: Vec<MemberInfo> = all
        .into_iter()
        .filter(|m| m.state != "left" && names.contains(&m.name))
        .collect();
    sort(&mut rows, args.sort);
    Ok(rows)
}

/// Highest first, unknown figures last, ties by name.
fn sort(rows: &mut [MemberInfo], key: SortKey) {
    let column = match key {
        SortKey::Cpu => 0,
        SortKey::Mem => 1,
        SortKey::Disk => 2,
        SortKey::Load => 3,
        SortKey::Name => {
            rows.sort_by(|a, b| a.name.cmp(&b.name));
            return;
        }
    };
    rows.sort_by(|a, b| {
        b.resources[column]
            .cmp(&a.resources[column])
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// Redraws until `q` or Ctrl-C.
async fn live(
    client: &mut Client,
    args: &TopArgs,
    mut rows: Vec<MemberInfo>,
    color: bool,
) -> Result<(), ClientError> {
    let _keys = KeyMode::enter();
    let (quit_tx, mut quit) = tokio::sync::mpsc::channel::<()>(1);
    // Set when `top` returns, so that the key reader never steals a key from the prompt after.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_reader = StopOnDrop(std::sync::Arc::clone(&done));
    if std::io::stdin().is_terminal() {
        std::thread::spawn(move || read_keys(&done, &quit_tx));
    }
    let interval = Duration::from_secs_f64(args.interval);
    loop {
        let mut out = std::io::stdout().lock();
        // Home, clear, then the table: one write so the screen never shows half a frame.
        let frame = format!(
            "\x1b[H\x1b[2J{}\n(every {}s; q or Ctrl-C to leave)\n",
            top_table(&rows, color),
            args.interval
        );
        let _ = out.write_all(frame.as_bytes()).and_then(|()| out.flush());
        drop(out);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = quit.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        rows = snapshot(client, args).await?;
    }
}

/// Sends on `quit` at `q`, polling stdin so that it sees `done` within 100 ms.
fn read_keys(done: &std::sync::atomic::AtomicBool, quit: &tokio::sync::mpsc::Sender<()>) {
    use std::sync::atomic::Ordering;
    while !done.load(Ordering::Relaxed) {
        let mut fd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd owned here.
        let ready = unsafe { libc::poll(&mut fd, 1, 100) };
        if ready < 0 || (ready > 0 && fd.revents & libc::POLLIN == 0) {
            return;
        }
        if ready > 0 {
            // One byte straight from the fd: a buffered reader would take keys meant for the
            // prompt that follows.
            let mut byte = 0u8;
            // SAFETY: reads one byte into a byte owned here.
            if unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) } != 1 {
                return;
            }
            if byte == b'q' || byte == b'Q' {
                let _ = quit.blocking_send(());
                return;
            }
        }
    }
}

struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The terminal without line buffering or echo while `top` runs (so `q` acts at once), restored
/// when dropped; Ctrl-C still raises SIGINT.
struct KeyMode(Option<libc::termios>);

impl KeyMode {
    fn enter() -> KeyMode {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios owned here; a failure leaves the
        // terminal as it was.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return KeyMode(None);
            }
            let mut raw = saved;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO);
            raw.c_cc[libc::VMIN] = 1;
            raw.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return KeyMode(None);
            }
            KeyMode(Some(saved))
        }
    }
}

impl Drop for KeyMode {
    fn drop(&mut self) {
        if let Some(saved) = self.0 {
            // SAFETY: restores the attributes read in `enter`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &saved);
            }
        }
    }
}

/// The `top --json` document: one object per blade, figures in percent (null when unknown).
pub fn top_json(rows: &[MemberInfo]) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|m| {
            let [cpu, memory, disk, load] = m.resources;
            serde_json::json!({
                "name": m.name,
                "blade": m.blade.as_ref().map(|(b, _)| b.clone()),
                "epoch": m.blade.as_ref().map(|(_, e)| *e),
                "role": m.role,
                "state": m.state,
                "degraded": m.degraded,
                "cpu": cpu,
                "memory": memory,
                "disk": disk,
                "load": load,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

/// The `top` table, with states coloured when `color`.
pub fn top_table(rows: &[MemberInfo], color: bool) -> String {
    let header = [
        "NAME", "BLADE", "EPOCH", "ROLE", "STATE", "CPU", "MEM", "DISK", "LOAD", "DEGRADED",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            let (blade, epoch) = m.blade.as_ref().map_or(("-".into(), "-".into()), |(b, e)| {
                (b.clone(), e.to_string())
            });
            let mut row = vec![
                m.name.clone(),
                blade,
                epoch,
                m.role.clone(),
                m.state.clone(),
            ];
            row.extend(m.resources.map(percent));
            row.push(if m.degraded { "yes" } else { "no" }.into());
            row
        })
        .collect();
    let mut out = table(&header, &cells, Some(4), color);
    let degraded = rows.iter().filter(|m| m.degraded).count();
    out.push_str(&format!("{} blades, {degraded} degraded", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, cpu: Option<u8>) -> MemberInfo {
        MemberInfo {
            id: format!("id-{name}"),
            name: name.into(),
            state: "alive".into(),
            role: "active".into(),
            zone: "default".into(),
            incarnation: 0,
            last_heard_ms: 0,
            version: "0".into(),
            addrs: vec![],
            degraded: name == "b2",
            resources: [cpu, Some(10), None, Some(120)],
            channels: vec![],
            blade: Some((name.into(), 3)),
        }
    }

    #[test]
    fn sorts_by_cpu_highest_first_unknown_last() {
        let mut rows = vec![
            member("b1", Some(5)),
            member("b2", None),
            member("b3", Some(50)),
            member("b4", Some(5)),
        ];
        sort(&mut rows, SortKey::Cpu);
        let names: Vec<&str> = rows.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["b3", "b1", "b4", "b2"]);
        sort(&mut rows, SortKey::Name);
        assert_eq!(rows[0].name, "b1");
    }

    #[test]
    fn table_and_json_show_every_figure() {
        let rows = vec![member("b1", Some(7)), member("b2", None)];
        let text = top_table(&rows, false);
        let first: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            first,
            ["b1", "b1", "3", "active", "alive", "7%", "10%", "-", "120%", "no"]
        );
        assert!(text.ends_with("2 blades, 1 degraded"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&top_json(&rows)).unwrap();
        assert_eq!(json[0]["cpu"], 7);
        assert_eq!(json[1]["cpu"], serde_json::Value::Null);
        assert_eq!(json[1]["degraded"], true);
        assert_eq!(json[0]["epoch"], 3);
    }
}
