//! The membership simulator: many instances of the real SWIM core over a simulated network.
//!
//! Virtual time only: events (packet deliveries and timers) sit in one priority queue ordered by
//! time, then by insertion, so a run is a pure function of its [`SimConfig`] and seed. Links lose each
//! packet with probability `loss` and delay it by `latency` plus uniform jitter. Nodes can crash, stall
//! (stop processing for a while, then handle everything queued meanwhile), be CPU-starved (handle
//! every packet `slow_by` late), or restart (come back after a crash with a higher incarnation and
//! join again). A partition cuts the last nodes off from the others for a while, then heals.
//!
//! At the end the run checks convergence: every pair of live nodes that can reach each other must
//! know each other and not hold each other dead (`stuck_dead`).

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::membership::swim::{
    Liveness, Message, Output, Packet, Swim, SwimConfig, Timer, Trusting, Update,
};
use crate::membership::table::prefetch;
use crate::timers::TimerQueue;

type Node = Swim<u32, (), Trusting>;
type SimPacket = Packet<u32, (), ()>;

/// Piggybacked updates of the next packet whose member entries are prefetched.
const PREFETCH_UPDATES: usize = 8;

/// Bytes of a libp2p peer id on the wire.
const ID_BYTES: usize = 38;
/// An ed25519 signature.
const SIG_BYTES: usize = 64;
/// Member metadata (name, role, zone, version, addresses, resource figures), typical size.
const META_BYTES: usize = 96;
/// Per-packet overhead: length prefix, yamux frame, noise tag, stream negotiation.
const PACKET_OVERHEAD: usize = 64;

/// The size a packet has on the wire in the agent's encoding (postcard with the fields above).
pub fn wire_size(p: &SimPacket) -> usize {
    let message = match &p.message {
        Message::Ping { .. } | Message::Ack { .. } | Message::Nack { .. } => 5,
        Message::PingReq { .. } => 5 + ID_BYTES,
        Message::Gossip => 1,
        Message::PushPull { state, .. } => 3 + state.iter().map(update_size).sum::<usize>(),
    };
    PACKET_OVERHEAD + message + p.updates.iter().map(update_size).sum::<usize>()
}

fn update_size(u: &Update<u32, (), ()>) -> usize {
    match u {
        Update::Alive { .. } | Update::Left { .. } => 1 + ID_BYTES + 8 + META_BYTES + SIG_BYTES,
        Update::Suspect { .. } | Update::Dead { .. } => 1 + ID_BYTES + 8 + ID_BYTES,
    }
}

/// One simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes at the start (all knowing each other).
    pub nodes: u32,
    /// The seed of everything random.
    pub seed: u64,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// One-way latency.
    pub latency: Duration,
    /// Extra one-way delay, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Simulated duration.
    pub duration: Duration,
    /// Nodes crashed during the run, at evenly spread times in its middle half.
    pub kills: u32,
    /// Nodes that join during the run (contacting one random member).
    pub joins: u32,
    /// Stall node 1 for this long once per minute (it processes nothing meanwhile).
    pub stall: Option<Duration>,
    /// Node 2 handles every packet this much late (CPU-starved).
    pub slow_by: Option<Duration>,
    /// Crashed nodes that come back, this long after their crash, with a higher incarnation.
    pub restart_after: Option<Duration>,
    /// Cut the last `size` nodes off from the rest, both ways, from `at` for `lasting`.
    pub partition: Option<Partition>,
    /// Protocol settings.
    pub swim: SwimConfig,
}

impl SimConfig {
    /// LAN defaults for `nodes` and `seed`: 0.25 ms latency, no loss, 10 simulated minutes.
    pub fn new(nodes: u32, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            loss: 0.0,
            latency: Duration::from_micros(250),
            jitter: Duration::ZERO,
            duration: Duration::from_secs(600),
            kills: 0,
            joins: 0,
            stall: None,
            slow_by: None,
            restart_after: None,
            partition: None,
            swim: SwimConfig::default(),
        }
    }
}

/// A partition of the simulated network.
#[derive(Debug, Clone, Copy)]
pub struct Partition {
    /// Nodes on the minority side: the last `size` of the initial nodes.
    pub size: u32,
    /// When it starts.
    pub at: Duration,
    /// How long it lasts.
    pub lasting: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Nodes at the start.
    pub nodes: u32,
    /// The seed (replay with the same config and seed).
    pub seed: u64,
    /// Packet loss.
    pub loss: f64,
    /// Simulated minutes.
    pub minutes: f64,
    /// Crashes injected.
    pub kills: u32,
    /// Crashed nodes that every survivor declared dead.
    pub detected: u32,
    /// From a crash until every survivor declared it dead: median, milliseconds.
    pub detect_p50_ms: f64,
    /// Same, 99th percentile.
    pub detect_p99_ms: f64,
    /// Live nodes that anyone declared dead (deaths across a partition's cut are not counted:
    /// the two sides cannot reach each other).
    pub false_dead: u32,
    /// At the end, ordered pairs of live nodes where the first holds the second dead or does not
    /// know it: a mesh that did not converge. Must be 0 when the run leaves time to heal.
    pub stuck_dead: u32,
    /// Crashed nodes that restarted.
    pub restarts: u32,
    /// From a partition's healing until every live node again holds every other alive
    /// (checked each simulated second), milliseconds; `null` without a partition or if it never
    /// converged.
    pub heal_ms: Option<f64>,
    /// From the first declaration of a death (or the start of a join) until 99.99% of live nodes
    /// know it, worst case, milliseconds.
    pub disseminate_p9999_ms: f64,
    /// Joins injected and how many reached 99.99% of nodes.
    pub joins_disseminated: u32,
    /// Bytes sent per node per simulated second (estimated wire sizes).
    pub bytes_per_node_per_s: f64,
    /// Events processed.
    pub events: u64,
    /// Wall-clock seconds the run took.
    pub real_seconds: f64,
}

enum Kind {
    Deliver {
        from: u32,
        packet: SimPacket,
    },
    Timer(Timer<u32>),
    Crash,
    Join,
    Restart,
    /// After a partition heals: has the mesh converged yet?
    Check,
}

/// One event as the loop handles it.
struct Event {
    at: Duration,
    node: u32,
    kind: Kind,
}

/// Per-subject tracking of who declared what when.
#[derive(Default)]
struct Spread {
    /// Observers that hold the subject dead (or, for joins, know it), with when they first did.
    reached: HashMap<u32, Duration>,
    first: Option<Duration>,
    p9999_at: Option<Duration>,
}

struct World {
    cfg: SimConfig,
    rng: StdRng,
    queue: TimerQueue<(u32, Kind)>,
    nodes: Vec<Option<Node>>,
    crashed_at: Vec<Option<Duration>>,
    live: usize,
    bytes: u64,
    events: u64,
    deaths: HashMap<u32, Spread>,
    joins: HashMap<u32, (Duration, Spread)>,
    falsely_dead: std::collections::HashSet<u32>,
    outputs: Vec<Output<u32, (), ()>>,
    /// Each node's current incarnation (a restart raises it).
    incarnation: Vec<u64>,
    /// Each node's latest answered probe, whose timeout is dropped when it comes up without
    /// touching the node (a node has one probe timeout pending at a time).
    probes_answered: Vec<Option<u32>>,
    restarts: u32,
    /// Whether a spread or the number of live nodes changed since [`World::track_p9999`] last
    /// looked (it used to look after every event, a few percent of the run).
    spread_changed: bool,
    heal_ms: Option<f64>,
    /// Detection and dissemination times of crashes already over (restarted nodes).
    detect_done: Vec<f64>,
    spread_done: Vec<f64>,
}

impl World {
    fn push(&mut self, at: Duration, node: u32, kind: Kind) {
        self.queue.push(at, (node, kind));
    }

    fn drain(&mut self, node: u32, now: Duration) {
        // One buffer reused for every drain: allocating per event showed in profiles.
        let mut outputs = std::mem::take(&mut self.outputs);
        match self.nodes[node as usize].as_mut() {
            Some(n) => outputs.extend(n.drain_outputs()),
            None => {
                self.outputs = outputs;
                return;
            }
        }
        for out in outputs.drain(..) {
            match out {
                Output::Send(to, packet) => {
                    self.bytes += wire_size(&packet) as u64;
                    if self.rng.gen::<f64>() < self.cfg.loss || self.cut(node, to, now) {
                        continue;
                    }
                    let jitter = self.cfg.jitter.mul_f64(self.rng.gen::<f64>());
                    let mut at = now + self.cfg.latency + jitter;
                    if to == 2 {
                        if let Some(slow) = self.cfg.slow_by {
                            at += slow;
                        }
                    }
                    self.push(at, to, Kind::Deliver { from: node, packet });
                }
                Output::SetTimer(at, timer) => self.push(at, node, Kind::Timer(timer)),
                Output::CancelTimer(Timer::ProbeTimeout { seq }) => {
                    self.probes_answered[node as usize] = Some(seq);
                }
                Output::CancelTimer(_) => {}
                Output::Joined(subject) => self.observe(node, subject, Liveness::Alive, now),
                Output::Changed(subject, liveness) => self.observe(node, subject, liveness, now),
                Output::MetaChanged(_) | Output::DeclaredDead(_) => {}
            }
        }
        self.outputs = outputs;
    }

    /// Asks for what the next events will touch, in a pipeline, while this one is handled: at
    /// 10,000 nodes each event touches its queue item, its node and member entries of that node
    /// that are nowhere near the cache, each found through the one before. So three events
    /// ahead the item is fetched; two ahead, its node; one ahead, the member entries the node
    /// will look up (a packet's sender and first piggybacked subjects, a probe tick's target and
    /// open probes). Each stage then has a whole event's time to arrive. Prefetches change
    /// nothing, so a run is the same with or without them (and a stale guess costs only time).
    fn prefetch_ahead(&self) {
        self.queue.prefetch_upcoming(2);
        if let Some((next, _)) = self.queue.upcoming(1) {
            if let Some(node) = self.nodes.get(*next as usize) {
                prefetch(node);
            }
        }
        let Some((to, kind)) = self.queue.upcoming(0) else {
            return;
        };
        let Some(node) = self.nodes.get(*to as usize).and_then(Option::as_ref) else {
            return;
        };
        match kind {
            Kind::Deliver { from, packet } => {
                node.prefetch_member(from);
                for update in packet.updates.iter().take(PREFETCH_UPDATES) {
                    node.prefetch_member(&update.subject());
                }
                if let Message::Ack { .. } | Message::Nack { .. } = packet.message {
                    node.prefetch_probes();
                }
            }
            // A third of the events: the node picks its next probe target.
            Kind::Timer(Timer::ProbeTick) => node.prefetch_probe_target(),
            _ => {}
        }
    }

    /// Whether a partition separates `a` and `b` at `now`.
    fn cut(&self, a: u32, b: u32, now: Duration) -> bool {
        self.cfg
            .partition
            .is_some_and(|p| now >= p.at && now < p.at + p.lasting && self.side(a) != self.side(b))
    }

    /// Which side of the partition a node is on (joiners are on the majority side).
    fn side(&self, node: u32) -> bool {
        self.cfg
            .partition
            .is_some_and(|p| node < self.cfg.nodes && node >= self.cfg.nodes - p.size)
    }

    fn observe(&mut self, observer: u32, subject: u32, liveness: Liveness, now: Duration) {
        self.spread_changed = true;
        match liveness {
            Liveness::Dead => {
                // The death of an earlier life of a restarted node is a true one.
                let declared_inc = self.nodes[observer as usize]
                    .as_ref()
                    .and_then(|n| n.member(&subject))
                    .map_or(0, |m| m.inc);
                let earlier_life = declared_inc < self.incarnation[subject as usize];
                let across_cut = self.side(observer) != self.side(subject)
                    && self.cfg.partition.is_some_and(|p| now >= p.at);
                if self.crashed_at[subject as usize].is_none() && (earlier_life || across_cut) {
                    return;
                }
                if self.crashed_at[subject as usize].is_none() {
                    if std::env::var_os("DCI_SIM_DEBUG").is_some() {
                        eprintln!("dci-sim: {now:?}: {observer} declared live node {subject} dead");
                    }
                    self.falsely_dead.insert(subject);
                    return;
                }
                let spread = self.deaths.entry(subject).or_default();
                spread.first.get_or_insert(now);
                spread.reached.entry(observer).or_insert(now);
            }
            Liveness::Alive => {
                if let Some((_, spread)) = self.joins.get_mut(&subject) {
                    spread.reached.entry(observer).or_insert(now);
                }
            }
            Liveness::Suspect | Liveness::UnreachableLink | Liveness::Left => {}
        }
    }

    fn run(mut self) -> Summary {
        let started = std::time::Instant::now();
        let n = self.cfg.nodes;
        let now = Duration::ZERO;
        for i in 0..n {
            let seed = self.rng.gen();
            let mut node = Swim::new(i, 1, (), Trusting, self.cfg.swim.clone(), seed, now);
            // Room for the joiners too: growing 10,000 tables when the first one comes copied
            // each of them whole (and faulted in the copy's pages).
            node.reserve((n + self.cfg.joins) as usize);
            for j in 0..n {
                if j != i {
                    node.assume_alive(j, 1, (), (), now);
                }
            }
            self.nodes.push(Some(node));
            self.crashed_at.push(None);
            self.incarnation.push(1);
            self.probes_answered.push(None);
        }
        self.live = n as usize;
        for i in 0..n {
            self.drain(i, now);
        }
        let d = self.cfg.duration;
        for k in 0..self.cfg.kills {
            // Crash in the middle half, leaving time to detect; node 0..3 are the special ones.
            let at = d / 4 + (d / 2).mul_f64((k as f64 + 0.5) / self.cfg.kills as f64);
            let victim = 3 + (k * 7919) % n.saturating_sub(3).max(1);
            self.push(at, victim, Kind::Crash);
        }
        for j in 0..self.cfg.joins {
            let at = d / 4 + (d / 2).mul_f64((j as f64 + 0.5) / self.cfg.joins as f64);
            self.push(at, n + j, Kind::Join);
        }
        if let Some(p) = self.cfg.partition {
            self.push(p.at + p.lasting, 0, Kind::Check);
        }
        while let Some((at, (node, kind))) = self.queue.pop() {
            if at > d {
                break;
            }
            self.prefetch_ahead();
            if let Kind::Timer(Timer::ProbeTimeout { seq }) = kind {
                if self.probes_answered[node as usize] == Some(seq) {
                    continue;
                }
            }
            let ev = Event { at, node, kind };
            self.events += 1;
            let i = ev.node as usize;
            if let Kind::Join = ev.kind {
                // Contact a live member, as an agent retrying its seeds eventually does.
                let Some(seed) = self.random_live(ev.node) else {
                    continue;
                };
                let s = self.rng.gen();
                let mut node = Swim::new(ev.node, 1, (), Trusting, self.cfg.swim.clone(), s, ev.at);
                node.join(seed);
                while self.nodes.len() <= i {
                    self.nodes.push(None);
                    self.crashed_at.push(None);
                    self.incarnation.push(1);
                    self.probes_answered.push(None);
                }
                self.nodes[i] = Some(node);
                self.live += 1;
                self.spread_changed = true;
                self.joins.insert(ev.node, (ev.at, Spread::default()));
                self.drain(ev.node, ev.at);
                continue;
            }
            if let Kind::Restart = ev.kind {
                self.restart(ev.node, ev.at);
                continue;
            }
            if let Kind::Check = ev.kind {
                let healed_at = self
                    .cfg
                    .partition
                    .map(|p| p.at + p.lasting)
                    .unwrap_or_default();
                if self.stuck_pairs() == 0 {
                    self.heal_ms = Some(ev.at.saturating_sub(healed_at).as_secs_f64() * 1000.0);
                } else {
                    self.push(ev.at + Duration::from_secs(1), 0, Kind::Check);
                }
                continue;
            }
            if self.crashed_at[i].is_some() || self.nodes[i].is_none() {
                continue;
            }
            if let Kind::Crash = ev.kind {
                self.crashed_at[i] = Some(ev.at);
                self.live -= 1;
                self.spread_changed = true;
                if let Some(after) = self.cfg.restart_after {
                    self.push(ev.at + after, ev.node, Kind::Restart);
                }
                continue;
            }
            // A stalled node handles nothing until it resumes, then everything queued.
            if self.cfg.stall.is_some() && ev.node == 1 {
                let stall = self.cfg.stall.unwrap_or_default();
                let minute = Duration::from_secs(60);
                let into = Duration::from_nanos((ev.at.as_nanos() % minute.as_nanos()) as u64);
                let begins = Duration::from_secs(30);
                if into >= begins && into < begins + stall {
                    let resume = ev.at - into + begins + stall;
                    self.push(resume, ev.node, ev.kind);
                    continue;
                }
            }
            let now = ev.at;
            if let Some(node) = self.nodes[i].as_mut() {
                // The node writes into the world's buffer, which `drain` reads.
                node.swap_outputs(&mut self.outputs);
                match ev.kind {
                    Kind::Deliver { from, packet } => node.handle_packet(from, packet, now),
                    Kind::Timer(t) => node.handle_timer(t, now),
                    Kind::Crash | Kind::Join | Kind::Restart | Kind::Check => {}
                }
                node.swap_outputs(&mut self.outputs);
            }
            self.drain(ev.node, now);
            if self.spread_changed {
                self.spread_changed = false;
                self.track_p9999(now);
            }
        }
        self.summarize(started.elapsed().as_secs_f64())
    }

    /// A random live node other than `not`.
    fn random_live(&mut self, not: u32) -> Option<u32> {
        let live: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|o| {
                *o != not
                    && self.nodes[*o as usize].is_some()
                    && self.crashed_at[*o as usize].is_none()
            })
            .collect();
        (!live.is_empty()).then(|| live[self.rng.gen_range(0..live.len())])
    }

    /// A crashed node comes back: same id, a higher incarnation (the agent persists it), an
    /// empty table, and a join through a random live node.
    fn restart(&mut self, id: u32, now: Duration) {
        let i = id as usize;
        let Some(seed) = self.random_live(id) else {
            return;
        };
        self.incarnation[i] += 1;
        let s = self.rng.gen();
        let mut node = Swim::new(
            id,
            self.incarnation[i],
            (),
            Trusting,
            self.cfg.swim.clone(),
            s,
            now,
        );
        node.join(seed);
        // Measure the crash now; the new life starts with a clean record.
        if let Some(crashed) = self.crashed_at[i] {
            let (detect, spread) = self.crash_figures(id, crashed);
            self.detect_done.extend(detect);
            self.spread_done.extend(spread);
        }
        self.deaths.remove(&id);
        self.nodes[i] = Some(node);
        self.crashed_at[i] = None;
        self.live += 1;
        self.spread_changed = true;
        self.restarts += 1;
        self.drain(id, now);
    }

    /// Ordered pairs of live nodes where the first holds the second dead, or does not know it.
    fn stuck_pairs(&self) -> u32 {
        let live: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|o| self.nodes[*o as usize].is_some() && self.crashed_at[*o as usize].is_none())
            .collect();
        let mut stuck = 0;
        for a in &live {
            let Some(node) = self.nodes[*a as usize].as_ref() else {
                continue;
            };
            for b in &live {
                if a != b
                    && node
                        .member(b)
                        .is_none_or(|m| matches!(m.liveness, Liveness::Dead | Liveness::Left))
                {
                    if std::env::var_os("DCI_SIM_DEBUG").is_some() {
                        eprintln!(
                            "dci-sim: at the end {a} holds live node {b} as {:?}",
                            node.member(b).map(|m| m.liveness)
                        );
                    }
                    stuck += 1;
                }
            }
        }
        stuck
    }

    /// Marks the moment each death or join reached 99.99% of the live nodes.
    fn track_p9999(&mut self, now: Duration) {
        let need = ((self.live as f64) * 0.9999).ceil() as usize;
        for spread in self.deaths.values_mut() {
            if spread.p9999_at.is_none() && spread.reached.len() >= need {
                spread.p9999_at = Some(now);
            }
        }
        // A joiner does not count itself.
        for (_, spread) in self.joins.values_mut() {
            if spread.p9999_at.is_none() && spread.reached.len() >= need.saturating_sub(1) {
                spread.p9999_at = Some(now);
            }
        }
    }

    /// For one crash: how long until every survivor declared it dead, and until 99.99% did after
    /// the first, in milliseconds (each `None` if it never happened).
    fn crash_figures(&self, subject: u32, crashed: Duration) -> (Option<f64>, Option<f64>) {
        // Survivors that were members when it crashed: a later joiner never knew it.
        let survivors: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|o| {
                *o != subject
                    && self.nodes[*o as usize].is_some()
                    && self.crashed_at[*o as usize].is_none()
                    && self
                        .joins
                        .get(o)
                        .is_none_or(|(joined, _)| *joined < crashed)
            })
            .collect();
        let Some(spread) = self.deaths.get(&subject) else {
            return (None, None);
        };
        let detect = survivors
            .iter()
            .map(|o| spread.reached.get(o).copied())
            .collect::<Option<Vec<_>>>()
            .and_then(|times| times.into_iter().max())
            .map(|last| last.saturating_sub(crashed).as_secs_f64() * 1000.0);
        let dissemination = match (spread.first, spread.p9999_at) {
            (Some(first), Some(at)) => Some(at.saturating_sub(first).as_secs_f64() * 1000.0),
            _ => None,
        };
        (detect, dissemination)
    }

    fn summarize(&self, real_seconds: f64) -> Summary {
        let mut detect = self.detect_done.clone();
        let mut spread_ms = self.spread_done.clone();
        for (subject, crashed) in self.crashed_at.iter().enumerate() {
            let Some(crashed) = crashed else { continue };
            let (d, s) = self.crash_figures(subject as u32, *crashed);
            detect.extend(d);
            spread_ms.extend(s);
        }
        let mut joined = 0;
        for (start, spread) in self.joins.values() {
            if let Some(at) = spread.p9999_at {
                joined += 1;
                spread_ms.push(at.saturating_sub(*start).as_secs_f64() * 1000.0);
            }
        }
        detect.sort_by(f64::total_cmp);
        let pct = |v: &[f64], p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let idx = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
            v[idx]
        };
        let secs = self.cfg.duration.as_secs_f64();
        Summary {
            nodes: self.cfg.nodes,
            seed: self.cfg.seed,
            loss: self.cfg.loss,
            minutes: secs / 60.0,
            kills: self.cfg.kills,
            detected: detect.len() as u32,
            detect_p50_ms: pct(&detect, 0.50),
            detect_p99_ms: pct(&detect, 0.99),
            false_dead: self.falsely_dead.len() as u32,
            stuck_dead: self.stuck_pairs(),
            restarts: self.restarts,
            heal_ms: self.heal_ms,
            disseminate_p9999_ms: spread_ms.iter().copied().fold(0.0, f64::max),
            joins_disseminated: joined,
            bytes_per_node_per_s: self.bytes as f64 / self.cfg.nodes.max(1) as f64 / secs,
            events: self.events,
            real_seconds,
        }
    }
}

/// Runs one simulation.
pub fn run(cfg: SimConfig) -> Summary {
    let world = World {
        rng: StdRng::seed_from_u64(cfg.seed),
        queue: TimerQueue::default(),
        nodes: Vec::with_capacity((cfg.nodes + cfg.joins) as usize),
        crashed_at: Vec::new(),
        live: 0,
        bytes: 0,
        events: 0,
        deaths: HashMap::new(),
        joins: HashMap::new(),
        falsely_dead: Default::default(),
        outputs: Vec::new(),
        incarnation: Vec::new(),
        probes_answered: Vec::new(),
        restarts: 0,
        spread_changed: false,
        heal_ms: None,
        detect_done: Vec::new(),
        spread_done: Vec::new(),
        cfg,
    };
    world.run()
}
