//! Envelope routing between peerlets across the mesh: the sans-IO [`core`], and the
//! [`Messenger`] task that drives it with the real network, the peerlet host and the message log.
//!
//! The messenger is its own task so that envelope traffic never waits on the agent's event loop
//! (which owns the swarm and the membership timers): it opens and accepts libp2p streams through a
//! `libp2p_stream::Control`, and the agent only tells it who is in the mesh (a [`View`] on a
//! watch channel) and hears back the failure notices it delivers.
//!
//! Transport: one long-lived stream per peer and direction (`/dci/envelopes/3`), frames as in
//! `dci_proto::frame` with the body of [`wire`]. Each peer has a writer task behind a bounded
//! queue that batches whatever is queued into one write; each inbound stream has a reader task
//! that parses envelopes off the routing task. Back-pressure: a full peer queue makes the
//! routing task wait (up to [`QUEUE_WAIT`], then the sender gets a `busy` error), and a busy
//! routing task stops the readers, which stops their peers through the stream's flow control.
//! Receipts: the reader writes back, on the same stream, how many frames it has read; the
//! writer keeps what it wrote until then, so that an envelope written into a connection that
//! dies (a partition, a frozen peer) is answered `unreachable` instead of vanishing.

pub mod control;
pub mod core;
pub mod dedup;
pub mod log;
pub mod peerlets;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dci_peerlet::{error_payload, Envelope, Kind, Member, Outbox, Payload, Sender, Uuid};
use dci_proto::notice::NOTICE_APP;
use dci_proto::{Destination, Limits};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot, watch};

use self::core::{Action, Origin, Router, View};
use self::log::{Filter, MessageLog, Record};
use crate::peerlet_host::Host;

/// The mesh protocol for envelopes: long-lived streams of frames.
pub const MESH_PROTOCOL: StreamProtocol = StreamProtocol::new("/dci/envelopes/3");
/// How long the routing task waits for room in a full peer queue before answering `busy`.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// How long opening a stream to a peer may take, and how often a failed dial is tried again.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
const OPEN_RETRY: Duration = Duration::from_millis(100);
/// Frames batched into one write at most.
const WRITE_BATCH: usize = 512;
/// The local app that answers log queries and replays.
pub const MSGLOG_APP: &str = "msglog";
/// Its namespace.
pub const MSGLOG_NAMESPACE: &str = "urn:dci:msglog:1";
/// The namespace of the answers a local client gets back.
pub const ANSWERS_NAMESPACE: &str = "urn:dci:answers:1";
/// How much longer than a command's own limit its answers are waited for (the run's start and
/// the answer's way back).
pub const ANSWER_MARGIN: Duration = Duration::from_secs(3);
/// Answer bytes a streaming client may leave unread before its stream is cut: one slow
/// operator must neither hold up routing nor fill the agent's memory.
pub const STREAM_BACKLOG: usize = 32 << 20;

/// The `[messaging]` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// Named groups for multicast: group name → blade names.
    pub groups: HashMap<String, Vec<String>>,
    /// App types whose envelopes (as sender or target) are logged; `*` logs everything.
    pub log_apps: Vec<String>,
    /// The most records the message log keeps.
    pub log_max_records: usize,
    /// Peerlet instances idle this long are stopped.
    pub idle_stop_s: u64,
    /// Directories holding `*/peerlet.toml` manifests of external peerlets.
    pub peerlet_dirs: Vec<PathBuf>,
    /// How long a local client waits for answers.
    pub answer_wait_ms: u64,
    /// Envelopes queued per peer before senders wait.
    pub peer_queue: usize,
    /// Blade names or node ids whose operators may use the `exec` peerlet here.
    pub exec_operators: Vec<String>,
    /// The longest an `exec` command may run, in milliseconds.
    pub exec_timeout_ms: u64,
    /// Bytes kept of each of an `exec` command's stdout and stderr.
    pub exec_max_output: usize,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        MessagingConfig {
            groups: HashMap::new(),
            log_apps: vec!["control".into(), "task".into()],
            log_max_records: 100_000,
            idle_stop_s: 300,
            peerlet_dirs: Vec::new(),
            answer_wait_ms: 5000,
            peer_queue: 4096,
            exec_operators: Vec::new(),
            exec_timeout_ms: 60_000,
            exec_max_output: 1 << 20,
        }
    }
}

/// What a local client gets for an envelope it submitted.
#[derive(Debug, Clone)]
pub struct Answers {
    /// The submitted envelope's id.
    pub request: Uuid,
    /// How many answers were expected (destinations reached, plus immediate refusals).
    pub expected: usize,
    /// The answers (replies and errors) that arrived in time.
    pub answers: Vec<Envelope>,
}

impl Answers {
    /// The reply payload carrying these answers to `dcish`: `<answers xmlns="urn:dci:answers:1"
    /// request expected>` holding each answer's envelope verbatim.
    pub fn to_payload(&self) -> Payload {
        let mut xml = format!(
            "<answers xmlns=\"{ANSWERS_NAMESPACE}\" request=\"{}\" expected=\"{}\">",
            self.request, self.expected
        );
        for a in &self.answers {
            xml.push_str(&a.to_xml());
        }
        xml.push_str("</answers>");
        Payload::new(xml).unwrap_or_else(|e| error_payload("internal", &e.to_string()))
    }
}

/// One item of a streamed answer: each answer as it arrives, then the end.
#[derive(Debug)]
pub enum Streamed {
    /// An answer (a reply, an error, or an event correlated to the request).
    Answer(Box<Envelope>),
    /// No more answers: every destination answered or the wait ran out (`overflowed` when the
    /// client fell [`STREAM_BACKLOG`] bytes behind and the rest was dropped).
    End {
        /// How many destinations were expected to answer.
        expected: usize,
        /// Whether answers were dropped because the client read too slowly.
        overflowed: bool,
    },
}

/// A streaming client's end: answers in arrival order, and how many bytes of them it holds.
pub struct AnswerStream {
    /// The answers.
    pub rx: mpsc::UnboundedReceiver<Streamed>,
    /// Bytes sent and not yet taken.
    backlog: Arc<AtomicU64>,
}

impl AnswerStream {
    /// Says that the client took `answer` off the stream.
    pub fn taken(&self, answer: &Envelope) {
        self.backlog
            .fetch_sub(backlog_bytes(answer), Ordering::Relaxed);
    }
}

/// What an answer counts in a stream's backlog: its payload and about its header.
fn backlog_bytes(answer: &Envelope) -> u64 {
    answer.payload.as_str().len() as u64 + 512
}

/// Where the answers to a submitted envelope go.
enum Sink {
    /// All at once when complete.
    Gather(oneshot::Sender<Answers>),
    /// Each as it arrives.
    Stream {
        tx: mpsc::UnboundedSender<Streamed>,
        backlog: Arc<AtomicU64>,
    },
}

enum Command {
    /// From a local client: route `env` and gather or stream its answers, waiting `wait` at
    /// most (none: `answer_wait_ms`).
    Submit {
        env: Envelope,
        replay_of: Option<String>,
        answers: Option<Sink>,
        wait: Option<Duration>,
    },
    /// From a peerlet after its `handle` returned, or an external peerlet.
    Post(Envelope),
    /// From a stream reader: what one read brought, in order.
    Inbound {
        from: PeerId,
        /// `from` as text, made once per stream (encoding a peer id costs more than routing).
        from_text: Arc<str>,
        items: Vec<(Option<String>, Envelope)>,
    },
    /// A writer's stream to `peer` ended with these envelopes to send again (never written, or
    /// written into a stream that broke), and these written to a peer that stalled.
    SendFailed {
        peer: String,
        unsent: Vec<Queued>,
        unconfirmed: Vec<Queued>,
    },
    /// Counters for `dcish status`.
    Stats(oneshot::Sender<Vec<(String, u64)>>),
    /// From the package installer: a change to the external peerlet types.
    Peerlets(PeerletChange, oneshot::Sender<PeerletAnswer>),
    /// The retrieval of a package providing `app` ended (on-demand retrieval).
    Retrieved {
        app: String,
        result: Result<(), String>,
    },
}

/// A request to retrieve and install a package providing peerlet type `.0` from a peer; the
/// answer says whether it is now installed, or why not.
pub type Retrieve = (String, oneshot::Sender<Result<(), String>>);

/// Envelopes held per app type while its package is retrieved; more are refused.
const MAX_AWAITING: usize = 256;
/// How long a failed retrieval's answer is given to further envelopes for the type, so that a
/// stream of them does not ask every peer again each time.
const RETRIEVAL_RETRY: Duration = Duration::from_secs(30);

/// A change to the external peerlet types, from the package installer.
#[derive(Debug)]
pub enum PeerletChange {
    /// Register (or replace) an external peerlet.
    Register(crate::peerlet_host::external::Manifest),
    /// Remove one and stop its instances.
    Unregister(String),
    /// Stop an app's instances.
    Restart(String),
}

/// What a [`PeerletChange`] did: for a registration, the manifest it replaced; or why it was
/// refused.
pub type PeerletAnswer = Result<Option<crate::peerlet_host::external::Manifest>, String>;

/// A cloneable handle to the messenger task.
#[derive(Clone)]
pub struct MessengerHandle {
    tx: mpsc::Sender<Command>,
    local: String,
    blade: Option<String>,
}

impl MessengerHandle {
    /// Routes `env` as sent by a local client of app `app` (the sender fields are set to this
    /// node) and waits for its answers. `None` when the messenger stopped.
    pub async fn request(&self, mut env: Envelope) -> Option<Answers> {
        env.sender.node = self.local.clone();
        env.sender.blade = self.blade.clone();
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Submit {
                env,
                replay_of: None,
                answers: Some(Sink::Gather(tx)),
                wait: None,
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Routes `env` as [`MessengerHandle::request`] does, and streams its answers as they
    /// arrive, for `wait` at most (bounded by the agent: `answer_wait_ms`, or the longest
    /// `exec` run plus [`ANSWER_MARGIN`] if longer). `None` when the messenger stopped.
    pub async fn stream(&self, mut env: Envelope, wait: Duration) -> Option<AnswerStream> {
        env.sender.node = self.local.clone();
        env.sender.blade = self.blade.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicU64::new(0));
        self.tx
            .send(Command::Submit {
                env,
                replay_of: None,
                answers: Some(Sink::Stream {
                    tx,
                    backlog: Arc::clone(&backlog),
                }),
                wait: Some(wait),
            })
            .await
            .ok()?;
        Some(AnswerStream { rx, backlog })
    }

    /// Routes `env` as it is, without waiting for answers (failure notices).
    pub async fn send(&self, env: Envelope) -> bool {
        self.tx
            .send(Command::Submit {
                env,
                replay_of: None,
                answers: None,
                wait: None,
            })
            .await
            .is_ok()
    }

    /// Routes `env` without waiting, from synchronous code; false when the queue is full.
    pub fn try_send(&self, env: Envelope) -> bool {
        self.tx
            .try_send(Command::Submit {
                env,
                replay_of: None,
                answers: None,
                wait: None,
            })
            .is_ok()
    }

    /// Changes the external peerlet types (the package installer's steps).
    pub async fn peerlets(&self, change: PeerletChange) -> PeerletAnswer {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Peerlets(change, tx))
            .await
            .map_err(|_| "the messenger has stopped".to_string())?;
        rx.await
            .map_err(|_| "the messenger has stopped".to_string())?
    }

    /// The messenger's counters.
    pub async fn stats(&self) -> Vec<(String, u64)> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Stats(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// Posts envelopes from peerlets into the messenger.
struct PostBox(mpsc::Sender<Command>);

impl Outbox for PostBox {
    fn post(&self, env: Envelope) -> bool {
        if tokio::runtime::Handle::try_current().is_ok() {
            // On a runtime thread (an external peerlet's reader): never block it.
            self.0.try_send(Command::Post(env)).is_ok()
        } else {
            self.0.blocking_send(Command::Post(env)).is_ok()
        }
    }
}

struct Waiter {
    expected: usize,
    /// Replies and errors so far (events do not answer).
    answered: usize,
    /// What a gathering client gets at the end.
    answers: Vec<Envelope>,
    sink: Sink,
    deadline: Instant,
    overflowed: bool,
}

impl Waiter {
    /// Takes one answer: kept, or sent on at once.
    fn take(&mut self, env: Envelope) {
        if env.kind != Kind::Event {
            self.answered += 1;
        }
        match &self.sink {
            Sink::Gather(_) => self.answers.push(env),
            Sink::Stream { tx, backlog } => {
                let bytes = backlog_bytes(&env);
                if self.overflowed
                    || backlog.fetch_add(bytes, Ordering::Relaxed) + bytes > STREAM_BACKLOG as u64
                {
                    self.overflowed = true;
                } else {
                    let _ = tx.send(Streamed::Answer(Box::new(env)));
                }
            }
        }
    }

    fn gone(&self) -> bool {
        match &self.sink {
            Sink::Gather(reply) => reply.is_closed(),
            Sink::Stream { tx, .. } => tx.is_closed(),
        }
    }

    /// Tells the client there is no more.
    fn finish(self, request: Uuid) {
        match self.sink {
            Sink::Gather(reply) => {
                let _ = reply.send(Answers {
                    request,
                    expected: self.expected,
                    answers: self.answers,
                });
            }
            Sink::Stream { tx, .. } => {
                let _ = tx.send(Streamed::End {
                    expected: self.expected,
                    overflowed: self.overflowed,
                });
            }
        }
    }
}

/// An envelope queued for a peer, with the node it is relayed to when the peer is a relay.
type Queued = (Envelope, Option<String>);

struct Link {
    tx: mpsc::Sender<Queued>,
    /// Set when a wait for room timed out: until the queue takes an envelope again, senders are
    /// refused at once instead of each waiting (one slow peer must not stall all routing).
    congested: bool,
}

/// Counters kept by the driver (the core and host keep their own).
#[derive(Default)]
struct Counters {
    /// Frames the stream readers refused (bad header, bad envelope, oversized); shared with them.
    malformed: Arc<AtomicU64>,
    forged: u64,
    /// Failure notices handed to the agent (its own included; the agent counts peers' ones).
    notices_delivered: u64,
    logged: u64,
    busy: u64,
}

/// The messenger task; see the module docs.
pub struct Messenger {
    core: Router,
    host: Host,
    links: HashMap<String, Link>,
    waiters: HashMap<Uuid, Waiter>,
    log: Option<MessageLog>,
    log_apps: Vec<String>,
    control: libp2p_stream::Control,
    rx: mpsc::Receiver<Command>,
    tx: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<View>>,
    notices: mpsc::Sender<(Envelope, PeerId)>,
    dials: mpsc::Sender<PeerId>,
    started: Instant,
    config: MessagingConfig,
    counters: Counters,
    retrieve: Option<mpsc::Sender<Retrieve>>,
    /// Envelopes for app types being retrieved, by type.
    awaiting: HashMap<String, Vec<Envelope>>,
    /// App types whose retrieval failed lately: when, and why.
    not_retrieved: HashMap<String, (Instant, String)>,
}

/// What the agent hands the messenger at start.
pub struct Setup {
    /// This node's id.
    pub local: PeerId,
    /// The blade it holds (its name, until the seat table).
    pub blade: Option<String>,
    /// Stream control from the swarm's `libp2p_stream::Behaviour`.
    pub control: libp2p_stream::Control,
    /// The mesh as the agent sees it.
    pub view: watch::Receiver<Arc<View>>,
    /// Where failure notices delivered here go (with the peer that sent them).
    pub notices: mpsc::Sender<(Envelope, PeerId)>,
    /// Where to ask the agent to dial a member at its announced addresses (the swarm has none
    /// for a member known only through gossip).
    pub dials: mpsc::Sender<PeerId>,
    /// The database for the message log; none to log nothing.
    pub db: Option<sled::Db>,
    /// Settings.
    pub config: MessagingConfig,
    /// What the `fs` peerlet exports, to whom.
    pub fs: dci_peerlet_fs::Policy,
    /// Where to ask for a package providing an app type not installed here (on-demand
    /// retrieval); none to refuse such envelopes at once.
    pub retrieve: Option<mpsc::Sender<Retrieve>>,
}

impl Messenger {
    /// Builds the messenger with the built-in peerlets and the external ones of the configured
    /// directories (a bad manifest is logged and skipped).
    pub fn new(setup: Setup) -> (Messenger, MessengerHandle) {
        let (tx, rx) = mpsc::channel(8192);
        let local = setup.local.to_string();
        let mut host = Host::new(
            local.clone(),
            setup.blade.clone(),
            Arc::new(PostBox(tx.clone())),
            Duration::from_secs(setup.config.idle_stop_s.max(1)),
        );
        crate::peerlet_host::register_builtins(&mut host);
        host.register(Arc::new(dci_peerlet_exec::ExecType(
            dci_peerlet_exec::Policy {
                operators: setup.config.exec_operators.clone(),
                max_timeout: Duration::from_millis(setup.config.exec_timeout_ms),
                max_output: setup.config.exec_max_output,
            },
        )));
        host.register(Arc::new(dci_peerlet_fs::FsType(setup.fs.clone())));
        for dir in &setup.config.peerlet_dirs {
            let (found, bad) = crate::peerlet_host::external::Manifest::scan(dir);
            for e in bad {
                tracing::warn!("{e}; that peerlet is not available");
            }
            for m in found {
                let (app, dir) = (m.app.clone(), m.dir.clone());
                match host.register_external(m) {
                    Ok(_) => {
                        tracing::info!(%app, dir = %dir.display(), "external peerlet registered")
                    }
                    Err(r) => tracing::warn!(%app, "{}; that peerlet is not available", r.message),
                }
            }
        }
        let log = setup.db.as_ref().and_then(|db| {
            MessageLog::open(db, setup.config.log_max_records)
                .map_err(|e| tracing::warn!("message log unavailable: {e}"))
                .ok()
        });
        let view = Arc::clone(&setup.view.borrow());
        let handle = MessengerHandle {
            tx: tx.clone(),
            local,
            blade: setup.blade,
        };
        let mut core = Router::new(view);
        core.set_read_only(host.read_only());
        let messenger = Messenger {
            core,
            host,
            links: HashMap::new(),
            waiters: HashMap::new(),
            log,
            log_apps: setup.config.log_apps.clone(),
            control: setup.control,
            rx,
            tx,
            view: setup.view,
            notices: setup.notices,
            dials: setup.dials,
            started: Instant::now(),
            config: setup.config,
            counters: Counters::default(),
            retrieve: setup.retrieve,
            awaiting: HashMap::new(),
            not_retrieved: HashMap::new(),
        };
        (messenger, handle)
    }

    /// Runs until every handle is dropped and the agent stops.
    pub async fn run(mut self) {
        let mut incoming = match self.control.accept(MESH_PROTOCOL) {
            Ok(s) => s,
            Err(e) => return tracing::error!("cannot accept envelope streams: {e}"),
        };
        self.apply_view();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.on_command(cmd).await;
                    // Whatever else is queued, before looking at timers again.
                    for _ in 0..256 {
                        match self.rx.try_recv() {
                            Ok(cmd) => self.on_command(cmd).await,
                            Err(_) => break,
                        }
                    }
                }
                changed = self.view.changed() => {
                    if changed.is_err() { break }
                    self.apply_view();
                }
                Some((peer, stream)) = incoming.next() => {
                    let malformed = Arc::clone(&self.counters.malformed);
                    tokio::spawn(read_stream(peer, stream, self.tx.clone(), malformed));
                }
                _ = tick.tick() => {
                    ticks += 1;
                    self.expire_waiters();
                    if ticks.is_multiple_of(10) {
                        let stopped = self.host.stop_idle(self.started.elapsed());
                        if stopped > 0 {
                            tracing::debug!(stopped, "idle peerlet instances stopped");
                        }
                    }
                }
            }
        }
    }

    fn apply_view(&mut self) {
        let view = Arc::clone(&self.view.borrow_and_update());
        let mut members = vec![Member {
            node: view.local.clone(),
            blade: view.local_blade.clone(),
            local: true,
        }];
        members.extend(view.peers.iter().filter(|p| p.up).map(|p| Member {
            node: p.node.clone(),
            blade: p.blade.clone(),
            local: false,
        }));
        self.host.set_directory(Arc::new(members));
        // Writers to members that left are dropped with their queues' senders.
        self.links
            .retain(|node, _| view.peers.iter().any(|p| &p.node == node && p.up));
        self.core.set_view(view);
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                env,
                replay_of,
                answers,
                wait,
            } => self.submit(env, replay_of, answers, wait).await,
            Command::Post(env) => {
                self.log_envelope(&env, "out", None);
                self.core.handle(env, Origin::Local);
                self.pump().await;
            }
            Command::Inbound {
                from,
                from_text,
                items,
            } => {
                for (relay_to, env) in items {
                    // The transport authenticated `from`; what these apps act on must come from
                    // its author directly, since a relay could claim any sender.
                    let sensitive = self::core::needs_direct_path(&env);
                    if sensitive && (relay_to.is_some() || env.sender.node != *from_text) {
                        self.counters.forged += 1;
                        tracing::warn!(peer = %from, claimed = %env.sender.node, app = ?env.target.app, "refused envelope: sender is not the connected peer");
                        continue;
                    }
                    let origin = match relay_to {
                        Some(to) => Origin::Relay {
                            from: from_text.to_string(),
                            to,
                        },
                        None => Origin::Peer(from_text.to_string()),
                    };
                    self.core.handle(env, origin);
                }
                // One pass for the whole batch: the core keeps the actions in order.
                self.pump().await;
            }
            Command::SendFailed {
                peer,
                unsent,
                unconfirmed,
            } => {
                // Only this writer's link: a newer one may have been opened since it closed.
                if self.links.get(&peer).is_some_and(|l| l.tx.is_closed()) {
                    self.links.remove(&peer);
                }
                for (env, relay_to) in unconfirmed {
                    self.core
                        .handle_unconfirmed(env, &peer, relay_to.as_deref());
                }
                for (env, relay_to) in unsent {
                    self.core
                        .handle_send_failed(env, &peer, relay_to.as_deref());
                }
                self.pump().await;
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Retrieved { app, result } => self.on_retrieved(app, result).await,
            Command::Peerlets(change, reply) => {
                let answer = match change {
                    PeerletChange::Register(m) => self
                        .host
                        .register_external(m)
                        .map(|old| old.map(|o| (*o).clone()))
                        .map_err(|r| r.message),
                    PeerletChange::Unregister(app) => {
                        self.host.unregister_external(&app);
                        Ok(None)
                    }
                    PeerletChange::Restart(app) => {
                        self.host.restart(&app);
                        Ok(None)
                    }
                };
                self.core.set_read_only(self.host.read_only());
                let _ = reply.send(answer);
            }
        }
    }

    async fn submit(
        &mut self,
        env: Envelope,
        replay_of: Option<String>,
        answers: Option<Sink>,
        wait: Option<Duration>,
    ) {
        self.log_envelope(&env, "out", replay_of);
        let id = env.id;
        let kind = env.kind;
        self.core.handle(env, Origin::Local);
        let actions: Vec<Action> = self.core.drain().collect();
        let Some(sink) = answers else {
            return self.run_actions(actions).await;
        };
        // Each destination answers a request once; an event is answered only by refusals.
        let expected = actions
            .iter()
            .filter(|a| match a {
                Action::Deliver(e) if e.correlation == Some(id) => true,
                Action::Deliver(_) | Action::Send { .. } => kind == Kind::Request,
            })
            .count();
        self.waiters.insert(
            id,
            Waiter {
                expected,
                answered: 0,
                answers: Vec::new(),
                sink,
                deadline: Instant::now() + self.answer_wait(wait),
                overflowed: false,
            },
        );
        self.run_actions(actions).await;
        self.complete(id);
    }

    /// How long a client's answers are waited for: what it asked, within what any answer can
    /// take here (the answer wait, or the longest `exec` run and a margin).
    fn answer_wait(&self, asked: Option<Duration>) -> Duration {
        let default = Duration::from_millis(self.config.answer_wait_ms);
        let longest =
            default.max(Duration::from_millis(self.config.exec_timeout_ms) + ANSWER_MARGIN);
        asked.map_or(default, |w| w.min(longest))
    }

    /// Carries out the core's actions, and those they cause, until there are none.
    async fn pump(&mut self) {
        let actions: Vec<Action> = self.core.drain().collect();
        self.run_actions(actions).await;
    }

    async fn run_actions(&mut self, mut actions: Vec<Action>) {
        let mut emitted = Vec::new();
        while !actions.is_empty() {
            for action in actions.drain(..) {
                match action {
                    Action::Deliver(env) => self.deliver(env, &mut emitted),
                    Action::Send {
                        peer,
                        relay_to,
                        env,
                    } => self.transmit(peer, relay_to, env).await,
                }
            }
            for env in emitted.drain(..) {
                self.log_envelope(&env, "out", None);
                self.core.handle(env, Origin::Local);
            }
            actions.extend(self.core.drain());
        }
    }

    fn deliver(&mut self, env: Envelope, emitted: &mut Vec<Envelope>) {
        if let Some(c) = env.correlation.filter(|c| self.waiters.contains_key(c)) {
            self.log_envelope(&env, "in", None);
            if let Some(w) = self.waiters.get_mut(&c) {
                w.take(env);
            }
            return self.complete(c);
        }
        self.log_envelope(&env, "in", None);
        match env.target.app.as_deref() {
            Some(NOTICE_APP) => {
                let from = env.sender.node.parse().unwrap_or(PeerId::random());
                if self.notices.try_send((env, from)).is_ok() {
                    self.counters.notices_delivered += 1;
                }
            }
            Some(MSGLOG_APP) => self.msglog(env, emitted),
            Some(peerlets::PEERLETS_APP) => {
                let me = Sender {
                    node: self.core.view().local.clone(),
                    blade: self.core.view().local_blade.clone(),
                    app: peerlets::PEERLETS_APP.into(),
                    instance: None,
                };
                let now = self.started.elapsed();
                let operators = &self.config.exec_operators;
                emitted.push(peerlets::answer(&mut self.host, &env, me, operators, now));
            }
            Some(app) if self.retrieve.is_some() && !self.host.knows(app) => {
                let app = app.to_owned();
                self.await_retrieval(app, env, emitted)
            }
            _ => self.host.deliver(&env, self.started.elapsed(), emitted),
        }
    }

    /// Holds `env` for an app type not installed here while a peer's package providing it is
    /// retrieved; the first envelope for the type starts the retrieval.
    fn await_retrieval(&mut self, app: String, env: Envelope, emitted: &mut Vec<Envelope>) {
        self.not_retrieved
            .retain(|_, (at, _)| at.elapsed() < RETRIEVAL_RETRY);
        if let Some((_, why)) = self.not_retrieved.get(&app) {
            let why = why.clone();
            return self.host.refuse(&env, emitted, "unavailable", &why);
        }
        let held = self.awaiting.entry(app.clone()).or_default();
        if held.len() >= MAX_AWAITING {
            let why = format!("too many envelopes wait for {app} to be retrieved");
            return self.host.refuse(&env, emitted, "busy", &why);
        }
        held.push(env);
        if held.len() > 1 {
            return;
        }
        let (reply, answer) = oneshot::channel();
        let asked = self
            .retrieve
            .as_ref()
            .is_some_and(|r| r.try_send((app.clone(), reply)).is_ok());
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = match (asked, answer.await) {
                (true, Ok(result)) => result,
                _ => Err("the package service is busy or stopped".into()),
            };
            let _ = tx.send(Command::Retrieved { app, result }).await;
        });
    }

    /// Delivers the envelopes held for `app` now that it is installed, or refuses them.
    async fn on_retrieved(&mut self, app: String, result: Result<(), String>) {
        if let Err(why) = &result {
            self.not_retrieved
                .insert(app.clone(), (Instant::now(), why.clone()));
        }
        let mut emitted = Vec::new();
        for env in self.awaiting.remove(&app).unwrap_or_default() {
            match &result {
                Ok(()) => self
                    .host
                    .deliver(&env, self.started.elapsed(), &mut emitted),
                Err(why) => self.host.refuse(&env, &mut emitted, "unavailable", why),
            }
        }
        for env in emitted {
            self.log_envelope(&env, "out", None);
            self.core.handle(env, Origin::Local);
        }
        self.pump().await;
    }

    async fn transmit(&mut self, peer: String, relay_to: Option<String>, env: Envelope) {
        let open = self.links.get(&peer).is_some_and(|l| !l.tx.is_closed());
        let link = match self.links.get_mut(&peer) {
            Some(l) if open => l,
            _ => {
                let Ok(id) = peer.parse::<PeerId>() else {
                    self.core
                        .handle_send_failed(env, &peer, relay_to.as_deref());
                    return;
                };
                let (tx, rx) = mpsc::channel(self.config.peer_queue.max(1));
                tokio::spawn(write_stream(
                    id,
                    (self.control.clone(), self.dials.clone()),
                    rx,
                    self.tx.clone(),
                ));
                self.links.insert(
                    peer.clone(),
                    Link {
                        tx,
                        congested: false,
                    },
                );
                match self.links.get_mut(&peer) {
                    Some(l) => l,
                    None => return,
                }
            }
        };
        let item = (env, relay_to);
        let (env, relay_to) = match link.tx.try_send(item) {
            Ok(()) => {
                link.congested = false;
                return;
            }
            Err(mpsc::error::TrySendError::Full(item)) if !link.congested => {
                // Back-pressure: the sender (this task) waits for the slow peer, once.
                match tokio::time::timeout(QUEUE_WAIT, link.tx.reserve()).await {
                    Ok(Ok(permit)) => return permit.send(item),
                    Ok(Err(_)) | Err(_) => {
                        link.congested = true;
                        item
                    }
                }
            }
            Err(mpsc::error::TrySendError::Full(item)) => item,
            Err(mpsc::error::TrySendError::Closed((env, relay_to))) => {
                return self
                    .core
                    .handle_send_failed(env, &peer, relay_to.as_deref());
            }
        };
        self.counters.busy += 1;
        self.core.handle_busy(env, &peer, relay_to.as_deref());
    }

    fn complete(&mut self, id: Uuid) {
        let done = self
            .waiters
            .get(&id)
            .is_some_and(|w| w.answered >= w.expected || w.overflowed);
        if done {
            if let Some(w) = self.waiters.remove(&id) {
                w.finish(id);
            }
        }
    }

    fn expire_waiters(&mut self) {
        let now = Instant::now();
        let due: Vec<Uuid> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.deadline <= now || w.gone())
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(w) = self.waiters.remove(&id) {
                w.finish(id);
            }
        }
    }

    fn log_envelope(&mut self, env: &Envelope, dir: &str, replay_of: Option<String>) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let wanted = |app: &str| self.log_apps.iter().any(|a| a == "*" || a == app);
        if !(wanted(&env.sender.app) || env.target.app.as_deref().is_some_and(wanted))
            || env.target.app.as_deref() == Some(MSGLOG_APP)
        {
            return;
        }
        match log.append(&Record::new(env, dir, unix_ms(), replay_of)) {
            Ok(()) => self.counters.logged += 1,
            Err(e) => tracing::warn!("message log write failed: {e}"),
        }
    }

    /// Answers a log query or carries out a replay, for a local client.
    fn msglog(&mut self, env: Envelope, emitted: &mut Vec<Envelope>) {
        let me = Sender {
            node: self.core.view().local.clone(),
            blade: self.core.view().local_blade.clone(),
            app: MSGLOG_APP.into(),
            instance: None,
        };
        if env.sender.node != me.node {
            let p = error_payload(
                "not-authorized",
                "the message log answers local clients only",
            );
            return emitted.push(env.reply_to(me, Kind::Error, p));
        }
        let result = match self.log.as_ref() {
            None => Err(("no-log", "this agent keeps no message log".to_string())),
            Some(log) => msglog_command(log, &env),
        };
        match result {
            Ok(MsglogResult::Records(records)) => {
                let mut xml = format!("<records xmlns=\"{MSGLOG_NAMESPACE}\">");
                for r in records {
                    xml.push_str(&format!(
                        "<record at=\"{}\" dir=\"{}\"{}>{}</record>",
                        r.at_ms,
                        r.dir,
                        r.replay_of
                            .map(|o| format!(" replay-of=\"{o}\""))
                            .unwrap_or_default(),
                        r.xml
                    ));
                }
                xml.push_str("</records>");
                let payload =
                    Payload::new(xml).unwrap_or_else(|e| error_payload("internal", &e.to_string()));
                emitted.push(env.reply_to(me, Kind::Reply, payload));
            }
            Ok(MsglogResult::Replay(copies)) => {
                // The copies go out as new submissions; a task gathers their answers and answers
                // the client with them, a little before the client's own wait runs out.
                let wait = Duration::from_millis(self.config.answer_wait_ms * 3 / 4);
                let mut pending = Vec::new();
                for (copy, original) in copies {
                    let (tx, rx) = oneshot::channel();
                    let id = copy.id;
                    let sent = self
                        .tx
                        .try_send(Command::Submit {
                            env: copy,
                            replay_of: Some(original.clone()),
                            answers: Some(Sink::Gather(tx)),
                            wait: None,
                        })
                        .is_ok();
                    pending.push((id, original, sent.then_some(rx)));
                }
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let mut xml = format!("<replayed xmlns=\"{MSGLOG_NAMESPACE}\">");
                    for (id, original, rx) in pending {
                        let status = match rx {
                            None => "busy",
                            Some(_) => "sent",
                        };
                        let answers = match rx {
                            Some(rx) => tokio::time::timeout(wait, rx)
                                .await
                                .ok()
                                .and_then(Result::ok)
                                .map(|a| a.answers)
                                .unwrap_or_default(),
                            None => Vec::new(),
                        };
                        xml.push_str(&format!(
                            "<copy id=\"{id}\" of=\"{original}\" status=\"{status}\">"
                        ));
                        for a in answers {
                            xml.push_str(&a.to_xml());
                        }
                        xml.push_str("</copy>");
                    }
                    xml.push_str("</replayed>");
                    let payload = Payload::new(xml)
                        .unwrap_or_else(|e| error_payload("internal", &e.to_string()));
                    let _ = tx
                        .send(Command::Post(env.reply_to(me, Kind::Reply, payload)))
                        .await;
                });
            }
            Err((code, message)) => {
                emitted.push(env.reply_to(me, Kind::Error, error_payload(code, &message)));
            }
        }
    }

    fn stats(&self) -> Vec<(String, u64)> {
        use self::core::DropReason;
        let s = self.core.stats();
        let h = self.host.stats();
        let d = |r: DropReason| s.dropped.get(&r).copied().unwrap_or(0);
        vec![
            ("envelopes-delivered".into(), s.delivered),
            ("envelopes-sent".into(), s.sent),
            ("envelopes-relayed".into(), s.relayed),
            ("envelopes-ttl-clamped".into(), s.clamped),
            ("envelopes-expired".into(), d(DropReason::Expired)),
            ("envelopes-duplicate".into(), d(DropReason::Duplicate)),
            ("envelopes-unroutable".into(), d(DropReason::Unroutable)),
            ("envelopes-stale-epoch".into(), d(DropReason::StaleEpoch)),
            ("envelopes-unconfirmed".into(), d(DropReason::Unconfirmed)),
            (
                "envelopes-answer-undeliverable".into(),
                d(DropReason::UndeliverableAnswer),
            ),
            (
                "envelopes-malformed".into(),
                self.counters.malformed.load(Ordering::Relaxed),
            ),
            ("envelopes-forged".into(), self.counters.forged),
            ("envelopes-busy".into(), self.counters.busy),
            ("envelopes-logged".into(), self.counters.logged),
            ("notices-delivered".into(), self.counters.notices_delivered),
            ("peerlets-running".into(), self.host.instances() as u64),
            ("peerlets-started".into(), h.started),
            ("peerlets-stopped-idle".into(), h.stopped_idle),
        ]
    }
}

enum MsglogResult {
    Records(Vec<Record>),
    Replay(Vec<(Envelope, String)>),
}

/// `<query app sender target since until limit/>` or `<replay id to/>` (ids space-separated).
fn msglog_command(
    log: &MessageLog,
    env: &Envelope,
) -> Result<MsglogResult, (&'static str, String)> {
    use dci_peerlet::first_attribute as attr;
    let body = env.payload.as_str().trim_start();
    let p = &env.payload;
    let bad = |m: String| ("bad-payload", m);
    let number = |name: &str| -> Result<Option<u64>, (&'static str, String)> {
        attr(p, name)
            .map(|v| {
                v.parse()
                    .map_err(|_| bad(format!("{name}={v:?} is not a number")))
            })
            .transpose()
    };
    if body.starts_with("<query") {
        let filter = Filter {
            app: attr(p, "app").map(String::from),
            sender: attr(p, "sender").map(String::from),
            target: attr(p, "target").map(String::from),
            since_ms: number("since")?,
            until_ms: number("until")?,
            limit: number("limit")?.map(|n| n as usize),
        };
        log.query(&filter)
            .map(MsglogResult::Records)
            .map_err(|e| ("log-failed", e.to_string()))
    } else if body.starts_with("<replay") {
        let ids = attr(p, "id").ok_or_else(|| bad("replay needs id".into()))?;
        let to = attr(p, "to")
            .map(|t| t.parse::<Destination>().map_err(|e| bad(e.to_string())))
            .transpose()?;
        let mut copies = Vec::new();
        for id in ids.split_whitespace() {
            let record = log
                .get(id)
                .map_err(|e| ("log-failed", e.to_string()))?
                .ok_or_else(|| ("not-found", format!("no logged envelope {id}")))?;
            let mut copy = Envelope::from_xml(record.xml.as_bytes(), &Limits::default())
                .map_err(|e| ("log-failed", e.to_string()))?;
            copy.id = Uuid::new_v4();
            copy.created_ms = unix_ms();
            copy.ttl = dci_proto::MAX_TTL;
            copy.sender.node = env.sender.node.clone();
            copy.sender.blade = env.sender.blade.clone();
            if let Some(to) = &to {
                copy.target.to = to.clone();
            }
            copies.push((copy, id.to_owned()));
        }
        Ok(MsglogResult::Replay(copies))
    } else {
        Err(bad("msglog expects <query/> or <replay/>".into()))
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Frames handed to the routing task in one command at most.
const READ_BATCH: usize = 256;

/// Reads frames off one inbound stream until it ends or breaks framing. Every frame already in
/// the read buffer goes to the routing task in one command.
async fn read_stream(
    peer: PeerId,
    stream: libp2p::Stream,
    tx: mpsc::Sender<Command>,
    malformed: Arc<AtomicU64>,
) {
    let from_text: Arc<str> = peer.to_string().into();
    let limits = Limits::default();
    let max = limits.max_envelope_bytes + 1024;
    let (r, mut receipts) = stream.split();
    let mut r = futures::io::BufReader::with_capacity(64 << 10, r);
    let mut receipts_ok = true;
    let mut body = Vec::new();
    loop {
        let mut items = Vec::new();
        let mut frames = 0u32;
        let ended = loop {
            let mut head = [0u8; 4];
            if r.read_exact(&mut head).await.is_err() {
                break true; // closed (or broken) between frames
            }
            let len = u32::from_be_bytes(head) as usize;
            if len > max {
                malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "envelope frame of {len} bytes exceeds the {max}-byte limit; closing the stream");
                break true;
            }
            body.resize(len, 0);
            if let Err(e) = r.read_exact(&mut body).await {
                tracing::debug!(%peer, "envelope stream ended inside a frame: {e}");
                break true;
            }
            frames += 1;
            match wire::decode(&body, &limits) {
                Ok(b) => items.push((b.relay_to, b.env)),
                // The frame was whole, so the stream is still in step: refuse this one, go on.
                Err(e) => {
                    malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "refused envelope: {e}")
                }
            }
            // Another whole frame already buffered? Take it into this batch.
            let buffered = r.buffer();
            let whole_next = buffered.len() >= 4
                && buffered.len()
                    >= 4 + u32::from_be_bytes([buffered[0], buffered[1], buffered[2], buffered[3]])
                        as usize;
            if !whole_next || items.len() >= READ_BATCH {
                break false;
            }
        };
        // The receipt: these frames are off the wire and in this node's hands.
        if frames > 0 && receipts_ok {
            let sent = async {
                receipts.write_all(&frames.to_be_bytes()).await?;
                receipts.flush().await
            };
            receipts_ok = sent.await.is_ok();
        }
        if !items.is_empty() {
            let cmd = Command::Inbound {
                from: peer,
                from_text: Arc::clone(&from_text),
                items,
            };
            if tx.send(cmd).await.is_err() {
                return;
            }
        }
        if ended {
            return;
        }
    }
}

/// How long written envelopes may go without a receipt from the peer before the link counts
/// as broken: below the default answer wait, so that the sender of an envelope written into a
/// dead connection hears `unreachable` before it stops waiting, instead of nothing.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Envelopes (and their bytes) written and not yet confirmed, at most: beyond, the writer takes
/// no more from its queue, which fills, and senders get `busy`.
const MAX_UNCONFIRMED: usize = 4096;
const MAX_UNCONFIRMED_BYTES: usize = 8 << 20;

/// How a writer's stream ended, which says what becomes of what it wrote unconfirmed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StreamEnd {
    /// The link was dropped and everything written was confirmed.
    Done,
    /// The connection closed or the stream broke (a peer restarting, a duplicate connection
    /// closed): what was not confirmed is written again on a new stream, once; after that it
    /// is sent again like what was never written, through a relay (the receivers' duplicate
    /// suppression drops a second copy).
    Broken,
    /// No receipt for [`RECEIPT_TIMEOUT`] (a partitioned or frozen peer): another try would
    /// likely stall as long, so what was not confirmed is answered `unreachable` at once.
    Stalled,
}

/// What a writer wrote and the peer has not yet confirmed, with each frame's size.
type Unconfirmed = VecDeque<(Queued, usize)>;

/// Writes what is queued for `peer`, in batches, keeping what it wrote until the peer's receipts
/// (a count of frames, each time it has read some) confirm it. A stream that breaks is opened
/// again once, with what it left unconfirmed written first. When the writer gives up, what was
/// never written goes back to the router to be relayed or refused, and so does what was
/// written but not confirmed, unless the peer stalled (see [`StreamEnd`]).
async fn write_stream(
    peer: PeerId,
    (mut control, dials): (libp2p_stream::Control, mpsc::Sender<PeerId>),
    mut rx: mpsc::Receiver<Queued>,
    tx: mpsc::Sender<Command>,
) {
    let mut unconfirmed = Unconfirmed::new();
    let mut end = StreamEnd::Broken;
    for attempt in 0..2 {
        let stream = match open_stream(&mut control, &dials, peer).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, "cannot open envelope stream: {e}");
                break;
            }
        };
        if attempt > 0 {
            tracing::debug!(%peer, again = unconfirmed.len(), "envelope stream opened again");
        }
        end = write_on(peer, stream, &mut rx, &mut unconfirmed).await;
        if end != StreamEnd::Broken {
            break;
        }
    }
    if end == StreamEnd::Done {
        return;
    }
    rx.close();
    let written = unconfirmed.into_iter().map(|(item, _)| item);
    let (mut unsent, unconfirmed): (Vec<Queued>, Vec<Queued>) = match end {
        StreamEnd::Stalled => (Vec::new(), written.collect()),
        _ => (written.collect(), Vec::new()),
    };
    while let Ok(item) = rx.try_recv() {
        unsent.push(item);
    }
    if unsent.is_empty() && unconfirmed.is_empty() {
        return;
    }
    let _ = tx
        .send(Command::SendFailed {
            peer: peer.to_string(),
            unsent,
            unconfirmed,
        })
        .await;
}

/// Opens an envelope stream to `peer`. When the dial fails (a member known only through gossip
/// has no address in the swarm), the agent is asked to dial it at its announced addresses, and
/// the stream is tried again every 100 ms for [`OPEN_TIMEOUT`].
async fn open_stream(
    control: &mut libp2p_stream::Control,
    dials: &mpsc::Sender<PeerId>,
    peer: PeerId,
) -> Result<libp2p::Stream, String> {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    let mut asked = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, control.open_stream(peer, MESH_PROTOCOL)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(libp2p_stream::OpenStreamError::Io(e)))
                if Instant::now() + OPEN_RETRY < deadline =>
            {
                tracing::trace!(%peer, "envelope stream not open yet: {e}");
                if !asked {
                    asked = dials.try_send(peer).is_ok();
                }
                tokio::time::sleep(OPEN_RETRY).await;
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("not open after {OPEN_TIMEOUT:?}")),
        }
    }
}

/// One stream of [`write_stream`]: writes what `unconfirmed` holds (left by a broken stream),
/// then what the queue brings, until the queue closes and all is confirmed, or the stream
/// breaks or stalls.
async fn write_on(
    peer: PeerId,
    stream: libp2p::Stream,
    rx: &mut mpsc::Receiver<Queued>,
    unconfirmed: &mut Unconfirmed,
) -> StreamEnd {
    let (receipts, mut stream) = stream.split();
    let (counts_tx, mut counts) = mpsc::channel(64);
    tokio::spawn(read_receipts(receipts, counts_tx));
    let mut buf = Vec::with_capacity(64 << 10);
    for ((env, relay_to), _) in unconfirmed.iter() {
        wire::encode(env, relay_to.as_deref(), &mut buf);
    }
    let mut unconfirmed_bytes: usize = unconfirmed.iter().map(|(_, size)| size).sum();
    // Since when the oldest unconfirmed envelope has waited with no receipt at all.
    let mut waiting_since = Instant::now();
    let mut queue_open = true;
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        if !buf.is_empty() {
            let written = async {
                stream.write_all(&buf).await?;
                stream.flush().await
            }
            .await;
            if let Err(e) = written {
                tracing::debug!(%peer, "envelope stream broke: {e}");
                return StreamEnd::Broken;
            }
            buf.clear();
        }
        if !queue_open && unconfirmed.is_empty() {
            let _ = stream.close().await;
            return StreamEnd::Done;
        }
        let deadline = tokio::time::Instant::from_std(waiting_since + RECEIPT_TIMEOUT);
        let room = unconfirmed.len() < MAX_UNCONFIRMED && unconfirmed_bytes < MAX_UNCONFIRMED_BYTES;
        tokio::select! {
            item = rx.recv(), if queue_open && room => {
                let Some(first) = item else {
                    queue_open = false; // the link was dropped: wait for the last receipts
                    continue;
                };
                batch.push(first);
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                if unconfirmed.is_empty() {
                    waiting_since = Instant::now();
                }
                for (env, relay_to) in batch.drain(..) {
                    let before = buf.len();
                    wire::encode(&env, relay_to.as_deref(), &mut buf);
                    let size = buf.len() - before;
                    unconfirmed_bytes += size;
                    unconfirmed.push_back(((env, relay_to), size));
                }
            }
            count = counts.recv() => {
                let Some(count) = count else {
                    tracing::debug!(%peer, "envelope stream closed by the peer");
                    return StreamEnd::Broken;
                };
                let done = usize::try_from(count).unwrap_or(usize::MAX).min(unconfirmed.len());
                for (_, size) in unconfirmed.drain(..done) {
                    unconfirmed_bytes -= size;
                }
                waiting_since = Instant::now();
            }
            _ = tokio::time::sleep_until(deadline), if !unconfirmed.is_empty() => {
                tracing::debug!(%peer, unconfirmed = unconfirmed.len(), "no receipt for {RECEIPT_TIMEOUT:?}; the envelope stream counts as stalled");
                return StreamEnd::Stalled;
            }
        }
    }
}

/// Reads a peer's receipts (big-endian counts of frames read) off the envelope stream to it;
/// ends, closing `counts`, when the stream does.
async fn read_receipts(mut r: futures::io::ReadHalf<libp2p::Stream>, counts: mpsc::Sender<u32>) {
    let mut count = [0u8; 4];
    while r.read_exact(&mut count).await.is_ok() {
        if counts.send(u32::from_be_bytes(count)).await.is_err() {
            return;
        }
    }
}

/// The messaging view from the agent's member table and seat table.
pub fn view_of<'a>(
    local: &PeerId,
    (local_blade, local_epoch): (Option<&str>, Option<u64>),
    members: impl Iterator<Item = (PeerId, &'a str, bool)>,
    connected: &std::collections::HashSet<PeerId>,
    groups: &HashMap<String, Vec<String>>,
    seats: HashMap<String, Option<(String, u64)>>,
) -> View {
    View {
        local: local.to_string(),
        local_blade: local_blade.map(str::to_owned),
        local_epoch,
        seats,
        peers: members
            .map(|(id, name, up)| self::core::Peer {
                node: id.to_string(),
                blade: Some(name.to_owned()),
                up,
                connected: connected.contains(&id),
            })
            .collect(),
        groups: groups.clone(),
        helpers: HashMap::new(),
        helping: None,
    }
}
