//! The agent: wires configuration, data dir, network, membership and control socket together, and
//! owns the one event loop that drives them.
//!
//! Start-up is ordered so that a refusal writes nothing: every check that can fail on operator input
//! (config, cluster key, data dir lock, listen ports) runs before the first byte goes to the data dir.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use dci_proto::control::MemberInfo;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, mdns, Multiaddr, PeerId, Swarm};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;

use crate::config::{one_line, Config};
use crate::control::{self, Query};
use crate::datadir::{DataDir, DataDirError};
use crate::membership::{Event, MemberRecord, Membership, MembershipMessage, State, Status};
use crate::net::backoff::Backoff;
use crate::net::{self, Behaviour, BehaviourEvent, NetError, PROTOCOL_VERSION};

/// How long a leaving agent waits for its peers to acknowledge.
const LEAVE_GRACE: Duration = Duration::from_millis(800);

/// Why the agent could not start. All of these come from the operator's input or the host.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir is unusable.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The network could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why (e.g. the port is in use).
        reason: String,
    },
    /// The sled database could not be opened.
    #[error("cannot open database {path}: {reason}")]
    Database {
        /// The database directory.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The control socket could not be opened.
    #[error(transparent)]
    Control(#[from] control::ControlError),
}

/// A started agent, ready to [`Agent::run`].
pub struct Agent {
    config: Config,
    swarm: Swarm<Behaviour>,
    membership: Membership,
    db: sled::Db,
    data_dir: DataDir,
    queries: mpsc::Receiver<Query>,
    started: Instant,
    rng: StdRng,
    connected: HashSet<PeerId>,
    peer_backoff: Backoff<PeerId>,
    seed_backoff: Backoff<Multiaddr>,
    /// Seeds a dial has reached; the others are retried until they are (or the mesh is lost).
    seeds_reached: HashSet<Multiaddr>,
    /// Seed dials in flight, by connection.
    seed_dials: HashMap<ConnectionId, Multiaddr>,
}

impl Agent {
    /// Checks everything, binds the ports, then creates the data dir, identity, database and
    /// control socket. Must run inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Agent, StartError> {
        let mut data_dir = DataDir::inspect(&config.data_dir)?;
        let (key, new_key) = match data_dir.read_identity()? {
            Some(key) => (key, false),
            None => (Keypair::generate_ed25519(), true),
        };
        let local_id = key.public().to_peer_id();
        let mut swarm = net::build_swarm(key.clone(), config.cluster_key, config.mdns)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| StartError::Listen {
                    addr: addr.clone(),
                    reason: listen_reason(&e),
                })?;
        }

        // From here on the agent writes to its data dir.
        data_dir.create()?;
        if new_key {
            data_dir.write_identity(&key)?;
        }
        let db_err = |e: sled::Error| StartError::Database {
            path: data_dir.db_path(),
            reason: one_line(&e.to_string()),
        };
        let db = sled::open(data_dir.db_path()).map_err(db_err)?;
        let incarnation = next_incarnation(&db).map_err(db_err)?;
        let listener = control::bind(&data_dir.socket_path())?;
        let (query_tx, queries) = mpsc::channel(64);
        tokio::spawn(control::serve(listener, local_id.to_string(), query_tx));

        let record = MemberRecord {
            name: config.name.clone(),
            role: config.role,
            zone: config.zone.clone(),
            addrs: Vec::new(),
            incarnation,
            heartbeat: 0,
            status: Status::Alive,
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let membership = Membership::new(key, record, config.membership.clone(), Duration::ZERO);
        if config.cluster_key.is_none() {
            tracing::warn!(
                "no --cluster-key: this agent admits any peer that reaches it; give every node the same key file to close the mesh"
            );
        }
        tracing::info!(
            name = %config.name,
            id = %local_id,
            role = config.role.as_str(),
            zone = %config.zone,
            data_dir = %data_dir.path().display(),
            "dcid started"
        );
        Ok(Agent {
            seed_backoff: Backoff::default(),
            seeds_reached: HashSet::new(),
            seed_dials: HashMap::new(),
            peer_backoff: Backoff::default(),
            connected: HashSet::new(),
            rng: StdRng::from_entropy(),
            started: Instant::now(),
            config,
            swarm,
            membership,
            db,
            data_dir,
            queries,
        })
    }

    /// This node's id.
    pub fn local_id(&self) -> PeerId {
        self.membership.local_id()
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Runs until `shutdown` resolves, then leaves the mesh gracefully.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.config.membership.gossip_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => self.on_tick(),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(query) = self.queries.recv() => self.on_query(query),
            }
        }
        self.leave().await;
    }

    fn on_tick(&mut self) {
        let now = self.now();
        let targets = self.membership.handle_tick(now, &mut self.rng);
        self.log_events();
        let gossip = self.membership.gossip(now).encode();
        for peer in targets {
            if self.connected.contains(&peer) {
                self.swarm
                    .behaviour_mut()
                    .membership
                    .send_request(&peer, gossip.clone());
            }
        }
        self.redial(now);
    }

    /// Dials members we should be connected to, and every seed not reached yet. Seeds are retried
    /// even while other peers are connected: a seed that started late would otherwise leave two
    /// islands that never meet.
    fn redial(&mut self, now: Duration) {
        let local = self.local_id();
        let wanted: Vec<(PeerId, Vec<Multiaddr>)> = self
            .membership
            .members()
            .filter(|m| m.id != local && m.state != State::Left && !self.connected.contains(&m.id))
            .map(|m| {
                (
                    m.id,
                    m.record
                        .addrs
                        .iter()
                        .filter_map(|a| a.parse().ok())
                        .collect(),
                )
            })
            .collect();
        for (peer, addrs) in wanted {
            if !addrs.is_empty() && self.peer_backoff.try_now(&peer, now) {
                let opts = DialOpts::peer_id(peer).addresses(addrs).build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, "dial failed: {e}");
                }
            }
        }
        if self.connected.is_empty() {
            self.seeds_reached.clear();
        }
        for seed in self.config.join.clone() {
            let dialing = self.seed_dials.values().any(|s| *s == seed);
            if self.seeds_reached.contains(&seed)
                || dialing
                || !self.seed_backoff.try_now(&seed, now)
            {
                continue;
            }
            tracing::debug!(%seed, "dialing seed");
            let opts = DialOpts::unknown_peer_id().address(seed.clone()).build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.seed_dials.insert(id, seed);
                }
                Err(e) => tracing::warn!(%seed, "cannot dial seed: {}", one_line(&e.to_string())),
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.advertise_listeners();
            }
            SwarmEvent::ExpiredListenAddr { .. } => self.advertise_listeners(),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                if self.connected.insert(peer_id) {
                    tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                }
                self.peer_backoff.reset(&peer_id);
                if let Some(seed) = self.seed_dials.remove(&connection_id) {
                    self.seed_backoff.reset(&seed);
                    self.seeds_reached.insert(seed);
                }
                // Exchange tables at once instead of waiting for the next tick.
                let gossip = self.membership.gossip(self.now()).encode();
                self.swarm
                    .behaviour_mut()
                    .membership
                    .send_request(&peer_id, gossip);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::warn!(
                    from = %send_back_addr,
                    "refused connection: {} (a peer without this cluster's key fails here)",
                    one_line(&error.to_string())
                );
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error,
                connection_id,
            } => {
                self.seed_dials.remove(&connection_id);
                let peer = peer_id
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "seed".into());
                tracing::warn!(%peer, "cannot connect: {}", one_line(&error.to_string()));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Membership(event)) => self.on_membership(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocol_version != PROTOCOL_VERSION => {
                tracing::warn!(peer = %peer_id, version = %info.protocol_version, "incompatible protocol version; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if peer != self.local_id() && !self.connected.contains(&peer) {
                        tracing::debug!(%peer, %addr, "discovered by mDNS");
                        let opts = DialOpts::peer_id(peer).addresses(vec![addr]).build();
                        let _ = self.swarm.dial(opts);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_membership(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        let now = self.now();
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => match MembershipMessage::decode(&request) {
                    Ok(msg) => {
                        if let Some(answer) = self.membership.handle_message(peer, msg, now) {
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .membership
                                .send_response(channel, answer.encode());
                        }
                    }
                    Err(e) => self.refuse_peer(peer, &e.to_string()),
                },
                request_response::Message::Response { response, .. } => {
                    match MembershipMessage::decode(&response) {
                        Ok(msg) => {
                            self.membership.handle_message(peer, msg, now);
                        }
                        Err(e) => self.refuse_peer(peer, &e.to_string()),
                    }
                }
            },
            request_response::Event::InboundFailure { peer, error, .. } => {
                if let request_response::InboundFailure::Io(e) = &error {
                    self.refuse_peer(peer, &e.to_string());
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "membership request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
        self.log_events();
    }

    /// A peer sent bytes that are not a membership message: count, log, disconnect.
    fn refuse_peer(&mut self, peer: PeerId, reason: &str) {
        self.membership.handle_malformed();
        tracing::warn!(%peer, "malformed membership message ({}); disconnecting", one_line(reason));
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn advertise_listeners(&mut self) {
        let addrs = advertised(self.swarm.listeners());
        let now = self.now();
        self.membership.set_local_addrs(addrs, now);
    }

    fn on_query(&mut self, query: Query) {
        match query {
            Query::Members(reply) => {
                let _ = reply.send(self.member_infos());
            }
        }
    }

    fn member_infos(&self) -> Vec<MemberInfo> {
        let now = self.now();
        let local = self.local_id();
        let mut rows: Vec<MemberInfo> = self
            .membership
            .members()
            .map(|m| MemberInfo {
                id: m.id.to_string(),
                name: m.record.name.clone(),
                state: m.state.as_str().into(),
                role: m.record.role.as_str().into(),
                zone: m.record.zone.clone(),
                incarnation: m.record.incarnation,
                last_heard_ms: if m.id == local {
                    0
                } else {
                    now.saturating_sub(m.last_heard).as_millis() as u64
                },
                version: m.record.version.clone(),
                addrs: m.record.addrs.clone(),
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        rows
    }

    fn log_events(&mut self) {
        for event in self.membership.drain_events() {
            let (id, what) = match event {
                Event::Joined(id) => (id, "joined"),
                Event::Alive(id) => (id, "alive"),
                Event::Suspect(id) => (id, "suspect"),
                Event::Dead(id) => (id, "dead"),
                Event::Left(id) => (id, "left"),
                Event::MetadataChanged(id) => (id, "metadata changed"),
            };
            let name = self
                .membership
                .member(&id)
                .map(|m| m.record.name.clone())
                .unwrap_or_default();
            match event {
                Event::Dead(_) | Event::Suspect(_) => {
                    tracing::warn!(member = %name, id = %id, "member {what}")
                }
                Event::Joined(_) | Event::Alive(_) | Event::Left(_) | Event::MetadataChanged(_) => {
                    tracing::info!(member = %name, id = %id, "member {what}")
                }
            }
        }
    }

    /// Tells every connected peer that this node leaves, and waits briefly for their acks.
    async fn leave(mut self) {
        let leave = self.membership.leave(self.now()).encode();
        let mut pending: HashSet<OutboundRequestId> = HashSet::new();
        for peer in self.connected.clone() {
            pending.insert(
                self.swarm
                    .behaviour_mut()
                    .membership
                    .send_request(&peer, leave.clone()),
            );
        }
        let deadline = tokio::time::sleep(LEAVE_GRACE);
        tokio::pin!(deadline);
        while !pending.is_empty() {
            tokio::select! {
                _ = &mut deadline => break,
                event = self.swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(BehaviourEvent::Membership(
                        request_response::Event::Message {
                            message: request_response::Message::Response { request_id, .. },
                            ..
                        }
                        | request_response::Event::OutboundFailure { request_id, .. },
                    )) = event
                    {
                        pending.remove(&request_id);
                    }
                }
            }
        }
        let _ = std::fs::remove_file(self.data_dir.socket_path());
        if let Err(e) = self.db.flush_async().await {
            tracing::warn!("database flush failed: {e}");
        }
        tracing::info!("dcid stopped; peers were told it left");
    }
}

/// The addresses to tell peers: loopback ones only when there is nothing else, since a peer on
/// another host that dials our 127.0.0.1 reaches itself.
fn advertised<'a>(listeners: impl Iterator<Item = &'a Multiaddr>) -> Vec<String> {
    let is_loopback = |a: &Multiaddr| {
        a.iter().any(|p| match p {
            libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_loopback(),
            libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
    };
    let all: Vec<&Multiaddr> = listeners.collect();
    let routable: Vec<String> = all
        .iter()
        .filter(|a| !is_loopback(a))
        .map(|a| a.to_string())
        .collect();
    if routable.is_empty() {
        all.iter().map(|a| a.to_string()).collect()
    } else {
        routable
    }
}

fn listen_reason(e: &libp2p::TransportError<std::io::Error>) -> String {
    match e {
        libp2p::TransportError::MultiaddrNotSupported(_) => "address not supported".into(),
        libp2p::TransportError::Other(io) => one_line(&io.to_string()),
    }
}

/// Bumps and persists the incarnation, so this run's records win over every earlier run's.
fn next_incarnation(db: &sled::Db) -> Result<u64, sled::Error> {
    let meta = db.open_tree("meta")?;
    let next = meta
        .get("incarnation")?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
        + 1;
    meta.insert("incarnation", &next.to_be_bytes())?;
    meta.flush()?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_advertised_only_when_nothing_else_listens() {
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let lan: Multiaddr = "/ip4/10.1.2.3/tcp/1".parse().unwrap();
        assert_eq!(advertised([&lo, &lan].into_iter()), vec![lan.to_string()]);
        assert_eq!(advertised([&lo].into_iter()), vec![lo.to_string()]);
    }
}
