//! The election simulator: the real election core on a handful of nodes, under a random schedule of
//! faults (crashes with or without restart, partitions, pauses, operator moves) on a lossy, jittery
//! network, checked after every event for split-brain.
//!
//! Membership is a plain heartbeat detector in the driver (silence for `detect_after` means dead),
//! not SWIM: it is deliberately fallible, because safety must not depend on the detector being
//! right. The invariants, checked whenever a node handles an event:
//! - at most one node acts as a blade at any moment (paused nodes included: a pause does not
//!   revoke a lease, so a paused holder still counts);
//! - the epoch a blade is served under never goes back (no write accepted under a stale epoch);
//! - one (blade, epoch) is won by one node only.
//!
//! A run is a pure function of its configuration and seed.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::failover::election::{
    Durable, Election, ElectionConfig, MemberView, Message, Output, Seat, Timer,
};
use crate::timers::TimerQueue;

/// A fault, injected at a node at a point in time.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The node crashes; it restarts with what it persisted after this long, or never.
    Crash {
        /// Time until the restart.
        restart_after: Option<Duration>,
    },
    /// The node stops handling anything for this long, then handles what queued up.
    Pause {
        /// How long.
        lasting: Duration,
    },
    /// These nodes are cut off from the others, both ways, for this long (the node the fault is
    /// injected at does not matter).
    Partition {
        /// The nodes on one side.
        minority: Vec<u32>,
        /// How long.
        lasting: Duration,
    },
    /// An operator asks the node to move `blade` (if it holds it) to node `to`.
    Move {
        /// Index of the blade.
        blade: usize,
        /// The chosen node.
        to: u32,
    },
}

/// One schedule's settings; [`ScheduleConfig::random`] draws them from a seed.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Nodes.
    pub nodes: u32,
    /// Blades; blade `i` starts held by node `i`, the other nodes are spares.
    pub blades: u32,
    /// Seed of the schedule and of every random choice in it.
    pub seed: u64,
    /// Simulated time; faults stop a quarter before the end, so that the mesh can settle.
    pub duration: Duration,
    /// Packet loss probability.
    pub loss: f64,
    /// One-way latency.
    pub latency: Duration,
    /// Extra one-way delay, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Random faults injected, when there is no script.
    pub faults: u32,
    /// Faults at fixed times and nodes, instead of random ones.
    pub script: Option<Vec<(Duration, u32, Fault)>>,
    /// Time between the detector's heartbeats.
    pub heartbeat: Duration,
    /// Silence after which the detector declares a node dead.
    pub detect_after: Duration,
    /// Election settings.
    pub election: ElectionConfig,
    /// Blades every node may hold beyond one: with 1, a node holding a blade may take another
    /// when no node holding none can (an operator's allowance for active nodes with room).
    pub extra: u8,
}

impl ScheduleConfig {
    /// A random schedule: 3 to 9 nodes, 1 to 3 blades, 0 to 20% loss, up to 50 ms jitter, 4 to 12
    /// faults over 60 s.
    pub fn random(seed: u64) -> ScheduleConfig {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = rng.gen_range(3..=9);
        let blades = rng.gen_range(1..=(nodes / 2).clamp(1, 3));
        ScheduleConfig {
            nodes,
            blades,
            seed,
            duration: Duration::from_secs(60),
            loss: [0.0, 0.01, 0.05, 0.2][rng.gen_range(0..4)],
            latency: Duration::from_micros(rng.gen_range(100..2000)),
            jitter: Duration::from_millis(rng.gen_range(0..50)),
            faults: rng.gen_range(4..=12),
            script: None,
            heartbeat: Duration::from_millis(200),
            detect_after: Duration::from_millis(1000),
            election: ElectionConfig::default(),
            // Drawn last, so that the fields above stay what they were for each seed.
            extra: rng.gen_range(0..=1),
        }
    }
}

/// What a schedule, or many, showed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ElectionSummary {
    /// Schedules run.
    pub schedules: u64,
    /// Moments when two nodes acted as one blade.
    pub split_brain: u64,
    /// Moments when a blade was served under an epoch older than one already served.
    pub stale_epoch: u64,
    /// A (blade, epoch) won by two nodes.
    pub epoch_won_twice: u64,
    /// Claims won.
    pub elections: u64,
    /// Claims won by a node that held another blade already (allowed an extra one).
    pub won_beside_another: u64,
    /// Holders crashed while serving, and the blade served again later.
    pub takeovers: u64,
    /// From a serving holder's crash until another node served its blade: median, milliseconds.
    pub takeover_p50_ms: f64,
    /// Same, worst.
    pub takeover_max_ms: f64,
    /// Blades nobody served at the end although a majority was up and a candidate available.
    pub unserved_at_end: u64,
    /// For one schedule: every node that served each blade at some point.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub served_by: Vec<Vec<u32>>,
    /// For one schedule: the node serving each blade at the end (none when nobody does).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub serving_at_end: Vec<Option<u32>>,
    /// Events simulated.
    pub events: u64,
    /// The first schedule that broke an invariant, to replay.
    pub first_failing_seed: Option<u64>,
    /// What it broke, first.
    pub first_violation: Option<String>,
    /// Real time taken.
    pub real_seconds: f64,
}

#[derive(Debug, Clone)]
enum Kind {
    Deliver { from: u32, msg: SimMsg },
    Tick,
    Heartbeat,
    Fault(Fault),
    Restart,
    Heal,
}

#[derive(Debug, Clone)]
enum SimMsg {
    Election(Message<u32>),
    Heartbeat,
}

struct Node {
    core: Election<u32>,
    /// Persisted state, as of the last `Persist`.
    disk: Durable<u32>,
    crashed: bool,
    paused_until: Duration,
    last_heard: Vec<Duration>,
    alive_view: Vec<bool>,
}

struct World {
    cfg: ScheduleConfig,
    rng: StdRng,
    queue: TimerQueue<(u32, Kind)>,
    nodes: Vec<Node>,
    blades: Vec<String>,
    /// Nodes cut off from the others, if a partition is on.
    minority: Option<Vec<u32>>,
    max_served: Vec<u64>,
    won: BTreeMap<(usize, u64), u32>,
    /// Per blade: when its serving holder crashed, until someone serves it again.
    orphaned_at: Vec<Option<Duration>>,
    takeovers_ms: Vec<f64>,
    summary: ElectionSummary,
    now: Duration,
}

impl World {
    fn new(cfg: ScheduleConfig) -> World {
        let blades: Vec<String> = (0..cfg.blades).map(|b| format!("blade-{b}")).collect();
        let mut durable = Durable::default();
        for (i, b) in blades.iter().enumerate() {
            durable.seats.insert(
                b.clone(),
                Seat {
                    holder: i as u32,
                    epoch: 1,
                },
            );
        }
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
        let n = cfg.nodes as usize;
        let nodes = (0..cfg.nodes)
            .map(|i| {
                let mut core = Election::new(
                    i,
                    true,
                    durable.clone(),
                    cfg.election.clone(),
                    rng.gen(),
                    Duration::ZERO,
                );
                core.set_extra(cfg.extra);
                for j in 0..cfg.nodes {
                    core.handle_member(j, live_view(cfg.extra), Duration::ZERO);
                }
                Node {
                    core,
                    disk: durable.clone(),
                    crashed: false,
                    paused_until: Duration::ZERO,
                    last_heard: vec![Duration::ZERO; n],
                    alive_view: vec![true; n],
                }
            })
            .collect();
        World {
            rng,
            queue: TimerQueue::default(),
            nodes,
            max_served: vec![0; blades.len()],
            orphaned_at: vec![None; blades.len()],
            blades,
            minority: None,
            won: BTreeMap::new(),
            takeovers_ms: Vec::new(),
            summary: ElectionSummary {
                schedules: 1,
                served_by: vec![Vec::new(); cfg.blades as usize],
                ..ElectionSummary::default()
            },
            now: Duration::ZERO,
            cfg,
        }
    }

    fn schedule_faults(&mut self) {
        let script = match self.cfg.script.clone() {
            Some(script) => script,
            None => self.random_faults(),
        };
        for (at, node, fault) in script {
            self.queue.push(at, (node, Kind::Fault(fault)));
        }
        for i in 0..self.cfg.nodes {
            let hb = self.cfg.heartbeat.mul_f64(self.rng.gen());
            self.queue.push(hb, (i, Kind::Heartbeat));
        }
    }

    fn random_faults(&mut self) -> Vec<(Duration, u32, Fault)> {
        let n = self.cfg.nodes;
        let end = self.cfg.duration.mul_f64(0.75);
        // A majority must survive the permanent crashes, and a spare must exist for each.
        let mut permanent_left = ((n - 1) / 2).min(n - self.cfg.blades);
        let mut script = Vec::new();
        for _ in 0..self.cfg.faults {
            let at =
                Duration::from_secs(5) + (end - Duration::from_secs(5)).mul_f64(self.rng.gen());
            let node = self.rng.gen_range(0..n);
            let fault = match self.rng.gen_range(0..10) {
                0..=3 => {
                    let permanent = permanent_left > 0 && self.rng.gen_bool(0.3);
                    if permanent {
                        permanent_left -= 1;
                    }
                    let restart = Duration::from_millis(self.rng.gen_range(500..10_000));
                    Fault::Crash {
                        restart_after: (!permanent).then_some(restart),
                    }
                }
                4..=5 => {
                    let size = self.rng.gen_range(1..=n / 2);
                    let mut all: Vec<u32> = (0..n).collect();
                    let mut minority = Vec::new();
                    for _ in 0..size {
                        let i = self.rng.gen_range(0..all.len());
                        minority.push(all.swap_remove(i));
                    }
                    Fault::Partition {
                        minority,
                        lasting: Duration::from_millis(self.rng.gen_range(500..15_000)),
                    }
                }
                6..=7 => Fault::Pause {
                    lasting: Duration::from_millis(self.rng.gen_range(100..5_000)),
                },
                _ => Fault::Move {
                    blade: self.rng.gen_range(0..self.blades.len()),
                    to: self.rng.gen_range(0..n),
                },
            };
            script.push((at, node, fault));
        }
        script
    }

    fn run(mut self) -> (ElectionSummary, Vec<f64>) {
        for i in 0..self.cfg.nodes {
            self.drain(i);
        }
        self.schedule_faults();
        while let Some((at, (node, kind))) = self.queue.pop() {
            if at > self.cfg.duration {
                break;
            }
            self.now = at;
            self.summary.events += 1;
            self.step(node, kind);
        }
        self.finish();
        (self.summary, self.takeovers_ms)
    }

    fn step(&mut self, i: u32, kind: Kind) {
        let now = self.now;
        let idx = i as usize;
        match kind {
            Kind::Fault(Fault::Partition { minority, lasting }) => {
                if self.minority.is_none() {
                    self.minority = Some(minority);
                    self.queue.push(now + lasting, (0, Kind::Heal));
                }
                return;
            }
            Kind::Heal => {
                self.minority = None;
                return;
            }
            Kind::Restart => {
                let node = &mut self.nodes[idx];
                if !node.crashed {
                    return;
                }
                let seed = self.rng.gen();
                node.core = Election::new(
                    i,
                    true,
                    node.disk.clone(),
                    self.cfg.election.clone(),
                    seed,
                    now,
                );
                node.core.set_extra(self.cfg.extra);
                node.crashed = false;
                node.paused_until = Duration::ZERO;
                for j in 0..self.cfg.nodes {
                    node.core.handle_member(j, live_view(self.cfg.extra), now);
                    node.last_heard[j as usize] = now;
                    node.alive_view[j as usize] = true;
                }
                self.drain(i);
                self.queue
                    .push(now + self.cfg.heartbeat, (i, Kind::Heartbeat));
                return;
            }
            _ => {}
        }
        if self.nodes[idx].crashed {
            return;
        }
        // A paused node handles nothing until it resumes, then everything in order.
        if now < self.nodes[idx].paused_until {
            let resume = self.nodes[idx].paused_until;
            self.queue.push(resume, (i, kind));
            return;
        }
        match kind {
            Kind::Deliver { from, msg } => {
                self.nodes[idx].last_heard[from as usize] = now;
                if let SimMsg::Election(m) = msg {
                    self.nodes[idx].core.handle_message(from, m, now);
                }
            }
            Kind::Tick => self.nodes[idx].core.handle_tick(now),
            Kind::Heartbeat => {
                self.queue
                    .push(now + self.cfg.heartbeat, (i, Kind::Heartbeat));
                for j in 0..self.cfg.nodes {
                    if j != i {
                        self.send(i, j, SimMsg::Heartbeat);
                    }
                }
                self.detect(i);
            }
            Kind::Fault(Fault::Crash { restart_after }) => {
                for b in 0..self.blades.len() {
                    if self.nodes[idx].core.serving(&self.blades[b], now).is_some() {
                        self.orphaned_at[b].get_or_insert(now);
                    }
                }
                self.nodes[idx].crashed = true;
                if let Some(after) = restart_after {
                    self.queue.push(now + after, (i, Kind::Restart));
                }
                return;
            }
            Kind::Fault(Fault::Pause { lasting }) => {
                self.nodes[idx].paused_until = now + lasting;
                return;
            }
            Kind::Fault(Fault::Move { blade, to }) => {
                let name = self.blades[blade].clone();
                self.nodes[idx].core.release(&name, to, now);
            }
            Kind::Restart | Kind::Fault(Fault::Partition { .. }) | Kind::Heal => {}
        }
        self.drain(i);
        self.check(i);
    }

    /// The heartbeat detector: silence for `detect_after` is death.
    fn detect(&mut self, i: u32) {
        let now = self.now;
        let node = &mut self.nodes[i as usize];
        for j in 0..self.cfg.nodes {
            if j == i {
                continue;
            }
            let alive = now.saturating_sub(node.last_heard[j as usize]) < self.cfg.detect_after;
            if alive != node.alive_view[j as usize] {
                node.alive_view[j as usize] = alive;
                node.core.handle_member(
                    j,
                    MemberView {
                        alive,
                        candidate: true,
                        extra: self.cfg.extra,
                        ..MemberView::default()
                    },
                    now,
                );
            }
        }
    }

    fn cut(&self, a: u32, b: u32) -> bool {
        self.minority
            .as_ref()
            .is_some_and(|m| m.contains(&a) != m.contains(&b))
    }

    fn send(&mut self, from: u32, to: u32, msg: SimMsg) {
        if self.rng.gen::<f64>() < self.cfg.loss || self.cut(from, to) {
            return;
        }
        let at = self.now + self.cfg.latency + self.cfg.jitter.mul_f64(self.rng.gen());
        self.queue.push(at, (to, Kind::Deliver { from, msg }));
    }

    fn drain(&mut self, i: u32) {
        let outputs: Vec<Output<u32>> = self.nodes[i as usize].core.drain_outputs().collect();
        for out in outputs {
            match out {
                Output::Send(to, m) => self.send(i, to, SimMsg::Election(m)),
                Output::SetTimer(at, Timer::Tick) => self.queue.push(at, (i, Kind::Tick)),
                Output::Persist => {
                    let node = &mut self.nodes[i as usize];
                    node.disk = node.core.durable().clone();
                }
                Output::Acquired { blade, epoch } => {
                    self.summary.elections += 1;
                    let seats = self.nodes[i as usize].core.seats();
                    if seats.iter().any(|(b, s)| s.holder == i && *b != blade) {
                        self.summary.won_beside_another += 1;
                    }
                    let b = self.blade_index(&blade);
                    if let Some(other) = self.won.insert((b, epoch), i) {
                        if other != i {
                            self.violation(format!("{blade} epoch {epoch} won by {other} and {i}"));
                            self.summary.epoch_won_twice += 1;
                        }
                    }
                }
                Output::Lost { .. } | Output::SeatChanged { .. } => {}
            }
        }
    }

    fn blade_index(&self, name: &str) -> usize {
        self.blades.iter().position(|b| b == name).unwrap_or(0)
    }

    /// After node `i` handled an event: does it act as a blade that someone else acts as too, or
    /// under an epoch older than one already served?
    fn check(&mut self, i: u32) {
        let now = self.now;
        for b in 0..self.blades.len() {
            let Some(epoch) = self.nodes[i as usize].core.serving(&self.blades[b], now) else {
                continue;
            };
            if let Some(crashed) = self.orphaned_at[b].take() {
                self.takeovers_ms
                    .push(now.saturating_sub(crashed).as_secs_f64() * 1000.0);
            }
            if epoch < self.max_served[b] {
                self.summary.stale_epoch += 1;
                self.violation(format!(
                    "at {now:?} node {i} serves {} at epoch {epoch} after epoch {} was served",
                    self.blades[b], self.max_served[b]
                ));
            }
            self.max_served[b] = self.max_served[b].max(epoch);
            if !self.summary.served_by[b].contains(&i) {
                self.summary.served_by[b].push(i);
            }
            let others: Vec<(usize, u64)> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(j, n)| *j as u32 != i && !n.crashed)
                .filter_map(|(j, n)| Some((j, n.core.serving(&self.blades[b], now)?)))
                .collect();
            for (j, e) in others {
                self.summary.split_brain += 1;
                let msg = format!(
                    "at {now:?} nodes {i} (epoch {epoch}) and {j} (epoch {e}) both serve {}",
                    self.blades[b]
                );
                self.violation(msg);
            }
        }
    }

    fn violation(&mut self, what: String) {
        if self.summary.first_violation.is_none() {
            self.summary.first_failing_seed = Some(self.cfg.seed);
            self.summary.first_violation = Some(what);
        }
    }

    fn finish(&mut self) {
        let now = self.now;
        let live = self.nodes.iter().filter(|n| !n.crashed).count();
        let majority = live > self.nodes.len() / 2;
        for b in 0..self.blades.len() {
            let server = self
                .nodes
                .iter()
                .position(|n| !n.crashed && n.core.serving(&self.blades[b], now).is_some());
            self.summary.serving_at_end.push(server.map(|i| i as u32));
            if majority && server.is_none() {
                self.summary.unserved_at_end += 1;
            }
        }
        let mut t = std::mem::take(&mut self.takeovers_ms);
        t.sort_by(f64::total_cmp);
        self.summary.takeovers = t.len() as u64;
        self.summary.takeover_p50_ms = t.get(t.len() / 2).copied().unwrap_or(0.0);
        self.summary.takeover_max_ms = t.last().copied().unwrap_or(0.0);
        self.takeovers_ms = t;
    }
}

fn live_view(extra: u8) -> MemberView {
    MemberView {
        alive: true,
        candidate: true,
        extra,
        ..MemberView::default()
    }
}

/// Runs one schedule; returns its figures and each takeover's time in milliseconds.
pub fn run_schedule(cfg: ScheduleConfig) -> (ElectionSummary, Vec<f64>) {
    World::new(cfg).run()
}

/// Which random schedules [`run_many`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mesh {
    /// [`ScheduleConfig::random`]'s.
    Random,
    /// The same, but every node holds a blade and may take one more: no spare at all, so every
    /// takeover is by a node that holds a blade already.
    NoSpare,
}

/// Runs `count` random schedules of `mesh`, seeds `first_seed..`, and adds their figures up.
pub fn run_many(first_seed: u64, count: u64, mesh: Mesh) -> ElectionSummary {
    let started = std::time::Instant::now();
    let mut total = ElectionSummary::default();
    let mut takeovers = Vec::new();
    for seed in first_seed..first_seed + count {
        let mut cfg = ScheduleConfig::random(seed);
        if mesh == Mesh::NoSpare {
            cfg.blades = cfg.nodes;
            cfg.extra = 1;
        }
        let (s, t) = run_schedule(cfg);
        total.schedules += 1;
        total.split_brain += s.split_brain;
        total.stale_epoch += s.stale_epoch;
        total.epoch_won_twice += s.epoch_won_twice;
        total.elections += s.elections;
        total.won_beside_another += s.won_beside_another;
        total.unserved_at_end += s.unserved_at_end;
        total.events += s.events;
        if total.first_violation.is_none() && s.first_violation.is_some() {
            total.first_failing_seed = s.first_failing_seed;
            total.first_violation = s.first_violation;
        }
        takeovers.extend(t);
    }
    takeovers.sort_by(f64::total_cmp);
    total.takeovers = takeovers.len() as u64;
    total.takeover_p50_ms = takeovers.get(takeovers.len() / 2).copied().unwrap_or(0.0);
    total.takeover_max_ms = takeovers.last().copied().unwrap_or(0.0);
    total.real_seconds = started.elapsed().as_secs_f64();
    total
}
