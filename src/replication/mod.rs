//! Replication: which nodes hold a blade's data ([`placement`]), the block protocol between agents
//! ([`protocol`]), and the service that backs up, pushes, syncs, repairs, collects and restores
//! ([`service`]).
//!
//! The service runs as its own task and never touches the swarm: it sends [`NetCommand`]s to the
//! agent's event loop, which owns the swarm, and the event loop hands it [`Inbound`] requests with
//! the channel to answer on kept in a [`Link`]. Block traffic has its own libp2p protocol,
//! [`BLOCKS_PROTOCOL`], beside membership and envelopes.

pub mod placement;
pub mod protocol;
pub mod service;
pub mod settings;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dci_proto::backup::BackupRequest;
use dci_proto::control::MemberInfo;
use dci_proto::Payload;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::failover::steps::TakeoverSteps;
use crate::net::codec::FrameCodec;

/// The block protocol.
pub const BLOCKS_PROTOCOL: StreamProtocol = StreamProtocol::new("/dci/blocks/1");

/// What the service asks of the event loop.
#[derive(Debug)]
pub enum NetCommand {
    /// Send a request to a peer and hand back its answer (or why there is none).
    Send {
        /// The peer.
        to: PeerId,
        /// The encoded request.
        request: Vec<u8>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
    /// Answer an inbound request.
    Respond {
        /// The token given with the [`Inbound`] request.
        token: u64,
        /// The encoded response.
        response: Vec<u8>,
    },
    /// The member table.
    Members(oneshot::Sender<Vec<MemberInfo>>),
}

/// A request from a peer, for the service.
#[derive(Debug)]
pub struct Inbound {
    /// The authenticated peer.
    pub peer: PeerId,
    /// Its member name, if it is a member: what entitles it to push a blade's data.
    pub peer_name: Option<String>,
    /// Answer with [`NetCommand::Respond`] and this token.
    pub token: u64,
    /// The encoded request.
    pub request: Vec<u8>,
}

/// An operator's command for the service: backup or package.
#[derive(Debug)]
pub enum Operator {
    /// `dcish backup`, `archives`, `restore`, `ls`, `cat`.
    Backup(BackupRequest),
    /// `dcish deploy`, `undeploy`, `packages`.
    Package(dci_proto::package::PackageRequest),
    /// Not an operator's: this node won the blade from another node; restore it (`to`, or the
    /// backup root), answering then, and adopt its archives after.
    TakeOver(dci_proto::backup::RestoreArgs),
}

/// An operator's command from the control socket, and where its answer goes.
pub type ControlCall = (Operator, oneshot::Sender<Result<Payload, (String, String)>>);

/// Each seated blade's holder and epoch, as the election last said, the blade this node acts as
/// now (it holds the seat and a lease renewed by a majority), and the blades it hosts beside it
/// (an active node allowed extra blades). An owner stamps its pushes with its blade's epoch, and
/// a holder refuses an owner's push stamped below the seat's: a replaced owner (paused,
/// partitioned, restarted) writes nothing more as that blade.
#[derive(Debug, Default)]
pub struct SeatEpochs(std::sync::RwLock<(SeatHolders, Option<String>, Vec<String>)>);

/// Blade → (holder, epoch).
type SeatHolders = HashMap<String, (PeerId, u64)>;

impl SeatEpochs {
    /// Replaces the table.
    pub fn set(&self, seats: impl IntoIterator<Item = (String, (PeerId, u64))>) {
        let mut t = self.0.write().unwrap_or_else(|e| e.into_inner());
        t.0 = seats.into_iter().collect();
    }

    /// Says which blade this node acts as now.
    pub fn set_acting(&self, blade: Option<String>) {
        let mut t = self.0.write().unwrap_or_else(|e| e.into_inner());
        t.1 = blade;
    }

    /// The holder and epoch of `blade`, if it has a seat.
    pub fn get(&self, blade: &str) -> Option<(PeerId, u64)> {
        let t = self.0.read().unwrap_or_else(|e| e.into_inner());
        t.0.get(blade).copied()
    }

    /// The blade this node acts as now, if any.
    pub fn acting(&self) -> Option<String> {
        let t = self.0.read().unwrap_or_else(|e| e.into_inner());
        t.1.clone()
    }

    /// Says which blades this node hosts beside the one it acts as.
    pub fn set_hosted(&self, blades: Vec<String>) {
        let mut t = self.0.write().unwrap_or_else(|e| e.into_inner());
        t.2 = blades;
    }

    /// The blades this node hosts beside the one it acts as.
    pub fn hosted(&self) -> Vec<String> {
        let t = self.0.read().unwrap_or_else(|e| e.into_inner());
        t.2.clone()
    }
}

/// What the service did and refused, for `dcish status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Blocks pushed to holders.
    pub pushed_blocks: AtomicU64,
    /// Encoded bytes pushed to holders.
    pub pushed_bytes: AtomicU64,
    /// Blocks received from owners and made durable.
    pub received_blocks: AtomicU64,
    /// Requests refused: not entitled, malformed, over a limit.
    pub refused: AtomicU64,
    /// Blocks found corrupt: received, fetched, or by the scrub.
    pub corrupt: AtomicU64,
    /// This blade's archives not yet on every holder, at the last sync round.
    pub under_replicated: AtomicU64,
    /// Archives of other blades held here.
    pub held_archives: AtomicU64,
    /// Encoded bytes of package blocks a deploy fetched from another target.
    pub package_bytes_from_peers: AtomicU64,
    /// Encoded bytes of package blocks a deploy fetched from the origin.
    pub package_bytes_from_origin: AtomicU64,
}

impl Stats {
    /// The counters as `dcish status` shows them.
    pub fn rows(&self) -> Vec<(String, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("backup-pushed-blocks", get(&self.pushed_blocks)),
            ("backup-pushed-bytes", get(&self.pushed_bytes)),
            ("backup-received-blocks", get(&self.received_blocks)),
            ("backup-refused", get(&self.refused)),
            ("backup-corrupt-blocks", get(&self.corrupt)),
            ("backup-under-replicated", get(&self.under_replicated)),
            ("backup-held-archives", get(&self.held_archives)),
            (
                "package-bytes-from-peers",
                get(&self.package_bytes_from_peers),
            ),
            (
                "package-bytes-from-origin",
                get(&self.package_bytes_from_origin),
            ),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect()
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The event loop's side of the service: channels, and the requests in flight.
pub struct Link {
    commands: mpsc::Receiver<NetCommand>,
    inbound: mpsc::Sender<Inbound>,
    control: mpsc::Sender<ControlCall>,
    pending_out: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, String>>>,
    pending_in: HashMap<u64, ResponseChannel<Vec<u8>>>,
    next_token: u64,
    stats: Arc<Stats>,
    seats: Arc<SeatEpochs>,
    steps: TakeoverSteps,
}

impl Link {
    /// The service's counters, for `dcish status`.
    pub fn counter_rows(&self) -> Vec<(String, u64)> {
        self.stats.rows()
    }

    /// The steps of this node's latest takeover, which the service writes as it adopts,
    /// restores and replicates the blade.
    pub fn takeover_steps(&self) -> &TakeoverSteps {
        &self.steps
    }

    /// The seat table changed: the service stamps and checks pushes with it from now on.
    pub fn set_seats(
        &self,
        seats: impl IntoIterator<Item = (String, (PeerId, u64))>,
        acting: Option<String>,
        hosted: Vec<String>,
    ) {
        self.seats.set(seats);
        self.seats.set_acting(acting);
        self.seats.set_hosted(hosted);
    }

    /// The next command from the service (for the event loop's `select!`).
    pub async fn next_command(&mut self) -> Option<NetCommand> {
        self.commands.recv().await
    }

    /// The channel for operators' commands, for a task that must wait for room on it.
    pub fn controller(&self) -> mpsc::Sender<ControlCall> {
        self.control.clone()
    }

    /// Hands an operator's command to the service; answers at once if it has stopped.
    pub fn control(&mut self, call: ControlCall) {
        if let Err(
            mpsc::error::TrySendError::Full(call) | mpsc::error::TrySendError::Closed(call),
        ) = self.control.try_send(call)
        {
            let _ = call.1.send(Err((
                "busy".into(),
                "the replication service is busy or stopped".into(),
            )));
        }
    }

    /// Sends a request for the service.
    pub fn send(
        &mut self,
        behaviour: &mut request_response::Behaviour<FrameCodec>,
        to: PeerId,
        request: Vec<u8>,
        addrs: Vec<libp2p::Multiaddr>,
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    ) {
        let id = behaviour.send_request_with_addresses(&to, request, addrs);
        self.pending_out.insert(id, reply);
    }

    /// Answers an inbound request for the service (a peer that gave up is no error).
    pub fn respond(
        &mut self,
        behaviour: &mut request_response::Behaviour<FrameCodec>,
        token: u64,
        response: Vec<u8>,
    ) {
        if let Some(channel) = self.pending_in.remove(&token) {
            let _ = behaviour.send_response(channel, response);
        }
    }

    /// Handles the block protocol's swarm events.
    pub fn on_event(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
        name_of: impl Fn(&PeerId) -> Option<String>,
    ) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let token = self.next_token;
                self.next_token += 1;
                let inbound = Inbound {
                    peer,
                    peer_name: name_of(&peer),
                    token,
                    request,
                };
                // A full queue drops the request: the peer's request times out and it retries.
                if self.inbound.try_send(inbound).is_ok() {
                    self.pending_in.insert(token, channel);
                } else {
                    tracing::warn!(%peer, "block request dropped: the service is overloaded");
                }
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending_out.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.pending_out.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "block request failed: {error}");
            }
            Event::ResponseSent { .. } => {}
        }
        // Channels of requests whose peer vanished are dropped with their streams.
        self.pending_in.retain(|_, c| c.is_open());
    }
}

/// Makes the link and the channels the service runs on.
pub fn channels() -> (Link, service::Channels) {
    let (cmd_tx, commands) = mpsc::channel(256);
    let (inbound, inbound_rx) = mpsc::channel(256);
    let (control, control_rx) = mpsc::channel(32);
    let stats = Arc::new(Stats::default());
    let seats = Arc::new(SeatEpochs::default());
    let steps = TakeoverSteps::default();
    (
        Link {
            commands,
            inbound,
            control,
            pending_out: HashMap::new(),
            pending_in: HashMap::new(),
            next_token: 0,
            stats: stats.clone(),
            seats: seats.clone(),
            steps: steps.clone(),
        },
        service::Channels {
            stats,
            seats,
            steps,
            net: cmd_tx,
            inbound: inbound_rx,
            control: control_rx,
        },
    )
}
