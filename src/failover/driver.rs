//! The election core as the agent runs it: node ids are libp2p peer ids, the membership layer says
//! who is alive and who may take a blade over, messages travel as postcard over the
//! request-response protocol `/dci/election/1`, and what the core must keep survives restarts in
//! sled.
//!
//! The driver owns no socket and no clock: the agent's event loop (which alone owns the swarm)
//! feeds it with `now`, and carries out the [`Effect`]s it returns. Two rules make the core's
//! guarantees hold in the agent:
//!
//! - **Persist before answering.** Outputs are carried out in order, and a `Persist` is written
//!   and flushed before any message after it is handed to the swarm; when the write fails, the
//!   rest of the batch is dropped, so no grant leaves that the disk does not remember.
//! - **Known members are durable.** Every member ever met counts in the quorum, dead or not
//!   (until an operator forgets it), and the list is kept in sled: a node that restarts alone
//!   still needs a majority of the whole mesh, so it never renews its old seat by itself.
//!
//! **First seats.** An active node whose blade has no seat claims it through the same majority as
//! any takeover (at epoch 1), once it has met at least one member (or, with no `--join` seed, after
//! [`BOOTSTRAP`]: a lone first node). A voter that knows a seat for that blade refuses with it, so
//! a node that rejoins with an empty data dir learns who holds its blade instead of winning it.
//!
//! **Acting.** A node acts as a blade while the core says it is [`Election::serving`] it (it holds
//! the seat and a lease renewed by a majority). It stops at once on `Lost`, and also when the
//! lease runs out (self-fencing), and a node whose own blade is held by another node is a spare.

use std::collections::BTreeMap;
use std::time::Duration;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::election::{
    Blade, Durable, Election, ElectionConfig, MemberView, Message, Output, Seat,
};
use super::rank;
use crate::membership::mesh::MemberMeta;
use crate::membership::Role;

/// Largest election message accepted, checked before decoding.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most seats in one seat-table message.
pub const MAX_SEATS: usize = 65_536;
/// How long a node with no `--join` seed waits before it claims its own blade alone.
pub const BOOTSTRAP: Duration = Duration::from_secs(3);

/// The sled tree of the failover state.
const TREE: &str = "failover";
/// Its keys: the core's durable record, and the members that count in quorums.
const DURABLE_KEY: &str = "durable";
const MEMBERS_KEY: &str = "members";

/// Why an election message was refused; refusing it changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Larger than [`MAX_MESSAGE_BYTES`], or more seats than [`MAX_SEATS`].
    #[error("election message exceeds its limits")]
    TooLarge,
    /// Not an election message, or one naming a blade by a name no node may have.
    #[error("election message does not decode")]
    Malformed,
    /// From a node that is not a member: it may not vote.
    #[error("election message from a node that is not a member")]
    NotMember,
}

/// The failover state could not be read or written; the state in memory did not change.
#[derive(Debug, thiserror::Error)]
#[error("failover state in the database: {0}")]
pub struct StoreError(String);

/// What travels on `/dci/election/1`: the core's messages, and an operator's request that a
/// holder hand its blade over (a declared failover), which the core has no word for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Wire {
    /// A message of the election core.
    Election(Message<PeerId>),
    /// Hand `blade` over to `to`: asked of its holder by the node where an operator ran
    /// `dcish failover`.
    HandOver {
        /// The blade.
        blade: Blade,
        /// The node that should take it.
        to: PeerId,
    },
    /// An operator removed `node` for good: stop counting it in quorums, if it is gone here too.
    Forget {
        /// The member.
        node: PeerId,
    },
    /// The holder of `blade` at `epoch`, degraded, asks a spare to help with its read-only
    /// traffic.
    Help {
        /// The blade.
        blade: Blade,
        /// The holder's epoch.
        epoch: u64,
    },
    /// A spare's answer to [`Wire::Help`]: ready (its copy restored), or not helping.
    Helping {
        /// The blade.
        blade: Blade,
        /// The epoch it was asked at.
        epoch: u64,
        /// Whether it serves now.
        ready: bool,
    },
    /// The holder no longer needs this node's help with `blade` (it recovered).
    Unhelp {
        /// The blade.
        blade: Blade,
    },
}

/// Encodes a core message for the wire.
pub fn encode(msg: &Message<PeerId>) -> Vec<u8> {
    encode_wire(&Wire::Election(msg.clone()))
}

/// Encodes anything that travels on the election protocol.
pub fn encode_wire(wire: &Wire) -> Vec<u8> {
    postcard::to_stdvec(wire).unwrap_or_default()
}

/// Decodes a message, checking sizes before and after.
pub fn decode(bytes: &[u8]) -> Result<Wire, MessageError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge);
    }
    let wire: Wire = postcard::from_bytes(bytes).map_err(|_| MessageError::Malformed)?;
    if let Wire::Election(Message::Seats { seats }) = &wire {
        if seats.len() > MAX_SEATS {
            return Err(MessageError::TooLarge);
        }
    }
    // A blade name may become a directory name (a takeover restores under it): only names a
    // node could be given on its command line pass.
    let valid = |b: &str| crate::config::validate_name("blade", b).is_ok();
    let names_ok = match &wire {
        Wire::Election(m) => match m {
            Message::Ask { blade, .. }
            | Message::WouldGrant { blade, .. }
            | Message::Claim { blade, .. }
            | Message::Grant { blade, .. }
            | Message::Refuse { blade, .. }
            | Message::Won { blade, .. }
            | Message::Renew { blade, .. }
            | Message::Renewed { blade, .. }
            | Message::Release { blade, .. } => valid(blade),
            Message::Seats { seats } => seats.iter().all(|(b, _)| valid(b)),
        },
        Wire::HandOver { blade, .. }
        | Wire::Help { blade, .. }
        | Wire::Helping { blade, .. }
        | Wire::Unhelp { blade } => valid(blade),
        Wire::Forget { .. } => true,
    };
    if !names_ok {
        return Err(MessageError::Malformed);
    }
    Ok(wire)
}

/// What the agent must do for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send this (already encoded) message.
    Send(PeerId, Vec<u8>),
    /// This node won `blade`.
    TakeOver {
        /// The blade.
        blade: Blade,
        /// The epoch won.
        epoch: u64,
        /// Whether its data must be restored from its holders first: yes unless this node held
        /// the seat before (it renewed past a rival's promise), or this is the blade's first
        /// seat and the blade is this node's own data set. A node that wins back a blade it
        /// lost has a stale copy, which is not trusted.
        restore: bool,
    },
    /// This node lost `blade` to a higher epoch (or its lease ran out): it stopped acting as it.
    Stopped {
        /// The blade.
        blade: Blade,
        /// The epoch it held.
        epoch: u64,
        /// Who holds it now, if known.
        holder: Option<Seat<PeerId>>,
    },
    /// A member asks this node to hand `blade` over to `to` (an operator declared a failover).
    HandOverAsked {
        /// The member that asked.
        from: PeerId,
        /// The blade.
        blade: Blade,
        /// The node that should take it.
        to: PeerId,
    },
    /// A member asks or answers about helping with a blade (see [`super::degraded`]).
    Help {
        /// The member.
        from: PeerId,
        /// What it said.
        what: Wire,
    },
    /// The seat table, or what this node acts as, changed: republish the routing view and the
    /// member metadata.
    Changed,
}

/// How a node takes part in elections.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node.
    pub me: PeerId,
    /// Its name: the blade it holds from the start when it is active.
    pub name: String,
    /// Its configured role.
    pub role: Role,
    /// Its zone: spares in a blade's zone are ranked first for it.
    pub zone: String,
    /// Whether it was given seeds to join (then it waits to meet one before claiming alone).
    pub has_seeds: bool,
    /// Blades it may take beyond its own, when no spare can (`[failover] extra_blades`): an
    /// operator's allowance for an active node with spare capacity. A spare, or an active node
    /// whose blade is held elsewhere, holds one blade at most.
    pub extra_blades: u8,
    /// The core's timings.
    pub election: ElectionConfig,
}

/// The agent's failover driver: the core, its sled tree, and what this node acts as.
pub struct Failover {
    core: Election<PeerId>,
    tree: sled::Tree,
    settings: Settings,
    /// Members that count in quorums (persisted), with the view last given to the core.
    known: BTreeMap<PeerId, MemberView>,
    /// The blade this node acts as now, and under which epoch: its own while it serves it (a
    /// spare: the one it took over), whose data set is its backup root.
    acting: Option<(Blade, u64)>,
    /// The other blades it serves now, beside its own (see [`Settings::extra_blades`]), each in
    /// a data set of its own.
    hosted: BTreeMap<Blade, u64>,
    /// Each blade's holder as of the last step, to tell a takeover from a renewed seat.
    holders: BTreeMap<Blade, PeerId>,
    /// When the core wants its next tick.
    due: Option<Duration>,
    /// Election messages refused (oversized, malformed, from non-members), for `dcish status`.
    pub refused: u64,
    /// Writes of the durable state that failed.
    pub persist_failures: u64,
}

impl Failover {
    /// Opens the failover state in `db` and starts the core with what it kept. Members met in an
    /// earlier life count in quorums at once, as dead until membership says otherwise.
    pub fn open(
        db: &sled::Db,
        settings: Settings,
        seed: u64,
        now: Duration,
    ) -> Result<Failover, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError(crate::config::one_line(&e.to_string()));
        let tree = db.open_tree(TREE).map_err(|e| err(&e))?;
        let durable: Durable<PeerId> = match tree.get(DURABLE_KEY).map_err(|e| err(&e))? {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| err(&e))?,
            None => Durable::default(),
        };
        let members: Vec<PeerId> = match tree.get(MEMBERS_KEY).map_err(|e| err(&e))? {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| err(&e))?,
            None => Vec::new(),
        };
        let mut core = Election::new(
            settings.me,
            settings.role == Role::Spare,
            durable,
            settings.election.clone(),
            seed,
            now,
        );
        // Not strained until its first resource reading says otherwise (`set_own`).
        core.set_standing(false, rank::zone_key(&settings.zone));
        let mut known = BTreeMap::new();
        let gone = MemberView::default();
        for id in members.into_iter().filter(|id| *id != settings.me) {
            core.handle_member(id, gone, now);
            known.insert(id, gone);
        }
        let holders = core
            .seats()
            .iter()
            .map(|(b, s)| (b.clone(), s.holder))
            .collect();
        // The core arms its first tick at birth: without it, a node that never hears of a member
        // (the first one, alone) would never tick, nor claim its own blade.
        let due = core.drain_outputs().find_map(|o| match o {
            Output::SetTimer(at, _) => Some(at),
            _ => None,
        });
        let mut f = Failover {
            holders,
            core,
            tree,
            settings,
            known,
            acting: None,
            hosted: BTreeMap::new(),
            due,
            refused: 0,
            persist_failures: 0,
        };
        f.update_candidacy();
        Ok(f)
    }

    /// When [`Failover::handle_tick`] is due.
    pub fn due(&self) -> Option<Duration> {
        self.due
    }

    /// The seat table.
    pub fn seats(&self) -> &BTreeMap<Blade, Seat<PeerId>> {
        self.core.seats()
    }

    /// The blade this node acts as now, with its epoch.
    pub fn acting(&self) -> Option<&(Blade, u64)> {
        self.acting.as_ref()
    }

    /// The blades this node serves beside the one it acts as, with their epochs.
    pub fn hosted(&self) -> &BTreeMap<Blade, u64> {
        &self.hosted
    }

    /// The epoch this node serves `blade` under, as the blade it acts as or one it hosts.
    pub fn serves(&self, blade: &str) -> Option<u64> {
        match &self.acting {
            Some((b, e)) if b == blade => Some(*e),
            _ => self.hosted.get(blade).copied(),
        }
    }

    /// How many blades this node may take beyond its own now, as its metadata says: its
    /// allowance while it is active and its own blade is not held elsewhere, else none.
    pub fn extra_blades(&self) -> u8 {
        if self.has_own_blade() {
            self.settings.extra_blades
        } else {
            0
        }
    }

    /// Whether this node has a blade of its own to act as: it is active, and its blade is not
    /// held elsewhere.
    fn has_own_blade(&self) -> bool {
        self.settings.role == Role::Active && !self.displaced()
    }

    /// Whether this node's own blade is held by another node: it is then a spare.
    pub fn displaced(&self) -> bool {
        self.settings.role == Role::Active
            && self
                .core
                .seats()
                .get(&self.settings.name)
                .is_some_and(|s| s.holder != self.settings.me)
    }

    /// The role this node has now: active while it holds a seat (or waits for its own blade's
    /// first one), spare otherwise.
    pub fn role(&self) -> Role {
        let holds = self
            .core
            .seats()
            .values()
            .any(|s| s.holder == self.settings.me);
        if holds || (self.settings.role == Role::Active && !self.displaced()) {
            Role::Active
        } else {
            Role::Spare
        }
    }

    /// The membership layer's view of a member: `alive` unless dead or left on every channel,
    /// `candidate` when it is a spare holding no blade.
    pub fn handle_member(
        &mut self,
        id: PeerId,
        view: MemberView,
        now: Duration,
    ) -> Result<Vec<Effect>, StoreError> {
        self.handle_members(&[(id, view)], now)
    }

    /// Several members' views at once, as one membership step changed them: the new ones are
    /// written down together, with one flush. A joiner learns the whole mesh in one step, and a
    /// flush per member held a hundred-node agent's loop for seconds.
    pub fn handle_members(
        &mut self,
        changes: &[(PeerId, MemberView)],
        now: Duration,
    ) -> Result<Vec<Effect>, StoreError> {
        let changes: Vec<(PeerId, MemberView)> = changes
            .iter()
            .copied()
            .filter(|(id, view)| *id != self.settings.me && self.known.get(id) != Some(view))
            .collect();
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let before = self.known.clone();
        let mut new = false;
        for (id, view) in &changes {
            new |= self.known.insert(*id, *view).is_none();
        }
        if new {
            // They count in quorums from now on, also after a restart: the core hears of them
            // only once that is durable.
            if let Err(e) = self.save_members() {
                self.known = before;
                return Err(e);
            }
        }
        for (id, view) in changes {
            self.core.handle_member(id, view, now);
        }
        Ok(self.carry_out(now))
    }

    /// A message from `peer` (authenticated by the transport).
    pub fn handle_message(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
        now: Duration,
    ) -> Result<Vec<Effect>, MessageError> {
        let wire = decode(bytes).inspect_err(|_| self.refused += 1)?;
        if !self.known.contains_key(&peer) {
            self.refused += 1;
            return Err(MessageError::NotMember);
        }
        match wire {
            Wire::Election(msg) => {
                self.core.handle_message(peer, msg, now);
                Ok(self.carry_out(now))
            }
            Wire::HandOver { blade, to } => Ok(vec![Effect::HandOverAsked {
                from: peer,
                blade,
                to,
            }]),
            Wire::Forget { node } => {
                if let Err(e) = self.forget(node) {
                    tracing::error!("{e}; {node} not forgotten");
                }
                Ok(Vec::new())
            }
            what @ (Wire::Help { .. } | Wire::Helping { .. } | Wire::Unhelp { .. }) => {
                Ok(vec![Effect::Help { from: peer, what }])
            }
        }
    }

    /// Stops counting `node` in quorums, for good (until it is met again). Returns whether it
    /// was forgotten: a member this node sees alive, or itself, is kept.
    pub fn forget(&mut self, node: PeerId) -> Result<bool, StoreError> {
        match self.known.get(&node) {
            Some(v) if !v.alive => {}
            Some(_) | None => return Ok(false),
        }
        self.known.remove(&node);
        self.core.forget(node);
        self.save_members()?;
        Ok(true)
    }

    /// The members that count in quorums, as this node sees them: (id, alive).
    pub fn members(&self) -> impl Iterator<Item = (PeerId, bool)> + '_ {
        self.known.iter().map(|(id, v)| (*id, v.alive))
    }

    fn save_members(&self) -> Result<(), StoreError> {
        let ids: Vec<PeerId> = self.known.keys().copied().collect();
        let bytes = postcard::to_stdvec(&ids).unwrap_or_default();
        self.tree
            .insert(MEMBERS_KEY, bytes)
            .and_then(|_| self.tree.flush())
            .map(|_| ())
            .map_err(|e| StoreError(crate::config::one_line(&e.to_string())))
    }

    /// Stops acting as `blade` at once and tells every member that `to` should claim it (an
    /// operator's failover or move). Does nothing unless this node holds it and `to` is another.
    pub fn release(&mut self, blade: &str, to: PeerId, now: Duration) -> Vec<Effect> {
        self.core.release(blade, to, now);
        self.carry_out(now)
    }

    /// The node that should take `blade` over: the first live spare holding no blade (this node
    /// included), else the first active node allowed another, in the rank order every node
    /// computes the same way.
    pub fn best_candidate(&self, blade: &str) -> Option<PeerId> {
        self.candidates(blade).into_iter().next()
    }

    /// Every node that may take `blade` over (this node included), in its rank order: live
    /// spares holding no blade, then active nodes allowed another.
    pub fn candidates(&self, blade: &str) -> Vec<PeerId> {
        self.ranked(blade, |id| self.is_candidate(id))
    }

    /// The live spares holding no blade (this node included), in `blade`'s rank order: the nodes
    /// that may help with a blade's traffic or take it for a degraded holder.
    pub fn spares(&self, blade: &str) -> Vec<PeerId> {
        self.ranked(blade, |id| self.is_spare(id))
    }

    /// The members (this node included) that `keep` keeps, in `blade`'s rank order.
    fn ranked(&self, blade: &str, keep: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        let kept = self
            .known
            .keys()
            .chain([&self.settings.me])
            .filter(|id| keep(id))
            .copied();
        self.core.rank(blade, kept)
    }

    /// Whether `id` is a live spare that holds no blade.
    pub fn is_spare(&self, id: &PeerId) -> bool {
        let free = !self.core.seats().values().any(|s| s.holder == *id);
        let spare = if *id == self.settings.me {
            self.role() == Role::Spare
        } else {
            self.known
                .get(id)
                .is_some_and(|v| v.alive && v.candidate && v.extra == 0)
        };
        free && spare
    }

    /// This node's own metadata changed (its load, its disk): it ranks itself among a blade's
    /// candidates as its members rank it from that metadata.
    pub fn set_own(&mut self, meta: &MemberMeta) {
        let own = member_view(true, meta);
        self.core.set_standing(own.strained, own.zone);
    }

    /// Whether `id` (a member, or this node) may take a blade over: a live spare holding no
    /// blade, or a live active node holding fewer blades than it is allowed.
    pub fn is_candidate(&self, id: &PeerId) -> bool {
        let held = self
            .core
            .seats()
            .values()
            .filter(|s| s.holder == *id)
            .count();
        let (spare, extra) = if *id == self.settings.me {
            (self.role() == Role::Spare, self.extra_blades())
        } else {
            match self.known.get(id) {
                Some(v) if v.alive && v.candidate => (v.extra == 0, v.extra),
                _ => return false,
            }
        };
        (spare && held == 0) || (extra > 0 && held <= usize::from(extra))
    }

    /// The tick: renewals, claims, gossip, and this node's own blade's first claim.
    pub fn handle_tick(&mut self, now: Duration) -> Vec<Effect> {
        self.due = None;
        self.core.handle_tick(now);
        let met = self.known.values().any(|v| v.alive);
        if self.settings.role == Role::Active
            && (met || (!self.settings.has_seeds && now >= BOOTSTRAP))
        {
            self.core.claim_unseated(&self.settings.name, now);
        }
        self.carry_out(now)
    }

    /// Takes the core's outputs, in order, and turns them into effects.
    fn carry_out(&mut self, now: Duration) -> Vec<Effect> {
        let outputs: Vec<Output<PeerId>> = self.core.drain_outputs().collect();
        let mut effects = Vec::new();
        let mut changed = false;
        // Set when a write failed: nothing after an unwritten promise may leave.
        let mut held = false;
        // The durable state only grows (seats and promises to higher epochs), so writing it as it
        // is now, at the first `Persist`, covers every later one: one flush for a whole seat
        // table learned at once instead of one per seat.
        let mut persisted = false;
        for output in outputs {
            match output {
                Output::Send(_, _) if held => {}
                Output::Send(to, msg) => effects.push(Effect::Send(to, encode(&msg))),
                Output::SetTimer(at, _) => {
                    self.due = Some(self.due.map_or(at, |d| d.min(at)));
                }
                Output::Persist if persisted => {}
                Output::Persist => {
                    persisted = true;
                    if let Err(e) = self.persist() {
                        self.persist_failures += 1;
                        tracing::error!("{e}; election messages held back");
                        held = true;
                    }
                }
                Output::Acquired { blade, epoch } => {
                    tracing::info!(%blade, epoch, "won the blade's seat");
                    let restore = match self.holders.get(&blade) {
                        Some(before) => *before != self.settings.me,
                        None => blade != self.settings.name,
                    };
                    effects.push(Effect::TakeOver {
                        blade,
                        epoch,
                        restore,
                    });
                    changed = true;
                }
                Output::Lost { blade, epoch } => {
                    if self.acting.as_ref().is_some_and(|(b, _)| *b == blade) {
                        self.acting = None;
                    }
                    self.hosted.remove(&blade);
                    let holder = self.core.seats().get(&blade).copied();
                    effects.push(Effect::Stopped {
                        blade,
                        epoch,
                        holder,
                    });
                    changed = true;
                }
                Output::SeatChanged { blade, seat } => {
                    tracing::info!(%blade, holder = %seat.holder, epoch = seat.epoch, "seat changed");
                    changed = true;
                }
            }
        }
        // Self-fencing: serving needs a live lease, checked at every step.
        let mut hosted: BTreeMap<Blade, u64> = self
            .core
            .seats()
            .iter()
            .filter(|(_, s)| s.holder == self.settings.me)
            .filter_map(|(b, _)| Some((b.clone(), self.core.serving(b, now)?)))
            .collect();
        // The blade it acts as: its own; for a node without one of its own (a spare, or displaced),
        // the one it took over.
        let own = match hosted.remove_entry(&self.settings.name) {
            Some(own) => Some(own),
            None if !self.has_own_blade() => hosted.pop_first(),
            None => None,
        };
        if own != self.acting || hosted != self.hosted {
            let was: Vec<(Blade, u64)> = self
                .acting
                .take()
                .into_iter()
                .chain(std::mem::take(&mut self.hosted))
                .collect();
            for (blade, epoch) in was {
                let still =
                    own.as_ref().is_some_and(|(b, _)| *b == blade) || hosted.contains_key(&blade);
                if !still {
                    let holder = self.core.seats().get(&blade).copied();
                    effects.push(Effect::Stopped {
                        blade,
                        epoch,
                        holder,
                    });
                }
            }
            self.acting = own;
            self.hosted = hosted;
            changed = true;
        }
        self.update_candidacy();
        if changed {
            self.holders = self
                .core
                .seats()
                .iter()
                .map(|(b, s)| (b.clone(), s.holder))
                .collect();
            effects.push(Effect::Changed);
        }
        effects
    }

    fn persist(&self) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(self.core.durable())
            .map_err(|e| StoreError(crate::config::one_line(&e.to_string())))?;
        self.tree
            .insert(DURABLE_KEY, bytes)
            .and_then(|_| self.tree.flush())
            .map(|_| ())
            .map_err(|e| StoreError(crate::config::one_line(&e.to_string())))
    }

    /// A spare, or an active node whose blade went elsewhere, may take a blade over while it
    /// holds none; an active node allowed extra blades, once its own is seated here, while it
    /// holds fewer than it may (the core counts them).
    fn update_candidacy(&mut self) {
        let me = self.settings.me;
        let holds = self.core.seats().values().any(|s| s.holder == me);
        let extra = self.extra_blades();
        let own_here = self
            .core
            .seats()
            .get(&self.settings.name)
            .is_some_and(|s| s.holder == me);
        let spare = !self.has_own_blade();
        self.core.set_extra(extra);
        self.core
            .set_candidate((spare && !holds) || (extra > 0 && own_here));
    }
}

/// A member whose disk is at least this full is strained: ranked after every spare with room,
/// as a blade's restore would likely not fit.
pub const DISK_FULL_PCT: u8 = 90;

/// The view the core needs of a member, from its liveness and metadata.
pub fn member_view(up: bool, meta: &MemberMeta) -> MemberView {
    MemberView {
        alive: up,
        candidate: up && ((meta.role == Role::Spare && meta.blade.is_none()) || meta.extra > 0),
        extra: meta.extra,
        strained: strained(meta),
        zone: rank::zone_key(&meta.zone),
    }
}

/// Degraded, or its disk nearly full.
fn strained(meta: &MemberMeta) -> bool {
    meta.degraded || meta.resources.disk.is_some_and(|d| d >= DISK_FULL_PCT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member's metadata with this role, holding a blade or not, in the default zone.
    fn meta(role: Role, holds: bool) -> MemberMeta {
        MemberMeta {
            name: "node".into(),
            role,
            zone: "default".into(),
            addrs: Vec::new(),
            data_addrs: Vec::new(),
            version: "test".into(),
            resources: Default::default(),
            degraded: false,
            blade: holds.then(|| ("blade".into(), 1)),
            helpers: Vec::new(),
            extra: 0,
        }
    }

    fn settings(me: PeerId, name: &str, role: Role) -> Settings {
        Settings {
            me,
            name: name.into(),
            role,
            zone: "default".into(),
            has_seeds: true,
            election: ElectionConfig::default(),
            extra_blades: 0,
        }
    }

    #[test]
    fn messages_round_trip_and_garbage_or_oversize_is_refused() {
        let m = Message::Seats {
            seats: vec![(
                "blade-1".into(),
                Seat {
                    holder: PeerId::random(),
                    epoch: 3,
                },
            )],
        };
        assert_eq!(decode(&encode(&m)).unwrap(), Wire::Election(m));
        assert_eq!(decode(b"\xff\xff\xff"), Err(MessageError::Malformed));
        let climbing = Message::Won {
            blade: "..".into(),
            seat: Seat {
                holder: PeerId::random(),
                epoch: 1,
            },
        };
        assert_eq!(decode(&encode(&climbing)), Err(MessageError::Malformed));
        let help = Wire::Help {
            blade: "blade-1".into(),
            epoch: 2,
        };
        assert_eq!(decode(&encode_wire(&help)).unwrap(), help);
        let bad = Wire::Unhelp {
            blade: "../x".into(),
        };
        assert_eq!(decode(&encode_wire(&bad)), Err(MessageError::Malformed));
        assert_eq!(
            decode(&vec![0; MAX_MESSAGE_BYTES + 1]),
            Err(MessageError::TooLarge)
        );
    }

    #[test]
    fn a_message_from_a_stranger_is_refused_and_counted() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let me = PeerId::random();
        let mut f =
            Failover::open(&db, settings(me, "b", Role::Active), 1, Duration::ZERO).unwrap();
        let bytes = encode(&Message::Seats { seats: Vec::new() });
        assert_eq!(
            f.handle_message(PeerId::random(), &bytes, Duration::ZERO),
            Err(MessageError::NotMember)
        );
        assert_eq!(f.refused, 1);
    }

    /// Runs drivers over a perfect network for `ticks` ticks of 50 ms, skipping those in `down`
    /// (crashed: they neither tick nor receive); returns the time reached and every takeover
    /// (node, blade, restore).
    fn run(
        nodes: &mut [Failover],
        down: &[PeerId],
        from: Duration,
        ticks: u32,
    ) -> (Duration, Vec<(PeerId, Blade, bool)>) {
        let mut now = from;
        let mut takeovers = Vec::new();
        for _ in 0..ticks {
            now += Duration::from_millis(50);
            let mut mail: Vec<(PeerId, PeerId, Vec<u8>)> = Vec::new();
            let mut note = |at: PeerId, e: Effect, mail: &mut Vec<_>| match e {
                Effect::Send(to, bytes) => mail.push((at, to, bytes)),
                Effect::TakeOver { blade, restore, .. } => takeovers.push((at, blade, restore)),
                _ => {}
            };
            for f in nodes.iter_mut().filter(|f| !down.contains(&f.settings.me)) {
                let me = f.settings.me;
                for e in f.handle_tick(now) {
                    note(me, e, &mut mail);
                }
            }
            while let Some((from, to, bytes)) = mail.pop() {
                if down.contains(&to) {
                    continue;
                }
                let Some(f) = nodes.iter_mut().find(|f| f.settings.me == to) else {
                    continue;
                };
                for e in f.handle_message(from, &bytes, now).unwrap() {
                    note(to, e, &mut mail);
                }
            }
        }
        (now, takeovers)
    }

    /// Drivers named `names` (a name starting with "spare" is a spare, one starting with "roomy"
    /// an active node allowed one extra blade), each knowing the others alive.
    fn mesh(names: &[&str]) -> (Vec<Failover>, Vec<PeerId>, Vec<sled::Db>) {
        let ids: Vec<PeerId> = names.iter().map(|_| PeerId::random()).collect();
        let dbs: Vec<sled::Db> = names
            .iter()
            .map(|_| sled::Config::new().temporary(true).open().unwrap())
            .collect();
        let role = |n: &str| {
            if n.starts_with("spare") {
                Role::Spare
            } else {
                Role::Active
            }
        };
        let extra = |n: &str| u8::from(n.starts_with("roomy"));
        let mut nodes: Vec<Failover> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let settings = Settings {
                    extra_blades: extra(n),
                    ..settings(ids[i], n, role(n))
                };
                Failover::open(&dbs[i], settings, i as u64, Duration::ZERO).unwrap()
            })
            .collect();
        for (i, f) in nodes.iter_mut().enumerate() {
            for (j, n) in names.iter().enumerate() {
                if i != j {
                    let meta = MemberMeta {
                        extra: extra(n),
                        ..meta(role(n), false)
                    };
                    f.handle_member(ids[j], member_view(true, &meta), Duration::ZERO)
                        .unwrap();
                }
            }
        }
        (nodes, ids, dbs)
    }

    #[test]
    fn an_active_node_seats_its_own_blade_and_a_restart_remembers_the_seat_and_the_members() {
        let (mut nodes, ids, dbs) = mesh(&["blade-a", "spare-b"]);
        let (now, takeovers) = run(&mut nodes, &[], Duration::ZERO, 80);
        assert_eq!(
            takeovers,
            [(ids[0], "blade-a".to_string(), false)],
            "a node's own data set needs no restore at its first seat"
        );
        assert_eq!(nodes[0].acting(), Some(&("blade-a".to_string(), 1)));
        assert_eq!(
            nodes[1].seats().get("blade-a").map(|s| s.holder),
            Some(ids[0])
        );
        assert_eq!(nodes[1].role(), Role::Spare);
        drop(nodes);
        // Restarted alone: it remembers its seat and that b counts, so it cannot renew alone.
        let mut a =
            Failover::open(&dbs[0], settings(ids[0], "blade-a", Role::Active), 3, now).unwrap();
        assert_eq!(a.seats().get("blade-a").map(|s| s.epoch), Some(1));
        let mut later = now;
        for _ in 0..60 {
            later += Duration::from_millis(50);
            a.handle_tick(later);
        }
        assert_eq!(a.acting(), None, "a majority of two is two");
        // The operator forgets b, which is gone for good: a alone is a majority again.
        assert!(a.forget(ids[1]).unwrap());
        for _ in 0..60 {
            later += Duration::from_millis(50);
            a.handle_tick(later);
        }
        assert_eq!(a.acting(), Some(&("blade-a".to_string(), 1)));
        drop(a);
        let a =
            Failover::open(&dbs[0], settings(ids[0], "blade-a", Role::Active), 4, later).unwrap();
        assert_eq!(a.members().count(), 0, "the forgetting is durable");
    }

    #[test]
    fn an_active_node_allowed_an_extra_blade_hosts_a_dead_one_beside_its_own() {
        let (mut nodes, ids, _dbs) = mesh(&["blade-a", "blade-b", "roomy-c"]);
        let (now, _) = run(&mut nodes, &[], Duration::ZERO, 80);
        assert_eq!(nodes[2].extra_blades(), 1);
        assert_eq!(nodes[0].extra_blades(), 0);
        assert_eq!(nodes[1].best_candidate("blade-a"), Some(ids[2]));
        assert!(
            nodes[1].spares("blade-a").is_empty(),
            "an active node is no spare"
        );
        for f in &mut nodes[1..] {
            f.handle_member(ids[0], member_view(false, &meta(Role::Active, true)), now)
                .unwrap();
        }
        let (_, takeovers) = run(&mut nodes, &ids[..1], now, 100);
        assert_eq!(takeovers, [(ids[2], "blade-a".to_string(), true)]);
        let c = &nodes[2];
        // It acts as its own blade still, and hosts the other beside it.
        assert_eq!(c.acting(), Some(&("roomy-c".to_string(), 1)));
        assert_eq!(c.serves("blade-a"), Some(2));
        assert_eq!(c.hosted().keys().collect::<Vec<_>>(), ["blade-a"]);
        assert_eq!(c.role(), Role::Active);
        // Full now: nobody may take another blade.
        assert_eq!(nodes[1].best_candidate("blade-b"), None);
        assert_eq!(
            nodes[1].seats().get("blade-a").map(|s| s.holder),
            Some(ids[2])
        );
        assert_eq!(nodes[1].serves("blade-b"), Some(1));
    }

    #[test]
    fn a_spare_that_wins_a_dead_holders_blade_restores_it_and_the_old_node_becomes_a_spare() {
        let (mut nodes, ids, _dbs) = mesh(&["blade-a", "blade-c", "spare-b"]);
        let (now, _) = run(&mut nodes, &[], Duration::ZERO, 80);
        assert_eq!(nodes[2].seats().len(), 2, "{:?}", nodes[2].seats());
        // blade-a's node crashes; the survivors' membership says so.
        for f in &mut nodes[1..] {
            f.handle_member(ids[0], member_view(false, &meta(Role::Active, true)), now)
                .unwrap();
        }
        let (now, takeovers) = run(&mut nodes, &ids[..1], now, 100);
        assert_eq!(takeovers, [(ids[2], "blade-a".to_string(), true)]);
        assert_eq!(
            nodes[2].acting().map(|(b, e)| (b.as_str(), *e)),
            Some(("blade-a", 2))
        );
        assert_eq!(nodes[2].role(), Role::Active);
        // It comes back: the others' refusals teach it the higher epoch, and it is a spare.
        for f in &mut nodes[1..] {
            f.handle_member(ids[0], member_view(true, &meta(Role::Active, false)), now)
                .unwrap();
        }
        let (_, takeovers) = run(&mut nodes, &[], now, 60);
        assert!(takeovers.is_empty(), "{takeovers:?}");
        assert_eq!(
            nodes[0].seats().get("blade-a").map(|s| s.holder),
            Some(ids[2])
        );
        assert!(nodes[0].displaced());
        assert_eq!(nodes[0].role(), Role::Spare);
        assert_eq!(nodes[0].acting(), None);
    }

    #[test]
    fn a_lone_first_node_ticks_from_the_start_and_seats_its_blade() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let me = PeerId::random();
        let mut alone = settings(me, "b", Role::Active);
        alone.has_seeds = false;
        let mut f = Failover::open(&db, alone, 1, Duration::ZERO).unwrap();
        // Driven as the agent drives it: a tick only when one is due.
        for _ in 0..200 {
            let Some(at) = f.due() else {
                panic!("no tick due: the node would never claim its blade")
            };
            f.handle_tick(at);
        }
        assert_eq!(f.acting(), Some(&("b".to_string(), 1)));
    }

    #[test]
    fn spares_are_offered_healthy_ones_with_disk_room_first() {
        let (mut nodes, ids, _dbs) = mesh(&["blade-a", "spare-b", "spare-c"]);
        let (now, _) = run(&mut nodes, &[], Duration::ZERO, 80);
        let order = nodes[0].spares("blade-a");
        assert_eq!(order.len(), 2);
        let (first, second) = (order[0], order[1]);
        let degraded = MemberMeta {
            degraded: true,
            ..meta(Role::Spare, false)
        };
        nodes[0]
            .handle_member(first, member_view(true, &degraded), now)
            .unwrap();
        assert_eq!(nodes[0].spares("blade-a"), [second, first]);
        assert_eq!(nodes[0].best_candidate("blade-a"), Some(second));
        // Recovered, but its disk is nearly full.
        let mut full = meta(Role::Spare, false);
        full.resources.disk = Some(DISK_FULL_PCT);
        nodes[0]
            .handle_member(first, member_view(true, &full), now)
            .unwrap();
        assert_eq!(nodes[0].spares("blade-a"), [second, first]);
        full.resources.disk = Some(DISK_FULL_PCT - 1);
        nodes[0]
            .handle_member(first, member_view(true, &full), now)
            .unwrap();
        assert_eq!(nodes[0].spares("blade-a"), [first, second]);
        // A spare ranks itself the same way from its own metadata.
        let me = ids[1..].iter().position(|id| *id == first).unwrap() + 1;
        nodes[me].set_own(&degraded);
        assert_eq!(nodes[me].spares("blade-a"), [second, first]);
    }
}
