//! SWIM with the Lifeguard extensions, as a sans-IO state machine.
//!
//! Each protocol period a node probes one member (round-robin over a shuffled list): a direct ping,
//! then, if no ack arrives within the probe timeout, ping-requests through `indirect_checks` other
//! members. A member that answers none is *suspected*; the suspicion spreads by gossip and becomes a
//! *dead* declaration when its timer runs out, unless the member refutes it by announcing a higher
//! incarnation. Lifeguard adds three things that keep a slow node from hurting others:
//! - **dynamic suspicion**: the timeout starts long and shrinks towards its minimum as independent
//!   members confirm the suspicion;
//! - **local health**: a node that misses acks or nacks, or has to refute suspicion of itself, raises
//!   its own health multiplier and stretches its probe timeouts and intervals instead of accusing others;
//! - **nacks**: an intermediary that cannot reach the target says so, so the prober can tell a dead
//!   target from its own slowness.
//!
//! Membership changes ride on probe traffic and on a gossip tick, each retransmitted a bounded number of
//! times (`retransmit_mult · log10(n+1)`); a periodic push-pull exchange of the whole table with one
//! random member repairs whatever gossip missed.
//!
//! Liveness has two channels, after the seeds' "heartbeat over two independent paths": the probes, and
//! the member's own incarnation announcements relayed by third parties. A member whose probes fail but
//! who has announced itself through others within the suspicion window is `UnreachableLink`, not
//! suspect: no failover starts for a broken link.
//!
//! Call order: feed [`Swim::handle_packet`] and [`Swim::handle_timer`] with `now`; after each call take
//! [`Swim::drain_outputs`]. Timers are values carrying what they are about; a stale one is a no-op.
//! Nothing here reads a clock, touches a socket or uses unseeded randomness.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::table::{prefetch, MemberId, Table};

/// Proves that an alive or leave announcement was made by its subject (a signature in the agent;
/// trivially true in the simulator, whose nodes cannot lie).
pub trait Authority<Id, M> {
    /// The proof carried with an announcement.
    type Proof: Clone + Debug + PartialEq;
    /// Signs this node's own announcement.
    fn prove(&self, inc: u64, meta: &M, left: bool) -> Self::Proof;
    /// Checks an announcement attributed to `subject`.
    fn verify(&self, subject: &Id, inc: u64, meta: &M, left: bool, proof: &Self::Proof) -> bool;
}

/// An authority for nodes that cannot lie (the simulator).
#[derive(Debug, Clone, Copy, Default)]
pub struct Trusting;

impl<Id, M> Authority<Id, M> for Trusting {
    type Proof = ();
    fn prove(&self, _: u64, _: &M, _: bool) {}
    fn verify(&self, _: &Id, _: u64, _: &M, _: bool, _: &()) -> bool {
        true
    }
}

/// Settings. Defaults suit a LAN; every timing is configurable.
#[derive(Debug, Clone, PartialEq)]
pub struct SwimConfig {
    /// Time between probes, before the local-health multiplier.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack, before the local-health multiplier.
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly.
    pub indirect_checks: usize,
    /// How long the indirect probes get, before the local-health multiplier.
    pub indirect_timeout: Duration,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// Members gossiped to per round.
    pub gossip_fanout: usize,
    /// Transmissions per update: `retransmit_mult · ceil(log10(n+1))`.
    pub retransmit_mult: u32,
    /// Minimum suspicion timeout: `suspicion_mult · max(1, log10 n) · probe_interval`.
    pub suspicion_mult: u32,
    /// The suspicion timeout starts at `suspicion_max_mult` times the minimum.
    pub suspicion_max_mult: u32,
    /// Independent confirmations that bring the suspicion timeout down to its minimum.
    pub expected_confirmations: u32,
    /// Highest local-health multiplier.
    pub max_local_health: u32,
    /// Period of the full-state exchange with one random member (scaled up for large meshes).
    pub push_pull_interval: Duration,
    /// Most updates piggybacked on one packet.
    pub max_piggyback: usize,
    /// How often (scaled up for large meshes like push-pull) a node offers its table to one
    /// member it holds dead, so that the two sides of a healed partition find each other again.
    pub reconnect_interval: Duration,
    /// Whether the second liveness channel (announcements relayed by others) can hold a member
    /// whose probes fail at `UnreachableLink` instead of suspecting it.
    pub relay_channel: bool,
}

impl Default for SwimConfig {
    fn default() -> Self {
        SwimConfig {
            probe_interval: Duration::from_millis(140),
            probe_timeout: Duration::from_millis(70),
            indirect_checks: 3,
            indirect_timeout: Duration::from_millis(250),
            gossip_interval: Duration::from_millis(100),
            gossip_fanout: 3,
            retransmit_mult: 6,
            suspicion_mult: 3,
            suspicion_max_mult: 6,
            expected_confirmations: 3,
            max_local_health: 8,
            push_pull_interval: Duration::from_secs(15),
            max_piggyback: 24,
            reconnect_interval: Duration::from_secs(10),
            relay_channel: true,
        }
    }
}

/// Liveness of a member as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Answering probes.
    Alive,
    /// Probes fail but it announced itself through others recently: a broken link, not a failure.
    UnreachableLink,
    /// Probes fail; dead when the suspicion timer runs out unless it refutes.
    Suspect,
    /// Declared dead.
    Dead,
    /// Left gracefully.
    Left,
}

/// A membership change, as disseminated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Update<Id, M, P> {
    /// The subject is alive at this incarnation, with this metadata (signed by the subject).
    Alive {
        /// Subject.
        id: Id,
        /// Its incarnation.
        inc: u64,
        /// Its metadata.
        meta: M,
        /// The subject's proof.
        proof: P,
    },
    /// `from` suspects the subject at this incarnation.
    Suspect {
        /// Subject.
        id: Id,
        /// Incarnation suspected.
        inc: u64,
        /// Accuser.
        from: Id,
    },
    /// `from` declares the subject dead at this incarnation.
    Dead {
        /// Subject.
        id: Id,
        /// Incarnation declared dead.
        inc: u64,
        /// Declarer.
        from: Id,
    },
    /// The subject leaves (signed by the subject).
    Left {
        /// Subject.
        id: Id,
        /// Its incarnation.
        inc: u64,
        /// Its metadata.
        meta: M,
        /// The subject's proof.
        proof: P,
    },
}

impl<Id: Copy, M, P> Update<Id, M, P> {
    /// The member the update is about.
    pub fn subject(&self) -> Id {
        match self {
            Update::Alive { id, .. }
            | Update::Suspect { id, .. }
            | Update::Dead { id, .. }
            | Update::Left { id, .. } => *id,
        }
    }
}

/// The protocol messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message<Id, M, P> {
    /// Are you alive? Answer with `Ack { seq }`.
    Ping {
        /// Probe sequence number.
        seq: u32,
    },
    /// Yes.
    Ack {
        /// The ping's sequence number.
        seq: u32,
    },
    /// Please ping `target` for me and tell me with `Ack { seq }` or `Nack { seq }`.
    PingReq {
        /// The requester's sequence number.
        seq: u32,
        /// Who to probe.
        target: Id,
    },
    /// I could not reach the target of your ping request.
    Nack {
        /// The request's sequence number.
        seq: u32,
    },
    /// Only piggybacked updates.
    Gossip,
    /// The sender's whole table; answer with your own when `reply` is set.
    PushPull {
        /// Every member the sender knows, itself included.
        state: Vec<Update<Id, M, P>>,
        /// Whether the receiver should answer with its own table.
        reply: bool,
    },
}

/// A message with its piggybacked updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Packet<Id, M, P> {
    /// The message.
    pub message: Message<Id, M, P>,
    /// Updates riding along.
    pub updates: Vec<Update<Id, M, P>>,
}

/// Timers; each carries what it is about, so a stale one does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer<Id> {
    /// Time for the next probe.
    ProbeTick,
    /// The direct ping of probe `seq` had its chance.
    ProbeTimeout {
        /// Probe sequence number.
        seq: u32,
    },
    /// The indirect probes of probe `seq` had their chance.
    IndirectTimeout {
        /// Probe sequence number.
        seq: u32,
    },
    /// A ping made on someone's behalf had its chance.
    RelayTimeout {
        /// Our sequence number for the relayed ping.
        seq: u32,
    },
    /// Time to gossip.
    GossipTick,
    /// Time for a push-pull exchange.
    PushPullTick,
    /// Time to offer our table to a member held dead.
    ReconnectTick,
    /// The suspicion of `id` at incarnation `inc` may have run out.
    Suspicion {
        /// Subject.
        id: Id,
        /// Incarnation suspected.
        inc: u64,
    },
}

/// What the core asks its driver to do, or tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<Id, M, P> {
    /// Send this packet to this member.
    Send(Id, Packet<Id, M, P>),
    /// Call `handle_timer(timer)` at this time.
    SetTimer(Duration, Timer<Id>),
    /// A timer set earlier became moot: the driver may drop it (handled anyway, it does
    /// nothing). Nearly every probe is answered, and its timeout is then one of the most
    /// frequent events of a large simulation.
    CancelTimer(Timer<Id>),
    /// A member was heard of for the first time (it is `Alive`).
    Joined(Id),
    /// A known member's liveness changed.
    Changed(Id, Liveness),
    /// This node's own suspicion of a member ran out: it declared the member dead (a
    /// `Changed(id, Dead)` precedes this). Others learn the death from it by gossip.
    DeclaredDead(Id),
    /// A member's metadata changed.
    MetaChanged(Id),
}

/// Counters of refused input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Alive or leave announcements whose proof did not verify.
    pub bad_proof: u64,
}

/// Most accusers of one refuted suspicion that are sent the refutation directly.
const REFUTE_DIRECT_MAX: usize = 8;

/// What this node knows of one member.
#[derive(Debug, Clone)]
pub struct Member<M, P> {
    /// Incarnation last known.
    pub inc: u64,
    /// Metadata last announced.
    pub meta: M,
    /// The proof of that announcement, to relay in push-pull.
    pub proof: P,
    /// Current liveness.
    pub liveness: Liveness,
    // Every node keeps one of these per member: at 10,000 simulated nodes, 100 M of them, so
    // their size bounds how large a mesh the simulator holds and how fast it runs. Times are
    // nanoseconds, and what is rarely written lives in side maps of `Swim` (suspicions, the
    // last announcement), which brings the simulator's entry (`M` and `P` are `()`) to 32
    // bytes: one cache line fetch per lookup. A test checks that size.
    since: Stamp,
    last_ack: Stamp,
    last_ack_seq: u32,
}

impl<M, P> Member<M, P> {
    /// When `liveness` last changed.
    pub fn since(&self) -> Duration {
        self.since.get().unwrap_or_default()
    }

    /// When a probe of it last succeeded.
    pub fn last_ack(&self) -> Option<Duration> {
        self.last_ack.get()
    }

    /// The sequence number of the last probe of it that succeeded (0 before any).
    pub fn last_ack_seq(&self) -> u32 {
        self.last_ack_seq
    }
}

/// A point in driver time in 8 bytes (nanoseconds; `u64::MAX` for never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(u64);

impl Stamp {
    const NEVER: Stamp = Stamp(u64::MAX);

    fn at(t: Duration) -> Stamp {
        Stamp(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX - 1))
    }

    fn get(self) -> Option<Duration> {
        (self != Stamp::NEVER).then(|| Duration::from_nanos(self.0))
    }
}

/// A suspicion this node holds of a member, with the distinct accusers that confirmed it.
#[derive(Debug, Clone)]
struct Suspicion<Id> {
    start: Duration,
    deadline: Duration,
    confirmers: HashSet<Id>,
}

#[derive(Debug, Clone)]
struct Probe<Id> {
    target: Id,
    nacks: u32,
    expected_nacks: u32,
}

#[derive(Debug, Clone)]
struct Relay<Id> {
    requester: Id,
    requester_seq: u32,
}

/// Open probes or relays by sequence number. There are a handful at a time, so a short vector
/// beats a hash map: no hashing, and one allocation to touch instead of two.
#[derive(Debug)]
struct BySeq<V>(Vec<(u32, V)>);

impl<V> Default for BySeq<V> {
    fn default() -> Self {
        BySeq(Vec::new())
    }
}

impl<V> BySeq<V> {
    fn insert(&mut self, seq: u32, v: V) {
        match self.get_mut(seq) {
            Some(old) => *old = v,
            None => self.0.push((seq, v)),
        }
    }

    fn get(&self, seq: u32) -> Option<&V> {
        self.0.iter().find(|(s, _)| *s == seq).map(|(_, v)| v)
    }

    fn get_mut(&mut self, seq: u32) -> Option<&mut V> {
        self.0.iter_mut().find(|(s, _)| *s == seq).map(|(_, v)| v)
    }

    fn remove(&mut self, seq: u32) -> Option<V> {
        let i = self.0.iter().position(|(s, _)| *s == seq)?;
        Some(self.0.swap_remove(i).1)
    }
}

#[derive(Debug, Clone)]
struct Broadcast<Id, M, P> {
    update: Update<Id, M, P>,
    transmits: u32,
}

/// The SWIM + Lifeguard state machine of one node.
pub struct Swim<Id: MemberId, M, A: Authority<Id, M>> {
    me: Id,
    inc: u64,
    meta: M,
    leaving: bool,
    auth: A,
    config: SwimConfig,
    rng: StdRng,
    members: Id::Table<Member<M, A::Proof>>,
    /// Every member ever known, in arrival order: deterministic iteration and O(1) random picks.
    all: Vec<Id>,
    /// Members to contact again while this node knows no live member.
    seeds: Vec<Id>,
    probe_order: Vec<Id>,
    probe_next: usize,
    /// The member after the last one probed, as the order stood then: only a hint for
    /// [`Swim::prefetch_probe_target`], which may be stale (the pick itself reads the order).
    probe_hint: Option<Id>,
    /// Open probes by sequence number (they may overlap: the indirect phase outlasts a period).
    probes: BySeq<Probe<Id>>,
    relays: BySeq<Relay<Id>>,
    /// Suspicions held, by subject; a member is `Suspect` exactly when it has one here.
    suspicions: HashMap<Id, Suspicion<Id>>,
    /// When each member last announced itself (an alive at a new incarnation) through anyone:
    /// written only on such news, so kept beside the member table rather than in each entry.
    announced: HashMap<Id, Duration>,
    /// Accusers already sent our latest refutation directly.
    refuted_to: Vec<Id>,
    /// Whether the push-pull rhythm has been spread over its scaled interval.
    push_pull_phased: bool,
    /// Whether a gossip tick is pending. With nothing to gossip none is: at 10,000 nodes, idle
    /// ticks were an eighth of a simulation's events.
    gossip_armed: bool,
    /// When the last gossip tick ran: a re-armed tick keeps the rhythm.
    gossip_last: Duration,
    /// The latest time an event was handled at, for calls that come without one.
    now: Duration,
    seq: u32,
    health: u32,
    queue: Vec<Broadcast<Id, M, A::Proof>>,
    out: Vec<Output<Id, M, A::Proof>>,
    rejected: Rejected,
}

type Out<Id, M, A> = Output<Id, M, <A as Authority<Id, M>>::Proof>;
type Upd<Id, M, A> = Update<Id, M, <A as Authority<Id, M>>::Proof>;
type Pkt<Id, M, A> = Packet<Id, M, <A as Authority<Id, M>>::Proof>;

impl<Id, M, A> Swim<Id, M, A>
where
    Id: MemberId,
    M: Clone + PartialEq + Debug,
    A: Authority<Id, M>,
{
    /// A node that knows only itself. `inc` must exceed every incarnation of earlier runs of this
    /// identity. Arms the probe, gossip and push-pull timers.
    pub fn new(
        me: Id,
        inc: u64,
        meta: M,
        auth: A,
        config: SwimConfig,
        seed: u64,
        now: Duration,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        // Spread the periodic timers so that a mesh started at once does not tick in lockstep.
        let jitter = |rng: &mut StdRng, d: Duration| d.mul_f64(rng.gen::<f64>());
        let probe_at = now + jitter(&mut rng, config.probe_interval);
        let gossip_at = now + jitter(&mut rng, config.gossip_interval);
        let config_gossip_interval = config.gossip_interval;
        let push_pull_at = now + jitter(&mut rng, config.push_pull_interval);
        let reconnect_at = now + jitter(&mut rng, config.reconnect_interval);
        let mut swim = Swim {
            me,
            inc,
            meta,
            leaving: false,
            auth,
            config,
            rng,
            members: Default::default(),
            all: Vec::new(),
            seeds: Vec::new(),
            probe_order: Vec::new(),
            probe_next: 0,
            probe_hint: None,
            probes: BySeq::default(),
            relays: BySeq::default(),
            suspicions: HashMap::new(),
            announced: HashMap::new(),
            refuted_to: Vec::new(),
            push_pull_phased: false,
            gossip_armed: true,
            gossip_last: gossip_at.saturating_sub(config_gossip_interval),
            now,
            seq: 0,
            health: 0,
            queue: Vec::new(),
            out: Vec::new(),
            rejected: Rejected::default(),
        };
        swim.out.push(Output::SetTimer(probe_at, Timer::ProbeTick));
        swim.out
            .push(Output::SetTimer(gossip_at, Timer::GossipTick));
        swim.out
            .push(Output::SetTimer(push_pull_at, Timer::PushPullTick));
        swim.out
            .push(Output::SetTimer(reconnect_at, Timer::ReconnectTick));
        let alive = swim.self_alive();
        swim.enqueue(alive);
        swim
    }

    /// This node's id.
    pub fn id(&self) -> Id {
        self.me
    }

    /// This node's metadata.
    pub fn meta(&self) -> &M {
        &self.meta
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.inc
    }

    /// The local-health multiplier (0 = healthy).
    pub fn local_health(&self) -> u32 {
        self.health
    }

    /// Every other member this node knows.
    pub fn members(&self) -> impl Iterator<Item = (Id, &Member<M, A::Proof>)> {
        self.members.entries()
    }

    /// One member.
    pub fn member(&self, id: &Id) -> Option<&Member<M, A::Proof>> {
        self.members.get(id)
    }

    /// When `id` last announced itself (an alive at a new incarnation) through anyone.
    pub fn last_announce(&self, id: &Id) -> Option<Duration> {
        self.announced.get(id).copied()
    }

    /// What was refused so far.
    pub fn rejected(&self) -> &Rejected {
        &self.rejected
    }

    /// Takes what the driver must do.
    pub fn drain_outputs(&mut self) -> std::vec::Drain<'_, Out<Id, M, A>> {
        self.out.drain(..)
    }

    /// Exchanges this node's output buffer with `buf`. A driver of many nodes (the simulator)
    /// lends one empty buffer to the node it is about to call and takes it back, outputs and
    /// all, after the call: that buffer stays in the cache, where each node's own would be a
    /// cache miss per event, and the outputs are not copied.
    pub fn swap_outputs(&mut self, buf: &mut Vec<Out<Id, M, A>>) {
        std::mem::swap(&mut self.out, buf);
    }

    fn self_alive(&self) -> Upd<Id, M, A> {
        Update::Alive {
            id: self.me,
            inc: self.inc,
            meta: self.meta.clone(),
            proof: self.auth.prove(self.inc, &self.meta, false),
        }
    }

    /// A hint for a driver that knows what comes next (the simulator): starts bringing `id`'s
    /// entry into the cache. Changes nothing.
    pub fn prefetch_member(&self, id: &Id) {
        self.members.prefetch(id);
    }

    /// A hint for a driver that knows a probe tick comes next: starts bringing into the cache
    /// what picking and recording the probe reads (the next member of the probe order, its
    /// entry, the open probes). At 10,000 simulated nodes these were two misses one after the
    /// other, a quarter of the run. Changes nothing.
    pub fn prefetch_probe_target(&self) {
        if let Some(id) = &self.probe_hint {
            self.members.prefetch(id);
        }
        if let Some(next) = self.probe_order.get(self.probe_next) {
            prefetch(next);
        }
        self.prefetch_probes();
    }

    /// A hint for a driver that knows an ack or a nack comes next: starts bringing the open
    /// probes into the cache. Changes nothing.
    pub fn prefetch_probes(&self) {
        if let Some(open) = self.probes.0.first() {
            prefetch(open);
        }
    }

    /// Makes room for `n` more members at once (a simulator building large tables).
    pub fn reserve(&mut self, n: usize) {
        self.members.reserve(n);
        self.all.reserve(n);
    }

    /// Starts from a converged table (simulators and tests): `id` is known alive at `inc`, and
    /// nothing is gossiped about it.
    pub fn assume_alive(&mut self, id: Id, inc: u64, meta: M, proof: A::Proof, now: Duration) {
        if id == self.me || self.members.contains(&id) {
            return;
        }
        self.members.insert(
            id,
            Member {
                inc,
                meta,
                proof,
                liveness: Liveness::Alive,
                since: Stamp::at(now),
                last_ack: Stamp::NEVER,
                last_ack_seq: 0,
            },
        );
        self.all.push(id);
    }

    /// Contacts a seed: sends it this node's whole table and asks for its own. The seed is
    /// contacted again at every probe period while this node knows no live member.
    pub fn join(&mut self, seed: Id) {
        if !self.seeds.contains(&seed) {
            self.seeds.push(seed);
        }
        let state = self.full_state();
        self.send(seed, Message::PushPull { state, reply: true });
    }

    /// Changes this node's metadata and announces it.
    pub fn set_meta(&mut self, meta: M) {
        if meta != self.meta {
            self.meta = meta;
            self.inc += 1;
            let alive = self.self_alive();
            self.enqueue(alive);
            self.arm_gossip();
        }
    }

    /// Announces that this node leaves; the driver should flush the returned packets before exiting.
    pub fn leave(&mut self) -> Vec<(Id, Pkt<Id, M, A>)> {
        self.leaving = true;
        self.inc += 1;
        let left = Update::Left {
            id: self.me,
            inc: self.inc,
            meta: self.meta.clone(),
            proof: self.auth.prove(self.inc, &self.meta, true),
        };
        let targets: Vec<Id> = self
            .all
            .iter()
            .filter(|id| {
                self.members
                    .get(id)
                    .is_some_and(|m| !matches!(m.liveness, Liveness::Dead | Liveness::Left))
            })
            .copied()
            .collect();
        targets
            .into_iter()
            .map(|id| {
                (
                    id,
                    Packet {
                        message: Message::Gossip,
                        updates: vec![left.clone()],
                    },
                )
            })
            .collect()
    }

    /// Handles a timer set earlier.
    pub fn handle_timer(&mut self, timer: Timer<Id>, now: Duration) {
        self.now = self.now.max(now);
        match timer {
            Timer::ProbeTick => self.probe_tick(now),
            Timer::ProbeTimeout { seq } => self.probe_timeout(seq, now),
            Timer::IndirectTimeout { seq } => self.indirect_timeout(seq, now),
            Timer::RelayTimeout { seq } => {
                if let Some(relay) = self.relays.remove(seq) {
                    self.send(
                        relay.requester,
                        Message::Nack {
                            seq: relay.requester_seq,
                        },
                    );
                }
            }
            Timer::GossipTick => self.gossip_tick(now),
            Timer::PushPullTick => self.push_pull_tick(now),
            Timer::ReconnectTick => self.reconnect_tick(now),
            Timer::Suspicion { id, inc } => self.suspicion_expired(id, inc, now),
        }
        self.arm_gossip();
    }

    /// Handles a packet from `from` (authenticated by the transport).
    pub fn handle_packet(&mut self, from: Id, packet: Pkt<Id, M, A>, now: Duration) {
        self.now = self.now.max(now);
        self.handle_message(from, packet, now);
        self.arm_gossip();
    }

    fn handle_message(&mut self, from: Id, packet: Pkt<Id, M, A>, now: Duration) {
        for update in packet.updates {
            self.apply(update, now);
        }
        // A member we hold dead is talking to us (a partition healed, or a death was wrong): tell
        // it, so that it refutes and everyone hears it is alive.
        if let Some(inc) = self
            .members
            .get(&from)
            .filter(|m| m.liveness == Liveness::Dead)
            .map(|m| m.inc)
        {
            let dead = Update::Dead {
                id: from,
                inc,
                from: self.me,
            };
            self.notify(from, dead);
        }
        match packet.message {
            Message::Ping { seq } => self.send(from, Message::Ack { seq }),
            Message::Ack { seq } => self.handle_ack(seq, now),
            Message::PingReq { seq, target } => {
                self.seq = self.seq.wrapping_add(1);
                let relay_seq = self.seq;
                self.relays.insert(
                    relay_seq,
                    Relay {
                        requester: from,
                        requester_seq: seq,
                    },
                );
                self.send(target, Message::Ping { seq: relay_seq });
                // Answer (with a nack) before the requester's indirect window closes.
                let wait = self.scaled(self.config.indirect_timeout).mul_f64(0.8);
                self.out.push(Output::SetTimer(
                    now + wait,
                    Timer::RelayTimeout { seq: relay_seq },
                ));
            }
            Message::Nack { seq } => {
                if let Some(p) = self.probes.get_mut(seq) {
                    p.nacks += 1;
                }
            }
            Message::Gossip => {}
            Message::PushPull { state, reply } => {
                for update in state {
                    // A table may be old news from across a healed partition: a death in it is
                    // only a suspicion here, which a live member refutes in time.
                    let update = match update {
                        Update::Dead { id, inc, from } => Update::Suspect { id, inc, from },
                        other => other,
                    };
                    self.apply(update, now);
                }
                if reply {
                    let state = self.full_state();
                    self.send(
                        from,
                        Message::PushPull {
                            state,
                            reply: false,
                        },
                    );
                }
            }
        }
    }

    fn handle_ack(&mut self, seq: u32, now: Duration) {
        if let Some(relay) = self.relays.remove(seq) {
            self.send(
                relay.requester,
                Message::Ack {
                    seq: relay.requester_seq,
                },
            );
            return;
        }
        let Some(p) = self.probes.remove(seq) else {
            return;
        };
        self.out
            .push(Output::CancelTimer(Timer::ProbeTimeout { seq }));
        let target = p.target;
        self.health = self.health.saturating_sub(1);
        if let Some(m) = self.members.get_mut(&target) {
            m.last_ack = Stamp::at(now);
            m.last_ack_seq = seq;
            if m.liveness == Liveness::UnreachableLink {
                self.set_liveness(target, Liveness::Alive, now);
            }
        }
    }

    fn probe_tick(&mut self, now: Duration) {
        let next = now + self.scaled(self.config.probe_interval);
        self.out.push(Output::SetTimer(next, Timer::ProbeTick));
        if self.leaving {
            return;
        }
        let Some(target) = self.next_probe_target() else {
            // Alone: the join was lost, or everyone else is gone. Knock again.
            for seed in self.seeds.clone() {
                let state = self.full_state();
                self.send(seed, Message::PushPull { state, reply: true });
            }
            return;
        };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.probes.insert(
            seq,
            Probe {
                target,
                nacks: 0,
                expected_nacks: 0,
            },
        );
        self.send(target, Message::Ping { seq });
        let wait = self.scaled(self.config.probe_timeout);
        self.out
            .push(Output::SetTimer(now + wait, Timer::ProbeTimeout { seq }));
    }

    fn next_probe_target(&mut self) -> Option<Id> {
        for _ in 0..2 {
            while self.probe_next < self.probe_order.len() {
                let id = self.probe_order[self.probe_next];
                self.probe_next += 1;
                if self
                    .members
                    .get(&id)
                    .is_some_and(|m| !matches!(m.liveness, Liveness::Dead | Liveness::Left))
                {
                    // Its cache line is at hand now; at the next tick it would be a miss.
                    self.probe_hint = self.probe_order.get(self.probe_next).copied();
                    return Some(id);
                }
            }
            // A new round: reshuffle over the members that count.
            let members = &self.members;
            self.probe_order = self
                .all
                .iter()
                .filter(|id| {
                    members
                        .get(id)
                        .is_some_and(|m| !matches!(m.liveness, Liveness::Dead | Liveness::Left))
                })
                .copied()
                .collect();
            self.probe_order.shuffle(&mut self.rng);
            self.probe_next = 0;
        }
        None
    }

    fn probe_timeout(&mut self, seq: u32, now: Duration) {
        let Some(target) = self.probes.get(seq).map(|p| p.target) else {
            return;
        };
        let helpers = self.random_members(self.config.indirect_checks, |id, m| {
            *id != target && matches!(m.liveness, Liveness::Alive)
        });
        for h in &helpers {
            self.send(*h, Message::PingReq { seq, target });
        }
        if let Some(p) = self.probes.get_mut(seq) {
            p.expected_nacks = helpers.len() as u32;
        }
        // The indirect path is three hops, not one: it gets its own, longer window.
        let wait = self.scaled(self.config.indirect_timeout);
        self.out
            .push(Output::SetTimer(now + wait, Timer::IndirectTimeout { seq }));
    }

    fn indirect_timeout(&mut self, seq: u32, now: Duration) {
        // An acked probe was removed already; this timer is then stale.
        let Some(p) = self.probes.remove(seq) else {
            return;
        };
        // Lifeguard: helpers that neither acked nor nacked suggest the fault is ours.
        if p.nacks < p.expected_nacks {
            self.health = (self.health + 1).min(self.config.max_local_health);
        }
        let Some(m) = self.members.get(&p.target) else {
            return;
        };
        if matches!(m.liveness, Liveness::Dead | Liveness::Left) {
            return;
        }
        let inc = m.inc;
        // Our own failed probe of a member already suspected is an independent confirmation.
        if m.liveness == Liveness::Suspect {
            let confirm = Update::Suspect {
                id: p.target,
                inc,
                from: self.me,
            };
            return self.apply(confirm, now);
        }
        // Second channel: it announced itself through others since our last good probe.
        let window = self.suspicion_min();
        let announced = self
            .last_announce(&p.target)
            .is_some_and(|t| now.saturating_sub(t) < window && m.last_ack().is_none_or(|a| t > a));
        if announced && self.config.relay_channel {
            if m.liveness != Liveness::UnreachableLink {
                self.set_liveness(p.target, Liveness::UnreachableLink, now);
            }
            return;
        }
        let suspect = Update::Suspect {
            id: p.target,
            inc,
            from: self.me,
        };
        self.apply(suspect, now);
    }

    fn gossip_tick(&mut self, now: Duration) {
        self.gossip_last = now;
        if self.queue.is_empty() {
            self.gossip_armed = false;
            return;
        }
        self.out.push(Output::SetTimer(
            now + self.config.gossip_interval,
            Timer::GossipTick,
        ));
        // Recently dead members are included, so that a wrongly declared one hears it and refutes.
        let targets = self.random_members(self.config.gossip_fanout, |_, m| {
            !matches!(m.liveness, Liveness::Left)
                && (m.liveness != Liveness::Dead
                    || now.saturating_sub(m.since()) < Duration::from_secs(30))
        });
        for t in targets {
            self.send(t, Message::Gossip);
        }
    }

    /// Sets the gossip timer again once there is something to gossip, at the next tick of the
    /// rhythm it kept before it went idle.
    fn arm_gossip(&mut self) {
        if self.gossip_armed || self.queue.is_empty() {
            return;
        }
        let interval = self.config.gossip_interval.max(Duration::from_micros(1));
        let since = self.now.saturating_sub(self.gossip_last);
        let ticks = since.as_nanos().div_ceil(interval.as_nanos()).max(1);
        let at = u32::try_from(ticks)
            .ok()
            .and_then(|t| interval.checked_mul(t))
            .map_or(self.now, |d| self.gossip_last + d);
        self.out.push(Output::SetTimer(at, Timer::GossipTick));
        self.gossip_armed = true;
    }

    fn push_pull_tick(&mut self, now: Duration) {
        // A full table grows with the mesh, so exchange it proportionally less often: the repair
        // traffic per node stays flat (memberlist's log scaling lets it grow with n / log n).
        let n = self.members.len() + 1;
        let interval = self
            .config
            .push_pull_interval
            .mul_f64((n as f64 / 32.0).max(1.0));
        if !self.push_pull_phased {
            // The first tick came within one unscaled interval of start, for every node at once;
            // in a large mesh that is a storm of whole tables. Start the rhythm at a random point
            // of the scaled interval instead (the join itself already exchanged tables).
            self.push_pull_phased = true;
            if interval > self.config.push_pull_interval {
                let at = now + interval.mul_f64(self.rng.gen::<f64>());
                self.out.push(Output::SetTimer(at, Timer::PushPullTick));
                return;
            }
        }
        self.out
            .push(Output::SetTimer(now + interval, Timer::PushPullTick));
        if let Some(peer) = self
            .random_members(1, |_, m| matches!(m.liveness, Liveness::Alive))
            .first()
        {
            let state = self.full_state();
            self.send(*peer, Message::PushPull { state, reply: true });
        }
    }

    /// A member declared dead may be alive behind a partition that has healed: tell it (one
    /// small packet). If it is alive it refutes with a higher incarnation, which reaches us and
    /// then everyone; it does the same for us from its side.
    fn reconnect_tick(&mut self, now: Duration) {
        let n = self.members.len() + 1;
        // Randomized by ±50%, so that the nodes' attempts spread out instead of keeping the
        // phase they started with.
        let scale = (n as f64 / 32.0).max(1.0) * self.rng.gen_range(0.5..1.5);
        let next = now + self.config.reconnect_interval.mul_f64(scale);
        self.out.push(Output::SetTimer(next, Timer::ReconnectTick));
        if self.leaving {
            return;
        }
        let picked = self.random_members(1, |_, m| {
            // After a day it is gone for good; an operator can re-join it.
            m.liveness == Liveness::Dead
                && now.saturating_sub(m.since()) < Duration::from_secs(24 * 3600)
        });
        if let Some((id, inc)) = picked
            .first()
            .and_then(|id| self.members.get(id).map(|m| (*id, m.inc)))
        {
            let dead = Update::Dead {
                id,
                inc,
                from: self.me,
            };
            self.notify(id, dead);
        }
    }

    fn full_state(&self) -> Vec<Upd<Id, M, A>> {
        let mut state = vec![self.self_alive()];
        for id in &self.all {
            let Some(m) = self.members.get(id) else {
                continue;
            };
            state.push(match m.liveness {
                Liveness::Alive | Liveness::UnreachableLink => Update::Alive {
                    id: *id,
                    inc: m.inc,
                    meta: m.meta.clone(),
                    proof: m.proof.clone(),
                },
                Liveness::Suspect => Update::Suspect {
                    id: *id,
                    inc: m.inc,
                    from: self.me,
                },
                Liveness::Dead => Update::Dead {
                    id: *id,
                    inc: m.inc,
                    from: self.me,
                },
                Liveness::Left => Update::Left {
                    id: *id,
                    inc: m.inc,
                    meta: m.meta.clone(),
                    proof: m.proof.clone(),
                },
            });
        }
        state
    }

    fn suspicion_min(&self) -> Duration {
        let n = (self.members.len() + 1) as f64;
        self.config
            .probe_interval
            .mul_f64(self.config.suspicion_mult as f64 * n.log10().max(1.0))
    }

    /// Lifeguard's timeout: from `max` down to `min` as confirmations reach the expected number.
    fn suspicion_timeout(&self, confirmers: u32) -> Duration {
        let min = self.suspicion_min();
        let max = min * self.config.suspicion_max_mult;
        let k = self.config.expected_confirmations as f64;
        let frac = ((confirmers as f64 + 1.0).ln() / (k + 1.0).ln()).min(1.0);
        max.saturating_sub((max - min).mul_f64(frac)).max(min)
    }

    fn suspicion_expired(&mut self, id: Id, inc: u64, now: Duration) {
        let Some(m) = self.members.get(&id) else {
            return;
        };
        let Some(s) = self.suspicions.get(&id) else {
            return;
        };
        if m.inc != inc || m.liveness != Liveness::Suspect {
            return;
        }
        if now < s.deadline {
            // The deadline moved (it can only shrink, but a timer may be early after a change).
            let at = s.deadline;
            self.out
                .push(Output::SetTimer(at, Timer::Suspicion { id, inc }));
            return;
        }
        let dead = Update::Dead {
            id,
            inc,
            from: self.me,
        };
        self.apply(dead, now);
        self.out.push(Output::DeclaredDead(id));
    }

    /// Applies one update, disseminating it further if it was news.
    fn apply(&mut self, update: Upd<Id, M, A>, now: Duration) {
        let subject = update.subject();
        if subject == self.me {
            return self.about_me(update);
        }
        let news = match &update {
            Update::Alive {
                id,
                inc,
                meta,
                proof,
            } => {
                let newer = self.members.get(id).is_none_or(|m| *inc > m.inc);
                if !newer {
                    false
                } else if !self.auth.verify(id, *inc, meta, false, proof) {
                    self.rejected.bad_proof += 1;
                    false
                } else {
                    match self.members.get_mut(id) {
                        None => {
                            self.members.insert(
                                *id,
                                Member {
                                    inc: *inc,
                                    meta: meta.clone(),
                                    proof: proof.clone(),
                                    liveness: Liveness::Alive,
                                    since: Stamp::at(now),
                                    last_ack: Stamp::NEVER,
                                    last_ack_seq: 0,
                                },
                            );
                            self.all.push(*id);
                            self.probe_order.push(*id);
                            self.out.push(Output::Joined(*id));
                        }
                        Some(m) => {
                            let meta_changed = m.meta != *meta;
                            m.inc = *inc;
                            m.meta = meta.clone();
                            m.proof = proof.clone();
                            if meta_changed {
                                self.out.push(Output::MetaChanged(*id));
                            }
                        }
                    }
                    self.suspicions.remove(id);
                    self.announced.insert(*id, now);
                    self.set_liveness(*id, Liveness::Alive, now);
                    true
                }
            }
            Update::Left {
                id,
                inc,
                meta,
                proof,
            } => {
                let newer = self
                    .members
                    .get(id)
                    .is_none_or(|m| *inc >= m.inc && m.liveness != Liveness::Left);
                if !newer {
                    false
                } else if !self.auth.verify(id, *inc, meta, true, proof) {
                    self.rejected.bad_proof += 1;
                    false
                } else {
                    match self.members.get_mut(id) {
                        Some(m) => {
                            m.inc = *inc;
                            m.proof = proof.clone();
                        }
                        None => {
                            self.all.push(*id);
                            self.members.insert(
                                *id,
                                Member {
                                    inc: *inc,
                                    meta: meta.clone(),
                                    proof: proof.clone(),
                                    liveness: Liveness::Left,
                                    since: Stamp::at(now),
                                    last_ack: Stamp::NEVER,
                                    last_ack_seq: 0,
                                },
                            );
                        }
                    }
                    self.suspicions.remove(id);
                    self.set_liveness(*id, Liveness::Left, now);
                    true
                }
            }
            Update::Suspect { id, inc, from } => self.apply_suspect(*id, *inc, *from, now),
            Update::Dead { id, inc, .. } => {
                let applies = self.members.get(id).is_some_and(|m| {
                    *inc >= m.inc && !matches!(m.liveness, Liveness::Dead | Liveness::Left)
                });
                if applies {
                    if let Some(m) = self.members.get_mut(id) {
                        m.inc = *inc;
                    }
                    self.suspicions.remove(id);
                    self.set_liveness(*id, Liveness::Dead, now);
                }
                applies
            }
        };
        if news {
            // An accusation we make is also sent to the accused, so that it can refute at once.
            if let Update::Suspect { from, .. } | Update::Dead { from, .. } = &update {
                if *from == self.me {
                    self.notify(subject, update.clone());
                }
            }
            self.enqueue(update);
        }
    }

    /// Sends one update straight to one member, outside the gossip rotation.
    fn notify(&mut self, to: Id, update: Upd<Id, M, A>) {
        self.out.push(Output::Send(
            to,
            Packet {
                message: Message::Gossip,
                updates: vec![update],
            },
        ));
    }

    fn apply_suspect(&mut self, id: Id, inc: u64, from: Id, now: Duration) -> bool {
        let Some(m) = self.members.get(&id) else {
            return false;
        };
        if inc < m.inc || matches!(m.liveness, Liveness::Dead | Liveness::Left) {
            return false;
        }
        if m.liveness == Liveness::Suspect && inc == m.inc {
            // A confirmation: shrink the timeout if it comes from someone new.
            let Some(s) = self.suspicions.get_mut(&id) else {
                return false;
            };
            if !s.confirmers.insert(from) {
                return false;
            }
            let n = s.confirmers.len().saturating_sub(1) as u32;
            let timeout = self.suspicion_timeout(n);
            let Some(s) = self.suspicions.get_mut(&id) else {
                return false;
            };
            let deadline = s.start + timeout;
            if deadline < s.deadline {
                s.deadline = deadline;
                self.out.push(Output::SetTimer(
                    deadline.max(now),
                    Timer::Suspicion { id, inc },
                ));
            }
            // Confirmations past the expected number add nothing for others.
            return n <= self.config.expected_confirmations;
        }
        let timeout = self.suspicion_timeout(0);
        let Some(m) = self.members.get_mut(&id) else {
            return false;
        };
        m.inc = inc;
        self.suspicions.insert(
            id,
            Suspicion {
                start: now,
                deadline: now + timeout,
                confirmers: HashSet::from([from]),
            },
        );
        self.out.push(Output::SetTimer(
            now + timeout,
            Timer::Suspicion { id, inc },
        ));
        self.set_liveness(id, Liveness::Suspect, now);
        true
    }

    /// Someone says something about this node: refute suspicion and death with a higher incarnation.
    fn about_me(&mut self, update: Upd<Id, M, A>) {
        match update {
            Update::Suspect { inc, from, .. } | Update::Dead { inc, from, .. } => {
                if self.leaving {
                    return;
                }
                if inc + 1 == self.inc {
                    // Already refuted; a confirmer of that suspicion may still be counting down,
                    // and the refutation reaches it sooner straight than by gossip.
                    if self.refuted_to.len() < REFUTE_DIRECT_MAX && !self.refuted_to.contains(&from)
                    {
                        self.refuted_to.push(from);
                        let alive = self.self_alive();
                        self.notify(from, alive);
                    }
                    return;
                }
                if inc < self.inc {
                    return;
                }
                self.inc = inc + 1;
                self.refuted_to.clear();
                self.refuted_to.push(from);
                // Lifeguard: being suspected hints that we are the slow one.
                self.health = (self.health + 1).min(self.config.max_local_health);
                let alive = self.self_alive();
                // The accuser hears the refutation at once; everyone else through gossip.
                self.notify(from, alive.clone());
                self.enqueue(alive);
            }
            Update::Alive { inc, .. } | Update::Left { inc, .. } => {
                // An announcement of ours from an earlier run: move past it. (Equal is our own,
                // relayed back to us.)
                if inc > self.inc && !self.leaving {
                    self.inc = inc + 1;
                    let alive = self.self_alive();
                    self.enqueue(alive);
                }
            }
        }
    }

    fn set_liveness(&mut self, id: Id, liveness: Liveness, now: Duration) {
        if let Some(m) = self.members.get_mut(&id) {
            if m.liveness != liveness {
                m.liveness = liveness;
                m.since = Stamp::at(now);
                self.out.push(Output::Changed(id, liveness));
            }
        }
    }

    fn enqueue(&mut self, update: Upd<Id, M, A>) {
        let subject = update.subject();
        // A newer update about a member supersedes older ones, except that suspicions of one
        // incarnation by different accusers add up (Lifeguard's confirmations) and travel together.
        let confirms = |old: &Upd<Id, M, A>| match (old, &update) {
            (
                Update::Suspect {
                    inc: a, from: f, ..
                },
                Update::Suspect {
                    inc: b, from: g, ..
                },
            ) => a == b && f != g,
            _ => false,
        };
        self.queue
            .retain(|b| b.update.subject() != subject || confirms(&b.update));
        self.queue.push(Broadcast {
            update,
            transmits: 0,
        });
    }

    fn retransmit_limit(&self) -> u32 {
        let n = (self.members.len() + 1) as f64;
        self.config.retransmit_mult * ((n + 1.0).log10().ceil() as u32).max(1)
    }

    /// Takes up to `max_piggyback` updates, least transmitted first, and retires the exhausted ones.
    fn piggyback(&mut self) -> Vec<Upd<Id, M, A>> {
        if self.queue.is_empty() {
            return Vec::new();
        }
        // Usually still in order from the last call: checking is cheaper than sorting.
        if !self.queue.is_sorted_by_key(|b| b.transmits) {
            self.queue.sort_by_key(|b| b.transmits);
        }
        let limit = self.retransmit_limit();
        let take = self.queue.len().min(self.config.max_piggyback);
        let mut updates = Vec::with_capacity(take);
        for b in self.queue.iter_mut().take(take) {
            b.transmits += 1;
            updates.push(b.update.clone());
        }
        self.queue.retain(|b| b.transmits < limit);
        updates
    }

    fn send(&mut self, to: Id, message: Message<Id, M, A::Proof>) {
        let updates = self.piggyback();
        self.out.push(Output::Send(to, Packet { message, updates }));
    }

    fn random_members(
        &mut self,
        k: usize,
        keep: impl Fn(&Id, &Member<M, A::Proof>) -> bool,
    ) -> Vec<Id> {
        let mut picked: Vec<Id> = Vec::with_capacity(k);
        let n = self.all.len();
        if n == 0 || k == 0 {
            return picked;
        }
        // Random draws first (cheap in a large mesh), then a scan from a random offset so that a
        // small or mostly dead mesh still yields every eligible member.
        for _ in 0..(4 * k + 8) {
            let id = self.all[self.rng.gen_range(0..n)];
            if !picked.contains(&id) && self.members.get(&id).is_some_and(|m| keep(&id, m)) {
                picked.push(id);
                if picked.len() == k {
                    return picked;
                }
            }
        }
        let offset = self.rng.gen_range(0..n);
        for i in 0..n {
            let id = self.all[(offset + i) % n];
            if !picked.contains(&id) && self.members.get(&id).is_some_and(|m| keep(&id, m)) {
                picked.push(id);
                if picked.len() == k {
                    break;
                }
            }
        }
        picked
    }

    fn scaled(&self, d: Duration) -> Duration {
        d * (self.health + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Core = Swim<u32, u8, Trusting>;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn node(id: u32, peers: &[u32]) -> Core {
        let mut n = Swim::new(
            id,
            1,
            0u8,
            Trusting,
            SwimConfig::default(),
            id as u64,
            ms(0),
        );
        for p in peers {
            n.assume_alive(*p, 1, 0, (), ms(0));
        }
        n.drain_outputs().for_each(drop);
        n
    }

    fn sends(n: &mut Core) -> Vec<(u32, Packet<u32, u8, ()>)> {
        n.drain_outputs()
            .filter_map(|o| match o {
                Output::Send(to, p) => Some((to, p)),
                _ => None,
            })
            .collect()
    }

    fn gossip_timers(n: &mut Core) -> Vec<Duration> {
        n.drain_outputs()
            .filter_map(|o| match o {
                Output::SetTimer(at, Timer::GossipTick) => Some(at),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn gossip_rests_while_there_is_nothing_to_say_and_resumes_on_its_rhythm() {
        let mut a = node(1, &[2]);
        // Its own announcement goes out, a few times, then the queue is empty.
        let mut t = 0;
        loop {
            t += 100;
            a.handle_timer(Timer::GossipTick, ms(t));
            if gossip_timers(&mut a).is_empty() {
                break;
            }
            assert!(t < 10_000, "the announcement never retired");
        }
        // News arrives between two ticks of the old rhythm: the next tick comes on it.
        let news = Update::Alive {
            id: 3,
            inc: 1,
            meta: 0,
            proof: (),
        };
        a.handle_packet(2, gossip(vec![news]), ms(t + 250));
        assert_eq!(gossip_timers(&mut a), vec![ms(t + 300)]);
        // Armed once only.
        a.handle_packet(2, gossip(vec![]), ms(t + 260));
        assert!(gossip_timers(&mut a).is_empty());
        a.handle_timer(Timer::GossipTick, ms(t + 300));
        assert_eq!(gossip_timers(&mut a), vec![ms(t + 400)]);
    }

    /// The simulator holds one entry per member per node (100 M at 10,000 nodes): it must fit
    /// one 32-byte slot of the dense table, one cache line.
    #[test]
    fn a_simulated_member_entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Option<Member<(), ()>>>(), 32);
    }

    #[test]
    fn a_probe_that_is_acked_keeps_the_target_alive_and_health_good() {
        let mut a = node(1, &[2]);
        let mut b = node(2, &[1]);
        a.handle_timer(Timer::ProbeTick, ms(200));
        let (to, ping) = sends(&mut a).remove(0);
        assert_eq!(to, 2);
        b.handle_packet(1, ping, ms(201));
        let (to, ack) = sends(&mut b).remove(0);
        assert_eq!(to, 1);
        a.handle_packet(2, ack, ms(202));
        a.handle_timer(Timer::ProbeTimeout { seq: 1 }, ms(300));
        assert!(
            sends(&mut a).is_empty(),
            "an acked probe must not go indirect"
        );
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Alive);
        assert_eq!(a.local_health(), 0);
    }

    #[test]
    fn an_unanswered_probe_goes_indirect_then_suspects_then_declares_dead() {
        let mut a = node(1, &[2, 3, 4, 5]);
        // Probe until the target is node 2.
        let mut t = 0;
        let seq = loop {
            t += 200;
            a.handle_timer(Timer::ProbeTick, ms(t));
            let out = sends(&mut a);
            if let Some((
                2,
                Packet {
                    message: Message::Ping { seq },
                    ..
                },
            )) = out.first().cloned()
            {
                break seq;
            }
            a.handle_timer(Timer::IndirectTimeout { seq: 999 }, ms(t));
        };
        a.handle_timer(Timer::ProbeTimeout { seq }, ms(t + 100));
        let reqs: Vec<_> = sends(&mut a)
            .into_iter()
            .filter(|(_, p)| matches!(p.message, Message::PingReq { target: 2, .. }))
            .collect();
        assert_eq!(reqs.len(), 3, "ping-req goes to indirect_checks members");
        for (helper, _) in &reqs {
            a.handle_packet(
                *helper,
                Packet {
                    message: Message::Nack { seq },
                    updates: vec![],
                },
                ms(t + 150),
            );
        }
        a.handle_timer(Timer::IndirectTimeout { seq }, ms(t + 200));
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Suspect);
        assert_eq!(a.local_health(), 0, "nacks arrived: the fault is not ours");
        // The suspicion runs out.
        a.handle_timer(Timer::Suspicion { id: 2, inc: 1 }, ms(t + 200 + 60_000));
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Dead);
    }

    /// `from` declares `id` dead at incarnation 1.
    fn dead_of(id: u32, from: u32) -> Packet<u32, u8, ()> {
        gossip(vec![Update::Dead { id, inc: 1, from }])
    }

    fn gossip(updates: Vec<Update<u32, u8, ()>>) -> Packet<u32, u8, ()> {
        Packet {
            message: Message::Gossip,
            updates,
        }
    }

    #[test]
    fn two_sides_that_declared_each_other_dead_reconnect_after_the_partition_heals() {
        let mut a = node(1, &[2]);
        let mut b = node(2, &[1]);
        a.handle_packet(3, dead_of(2, 3), ms(10));
        b.handle_packet(3, dead_of(1, 3), ms(10));
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Dead);
        a.drain_outputs().for_each(drop);
        b.drain_outputs().for_each(drop);
        // a's reconnect tick tells b; b refutes to a; b's tick does the same the other way.
        a.handle_timer(Timer::ReconnectTick, ms(20_000));
        for (to, p) in sends(&mut a) {
            assert_eq!(to, 2);
            b.handle_packet(1, p, ms(20_001));
        }
        for (_, p) in sends(&mut b).into_iter().filter(|(to, _)| *to == 1) {
            a.handle_packet(2, p, ms(20_002));
        }
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Alive);
        b.handle_timer(Timer::ReconnectTick, ms(20_003));
        for (_, p) in sends(&mut b).into_iter().filter(|(to, _)| *to == 1) {
            a.handle_packet(2, p, ms(20_004));
        }
        for (_, p) in sends(&mut a).into_iter().filter(|(to, _)| *to == 2) {
            b.handle_packet(1, p, ms(20_005));
        }
        assert_eq!(b.member(&1).unwrap().liveness, Liveness::Alive);
    }

    #[test]
    fn confirmations_from_different_accusers_travel_together_and_a_death_supersedes_them() {
        let mut a = node(1, &[2, 3, 4, 5]);
        let suspect = |from| Update::Suspect {
            id: 2,
            inc: 1,
            from,
        };
        a.handle_packet(3, gossip(vec![suspect(3)]), ms(10));
        a.handle_packet(4, gossip(vec![suspect(4)]), ms(11));
        let about_2 = |a: &Core| a.queue.iter().filter(|b| b.update.subject() == 2).count();
        assert_eq!(about_2(&a), 2);
        a.handle_packet(5, dead_of(2, 5), ms(12));
        assert_eq!(about_2(&a), 1);
    }

    #[test]
    fn each_confirmer_of_a_refuted_suspicion_hears_the_refutation_once_directly() {
        let mut b = node(2, &[1, 3, 4]);
        let suspect = |from| {
            gossip(vec![Update::Suspect {
                id: 2,
                inc: 1,
                from,
            }])
        };
        let alive_to = |b: &mut Core| -> Vec<u32> {
            sends(b)
                .into_iter()
                .filter(|(_, p)| matches!(p.updates[..], [Update::Alive { id: 2, inc: 2, .. }]))
                .map(|(to, _)| to)
                .collect()
        };
        b.handle_packet(3, suspect(3), ms(10));
        assert_eq!(alive_to(&mut b), [3]);
        b.handle_packet(1, suspect(4), ms(20));
        assert_eq!(alive_to(&mut b), [4], "a confirmer is told straight");
        b.handle_packet(1, suspect(4), ms(30));
        assert!(alive_to(&mut b).is_empty(), "once");
        assert_eq!(b.incarnation(), 2, "one refutation, not one per confirmer");
    }

    #[test]
    fn a_member_held_dead_that_talks_to_us_is_told_so() {
        let mut a = node(1, &[2, 3]);
        a.handle_packet(3, dead_of(2, 3), ms(10));
        a.drain_outputs().for_each(drop);
        a.handle_packet(
            2,
            Packet {
                message: Message::Ping { seq: 5 },
                updates: vec![],
            },
            ms(20),
        );
        let told = sends(&mut a).into_iter().any(|(to, p)| {
            to == 2
                && p.updates
                    .iter()
                    .any(|u| matches!(u, Update::Dead { id: 2, .. }))
        });
        assert!(told);
    }

    #[test]
    fn a_death_in_a_pushed_table_is_only_a_suspicion_here() {
        let mut a = node(1, &[2, 3]);
        let table = Packet {
            message: Message::PushPull {
                state: vec![Update::Dead {
                    id: 2,
                    inc: 1,
                    from: 3,
                }],
                reply: false,
            },
            updates: vec![],
        };
        a.handle_packet(3, table, ms(10));
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Suspect);
        a.handle_packet(3, dead_of(2, 3), ms(20));
        assert_eq!(
            a.member(&2).unwrap().liveness,
            Liveness::Dead,
            "gossiped deaths apply"
        );
    }

    #[test]
    fn a_suspected_node_refutes_with_a_higher_incarnation_which_clears_the_suspicion() {
        let mut a = node(1, &[2, 3]);
        let mut b = node(2, &[1, 3]);
        let suspect = Update::Suspect {
            id: 2,
            inc: 1,
            from: 3,
        };
        a.handle_packet(
            3,
            Packet {
                message: Message::Gossip,
                updates: vec![suspect.clone()],
            },
            ms(10),
        );
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Suspect);
        b.handle_packet(
            3,
            Packet {
                message: Message::Gossip,
                updates: vec![suspect],
            },
            ms(10),
        );
        assert_eq!(b.incarnation(), 2);
        assert_eq!(
            b.local_health(),
            1,
            "being suspected raises our own health multiplier"
        );
        b.handle_timer(Timer::GossipTick, ms(20));
        let refutation = sends(&mut b)
            .into_iter()
            .flat_map(|(_, p)| p.updates)
            .find(|u| matches!(u, Update::Alive { id: 2, inc: 2, .. }))
            .expect("the refutation is gossiped");
        a.handle_packet(
            2,
            Packet {
                message: Message::Gossip,
                updates: vec![refutation],
            },
            ms(30),
        );
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Alive);
        // The stale suspicion timer is a no-op.
        a.handle_timer(Timer::Suspicion { id: 2, inc: 1 }, ms(60_000));
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Alive);
    }

    #[test]
    fn confirmations_shrink_the_suspicion_timeout_to_its_minimum() {
        let a = node(1, &(2..=100).collect::<Vec<_>>());
        let min = a.suspicion_min();
        // Table: confirmations -> timeout.
        let max = min * SwimConfig::default().suspicion_max_mult;
        assert_eq!(a.suspicion_timeout(0), max);
        assert!(a.suspicion_timeout(1) < max && a.suspicion_timeout(1) > min);
        assert!(a.suspicion_timeout(2) < a.suspicion_timeout(1));
        assert_eq!(a.suspicion_timeout(3), min);
        assert_eq!(a.suspicion_timeout(10), min);
        // 100 members: suspicion_mult · log10(100) · probe_interval.
        let cfg = SwimConfig::default();
        assert_eq!(min, cfg.probe_interval * cfg.suspicion_mult * 2);
    }

    /// Accepts only proofs equal to the subject's id: a stand-in for signatures.
    struct ById;
    impl Authority<u32, u8> for ById {
        type Proof = u32;
        fn prove(&self, _: u64, _: &u8, _: bool) -> u32 {
            0
        }
        fn verify(&self, subject: &u32, _: u64, _: &u8, _: bool, proof: &u32) -> bool {
            proof == subject
        }
    }

    #[test]
    fn forged_alive_and_leave_announcements_change_nothing_and_are_counted() {
        let mut a: Swim<u32, u8, ById> = Swim::new(1, 1, 0, ById, SwimConfig::default(), 1, ms(0));
        a.assume_alive(2, 1, 0, 2, ms(0));
        let forged_leave = Update::Left {
            id: 2,
            inc: 5,
            meta: 0,
            proof: 9,
        };
        let forged_alive = Update::Alive {
            id: 3,
            inc: 1,
            meta: 0,
            proof: 9,
        };
        a.handle_packet(
            9,
            Packet {
                message: Message::Gossip,
                updates: vec![forged_leave, forged_alive],
            },
            ms(5),
        );
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Alive);
        assert!(a.member(&3).is_none());
        assert_eq!(a.rejected().bad_proof, 2);
        let genuine = Update::Left {
            id: 2,
            inc: 2,
            meta: 0,
            proof: 2,
        };
        a.handle_packet(
            2,
            Packet {
                message: Message::Gossip,
                updates: vec![genuine],
            },
            ms(6),
        );
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::Left);
    }

    #[test]
    fn a_member_that_announces_itself_through_others_is_an_unreachable_link_not_a_suspect() {
        let mut a = node(1, &[2]);
        a.handle_timer(Timer::ProbeTick, ms(200));
        let seq = match sends(&mut a).remove(0).1.message {
            Message::Ping { seq } => seq,
            other => panic!("expected a ping, got {other:?}"),
        };
        // Node 2 announces a new incarnation through a third party while our probes fail.
        let relayed = Update::Alive {
            id: 2,
            inc: 2,
            meta: 0,
            proof: (),
        };
        a.handle_packet(
            3,
            Packet {
                message: Message::Gossip,
                updates: vec![relayed],
            },
            ms(250),
        );
        a.handle_timer(Timer::ProbeTimeout { seq }, ms(300));
        a.handle_timer(Timer::IndirectTimeout { seq }, ms(400));
        assert_eq!(a.member(&2).unwrap().liveness, Liveness::UnreachableLink);
    }

    #[test]
    fn missing_nacks_raise_local_health_and_stretch_the_probe_interval() {
        let mut a = node(1, &[2, 3, 4, 5]);
        a.handle_timer(Timer::ProbeTick, ms(200));
        let seq = match sends(&mut a).remove(0).1.message {
            Message::Ping { seq } => seq,
            other => panic!("expected a ping, got {other:?}"),
        };
        a.handle_timer(Timer::ProbeTimeout { seq }, ms(300));
        a.handle_timer(Timer::IndirectTimeout { seq }, ms(400));
        assert_eq!(a.local_health(), 1);
        a.handle_timer(Timer::ProbeTick, ms(400));
        let next = a
            .drain_outputs()
            .find_map(|o| match o {
                Output::SetTimer(at, Timer::ProbeTick) => Some(at),
                _ => None,
            })
            .unwrap();
        assert_eq!(next, ms(400) + SwimConfig::default().probe_interval * 2);
    }

    /// Regression: a join is one packet; when it was lost the joiner stayed alone for good.
    #[test]
    fn a_lost_join_is_retried_until_a_member_answers() {
        let mut joiner: Core = Swim::new(9, 1, 0, Trusting, SwimConfig::default(), 9, ms(0));
        joiner.join(1);
        let first = sends(&mut joiner);
        assert!(matches!(
            first[0],
            (
                1,
                Packet {
                    message: Message::PushPull { reply: true, .. },
                    ..
                }
            )
        ));
        // The packet is lost; at the next probe period the joiner knocks again.
        joiner.handle_timer(Timer::ProbeTick, ms(150));
        let again = sends(&mut joiner);
        assert!(again
            .iter()
            .any(|(to, p)| *to == 1 && matches!(p.message, Message::PushPull { reply: true, .. })));
        // Once it knows a live member, it probes instead.
        joiner.handle_packet(
            1,
            Packet {
                message: Message::Gossip,
                updates: vec![Update::Alive {
                    id: 1,
                    inc: 1,
                    meta: 0,
                    proof: (),
                }],
            },
            ms(200),
        );
        joiner.handle_timer(Timer::ProbeTick, ms(300));
        assert!(sends(&mut joiner)
            .iter()
            .all(|(_, p)| matches!(p.message, Message::Ping { .. })));
    }
}
