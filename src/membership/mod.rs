//! Membership: who is in the mesh, and whether each member is alive.
//!
//! This is the foundation's membership: signed heartbeat gossip. Every gossip interval a node bumps the
//! heartbeat in its own signed record and exchanges its whole table (push-pull) with a few random
//! peers. A member whose heartbeat has not advanced for `suspect_after` is `suspect`, for `dead_after`
//! is `dead`; a member that signed a `Left` record is `left`. The SWIM/Lifeguard issue replaces the
//! detector; the signed records, the table and the events stay.
//!
//! The core is sans-IO: it never reads a clock, touches a socket or draws unseeded randomness. Call
//! order: [`Membership::handle_tick`] every `gossip_interval` (it returns the peers to gossip to),
//! [`Membership::handle_message`] for each message received (it returns the answer to send back), and
//! [`Membership::drain_events`] after either to learn what changed. `now` is any monotonic duration
//! chosen by the driver (time since the agent started, or virtual time in a simulator).

pub mod record;
pub mod swim;

use std::collections::HashMap;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::PeerId;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub use record::{GossipEntry, MemberRecord, MembershipMessage, RecordError, SignedRecord, Status};

/// Whether a node holds a blade or waits as a spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds a blade.
    Active,
    /// Holds none; a candidate to replace a failed blade.
    Spare,
}

impl Role {
    /// The spelling used in output and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Spare => "spare",
        }
    }
}

/// Liveness of a member as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Heard from recently.
    Alive,
    /// Silent for longer than `suspect_after`.
    Suspect,
    /// Silent for longer than `dead_after`.
    Dead,
    /// Left gracefully.
    Left,
}

impl State {
    /// The spelling used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Dead => "dead",
            State::Left => "left",
        }
    }
}

/// Timings of the membership protocol. Defaults suit a LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipConfig {
    /// How often this node bumps its heartbeat and gossips.
    pub gossip_interval: Duration,
    /// How many peers it gossips to each interval.
    pub gossip_fanout: usize,
    /// Heartbeat silence after which a member is suspected.
    pub suspect_after: Duration,
    /// Heartbeat silence after which a member is declared dead.
    pub dead_after: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            gossip_interval: Duration::from_millis(500),
            gossip_fanout: 3,
            suspect_after: Duration::from_millis(3000),
            dead_after: Duration::from_millis(6000),
        }
    }
}

/// Something that changed in the member table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member was seen for the first time.
    Joined(PeerId),
    /// A suspect, dead or left member is alive again.
    Alive(PeerId),
    /// A member went silent.
    Suspect(PeerId),
    /// A member stayed silent past `dead_after`.
    Dead(PeerId),
    /// A member left gracefully.
    Left(PeerId),
    /// A member's name, role, zone, addresses or version changed.
    MetadataChanged(PeerId),
}

/// One row of the member table.
#[derive(Debug, Clone)]
pub struct Member {
    /// Node id.
    pub id: PeerId,
    /// What it last said about itself.
    pub record: MemberRecord,
    /// That statement, signed, for relaying.
    pub signed: SignedRecord,
    /// Current liveness.
    pub state: State,
    /// When its heartbeat last advanced (driver time).
    pub last_heard: Duration,
}

/// Counters of refused input, for diagnosis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Messages that did not decode.
    pub malformed: u64,
    /// Records whose signature did not verify.
    pub bad_signature: u64,
    /// Records over the size limits.
    pub too_large: u64,
    /// `Leave` messages about a node other than the sender.
    pub foreign_leave: u64,
}

/// The membership state machine of one node.
pub struct Membership {
    key: Keypair,
    local_id: PeerId,
    local: MemberRecord,
    config: MembershipConfig,
    members: HashMap<PeerId, Member>,
    events: Vec<Event>,
    rejections: Rejections,
}

impl Membership {
    /// A table holding only this node. `local.heartbeat` is reset; `local.incarnation` must be higher
    /// than in any earlier run of this identity (the driver persists it).
    pub fn new(
        key: Keypair,
        mut local: MemberRecord,
        config: MembershipConfig,
        now: Duration,
    ) -> Self {
        local.heartbeat = 0;
        local.status = Status::Alive;
        let local_id = key.public().to_peer_id();
        let mut m = Membership {
            key,
            local_id,
            local,
            config,
            members: HashMap::new(),
            events: Vec::new(),
            rejections: Rejections::default(),
        };
        m.publish_local(now);
        m
    }

    /// This node's id.
    pub fn local_id(&self) -> PeerId {
        self.local_id
    }

    /// Every known member, this node included.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One member.
    pub fn member(&self, id: &PeerId) -> Option<&Member> {
        self.members.get(id)
    }

    /// What has been refused so far.
    pub fn rejections(&self) -> &Rejections {
        &self.rejections
    }

    /// Changes this node's advertised addresses; gossiped from the next tick.
    pub fn set_local_addrs(&mut self, addrs: Vec<String>, now: Duration) {
        if self.local.addrs != addrs {
            self.local.addrs = addrs;
            self.publish_local(now);
        }
    }

    /// Bumps the heartbeat, updates liveness, and picks up to `gossip_fanout` members to gossip to
    /// (alive first, then suspect and dead ones, so that a healed partition is noticed).
    pub fn handle_tick(&mut self, now: Duration, rng: &mut impl Rng) -> Vec<PeerId> {
        self.publish_local(now);
        for m in self.members.values_mut() {
            if m.id == self.local_id || m.state == State::Left {
                continue;
            }
            let silent = now.saturating_sub(m.last_heard);
            let next = if silent >= self.config.dead_after {
                State::Dead
            } else if silent >= self.config.suspect_after {
                State::Suspect
            } else {
                State::Alive
            };
            if next != m.state {
                m.state = next;
                self.events.push(match next {
                    State::Alive => Event::Alive(m.id),
                    State::Suspect => Event::Suspect(m.id),
                    State::Dead => Event::Dead(m.id),
                    State::Left => Event::Left(m.id),
                });
            }
        }
        let mut live: Vec<PeerId> = Vec::new();
        let mut others: Vec<PeerId> = Vec::new();
        for m in self.members.values() {
            match m.state {
                _ if m.id == self.local_id => {}
                State::Alive => live.push(m.id),
                State::Suspect | State::Dead => others.push(m.id),
                State::Left => {}
            }
        }
        live.sort();
        others.sort();
        live.shuffle(rng);
        others.shuffle(rng);
        let mut targets: Vec<PeerId> = live.into_iter().take(self.config.gossip_fanout).collect();
        // One extra probe per tick toward a silent member lets a healed partition merge.
        if let Some(silent) = others.into_iter().next() {
            targets.push(silent);
        }
        targets
    }

    /// The gossip message carrying this node's table.
    pub fn gossip(&self, now: Duration) -> MembershipMessage {
        MembershipMessage::Gossip(
            self.members
                .values()
                .map(|m| GossipEntry {
                    record: m.signed.clone(),
                    age_ms: now.saturating_sub(m.last_heard).as_millis() as u64,
                })
                .collect(),
        )
    }

    /// Handles a message from `from` (authenticated by the transport); returns the answer to send.
    pub fn handle_message(
        &mut self,
        from: PeerId,
        msg: MembershipMessage,
        now: Duration,
    ) -> Option<MembershipMessage> {
        match msg {
            MembershipMessage::Gossip(entries) => {
                for entry in entries {
                    self.merge(entry.record, Duration::from_millis(entry.age_ms), now);
                }
                Some(self.gossip(now))
            }
            MembershipMessage::Leave(record) => {
                match record.peek() {
                    Ok((subject, _)) if subject == from => self.merge(record, Duration::ZERO, now),
                    Ok(_) => self.rejections.foreign_leave += 1,
                    Err(e) => self.count(e),
                }
                Some(MembershipMessage::Ack)
            }
            MembershipMessage::Ack => None,
        }
    }

    /// Counts a message that could not be decoded at all.
    pub fn handle_malformed(&mut self) {
        self.rejections.malformed += 1;
    }

    /// Marks this node as leaving and returns the signed `Left` record to send to every peer.
    pub fn leave(&mut self, now: Duration) -> MembershipMessage {
        self.local.status = Status::Left;
        self.publish_local(now);
        let signed = self.members[&self.local_id].signed.clone();
        MembershipMessage::Leave(signed)
    }

    /// Takes the events raised since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn publish_local(&mut self, now: Duration) {
        self.local.heartbeat += 1;
        let signed = SignedRecord::sign(&self.key, &self.local);
        let state = match self.local.status {
            Status::Alive => State::Alive,
            Status::Left => State::Left,
        };
        self.members.insert(
            self.local_id,
            Member {
                id: self.local_id,
                record: self.local.clone(),
                signed,
                state,
                last_heard: now,
            },
        );
    }

    fn count(&mut self, e: RecordError) {
        match e {
            RecordError::Malformed => self.rejections.malformed += 1,
            RecordError::BadSignature => self.rejections.bad_signature += 1,
            RecordError::TooLarge => self.rejections.too_large += 1,
        }
    }

    fn merge(&mut self, signed: SignedRecord, age: Duration, now: Duration) {
        let (id, record) = match signed.peek() {
            Ok(x) => x,
            Err(e) => return self.count(e),
        };
        if id == self.local_id {
            return self.refute(&record, now);
        }
        let known = self.members.get(&id);
        if known.is_some_and(|m| m.record.version_key() >= record.version_key()) {
            return;
        }
        // Only news pays for a signature check.
        if let Err(e) = signed.verify() {
            return self.count(e);
        }
        let state = match record.status {
            Status::Left => State::Left,
            Status::Alive => State::Alive,
        };
        match self.members.get_mut(&id) {
            None => {
                // A newcomer trusts the sender's age once, so a long-silent member is not revived.
                let age = age.min(self.config.dead_after);
                let last_heard = now.saturating_sub(age);
                let state = match state {
                    State::Alive if age >= self.config.dead_after => State::Dead,
                    State::Alive if age >= self.config.suspect_after => State::Suspect,
                    other => other,
                };
                self.events.push(match state {
                    State::Left => Event::Left(id),
                    State::Alive | State::Suspect | State::Dead => Event::Joined(id),
                });
                self.members.insert(
                    id,
                    Member {
                        id,
                        record,
                        signed,
                        state,
                        last_heard,
                    },
                );
            }
            Some(m) => {
                let meta_changed = m.record.name != record.name
                    || m.record.role != record.role
                    || m.record.zone != record.zone
                    || m.record.addrs != record.addrs
                    || m.record.version != record.version;
                if state != m.state {
                    self.events.push(match state {
                        State::Left => Event::Left(id),
                        State::Alive | State::Suspect | State::Dead => Event::Alive(id),
                    });
                }
                if meta_changed {
                    self.events.push(Event::MetadataChanged(id));
                }
                m.record = record;
                m.signed = signed;
                m.state = state;
                m.last_heard = now;
            }
        }
    }

    /// Someone relays a record of ours at least as new as ours (an earlier run with the same
    /// identity and a lost incarnation counter): move past it so our current record wins.
    fn refute(&mut self, theirs: &MemberRecord, now: Duration) {
        if theirs.version_key() >= self.local.version_key() && self.local.status == Status::Alive {
            self.local.incarnation = theirs.incarnation + 1;
            self.local.heartbeat = 0;
            self.publish_local(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn node(name: &str) -> Membership {
        let rec = MemberRecord {
            name: name.into(),
            role: Role::Active,
            zone: "default".into(),
            addrs: vec![],
            incarnation: 1,
            heartbeat: 0,
            status: Status::Alive,
            version: "test".into(),
        };
        Membership::new(
            Keypair::generate_ed25519(),
            rec,
            MembershipConfig::default(),
            Duration::ZERO,
        )
    }

    fn exchange(a: &mut Membership, b: &mut Membership, now: Duration) {
        let reply = b.handle_message(a.local_id(), a.gossip(now), now).unwrap();
        a.handle_message(b.local_id(), reply, now);
    }

    fn state(of: &Membership, id: PeerId) -> Option<State> {
        of.member(&id).map(|m| m.state)
    }

    #[test]
    fn members_learned_through_one_peer_become_known_to_all() {
        let (mut a, mut b, mut c) = (node("a"), node("b"), node("c"));
        let t = Duration::from_millis(10);
        exchange(&mut b, &mut c, t);
        exchange(&mut a, &mut b, t);
        assert_eq!(state(&a, c.local_id()), Some(State::Alive));
        assert_eq!(a.members().count(), 3);
        assert!(a.drain_events().contains(&Event::Joined(c.local_id())));
    }

    #[test]
    fn a_silent_member_is_suspected_then_declared_dead() {
        let (mut a, mut b) = (node("a"), node("b"));
        let mut rng = StdRng::seed_from_u64(1);
        exchange(&mut a, &mut b, Duration::ZERO);
        let cfg = MembershipConfig::default();
        a.handle_tick(cfg.suspect_after, &mut rng);
        assert_eq!(state(&a, b.local_id()), Some(State::Suspect));
        a.handle_tick(cfg.dead_after, &mut rng);
        assert_eq!(state(&a, b.local_id()), Some(State::Dead));
        // It comes back: its next heartbeat revives it.
        b.handle_tick(cfg.dead_after, &mut rng);
        exchange(&mut a, &mut b, cfg.dead_after);
        assert_eq!(state(&a, b.local_id()), Some(State::Alive));
        assert!(a.drain_events().contains(&Event::Alive(b.local_id())));
    }

    #[test]
    fn a_leaving_member_is_shown_left_and_that_spreads() {
        let (mut a, mut b, mut c) = (node("a"), node("b"), node("c"));
        let t = Duration::ZERO;
        exchange(&mut a, &mut b, t);
        exchange(&mut b, &mut c, t);
        let leave = a.leave(t);
        b.handle_message(a.local_id(), leave, t);
        assert_eq!(state(&b, a.local_id()), Some(State::Left));
        exchange(&mut c, &mut b, t);
        assert_eq!(state(&c, a.local_id()), Some(State::Left));
        // Left members are neither gossiped to nor turned dead by silence.
        let mut rng = StdRng::seed_from_u64(2);
        let targets = b.handle_tick(Duration::from_secs(60), &mut rng);
        assert!(!targets.contains(&a.local_id()));
        assert_eq!(state(&b, a.local_id()), Some(State::Left));
    }

    #[test]
    fn a_leave_sent_on_behalf_of_another_node_is_refused() {
        let (mut a, mut b, mut mallory) = (node("a"), node("b"), node("m"));
        let t = Duration::ZERO;
        exchange(&mut a, &mut b, t);
        let leave = a.leave(t);
        mallory.handle_message(a.local_id(), MembershipMessage::Ack, t);
        b.handle_message(mallory.local_id(), leave, t);
        assert_eq!(state(&b, a.local_id()), Some(State::Alive));
        assert_eq!(b.rejections().foreign_leave, 1);
    }

    #[test]
    fn a_forged_record_leaves_the_table_unchanged() {
        let (mut a, mut b) = (node("a"), node("b"));
        let t = Duration::ZERO;
        exchange(&mut a, &mut b, t);
        let mut forged = a.member(&a.local_id()).unwrap().record.clone();
        forged.heartbeat += 100;
        forged.status = Status::Left;
        let mut signed = a.member(&a.local_id()).unwrap().signed.clone();
        signed.body = postcard::to_stdvec(&forged).unwrap();
        b.handle_message(
            a.local_id(),
            MembershipMessage::Gossip(vec![GossipEntry {
                record: signed,
                age_ms: 0,
            }]),
            t,
        );
        assert_eq!(state(&b, a.local_id()), Some(State::Alive));
        assert_eq!(b.rejections().bad_signature, 1);
    }

    #[test]
    fn a_newcomer_does_not_revive_a_member_long_dead() {
        let (mut a, mut b, mut c) = (node("a"), node("b"), node("c"));
        let mut rng = StdRng::seed_from_u64(3);
        exchange(&mut a, &mut b, Duration::ZERO);
        let later = Duration::from_secs(30);
        a.handle_tick(later, &mut rng);
        exchange(&mut c, &mut a, later);
        assert_eq!(state(&c, b.local_id()), Some(State::Dead));
    }

    #[test]
    fn gossip_targets_never_include_self_or_exceed_the_fanout() {
        let mut hub = node("hub");
        let mut rng = StdRng::seed_from_u64(4);
        for i in 0..10 {
            let mut n = node(&format!("n{i}"));
            exchange(&mut hub, &mut n, Duration::ZERO);
        }
        let targets = hub.handle_tick(Duration::from_millis(500), &mut rng);
        assert_eq!(targets.len(), MembershipConfig::default().gossip_fanout);
        assert!(!targets.contains(&hub.local_id()));
    }
}
