//! The election core: who holds each blade, and how a replacement takes it without ever letting two
//! nodes act as one blade. Sans-IO: it takes messages, membership changes and ticks with `now`, and
//! returns messages to send, records to persist and changes to act on.
//!
//! **Seats and epochs.** The seat table maps a blade to its holder and epoch. An entry only ever
//! moves to a higher epoch, and only a won claim makes one.
//!
//! **Claims and promises.** A candidate first asks the voters whether they would grant it the
//! blade at `epoch + 1` (a pre-vote: nobody promises anything, so a candidate that cannot win, on
//! the minority side of a partition or cut off itself, raises no voter's epoch and leaves nothing
//! for the holder to climb over afterwards). With a majority willing, it claims. A voter grants at most one
//! claimant per (blade, epoch): it keeps the highest epoch it promised for each blade, persists it
//! before answering, and refuses any claim at or below it from someone else. A claim wins with
//! grants from a majority of the known members (dead ones included), so two claims at one epoch
//! cannot both win, and the minority side of a partition never wins at all. Every node ranks the
//! candidates the same way ([`super::rank`]), so usually one claims and no vote is split.
//!
//! **Leases.** Winning an epoch is not enough to act: the holder acts only while it holds a lease,
//! renewed every `renew_interval` by a majority. A voter that acked a renewal (or granted a claim)
//! at time `t` grants no other claim for that blade before `t + lease`, and a voter refuses to renew
//! an epoch older than its promise. The holder's lease runs from when it *sent* the renewal, less a
//! margin for clock-rate drift, so it always ends before any majority can grant a successor. A
//! holder cut off from a majority therefore stops on its own (self-fencing), and a paused or
//! restarted holder acts again only after a fresh majority renews it.
//!
//! **Restarts.** Seats and promises are durable ([`Durable`]); lease acks are not, so a restarted
//! voter grants nothing for one lease.
//!
//! Call order: feed [`Election::handle_message`], [`Election::handle_member`] and
//! [`Election::handle_tick`] (at the time of each [`Output::SetTimer`]) with `now`, then take
//! [`Election::drain_outputs`] and carry them out in order: an [`Output::Persist`] must be durable
//! before any message after it is sent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::rank::{self, Fit};

/// A blade's name.
pub type Blade = String;

/// Who holds a blade, at which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat<Id> {
    /// The node holding the blade.
    pub holder: Id,
    /// The epoch it won.
    pub epoch: u64,
}

/// Why a claim is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The holder is dead (in the claimant's view, and each voter checks its own).
    Failure,
    /// The holder released the blade for an operator's move to the claimant.
    Move,
}

/// The election protocol's messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message<Id> {
    /// Would you grant me `blade` at `epoch` now? (The pre-vote: the answer promises nothing.)
    Ask {
        /// The blade.
        blade: Blade,
        /// The epoch the claim would be at.
        epoch: u64,
    },
    /// I would grant it now.
    WouldGrant {
        /// The blade.
        blade: Blade,
        /// The epoch asked about.
        epoch: u64,
    },
    /// Grant me `blade` at `epoch`.
    Claim {
        /// The blade.
        blade: Blade,
        /// The epoch claimed.
        epoch: u64,
        /// Why.
        reason: Reason,
    },
    /// Granted: I promise no other claimant this epoch or below.
    Grant {
        /// The blade.
        blade: Blade,
        /// The epoch granted.
        epoch: u64,
    },
    /// Refused (a claim or a renewal); here is what I know.
    Refuse {
        /// The blade.
        blade: Blade,
        /// The epoch refused.
        epoch: u64,
        /// My seat entry for the blade.
        seat: Option<Seat<Id>>,
        /// The highest epoch I promised for the blade (0 for none).
        promised: u64,
    },
    /// I won `blade` at this seat.
    Won {
        /// The blade.
        blade: Blade,
        /// The new seat.
        seat: Seat<Id>,
    },
    /// Renew my lease on `blade` at `epoch`.
    Renew {
        /// The blade.
        blade: Blade,
        /// The holder's epoch.
        epoch: u64,
        /// The renewal round, to match the answers.
        round: u64,
    },
    /// Renewed.
    Renewed {
        /// The blade.
        blade: Blade,
        /// The holder's epoch.
        epoch: u64,
        /// The round answered.
        round: u64,
    },
    /// I stopped acting as `blade` at `epoch` so that `to` can claim it (an operator's move).
    Release {
        /// The blade.
        blade: Blade,
        /// The epoch released.
        epoch: u64,
        /// The node that should claim it.
        to: Id,
    },
    /// My whole seat table (anti-entropy).
    Seats {
        /// Every seat I know.
        seats: Vec<(Blade, Seat<Id>)>,
    },
}

/// Timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Renewals, claims and seat gossip are due.
    Tick,
}

/// What the core asks its driver to do, or tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<Id> {
    /// Send this message.
    Send(Id, Message<Id>),
    /// Call `handle_tick` at this time.
    SetTimer(Duration, Timer),
    /// Write [`Election::durable`] to stable storage before sending anything that follows.
    Persist,
    /// This node now holds `blade` at `epoch` (it acts once its lease is granted).
    Acquired {
        /// The blade.
        blade: Blade,
        /// The epoch won.
        epoch: u64,
    },
    /// This node must stop acting as `blade` at once: a higher epoch exists, or it released it.
    Lost {
        /// The blade.
        blade: Blade,
        /// The epoch it held.
        epoch: u64,
    },
    /// The seat table changed.
    SeatChanged {
        /// The blade.
        blade: Blade,
        /// Its new seat.
        seat: Seat<Id>,
    },
}

/// What survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Durable<Id> {
    /// The seat table.
    pub seats: BTreeMap<Blade, Seat<Id>>,
    /// For each blade, the highest epoch promised and to whom.
    pub promises: BTreeMap<Blade, (u64, Id)>,
}

impl<Id> Default for Durable<Id> {
    fn default() -> Self {
        Durable {
            seats: BTreeMap::new(),
            promises: BTreeMap::new(),
        }
    }
}

/// Settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ElectionConfig {
    /// How long a renewal or a grant holds voters back from granting a successor.
    pub lease: Duration,
    /// The holder's lease ends this fraction of `lease` early, against clock-rate drift.
    pub drift_margin: f64,
    /// Time between the holder's renewal rounds.
    pub renew_interval: Duration,
    /// How long a claim may take before it is given up (and before the next candidate in rank
    /// order claims in its place).
    pub claim_timeout: Duration,
    /// Time between ticks.
    pub tick: Duration,
    /// Ticks between seat-table exchanges with one random member.
    pub gossip_ticks: u32,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            lease: Duration::from_millis(1500),
            drift_margin: 0.1,
            renew_interval: Duration::from_millis(300),
            claim_timeout: Duration::from_millis(1000),
            tick: Duration::from_millis(50),
            gossip_ticks: 20,
        }
    }
}

/// A member as the membership layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberView {
    /// Alive on some liveness channel (not confirmed dead, not left).
    pub alive: bool,
    /// May take a blade over (a spare, or a node that holds none and is allowed to, or an active
    /// node an operator allowed to take more).
    pub candidate: bool,
    /// Blades it may hold beyond one: an active node with spare capacity, allowed by an operator
    /// to take a blade when no spare can. It is ranked after every spare.
    pub extra: u8,
    /// Degraded, or its disk nearly full: a candidate ranked after those that are not.
    pub strained: bool,
    /// Its zone ([`rank::zone_key`]): candidates in a blade's zone are ranked first.
    pub zone: u64,
}

#[derive(Debug, Clone)]
struct Claim<Id> {
    epoch: u64,
    reason: Reason,
    /// Whether the claim itself is out; before, the voters were only asked (the pre-vote).
    claimed: bool,
    /// When to give up and try again (randomized, so that rival claimants fall out of step).
    retry_at: Duration,
    /// The voters willing (while asking) or granting (once claimed), this node included.
    grants: BTreeSet<Id>,
}

/// The holder's lease on one blade. Each voter's latest ack counts from when the round it
/// answers was sent, so acks to different rounds add up: under loss, a majority rarely answers one
/// round in full, but keeps answering.
#[derive(Debug, Clone)]
struct Lease<Id> {
    epoch: u64,
    until: Duration,
    /// Rounds of this lease still young enough to matter, with when each was sent.
    rounds: BTreeMap<u64, Duration>,
    /// When the last round was sent.
    last_sent: Option<Duration>,
    /// For each voter, the sending time of the latest round it acked.
    acked_sent: BTreeMap<Id, Duration>,
    /// The voters the last round was sent to.
    asked: Vec<Id>,
}

/// Voters asked in a renewal round beyond the quorum, so that a lost ack or two costs nothing.
const SPARE_RENEWERS: usize = 2;

#[derive(Debug, Clone)]
struct Member {
    view: MemberView,
    /// When this node saw it die (for the candidates' turns).
    dead_since: Option<Duration>,
}

/// One node's election state.
pub struct Election<Id> {
    me: Id,
    /// This node as its members see it: whether it is a candidate, strained, its zone.
    own: MemberView,
    config: ElectionConfig,
    started: Duration,
    durable: Durable<Id>,
    members: BTreeMap<Id, Member>,
    /// When this node last acked a renewal of, or granted a claim on, each blade.
    acked: BTreeMap<Blade, Duration>,
    /// Blades released by their holder for a move: (epoch, target, when heard).
    released: BTreeMap<Blade, (u64, Id, Duration)>,
    /// When this node made its promise for each blade (not durable: after a restart nobody is
    /// deferred to).
    promised_at: BTreeMap<Blade, Duration>,
    /// The highest promise others reported for each blade, so the next claim goes above it.
    promised_seen: BTreeMap<Blade, u64>,
    claims: BTreeMap<Blade, Claim<Id>>,
    leases: BTreeMap<Blade, Lease<Id>>,
    ticks: u64,
    /// The last renewal round sent.
    round: u64,
    rng: StdRng,
    out: Vec<Output<Id>>,
}

impl<Id> Election<Id>
where
    Id: Copy + Ord + Hash + Debug + std::fmt::Display,
{
    /// A node starting (or restarting) with what it persisted. Arms the tick.
    pub fn new(
        me: Id,
        candidate: bool,
        durable: Durable<Id>,
        config: ElectionConfig,
        seed: u64,
        now: Duration,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut e = Election {
            round: rng.gen::<u64>() | 1,
            me,
            own: MemberView {
                alive: true,
                candidate,
                ..MemberView::default()
            },
            started: now,
            durable,
            members: BTreeMap::new(),
            acked: BTreeMap::new(),
            released: BTreeMap::new(),
            promised_seen: BTreeMap::new(),
            promised_at: BTreeMap::new(),
            claims: BTreeMap::new(),
            leases: BTreeMap::new(),
            ticks: 0,
            rng,
            out: Vec::new(),
            config,
        };
        e.out
            .push(Output::SetTimer(now + e.config.tick, Timer::Tick));
        e
    }

    /// What must survive a restart.
    pub fn durable(&self) -> &Durable<Id> {
        &self.durable
    }

    /// The seat table.
    pub fn seats(&self) -> &BTreeMap<Blade, Seat<Id>> {
        &self.durable.seats
    }

    /// Whether this node may act as `blade` now: it holds the seat and a lease that has not run out.
    pub fn serving(&self, blade: &str, now: Duration) -> Option<u64> {
        let seat = self.durable.seats.get(blade)?;
        let lease = self.leases.get(blade)?;
        (seat.holder == self.me && lease.epoch == seat.epoch && now < lease.until)
            .then_some(seat.epoch)
    }

    /// Takes what the driver must do.
    pub fn drain_outputs(&mut self) -> std::vec::Drain<'_, Output<Id>> {
        self.out.drain(..)
    }

    /// The membership layer's view of a member changed (or it is new: it then counts in every
    /// quorum from now on).
    pub fn handle_member(&mut self, id: Id, view: MemberView, now: Duration) {
        if id == self.me {
            return;
        }
        let m = self.members.entry(id).or_insert(Member {
            view,
            dead_since: None,
        });
        if m.view.alive && !view.alive {
            m.dead_since = Some(now);
        } else if view.alive {
            m.dead_since = None;
        }
        m.view = view;
    }

    /// An operator removes a member for good: it no longer counts in quorums.
    pub fn forget(&mut self, id: Id) {
        self.members.remove(&id);
    }

    /// Whether this node may take a blade over. A node changes its mind when it loses its own
    /// blade to a higher epoch (it is a spare from then on) or starts acting as one.
    pub fn set_candidate(&mut self, candidate: bool) {
        self.own.candidate = candidate;
    }

    /// Whether this node is strained, and its zone, for ranking it among a blade's candidates
    /// as its members rank it.
    pub fn set_standing(&mut self, strained: bool, zone: u64) {
        self.own.strained = strained;
        self.own.zone = zone;
    }

    /// How many blades this node may hold beyond one (an operator's allowance for an active node
    /// with spare capacity), as its members see it in its metadata.
    pub fn set_extra(&mut self, extra: u8) {
        self.own.extra = extra;
    }

    /// Claims `blade`, which no seat names yet, for this node: how a blade gets its first holder,
    /// through the same majority as any later claim (at epoch 1, or above any promise seen).
    /// Does nothing while the blade has a seat, while an earlier claim of it has not timed out,
    /// or while this node holds another blade. A voter that knows a seat refuses with it, so a
    /// node that missed the seat table learns it this way instead of winning.
    pub fn claim_unseated(&mut self, blade: &str, now: Duration) {
        if self.durable.seats.contains_key(blade)
            || self.durable.seats.values().any(|s| s.holder == self.me)
        {
            return;
        }
        if let Some(c) = self.claims.get(blade) {
            if now < c.retry_at {
                return;
            }
            self.claims.remove(blade);
        }
        if self.deferring(blade, 0, now) {
            return;
        }
        self.start_claim(blade.into(), 0, Reason::Failure, now);
    }

    /// An operator moves `blade`, held here, to `to`: this node stops acting as it at once and
    /// tells everyone, so that `to` claims it without waiting for the lease to run out.
    pub fn release(&mut self, blade: &str, to: Id, now: Duration) {
        let Some(seat) = self.durable.seats.get(blade).copied() else {
            return;
        };
        if seat.holder != self.me || to == self.me {
            return;
        }
        self.fence(blade, seat.epoch);
        self.released.insert(blade.into(), (seat.epoch, to, now));
        self.broadcast(Message::Release {
            blade: blade.into(),
            epoch: seat.epoch,
            to,
        });
    }

    /// A message from `from` (authenticated by the transport).
    pub fn handle_message(&mut self, from: Id, msg: Message<Id>, now: Duration) {
        match msg {
            Message::Ask { blade, epoch } => match self.may_grant(&blade, epoch, from, now) {
                Ok(()) => self
                    .out
                    .push(Output::Send(from, Message::WouldGrant { blade, epoch })),
                Err(why) => {
                    // Claims are retried every claim timeout or two, so this stays a few lines
                    // per outage, and it says why a blade stays down.
                    tracing::info!(%blade, epoch, claimant = %from, "would not grant the blade: {why}");
                    self.refuse(from, blade, epoch)
                }
            },
            Message::WouldGrant { blade, epoch } => {
                self.handle_vote(from, blade, epoch, false, now)
            }
            Message::Claim {
                blade,
                epoch,
                reason,
            } => self.handle_claim(from, blade, epoch, reason, now),
            Message::Grant { blade, epoch } => self.handle_vote(from, blade, epoch, true, now),
            Message::Refuse {
                blade,
                epoch: _,
                seat,
                promised,
            } => self.handle_refuse(blade, seat, promised),
            Message::Won { blade, seat } => {
                if seat.holder == from {
                    self.learn(&blade, seat);
                }
            }
            Message::Renew {
                blade,
                epoch,
                round,
            } => self.handle_renew(from, blade, epoch, round, now),
            Message::Renewed {
                blade,
                epoch,
                round,
            } => self.handle_renewed(from, blade, epoch, round),
            Message::Release { blade, epoch, to } => {
                let held = self
                    .durable
                    .seats
                    .get(&blade)
                    .is_some_and(|s| s.holder == from && s.epoch == epoch);
                if held {
                    self.released.insert(blade, (epoch, to, now));
                }
            }
            Message::Seats { seats } => {
                for (blade, seat) in seats {
                    self.learn(&blade, seat);
                }
            }
        }
    }

    /// Renewals, claims and gossip.
    pub fn handle_tick(&mut self, now: Duration) {
        self.ticks += 1;
        self.out
            .push(Output::SetTimer(now + self.config.tick, Timer::Tick));
        self.renew(now);
        self.repeat_releases();
        self.claim_vacant(now);
        if self
            .ticks
            .is_multiple_of(u64::from(self.config.gossip_ticks.max(1)))
        {
            let seats: Vec<_> = self
                .durable
                .seats
                .iter()
                .map(|(b, s)| (b.clone(), *s))
                .collect();
            let live: Vec<Id> = self
                .members
                .iter()
                .filter(|(_, m)| m.view.alive)
                .map(|(id, _)| *id)
                .collect();
            if let Some(peer) = live.choose(&mut self.rng) {
                self.out.push(Output::Send(*peer, Message::Seats { seats }));
            }
        }
    }

    /// How `id` (a member, or this node) is seen.
    fn view(&self, id: Id) -> Option<MemberView> {
        if id == self.me {
            return Some(self.own);
        }
        self.members.get(&id).map(|m| m.view)
    }

    /// `candidates` in `blade`'s rank order ([`rank`]): each one's fit, from how it is seen,
    /// against the zone of the blade's holder, then the rendezvous score. Every node ranks the
    /// same candidates the same way, given the same views.
    pub fn rank(&self, blade: &str, candidates: impl IntoIterator<Item = Id>) -> Vec<Id> {
        let blade_zone = self
            .durable
            .seats
            .get(blade)
            .and_then(|s| self.view(s.holder))
            .map(|v| v.zone);
        let fits = candidates.into_iter().map(|id| {
            let v = self.view(id).unwrap_or_default();
            let busy = self.held_by(id, Some(blade)) > 0;
            (id, Fit::new(busy, v.strained, v.zone, blade_zone))
        });
        rank::ranked(blade, fits)
    }

    /// How many blades (other than `except`) the seat table says `id` holds.
    fn held_by(&self, id: Id, except: Option<&str>) -> usize {
        self.durable
            .seats
            .iter()
            .filter(|(b, s)| s.holder == id && Some(b.as_str()) != except)
            .count()
    }

    /// How many blades `id` (a member, or this node) may hold beyond one.
    fn extra_of(&self, id: Id) -> usize {
        self.view(id).map_or(0, |v| usize::from(v.extra))
    }

    /// Whether `id` (a member, or this node) may hold one blade more than it does.
    fn has_room(&self, id: Id) -> bool {
        self.held_by(id, None) <= self.extra_of(id)
    }

    fn alive(&self, id: Id) -> bool {
        id == self.me || self.members.get(&id).is_some_and(|m| m.view.alive)
    }

    /// Grants needed: a majority of every known member, dead ones included, and this node.
    fn quorum(&self) -> usize {
        let voters = self.members.len() + 1;
        voters / 2 + 1
    }

    fn broadcast(&mut self, msg: Message<Id>) {
        for id in self.members.keys() {
            self.out.push(Output::Send(*id, msg.clone()));
        }
    }

    fn renew(&mut self, now: Duration) {
        let held: Vec<(Blade, u64)> = self
            .durable
            .seats
            .iter()
            .filter(|(b, s)| {
                s.holder == self.me && self.released.get(*b).is_none_or(|(e, _, _)| *e != s.epoch)
            })
            .map(|(b, s)| (b.clone(), s.epoch))
            .collect();
        for (blade, epoch) in held {
            // A promise above our epoch means a successor may be elected: never renew under it.
            if self
                .durable
                .promises
                .get(&blade)
                .is_some_and(|(p, _)| *p > epoch)
            {
                self.fence(&blade, epoch);
                continue;
            }
            let fresh = Lease {
                epoch,
                until: Duration::ZERO,
                rounds: BTreeMap::new(),
                last_sent: None,
                acked_sent: BTreeMap::new(),
                asked: Vec::new(),
            };
            let lease = self.leases.entry(blade.clone()).or_insert(fresh.clone());
            if lease.epoch != epoch {
                *lease = fresh;
            }
            if lease
                .last_sent
                .is_some_and(|t| now < t + self.config.renew_interval)
            {
                continue;
            }
            let asked = self.renewers(&blade, now);
            let Some(lease) = self.leases.get_mut(&blade) else {
                continue;
            };
            // Rounds are numbered across leases and lives, from a random start: an answer to a
            // round of an earlier lease must never count for a new one.
            self.round = self.round.wrapping_add(1);
            let round = self.round;
            let horizon = now.saturating_sub(self.config.lease);
            lease.rounds.retain(|_, sent| *sent >= horizon);
            lease.rounds.insert(round, now);
            lease.last_sent = Some(now);
            lease.acked_sent.insert(self.me, now);
            lease.asked.clone_from(&asked);
            self.acked.insert(blade.clone(), now);
            self.count_renewal(&blade);
            for id in asked {
                self.out.push(Output::Send(
                    id,
                    Message::Renew {
                        blade: blade.clone(),
                        epoch,
                        round,
                    },
                ));
            }
        }
    }

    /// The voters a renewal round of `blade` goes to. A lease needs acks from a quorum only, so
    /// while it runs, a round asks the quorum plus [`SPARE_RENEWERS`] live voters, in an order of
    /// their own for each blade (so that the holders spread their rounds over the mesh), and one
    /// more for each voter that has not answered the last round yet. A lease that has run out
    /// (or never ran) asks every member, as do rounds that would ask nearly everyone anyway. Asking everyone each round cost each holder a
    /// message and an answer per member three times a second: 66,000 messages a second for a
    /// hundred blades. Safety does not depend on who is asked: the lease runs only from acks of
    /// a quorum, and any claim's majority includes one of those voters.
    fn renewers(&self, blade: &str, now: Duration) -> Vec<Id> {
        let everyone = || self.members.keys().copied().collect();
        let Some(lease) = self.leases.get(blade) else {
            return everyone();
        };
        let Some(last_sent) = lease.last_sent.filter(|_| now < lease.until) else {
            return everyone();
        };
        let alive: Vec<Id> = self
            .members
            .iter()
            .filter(|(_, m)| m.view.alive)
            .map(|(id, _)| *id)
            .collect();
        let unanswered = lease
            .asked
            .iter()
            .filter(|id| lease.acked_sent.get(*id).is_none_or(|t| *t < last_sent))
            .count();
        let want = self.quorum().saturating_sub(1) + SPARE_RENEWERS + unanswered;
        if want >= alive.len() {
            return everyone();
        }
        let mut order: Vec<(u64, Id)> = alive
            .into_iter()
            .map(|id| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (blade, id).hash(&mut h);
                (h.finish(), id)
            })
            .collect();
        order.sort_unstable();
        order.into_iter().take(want).map(|(_, id)| id).collect()
    }

    /// A release is said again every few ticks until the blade changes hands: voters that missed
    /// it would refuse the move's claim while the (alive) holder is, to them, still holding.
    fn repeat_releases(&mut self) {
        if !self.ticks.is_multiple_of(4) {
            return;
        }
        let pending: Vec<(Blade, u64, Id)> = self
            .released
            .iter()
            .filter(|(b, (e, _, _))| {
                self.durable
                    .seats
                    .get(*b)
                    .is_some_and(|s| s.holder == self.me && s.epoch == *e)
            })
            .map(|(b, (e, to, _))| (b.clone(), *e, *to))
            .collect();
        for (blade, epoch, to) in pending {
            self.broadcast(Message::Release { blade, epoch, to });
        }
    }

    /// The lease runs `holder_lease` from the oldest of the latest rounds acked by a quorum:
    /// each of those voters acked no earlier than that round was sent, so none of them grants a
    /// successor before the lease ends.
    fn count_renewal(&mut self, blade: &str) {
        let quorum = self.quorum();
        let lease_len = self.holder_lease();
        if let Some(lease) = self.leases.get_mut(blade) {
            let mut sent: Vec<Duration> = lease.acked_sent.values().copied().collect();
            sent.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(oldest) = sent.get(quorum.saturating_sub(1)) {
                lease.until = lease.until.max(*oldest + lease_len);
            }
        }
    }

    fn holder_lease(&self) -> Duration {
        self.config
            .lease
            .mul_f64((1.0 - self.config.drift_margin).clamp(0.0, 1.0))
    }

    /// Claims the blades whose holder is gone, when it is this node's turn; and claims again, at
    /// a higher epoch, a blade this node holds but may no longer renew (a claimant that won
    /// promises for a successor died before it won, and the holder is alive, so nobody else would).
    fn claim_vacant(&mut self, now: Duration) {
        let mine: Vec<(Blade, u64)> = self
            .durable
            .seats
            .iter()
            .filter(|(_, s)| s.holder == self.me)
            .map(|(b, s)| (b.clone(), s.epoch))
            .collect();
        for (blade, epoch) in &mine {
            let promised = self.durable.promises.get(blade).map_or(0, |(e, _)| *e);
            let seen = self.promised_seen.get(blade).copied().unwrap_or(0);
            let released = self.released.get(blade).is_some_and(|(e, _, _)| e == epoch);
            if promised.max(seen) > *epoch && !released {
                if let Some(c) = self.claims.get(blade) {
                    if now < c.retry_at {
                        continue;
                    }
                    self.claims.remove(blade);
                }
                if self.deferring(blade, *epoch, now) {
                    continue;
                }
                self.start_claim(blade.clone(), *epoch, Reason::Failure, now);
            }
        }
        if !self.own.candidate || !self.has_room(self.me) {
            return;
        }
        // One blade at a time, counting claims in flight: a second claim made while the first
        // waits for its grants could win too, and one node would hold more blades than it may.
        if self.claims.values().any(|c| now < c.retry_at) {
            return;
        }
        let vacant: Vec<(Blade, Seat<Id>)> = self
            .durable
            .seats
            .iter()
            .map(|(b, s)| (b.clone(), *s))
            .collect();
        for (blade, seat) in vacant {
            if let Some(c) = self.claims.get(&blade) {
                if now < c.retry_at {
                    continue;
                }
                self.claims.remove(&blade);
            }
            if self.deferring(&blade, seat.epoch, now) {
                continue;
            }
            // When the seat fell vacant in this node's view, and who should claim first.
            let (since, first) = match self.released.get(&blade) {
                Some((e, to, at)) if *e == seat.epoch => (*at, Some(*to)),
                _ => match self.members.get(&seat.holder) {
                    Some(m) if !m.view.alive => (m.dead_since.unwrap_or(now), None),
                    _ => continue,
                },
            };
            let eligible: Vec<Id> = std::iter::once(self.me)
                .chain(
                    self.members
                        .iter()
                        .filter(|(_, m)| m.view.alive && m.view.candidate)
                        .map(|(id, _)| *id),
                )
                .filter(|id| self.has_room(*id))
                .collect();
            let mut order = self.rank(&blade, eligible);
            if let Some(to) = first {
                if let Some(i) = order.iter().position(|id| *id == to) {
                    let t = order.remove(i);
                    order.insert(0, t);
                }
            }
            let Some(turn) = order.iter().position(|id| *id == self.me) else {
                continue;
            };
            if now < since + self.config.claim_timeout * turn as u32 {
                continue;
            }
            let reason = if first.is_some() {
                Reason::Move
            } else {
                Reason::Failure
            };
            self.start_claim(blade, seat.epoch, reason, now);
            // One claim at a time.
            return;
        }
    }

    /// Whether this node recently promised the blade to a live rival claimant, which should be
    /// given the time to win before this node competes.
    fn deferring(&self, blade: &str, seat_epoch: u64, now: Duration) -> bool {
        match (
            self.durable.promises.get(blade),
            self.promised_at.get(blade),
        ) {
            (Some((e, to)), Some(at)) => {
                *to != self.me
                    && *e > seat_epoch
                    && self.alive(*to)
                    && now < *at + self.config.claim_timeout * 2
            }
            _ => false,
        }
    }

    /// Starts the pre-vote for `blade` above `seat_epoch` and every promise this node knows of.
    fn start_claim(&mut self, blade: Blade, seat_epoch: u64, reason: Reason, now: Duration) {
        let promised = self.durable.promises.get(&blade).map_or(0, |(e, _)| *e);
        let seen = self.promised_seen.get(&blade).copied().unwrap_or(0);
        let epoch = seat_epoch.max(promised).max(seen) + 1;
        // This node votes too, by the same rules as any voter.
        if let Err(why) = self.may_grant(&blade, epoch, self.me, now) {
            tracing::debug!(%blade, epoch, "not claiming the blade: {why}");
            return;
        }
        tracing::info!(%blade, epoch, ?reason, "asking the voters for the blade");
        let retry_at = self.retry_time(now);
        self.claims.insert(
            blade.clone(),
            Claim {
                epoch,
                reason,
                claimed: false,
                retry_at,
                grants: BTreeSet::from([self.me]),
            },
        );
        self.broadcast(Message::Ask {
            blade: blade.clone(),
            epoch,
        });
        self.check_willing(&blade, now);
    }

    /// When a claim started now is given up (randomized, so that rivals fall out of step).
    fn retry_time(&mut self, now: Duration) -> Duration {
        now + self
            .config
            .claim_timeout
            .mul_f64(1.0 + self.rng.gen::<f64>())
    }

    /// A voter's answer to this node's ask (`claimed` false: a `WouldGrant`) or to its claim (a
    /// `Grant`): counted only for the claim in flight at that epoch, in that phase.
    fn handle_vote(&mut self, from: Id, blade: Blade, epoch: u64, claimed: bool, now: Duration) {
        let Some(c) = self.claims.get_mut(&blade) else {
            return;
        };
        if c.epoch != epoch || c.claimed != claimed {
            return;
        }
        c.grants.insert(from);
        if claimed {
            self.check_won(&blade, now);
        } else {
            self.check_willing(&blade, now);
        }
    }

    /// With a majority willing, the claim itself: promise, persist, ask for grants.
    fn check_willing(&mut self, blade: &str, now: Duration) {
        let quorum = self.quorum();
        let Some(c) = self.claims.get(blade) else {
            return;
        };
        if c.claimed || c.grants.len() < quorum {
            return;
        }
        let (epoch, reason) = (c.epoch, c.reason);
        // Things may have changed while the voters answered (a promise to a rival, a seat).
        if let Err(why) = self.may_grant(blade, epoch, self.me, now) {
            tracing::info!(%blade, epoch, "a majority would grant the blade, but not claiming it: {why}");
            self.claims.remove(blade);
            return;
        }
        tracing::info!(%blade, epoch, willing = c.grants.len(), "claiming the blade: a majority would grant it");
        self.promise(blade, epoch, self.me, now);
        let retry_at = self.retry_time(now);
        if let Some(c) = self.claims.get_mut(blade) {
            c.claimed = true;
            c.retry_at = retry_at;
            c.grants = BTreeSet::from([self.me]);
        }
        self.out.push(Output::Persist);
        self.broadcast(Message::Claim {
            blade: blade.into(),
            epoch,
            reason,
        });
        self.check_won(blade, now);
    }

    /// Why this node would refuse `claimant` the blade at `epoch`, if it would.
    fn may_grant(
        &self,
        blade: &str,
        epoch: u64,
        claimant: Id,
        now: Duration,
    ) -> Result<(), &'static str> {
        let seat = self.durable.seats.get(blade);
        if seat.is_some_and(|s| epoch <= s.epoch) {
            return Err("stale epoch");
        }
        match self.durable.promises.get(blade) {
            Some((e, c)) if *e == epoch && *c == claimant => return Ok(()),
            Some((e, _)) if *e >= epoch => return Err("promised to another"),
            _ => {}
        }
        if now < self.started + self.config.lease {
            return Err("restarted within a lease");
        }
        let released = match (seat, self.released.get(blade)) {
            (Some(s), Some((e, _, _))) => *e == s.epoch,
            _ => false,
        };
        // The lease protects the holder from a successor; the holder itself claiming a higher
        // epoch makes no second actor.
        let by_holder = seat.is_some_and(|s| s.holder == claimant);
        if !released
            && !by_holder
            && self
                .acked
                .get(blade)
                .is_some_and(|t| now < *t + self.config.lease)
        {
            return Err("the holder's lease may still run");
        }
        if let Some(s) = seat {
            if !released && !by_holder && self.alive(s.holder) {
                return Err("the holder is alive");
            }
        }
        if !self.alive(claimant) {
            return Err("the claimant is not alive");
        }
        if self.held_by(claimant, Some(blade)) > self.extra_of(claimant) {
            return Err("the claimant holds as many blades as it may");
        }
        Ok(())
    }

    fn promise(&mut self, blade: &str, epoch: u64, to: Id, now: Duration) {
        self.durable.promises.insert(blade.into(), (epoch, to));
        self.promised_at.insert(blade.into(), now);
        if let Some(seat) = self.durable.seats.get(blade).copied() {
            if seat.holder == self.me && to != self.me {
                self.fence(blade, seat.epoch);
            }
        }
    }

    fn handle_claim(&mut self, from: Id, blade: Blade, epoch: u64, _reason: Reason, now: Duration) {
        match self.may_grant(&blade, epoch, from, now) {
            Ok(()) => {
                self.promise(&blade, epoch, from, now);
                self.out.push(Output::Persist);
                self.out
                    .push(Output::Send(from, Message::Grant { blade, epoch }));
            }
            Err(why) => {
                tracing::info!(%blade, epoch, claimant = %from, "refused a claim of the blade: {why}");
                self.refuse(from, blade, epoch)
            }
        }
    }

    fn refuse(&mut self, to: Id, blade: Blade, epoch: u64) {
        let seat = self.durable.seats.get(&blade).copied();
        let promised = self.durable.promises.get(&blade).map_or(0, |(e, _)| *e);
        self.out.push(Output::Send(
            to,
            Message::Refuse {
                blade,
                epoch,
                seat,
                promised,
            },
        ));
    }

    fn check_won(&mut self, blade: &str, now: Duration) {
        let quorum = self.quorum();
        let Some(c) = self.claims.get(blade) else {
            return;
        };
        if !c.claimed || c.grants.len() < quorum {
            return;
        }
        let epoch = c.epoch;
        self.claims.remove(blade);
        // A node holds no more blades than it may: a claim that completes after another was won
        // is dropped then (the seat stays vacant for the next candidate, above this promise).
        if self.held_by(self.me, Some(blade)) > self.extra_of(self.me) {
            return;
        }
        let seat = Seat {
            holder: self.me,
            epoch,
        };
        if !self.learn(blade, seat) {
            return;
        }
        // Winning gives no lease: a grant holds no voter back from granting a later claim, so
        // the holder acts only once a majority renews it, which starts now.
        self.out.push(Output::Acquired {
            blade: blade.into(),
            epoch,
        });
        self.broadcast(Message::Won {
            blade: blade.into(),
            seat,
        });
        self.renew(now);
    }

    fn handle_refuse(&mut self, blade: Blade, seat: Option<Seat<Id>>, promised: u64) {
        let seen = self.promised_seen.entry(blade.clone()).or_insert(0);
        *seen = (*seen).max(promised);
        // A holder refused by some voters keeps its lease as long as a majority renews it; it will
        // claim a higher epoch to get past their promises (see `claim_vacant`).
        if let Some(seat) = seat {
            self.learn(&blade, seat);
        }
    }

    fn handle_renew(&mut self, from: Id, blade: Blade, epoch: u64, round: u64, now: Duration) {
        let promised = self.durable.promises.get(&blade).map_or(0, |(e, _)| *e);
        let known = self.durable.seats.get(&blade).map_or(0, |s| s.epoch);
        if promised > epoch || known > epoch {
            return self.refuse(from, blade, epoch);
        }
        if known < epoch {
            // Its `Won` did not reach us; only a winner renews.
            self.learn(
                &blade,
                Seat {
                    holder: from,
                    epoch,
                },
            );
        }
        self.acked.insert(blade.clone(), now);
        self.out.push(Output::Send(
            from,
            Message::Renewed {
                blade,
                epoch,
                round,
            },
        ));
    }

    fn handle_renewed(&mut self, from: Id, blade: Blade, epoch: u64, round: u64) {
        let Some(lease) = self.leases.get_mut(&blade) else {
            return;
        };
        // Only rounds of this lease count: an ack proves the voter held back from the time the
        // round it answers was sent.
        let Some(sent) = lease.rounds.get(&round).copied() else {
            return;
        };
        if lease.epoch == epoch {
            let latest = lease.acked_sent.entry(from).or_insert(sent);
            *latest = (*latest).max(sent);
            self.count_renewal(&blade);
        }
    }

    /// Adopts a seat if it is newer than ours. Returns whether it was.
    fn learn(&mut self, blade: &str, seat: Seat<Id>) -> bool {
        let old = self.durable.seats.get(blade).copied();
        if old.is_some_and(|s| s.epoch >= seat.epoch) {
            return false;
        }
        self.durable.seats.insert(blade.into(), seat);
        self.out.push(Output::Persist);
        if let Some(old) = old {
            if old.holder == self.me && seat.holder != self.me {
                self.fence(blade, old.epoch);
            }
        }
        if self
            .claims
            .get(blade)
            .is_some_and(|c| c.epoch <= seat.epoch)
        {
            self.claims.remove(blade);
        }
        self.released.remove(blade);
        self.out.push(Output::SeatChanged {
            blade: blade.into(),
            seat,
        });
        true
    }

    /// Stops acting as `blade` at once.
    fn fence(&mut self, blade: &str, epoch: u64) {
        // Tell the driver only if this node may have acted as the blade in this life.
        if self
            .leases
            .remove(blade)
            .is_some_and(|l| l.until > Duration::ZERO)
        {
            self.out.push(Output::Lost {
                blade: blade.into(),
                epoch,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivers every message among `nodes` (ids are indices) until none is left.
    fn pump(nodes: &mut [Election<u32>], now: Duration) {
        loop {
            let mut mail = Vec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                for o in n.drain_outputs() {
                    if let Output::Send(to, m) = o {
                        mail.push((i as u32, to, m));
                    }
                }
            }
            if mail.is_empty() {
                return;
            }
            for (from, to, m) in mail {
                nodes[to as usize].handle_message(from, m, now);
            }
        }
    }

    fn mesh(n: u32, now: Duration) -> Vec<Election<u32>> {
        let mut nodes: Vec<Election<u32>> = (0..n)
            .map(|i| {
                Election::new(
                    i,
                    false,
                    Durable::default(),
                    ElectionConfig::default(),
                    u64::from(i),
                    Duration::ZERO,
                )
            })
            .collect();
        for (i, node) in nodes.iter_mut().enumerate() {
            for j in 0..n {
                if j != i as u32 {
                    let view = MemberView {
                        alive: true,
                        candidate: false,
                        ..MemberView::default()
                    };
                    node.handle_member(j, view, now);
                }
            }
        }
        nodes
    }

    /// Ticks every node at `now` and delivers messages, until none is left, only between nodes
    /// on the same side of `cut` (`cut(i)` names node i's side).
    fn step_partitioned(nodes: &mut [Election<u32>], now: Duration, cut: impl Fn(u32) -> bool) {
        for n in nodes.iter_mut() {
            n.handle_tick(now);
        }
        loop {
            let mut mail = Vec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                for o in n.drain_outputs() {
                    if let Output::Send(to, m) = o {
                        if cut(i as u32) == cut(to) {
                            mail.push((i as u32, to, m));
                        }
                    }
                }
            }
            if mail.is_empty() {
                return;
            }
            for (from, to, m) in mail {
                nodes[to as usize].handle_message(from, m, now);
            }
        }
    }

    /// Every node sees blade-0 held by node 0 at epoch 1, and node 0 serves it.
    fn first_seat_everywhere(nodes: &[Election<u32>], now: Duration) {
        for n in nodes {
            assert_eq!(
                n.seats().get("blade-0"),
                Some(&Seat {
                    holder: 0,
                    epoch: 1
                }),
                "node {}",
                n.me
            );
        }
        assert_eq!(nodes[0].serving("blade-0", now), Some(1));
    }

    #[test]
    fn a_candidate_on_the_minority_side_raises_no_epoch_and_the_holder_keeps_its_seat() {
        let start = Duration::from_secs(5);
        let mut nodes = mesh(5, start);
        nodes[0].claim_unseated("blade-0", start);
        pump(&mut nodes, start);
        // Node 4 is a spare, seen as a candidate by all.
        nodes[4].set_candidate(true);
        let view = |alive, candidate| MemberView {
            alive,
            candidate,
            ..MemberView::default()
        };
        for n in nodes.iter_mut().take(4) {
            n.handle_member(4, view(true, true), start);
        }
        // Cut {3, 4} off from {0, 1, 2}: the small side sees the holder and its voters dead.
        let minority = |i: u32| i >= 3;
        for i in [3usize, 4] {
            for j in 0..3 {
                nodes[i].handle_member(j, view(false, false), start);
            }
        }
        for n in nodes.iter_mut().take(3) {
            for i in [3, 4] {
                n.handle_member(i, view(false, i == 4), start);
            }
        }
        let tick = ElectionConfig::default().tick;
        let mut now = start;
        for _ in 0..400 {
            now += tick; // 20 s: a dozen claim timeouts
            step_partitioned(&mut nodes, now, minority);
        }
        for n in &nodes {
            let promised = n.durable.promises.get("blade-0").map_or(0, |(e, _)| *e);
            assert!(promised <= 1, "node {} promised epoch {promised}", n.me);
        }
        assert_eq!(nodes[0].serving("blade-0", now), Some(1));
        // Healed: the holder keeps its seat and epoch.
        for (i, n) in nodes.iter_mut().enumerate() {
            for j in 0..5u32 {
                if j != i as u32 {
                    n.handle_member(j, view(true, j == 4), now);
                }
            }
        }
        for _ in 0..100 {
            now += tick;
            step_partitioned(&mut nodes, now, |_| true);
        }
        first_seat_everywhere(&nodes, now);
    }

    /// Node 0 holds blade-0 and dies; spares 4 and 5 are candidates, and `standing(spare, first)`
    /// says how every node sees each spare (and so how it sees itself), given the spare the
    /// rendezvous score alone ranks first. Returns the node that won blade-0.
    fn takeover_with(standing: impl Fn(u32, u32) -> MemberView) -> Option<u32> {
        let start = Duration::from_secs(5);
        let mut nodes = mesh(6, start);
        nodes[0].claim_unseated("blade-0", start);
        pump(&mut nodes, start);
        let died = start + ElectionConfig::default().lease * 2;
        let plain = [(4u32, Fit::default()), (5, Fit::default())];
        let first = rank::ranked("blade-0", plain)[0];
        let west = rank::zone_key("west");
        for (i, n) in nodes.iter_mut().enumerate() {
            let i = i as u32;
            for spare in [4u32, 5] {
                let view = standing(spare, first);
                if spare == i {
                    n.set_candidate(true);
                    n.set_standing(view.strained, view.zone);
                } else {
                    n.handle_member(spare, view, start);
                }
            }
            // The holder is in the west; everyone sees it die once its lease is over, so the
            // second spare's turn comes a claim timeout after the first's.
            let dead = MemberView {
                zone: west,
                ..MemberView::default()
            };
            if i == 0 {
                n.set_standing(false, west);
            } else {
                n.handle_member(0, dead, died);
            }
        }
        let tick = ElectionConfig::default().tick;
        let mut now = died;
        for _ in 0..40 {
            now += tick; // 2 s: the first claim is won before the second candidate's turn
            step_partitioned(&mut nodes, now, |i| i != 0);
        }
        let seat = nodes[1].seats().get("blade-0").copied()?;
        (seat.epoch == 2).then_some(seat.holder)
    }

    #[test]
    fn a_strained_spare_or_one_outside_the_blades_zone_is_passed_over_for_a_fitting_one() {
        let (west, east) = (rank::zone_key("west"), rank::zone_key("east"));
        let spare = |strained, zone| MemberView {
            alive: true,
            candidate: true,
            strained,
            zone,
            extra: 0,
        };
        let other = |first: u32| if first == 4 { 5 } else { 4 };
        let first = rank::ranked("blade-0", [(4u32, Fit::default()), (5, Fit::default())])[0];
        // Alike, the score's first spare takes the blade...
        assert_eq!(takeover_with(|_, _| spare(false, west)), Some(first));
        // ...but not when it is strained (degraded, or its disk nearly full)...
        let won = takeover_with(|s, first| spare(s == first, west));
        assert_eq!(won, Some(other(first)));
        // ...nor when it is in another zone than the blade's holder and the other spare is not.
        let won = takeover_with(|s, first| spare(false, if s == first { east } else { west }));
        assert_eq!(won, Some(other(first)));
    }

    /// Nodes 0 to 3 hold blade-0 to blade-3; node 4 is a spare when `spare`, else it holds
    /// blade-4. `extra(i)` is how many blades node i may hold beyond one, as every node sees it.
    /// Node 0 dies; returns who holds blade-0 at epoch 2 some seconds later, if anyone.
    fn takeover_of_blade_0(extra: impl Fn(u32) -> u8, spare: bool) -> Option<u32> {
        let start = Duration::from_secs(5);
        let mut nodes = mesh(5, start);
        for i in 0..5u32 {
            if i < 4 || !spare {
                nodes[i as usize].claim_unseated(&format!("blade-{i}"), start);
                pump(&mut nodes, start);
            }
        }
        let view = |i: u32, alive: bool| MemberView {
            alive,
            candidate: (i == 4 && spare) || extra(i) > 0,
            extra: extra(i),
            ..MemberView::default()
        };
        let died = start + ElectionConfig::default().lease * 2;
        for (i, n) in nodes.iter_mut().enumerate() {
            let i = i as u32;
            n.set_candidate(view(i, true).candidate);
            n.set_extra(extra(i));
            for j in (0..5u32).filter(|j| *j != i) {
                n.handle_member(j, view(j, j != 0), died);
            }
        }
        let tick = ElectionConfig::default().tick;
        let mut now = died;
        for _ in 0..200 {
            now += tick; // 10 s: several claim timeouts
            step_partitioned(&mut nodes, now, |i| i != 0);
        }
        for (i, n) in nodes.iter().enumerate().skip(1) {
            let holds = n.serving(&format!("blade-{i}"), now).is_some() || (spare && i == 4);
            assert!(holds, "node {i} still serves its own blade");
        }
        let seat = nodes[1].seats().get("blade-0").copied()?;
        let servers: Vec<u32> = (1..5u32)
            .filter(|i| nodes[*i as usize].serving("blade-0", now).is_some())
            .collect();
        let live_holder: Vec<u32> = [seat.holder].into_iter().filter(|h| *h != 0).collect();
        assert_eq!(
            servers, live_holder,
            "the seat's live holder alone serves blade-0"
        );
        (seat.epoch == 2).then_some(seat.holder)
    }

    #[test]
    fn an_active_node_allowed_more_blades_takes_one_only_when_no_spare_can() {
        // No spare, and no node allowed more than its own blade: blade-0 stays down.
        assert_eq!(takeover_of_blade_0(|_| 0, false), None);
        // Node 2 may hold one more: it takes blade-0 and keeps serving its own.
        assert_eq!(takeover_of_blade_0(|i| u8::from(i == 2), false), Some(2));
        // Several may: one of them takes it, once.
        let won = takeover_of_blade_0(|i| u8::from(i >= 2), false);
        assert!(matches!(won, Some(2..=4)), "{won:?}");
        // With a spare, the spare takes it, however many blades the active nodes may hold.
        assert_eq!(takeover_of_blade_0(|i| u8::from(i < 4), true), Some(4));
    }

    #[test]
    fn an_unseated_blade_is_won_at_epoch_one_by_a_majority() {
        let now = Duration::from_secs(5);
        let mut nodes = mesh(3, now);
        nodes[0].claim_unseated("blade-0", now);
        pump(&mut nodes, now);
        first_seat_everywhere(&nodes, now);
    }

    /// The voters each of node 0's renewal rounds goes to, over `rounds` rounds; `answered`
    /// says which voters' acks get back to it.
    fn renewal_rounds(
        nodes: &mut [Election<u32>],
        start: Duration,
        rounds: u32,
        answered: impl Fn(u32) -> bool,
    ) -> Vec<BTreeSet<u32>> {
        let interval = ElectionConfig::default().renew_interval;
        let mut asked = Vec::new();
        for r in 1..=rounds {
            let now = start + interval * r;
            nodes[0].handle_tick(now);
            let mut round = BTreeSet::new();
            let outputs: Vec<_> = nodes[0].drain_outputs().collect();
            for o in outputs {
                if let Output::Send(to, m @ Message::Renew { .. }) = o {
                    round.insert(to);
                    nodes[to as usize].handle_message(0, m, now);
                    let answers: Vec<_> = nodes[to as usize].drain_outputs().collect();
                    for answer in answers {
                        if let Output::Send(0, m) = answer {
                            if answered(to) {
                                nodes[0].handle_message(to, m, now);
                            }
                        }
                    }
                }
            }
            asked.push(round);
        }
        asked
    }

    #[test]
    fn a_running_lease_is_renewed_by_a_quorum_and_two_spare_voters_not_by_everyone() {
        let now = Duration::from_secs(5);
        let mut nodes = mesh(11, now);
        nodes[0].claim_unseated("blade-0", now);
        pump(&mut nodes, now);
        // The win renews with everyone; from then on the lease runs.
        let rounds = renewal_rounds(&mut nodes, now, 6, |_| true);
        // Quorum 6 of 11: five other voters plus two spares.
        assert!(rounds.iter().all(|r| r.len() == 7), "{rounds:?}");
        assert!(
            rounds.windows(2).all(|w| w[0] == w[1]),
            "the same voters each round"
        );
        let end = now + ElectionConfig::default().renew_interval * 6;
        assert_eq!(nodes[0].serving("blade-0", end), Some(1));
    }

    #[test]
    fn voters_that_stop_answering_widen_the_next_renewal_round() {
        let now = Duration::from_secs(5);
        let mut nodes = mesh(11, now);
        nodes[0].claim_unseated("blade-0", now);
        pump(&mut nodes, now);
        let steady = renewal_rounds(&mut nodes, now, 2, |_| true);
        let silent: Vec<u32> = steady[1].iter().copied().take(3).collect();
        let later = now + ElectionConfig::default().renew_interval * 2;
        let rounds = renewal_rounds(&mut nodes, later, 4, |v| !silent.contains(&v));
        // Three silent voters: three more are asked, and the lease keeps running on the others.
        assert_eq!(rounds[1].len(), 10, "{rounds:?}");
        let end = later + ElectionConfig::default().renew_interval * 4;
        assert_eq!(nodes[0].serving("blade-0", end), Some(1));
    }

    #[test]
    fn a_spare_whose_claim_is_slow_does_not_claim_a_second_blade_meanwhile() {
        // Two blades whose first candidate is the same spare (3, beside spare 4).
        let names: Vec<String> = (0..100).map(|i| format!("blade-{i}")).collect();
        let first = |b: &str| rank::ranked(b, [(3u32, Fit::default()), (4, Fit::default())])[0];
        let (a, b) = names
            .iter()
            .flat_map(|x| names.iter().map(move |y| (x, y)))
            .find(|(x, y)| x != y && first(x) == 3 && first(y) == 3)
            .expect("two blades ranking spare 3 first");
        let mut durable = Durable::default();
        durable.seats.insert(
            a.clone(),
            Seat {
                holder: 0,
                epoch: 1,
            },
        );
        durable.seats.insert(
            b.clone(),
            Seat {
                holder: 1,
                epoch: 1,
            },
        );
        let mut spare = Election::new(
            3u32,
            true,
            durable,
            ElectionConfig::default(),
            7,
            Duration::ZERO,
        );
        let t = Duration::from_secs(5);
        for (id, alive, candidate) in [
            (0, true, false),
            (1, true, false),
            (2, true, false),
            (4, true, true),
        ] {
            spare.handle_member(
                id,
                MemberView {
                    alive,
                    candidate,
                    ..MemberView::default()
                },
                Duration::ZERO,
            );
        }
        // Both holders die; the grants for the first claim are slow to come.
        for id in [0, 1] {
            let view = MemberView {
                alive: false,
                candidate: false,
                ..MemberView::default()
            };
            spare.handle_member(id, view, t);
        }
        let mut claimed = BTreeSet::new();
        for step in 0..10u32 {
            spare.handle_tick(t + Duration::from_millis(50) * step);
            for o in spare.drain_outputs() {
                if let Output::Send(_, Message::Ask { blade, .. } | Message::Claim { blade, .. }) =
                    o
                {
                    claimed.insert(blade);
                }
            }
        }
        assert_eq!(claimed.len(), 1, "claimed {claimed:?}");
    }

    #[test]
    fn a_claim_of_a_seated_blade_as_unseated_teaches_the_claimant_the_seat() {
        let now = Duration::from_secs(5);
        let mut nodes = mesh(3, now);
        nodes[0].claim_unseated("blade-0", now);
        pump(&mut nodes, now);
        // Node 2 restarts having lost its data: it no longer knows the seat.
        nodes[2] = Election::new(
            2,
            false,
            Durable::default(),
            ElectionConfig::default(),
            9,
            Duration::ZERO,
        );
        for j in [0, 1] {
            let view = MemberView {
                alive: true,
                candidate: false,
                ..MemberView::default()
            };
            nodes[2].handle_member(j, view, now);
        }
        nodes[2].claim_unseated("blade-0", now);
        pump(&mut nodes, now);
        assert_eq!(
            nodes[2].seats().get("blade-0"),
            Some(&Seat {
                holder: 0,
                epoch: 1
            }),
            "the voters refused with the seat they know"
        );
        assert_eq!(nodes[2].serving("blade-0", now), None);
    }
}
