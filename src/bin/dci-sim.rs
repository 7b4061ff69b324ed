//! `dci-sim`: the deterministic simulator, from the command line.
//!
//! `dci-sim membership --nodes N --seed S --loss P --minutes M [--kill K]` runs the real membership
//! core on N simulated nodes and prints a JSON summary. Faults: `--stall-ms`, `--slow-ms`,
//! `--restart-after-s`, `--partition N --partition-at-s S --partition-for-s S`. The same arguments
//! give the same run.
//!
//! `dci-sim election --schedules N --seed S` runs the real election core under N random fault
//! schedules and exits non-zero if any of them let two nodes act as one blade.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dci::sim::membership::{run, Partition, SimConfig};

#[derive(Debug, Parser)]
#[command(name = "dci-sim", version, about = "The DCI deterministic simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// SWIM + Lifeguard membership on a simulated network; prints a JSON summary.
    Membership {
        /// Nodes at the start.
        #[arg(long, default_value_t = 100)]
        nodes: u32,
        /// Seed of every random choice (replay a run with the same seed).
        #[arg(long, env = "DCI_SIM_SEED", default_value_t = 1)]
        seed: u64,
        /// Packet loss probability, 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Simulated minutes.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Nodes to crash during the run.
        #[arg(long, default_value_t = 0)]
        kill: u32,
        /// Nodes that join during the run.
        #[arg(long, default_value_t = 0)]
        joins: u32,
        /// One-way latency, milliseconds.
        #[arg(long, default_value_t = 0.25)]
        latency_ms: f64,
        /// Extra one-way delay, uniform up to this, milliseconds.
        #[arg(long, default_value_t = 0.0)]
        jitter_ms: f64,
        /// Stall node 1 this long once a minute, milliseconds.
        #[arg(long)]
        stall_ms: Option<u64>,
        /// Node 2 handles every packet this late, milliseconds.
        #[arg(long)]
        slow_ms: Option<u64>,
        /// Crashed nodes restart this many seconds after their crash, and join again.
        #[arg(long)]
        restart_after_s: Option<f64>,
        /// Cut this many nodes (the last ones) off from the others...
        #[arg(long)]
        partition: Option<u32>,
        /// ...starting this many seconds into the run...
        #[arg(long, default_value_t = 60.0)]
        partition_at_s: f64,
        /// ...for this many seconds, then heal.
        #[arg(long, default_value_t = 60.0)]
        partition_for_s: f64,
        /// Gossip interval, milliseconds.
        #[arg(long)]
        gossip_interval_ms: Option<u64>,
        /// Gossip fan-out.
        #[arg(long)]
        gossip_fanout: Option<usize>,
        /// Probe interval, milliseconds.
        #[arg(long)]
        probe_interval_ms: Option<u64>,
        /// Direct probe timeout, milliseconds (must be shorter than the interval).
        #[arg(long)]
        probe_timeout_ms: Option<u64>,
        /// Minimum suspicion timeout in probe intervals per log10 of the mesh size.
        #[arg(long)]
        suspicion_mult: Option<u32>,
        /// The suspicion timeout starts at this many times its minimum.
        #[arg(long)]
        suspicion_max_mult: Option<u32>,
        /// Confirmations that bring the suspicion timeout to its minimum.
        #[arg(long)]
        confirmations: Option<u32>,
    },
    /// Blade elections under random fault schedules (crashes, restarts, partitions, pauses,
    /// loss, operator moves), checked for split-brain after every event; prints a JSON summary.
    Election {
        /// Schedules to run; schedule k uses seed `seed + k`.
        #[arg(long, default_value_t = 1000)]
        schedules: u64,
        /// Seed of the first schedule (replay a failing one with `--schedules 1`).
        #[arg(long, env = "DCI_SIM_SEED", default_value_t = 1)]
        seed: u64,
        /// Every node holds a blade and may take one more: no spare, so every takeover is by a
        /// node that holds a blade already.
        #[arg(long)]
        no_spare: bool,
    },
}

fn print_json(summary: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string_pretty(summary) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dci-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Election {
            schedules,
            seed,
            no_spare,
        } => {
            eprintln!("dci-sim: replay with DCI_SIM_SEED={seed}");
            use dci::sim::election::{run_many, Mesh};
            let mesh = if no_spare {
                Mesh::NoSpare
            } else {
                Mesh::Random
            };
            let summary = run_many(seed, schedules, mesh);
            let broken = summary.first_violation.is_some();
            let code = print_json(&summary);
            if broken {
                return ExitCode::FAILURE;
            }
            code
        }
        membership @ Command::Membership { .. } => run_membership(membership),
    }
}

fn run_membership(command: Command) -> ExitCode {
    let Command::Membership {
        nodes,
        seed,
        loss,
        minutes,
        kill,
        joins,
        latency_ms,
        jitter_ms,
        stall_ms,
        slow_ms,
        gossip_interval_ms,
        gossip_fanout,
        probe_interval_ms,
        probe_timeout_ms,
        suspicion_mult,
        suspicion_max_mult,
        confirmations,
        restart_after_s,
        partition,
        partition_at_s,
        partition_for_s,
    } = command
    else {
        return ExitCode::from(2);
    };
    let bad = |what: &str| {
        eprintln!("dci-sim: {what}");
        ExitCode::from(2)
    };
    if nodes < 2 {
        return bad("--nodes must be at least 2");
    }
    if !(0.0..1.0).contains(&loss) {
        return bad("--loss must be in [0, 1)");
    }
    if !(minutes > 0.0 && minutes.is_finite()) || latency_ms < 0.0 || jitter_ms < 0.0 {
        return bad("--minutes must be positive; latency and jitter not negative");
    }
    if kill >= nodes.saturating_sub(3) && kill > 0 {
        return bad("--kill must leave at least 3 nodes alive");
    }
    if partition.is_some_and(|p| p == 0 || p >= nodes) {
        return bad("--partition must cut off at least 1 node and leave at least 1");
    }
    let seconds_ok = |s: f64| s >= 0.0 && s.is_finite();
    if !seconds_ok(partition_at_s)
        || !seconds_ok(partition_for_s)
        || !restart_after_s.is_none_or(seconds_ok)
    {
        return bad("partition and restart times must be finite and not negative");
    }
    let mut cfg = SimConfig::new(nodes, seed);
    cfg.restart_after = restart_after_s.map(Duration::from_secs_f64);
    cfg.partition = partition.map(|size| Partition {
        size,
        at: Duration::from_secs_f64(partition_at_s),
        lasting: Duration::from_secs_f64(partition_for_s),
    });
    cfg.loss = loss;
    cfg.duration = Duration::from_secs_f64(minutes * 60.0);
    cfg.kills = kill;
    cfg.joins = joins;
    cfg.latency = Duration::from_secs_f64(latency_ms / 1000.0);
    cfg.jitter = Duration::from_secs_f64(jitter_ms / 1000.0);
    cfg.stall = stall_ms.map(Duration::from_millis);
    cfg.slow_by = slow_ms.map(Duration::from_millis);
    if let Some(ms) = gossip_interval_ms {
        cfg.swim.gossip_interval = Duration::from_millis(ms.max(1));
    }
    if let Some(f) = gossip_fanout {
        cfg.swim.gossip_fanout = f.max(1);
    }
    if let Some(ms) = probe_interval_ms {
        cfg.swim.probe_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = probe_timeout_ms {
        cfg.swim.probe_timeout = Duration::from_millis(ms);
    }
    if cfg.swim.probe_timeout >= cfg.swim.probe_interval || cfg.swim.probe_timeout.is_zero() {
        return bad("the probe timeout must be positive and shorter than the probe interval");
    }
    if let Some(m) = suspicion_mult {
        cfg.swim.suspicion_mult = m.max(1);
    }
    if let Some(m) = suspicion_max_mult {
        cfg.swim.suspicion_max_mult = m.max(1);
    }
    if let Some(k) = confirmations {
        cfg.swim.expected_confirmations = k.max(1);
    }
    eprintln!("dci-sim: replay with DCI_SIM_SEED={seed}");
    print_json(&run(cfg))
}
