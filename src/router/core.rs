//! The routing core, sans-IO: an envelope and where it came from go in, actions come out
//! (deliver here, send to a peer, answer with an error). It never touches a socket or a clock.
//!
//! Call order: [`Router::set_view`] whenever membership changes; [`Router::handle`] for every
//! envelope (from a local peerlet or client, or from a peer); [`Router::handle_send_failed`]
//! when the driver could not hand a [`Action::Send`] to its peer; then [`Router::drain`] the
//! actions and carry them out in order.
//!
//! Rules (after the seeds' Figure 23): a TTL above [`MAX_TTL`] is clamped to it on receipt; an
//! envelope received with TTL 0 is expired; each transmission to another node takes one from
//! the TTL, and one that would leave with 0 is expired instead. Duplicates are dropped by
//! (id, node it is headed for), with bounded memory. Multicast and broadcast fan out at the
//! origin, one copy per member; a copy received from a peer is only delivered, never fanned out
//! again, which with the dedup makes each intended peerlet see it once. A target that is not
//! connected is reached through a connected member (a relay), except an envelope for one of the
//! [`AUTHENTICATED_APPS`], which its target refuses from a relay: that one is sent directly (the
//! driver dials). Whatever cannot be delivered comes
//! back to its sender as an error envelope; an undeliverable reply or error is only counted and
//! logged, so that errors never bounce forever.
//!
//! Helpers (seed `000`'s load sharing): a blade under sustained load may have helpers, spares that
//! restored a copy of its data. The origin spreads an envelope for the blade over the holder and
//! its helpers (by envelope id) only when the target peerlet declares its message type read-only,
//! and only to helpers granted at the seat's current epoch; a helper delivers such an envelope
//! itself under the same two checks, and passes anything else on to the holder.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use dci_peerlet::error_payload;
use dci_proto::{Destination, Envelope, Kind, Sender, MAX_TTL};

use super::dedup::Dedup;

/// Apps whose envelopes must come straight from their sender (no relay): their authority is
/// the sender's identity.
pub const AUTHENTICATED_APPS: [&str; 4] = [
    dci_proto::notice::NOTICE_APP,
    "exec",
    dci_peerlet_fs::APP,
    super::peerlets::PEERLETS_APP,
];

/// Whether `env` is for an app that refuses relayed envelopes.
pub fn needs_direct_path(env: &Envelope) -> bool {
    AUTHENTICATED_APPS.contains(&env.target.app.as_deref().unwrap_or(""))
}

/// The application name the router signs its own error envelopes with.
pub const ROUTER_APP: &str = "router";

/// The name a local client may use for "this node" in `node:` destinations.
pub const LOCAL_ALIAS: &str = "local";

/// One member as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its node id.
    pub node: String,
    /// The blade it holds (its member name until the seat table exists).
    pub blade: Option<String>,
    /// Whether membership considers it up (alive, unreachable-link or suspect).
    pub up: bool,
    /// Whether a connection to it is open now.
    pub connected: bool,
}

/// Resolves a blade name to the node holding it now and its epoch: the seat table where it names
/// the blade, else the member of that name (a blade no election has seated yet, or a spare's own
/// name).
pub trait SeatLookup {
    /// The node holding `blade` and the holder epoch, if anyone holds it.
    fn holder(&self, blade: &str) -> Option<(String, u64)>;
}

/// What the router knows of the mesh: itself, the members, the groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// This node's id.
    pub local: String,
    /// The blade this node holds, if any.
    pub local_blade: Option<String>,
    /// The epoch of that blade's seat while the seat table names this node, with or without a
    /// lease: what its envelopes carry. A holder whose lease lapses a moment is not stale; one
    /// replaced at a higher epoch is, to every node that knows it.
    pub local_epoch: Option<u64>,
    /// Every other member.
    pub peers: Vec<Peer>,
    /// Named groups: group name → blade names.
    pub groups: HashMap<String, Vec<String>>,
    /// The seat table: blade → (holder node, epoch); `None` when this node holds the seat but
    /// may not act as the blade now (no lease), so that nothing is delivered to it here.
    pub seats: HashMap<String, Option<(String, u64)>>,
    /// Helpers as their holders announce them: blade → (the epoch they were granted at, their
    /// nodes).
    pub helpers: HashMap<String, (u64, Vec<String>)>,
    /// The blade this node helps, with the epoch it was granted at.
    pub helping: Option<(String, u64)>,
}

impl SeatLookup for View {
    fn holder(&self, blade: &str) -> Option<(String, u64)> {
        if let Some(seat) = self.seats.get(blade) {
            let (node, epoch) = seat.as_ref()?;
            let up = *node == self.local || self.peer(node).is_some_and(|p| p.up);
            return up.then(|| (node.clone(), *epoch));
        }
        if self.local_blade.as_deref() == Some(blade) {
            return Some((self.local.clone(), 0));
        }
        self.peers
            .iter()
            .find(|p| p.up && p.blade.as_deref() == Some(blade))
            .map(|p| (p.node.clone(), 0))
    }
}

/// The prefix of a group name that lists its blades itself: `set:blade-1,blade-3`.
pub const NODE_SET_PREFIX: &str = "set:";

impl View {
    fn peer(&self, node: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.node == node)
    }

    /// The blades of a group: configured, or listed in the name after [`NODE_SET_PREFIX`].
    pub fn group(&self, name: &str) -> Option<Vec<String>> {
        if let Some(list) = name.strip_prefix(NODE_SET_PREFIX) {
            return Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
        self.groups.get(name).cloned()
    }
}

/// Where an envelope came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local peerlet or control client.
    Local,
    /// A peer, directly: the envelope is for the receiving node.
    Peer(String),
    /// A peer asking this node to relay it on to `to`.
    Relay {
        /// The peer it came from.
        from: String,
        /// The node it is headed for.
        to: String,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Hand the envelope to the local peerlet host.
    Deliver(Envelope),
    /// Transmit to `peer` (TTL already taken for this hop); `relay_to` asks `peer` to pass it on
    /// to that node.
    Send {
        /// The next hop.
        peer: String,
        /// The final node when `peer` is only a relay.
        relay_to: Option<String>,
        /// The envelope.
        env: Envelope,
    },
}

/// Why an envelope was not delivered; each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Its TTL ran out.
    Expired,
    /// Seen already.
    Duplicate,
    /// No such blade, node or group, or no route to it.
    Unroutable,
    /// A reply or error that could not be delivered (not answered, to stop error storms).
    UndeliverableAnswer,
    /// The queue to the next hop stayed full.
    Busy,
    /// Written to the next hop, which never confirmed receipt.
    Unconfirmed,
    /// Sent as a blade under an epoch older than the seat table's for that blade: its sender was
    /// replaced (fencing).
    StaleEpoch,
}

/// Counters of what the router did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Envelopes handed to local peerlets.
    pub delivered: u64,
    /// Copies transmitted to peers (relayed ones included).
    pub sent: u64,
    /// Copies relayed for others.
    pub relayed: u64,
    /// Received TTLs clamped to the maximum.
    pub clamped: u64,
    /// Dropped, by reason.
    pub dropped: HashMap<DropReason, u64>,
}

/// The routing state machine; see the module docs.
pub struct Router {
    view: Arc<View>,
    dedup: Dedup,
    actions: Vec<Action>,
    stats: Stats,
    /// App type → the message types its peerlet declares read-only (`*`: all).
    read_only: HashMap<String, Vec<String>>,
}

/// Dedup memory: this many keys per generation (two generations at most; about 48 bytes each).
pub const DEDUP_CAPACITY: usize = 1 << 16;

impl Router {
    /// A router that knows nothing of the mesh yet.
    pub fn new(view: Arc<View>) -> Router {
        Router {
            view,
            dedup: Dedup::new(DEDUP_CAPACITY),
            actions: Vec::new(),
            stats: Stats::default(),
            read_only: HashMap::new(),
        }
    }

    /// Replaces what the local peerlets declare read-only (app type → message types).
    pub fn set_read_only(&mut self, read_only: HashMap<String, Vec<String>>) {
        self.read_only = read_only;
    }

    /// Replaces what the router knows of the mesh.
    pub fn set_view(&mut self, view: Arc<View>) {
        self.view = view;
    }

    /// What the router knows of the mesh.
    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// What the router did so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The actions produced since the last call, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Action> {
        self.actions.drain(..)
    }

    /// Routes one envelope.
    pub fn handle(&mut self, mut env: Envelope, origin: Origin) {
        if origin == Origin::Local {
            self.stamp(&mut env);
        }
        if env.ttl > MAX_TTL {
            env.ttl = MAX_TTL;
            self.stats.clamped += 1;
        }
        if env.ttl == 0 {
            let what = if origin == Origin::Local {
                "a TTL of 0 cannot leave the sender"
            } else {
                "the envelope's TTL ran out"
            };
            return self.refuse(&env, DropReason::Expired, "expired", what);
        }
        let headed_for = match &origin {
            Origin::Relay { to, .. } => to.clone(),
            Origin::Local | Origin::Peer(_) => self.view.local.clone(),
        };
        if !self.dedup.first_time(key(&env, &headed_for)) {
            *self.stats.dropped.entry(DropReason::Duplicate).or_default() += 1;
            return;
        }
        match origin {
            Origin::Relay { from, to } => {
                self.stats.relayed += 1;
                self.forward(env, &to, Some(&from));
            }
            Origin::Peer(_) if self.stale(&env) => {
                let blade = env.sender.blade.clone().unwrap_or_default();
                let message = format!(
                    "blade {blade} speaks under epoch {}, but its seat is at a higher one: its sender was replaced",
                    env.epoch.unwrap_or(0)
                );
                self.refuse(&env, DropReason::StaleEpoch, "stale-epoch", &message);
            }
            Origin::Peer(from) => match env.target.to.clone() {
                // The origin fanned these out already: a copy is for this node only.
                Destination::Group(_) | Destination::Broadcast => self.deliver(env),
                Destination::Node(n) => self.unicast(env, &n, Some(&from)),
                Destination::Blade(b) => self.unicast_blade(env, &b, Some(&from)),
            },
            Origin::Local => match env.target.to.clone() {
                Destination::Node(n) => self.unicast(env, &n, None),
                Destination::Blade(b) => self.unicast_blade(env, &b, None),
                Destination::Group(g) => self.multicast(env, &g),
                Destination::Broadcast => self.broadcast(env),
            },
        }
    }

    /// The driver could not hand `env` to `peer`: try a relay when `peer` was the final target,
    /// otherwise (or when no relay is left) answer with an error.
    pub fn handle_send_failed(&mut self, env: Envelope, peer: &str, relay_to: Option<&str>) {
        // The TTL taken for the failed hop pays for the hop to the relay instead.
        if relay_to.is_none() && !needs_direct_path(&env) {
            if let Some(relay) = self.pick_relay(peer, &[peer]).map(str::to_owned) {
                return self.send(env, &relay, Some(peer.to_owned()));
            }
        }
        let to = relay_to.unwrap_or(peer).to_owned();
        self.refuse(
            &env,
            DropReason::Unroutable,
            "unreachable",
            &format!("no route to node {to}"),
        );
    }

    /// An envelope written towards `peer`, which then confirmed nothing for a while (cut off or
    /// frozen): it may or may not have arrived, and another try would likely stall as long, so
    /// it is not sent again but its sender is told, in time to hear it before it stops waiting.
    pub fn handle_unconfirmed(&mut self, env: Envelope, peer: &str, relay_to: Option<&str>) {
        let to = relay_to.unwrap_or(peer).to_owned();
        self.refuse(
            &env,
            DropReason::Unconfirmed,
            "unreachable",
            &format!(
                "node {peer} stopped confirming receipt (cut off or frozen); the envelope to {to} may or may not have arrived"
            ),
        );
    }

    /// The queue to `peer` stayed full: answer the sender `busy` (a relay would meet the same
    /// slow peer).
    pub fn handle_busy(&mut self, env: Envelope, peer: &str, relay_to: Option<&str>) {
        let to = relay_to.unwrap_or(peer).to_owned();
        self.refuse(
            &env,
            DropReason::Busy,
            "busy",
            &format!("the queue towards node {to} is full"),
        );
    }

    /// Signs an envelope leaving this node with the blade it acts as now and the epoch of its
    /// seat, whatever its client put there.
    fn stamp(&self, env: &mut Envelope) {
        env.sender.blade = self.view.local_blade.clone();
        env.epoch = self.view.local_blade.as_ref().and(self.view.local_epoch);
    }

    /// Whether a peer's envelope speaks for a blade under an epoch below the one the seat table
    /// knows (no epoch counts as 0): an old holder after a pause, a partition or a restart.
    fn stale(&self, env: &Envelope) -> bool {
        let known = env
            .sender
            .blade
            .as_ref()
            .and_then(|b| self.view.seats.get(b))
            .and_then(|seat| seat.as_ref())
            .map(|(_, epoch)| *epoch);
        known.is_some_and(|k| env.epoch.unwrap_or(0) < k)
    }

    /// Whether `env` is a request or event whose target peerlet declares its message type
    /// read-only here.
    fn read_only(&self, env: &Envelope) -> bool {
        if !matches!(env.kind, Kind::Request | Kind::Event) {
            return false;
        }
        let declared = env
            .target
            .app
            .as_deref()
            .and_then(|app| self.read_only.get(app));
        match (declared, dci_peerlet::message_type(&env.payload)) {
            (Some(types), Some(t)) => dci_peerlet::is_read_only(types, t),
            _ => false,
        }
    }

    /// The node that serves `env` for `blade`, held by `holder` at `epoch`: the holder, or, for a
    /// read-only envelope, one of the holder and its helpers granted at this very epoch, chosen
    /// by the envelope's id. A copy from a peer was spread by its origin already: it is served
    /// here when this node helps the blade now, and goes to the holder otherwise.
    fn server(
        &self,
        env: &Envelope,
        blade: &str,
        holder: String,
        epoch: u64,
        local: bool,
    ) -> String {
        if !self.read_only(env) {
            return holder;
        }
        let helping_here = self.view.helping.as_ref() == Some(&(blade.to_owned(), epoch));
        if !local {
            return if helping_here {
                self.view.local.clone()
            } else {
                holder
            };
        }
        let mut nodes = vec![holder];
        if let Some((granted, helpers)) = self.view.helpers.get(blade) {
            if *granted == epoch {
                let live = helpers.iter().filter(|h| {
                    if **h == self.view.local {
                        helping_here
                    } else {
                        self.view.peer(h).is_some_and(|p| p.up)
                    }
                });
                nodes.extend(live.cloned());
            }
        }
        let i = (env.id.as_u128() % nodes.len() as u128) as usize;
        nodes.swap_remove(i)
    }

    fn unicast_blade(&mut self, env: Envelope, blade: &str, from: Option<&str>) {
        match self.view.holder(blade) {
            Some((node, epoch)) => {
                let node = self.server(&env, blade, node, epoch, from.is_none());
                self.unicast(env, &node, from)
            }
            None => self.refuse(
                &env,
                DropReason::Unroutable,
                "unknown-blade",
                &format!("no live member holds blade {blade}"),
            ),
        }
    }

    fn unicast(&mut self, env: Envelope, node: &str, from: Option<&str>) {
        if node == self.view.local || (from.is_none() && node == LOCAL_ALIAS) {
            self.deliver(env)
        } else {
            self.forward(env, node, from)
        }
    }

    fn multicast(&mut self, env: Envelope, group: &str) {
        let Some(blades) = self.view.group(group) else {
            return self.refuse(
                &env,
                DropReason::Unroutable,
                "unknown-group",
                &format!("no group named {group}"),
            );
        };
        let mut nodes: Vec<String> = Vec::new();
        let mut missing = Vec::new();
        for blade in &blades {
            match self.view.holder(blade) {
                Some((node, _)) if !nodes.contains(&node) => nodes.push(node),
                Some(_) => {}
                None => missing.push(blade.clone()),
            }
        }
        for node in nodes {
            let copy = env.clone();
            self.unicast(copy, &node, None);
        }
        if !missing.is_empty() {
            self.refuse(
                &env,
                DropReason::Unroutable,
                "unknown-blade",
                &format!("no live member holds {}", missing.join(", ")),
            );
        }
    }

    fn broadcast(&mut self, env: Envelope) {
        let view = Arc::clone(&self.view);
        for peer in view.peers.iter().filter(|p| p.up) {
            self.forward(env.clone(), &peer.node, None);
        }
        self.deliver(env);
    }

    fn deliver(&mut self, env: Envelope) {
        self.stats.delivered += 1;
        self.actions.push(Action::Deliver(env));
    }

    /// One hop towards `node`: directly when connected, else through a relay.
    fn forward(&mut self, mut env: Envelope, node: &str, from: Option<&str>) {
        if env.ttl <= 1 {
            return self.refuse(
                &env,
                DropReason::Expired,
                "expired",
                &format!("the TTL ran out before node {node}"),
            );
        }
        env.ttl -= 1;
        let view = Arc::clone(&self.view);
        match view.peer(node) {
            Some(p) if p.up && (p.connected || needs_direct_path(&env)) => {
                self.send(env, &p.node, None)
            }
            Some(p) if p.up => {
                let avoid: Vec<&str> = [Some(node), from].into_iter().flatten().collect();
                match self.pick_relay(node, &avoid) {
                    Some(relay) => {
                        let relay = relay.to_owned();
                        self.send(env, &relay, Some(node.to_owned()))
                    }
                    // Nobody to relay through: dial it directly.
                    None => self.send(env, &p.node, None),
                }
            }
            // Not a member (yet): it may still be connected, e.g. a peer answering before it
            // joined; the driver reports back if no stream can be opened.
            None => self.send(env, node, None),
            Some(_) => {
                env.ttl += 1;
                self.refuse(
                    &env,
                    DropReason::Unroutable,
                    "unreachable",
                    &format!("node {node} is not a live member"),
                )
            }
        }
    }

    /// A connected, live member other than those in `avoid`, chosen by hash of the target so
    /// that traffic to one target takes one path.
    fn pick_relay<'v>(&'v self, target: &str, avoid: &[&str]) -> Option<&'v str> {
        self.view
            .peers
            .iter()
            .filter(|p| p.up && p.connected && !avoid.contains(&p.node.as_str()))
            .max_by_key(|p| hash(&(target, &p.node)))
            .map(|p| p.node.as_str())
    }

    fn send(&mut self, env: Envelope, peer: &str, relay_to: Option<String>) {
        self.stats.sent += 1;
        self.actions.push(Action::Send {
            peer: peer.to_owned(),
            relay_to,
            env,
        });
    }

    /// Counts `why` and, unless `env` is itself an answer, tells its sender.
    fn refuse(&mut self, env: &Envelope, why: DropReason, code: &str, message: &str) {
        match env.kind {
            Kind::Reply | Kind::Error => {
                *self
                    .stats
                    .dropped
                    .entry(DropReason::UndeliverableAnswer)
                    .or_default() += 1;
                tracing::debug!(id = %env.id, kind = %env.kind, "{message}; an answer is not answered");
            }
            Kind::Request | Kind::Event => {
                *self.stats.dropped.entry(why).or_default() += 1;
                let me = Sender {
                    node: self.view.local.clone(),
                    blade: self.view.local_blade.clone(),
                    app: ROUTER_APP.into(),
                    instance: None,
                };
                let answer = env.reply_to(me, Kind::Error, error_payload(code, message));
                self.handle(answer, Origin::Local);
            }
        }
    }
}

fn hash<T: Hash>(t: &T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

fn key(env: &Envelope, headed_for: &str) -> super::dedup::Key {
    (env.id.as_u128(), hash(&headed_for))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dci_proto::{Payload, Target};

    fn view() -> View {
        let peer = |n: &str, connected| Peer {
            node: n.into(),
            blade: Some(format!("blade-{n}")),
            up: true,
            connected,
        };
        View {
            local: "a".into(),
            local_blade: Some("blade-a".into()),
            local_epoch: None,
            peers: vec![peer("b", true), peer("c", true), peer("d", false)],
            groups: HashMap::from([(
                "web".to_string(),
                vec!["blade-a".to_string(), "blade-c".to_string()],
            )]),
            seats: HashMap::new(),
            helpers: HashMap::new(),
            helping: None,
        }
    }

    #[test]
    fn a_seat_overrides_the_member_name_and_an_unleased_local_seat_resolves_nowhere() {
        let mut v = view();
        assert_eq!(v.holder("blade-b"), Some(("b".into(), 0)));
        v.seats.insert("blade-b".into(), Some(("c".into(), 4)));
        assert_eq!(v.holder("blade-b"), Some(("c".into(), 4)));
        v.seats.insert("blade-a".into(), None);
        assert_eq!(v.holder("blade-a"), None, "held here without a lease");
        v.peers[1].up = false;
        assert_eq!(v.holder("blade-b"), None, "its holder is down");
    }

    fn env(from: &str, to: Destination, ttl: u8) -> Envelope {
        let mut e = Envelope::request(
            Sender {
                node: from.into(),
                blade: None,
                app: "test".into(),
                instance: None,
            },
            Target {
                to,
                app: Some("echo".into()),
                instance: None,
            },
            Payload::empty(),
        );
        e.ttl = ttl;
        e
    }

    fn run(r: &mut Router, e: Envelope, o: Origin) -> Vec<Action> {
        r.handle(e, o);
        r.drain().collect()
    }

    fn sends(actions: &[Action]) -> Vec<(String, Option<String>, u8)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    peer,
                    relay_to,
                    env,
                } => Some((peer.clone(), relay_to.clone(), env.ttl)),
                Action::Deliver(_) => None,
            })
            .collect()
    }

    fn errors(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Deliver(e) if e.kind == Kind::Error => {
                    dci_peerlet::error_from_payload(&e.payload).map(|(c, _)| c)
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_blade_name_resolves_to_the_node_holding_it_and_takes_one_ttl() {
        let mut r = Router::new(Arc::new(view()));
        let a = run(
            &mut r,
            env("a", Destination::Blade("blade-b".into()), 5),
            Origin::Local,
        );
        assert_eq!(sends(&a), vec![("b".into(), None, 4)]);
    }

    #[test]
    fn a_ttl_above_nine_is_clamped_on_receipt() {
        let mut r = Router::new(Arc::new(view()));
        let a = run(
            &mut r,
            env("x", Destination::Node("a".into()), 200),
            Origin::Peer("b".into()),
        );
        match &a[..] {
            [Action::Deliver(e)] => assert_eq!(e.ttl, MAX_TTL),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.stats().clamped, 1);
    }

    #[test]
    fn an_envelope_received_with_ttl_zero_is_expired_and_its_sender_told() {
        let mut r = Router::new(Arc::new(view()));
        let a = run(
            &mut r,
            env("b", Destination::Node("a".into()), 0),
            Origin::Peer("b".into()),
        );
        assert_eq!(sends(&a), vec![("b".into(), None, MAX_TTL - 1)]);
        assert_eq!(r.stats().dropped.get(&DropReason::Expired), Some(&1));
    }

    #[test]
    fn an_envelope_that_would_leave_with_ttl_zero_expires_here() {
        let mut r = Router::new(Arc::new(view()));
        let a = run(
            &mut r,
            env("a", Destination::Node("b".into()), 1),
            Origin::Local,
        );
        assert!(sends(&a).is_empty());
        assert_eq!(errors(&a), vec!["expired".to_string()]);
    }

    #[test]
    fn a_duplicate_is_dropped_but_a_relayed_copy_for_another_node_is_not() {
        let mut r = Router::new(Arc::new(view()));
        let e = env("b", Destination::Group("web".into()), 5);
        assert_eq!(run(&mut r, e.clone(), Origin::Peer("b".into())).len(), 1);
        assert!(run(&mut r, e.clone(), Origin::Peer("c".into())).is_empty());
        let relayed = run(
            &mut r,
            e,
            Origin::Relay {
                from: "b".into(),
                to: "c".into(),
            },
        );
        assert_eq!(sends(&relayed), vec![("c".into(), None, 4)]);
    }

    #[test]
    fn multicast_sends_one_copy_per_member_of_the_group_and_delivers_here_once() {
        let mut r = Router::new(Arc::new(view()));
        let a = run(
            &mut r,
            env("a", Destination::Group("web".into()), 9),
            Origin::Local,
        );
        assert_eq!(sends(&a), vec![("c".into(), None, 8)]);
        assert_eq!(
            a.iter().filter(|a| matches!(a, Action::Deliver(_))).count(),
            1
        );
    }

    #[test]
    fn a_node_set_group_names_its_blades() {
        let mut r = Router::new(Arc::new(view()));
        let a = run(
            &mut r,
            env("a", Destination::Group("set:blade-b,blade-c".into()), 9),
            Origin::Local,
        );
        assert_eq!(sends(&a).len(), 2);
    }

    #[test]
    fn a_multicast_copy_from_a_peer_is_delivered_and_not_fanned_out_again() {
        let mut r = Router::new(Arc::new(view()));
        let a = run(
            &mut r,
            env("b", Destination::Broadcast, 9),
            Origin::Peer("b".into()),
        );
        assert!(matches!(&a[..], [Action::Deliver(_)]));
    }

    #[test]
    fn broadcast_reaches_every_live_member_and_this_node() {
        let mut r = Router::new(Arc::new(view()));
        let a = run(&mut r, env("a", Destination::Broadcast, 9), Origin::Local);
        let mut peers: Vec<String> = sends(&a)
            .into_iter()
            .map(|(p, relay, _)| relay.unwrap_or(p))
            .collect();
        peers.sort();
        assert_eq!(peers, vec!["b", "c", "d"]);
        assert_eq!(
            a.iter().filter(|a| matches!(a, Action::Deliver(_))).count(),
            1
        );
    }

    #[test]
    fn a_target_that_is_not_connected_is_reached_through_a_relay() {
        let mut r = Router::new(Arc::new(view()));
        let a = run(
            &mut r,
            env("a", Destination::Node("d".into()), 9),
            Origin::Local,
        );
        let s = sends(&a);
        assert_eq!(s.len(), 1);
        assert!(s[0].0 == "b" || s[0].0 == "c");
        assert_eq!(s[0].1.as_deref(), Some("d"));
    }

    #[test]
    fn an_envelope_its_target_would_refuse_from_a_relay_goes_direct_or_fails() {
        let mut r = Router::new(Arc::new(view()));
        let mut e = env("a", Destination::Node("d".into()), 9);
        e.target.app = Some(dci_proto::notice::NOTICE_APP.into());
        let a = run(&mut r, e.clone(), Origin::Local);
        assert_eq!(sends(&a), vec![("d".into(), None, 8)]);
        r.handle_send_failed(e, "d", None);
        let a: Vec<Action> = r.drain().collect();
        assert!(sends(&a).is_empty(), "{a:?}");
        assert_eq!(errors(&a), vec!["unreachable".to_string()]);
    }

    #[test]
    fn an_unconfirmed_envelope_is_answered_unreachable_and_never_sent_again() {
        let mut r = Router::new(Arc::new(view()));
        let e = env("a", Destination::Node("b".into()), 8);
        r.handle_unconfirmed(e, "b", None);
        let a: Vec<Action> = r.drain().collect();
        assert!(
            sends(&a).is_empty(),
            "a stalled peer's envelope is not tried again: {a:?}"
        );
        assert_eq!(errors(&a), vec!["unreachable".to_string()]);
        assert_eq!(r.stats().dropped.get(&DropReason::Unconfirmed), Some(&1));
    }

    #[test]
    fn a_failed_direct_send_is_retried_through_a_relay_then_answered_with_an_error() {
        let mut r = Router::new(Arc::new(view()));
        let mut e = env("a", Destination::Node("b".into()), 8);
        r.handle_send_failed(e.clone(), "b", None);
        let a: Vec<Action> = r.drain().collect();
        assert_eq!(sends(&a), vec![("c".into(), Some("b".into()), 8)]);
        e.ttl = 7;
        r.handle_send_failed(e, "c", Some("b"));
        let a: Vec<Action> = r.drain().collect();
        assert_eq!(errors(&a), vec!["unreachable".to_string()]);
    }

    #[test]
    fn a_node_outside_the_member_table_is_tried_directly_and_a_dead_one_is_refused() {
        let mut v = view();
        v.peers[0].up = false;
        let mut r = Router::new(Arc::new(v));
        let a = run(
            &mut r,
            env("a", Destination::Node("z".into()), 9),
            Origin::Local,
        );
        assert_eq!(sends(&a), vec![("z".into(), None, 8)]);
        let a = run(
            &mut r,
            env("a", Destination::Node("b".into()), 9),
            Origin::Local,
        );
        assert_eq!(errors(&a), vec!["unreachable".to_string()]);
    }

    #[test]
    fn an_unknown_blade_or_group_is_answered_with_an_error_and_an_answer_never_is() {
        let mut r = Router::new(Arc::new(view()));
        let a = run(
            &mut r,
            env("a", Destination::Blade("nope".into()), 9),
            Origin::Local,
        );
        assert_eq!(errors(&a), vec!["unknown-blade".to_string()]);
        let a = run(
            &mut r,
            env("a", Destination::Group("nope".into()), 9),
            Origin::Local,
        );
        assert_eq!(errors(&a), vec!["unknown-group".to_string()]);
        let mut reply = env("a", Destination::Blade("nope".into()), 9);
        reply.kind = Kind::Reply;
        assert!(run(&mut r, reply, Origin::Local).is_empty());
        assert_eq!(
            r.stats().dropped.get(&DropReason::UndeliverableAnswer),
            Some(&1)
        );
    }

    #[test]
    fn envelopes_leave_signed_with_the_seat_epoch_and_a_stale_sender_is_refused_and_counted() {
        let mut v = view();
        v.seats.insert("blade-a".into(), Some(("a".into(), 3)));
        v.local_epoch = Some(3);
        v.seats.insert("blade-b".into(), Some(("c".into(), 5)));
        let mut r = Router::new(Arc::new(v));
        // Whatever the client said, the envelope leaves as this node's blade at its epoch.
        let a = run(
            &mut r,
            env("a", Destination::Node("b".into()), 9),
            Origin::Local,
        );
        let [Action::Send { env: sent, .. }] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(
            (sent.sender.blade.as_deref(), sent.epoch),
            (Some("blade-a"), Some(3))
        );
        // blade-b's old holder, replaced at epoch 5, still speaks under 4: refused, told, counted.
        let mut old = env("b", Destination::Node("a".into()), 9);
        old.sender.blade = Some("blade-b".into());
        old.epoch = Some(4);
        let a = run(&mut r, old.clone(), Origin::Peer("b".into()));
        assert!(!a.iter().any(|x| matches!(x, Action::Deliver(_))), "{a:?}");
        let refusal = a.iter().find_map(|x| match x {
            Action::Send { peer, env, .. } if peer == "b" && env.kind == Kind::Error => {
                dci_peerlet::error_from_payload(&env.payload).map(|(c, _)| c)
            }
            _ => None,
        });
        assert_eq!(refusal.as_deref(), Some("stale-epoch"));
        assert_eq!(r.stats().dropped.get(&DropReason::StaleEpoch), Some(&1));
        // No epoch at all is as stale; the current holder's epoch, or a newer one, is delivered.
        for (epoch, delivered) in [(None, false), (Some(5), true), (Some(6), true)] {
            let mut e = old.clone();
            e.id = uuid::Uuid::new_v4();
            e.epoch = epoch;
            let a = run(&mut r, e, Origin::Peer("c".into()));
            assert_eq!(
                a.iter().any(|x| matches!(x, Action::Deliver(_))),
                delivered,
                "{epoch:?}: {a:?}"
            );
        }
        assert_eq!(r.stats().dropped.get(&DropReason::StaleEpoch), Some(&2));
    }
    fn typed(from: &str, blade: &str, message: &str) -> Envelope {
        let mut e = env(from, Destination::Blade(blade.into()), 9);
        e.payload = Payload::new(format!("<{message} xmlns=\"urn:t\"/>")).unwrap();
        e
    }

    fn helped_view(local: &str, granted_at: u64) -> View {
        let mut v = view();
        v.local = local.into();
        v.seats.insert("blade-b".into(), Some(("b".into(), 4)));
        v.helpers
            .insert("blade-b".into(), (granted_at, vec!["c".into()]));
        v
    }

    fn read_only_echo() -> HashMap<String, Vec<String>> {
        HashMap::from([("echo".to_string(), vec!["whoami".to_string()])])
    }

    #[test]
    fn only_read_only_envelopes_are_spread_to_helpers_and_only_at_the_seats_epoch() {
        let mut r = Router::new(Arc::new(helped_view("a", 4)));
        r.set_read_only(read_only_echo());
        let mut reads = std::collections::BTreeMap::new();
        for _ in 0..64 {
            let a = run(&mut r, typed("a", "blade-b", "whoami"), Origin::Local);
            for (peer, _, _) in sends(&a) {
                *reads.entry(peer).or_insert(0) += 1;
            }
        }
        assert_eq!(reads.keys().collect::<Vec<_>>(), ["b", "c"], "{reads:?}");
        for _ in 0..16 {
            let a = run(&mut r, typed("a", "blade-b", "write"), Origin::Local);
            assert_eq!(
                sends(&a),
                vec![("b".into(), None, 8)],
                "a write stays with the holder"
            );
        }
        // Helpers granted at an older epoch are not used: the seat moved on since.
        let mut r = Router::new(Arc::new(helped_view("a", 3)));
        r.set_read_only(read_only_echo());
        for _ in 0..16 {
            let a = run(&mut r, typed("a", "blade-b", "whoami"), Origin::Local);
            assert_eq!(sends(&a), vec![("b".into(), None, 8)]);
        }
    }

    #[test]
    fn a_helper_serves_only_read_only_copies_for_its_blade_at_its_epoch_and_passes_the_rest_on() {
        let helper = |helping_at: u64| {
            let mut v = helped_view("c", 4);
            v.peers[1].node = "a".into();
            v.helping = Some(("blade-b".into(), helping_at));
            let mut r = Router::new(Arc::new(v));
            r.set_read_only(read_only_echo());
            r
        };
        let mut r = helper(4);
        let a = run(
            &mut r,
            typed("a", "blade-b", "whoami"),
            Origin::Peer("a".into()),
        );
        assert!(matches!(&a[..], [Action::Deliver(_)]), "{a:?}");
        let a = run(
            &mut r,
            typed("a", "blade-b", "write"),
            Origin::Peer("a".into()),
        );
        assert_eq!(sends(&a), vec![("b".into(), None, 8)]);
        // Granted at an epoch the seat has left: it is no helper any more.
        let mut r = helper(3);
        let a = run(
            &mut r,
            typed("a", "blade-b", "whoami"),
            Origin::Peer("a".into()),
        );
        assert_eq!(sends(&a), vec![("b".into(), None, 8)]);
    }
}
